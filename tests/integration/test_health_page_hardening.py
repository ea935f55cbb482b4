"""Review of the sync health API (``/conduit-ui``) inside Airflow's own app (``create_app("core")``,
SimpleAuthManager, JWTs from ``/auth/token``), on runs written into the real metadata DB as the
scale test writes them and a real SQLite state store: what a user sees when a plan waits for
approval behind queued runs and after a dry run, what the Data Docs route serves for hostile
paths and hostile CRM values (real Great Expectations Data Docs), what a user who may read a sync
but not the replay DAG sees of the replays, and what a broken spec's error tells the browser (see also ``test_health_spec_problems``)."""

from __future__ import annotations

import contextlib
import html
import json
import logging
import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager
from airflow_runs import forget_dag_runs, register_dags
from test_health_api import Api, use_simple_auth

REPO = Path(__file__).resolve().parents[2]
DAG_ID = "crm_to_erp_customer_sync"
REPLAY_DAG_ID = "conduit_quarantine_replay"


class ViewerMayNotReadReplays(SimpleAuthManager):
    """SimpleAuthManager with one per-DAG rule, as FAB's or Keycloak's DAG permissions allow: the
    viewer may not read (nor trigger) the replay DAG; everything else as its role says."""

    def is_authorized_dag(self, *, method, user, access_entity=None, details=None):
        if user.username == "viewer" and details is not None and details.id == REPLAY_DAG_ID:
            return False
        return super().is_authorized_dag(method=method, user=user, access_entity=access_entity,
                                         details=details)


@pytest.fixture
def env(airflow_db, tmp_path, monkeypatch):
    """Airflow's API app with an admin, a viewer and a user without a role; the flagship sync's
    runs forgotten; its state in a SQLite file; staging and Data Docs under ``tmp_path``."""
    with health_app(tmp_path, monkeypatch) as served:
        yield served


@pytest.fixture
def replay_hidden(airflow_db, tmp_path, monkeypatch):
    """As ``env``, but the viewer may not read the replay DAG (:class:`ViewerMayNotReadReplays`);
    the replay DAG's runs forgotten too."""
    hidden = f"{__name__}.{ViewerMayNotReadReplays.__name__}"
    with health_app(tmp_path, monkeypatch, auth_manager=hidden) as served:
        forget_dag_runs(REPLAY_DAG_ID)
        try:
            yield served
        finally:
            forget_dag_runs(REPLAY_DAG_ID)


