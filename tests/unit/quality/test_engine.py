from __future__ import annotations

import pandas as pd
import pytest
from quality_frames import NOW, customers

from conduit.exceptions import SpecError
from conduit.quality import decide, evaluate, parse_suite, split, summary_lines, to_ol_assertions

KEY = "customer_number"


def result_for(report, type_, column=None):
    return next(r for r in report.results if r.expectation.type == type_ and r.expectation.column == column)


def failing_keys(result):
    return sorted(result.failing_rows["key"].dropna())


def suite_of(*entries, name="t"):
    return parse_suite({"name": name, "expectations": list(entries)}, "t.yaml")


@pytest.mark.parametrize(
    "email",
    [
        "jane.doe@@example",
        "a@b",
        "x@y.",
        "no-at-sign.com",
        ".lead@x.com",
        "a..b@x.com",
        "a@-host.com",
        "a b@x.com",
    ],
)
def test_bad_emails_fail(customer_suite, email):
    report = evaluate(customers([{}, {"email": email}]), customer_suite, key=KEY, now=NOW)
    result = result_for(report, "expect_column_values_to_match_regex", "email")
    assert failing_keys(result) == ["HS-C-2"]
    [failure] = [f for f in report.row_failures() if f.column == "email"]
    assert failure.reason.startswith(f"email {email!r} does not match ^")


@pytest.mark.parametrize(
    "email",
    [
        "jane+tag@example.com",
        "first.last@mail.sub.example.co.uk",
        "first-last@my-company.io",
        "o'brien@example.ie",
        "x@xn--bcher-kva.de",
    ],
)
def test_normal_emails_pass(customer_suite, email):
    report = evaluate(customers([{"email": email}]), customer_suite, key=KEY, now=NOW)
    assert result_for(report, "expect_column_values_to_match_regex", "email").success


def test_clean_rows_pass_every_expectation(customer_suite):
    report = evaluate(
        customers([{}, {"email": None, "phone": None, "country_code": None}]),
        customer_suite,
        key=KEY,
        now=NOW,
    )
    assert report.success, summary_lines(report)
    assert decide(report, "block").load


def test_each_row_level_expectation_catches_its_bad_row_and_skips_nulls(customer_suite):
    frame = customers(
        [
            {},
            {"phone": "0151 1234567"},  # not normalised to E.164
            {"country_code": "Germany"},  # not normalised to alpha-2
            {"lifecycle_stage": "prospect"},
            {"full_name": ""},
            {"full_name": None},
            {"crm_created_at": "1999-12-31T23:59:59Z"},
            {"crm_created_at": "2026-06-01T12:00:01Z"},  # a second after "now"
            {"customer_number": None},
            {"phone": None, "country_code": None, "email": None, "crm_created_at": None},
        ]
    )
    report = evaluate(frame, customer_suite, key=KEY, now=NOW)
    assert failing_keys(result_for(report, "expect_column_values_to_match_regex", "phone")) == ["HS-C-2"]
    assert failing_keys(result_for(report, "expect_column_values_to_be_in_set", "country_code")) == ["HS-C-3"]
    assert failing_keys(result_for(report, "expect_column_values_to_be_in_set", "lifecycle_stage")) == [
        "HS-C-4"
    ]
    assert failing_keys(result_for(report, "expect_column_value_lengths_to_be_between", "full_name")) == [
        "HS-C-5"
    ]
    assert failing_keys(result_for(report, "expect_column_values_to_not_be_null", "full_name")) == ["HS-C-6"]
    assert failing_keys(result_for(report, "expect_column_values_to_be_between", "crm_created_at")) == [
        "HS-C-7",
        "HS-C-8",
    ]
    null_key = result_for(report, "expect_column_values_to_not_be_null", KEY)
    assert null_key.failing_rows["crm_id"].tolist() == [9]
    assert result_for(report, "expect_column_values_to_be_unique", KEY).success


