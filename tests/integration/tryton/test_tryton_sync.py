"""Issue 13: the sync into a real Tryton over HTTP. The real DAG (``dag.test()``) reads 5,000
contacts from the stand-in CRM and writes parties through Tryton's REST API; its state lives in a
PostgreSQL schema. Tryton is read back through its REST API and compared with the CRM after mapping."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from sync_helpers import edit_spec_file

from conduit.devtools.tryton_server import TrytonServer
from conduit.standin.testing import run_standin

pytestmark = pytest.mark.postgres

REPO = Path(__file__).resolve().parents[3]
DAG_ID = "crm_to_tryton_customer_sync"
CONTACTS, SEED = 5_000, 13
# the kill, crash-point and outage tests load the same staged run several times over; what they
# prove (nothing lost or doubled around a kill) does not need the full sync's 5,000 contacts
FEWER = 1_500
PARTY_FIELDS = ["code", "name", "active", "write_date", "contact_mechanisms.type", "contact_mechanisms.value",
                "contact_mechanisms.value_compact", "addresses.country.code", "identifiers.type",
                "identifiers.code"]


@dataclass
class TrytonSync:
    crm: object
    tryton: TrytonServer
    include: Path
    spec_path: Path
    schema: str
    contacts: int

    def spec(self):
        from conduit.specs.model import load_spec

        return load_spec(self.spec_path)

    def edit_spec(self, **changes) -> None:
        edit_spec_file(self.spec_path, **changes)

    def dag(self):
        from airflow.dag_processing.dagbag import DagBag

        bag = DagBag(dag_folder=str(REPO / "dags"))
        assert bag.import_errors == {}
        return bag.dags[DAG_ID]

    def run(self, **conf):
        dag_run = self.dag().test(run_conf={"full_refresh": False, "dry_run": False, **conf})
        states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
        return dag_run, states

    def hook(self):
        from conduit.hooks.tryton import TrytonHook

        return TrytonHook(tryton_conn_id="tryton_default")

    def target(self):
        from conduit.hooks.erp import ErpHook

        spec = self.spec()
        return ErpHook(erp_conn_id=spec.target.conn_id, state_conn_id=spec.target.state_conn_id).get_target()

    def parties(self) -> dict[str, dict]:
        """Every party Tryton holds (active or not), read over its REST API, by code."""
        parties = list(self.hook().iter_search("party.party", [], PARTY_FIELDS, context={"active_test": False}))
        codes = [p["code"] for p in parties]
        assert len(codes) == len(set(codes)), "a code twice"
        return {p["code"]: p for p in parties}


@pytest.fixture
def tryton_sync(request, airflow_db, pg_server_dsn, erp_schema, tmp_path, monkeypatch):
    """The sync into a fresh Tryton from a stand-in CRM of CONTACTS contacts (or as many as an
    indirect parametrisation asks for)."""
    contacts = getattr(request, "param", CONTACTS)
    include = tmp_path / "include"
    shutil.copytree(REPO / "include", include)
    spec_path = include / "syncs" / f"{DAG_ID}.yaml"
    data = yaml.safe_load(spec_path.read_text())
    data["target"]["state"]["schema"] = erp_schema
    data["source"]["cursor"]["lag_seconds"] = 1  # changes a test makes are read by its next run
    spec_path.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("CONDUIT_INCLUDE_DIR", str(include))
    monkeypatch.setenv("CONDUIT_STAGING_DIR", str(tmp_path / "staging"))
    monkeypatch.setenv("CONDUIT_DATA_DOCS_DIR", str(tmp_path / "data_docs"))
    monkeypatch.setenv("AIRFLOW_CONN_CONDUIT_STATE_DEFAULT", pg_server_dsn)
    with TrytonServer(database="sync", workdir=tmp_path / "tryton") as tryton, \
            run_standin(contacts=contacts, seed=SEED) as crm:
        for name, value in tryton.connection_env("tryton_default", timeout=10, max_retries=2,
                                                 backoff_max=0.2).items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("AIRFLOW_CONN_HUBSPOT_DEFAULT", json.dumps({
            "conn_type": "hubspot", "host": crm.base_url, "password": crm.token,
            "extra": {"api_version": "2026-09", "max_retries": 4, "backoff_max": 0.5}}))
        yield TrytonSync(crm, tryton, include, spec_path, erp_schema, contacts)


def crm_rows(env: TrytonSync) -> dict[str, dict]:
    """What Tryton must hold: the CRM's live contacts, mapped by the spec, by party code."""
    from conduit.hooks.hubspot import HubSpotHook
    from conduit.pipeline.steps import raw_properties, records_to_table
    from conduit.transforms.mapping import map_frame

    spec = env.spec()
    hook = HubSpotHook(hubspot_conn_id="hubspot_default")
    records = [r for page in hook.iter_list_pages("contacts", raw_properties(spec), archived=False) for r in page]
    assert len(records) >= env.contacts - 50
    frame = map_frame(records_to_table(records, raw_properties(spec)).to_pandas(), spec)
    rows = frame[list(spec.mapping)].astype(object).where(frame[list(spec.mapping)].notna(), None)
    return {r["customer_number"]: {k: (int(v) if k == "crm_id" else v) for k, v in r.items()}
            for r in rows.to_dict("records")}