@contextlib.contextmanager
def health_app(tmp_path, monkeypatch, auth_manager: str | None = None):
    """The app of ``env`` (``auth_manager``: another auth manager class, by its import path)."""
    from airflow.api_fastapi.app import create_app, purge_cached_app
    from fastapi.testclient import TestClient

    from conduit.ui import data

    include = tmp_path / "include"
    shutil.copytree(REPO / "include", include)
    sqlite = json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "state.db")})
    monkeypatch.setenv("CONDUIT_INCLUDE_DIR", str(include))
    monkeypatch.setenv("CONDUIT_STAGING_DIR", str(tmp_path / "airflow" / "conduit" / "staging"))
    monkeypatch.delenv("CONDUIT_DATA_DOCS_DIR", raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_ERP_DEFAULT", sqlite)
    monkeypatch.setenv("AIRFLOW_CONN_CONDUIT_STATE_DEFAULT", sqlite)
    use_simple_auth(monkeypatch.setenv, tmp_path)
    if auth_manager:
        monkeypatch.setenv("AIRFLOW__CORE__AUTH_MANAGER", auth_manager)
    register_dags()
    forget_dag_runs(DAG_ID)
    data.clear_state_cache()
    purge_cached_app()
    try:
        with TestClient(create_app("core"), raise_server_exceptions=False) as client:
            yield Api(client), tmp_path
    finally:
        purge_cached_app()  # also drops this test's auth manager
        data.clear_state_cache()
        forget_dag_runs(DAG_ID)


def insert_run(run_id, after, state, task_states, summaries=None, run_type="scheduled", dag_id=DAG_ID,
               conf=None):
    """One run of the flagship sync (or ``dag_id``), its task instances (``task_states``, and a
    successful one per task in ``summaries``) and the tasks' returned summaries, written as Airflow
    writes them."""
    from airflow.models.dag_version import DagVersion
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance, uuid7
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from airflow.utils.types import DagRunTriggeredByType
    from sqlalchemy import select

    with create_session() as session:
        version = session.scalars(select(DagVersion.id).where(DagVersion.dag_id == dag_id)
                                  .order_by(DagVersion.version_number.desc())).first()
        finished = state in ("success", "failed")
        session.execute(DagRun.__table__.insert(), [{
            "dag_id": dag_id, "run_id": run_id, "run_type": run_type, "state": state, "logical_date": after,
            "run_after": after, "queued_at": after, "data_interval_start": after, "data_interval_end": after,
            "start_date": after + timedelta(seconds=5) if state != "queued" else None,
            "end_date": after + timedelta(seconds=65) if finished else None,
            "triggered_by": DagRunTriggeredByType.TIMETABLE, "created_dag_version_id": version,
            "clear_number": 0, "conf": conf or {}}])
        pk = session.scalar(select(DagRun.id).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
        tis = [{
            "id": uuid7(), "dag_id": dag_id, "run_id": run_id, "task_id": task_id, "map_index": -1,
            "state": ti_state, "try_number": 1, "max_tries": 0, "pool": "default_pool", "pool_slots": 1,
            "queue": "default", "priority_weight": 1, "operator": "PythonOperator", "dag_version_id": version}
            for task_id, ti_state in {**{t: "success" for t in summaries or {}}, **task_states}.items()]
        if tis:
            session.execute(TaskInstance.__table__.insert(), tis)
        for task_id, value in (summaries or {}).items():
            session.execute(XComModel.__table__.insert(), [{
                "dag_run_id": pk, "dag_id": dag_id, "run_id": run_id, "task_id": task_id, "map_index": -1,
                "key": "return_value", "value": XComModel.serialize_value(value), "timestamp": after}])


def seed_state(watermark_at):
    """The sync's state tables, with a watermark at ``watermark_at``."""
    from conduit.hooks.erp import ErpHook
    from conduit.targets.base import Watermark
    from conduit.ui import data

    spec = data.load_sync_specs()[DAG_ID]
    store = ErpHook().get_state_store()
    store.ensure_state(spec)
    store.commit_load(spec, run_id="x", watermark=Watermark(int(watermark_at.timestamp() * 1000), 1))


LOAD = {"inserted": 1, "updated": 2, "unchanged": 3, "deleted": 0, "stale_skipped": 0, "dry_run": False}


def test_a_plan_waiting_for_approval_is_shown_with_runs_queued_behind_it(env):
    """A sync runs one run at a time: runs triggered by hand (or by webhooks) while a plan waits in
    Required Actions queue behind it. The page must still say the sync waits for approval."""
    api, _ = env
    now = datetime.now(UTC).replace(microsecond=0)
    seed_state(now - timedelta(minutes=5))
    insert_run("scheduled__ok", now - timedelta(hours=5), "success", {}, {"load": LOAD})
    insert_run("scheduled__waits", now - timedelta(hours=4), "running", {"approve_plan": "awaiting_input"})
    for hours in (3, 2, 1):  # more than the overview's three newest runs
        insert_run(f"manual__queued_{hours}", now - timedelta(hours=hours), "queued", {}, run_type="manual")

    row = {r["name"]: r for r in api.get("/conduit-ui/api/syncs").json()["syncs"]}[DAG_ID]
    assert (row["verdict"], row["reason"].split(":")[0]) == ("waiting for approval", "run scheduled__waits"), \
        row["reason"]
    for limit in (30, 1):
        detail = api.get(f"/conduit-ui/api/syncs/{DAG_ID}?limit={limit}").json()
        assert detail["verdict"] == "waiting for approval", detail["reason"]
    page = api.get(f"/conduit-ui/syncs/{DAG_ID}").text
    assert "waits for a person" in page


def test_a_dry_runs_rolled_back_load_is_no_rows_changed_in_the_chart(env):
    """A dry run rolls its load back (README: it changes neither the ERP's data nor the sync's
    state); its summary says what a real load would change. The "rows changed per run" chart
    must not plot those rows as changed."""
    api, _ = env
    now = datetime.now(UTC).replace(microsecond=0)
    seed_state(now - timedelta(minutes=5))
    insert_run("scheduled__real", now - timedelta(hours=5), "success", {}, {"load": LOAD})
    dry = {**LOAD, "inserted": 597, "updated": 40, "deleted": 12, "dry_run": True}
    insert_run("manual__dry", now - timedelta(hours=1), "success", {}, {"load": dry}, run_type="manual")

    rows = api.get(f"/conduit-ui/api/syncs/{DAG_ID}").json()["charts"]["rows"]
    assert rows["run_id"] == ["scheduled__real", "manual__dry"]
    assert {name: rows[name] for name in ("inserted", "updated", "deleted", "unchanged")} == {
        "inserted": [LOAD["inserted"], None], "updated": [LOAD["updated"], None],
        "deleted": [LOAD["deleted"], None], "unchanged": [LOAD["unchanged"], None]}


@pytest.mark.parametrize("path", [
    f"/conduit-ui/data-docs/%2E%2E/staging/{DAG_ID}/manual__1/records.json",  # the staged CRM records
    f"/conduit-ui/data-docs/{DAG_ID}/manual__1/index.html%00",
    "/conduit-ui/data-docs/not%00a_dag/manual__1/index.html",
], ids=["dot-dot-dag-id", "nul-in-path", "nul-in-dag-id"])
def test_data_docs_serve_only_a_syncs_site(env, path):
    """The Data Docs route names the site's folder by the DAG id: ``%2E%2E`` (``..``) must not
    reach the staged CRM records beside the sites, and a NUL byte is a 404, not a 500."""
    api, tmp = env
    staged = tmp / "airflow" / "conduit" / "staging" / DAG_ID / "manual__1"
    staged.mkdir(parents=True)
    (staged / "records.json").write_text('{"email": "person@example.com"}')
    site = tmp / "airflow" / "conduit" / "data_docs" / DAG_ID / "manual__1"
    site.mkdir(parents=True)
    (site / "index.html").write_text("<html><body>the site</body></html>")

    assert "the site" in api.get(f"/conduit-ui/data-docs/{DAG_ID}/manual__1/index.html").text
    resp = api.client.get(path, headers={"Authorization": f"Bearer {api.token('admin')}"})
    assert resp.status_code == 404, f"{path}: {resp.status_code} {resp.text[:200]}"
    assert resp.json() == {"detail": "no such Data Docs file"}


def write_data_docs(run_id: str, hostile: str) -> None:
    """The run's Data Docs as its ``data_docs`` task writes them (Great Expectations itself), for
    40 stand-in contacts of which one has ``hostile`` as its lifecycle stage (a defect rule)."""
    from airflow.sdk import DAG

    from conduit.operators.sync import DataDocsOperator
    from conduit.pipeline import steps
    from conduit.standin.data import generate, iter_records
    from conduit.ui import data

    spec = data.load_sync_specs()[DAG_ID]
    records = list(iter_records(generate(seed=3, contacts=40).contacts))
    records[7]["properties"]["lifecyclestage"] = hostile
    with DAG(dag_id=DAG_ID, schedule=None):
        op = DataDocsOperator(task_id="data_docs", spec=spec,
                              suite_path=str(data.syncs_dir().parent / "expectations" / spec.quality.suite))
    context = {"run_id": run_id}
    staging = op.staging(context)
    with staging.writer("raw", "all") as writer:
        writer.write(steps.records_to_table(records, steps.raw_properties(spec)))
    staging.reset("archived")
    steps.transform(spec, staging)
    assert op.execute(context)["data_docs"]


def script_sources(csp: str) -> list[str]:
    return next(d.split()[1:] for d in csp.split(";") if d.split() and d.split()[0] == "script-src")


def test_a_crm_value_in_the_data_docs_cannot_run_as_a_script(env):
    """Great Expectations writes the failing values into its validation page unescaped: a CRM
    value ``<img src=x onerror=...>`` would be markup there. Conduit escapes the values before GX
    renders them, and, should one slip through, pages with CRM values may run no inline script or
    handler on Airflow's origin; the index (no CRM values) keeps the inline script that fills its
    table."""
    api, _ = env
    hostile = "<img src=x onerror=alert(document.domain)>"
    write_data_docs("manual__hostile", hostile)
    index = api.get(f"/conduit-ui/data-docs/{DAG_ID}/manual__hostile/index.html")
    assert hostile not in index.text and "bootstrapTable(" in index.text
    assert "'unsafe-inline'" in script_sources(index.headers["content-security-policy"])

    validation = re.search(r"(validations/[^'\"]+\.html)", index.text).group(1)
    page = api.get(f"/conduit-ui/data-docs/{DAG_ID}/manual__hostile/{validation}")
    assert hostile not in page.text  # the value is shown as text, escaped before GX renders it
    assert html.escape(hostile) in page.text
    assert script_sources(page.headers["content-security-policy"]) == ["'self'"], \
        page.headers["content-security-policy"]


def test_the_replays_are_shown_only_to_who_may_read_the_replay_dag(replay_hidden):
    """The sync page shows the replay DAG's latest run for the sync (run id, state) and whether the
    replay DAG is paused: facts of the replay DAG, not of the sync. A user who may read the sync but
    not the replay DAG must get neither, in the JSON or the page. The button stays, disabled: whether
    it may be used is the trigger permission's (checked apart, and again by Airflow)."""
    api, _ = replay_hidden
    now = datetime.now(UTC).replace(microsecond=0)
    seed_state(now - timedelta(minutes=5))
    insert_run("scheduled__ok", now - timedelta(hours=2), "success", {}, {"load": LOAD})
    replay_run = "manual__replay_of_the_sync_4711"
    insert_run(replay_run, now - timedelta(hours=1), "failed", {}, run_type="manual", dag_id=REPLAY_DAG_ID,
               conf={"sync": DAG_ID, "dry_run": False})
    api.get(f"/api/v2/dags/{REPLAY_DAG_ID}/dagRuns", user="viewer", expect=403)  # Airflow's own answer
    api.get(f"/api/v2/dags/{DAG_ID}/dagRuns", user="viewer")

    admin = api.get(f"/conduit-ui/api/syncs/{DAG_ID}").json()["replay"]
    latest = admin["latest"]
    assert (latest["run_id"], latest["state"], admin["paused"]) == (replay_run, "failed", True)
    assert replay_run in api.get(f"/conduit-ui/syncs/{DAG_ID}").text

    viewer = api.get(f"/conduit-ui/api/syncs/{DAG_ID}", user="viewer")
    replay = viewer.json()["replay"]
    assert replay_run not in viewer.text, replay
    assert (replay["latest"], replay["paused"], replay["can_trigger"]) == (None, None, False)
    page = api.get(f"/conduit-ui/syncs/{DAG_ID}", user="viewer").text
    assert replay_run not in page and "is paused" not in page
    assert 'data-testid="replay"' in page and f"you may not trigger {REPLAY_DAG_ID}" in page


def write_broken_specs(syncs: Path) -> list[str]:
    """Two specs beside the flagships that do not load (a cursor lag that is no number); their file names."""
    text = (syncs / f"{DAG_ID}.yaml").read_text()
    names = []
    for name in ("broken_a_sync", "broken_b_sync"):
        broken = text.replace(f"name: {DAG_ID}", f"name: {name}")
        broken = broken.replace("lag_seconds: 60", "lag_seconds: soon")
        (syncs / f"{name}.yaml").write_text(broken)
        names.append(f"{name}.yaml")
    return names


OVERVIEW_ROUTES = ("/conduit-ui/api/syncs", "/conduit-ui/")


def test_a_broken_spec_is_named_by_its_file_not_by_the_servers_paths(env, caplog):
    """A spec that does not load is said so, with why: in the overview (which still answers, the
    other syncs stand on their own) and as a 500 of that sync's own routes. The browser is told the
    spec's file (relative to the specs folder) and the field, enough to fix it, but no path of the
    server; the server's log has the whole message."""
    api, tmp = env
    syncs = tmp / "include" / "syncs"
    files = write_broken_specs(syncs)
    caplog.set_level(logging.ERROR, logger="conduit.ui.app")
    for accept in ("application/json", "text/html"):
        for path in OVERVIEW_ROUTES:
            body = api.get(path, accept=accept).text
            assert str(tmp) not in body and str(REPO) not in body, f"{path} ({accept}): {body[:600]}"
            assert all(name in body for name in files) and "source.cursor.lag_seconds" in body, body[:600]
        for path in ("/conduit-ui/api/syncs/broken_a_sync", "/conduit-ui/syncs/broken_a_sync"):
            body = api.get(path, expect=500, accept=accept).text
            assert str(tmp) not in body and str(REPO) not in body, f"{path} ({accept}): {body[:600]}"
            assert files[0] in body and files[1] not in body and "source.cursor.lag_seconds" in body, body[:600]
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "conduit.ui.app")
    assert str(syncs / files[0]) in logged and str(syncs / files[1]) in logged, logged[:600]


def test_a_broken_spec_is_not_described_to_who_may_not_see_import_errors(env):
    """A broken spec fails its DAG file: Airflow shows why as an import error to those who may see
    import errors. The health view must not tell more to a user without that permission (and
    without any DAG: the overview needs no DAG permission to answer): which files, which fields."""
    api, tmp = env
    files = write_broken_specs(tmp / "include" / "syncs")
    for user, told in (("nobody", False), ("viewer", True)):
        for accept in ("application/json", "text/html"):
            body = api.get("/conduit-ui/api/syncs" if accept == "application/json" else "/conduit-ui/",
                           user=user, accept=accept).text
            assert all((name in body) is told for name in files) and ("lag_seconds" in body) is told, \
                f"{user} ({accept}): {body[:600]}"
            assert "do not load" in body, body[:600]
