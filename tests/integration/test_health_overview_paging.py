"""The overview with more syncs than one page holds (103 syncs, 100 a page by default), inside
Airflow's own app (``create_app("core")``, SimpleAuthManager) on runs written into the real
metadata DB and one real SQLite state store, as the scale test writes them.

What is checked: the summary counts ("1 failing") and the most-urgent-first order are over every
sync the user may read, whichever page is shown (a sync failing on page 2 is counted and listed
first on page 1); and a sync whose running run has runs queued behind it says since when *that*
run runs, not when the newest queued one was due."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from airflow_runs import forget_dag_runs, register_dags
from test_health_api import Api, generated_syncs
from test_health_api_scale import forget_dags

REPO = Path(__file__).resolve().parents[2]
FLAGSHIPS = ("crm_to_erp_customer_sync", "crm_to_tryton_customer_sync")  # runs forgotten: never loaded, stale
GENERATED = 101  # + the two flagships: 103 syncs, three more than the overview's default page
FAILING = "paging_sync_100"  # last by name: on page 2 of the overview by name
STALE = "paging_sync_099"  # its watermark three days old
QUEUED_BEHIND = "paging_sync_098"  # a run running since three hours, two manual runs queued behind it
NOW = datetime.now(UTC).replace(microsecond=0)
RUNNING_SINCE = NOW - timedelta(hours=3) + timedelta(seconds=5)
LOAD = {"inserted": 1, "updated": 2, "unchanged": 3, "deleted": 0, "stale_skipped": 0, "dry_run": False}


def generated(i: int) -> str:
    return f"paging_sync_{i:03d}"


@pytest.fixture(scope="module")
def paging(airflow_db, tmp_path_factory):
    from airflow.api_fastapi.app import create_app, purge_cached_app
    from fastapi.testclient import TestClient

    from conduit.ui import data

    tmp = tmp_path_factory.mktemp("paging")
    with generated_syncs(tmp, generate_specs) as names:
        try:
            register_dags()
            for flagship in FLAGSHIPS:
                forget_dag_runs(flagship)
            specs = data.load_sync_specs()
            assert sorted(specs) == sorted([*FLAGSHIPS, *names])
            insert_runs(names)
            write_watermarks(specs, names)
            data.clear_state_cache()
            purge_cached_app()
            with TestClient(create_app("core")) as client:
                yield Api(client), sorted(specs)
        finally:
            purge_cached_app()
            data.clear_state_cache()
            forget_dags(names)


def generate_specs(folder: Path) -> list[str]:
    """Copies of the flagship SQL sync, each with its own table."""
    sql = yaml.safe_load((folder / "crm_to_erp_customer_sync.yaml").read_text())
    sql["target"].pop("checks")  # PostgreSQL's check operators; the store here is SQLite
    names = []
    for i in range(GENERATED):
        spec = json.loads(json.dumps(sql))
        spec["name"], spec["target"]["table"] = generated(i), f"customers_{i:03d}"
        (folder / f"{spec['name']}.yaml").write_text(yaml.safe_dump(spec))
        names.append(spec["name"])
    return names


def insert_runs(names: list[str]) -> None:
    """Per sync one successful run an hour ago (its load's summary in XCom), except: FAILING's
    failed in ``load``; QUEUED_BEHIND's also has a run running since RUNNING_SINCE and two manual
    runs queued behind it (newer, not started)."""
    from airflow.models.dag_version import DagVersion
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance, uuid7
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from airflow.utils.types import DagRunTriggeredByType
    from sqlalchemy import select

    with create_session() as session:
        versions = {dag_id: version for dag_id, version in session.execute(
            select(DagVersion.dag_id, DagVersion.id).where(DagVersion.dag_id.in_(names))
            .order_by(DagVersion.version_number))}

    def dag_run(name, run_id, after, state, run_type="scheduled"):
        started = state != "queued"
        return {"dag_id": name, "run_id": run_id, "run_type": run_type, "state": state, "logical_date": after,
                "run_after": after, "queued_at": after, "data_interval_start": after, "data_interval_end": after,
                "start_date": after + timedelta(seconds=5) if started else None,
                "end_date": after + timedelta(seconds=65) if state in ("success", "failed") else None,
                "triggered_by": DagRunTriggeredByType.TIMETABLE, "created_dag_version_id": versions[name],
                "clear_number": 0, "conf": {}}

    runs = [dag_run(name, "scheduled__done", NOW - timedelta(hours=4), "failed" if name == FAILING else "success")
            for name in names]
    runs.append(dag_run(QUEUED_BEHIND, "scheduled__running", RUNNING_SINCE - timedelta(seconds=5), "running"))
    runs += [dag_run(QUEUED_BEHIND, f"manual__queued_{h}", NOW - timedelta(hours=h), "queued", "manual") for h in (2, 1)]
    with create_session() as session:
        session.execute(DagRun.__table__.insert(), runs)
    with create_session() as session:
        pks = {dag_id: pk for pk, dag_id in session.execute(
            select(DagRun.id, DagRun.dag_id).where(DagRun.dag_id.in_(names), DagRun.run_id == "scheduled__done"))}
    tis, xcoms = [], []
    for name in names:
        failed = name == FAILING
        tis.append({"id": uuid7(), "dag_id": name, "run_id": "scheduled__done", "task_id": "load", "map_index": -1,
                    "state": "failed" if failed else "success", "try_number": 1, "max_tries": 0,
                    "pool": "default_pool", "pool_slots": 1, "queue": "default", "priority_weight": 1,
                    "operator": "PythonOperator", "dag_version_id": versions[name]})
        if not failed:
            xcoms.append({"dag_run_id": pks[name], "dag_id": name, "run_id": "scheduled__done", "task_id": "load",
                          "map_index": -1, "key": "return_value", "value": XComModel.serialize_value(LOAD),
                          "timestamp": NOW})
    with create_session() as session:
        session.execute(TaskInstance.__table__.insert(), tis)
        session.execute(XComModel.__table__.insert(), xcoms)


def write_watermarks(specs: dict, names: list[str]) -> None:
    """Fresh data for every generated sync (STALE's three days old); the flagships have none."""
    from conduit.hooks.erp import ErpHook
    from conduit.targets.base import Watermark

    store = ErpHook().get_state_store()
    store.ensure_state(specs[FLAGSHIPS[0]])
    for name in names:
        at = NOW - (timedelta(days=3) if name == STALE else timedelta(minutes=1))
        store.commit_load(specs[name], run_id="scheduled__done", watermark=Watermark(int(at.timestamp() * 1000), 1))


EXPECTED_VERDICTS = {"failing": 1, "waiting for approval": 0, "stale": 3, "healthy": 99}


def test_a_sync_failing_on_page_two_is_counted_and_listed_first_on_page_one(paging):
    """The header counts every sync; the verdicts must too, and the order must be over all of
    them: an operator must never read "0 failing" while a sync fails."""
    api, names = paging
    first = api.get("/conduit-ui/api/syncs").json()
    assert (first["total"], len(first["syncs"])) == (103, 100)
    assert first["verdicts"] == EXPECTED_VERDICTS, first["verdicts"]
    assert first["syncs"][0]["name"] == FAILING and first["syncs"][0]["verdict"] == "failing"
    assert [r["name"] for r in first["syncs"][1:4]] == sorted([*FLAGSHIPS, STALE])  # then the stale ones

    second = api.get("/conduit-ui/api/syncs?offset=100").json()
    assert second["verdicts"] == EXPECTED_VERDICTS
    listed = [r["name"] for r in first["syncs"] + second["syncs"]]
    assert sorted(listed) == names, "paging skipped or repeated a sync"
    order = [r["verdict"] for r in first["syncs"] + second["syncs"]]
    assert order == ["failing"] + ["stale"] * 3 + ["healthy"] * 99

    page = api.get("/conduit-ui/").text
    assert '<span class="badge verdict-failing">1 failing</span>' in page
    assert f'data-sync="{FAILING}"' in page


def test_in_progress_since_is_the_running_runs_start_with_runs_queued_behind_it(paging):
    """A sync runs one run at a time; runs triggered meanwhile queue behind the running one,
    newer and not started. "In progress since" names when the running run started."""
    api, _ = paging
    since = RUNNING_SINCE.strftime("%Y-%m-%d %H:%M UTC")
    detail = api.get(f"/conduit-ui/api/syncs/{QUEUED_BEHIND}").json()
    assert detail["verdict"] == "healthy"
    assert detail["reason"].endswith(f"; a run is in progress since {since}"), detail["reason"]
    row = {r["name"]: r for r in api.get("/conduit-ui/api/syncs?limit=500").json()["syncs"]}[QUEUED_BEHIND]
    assert row["reason"].endswith(f"; a run is in progress since {since}"), row["reason"]
