"""Issue 17, the crash matrix's Tryton rows: the Tryton load (parties over Tryton's REST API, the
sync's state and sink ledger in SQL) killed with SIGKILL at its two named crash points
(:mod:`conduit.crash`), then retried, leaves Tryton's parties, the ledger and the watermark exactly
as one clean load of the same staged run does.

Lean on purpose (it runs in CI): 150 contacts in batches of 50, a full read staged once, one real
Tryton (``conduit.devtools.tryton_server``, ~5 s to start) per load: the clean one and one per
point. The longer Tryton runs (5,000 contacts, an outage mid-load) are in
``tests/integration/tryton/test_tryton_sync.py``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from crash_helpers import RESULTS, killed_in_child

pytestmark = pytest.mark.postgres  # not PostgreSQL itself: it stands with the matrix (real services, no skips)

REPO = Path(__file__).resolve().parents[2]
SPEC_FILE = REPO / "include" / "syncs" / "crm_to_tryton_customer_sync.yaml"
CONTACTS, SEED, BATCH = 150, 17, 50
RUN_ID = "scheduled__tryton-crash"
TRYTON_POINTS = ["tryton.batch_written", "tryton.before_watermark"]


@pytest.fixture(scope="module")
def tryton_bench(tmp_path_factory, request):
    """The stand-in CRM, the Tryton spec (batches of 50) and one staged full read of it; the
    clean load's outcome (computed by the first case that asks)."""
    import crash_helpers

    from conduit.pipeline import steps
    from conduit.pipeline.run_plan import plan_run
    from conduit.pipeline.staging import RunStaging
    from conduit.sources import source_for
    from conduit.specs.model import load_spec
    from conduit.standin.testing import run_standin

    if not request.config.pluginmanager.is_registered(crash_helpers):
        request.config.pluginmanager.register(crash_helpers, "crash_helpers")  # prints the table at the end
    home = tmp_path_factory.mktemp("tryton-crash")
    with pytest.MonkeyPatch.context() as mp, run_standin(contacts=CONTACTS, seed=SEED) as crm:
        mp.setenv("AIRFLOW_CONN_HUBSPOT_DEFAULT", json.dumps({
            "conn_type": "hubspot", "host": crm.base_url, "password": crm.token,
            "extra": {"api_version": "2026-09", "max_retries": 4, "backoff_max": 0.5}}))
        base = load_spec(SPEC_FILE)
        spec = base.model_copy(update={"target": base.target.model_copy(update={"batch_size": BATCH})})
        staging = RunStaging(home / "staged")
        run = plan_run(spec, stored_watermark_ms=None, run_start_ms=crm.admin.clock_ms(), full_refresh=True)
        steps.extract(source_for(spec), staging, run)
        steps.transform(spec, staging)
        assert staging.count("mapped") == CONTACTS
        yield SimpleNamespace(home=home, spec=spec, staging=staging, watermark_ms=run.watermark_ms, mp=mp,
                              clean=None)


def tryton_load(bench, name: str):
    """A fresh Tryton and state store for one load: (the server's context manager, a function making
    the target). The target is made anew in each process: no connection crosses the fork."""
    from conduit.devtools.tryton_server import TrytonServer

    server = TrytonServer(database="crash", workdir=bench.home / name)

    def connect(mp):
        for env_name, value in server.connection_env("tryton_default").items():
            mp.setenv(env_name, value)
        mp.setenv("AIRFLOW_CONN_CONDUIT_STATE_DEFAULT", json.dumps(
            {"conn_type": "sqlite", "host": str(bench.home / f"{name}-state.sqlite")}))

    return server, connect


def target_of(spec):
    from conduit.hooks.erp import ErpHook

    return ErpHook(erp_conn_id=spec.target.conn_id, state_conn_id=spec.target.state_conn_id).get_target()


def load(bench):
    from conduit.pipeline import steps

    return steps.load(target_of(bench.spec), bench.spec, bench.staging, run_id=RUN_ID,
                      watermark_ms=bench.watermark_ms)


