"""The health view's rules on plain data (no Airflow, no database): counts, freshness against the
schedule, the verdict, charts, the gate's per-expectation results, quarantine rows and lineage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from conduit.specs.model import load_spec
from conduit.ui import data, health
from conduit.ui.health import RunRecord

REPO = Path(__file__).resolve().parents[3]
SPEC = load_spec(REPO / "include" / "syncs" / "crm_to_erp_customer_sync.yaml")
TRYTON = load_spec(REPO / "include" / "syncs" / "crm_to_tryton_customer_sync.yaml")
NIGHTLY, BERLIN = "0 2 * * *", "Europe/Berlin"
# 2026-06-10 10:00 UTC = 12:00 Berlin (CEST): the night's run was due at 02:00 Berlin = 00:00 UTC
NOW = datetime(2026, 6, 10, 10, 0, tzinfo=UTC)


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def run(run_id="r1", state="success", start=NOW - timedelta(hours=10), seconds=42.0, summaries=None,
        task_states=None, plan=None) -> RunRecord:
    end = start + timedelta(seconds=seconds) if state in ("success", "failed") else None
    return RunRecord(run_id=run_id, state=state, run_type="scheduled", run_after=start, start_date=start,
                     end_date=end, summaries=summaries or {}, plan=plan, task_states=task_states or {})


SUMMARIES = {
    "extract": [{"kind": "window", "rows": 590}, {"kind": "ids", "rows": 10}, {"kind": "archived", "rows": 3}],
    "transform": {"mapped": 598, "mapped_archived": 3, "superseded_reads": 2},
    "quality_gate": {"checked": 598, "rejected": 2, "passed": True, "failed_expectations":
                     ["expect_column_value_lengths_to_be_between(full_name)"],
                     "defects": {"email(email)": {"count": 4, "examples": [{"record": "HS-C-7", "value": "a@@b"}]}}},
    "load": {"inserted": 590, "updated": 6, "unchanged": 0, "deleted": 3, "stale_skipped": 0, "dry_run": False},
}


class TestCounts:
    def test_counts_come_from_the_tasks_summaries(self):
        counts = health.run_counts(SUMMARIES)
        assert {n: counts[n] for n in health.COUNT_NAMES} == {
            "extracted": 598, "inserted": 590, "updated": 6, "unchanged": 0, "deleted": 3, "rejected": 2, "defects": 4}
        assert counts["archived"] == 3

    def test_parties_the_target_refused_count_as_rejected(self):
        summaries = {**SUMMARIES, "load": {**SUMMARIES["load"], "inserted": 589, "refused": 1}}
        assert health.run_counts(summaries)["rejected"] == 3
        assert health.run_counts({"load": {"refused": 2}})["rejected"] == 2

    def test_without_a_transform_the_extract_items_count_archived_apart(self):
        assert health.run_counts({"extract": SUMMARIES["extract"]})["extracted"] == 600

    def test_a_task_that_did_not_report_counts_as_unknown_not_zero(self):
        counts = health.run_counts({"transform": {"mapped": 10}})
        assert counts["extracted"] == 10
        assert counts["inserted"] is None and counts["rejected"] is None and counts["defects"] is None
        assert health.changed_rows(counts) is None
        assert health.changed_rows(health.run_counts(SUMMARIES)) == 599


class TestFreshness:
    def test_data_from_tonights_run_is_fresh(self):
        watermark = datetime(2026, 6, 10, 0, 0, tzinfo=UTC) - timedelta(seconds=60)  # 02:00 Berlin minus the lag
        fresh = health.freshness(ms(watermark), cron=NIGHTLY, timezone=BERLIN, lag_seconds=60, now=NOW)
        assert not fresh.stale
        assert fresh.age_s == pytest.approx(10 * 3600 + 60)
        assert fresh.expected_since == watermark

    def test_data_from_last_night_is_stale_once_tonights_run_had_its_grace(self):
        yesterday = datetime(2026, 6, 9, 0, 0, tzinfo=UTC) - timedelta(seconds=60)
        fresh = health.freshness(ms(yesterday), cron=NIGHTLY, timezone=BERLIN, lag_seconds=60, now=NOW)
        assert fresh.stale
        # within the hour after 02:00 the night's run may still be running: yesterday's data is due
        early = datetime(2026, 6, 10, 0, 30, tzinfo=UTC)
        assert not health.freshness(ms(yesterday), cron=NIGHTLY, timezone=BERLIN, lag_seconds=60, now=early).stale

    def test_grace_is_at_most_half_the_interval(self):
        hourly = "0 * * * *"
        watermark = datetime(2026, 6, 10, 9, 0, tzinfo=UTC)
        at = datetime(2026, 6, 10, 10, 40, tzinfo=UTC)  # 10:00's run is due after 30 min, not an hour
        assert health.freshness(ms(watermark), cron=hourly, timezone="UTC", lag_seconds=0, now=at).stale
        assert not health.freshness(ms(watermark), cron=hourly, timezone="UTC", lag_seconds=0,
                                    now=at - timedelta(minutes=15)).stale

    def test_no_watermark_is_stale_and_never_loaded(self):
        fresh = health.freshness(None, cron=NIGHTLY, timezone=BERLIN, lag_seconds=60, now=NOW)
        assert fresh.stale and fresh.never_loaded and fresh.age_s is None

    def test_cron_times_include_the_exact_moment_and_follow_the_time_zone(self):
        at = datetime(2026, 6, 10, 0, 0, tzinfo=UTC)  # exactly 02:00 in Berlin
        assert health.last_cron_time(NIGHTLY, BERLIN, at) == at
        assert health.last_cron_time(NIGHTLY, BERLIN, at - timedelta(seconds=1)) == at - timedelta(days=1)
        assert health.next_cron_time(NIGHTLY, BERLIN, at) == at + timedelta(days=1)
        winter = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)  # CET: 02:00 Berlin = 01:00 UTC
        assert health.last_cron_time(NIGHTLY, BERLIN, winter) == datetime(2026, 1, 10, 1, 0, tzinfo=UTC)


FRESH = health.freshness(ms(NOW - timedelta(hours=10)), cron=NIGHTLY, timezone=BERLIN, lag_seconds=60, now=NOW)
STALE = health.freshness(ms(NOW - timedelta(days=3)), cron=NIGHTLY, timezone=BERLIN, lag_seconds=60, now=NOW)


class TestVerdict:
    def test_healthy_names_the_last_run_and_the_data_age(self):
        found = health.verdict([run("ok", summaries=SUMMARIES)], FRESH, cron=NIGHTLY)
        assert found.status == health.HEALTHY
        assert "last run ok succeeded" in found.reason and "10.0 h old" in found.reason

    def test_a_waiting_plan_comes_first(self):
        waiting = run("w", state="running", task_states={"approve_plan": "awaiting_input"})
        found = health.verdict([waiting, run("old", state="failed", task_states={"load": "failed"})], STALE)
        assert found.status == health.WAITING and "run w" in found.reason

    @pytest.mark.parametrize(("task_states", "why"), [
        ({"load": "failed", "reconcile": "upstream_failed"}, "failed tasks: load, reconcile"),
        ({"quality_gate": "failed", "load": "upstream_failed"}, "the quality gate failed"),
        ({"plan_rejected": "failed"}, "the plan was rejected"),
        ({}, "the run failed"),
    ])
    def test_a_failed_last_run_is_failing_with_its_cause(self, task_states, why):
        found = health.verdict([run("bad", state="failed", task_states=task_states), run("good")], FRESH)
        assert found.status == health.FAILING
        assert found.reason.startswith("last run bad failed at ") and why in found.reason

    def test_a_running_run_is_judged_by_the_last_finished_one(self):
        runs = [run("now", state="running"), run("bad", state="failed", task_states={"load": "failed"})]
        assert health.verdict(runs, FRESH).status == health.FAILING
        found = health.verdict([run("now", state="running"), run("good")], FRESH)
        assert found.status == health.HEALTHY and "in progress" in found.reason

    def test_old_data_is_stale_even_when_the_runs_succeed(self):
        found = health.verdict([run("good")], STALE, paused=True, cron=NIGHTLY)
        assert found.status == health.STALE
        assert "3.0 days old" in found.reason and NIGHTLY in found.reason and "paused" in found.reason

    def test_never_loaded_is_stale(self):
        never = health.freshness(None, cron=NIGHTLY, timezone=BERLIN, lag_seconds=60, now=NOW)
        assert health.verdict([], never).status == health.STALE
        assert "nothing loaded yet" in health.verdict([], never).reason

    def test_an_unreadable_state_store_is_failing_and_says_which_connection(self):
        found = health.verdict([run("good")], FRESH, state_error="connection erp_default: OperationalError")
        assert found.status == health.FAILING and "erp_default" in found.reason


class TestOverviewRow:
    def test_counts_are_the_last_finished_runs_and_the_row_is_json_able(self):
        import json

        runs = [run("now", state="running", start=NOW - timedelta(minutes=5)),
                run("done", summaries=SUMMARIES)]
        row = health.overview_row(name="s", cron=NIGHTLY, timezone=BERLIN, lag_seconds=60, target_type="sql",
                                  runs=runs, watermark_ms=ms(NOW - timedelta(hours=10)), quarantine_open=2,
                                  next_run=NOW + timedelta(hours=14), paused=False, now=NOW)
        json.dumps(row)
        assert row["last_run"]["run_id"] == "now" and row["last_finished_run"]["run_id"] == "done"
        assert row["counts"] == {"extracted": 598, "inserted": 590, "updated": 6, "unchanged": 0, "deleted": 3,
                                 "rejected": 2, "defects": 4}
        assert (row["verdict"], row["quarantine_open"], row["freshness"]["stale"]) == ("healthy", 2, False)
        assert row["last_finished_run"]["duration_s"] == 42.0

    def test_most_urgent_first(self):
        order = sorted(health.VERDICTS, key=health.verdict_order)
        assert order == [health.FAILING, health.WAITING, health.STALE, health.HEALTHY]


class TestCharts:
    def test_one_point_per_finished_run_oldest_first(self):
        runs = [run("3", state="running"), run("2", start=NOW - timedelta(hours=1), summaries=SUMMARIES, seconds=30),
                run("1", state="failed", start=NOW - timedelta(hours=5), seconds=12)]
        series = health.chart_series(runs)
        assert series["run_id"] == ["1", "2"]
        assert series["inserted"] == [None, 590] and series["deleted"] == [None, 3]
        assert series["duration_s"] == [12.0, 30.0]
        assert series["x"] == sorted(series["x"])


EXPECTATIONS = health.expectations_of(data.suite_entries(SPEC))


class TestGateResults:
    def test_named_as_the_gate_names_them(self):
        from conduit.quality.defects import field_checks
        from conduit.quality.engine import ExpectationResult
        from conduit.quality.suite import load_suite

        suite = load_suite(REPO / "include" / "expectations" / SPEC.quality.suite).with_field_checks(field_checks(SPEC))
        gate_names = [ExpectationResult(i, e, True, 0).name for i, e in enumerate(suite.expectations)]
        assert [e.name for e in EXPECTATIONS] == gate_names
        assert {e.name for e in EXPECTATIONS if e.defect} >= {"email(email)", "phone_e164(phone)"}

    def test_from_the_gates_summary_and_its_quarantined_records(self):
        quarantined = [
            {"record_key": "HS-C-1", "crm_id": "1", "expectation": "expect_column_value_lengths_to_be_between",
             "column_name": "full_name", "reason": "full_name '' has length 0", "run_id": "r",
             "raw_record": {"id": "1", "firstname": "", "lastname": " "}},
            {"record_key": "HS-C-2", "crm_id": "2", "expectation": "expect_column_value_lengths_to_be_between",
             "column_name": "full_name", "reason": "full_name '' has length 0", "run_id": "r",
             "raw_record": {"id": "2", "firstname": None, "lastname": ""}},
        ]
        results = {r["name"]: r for r in health.expectation_results(EXPECTATIONS, SUMMARIES["quality_gate"],
                                                                    quarantined, SPEC.mapping)}
        names = "expect_column_value_lengths_to_be_between(full_name)"
        assert results[names]["success"] is False and results[names]["failed"] == 2
        assert results[names]["failed_from"] == "gate"  # the only rejecting rule that failed: the gate's count
        assert results[names]["samples"][0] == {"record": "HS-C-1", "value": {"firstname": "", "lastname": " "},
                                                "reason": "full_name '' has length 0"}
        assert results[names]["pass_rate"] == pytest.approx(1 - 2 / 598)
        email = results["email(email)"]
        assert (email["defect"], email["failed"], email["success"]) == (True, 4, True)
        assert email["samples"] == [{"record": "HS-C-7", "value": "a@@b"}]
        regex = results["expect_column_values_to_match_regex(email)"]
        assert (regex["evaluated"], regex["failed"], regex["pass_rate"]) == (598, 0, 1.0)
        unique = results["expect_column_values_to_be_unique(customer_number)"]
        assert unique["evaluated"] is None and unique["pass_rate"] == 1.0

    def test_several_failing_rules_count_their_open_entries(self):
        gate = {**SUMMARIES["quality_gate"], "rejected": 3, "failed_expectations": [
            "expect_column_values_to_not_be_null(full_name)", "expect_column_value_lengths_to_be_between(full_name)"]}
        quarantined = [{"record_key": "HS-C-9", "expectation": "expect_column_values_to_not_be_null",
                        "column_name": "full_name", "raw_record": None}]
        results = {r["name"]: r for r in health.expectation_results(EXPECTATIONS, gate, quarantined, SPEC.mapping)}
        found = results["expect_column_values_to_not_be_null(full_name)"]
        assert (found["failed"], found["failed_from"]) == (1, "open quarantine entries")
        assert results["expect_column_value_lengths_to_be_between(full_name)"]["failed"] == 0

    def test_the_gates_own_assertions_win(self):
        gate = {**SUMMARIES["quality_gate"], "assertions": [
            {"name": "expect_column_value_lengths_to_be_between(full_name)", "success": False, "actual": "7"},
            {"name": "expect_column_values_to_be_unique(customer_number)", "success": True, "actual": "0"}]}
        results = {r["name"]: r for r in health.expectation_results(EXPECTATIONS, gate)}
        assert results["expect_column_value_lengths_to_be_between(full_name)"]["failed"] == 7
        assert results["expect_column_values_to_be_unique(customer_number)"]["failed"] == 0

    def test_pass_rate_history_has_a_point_per_gated_run(self):
        runs = [run("2", summaries=SUMMARIES), run("1", start=NOW - timedelta(days=1),
                                                   summaries={"quality_gate": {"checked": 100, "failed_expectations": []}}),
                run("0", state="failed", start=NOW - timedelta(days=2))]
        history = health.pass_rate_history(runs, EXPECTATIONS, {})
        assert history["run_id"] == ["1", "2"]
        assert history["expect_column_values_to_not_be_null(customer_number)"] == [1.0, 1.0]
        assert history["email(email)"] == [1.0, pytest.approx(1 - 4 / 598)]

    def test_no_gate_no_results(self):
        assert health.expectation_results(EXPECTATIONS, None) == []


class TestQuarantineAndLineage:
    def test_quarantine_rows_show_the_raw_value_behind_the_column_and_the_age(self):
        entry = {"id": 5, "record_key": "HS-C-1", "crm_id": "1", "expectation": "expect_column_values_to_match_regex",
                 "column_name": "email", "reason": "email 'x' does not match", "run_id": "r",
                 "raw_record": {"id": "1", "email": "x"}, "quarantined_at": NOW - timedelta(hours=3)}
        (row,) = health.quarantine_rows([entry], SPEC.mapping, NOW)
        assert row["rule"] == "expect_column_values_to_match_regex(email)"
        assert (row["raw_value"], row["age"], row["id"]) == ("x", "3.0 h", 5)
        assert row["quarantined_at"] == "2026-06-10T07:00:00Z"

    def test_a_column_made_from_several_properties_shows_each(self):
        entry = {"column_name": "customer_number", "raw_record": {"hs_object_id": "42"}}
        assert health.raw_value(entry, SPEC.mapping) == "42"
        assert health.raw_value({"column_name": None, "raw_record": {}}, SPEC.mapping) is None

    def test_lineage_follows_the_mapping(self):
        rows = {r["column"]: r for r in health.lineage_rows(SPEC.mapping)}
        assert rows["customer_number"]["sources"] == ["hs_object_id"]
        assert rows["full_name"]["sources"] == ["firstname", "lastname"]
        assert rows["full_name"]["transforms"] == ["concat", "trim"]
        assert rows["phone"]["sources"] == ["phone", "country"]

    def test_an_api_targets_lineage_names_the_field_a_column_lands_in(self):
        rows = {r["column"]: r for r in health.lineage_rows(TRYTON.mapping, TRYTON.target.fields.model_dump())}
        assert rows["crm_id"]["lands_in"] == "source_id" and rows["country_code"]["lands_in"] == "country"
        assert rows["customer_number"]["lands_in"] is None

    def test_the_latest_plan_is_the_newest_runs(self):
        runs = [run("3"), run("2", plan={"updated": 1}), run("1", plan={"updated": 9})]
        assert health.latest_plan(runs) == ("2", {"updated": 1})
        assert health.latest_plan([run("1")]) is None

    @pytest.mark.parametrize(("seconds", "text"), [(None, "never"), (30, "30 s"), (600, "10 min"),
                                                   (7200, "2.0 h"), (3 * 86400, "3.0 days")])
    def test_ages_read_like_a_person_says_them(self, seconds, text):
        assert health.describe_age(seconds) == text
