"""What the fault-storm and concurrency tests share: one incremental sync run over the stand-in CRM
(last night's full load in a fresh ERP schema, then 300 updated and 20 new contacts), run as its
Airflow tasks (``crash_helpers.SyncRun``) with Airflow's retries, compared with one clean run of it.

Registered as a plugin by the modules' fixtures: the terminal summary prints one table.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from crash_helpers import SyncBench, SyncRun, differences, in_schema, outcome

REPO = Path(__file__).resolve().parents[2]
SPEC_FILE = REPO / "include" / "syncs" / "crm_to_erp_customer_sync.yaml"
SUITE = REPO / "include" / "expectations" / "erp_customers.yaml"
CONTACTS, SEED = 600, 11
NIGHT_MS = SyncBench.night_ms
UPDATED, NEW = 300, 20
TRIES = 3  # the sync's tasks retry (Airflow): a task failing with a retryable error runs again

RESULTS: list[dict[str, Any]] = []  # one row per storm or concurrency case


def hubspot_conn(base_url: str, token: str) -> str:
    # a short read timeout, so that a stalled reply is a read timeout within the test's budget
    return json.dumps({"conn_type": "hubspot", "host": base_url, "password": token,
                       "extra": {"api_version": "2026-09", "max_retries": 4, "backoff_max": 0.05, "timeout": 0.4}})


class Bench(SyncBench):
    """The stand-in CRM, last night's staged full read, this run's pinned start, one clean run."""

    schema_prefix = "storm_"

    def erp(self, name: str):
        """A fresh ERP schema holding last night's load; its spec."""
        spec = in_schema(self.base, self.fresh_schema())
        self.last_night(spec)
        return spec

    def run(self, spec, name: str) -> SyncRun:
        return SyncRun(spec, SUITE, self.home / f"{name}-{uuid.uuid4().hex[:6]}")

    def compare(self, spec) -> dict[str, Any]:
        return differences(self.clean, outcome(self.target, spec), spec.target.key)


def run_with_retries(run: SyncRun, tries: int = TRIES) -> list[str]:
    """Run the DAG run's tasks; a task failing retryably runs again (with the tasks after it), up to
    ``tries`` times; a task failing at once (AirflowFailException) ends it. Returns the errors seen."""
    from airflow.sdk.exceptions import AirflowFailException

    errors: list[str] = []
    for _ in range(tries):
        try:
            run.run()
            return errors
        except AirflowFailException as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            raise
        except Exception as exc:  # noqa: BLE001 - Airflow's retry: what failed is recorded
            errors.append(f"{type(exc).__name__}: {exc}")
    raise AssertionError(f"still failing after {tries} tries: {errors}")


def start_bench(pg_dsn: str, home: Path, mp) -> Any:
    """The stand-in (600 contacts), last night's full read staged, the CRM's changes since, the run's
    start pinned (as in the crash matrix), and a clean run of it. A context manager's body: the
    caller keeps ``bench.crm_context`` open."""
    from conduit.hooks.erp import ErpHook
    from conduit.operators import sync as sync_operators
    from conduit.pipeline import steps
    from conduit.pipeline.run_plan import plan_run
    from conduit.pipeline.staging import RunStaging
    from conduit.sources import source_for
    from conduit.specs.model import load_spec
    from conduit.standin.testing import run_standin

    crm_context = run_standin(contacts=CONTACTS, seed=SEED)
    crm = crm_context.__enter__()
    mp.setenv("AIRFLOW_CONN_ERP_DEFAULT", pg_dsn)
    mp.setenv("AIRFLOW_CONN_HUBSPOT_DEFAULT", hubspot_conn(crm.base_url, crm.token))
    bench = Bench(dsn=pg_dsn, crm=crm, crm_context=crm_context, home=home, schemas=[],
                  target=ErpHook().get_target())
    bench.base = load_spec(SPEC_FILE)
    bench.start_ms = crm.admin.clock_ms() // 1000 * 1000 + 1000
    bench.night = RunStaging(home / "night")
    night_plan = plan_run(bench.base, stored_watermark_ms=None, run_start_ms=bench.start_ms - NIGHT_MS,
                          full_refresh=True)
    steps.extract(source_for(bench.base), bench.night, night_plan)
    steps.transform(bench.base, bench.night)
    ids = [r["id"] for page in source_for(bench.base).hook.iter_list_pages("contacts", ["email"], limit=100)
           for r in page]
    bench.ids = ids
    past = bench.start_ms - NIGHT_MS // 2
    crm.admin.bulk_modify(ids=ids[:UPDATED], properties={"company": "Storm AG"}, lastmodifieddate_ms=past)
    for i in range(NEW):
        crm.admin.create({"email": f"storm{i}@example.com", "firstname": f"Storm{i}", "lastname": "Front",
                          "country": "Germany"}, createdate_ms=past, lastmodifieddate_ms=past + i)
    mp.setattr(sync_operators, "time", SimpleNamespace(time=lambda: bench.start_ms / 1000))
    while crm.admin.clock_ms() < bench.start_ms:
        time.sleep(0.05)
    bench.clean_spec = bench.erp("clean")
    started = time.monotonic()
    bench.run(bench.clean_spec, "clean").run()
    bench.clean_seconds = time.monotonic() - started
    bench.clean = outcome(bench.target, bench.clean_spec)
    return bench


def stop_bench(bench) -> None:
    import psycopg

    try:
        with psycopg.connect(bench.dsn, autocommit=True) as conn:
            for schema in bench.schemas:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        bench.crm_context.__exit__(None, None, None)


def record(module: str, case: str, outcome_: str, diff: dict[str, Any], seconds: float, note: str = "") -> dict:
    row = {"module": module, "case": case, "outcome": outcome_, "rows": diff["rows"], "lost": diff["lost"],
           "duplicated": diff["duplicated"], "exact": diff["equal"], "seconds": seconds, "note": note}
    RESULTS.append(row)
    return row


def pytest_terminal_summary(terminalreporter) -> None:
    if not RESULTS:
        return
    write = terminalreporter.write_line
    for module in dict.fromkeys(r["module"] for r in RESULTS):
        rows = [r for r in RESULTS if r["module"] == module]
        terminalreporter.section(module)
        write(f"{'case':34} {'outcome':22} {'rows':>5} {'lost':>5} {'dup':>4} {'exact':6} {'seconds':>7}  note")
        for r in rows:
            write(f"{r['case']:34} {r['outcome']:22} {r['rows']:>5} {r['lost']:>5} {r['duplicated']:>4} "
                  f"{str(r['exact']):6} {r['seconds']:>7.1f}  {r['note'][:90]}")
        write(f"{module}: cases {len(rows)}, survived {sum(r['outcome'] != 'FAILED' for r in rows)}, "
              f"runs exact {sum(r['exact'] for r in rows)}, rows lost {sum(r['lost'] for r in rows)}, "
              f"rows duplicated {sum(r['duplicated'] for r in rows)}")