def tryton_outcome(spec) -> SimpleNamespace:
    """What is compared: every party Tryton holds (its mapped fields and active flag, by code; a
    code twice counts as duplicated), the ledger's keys and versions, the watermark."""
    from conduit.targets import ledger
    from conduit.targets.tryton import PARTY, PARTY_FIELDS, party_row

    target = target_of(spec)
    parties = list(target.hook.iter_search(PARTY, [], PARTY_FIELDS, context={"active_test": False}))
    codes = [p["code"] for p in parties]
    rows = {p["code"]: (party_row(p, spec), bool(p["active"])) for p in parties}
    entries = ledger.read(target.state, spec.target.state_schema, spec.name)
    return SimpleNamespace(rows=rows, duplicated=len(codes) - len(set(codes)),
                           ledger=sorted((k, e.source_modified_at, e.active) for k, e in entries.items()),
                           watermark=target.read_watermark(spec))


def clean_outcome(bench) -> SimpleNamespace:
    if bench.clean is None:
        server, connect = tryton_load(bench, "clean")
        with server, pytest.MonkeyPatch.context() as mp:
            connect(mp)
            target_of(bench.spec).ensure_ready(bench.spec)
            result = load(bench)
            assert result.inserted == CONTACTS, result
            bench.clean = tryton_outcome(bench.spec)
    return bench.clean


def tryton_case(bench, point: str, *, mechanism: str = "on", switched_off: str | None = None) -> dict:
    """Kill the Tryton load at ``point`` in a forked task process, retry it in this one, compare
    with the clean load. Returns the recorded row (with ``killed_parties``: what Tryton held after
    the kill)."""
    clean = clean_outcome(bench)
    started = time.monotonic()
    server, connect = tryton_load(bench, f"{point}-{mechanism}")
    with server, pytest.MonkeyPatch.context() as mp:
        connect(mp)
        target_of(bench.spec).ensure_ready(bench.spec)
        code = killed_in_child(lambda: load(bench), point, bench.home / f"{point}-{mechanism}.fired")
        killed = tryton_outcome(bench.spec)
        error = None
        try:
            load(bench)  # Airflow's retry of the load task
        except Exception as exc:  # noqa: BLE001 - a retry that fails loudly is a result too
            error = f"{type(exc).__name__} in the recovery: {str(exc)[:100]}"
        got = tryton_outcome(bench.spec)
    lost = sum(1 for code_, row in clean.rows.items() if got.rows.get(code_) != row)
    duplicated = got.duplicated + len(set(got.rows) - set(clean.rows))
    ledger_equal = got.ledger == clean.ledger
    RESULTS.append({"point": point, "target": "tryton", "exit": code, "recovery": "retry", "mechanism": mechanism,
                    "switched_off": switched_off, "error": error, "rows": len(got.rows), "lost": lost,
                    "duplicated": duplicated, "watermark_equal": got.watermark == clean.watermark,
                    "watermark": got.watermark and got.watermark.ts_ms,
                    "clean_watermark": clean.watermark and clean.watermark.ts_ms,
                    "quarantine_equal": ledger_equal,
                    "note": None if ledger_equal else f"ledger {len(got.ledger)} entries vs {len(clean.ledger)}",
                    "killed_parties": len(killed.rows), "killed_watermark": killed.watermark,
                    "equal": error is None and lost == 0 and duplicated == 0 and ledger_equal
                    and got.watermark == clean.watermark,
                    "seconds": time.monotonic() - started})
    return RESULTS[-1]


@pytest.mark.parametrize("point", TRYTON_POINTS)
def test_a_tryton_load_killed_at_the_point_then_retried_equals_one_clean_load(tryton_bench, point):
    result = tryton_case(tryton_bench, point)
    assert result["exit"] == -9, f"{point}: the load was not killed there (exit {result['exit']})"
    # the kill left work undone: a batch of parties only (batch_written), or no watermark (both)
    assert result["killed_watermark"] is None, result
    if point == "tryton.batch_written":
        assert result["killed_parties"] == BATCH, result
    assert result["error"] is None and result["equal"], result