def tryton_rows(env: TrytonSync, parties: dict[str, dict], *, active: bool = True) -> dict[str, dict]:
    from conduit.targets.tryton import party_row

    spec = env.spec()
    return {code: party_row(p, spec) for code, p in parties.items() if bool(p["active"]) == active}


def load_summary(dag_run) -> dict:
    from conduit.demo import task_summaries

    return task_summaries(dag_run)["load"]


def test_full_sync_then_nothing_then_one_percent_then_archived(tryton_sync):
    env = tryton_sync
    dag_run, states = env.run()
    assert dag_run.state == "success", states
    parties = env.parties()
    expected = crm_rows(env)
    assert len(parties) == len(expected) == CONTACTS
    assert tryton_rows(env, parties) == expected  # every mapped field, read back through REST
    assert load_summary(dag_run)["inserted"] == CONTACTS

    # a second run writes nothing: no party's write_date moves
    dag_run, states = env.run()
    assert dag_run.state == "success", states
    summary = load_summary(dag_run)
    assert (summary["inserted"], summary["updated"], summary["deleted"]) == (0, 0, 0)
    again = env.parties()
    assert {c: p.get("write_date") for c, p in again.items()} == {c: p.get("write_date") for c, p in parties.items()}

    # 1% changed -> only those parties are written
    changed = sorted(parties)[:: 100][:50]
    ids = [code.removeprefix("HS-C-") for code in changed]
    env.crm.admin.bulk_modify(ids=ids, properties={"lastname": "Changed"},
                              lastmodifieddate_ms=env.crm.admin.clock_ms() - 3_000)
    dag_run, states = env.run()
    assert dag_run.state == "success", states
    summary = load_summary(dag_run)
    assert (summary["inserted"], summary["updated"], summary["deleted"]) == (0, 50, 0)
    after = env.parties()
    written = {c for c in after if after[c].get("write_date") != again[c].get("write_date")}
    assert written == set(changed)
    assert all(after[c]["name"].endswith(" Changed") for c in changed)
    assert tryton_rows(env, after) == crm_rows(env)

    # archived contacts -> their parties are inactive (soft deletes), nothing else moves
    archived = sorted(parties)[1::500][:5]
    for code in archived:
        env.crm.admin.archive(code.removeprefix("HS-C-"))
    dag_run, states = env.run()
    assert dag_run.state == "success", states
    assert load_summary(dag_run)["deleted"] == 5
    final = env.parties()
    assert {c for c, p in final.items() if not p["active"]} == set(archived)
    assert tryton_rows(env, final) == crm_rows(env)


KILLED_LOAD = """
import sys
from conduit.hooks.erp import ErpHook
from conduit.pipeline import steps
from conduit.pipeline.staging import RunStaging
from conduit.specs.model import load_spec

spec = load_spec(sys.argv[1])
target = ErpHook(erp_conn_id=spec.target.conn_id, state_conn_id=spec.target.state_conn_id).get_target()
steps.load(target, spec, RunStaging(sys.argv[2]), run_id=sys.argv[3], watermark_ms=int(sys.argv[4]))
print("loaded", flush=True)
"""