def test_between_on_unparsed_timestamps_fails_the_text_values():
    suite = suite_of(
        {
            "type": "expect_column_values_to_be_between",
            "kwargs": {"column": "created", "min_value": "2000-01-01T00:00:00Z", "max_value": "now"},
        }
    )
    frame = pd.DataFrame(
        {
            KEY: ["a", "b", "c", "d"],
            "crm_id": [1, 2, 3, 4],
            "created": ["2020-01-01T00:00:00Z", "yesterday", None, "2001-02-03"],
        }
    )
    report = evaluate(frame, suite, key=KEY, now=NOW)
    assert failing_keys(report.results[0]) == ["b"]
    assert report.results[0].element_count == 4


def test_mostly_counts_non_null_rows_like_gx():
    suite = suite_of(
        {
            "type": "expect_column_values_to_be_in_set",
            "kwargs": {"column": "x", "value_set": ["a"], "mostly": 0.5},
        },
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "x", "mostly": 0.5}},
    )
    # 4 rows, 2 null, 1 of the 2 non-null bad: in_set 1/2 >= 0.5 passes; not_null 2/4 >= 0.5 passes
    frame = pd.DataFrame({KEY: list("abcd"), "crm_id": [1, 2, 3, 4], "x": ["a", "z", None, None]})
    in_set, not_null = evaluate(frame, suite, key=KEY).results
    assert (in_set.success, in_set.unexpected_count) == (True, 1)
    assert (not_null.success, not_null.unexpected_count) == (True, 2)
    frame.loc[0, "x"] = "y"  # now 2 of 2 non-null bad
    assert not evaluate(frame, suite, key=KEY).results[0].success


def test_unique_and_row_counts_are_table_level():
    suite = suite_of(
        {"type": "expect_column_values_to_be_unique", "kwargs": {"column": KEY}},
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1, "max_value": 3}},
        {"type": "conduit_row_count_change", "kwargs": {"max_drop_ratio": 0.5}},
    )
    frame = pd.DataFrame({KEY: ["a", "b", "b", None], "crm_id": [1, 2, 3, 4]})
    unique, count, change = evaluate(frame, suite, key=KEY, previous_row_count=8).results
    assert not unique.row_level and failing_keys(unique) == ["b", "b"]
    assert (count.success, count.observed_value) == (False, 4)
    assert change.success  # 8 -> 4 is exactly a 50 % drop
    assert not evaluate(frame, suite, key=KEY, previous_row_count=9).results[2].success
    assert evaluate(frame, suite, key=KEY).results[2].success  # first run: nothing to compare


def test_chunks_give_the_same_report_and_find_duplicates_across_chunks(customer_suite):
    frame = customers([{}, {"email": "a@b"}, {}, {"lifecycle_stage": "x"}, {}])
    frame.loc[4, KEY] = "HS-C-1"  # duplicates the first chunk's key
    whole = evaluate(frame, customer_suite, key=KEY, now=NOW)
    chunked = evaluate(
        [frame.iloc[:2], frame.iloc[2:].reset_index(drop=True)], customer_suite, key=KEY, now=NOW
    )
    for a, b in zip(whole.results, chunked.results, strict=True):
        assert (a.success, a.unexpected_count) == (b.success, b.unexpected_count)
        if a.failing_rows is not None:
            assert a.failing_rows.index.tolist() == b.failing_rows.index.tolist()
    assert failing_keys(result_for(chunked, "expect_column_values_to_be_unique", KEY)) == ["HS-C-1", "HS-C-1"]


def test_missing_column_names_suite_entry_and_column(customer_suite):
    with pytest.raises(SpecError) as exc:
        evaluate(customers([{}]).drop(columns=["phone"]), customer_suite, key=KEY)
    assert "erp_customers.yaml" in str(exc.value) and "'phone'" in str(exc.value)
    assert any(field.startswith("expectations[") for field, _ in exc.value.problems)


# --- policies -----------------------------------------------------------------------------------


def bad_rows(n_total: int, n_bad: int) -> pd.DataFrame:
    return customers([{"email": "jane@@x"} if i < n_bad else {} for i in range(n_total)])


def test_block_stops_on_any_critical_failure(customer_suite):
    decision = decide(evaluate(bad_rows(10, 1), customer_suite, key=KEY, now=NOW), "block")
    assert not decision.load and "match_regex(email) 1 rows" in decision.reason


