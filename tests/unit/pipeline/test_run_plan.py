"""One decision per run (``plan_run``), and the three places that need it agree: the
``plan_extract`` task, the one-process ``steps.extract`` and the benchmark."""

from __future__ import annotations

import importlib.util
import time
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from conduit.pipeline.cursor import Window
from conduit.pipeline.pages import RecordPage
from conduit.pipeline.run_plan import RunPlan, plan_run
from conduit.sources.base import CrmSource
from conduit.specs.model import load_spec
from conduit.targets.base import Watermark

REPO = Path(__file__).resolve().parents[3]
SPEC = load_spec(REPO / "include" / "syncs" / "crm_to_erp_customer_sync.yaml")  # lag 60 s, overlap 600 s, Sundays
START = 1_800_000_000_000
LAG, OVERLAP = 60_000, 600_000
SUNDAY_2AM_BERLIN = datetime.fromisoformat("2026-11-22T01:00:00+00:00")
MONDAY_2AM_BERLIN = datetime.fromisoformat("2026-11-23T01:00:00+00:00")


@pytest.mark.parametrize(
    ("stored", "kwargs", "expected"),
    [
        (None, {}, RunPlan(None, START - LAG, delete_missing=False, reason="no watermark yet")),
        (START - 3_600_000, {}, RunPlan(Window(START - 3_600_000 - OVERLAP, START - LAG), START - LAG,
                                         reason="incremental since the watermark")),
        (START - 3_600_000, {"full_refresh": True}, RunPlan(None, START - LAG, delete_missing=True,
                                                             reason="full refresh")),
        (START - 3_600_000, {"scheduled_run_after": SUNDAY_2AM_BERLIN},
         RunPlan(None, START - LAG, delete_missing=True, reason="periodic full read (sunday)")),
        (START - 3_600_000, {"scheduled_run_after": MONDAY_2AM_BERLIN},
         RunPlan(Window(START - 3_600_000 - OVERLAP, START - LAG), START - LAG,
                 reason="incremental since the watermark")),
    ],
    ids=["first-run", "incremental", "full-refresh", "periodic-full-read", "scheduled-weekday"],
)
def test_plan_run_decides_mode_window_watermark_and_deletes(stored, kwargs, expected):
    plan = plan_run(SPEC, stored_watermark_ms=stored, run_start_ms=START, **kwargs)
    assert plan == expected
    assert plan.mode == ("full" if expected.window is None else "incremental")
    assert plan.item_fields() == {"mode": plan.mode, "watermark_ms": expected.watermark_ms,
                                  "window": [expected.window.lower_ms, expected.window.upper_ms]
                                  if expected.window else None, "delete_missing": expected.delete_missing}


def test_a_manual_run_on_the_full_read_day_stays_incremental():
    """Only the scheduled run is the periodic full read (the caller passes no run_after otherwise)."""
    assert plan_run(SPEC, stored_watermark_ms=START - 1, run_start_ms=START).mode == "incremental"


# --- the three callers agree --------------------------------------------------------------------


class FakeSource(CrmSource):
    """Two live records, no archived ones; counts requests."""

    object_type, id_column = "contacts", "hs_object_id"

    def __init__(self):
        self.sent = 0

    def raw_properties(self):
        return ["email", "hs_object_id"]

    def plan(self, window, *, parallelism=1, object_ids=()):
        return [{"kind": "changed" if window else "all"}, {"kind": "archived"}]

    def read(self, item):
        self.sent += 1
        if item["kind"] != "archived":
            yield RecordPage(["1", "2"], self.raw_properties(), [("a@x.org", "1"), ("b@x.org", "2")])

    def read_records(self, ids):
        return []

    def count_created_before(self, upper_ms):
        return 2

    def modified_since_created_before(self, upper_ms):
        return []

    def dataset(self):
        raise NotImplementedError

    @property
    def requests_sent(self):
        return self.sent

    @property
    def retries(self):
        return 0


class FakeTarget:
    def __init__(self, watermark_ms: int | None):
        self.watermark = Watermark(watermark_ms, 0) if watermark_ms is not None else None

    def ensure_ready(self, spec):
        pass

    def read_watermark(self, spec):
        return self.watermark

    def holds_rows(self, spec):
        return self.watermark is not None  # a table the watermark's loads filled


def operator_items(monkeypatch, tmp_path, target, *, full_refresh: bool, run_type="manual",
                   run_after=MONDAY_2AM_BERLIN) -> list[dict]:
    from conduit.operators.sync import CrmExtractPlanOperator

    monkeypatch.setenv("CONDUIT_STAGING_DIR", str(tmp_path / "staging"))
    op = CrmExtractPlanOperator(task_id="plan_extract", spec=SPEC, full_refresh=full_refresh)
    op.__dict__.update(erp_hook=SimpleNamespace(get_target=lambda: target), source=FakeSource())
    context = {"dag_run": SimpleNamespace(run_type=run_type, run_after=run_after), "run_id": "r1",
               "triggering_asset_events": None}
    return op.execute(context)


def bench_module():
    spec = importlib.util.spec_from_file_location("bench_conduit_sync", REPO / "bench" / "conduit_sync.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("stored", "full_refresh"), [(None, False), (START - 3_600_000, False),
                                                       (START - 3_600_000, True)],
                         ids=["first-run", "incremental", "full-refresh"])
def test_operator_steps_and_bench_make_the_same_decision(monkeypatch, tmp_path, stored, full_refresh):
    from conduit.pipeline import steps
    from conduit.pipeline.staging import RunStaging

    monkeypatch.setattr(time, "time", lambda: START / 1000)
    expected = plan_run(SPEC, stored_watermark_ms=stored, run_start_ms=START, full_refresh=full_refresh)

    items = operator_items(monkeypatch, tmp_path, FakeTarget(stored), full_refresh=full_refresh)
    assert {k: items[0][k] for k in expected.item_fields()} == expected.item_fields()
    assert all(item["watermark_ms"] == expected.watermark_ms for item in items)

    bench = bench_module().plan_this_run(SPEC, FakeTarget(stored), full_refresh=full_refresh)
    assert bench == expected

    extracted = steps.extract(FakeSource(), RunStaging(tmp_path / "one-process"), expected)
    assert (extracted["mode"], extracted["watermark_ms"], extracted["rows"]) == (expected.mode,
                                                                                 expected.watermark_ms, 2)


def test_the_operator_reads_everything_on_the_scheduled_full_read_day(monkeypatch, tmp_path):
    monkeypatch.setattr(time, "time", lambda: START / 1000)
    items = operator_items(monkeypatch, tmp_path, FakeTarget(START - 3_600_000), full_refresh=False,
                           run_type="scheduled", run_after=SUNDAY_2AM_BERLIN)
    assert [(i["kind"], i["mode"], i["watermark_ms"], i["delete_missing"]) for i in items] == [
        ("all", "full", START - LAG, True), ("archived", "full", START - LAG, True)]