def settled_party_count(env: TrytonSync) -> int:
    """How many parties Tryton holds once a killed client's last request is done: trytond finishes
    (and commits) a batch whose sender died mid-request."""
    counts = [len(env.parties())]
    while len(counts) < 3 or len(set(counts[-3:])) > 1:
        time.sleep(0.2)
        counts.append(len(env.parties()))
    return counts[-1]


def staged_run(env: TrytonSync):
    """A run that stops after its plan (``plan_only``): the staged files stay for a load."""
    from conduit.pipeline.staging import RunStaging

    dag_run, states = env.run(plan_only=True)
    assert dag_run.state == "success", states
    assert states["load"] == "skipped", states
    from conduit.demo import task_summaries

    watermark_ms = task_summaries(dag_run)["plan_extract"][0]["watermark_ms"]
    return RunStaging.for_run(DAG_ID, dag_run.run_id), dag_run.run_id, watermark_ms


@pytest.mark.parametrize("tryton_sync", [FEWER], indirect=True)
def test_kill_9_mid_batch_then_the_retry_equals_one_clean_run(tryton_sync, tmp_path, monkeypatch):
    from conduit.pipeline import steps

    env = tryton_sync
    env.edit_spec(target__batch_size=100)
    staging, run_id, watermark_ms = staged_run(env)
    spec, hook = env.spec(), env.hook()
    child = subprocess.Popen([sys.executable, "-c", KILLED_LOAD, str(env.spec_path), str(staging.root), run_id,
                              str(watermark_ms)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:  # kill once some batches are in Tryton and others are not
            count = len(hook.search("party.party", [], ["id"], context={"active_test": False}))
            if count >= 300:
                break
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "the load never got going"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
        child.communicate()
    killed_at = settled_party_count(env)
    assert 300 <= killed_at < env.contacts
    target = env.target()
    assert target.read_watermark(spec) is None  # the watermark moves only when every change is in

    # the retry: the same staged run, loaded again
    result = steps.load(target, spec, staging, run_id=run_id, watermark_ms=watermark_ms)
    assert result.inserted == env.contacts - killed_at and result.updated == 0
    assert target.read_watermark(spec).ts_ms == watermark_ms
    retried = tryton_rows(env, env.parties())

    # one clean run of the same staged files into a fresh Tryton
    with TrytonServer(database="clean", workdir=tmp_path / "clean") as clean:
        for name, value in clean.connection_env("tryton_default").items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("AIRFLOW_CONN_CONDUIT_STATE_DEFAULT", json.dumps(
            {"conn_type": "sqlite", "host": str(tmp_path / "clean-state.sqlite")}))
        clean_target = env.target()
        clean_target.ensure_ready(spec)
        clean = steps.load(clean_target, spec, staging, run_id=run_id, watermark_ms=watermark_ms)
        assert clean.inserted == env.contacts
        assert tryton_rows(env, env.parties()) == retried
    assert len(retried) == env.contacts


@pytest.mark.parametrize("tryton_sync", [FEWER], indirect=True)
def test_a_kill_at_each_tryton_crash_point_then_the_retry_equals_one_clean_run(tryton_sync, tmp_path, monkeypatch):
    """The named crash points of the Tryton load (``conduit.crash``): after a batch is in Tryton but
    before its ledger rows, and after every change but before the watermark. One staged run; each
    point kills a load into a Tryton and a state store of its own."""
    from conduit.pipeline import steps

    env = tryton_sync
    env.edit_spec(target__batch_size=500)
    staging, run_id, watermark_ms = staged_run(env)
    spec, expected = env.spec(), crm_rows(env)
    for point in ("tryton.batch_written", "tryton.before_watermark"):
        with TrytonServer(database="crash", workdir=tmp_path / point) as tryton:
            for name, value in tryton.connection_env("tryton_default").items():
                monkeypatch.setenv(name, value)
            monkeypatch.setenv("AIRFLOW_CONN_CONDUIT_STATE_DEFAULT", json.dumps(
                {"conn_type": "sqlite", "host": str(tmp_path / f"{point}.sqlite")}))
            env.target().ensure_ready(spec)
            child_env = {**os.environ, "CONDUIT_CRASH_AT": point, "CONDUIT_CRASH_ONCE": str(tmp_path / f"{point}.once")}
            child = subprocess.run([sys.executable, "-c", KILLED_LOAD, str(env.spec_path), str(staging.root), run_id,
                                    str(watermark_ms)], env=child_env, capture_output=True, text=True, timeout=300)
            assert child.returncode == -signal.SIGKILL, (point, child.stderr[-2000:])
            in_tryton = len(env.parties())
            assert 0 < in_tryton <= env.contacts, point
            target = env.target()
            assert target.read_watermark(spec) is None, point
            result = steps.load(target, spec, staging, run_id=run_id, watermark_ms=watermark_ms)  # the retry
            assert (result.inserted, result.updated) == (env.contacts - in_tryton, 0), point
            assert target.read_watermark(spec).ts_ms == watermark_ms, point
            parties = env.parties()
            assert len(parties) == env.contacts and tryton_rows(env, parties) == expected, point
            # the ledger caught up: a further load finds nothing to do
            again = steps.load(target, spec, staging, run_id=run_id, watermark_ms=watermark_ms)
            assert (again.inserted, again.updated, again.unchanged) == (0, 0, env.contacts), point


@pytest.mark.parametrize("tryton_sync", [FEWER], indirect=True)
def test_tryton_outage_mid_load_fails_loudly_and_the_next_run_completes(tryton_sync):
    env = tryton_sync
    env.edit_spec(retries=0, target__batch_size=100)
    hook = env.hook()
    stopped = threading.Event()

    def stop_mid_load():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if len(hook.search("party.party", [], ["id"], context={"active_test": False})) >= 300:
                    env.tryton.stop()
                    stopped.set()
                    return
            except Exception:  # noqa: BLE001 - not up yet
                pass
            time.sleep(0.05)

    watcher = threading.Thread(target=stop_mid_load, daemon=True)
    watcher.start()
    dag_run, states = env.run()
    watcher.join(5)
    assert stopped.is_set()
    assert dag_run.state == "failed" and states["load"] == "failed", states
    assert states["reconcile"] != "success"
    load_ti = next(ti for ti in dag_run.get_task_instances() if ti.task_id == "load")
    assert load_ti.state == "failed"

    env.tryton.start()
    assert env.target().read_watermark(env.spec()) is None
    dag_run, states = env.run()
    assert dag_run.state == "success", states
    parties = env.parties()
    assert len(parties) == env.contacts
    assert tryton_rows(env, parties) == crm_rows(env)


@pytest.mark.parametrize("tryton_sync", [FEWER], indirect=True)
def test_a_bad_api_key_fails_at_once_naming_the_connection(tryton_sync, monkeypatch):
    from conduit.exceptions import TrytonAuthError

    env = tryton_sync
    conn = env.tryton.connection()
    conn["password"] = "not-the-key"
    monkeypatch.setenv("AIRFLOW_CONN_TRYTON_DEFAULT", json.dumps(conn))
    target = env.target()
    with pytest.raises(TrytonAuthError) as err:
        target.ensure_ready(env.spec())
    assert "tryton_default" in str(err.value) and "not-the-key" not in str(err.value)
    assert (target.hook.requests_sent, target.hook.retries) == (1, 0)

    dag_run, states = env.run()
    assert dag_run.state == "failed", states
    plan_ti = next(ti for ti in dag_run.get_task_instances() if ti.task_id == "plan_extract")
    assert plan_ti.state == "failed" and plan_ti.try_number == 1  # no retry although the spec allows 3
    monkeypatch.setenv("AIRFLOW_CONN_TRYTON_DEFAULT", json.dumps(env.tryton.connection()))
    assert env.parties() == {}
