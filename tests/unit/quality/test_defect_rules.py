"""Defects vs rejections, without Airflow: the decision per expectation, the defect rows a gate
finds, and how a run's defects open, repeat and resolve against the open ones."""

from __future__ import annotations

import pandas as pd
import pytest

from conduit.exceptions import SpecError
from conduit.quality.defects import Defect, OpenDefect, field_checks, found_defects, plan_defects
from conduit.quality.engine import decide, defect_rows, evaluate
from conduit.quality.suite import parse_suite
from conduit.quality.summary import defect_counts, summary_lines
from conduit.specs.model import parse_spec

KEY = "customer_number"


def suite(*entries):
    return parse_suite({"name": "t", "expectations": list(entries)}, "t.yaml")


NOT_NULL_KEY = {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": KEY}}
UNIQUE_KEY = {"type": "expect_column_values_to_be_unique", "kwargs": {"column": KEY}}
PHONE_DEFECT = {"type": "expect_column_values_to_match_regex", "kwargs": {"column": "phone", "regex": r"^\+\d+$"},
                "on_failure": "defect"}


def rows(keys, phones):
    return pd.DataFrame({KEY: keys, "crm_id": range(1, len(keys) + 1), "phone": phones})


# --- the suite's on_failure -----------------------------------------------------------------------


def test_on_failure_defaults_to_reject_and_defect_never_blocks():
    plain = suite(NOT_NULL_KEY, PHONE_DEFECT)
    assert [e.on_failure for e in plain.expectations] == ["reject", "defect"]
    assert [e.blocking for e in plain.expectations] == [True, False]


@pytest.mark.parametrize("entry, problem", [
    ({**UNIQUE_KEY, "on_failure": "defect"}, "judges the whole table"),
    ({**PHONE_DEFECT, "kwargs": {**PHONE_DEFECT["kwargs"], "mostly": 0.9}}, "`mostly` does not apply"),
    ({**PHONE_DEFECT, "on_failure": "ignore"}, "'reject' or 'defect'"),
])
def test_bad_on_failure_names_file_and_field(entry, problem):
    with pytest.raises(SpecError) as err:
        suite(NOT_NULL_KEY, entry)
    (where, message), = err.value.problems
    assert err.value.path == "t.yaml" and where == "expectations[1].on_failure" and problem in message


# --- the decision --------------------------------------------------------------------------------


def test_a_defect_loads_the_row_and_is_listed_while_a_missing_key_still_rejects():
    frame = rows(["k1", None, "k3", "k4"], ["+49301234567", "n/a", "tbd", None])
    report = evaluate(frame, suite(NOT_NULL_KEY, UNIQUE_KEY, PHONE_DEFECT), key=KEY)

    decision = decide(report, "quarantine", max_rejected_ratio=0.5)

    assert decision.load and decision.rejected_keys == frozenset()  # the null key has no key to list
    assert decision.rejected.index.tolist() == [1]  # ... but its row is rejected
    # the missing key's row is kept out, so its bad phone is no defect; k3's is
    assert decision.defects[["key", "column", "rule", "value"]].to_dict("records") == [
        {"key": "k3", "column": "phone", "rule": "expect_column_values_to_match_regex", "value": "tbd"}]
    assert decision.defects.index.tolist() == [2]
    assert "1 defects recorded" in decision.reason


def test_defects_do_not_block_under_block_and_a_duplicate_key_still_stops_the_load():
    report = evaluate(rows(["k1", "k2"], ["x", "+4930"]), suite(UNIQUE_KEY, PHONE_DEFECT), key=KEY)
    decision = decide(report, "block")
    assert decision.load and len(decision.defects) == 1

    duplicated = evaluate(rows(["k1", "k1"], ["x", "y"]), suite(UNIQUE_KEY, PHONE_DEFECT), key=KEY)
    stopped = decide(duplicated, "quarantine", 1.0)
    assert not stopped.load and stopped.reason.startswith("table-level expectation failed")
    assert stopped.defects is None


def test_more_defects_of_one_rule_than_max_defect_ratio_stop_the_load_exactly_at_it_loads():
    frame = rows([f"k{i}" for i in range(4)], ["x", "+49", "+4930", "+4940"])
    report = evaluate(frame, suite(NOT_NULL_KEY, PHONE_DEFECT), key=KEY)
    assert decide(report, "quarantine", max_defect_ratio=0.25).load  # 1 of 4: exactly at the limit
    frame.loc[1, "phone"] = "y"
    over = decide(evaluate(frame, suite(NOT_NULL_KEY, PHONE_DEFECT), key=KEY), "warn", max_defect_ratio=0.25)
    assert not over.load
    assert over.reason == ("defects exceed max_defect_ratio 25.00%: "
                           "expect_column_values_to_match_regex(phone) 2 of 4 rows (50.00%)")
    # a small (incremental) run is not held to the ratio: two edited contacts are not a broken source
    small = decide(evaluate(frame, suite(NOT_NULL_KEY, PHONE_DEFECT), key=KEY), "warn", max_defect_ratio=0.25,
                   defect_ratio_min_rows=5)
    assert small.load and len(small.defects) == 2


def test_summary_shows_defect_rules_with_counts_and_examples():
    report = evaluate(rows(["k1", "k2", "k3"], ["x", "+4930", "n/a"]), suite(NOT_NULL_KEY, PHONE_DEFECT), key=KEY)
    lines = summary_lines(report)
    assert lines[0] == "suite t: 1 of 1 expectations passed on 3 rows; 1 defect rule found 2 defects"
    assert lines[2] == "DEFECT expect_column_values_to_match_regex(phone) [defect]: 2 defects (e.g. k1: 'x', k3: 'n/a')"
    assert defect_counts(report) == {"expect_column_values_to_match_regex(phone)": {
        "count": 2, "examples": [{"record": "k1", "value": "x"}, {"record": "k3", "value": "n/a"}]}}


# --- a transform's on_invalid ----------------------------------------------------------------------


def spec_with(on_invalid: str):
    return parse_spec({
        "name": "s", "source": {"type": "hubspot", "properties": ["phone", "country", "lastmodifieddate"]},
        "target": {"type": "sql", "table": "t", "key": KEY},
        "mapping": {KEY: {"transforms": [{"type": "template", "template": "K{hs_object_id}"}]},
                    "phone": {"source": "phone", "transforms": [
                        {"type": "trim"}, {"type": "phone_e164", "region_from": "country", "on_invalid": on_invalid}]}},
    }, "s.yaml")


def mapped(spec):
    from conduit.transforms.mapping import map_frame

    raw = pd.DataFrame({"id": ["1", "2", "3"], "hs_object_id": ["1", "2", "3"],
                        "phone": ["+49 30 1234567", " n/a ", None], "country": ["DE", "DE", "DE"],
                        "lastmodifieddate": ["2024-01-01T00:00:00Z"] * 3})
    return map_frame(raw, spec)


@pytest.mark.parametrize("on_invalid, phones, load, rejected, defects", [
    ("null", ["+49301234567", None, None], True, [], [("K2", "n/a")]),
    ("reject", ["+49301234567", "n/a", None], True, ["K2"], []),
])
def test_on_invalid_nulls_and_records_or_rejects(on_invalid, phones, load, rejected, defects):
    spec = spec_with(on_invalid)
    frame = mapped(spec)
    assert frame["phone"].tolist() == phones
    report = evaluate(frame, suite(NOT_NULL_KEY).with_field_checks(field_checks(spec)), key=KEY)
    decision = decide(report, "quarantine", max_rejected_ratio=1.0)
    assert decision.load is load and sorted(decision.rejected_keys) == rejected
    found = defect_rows(report, decision.rejected.index if decision.rejected is not None else ())
    assert list(zip(found["key"], found["value"], strict=True)) == defects
    if defects:
        assert found["rule"].tolist() == ["phone_e164"]
        assert found["reason"].tolist() == ["phone 'n/a' could not be normalised by phone_e164"]
    else:
        assert report.results[-1].name == "phone_e164(phone)"
        assert next(report.row_failures()).expectation == "phone_e164"


def test_keep_raw_adds_no_check_and_only_one_step_may_set_on_invalid():
    from conduit.transforms.mapping import invalid_column

    # no phone_e164 check; only the clean_text check every column made from CRM text has
    assert field_checks(spec_with("keep_raw")) == {c: ("clean_text", "null", invalid_column(c)) for c in (KEY, "phone")}
    with pytest.raises(SpecError) as err:
        parse_spec({
            "name": "s", "source": {"type": "hubspot", "properties": ["email", "lastmodifieddate"]},
            "target": {"type": "sql", "table": "t", "key": "k"},
            "mapping": {"k": {"source": "email"}, "email": {"source": "email", "transforms": [
                {"type": "email", "on_invalid": "null"}, {"type": "email", "on_invalid": "reject"}]}},
        }, "s.yaml")
    assert err.value.problems == [("mapping.email.transforms[1].on_invalid",
                                   "only one step of a column may set on_invalid (transforms[0] already does)")]


# --- resolution ----------------------------------------------------------------------------------


def defect(key, value, column="phone", rule="phone_e164"):
    return Defect(key, key.removeprefix("K"), column, rule, value, f"{column} {value!r} is bad")


def test_plan_opens_repeats_replaces_and_resolves():
    open_defects = [
        OpenDefect(1, "K1", "phone", "phone_e164", "n/a"),     # still the same bad value
        OpenDefect(2, "K2", "phone", "phone_e164", "tbd"),     # now another bad value
        OpenDefect(3, "K3", "phone", "phone_e164", "000"),     # read clean
        OpenDefect(4, "K4", "phone", "phone_e164", "?"),       # not read this run
        OpenDefect(5, "K1", "country_code", "country_iso2", "Atlantis"),  # K1 read: its country is clean now
    ]
    found = [defect("K1", "n/a"), defect("K2", "-"), defect("K9", "call me")]

    changes = plan_defects(open_defects, found, clean_keys={"K1", "K2", "K3"})

    assert changes.seen_again == [1]
    assert changes.resolved == [2, 3, 5]
    assert [(d.record_key, d.raw_value) for d in changes.opened] == [("K2", "-"), ("K9", "call me")]
    assert changes.counts() == {"defects_opened": 2, "defects_seen_again": 1, "defects_resolved": 3}


def test_plan_leaves_records_kept_out_alone_and_is_idempotent_for_a_retry():
    open_defects = [OpenDefect(1, "K1", "phone", "phone_e164", "n/a")]
    quarantined_now = plan_defects(open_defects, [], clean_keys=set())
    assert (quarantined_now.opened, quarantined_now.seen_again, quarantined_now.resolved) == ([], [], [])

    first = plan_defects([], [defect("K1", "n/a")], clean_keys=set())
    retried = plan_defects([OpenDefect(7, "K1", "phone", "phone_e164", "n/a")], [defect("K1", "n/a")],
                           clean_keys={"K1"})
    assert len(first.opened) == 1 and (retried.opened, retried.seen_again) == ([], [7])


def test_found_defects_skip_rows_without_a_key_and_stringify():
    frame = pd.DataFrame({"key": ["K1", None], "crm_id": [1, 2], "column": ["phone"] * 2,
                          "rule": ["phone_e164"] * 2, "value": ["n/a", "x"], "reason": ["r1", "r2"]})
    assert found_defects(frame) == [Defect("K1", "1", "phone", "phone_e164", "n/a", "r1")]


def test_a_record_that_stays_bad_does_not_fail_a_small_run_but_the_ratio_holds_for_large_ones():
    """1 bad record of 15 re-read by a small incremental run is 6.7%, above a 1% limit: it is
    quarantined again and the rest loads, rather than failing every run that reads it."""
    phone_rule = {**PHONE_DEFECT, "on_failure": "reject"}
    small = evaluate(rows([f"k{i}" for i in range(15)], ["+4930"] * 14 + ["junk"]),
                     suite(NOT_NULL_KEY, phone_rule), key=KEY)
    kept = decide(small, "quarantine", max_rejected_ratio=0.01, rejected_ratio_min_rows=100)
    assert kept.load and kept.rejected_keys == frozenset({"k14"})
    assert not decide(small, "quarantine", max_rejected_ratio=0.01, rejected_ratio_min_rows=15).load
    large = evaluate(rows([f"k{i}" for i in range(200)], ["+4930"] * 197 + ["junk"] * 3),
                     suite(NOT_NULL_KEY, phone_rule), key=KEY)
    refused = decide(large, "quarantine", max_rejected_ratio=0.01, rejected_ratio_min_rows=100)
    assert not refused.load and "exceeds max_rejected_ratio" in refused.reason
