"""Our pandas engine against Great Expectations itself on the same frames (slow: imports GX).

Measured on the shared, loaded 2-core box (erp_customers suite, 1 % bad rows): importing GX 11-12 s;
GX validating 100k rows 1.6 s and 1M rows 10.7 s; our engine (evaluate + decide + summary) 0.15 s on
100k and 1.45 s on 1M rows; GX on the failing rows plus a 10k sample of 1M, with Data Docs, 2.6 s.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from quality_frames import NOW, customers

from conduit.quality import evaluate, parse_suite
from conduit.quality.gx_runner import build_data_docs, validate

KEY = "customer_number"


def messy_customers(n: int, seed: int) -> pd.DataFrame:
    """Mostly good rows; a seeded fraction broken in every way the mapping can leave them."""
    rng = np.random.default_rng(seed)
    breakages = [
        {"email": "jane.doe@@example"},
        {"email": "a@b"},
        {"email": "x@y."},
        {"email": None},
        {"phone": "0151 123"},
        {"phone": None},
        {"country_code": "Germany"},
        {"country_code": None},
        {"lifecycle_stage": "prospect"},
        {"full_name": ""},
        {"full_name": None},
        {"crm_created_at": "1999-01-01T00:00:00Z"},
        {"crm_created_at": "2030-01-01T00:00:00Z"},
        {"crm_created_at": None},
        {"customer_number": None},
    ]
    rows = [breakages[rng.integers(len(breakages))] if rng.random() < 0.3 else {} for _ in range(n)]
    frame = customers(rows)
    dupes = rng.choice(n, size=3, replace=False)
    frame.loc[dupes[1:], KEY] = frame.loc[dupes[0], KEY]
    return frame


def gx_unexpected_keys(evr) -> list:
    return sorted(row[KEY] for row in evr.result.get("unexpected_index_list") or [] if not pd.isna(row[KEY]))


def assert_same_verdicts(frame, suite, previous_row_count=None):
    report = evaluate(frame, suite, key=KEY, now=NOW, previous_row_count=previous_row_count)
    gx = validate(frame, report)
    assert not gx.sampled
    by_index = {evr.expectation_config.meta["conduit_index"]: evr for evr in gx.result.results}
    for ours in report.results:
        theirs = by_index[ours.index]
        assert theirs.success == ours.success, ours.name
        if ours.failing_rows is not None:
            assert theirs.result["unexpected_count"] == ours.unexpected_count, ours.name
            assert gx_unexpected_keys(theirs) == sorted(ours.failing_rows["key"].dropna()), ours.name
        else:
            assert theirs.result["observed_value"] == ours.observed_value or ours.expectation.type.startswith(
                "conduit"
            )
    return report


def test_same_verdicts_as_gx_on_bad_rows(customer_suite):
    report = assert_same_verdicts(messy_customers(400, seed=7), customer_suite)
    assert not report.success  # the frame really has bad rows of every kind
    assert all(r.unexpected_count for r in report.results)


def test_same_verdicts_as_gx_with_mostly_and_table_checks(customer_suite):
    frame = messy_customers(300, seed=11)
    entries = [
        {
            "type": e.type,
            "severity": e.severity,
            "kwargs": {**e.gx_kwargs(), "mostly": 0.97} if "mostly" in e.gx_kwargs() else e.gx_kwargs(),
        }
        for e in customer_suite.expectations
    ] + [
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 10, "max_value": 299}},
        {"type": "conduit_row_count_change", "kwargs": {"max_drop_ratio": 0.25}},
    ]
    suite = parse_suite({"name": "mostly", "expectations": entries}, "mostly.yaml")
    report = assert_same_verdicts(frame, suite, previous_row_count=400)
    verdicts = {r.name: r.success for r in report.results}
    assert True in verdicts.values() and False in verdicts.values()  # mostly decides both ways here
    assert verdicts["conduit_row_count_change"]  # 300 of 400 is exactly a 25 % drop


def test_data_docs_name_the_failing_expectation(tmp_path, customer_suite):
    frame = customers([{}, {"email": "jane.doe@@example"}, {}])
    report = evaluate(frame, customer_suite, key=KEY, now=NOW)
    index = build_data_docs(frame, report, tmp_path / "docs", run_name="scheduled__2026-06-01")
    assert index.name == "index.html" and index.is_file()
    [page] = (tmp_path / "docs").glob("validations/**/*.html")
    html = page.read_text()
    assert "expect_column_values_to_match_regex [critical]" in html
    assert "jane.doe@@example" in html and "HS-C-2" in html
    assert "scheduled__2026-06-01" in html


def test_large_frames_are_validated_on_failing_rows_plus_a_sample(tmp_path, customer_suite):
    frame = messy_customers(600, seed=3)
    suite = parse_suite(
        {
            "name": "sampled",
            "expectations": [
                *[{"type": e.type, "kwargs": e.gx_kwargs()} for e in customer_suite.expectations[:3]],
                {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1000}},
            ],
        },
        "sampled.yaml",
    )
    report = evaluate(frame, suite, key=KEY, now=NOW)
    gx = validate(frame, report, out_dir=tmp_path, full_up_to=100, sample_size=50)
    assert gx.sampled and gx.rows_validated < len(frame)
    by_index = {evr.expectation_config.meta["conduit_index"]: evr for evr in gx.result.results}
    for ours in report.row_results:  # every failing row made it into GX's batch
        assert gx_unexpected_keys(by_index[ours.index]) == sorted(ours.failing_rows["key"].dropna())
    row_count = by_index[3]
    assert (row_count.success, row_count.result["observed_value"]) == (False, 600)
    assert "counted by the Conduit engine on all 600 rows" in gx.page_html.read_text()


@pytest.mark.parametrize("email", ["jane.doe@@example", "a@b", "x@y.", "ok+tag@sub.example-mail.com"])
def test_email_regex_verdict_matches_python_re(customer_suite, email):
    import re

    regex = next(e for e in customer_suite.expectations if e.column == "email").kwargs.regex
    report = evaluate(customers([{"email": email}]), customer_suite, key=KEY, now=NOW)
    email_ok = next(r for r in report.results if r.expectation.column == "email").success
    assert email_ok == bool(re.search(regex, email))