def test_warn_loads_everything(customer_suite):
    decision = decide(evaluate(bad_rows(10, 5), customer_suite, key=KEY, now=NOW), "warn")
    assert decision.load and not decision.rejected_keys


@pytest.mark.parametrize(("n_bad", "loads"), [(1, True), (2, False)])
def test_quarantine_threshold_exactly_at_passes_just_above_fails(customer_suite, n_bad, loads):
    frame = bad_rows(100, n_bad)
    decision = decide(evaluate(frame, customer_suite, key=KEY, now=NOW), "quarantine", 0.01)
    assert decision.load is loads
    assert decision.rejected_keys == {f"HS-C-{i + 1}" for i in range(n_bad)}


def test_quarantine_threshold_with_inexact_float_ratio(customer_suite):
    # 7/700 and 0.01 differ in binary floating point; the edge must still pass
    decision = decide(evaluate(bad_rows(700, 7), customer_suite, key=KEY, now=NOW), "quarantine", 0.01)
    assert decision.load


def test_quarantine_splits_rows_with_reasons(customer_suite):
    frame = customers([{}, {"email": "x@y.", "phone": "12"}, {}])
    decision = decide(evaluate(frame, customer_suite, key=KEY, now=NOW), "quarantine", 0.5)
    accepted, rejected = split(frame, decision)
    assert accepted[KEY].tolist() == ["HS-C-1", "HS-C-3"]
    [reasons] = rejected["rejection_reasons"]
    assert "email 'x@y.' does not match" in reasons and "phone '12' does not match" in reasons


def test_table_level_failure_blocks_under_quarantine_and_warn(customer_suite):
    frame = customers([{}, {}])
    frame[KEY] = "HS-C-1"
    report = evaluate(frame, customer_suite, key=KEY, now=NOW)
    for policy in ("quarantine", "warn"):
        decision = decide(report, policy, 1.0)
        assert not decision.load and "be_unique(customer_number)" in decision.reason


def test_warning_severity_never_blocks():
    suite = suite_of(
        {"type": "expect_column_values_to_be_unique", "kwargs": {"column": KEY}, "severity": "warning"}
    )
    frame = pd.DataFrame({KEY: ["a", "a"], "crm_id": [1, 2]})
    report = evaluate(frame, suite, key=KEY)
    assert not report.success and decide(report, "block").load


def test_mostly_tolerated_rows_are_not_rejected():
    suite = suite_of(
        {
            "type": "expect_column_values_to_match_regex",
            "kwargs": {"column": "phone", "regex": r"^\+[1-9]\d{6,14}$", "mostly": 0.9},
        }
    )
    frame = pd.DataFrame(
        {KEY: [f"k{i}" for i in range(10)], "crm_id": range(10), "phone": ["123"] + ["+4930123456"] * 9}
    )
    decision = decide(evaluate(frame, suite, key=KEY), "quarantine", 0.0)
    assert decision.load and not decision.rejected_keys


# --- summaries ----------------------------------------------------------------------------------


def test_summary_lines_and_openlineage_assertions(customer_suite):
    frame = bad_rows(12, 7)
    report = evaluate(frame, customer_suite, key=KEY, now=NOW)
    lines = summary_lines(report)
    # the lifecycle stage check records defects: it is not among the expectations that pass or fail
    assert lines[0] == "suite erp_customers: 7 of 8 expectations passed on 12 rows; 1 defect rule found 0 defects"
    [email_line] = [line for line in lines if "match_regex(email)" in line]
    assert (
        email_line.startswith("FAIL")
        and "7 failed (e.g. HS-C-1, HS-C-2, HS-C-3, HS-C-4, HS-C-5, ...)" in email_line
    )
    assertions = to_ol_assertions(report)
    assert {
        "assertion": "expect_column_values_to_match_regex",
        "success": False,
        "column": "email",
    }.items() <= next(a for a in assertions if a.get("column") == "email").items()
    severities = {a["name"]: a["severity"] for a in assertions}
    assert severities.pop("expect_column_values_to_be_in_set(lifecycle_stage)") == "warn"  # a defect rule
    assert set(severities.values()) == {"error"}
