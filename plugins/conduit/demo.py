"""``conduit-demo``: the nightly CRM -> ERP sync once, for real, on embedded defaults.

Airflow with a SQLite metadata database under ``.demo/airflow``, the stand-in CRM seeded with
10,000 contacts, and the ERP customer master in the SQLite file ``.demo/erp.sqlite``. Runs the
DAG with ``dag.test()`` (the same operators a scheduler would run) and prints what happened.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

DAG_ID = "crm_to_erp_customer_sync"


def _environment(repo: Path, home: Path) -> dict[str, str]:
    return {
        "AIRFLOW_HOME": str(home / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(repo / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(home / "airflow" / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "CONDUIT_INCLUDE_DIR": str(repo / "include"),
        "CONDUIT_STAGING_DIR": str(home / "staging"),
        "AIRFLOW_CONN_ERP_DEFAULT": json.dumps({"conn_type": "sqlite", "host": str(home / "erp.sqlite")}),
    }


def task_summaries(dag_run) -> dict[str, dict]:
    """Each task's returned summary; the mapped extract's are added up into one."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    from conduit.pipeline.steps import summarize_extract

    values: dict[str, list] = {}
    with create_session() as session:
        rows = session.query(XComModel).filter(
            XComModel.dag_id == dag_run.dag_id, XComModel.run_id == dag_run.run_id, XComModel.key == "return_value"
        ).order_by(XComModel.map_index)
        for row in rows:
            values.setdefault(row.task_id, []).append(XComModel.deserialize_value(row))
    summaries = {task: found[0] for task, found in values.items()}
    if "extract" in values:
        summaries["extract"] = summarize_extract(values["extract"])
    return summaries


def _report(dag_run, summaries: dict[str, dict], seconds: float, home: Path) -> str:
    extract = summaries.get("extract", {})
    load = summaries.get("load", {})
    gate = summaries.get("quality_gate", {})
    # distinct records: one read by two work items (a window and a webhook's ids) is staged once
    mapped = summaries.get("transform", {})
    records, archived = mapped.get("mapped", extract.get("rows", 0)), mapped.get("mapped_archived", extract.get("archived", 0))
    lines = [
        "",
        f"Conduit demo: {DAG_ID} {dag_run.state} in {seconds:.1f}s ({extract.get('mode', '?')} extract)",
        f"  extracted  {records:>7}   (+{archived} archived in the CRM)",
        f"  inserted   {load.get('inserted', 0):>7}",
        f"  updated    {load.get('updated', 0):>7}",
        f"  unchanged  {load.get('unchanged', 0):>7}",
        f"  deleted    {load.get('deleted', 0):>7}",
        f"  rejected   {gate.get('rejected', load.get('rejected', 0)):>7}   (quarantined with their reasons)",
        f"  defects    {sum(d['count'] for d in gate.get('defects', {}).values()):>7}   "
        "(loaded with the field empty; listed in conduit_defects)",
        "",
        "Where to look:",
        f"  ERP customer master   sqlite3 {home / 'erp.sqlite'} 'select count(*) from erp_customers'",
        f"  quarantine            sqlite3 {home / 'erp.sqlite'} 'select * from conduit_quarantine'",
        f"  defects               sqlite3 {home / 'erp.sqlite'} 'select * from conduit_defects'",
    ]
    if summaries.get("data_docs", {}).get("data_docs"):
        lines.append(f"  GX Data Docs          {summaries['data_docs']['data_docs']}")
    lines.append("  run it again: the second run is incremental and reports 0 inserted, 0 updated")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--bad-emails", type=int, default=0, help="seed K contacts with an invalid email")
    parser.add_argument("--full-refresh", action="store_true")
    parser.add_argument("--home", type=Path, default=Path(".demo"), help="where the demo keeps its state")
    args = parser.parse_args(argv)

    repo = Path.cwd()
    if not (repo / "dags").is_dir() or not (repo / "include" / "syncs").is_dir():
        parser.error(f"run from the Conduit repository root (no dags/ and include/syncs/ in {repo})")
    home = args.home.resolve()
    (home / "airflow" / "plugins").mkdir(parents=True, exist_ok=True)
    os.environ.update(_environment(repo, home))
    # Migrating in a child keeps its noisy logging out of the summary.
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, stdout=subprocess.DEVNULL)

    from conduit.standin.testing import run_standin

    print(f"starting the stand-in CRM with {args.contacts} contacts (seed {args.seed})...", flush=True)
    with run_standin(seed=args.seed, contacts=args.contacts, bad_emails=args.bad_emails) as crm:
        os.environ["AIRFLOW_CONN_HUBSPOT_DEFAULT"] = json.dumps({
            "conn_type": "hubspot", "host": crm.base_url, "password": crm.token,
            "extra": {"api_version": "2026-09"},
        })
        from airflow.dag_processing.dagbag import DagBag

        bag = DagBag(dag_folder=str(repo / "dags"))
        if bag.import_errors:
            print(json.dumps(bag.import_errors, indent=2), file=sys.stderr)
            return 2
        started = time.monotonic()
        dag_run = bag.dags[DAG_ID].test(run_conf={"full_refresh": args.full_refresh, "dry_run": False})
        seconds = time.monotonic() - started
    print(_report(dag_run, task_summaries(dag_run), seconds, home))
    return 0 if dag_run.state == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
