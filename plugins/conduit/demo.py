"""``conduit-demo``: the nightly CRM -> ERP sync once, for real, on embedded defaults.

Airflow with a SQLite metadata database under ``.demo/airflow``, the stand-in CRM seeded with
10,000 contacts, and the ERP customer master in the SQLite file ``.demo/erp.sqlite``. Runs the
DAG with ``dag.test()`` (the same operators a scheduler would run) and prints what happened.

``--target tryton`` runs the second flagship, ``crm_to_tryton_customer_sync``, instead: a real
Tryton ERP (:mod:`conduit.devtools.tryton_server`, its SQLite database kept in ``.demo/tryton``)
receives the contacts as parties over its REST API, the sync's state goes to the SQLite file
``.demo/conduit_state.sqlite``, and the report adds parties read back from Tryton.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

DAG_ID = "crm_to_erp_customer_sync"
TRYTON_DAG_ID = "crm_to_tryton_customer_sync"
TRYTON_DATABASE = "demo"
SAMPLE_PARTIES = 5


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


def _report(dag_id: str, dag_run, summaries: dict[str, dict], seconds: float, *, where: list[str],
            details: list[str] = ()) -> str:
    extract = summaries.get("extract", {})
    load = summaries.get("load", {})
    gate = summaries.get("quality_gate", {})
    # distinct records: one read by two work items (a window and a webhook's ids) is staged once
    mapped = summaries.get("transform", {})
    records, archived = mapped.get("mapped", extract.get("rows", 0)), mapped.get("mapped_archived", extract.get("archived", 0))
    lines = [
        "",
        f"Conduit demo: {dag_id} {dag_run.state} in {seconds:.1f}s ({extract.get('mode', '?')} extract)",
        f"  extracted  {records:>7}   (+{archived} archived in the CRM)",
        f"  inserted   {load.get('inserted', 0):>7}",
        f"  updated    {load.get('updated', 0):>7}",
        f"  unchanged  {load.get('unchanged', 0):>7}",
        f"  deleted    {load.get('deleted', 0):>7}",
        f"  rejected   {gate.get('rejected', load.get('rejected', 0)):>7}   (quarantined with their reasons)",
        f"  defects    {sum(d['count'] for d in gate.get('defects', {}).values()):>7}   "
        "(found by this run, loaded with the field empty; every open one is in conduit_defects)",
        *details,
        "",
        "Where to look:",
        *where,
    ]
    if summaries.get("data_docs", {}).get("data_docs"):
        lines.append(f"  GX Data Docs          {summaries['data_docs']['data_docs']}")
    if extract.get("mode") == "full":
        lines.append("  run it again: the second run is incremental and reports 0 inserted, 0 updated")
    return "\n".join(lines)


def run_sync(repo: Path, dag_id: str, env: dict[str, str], args: argparse.Namespace, *, where: list[str],
             details: Callable[[dict[str, dict]], list[str]] | None = None) -> int:
    """Run the sync DAG ``dag_id`` once with ``dag.test()`` in ``env`` (added to ``os.environ``),
    reading the stand-in CRM seeded as ``args`` say, and print its report: the counts, then
    ``details(summaries)`` (called while the target still serves), then ``where`` to look."""
    os.environ.update(env)
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
        dag_run = bag.dags[dag_id].test(run_conf={"full_refresh": args.full_refresh, "dry_run": False})
        seconds = time.monotonic() - started
    summaries = task_summaries(dag_run)
    print(_report(dag_id, dag_run, summaries, seconds, where=where,
                  details=details(summaries) if details else []), flush=True)
    return 0 if dag_run.state == "success" else 1


# --- the default: the ERP customer master in a SQLite file --------------------------------------


def _erp_demo(repo: Path, home: Path, args: argparse.Namespace) -> int:
    erp = home / "erp.sqlite"
    return run_sync(repo, DAG_ID, _environment(repo, home), args, where=[
        f"  ERP customer master   sqlite3 {erp} 'select count(*) from erp_customers'",
        f"  quarantine            sqlite3 {erp} 'select * from conduit_quarantine'",
        f"  defects               sqlite3 {erp} 'select * from conduit_defects'",
    ])


# --- --target tryton: parties of a real Tryton, the sync's state in a SQLite file ---------------


def demo_tryton(home: Path):
    """A Tryton on its SQLite database in ``home/tryton``, kept between demo runs like the demo's
    other files (``rm -rf`` the home to start over). A database made from another trytond or
    template version is replaced, and with a new Tryton database the sync's state starts over too:
    the state describes what the sync wrote into that database."""
    from conduit.devtools.tryton_server import TrytonServer, template_name

    workdir, state = home / "tryton", home / "conduit_state.sqlite"
    stamp = workdir / "template"
    if stamp.exists() and stamp.read_text().strip() != template_name():
        shutil.rmtree(workdir)
    if not (workdir / f"{TRYTON_DATABASE}.sqlite").exists():
        state.unlink(missing_ok=True)
    workdir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(template_name() + "\n")
    return TrytonServer(TRYTON_DATABASE, workdir=workdir, keep_database=True)


def _cell(value) -> str:
    return "-" if value in (None, "") else str(value)


def tryton_details(tryton, repo: Path, summaries: dict[str, dict]) -> list[str]:
    """Where Tryton is, what reconcile found, and a few parties read back over its REST API."""
    from importlib import metadata

    from conduit.hooks.tryton import TrytonHook
    from conduit.specs.model import load_spec
    from conduit.targets.tryton import PARTY, PARTY_FIELDS, party_row

    lines = ["", f"Tryton {metadata.version('trytond')} at {tryton.base_url}, database {tryton.database!r} "
                 f"(SQLite {tryton.workdir / (tryton.database + '.sqlite')})"]
    check = summaries.get("reconcile")
    if check and "staged_checked" in check:
        lines.append(f"  reconcile  {check['staged_checked']} loaded rows read back, {check['staged_mismatched']} "
                     f"differ; {check['erp_active']} active parties for {check['crm_live']} CRM contacts "
                     f"({check['quarantined_unloaded']} quarantined, {check['missing_in_erp']} missing)")
    else:
        lines.append(f"  reconcile  {check.get('skipped', 'did not run') if check else 'did not run'}")
    try:
        spec = load_spec(repo / "include" / "syncs" / f"{TRYTON_DAG_ID}.yaml")
        hook = TrytonHook(tryton_conn_id=spec.target.conn_id)
        synced = [["code", "like", "HS-C-%"]]
        active = sum(1 for p in hook.iter_search(PARTY, synced, ["active"], page_size=2_000,
                                                 context={"active_test": False}) if p["active"])
        sample = hook.search(PARTY, synced, PARTY_FIELDS, limit=SAMPLE_PARTIES, order=[("id", "ASC")])
    except Exception as exc:  # noqa: BLE001 - the report still shows what the run did
        return [*lines, f"  reading the parties back failed: {type(exc).__name__}: {exc}"]
    fields = spec.target.fields
    columns = (fields.name, fields.email, fields.phone, fields.country)
    rows = [["code", "name", "email", "phone", "country"]]
    for party in sample:
        row = party_row(party, spec)
        rows.append([_cell(party.get("code"))] + [_cell(row.get(c)) for c in columns])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines.append(f"  parties    {active} active HS-C-* parties in Tryton; the first {len(sample)}, read back over REST:")
    if sample:
        lines += ["    " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return lines


def _tryton_demo(repo: Path, home: Path, args: argparse.Namespace) -> int:
    if importlib.util.find_spec("trytond") is None:
        print("--target tryton needs trytond and trytond-party (the dev group: uv sync installs them)",
              file=sys.stderr)
        return 2
    state = home / "conduit_state.sqlite"
    tryton = demo_tryton(home)
    print(f"starting Tryton (SQLite in {tryton.workdir})...", flush=True)
    with tryton:
        env = {**_environment(repo, home), **tryton.connection_env("tryton_default"),
               "AIRFLOW_CONN_CONDUIT_STATE_DEFAULT": json.dumps({"conn_type": "sqlite", "host": str(state)})}
        database = tryton.workdir / f"{tryton.database}.sqlite"
        rest = f"{tryton.url_for('party.party')}?f=code&f=name&s=5"
        # the key goes to a file only its owner reads, not into the output a user may paste somewhere
        key_file = tryton.workdir / "api-key"
        key_file.touch(mode=0o600)
        key_file.chmod(0o600)
        key_file.write_text(tryton.api_key)
        code = run_sync(repo, TRYTON_DAG_ID, env, args, details=lambda s: tryton_details(tryton, repo, s), where=[
            f"  Tryton parties (REST) curl -H \"Authorization: Bearer $(cat '{key_file}')\" '{rest}'"
            + ("" if args.serve else "   (with --serve)"),
            f"  Tryton's database     sqlite3 {database} 'select code, name, active from party_party'",
            f"  quarantine            sqlite3 {state} 'select * from conduit_quarantine'",
            f"  defects               sqlite3 {state} 'select * from conduit_defects'",
            f"  Tryton's log          {tryton.log_path}",
        ])
        if args.serve and tryton.running:
            print(f"\nTryton serves {tryton.base_url} (database {tryton.database!r}, admin / {tryton.admin_password})"
                  " until Ctrl-C", flush=True)
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(code))  # leaving the with stops trytond
            try:
                while tryton.running:
                    time.sleep(0.5)
            except KeyboardInterrupt:
                pass
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=("erp", "tryton"), default="erp",
                        help=f"erp: {DAG_ID} into a SQLite file (default); "
                             f"tryton: {TRYTON_DAG_ID} into a real Tryton")
    parser.add_argument("--contacts", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--bad-emails", type=int, default=0, help="seed K contacts with an invalid email")
    parser.add_argument("--full-refresh", action="store_true")
    parser.add_argument("--home", type=Path, default=Path(".demo"), help="where the demo keeps its state")
    parser.add_argument("--serve", action="store_true",
                        help="with --target tryton: keep Tryton serving after the report, until Ctrl-C")
    args = parser.parse_args(argv)
    if args.serve and args.target != "tryton":
        parser.error("--serve goes with --target tryton")

    repo = Path.cwd()
    if not (repo / "dags").is_dir() or not (repo / "include" / "syncs").is_dir():
        parser.error(f"run from the Conduit repository root (no dags/ and include/syncs/ in {repo})")
    home = args.home.resolve()
    (home / "airflow" / "plugins").mkdir(parents=True, exist_ok=True)
    return (_tryton_demo if args.target == "tryton" else _erp_demo)(repo, home, args)


if __name__ == "__main__":
    sys.exit(main())
