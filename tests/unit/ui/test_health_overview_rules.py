"""The overview's pure rules: "in progress since" names the running run's start (not a run
queued behind it), and the summary counts and the most-urgent-first order over the rows given."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from conduit.ui import health
from conduit.ui.health import RunRecord

NOW = datetime(2026, 6, 10, 10, 0, tzinfo=UTC)
FRESH = health.freshness(int((NOW - timedelta(hours=1)).timestamp() * 1000), cron="0 2 * * *",
                         timezone="Europe/Berlin", lag_seconds=60, now=NOW)


def run(run_id: str, state: str, after: datetime, started: datetime | None = None) -> RunRecord:
    end = after + timedelta(minutes=1) if state in ("success", "failed") else None
    return RunRecord(run_id=run_id, state=state, run_type="scheduled", run_after=after, start_date=started,
                     end_date=end)


class TestInProgressSince:
    def test_is_the_running_runs_start_with_runs_queued_behind_it(self):
        runs = [run("queued_2", "queued", NOW - timedelta(minutes=10)),
                run("queued_1", "queued", NOW - timedelta(minutes=40)),
                run("running", "running", NOW - timedelta(hours=3), started=NOW - timedelta(hours=2, minutes=58)),
                run("done", "success", NOW - timedelta(hours=9), started=NOW - timedelta(hours=9))]
        found = health.verdict(runs, FRESH)
        assert found.status == health.HEALTHY
        assert found.reason.endswith("; a run is in progress since 2026-06-10 07:02 UTC"), found.reason

    def test_a_run_not_started_yet_is_queued_not_in_progress(self):
        runs = [run("queued", "queued", NOW - timedelta(minutes=10)),
                run("done", "success", NOW - timedelta(hours=9), started=NOW - timedelta(hours=9))]
        assert health.in_progress_note(runs) == "; a run is queued (due 2026-06-10 09:50 UTC)"

    def test_nothing_unfinished_says_nothing(self):
        assert health.in_progress_note([run("done", "success", NOW, started=NOW)]) == ""


class TestOverviewSummary:
    ROWS = [{"name": "b", "verdict": health.HEALTHY}, {"name": "a", "verdict": health.STALE},
            {"name": "z", "verdict": health.FAILING}, {"name": "c", "verdict": health.HEALTHY},
            {"name": "w", "verdict": health.WAITING}]

    def test_counts_every_row_with_every_verdict_named(self):
        assert health.verdict_counts(self.ROWS) == {health.HEALTHY: 2, health.STALE: 1, health.FAILING: 1,
                                                    health.WAITING: 1}
        assert health.verdict_counts([]) == dict.fromkeys(health.VERDICTS, 0)

    def test_most_urgent_first_then_by_name(self):
        assert [r["name"] for r in health.most_urgent_first(self.ROWS)] == ["z", "w", "a", "b", "c"]
