"""The sync health API with hundreds of syncs and thousands of runs: 300 sync specs (half of them
Tryton syncs whose Tryton connection is not defined: only their state store is read), registered
as the dag-processor does it, and 5,000 DagRuns with their task instances and the tasks' returned
summaries written straight into Airflow's metadata DB. Every sync's state store is one SQLite file.

What is checked: the answers (every sync, its newest run, the counts it reported, its watermark and
quarantine) and how many SQL statements a request sends to the metadata DB: the same for 5 syncs as
for 300, and for a sync with 16 runs as for one with 216 (counted, not timed)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from airflow_runs import register_dags
from test_health_api import Api, generated_syncs

REPO = Path(__file__).resolve().parents[2]
GENERATED = 298  # + the two flagship specs: 300 syncs
RUNS_PER_SYNC = 16
BIG, BIG_RUNS = "scale_sync_000", 264  # 296 * 16 + 264 + 0 = 5,000 runs of the generated syncs
NEVER = "scale_sync_001"  # no run yet
FLAGSHIPS = ("crm_to_erp_customer_sync", "crm_to_tryton_customer_sync")  # other tests' runs: not counted here
TASKS = ("extract", "transform", "quality_gate", "data_docs", "plan", "load", "reconcile")
NOW = datetime.now(UTC).replace(microsecond=0)


def failing(name: str) -> bool:
    """Syncs whose newest run failed in ``load``."""
    return name.endswith("7")


def quarantined(index: int) -> int:
    return index % 4 + 1 if index % 5 == 0 else 0


@pytest.fixture(scope="module")
def scale(airflow_db, tmp_path_factory):
    from airflow.api_fastapi.app import create_app, purge_cached_app
    from fastapi.testclient import TestClient

    from conduit.ui import data

    tmp = tmp_path_factory.mktemp("scale")
    with generated_syncs(tmp, generate_specs) as names:
        try:
            register_dags()  # 300 sync DAGs serialized, as the dag-processor writes them
            specs = data.load_sync_specs()
            assert sorted(specs) == names
            expected = insert_runs(names)
            write_state(specs, expected)
            data.clear_state_cache()
            purge_cached_app()
            with TestClient(create_app("core")) as client:
                yield Api(client), expected
        finally:
            purge_cached_app()
            data.clear_state_cache()
            forget_dags([n for n in names if n.startswith("scale_sync_")])


def generate_specs(folder: Path) -> list[str]:
    """298 copies of the two flagship specs (alternately a SQL and a Tryton target), beside them."""
    sql = yaml.safe_load((folder / "crm_to_erp_customer_sync.yaml").read_text())
    tryton = yaml.safe_load((folder / "crm_to_tryton_customer_sync.yaml").read_text())
    sql["target"].pop("checks")  # PostgreSQL's check operators; the store here is SQLite
    for i in range(GENERATED):
        spec = json.loads(json.dumps(tryton if i % 2 else sql))
        spec["name"] = f"scale_sync_{i:03d}"
        if spec["target"]["type"] == "sql":
            spec["target"]["table"] = f"customers_{i:03d}"
        (folder / f"{spec['name']}.yaml").write_text(yaml.safe_dump(spec))
    return sorted(p.stem for p in folder.glob("*.yaml"))


def insert_runs(names: list[str]) -> dict[str, dict]:
    """The runs, their task instances and the tasks' summaries, in bulk; what each sync's newest
    run and its counts are."""
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
    assert set(versions) == set(names)
    runs, expected = [], {}
    for index, name in enumerate(names):
        if name in FLAGSHIPS:
            continue
        count = 0 if name == NEVER else BIG_RUNS if name == BIG else RUNS_PER_SYNC
        for j in range(count):
            after = NOW - timedelta(days=count - j, minutes=index)
            newest = j == count - 1
            state = "failed" if newest and failing(name) else "success"
            runs.append({"dag_id": name, "run_id": f"scheduled__{after.isoformat()}", "run_type": "scheduled",
                         "state": state, "logical_date": after, "run_after": after, "queued_at": after,
                         "data_interval_start": after, "data_interval_end": after,
                         "start_date": after + timedelta(seconds=5), "end_date": after + timedelta(seconds=65 + j),
                         "triggered_by": DagRunTriggeredByType.TIMETABLE, "created_dag_version_id": versions[name], "clear_number": 0,
                         "conf": {}})
        expected[name] = {"index": index, "runs": [r["run_id"] for r in runs[-count:]][::-1] if count else []}
    with create_session() as session:
        session.execute(DagRun.__table__.insert(), runs)
    with create_session() as session:
        pks = {(d, r): pk for pk, d, r in session.execute(
            select(DagRun.id, DagRun.dag_id, DagRun.run_id).where(DagRun.dag_id.in_(names)))}
    tis, xcoms = [], []
    for run in runs:
        n = (len(tis) // len(TASKS)) % 500 + 100  # rows this run read
        summaries = {"extract": [{"kind": "window", "rows": n}], "transform": {"mapped": n},
                     "quality_gate": {"checked": n, "rejected": n % 3, "passed": True, "defects": {}},
                     "plan": {"inserted": n % 7, "updated": n - n % 7, "unchanged": 0, "deleted": 1},
                     "load": {"inserted": n % 7, "updated": n - n % 7 - n % 3, "unchanged": 0, "deleted": 1,
                              "stale_skipped": 0, "dry_run": False}}
        failed = run["state"] == "failed"
        for task_id in TASKS:
            state = ("failed" if task_id == "load" else "upstream_failed" if task_id == "reconcile"
                     else "success") if failed else "success"
            tis.append({"id": uuid7(), "dag_id": run["dag_id"], "run_id": run["run_id"], "task_id": task_id,
                        "map_index": 0 if task_id == "extract" else -1, "state": state, "try_number": 1,
                        "max_tries": 3, "pool": "default_pool", "pool_slots": 1, "queue": "default",
                        "priority_weight": 1, "operator": "PythonOperator", "start_date": run["start_date"],
                        "end_date": run["end_date"], "duration": 1.0, "dag_version_id": run["created_dag_version_id"]})
            if task_id in summaries and state == "success":
                xcoms.append({"dag_run_id": pks[run["dag_id"], run["run_id"]], "dag_id": run["dag_id"],
                              "run_id": run["run_id"], "task_id": task_id,
                              "map_index": 0 if task_id == "extract" else -1,
                              "key": "plan" if task_id == "plan" else "return_value",
                              "value": XComModel.serialize_value(summaries[task_id]), "timestamp": run["end_date"]})
        if run["run_id"] == expected[run["dag_id"]]["runs"][0]:
            expected[run["dag_id"]].update(summaries=summaries, failed=failed, end=run["end_date"])
    with create_session() as session:
        session.execute(TaskInstance.__table__.insert(), tis)
        session.execute(XComModel.__table__.insert(), xcoms)
    assert len(runs) == 5000
    return expected


def write_state(specs: dict, expected: dict[str, dict]) -> None:
    """Each sync's watermark (the end of its newest run) and open quarantine in the one SQLite store."""
    from conduit.hooks.erp import ErpHook
    from conduit.targets.base import Watermark

    store = ErpHook().get_state_store()
    store.ensure_state(specs["crm_to_erp_customer_sync"])
    for name, spec in specs.items():
        facts = expected.get(name)
        if not facts or not facts["runs"]:
            continue
        facts["watermark_ms"] = int(facts["end"].timestamp() * 1000)
        store.commit_load(spec, run_id=facts["runs"][0], watermark=Watermark(facts["watermark_ms"], 1))
        rows = [{"record_key": f"HS-C-{k}", "crm_id": str(k), "expectation": "expect_column_values_to_not_be_null",
                 "column_name": "full_name", "reason": "full_name is empty", "raw_record": {"firstname": ""}}
                for k in range(quarantined(facts["index"]))]
        store.quarantine(spec, rows, run_id=facts["runs"][0])


def forget_dags(dag_ids: list[str]) -> None:
    """What ``airflow dags delete`` does (``delete_dag``), for all of them at once: the session's
    other tests share this metadata DB."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.db import get_sqla_model_classes
    from airflow.utils.session import create_session
    from sqlalchemy import delete

    models = [TaskInstance, DagRun, *(m for m in get_sqla_model_classes() if m not in (TaskInstance, DagRun))]
    with create_session() as session:
        for model in models:
            if hasattr(model, "dag_id") and model.__name__ != "Log":
                session.execute(delete(model).where(model.dag_id.in_(dag_ids)))


class Statements:
    """The SQL statements sent to Airflow's metadata DB while inside the block."""

    def __enter__(self):
        from airflow import settings
        from sqlalchemy import event

        self.sql: list[str] = []
        self._engine = settings.engine
        event.listen(self._engine, "before_cursor_execute", self._seen)
        return self

    def _seen(self, conn, cursor, statement, parameters, context, executemany):
        self.sql.append(statement)

    def __exit__(self, *exc):
        from sqlalchemy import event

        event.remove(self._engine, "before_cursor_execute", self._seen)

    def __len__(self) -> int:
        return len(self.sql)


def counted(api: Api, path: str) -> tuple[dict, Statements]:
    """The answer, and the statements it took with Airflow's DAG team name cache cold (as it is
    every ``[core] team_name_cache_ttl`` seconds)."""
    from airflow.models.dag import clear_team_name_cache

    api.token("admin")  # the login's own statements are not the page's
    clear_team_name_cache()
    with Statements() as statements:
        body = api.get(path).json()
    return body, statements


def test_the_overview_lists_300_syncs_with_a_bounded_number_of_statements(scale):
    api, expected = scale
    overview, statements = counted(api, "/conduit-ui/api/syncs?limit=500")
    assert overview["total"] == len(overview["syncs"]) == 300
    assert {r["name"] for r in overview["syncs"]} == {*expected, *FLAGSHIPS}
    for row in overview["syncs"]:
        if row["name"] in FLAGSHIPS:
            continue
        facts = expected[row["name"]]
        if not facts["runs"]:
            assert (row["last_run"], row["counts"], row["verdict"]) == (None, None, "stale")
            continue
        assert row["last_run"]["run_id"] == facts["runs"][0]
        assert [r["run_id"] for r in row["recent"]] == facts["runs"][:3]
        summaries = facts["summaries"]
        if facts["failed"]:
            assert row["last_run"]["state"] == "failed" and row["verdict"] == "failing"
            assert row["last_finished_run"]["run_id"] == facts["runs"][0]
        else:
            assert row["last_run"]["state"] == "success"
            assert row["counts"] == {
                "extracted": summaries["transform"]["mapped"], "rejected": summaries["quality_gate"]["rejected"],
                "defects": 0, **{k: summaries["load"][k] for k in ("inserted", "updated", "unchanged", "deleted")}}
        # the state store of every sync, the Tryton ones without a Tryton connection
        assert row["quarantine_open"] == quarantined(facts["index"]), row
        assert row["freshness"]["watermark"].startswith(facts["end"].isoformat()[:19])
        assert "connection" not in row["reason"]
    assert sum(r["target_type"] == "tryton" for r in overview["syncs"]) == 150
    assert sum(len(f["runs"]) for f in expected.values()) == 5000
    # the flagships' verdicts are whatever earlier tests of the session left: counted apart
    flagships_failing = sum(r["verdict"] == "failing" for r in overview["syncs"] if r["name"] in FLAGSHIPS)
    assert overview["verdicts"]["failing"] - flagships_failing == \
        sum(f.get("failed", False) for f in expected.values()) > 0

    few, fewer = counted(api, "/conduit-ui/api/syncs?limit=5")
    assert (few["total"], len(few["syncs"])) == (300, 5)
    # as many statements for 5 syncs as for 300 (and for 300 with their state stores already read)
    again, cached = counted(api, "/conduit-ui/api/syncs?limit=500")
    assert [(r["name"], r["last_run"], r["quarantine_open"]) for r in again["syncs"]] == \
        [(r["name"], r["last_run"], r["quarantine_open"]) for r in overview["syncs"]]
    assert len(statements) == len(fewer) == len(cached) <= 10, \
        f"{len(statements)}, {len(fewer)}, {len(cached)} statements:\n" + "\n".join(statements.sql)


def test_one_sync_with_264_runs_costs_what_one_with_16_costs(scale):
    api, expected = scale
    big, statements = counted(api, f"/conduit-ui/api/syncs/{BIG}")
    assert [r["run_id"] for r in big["runs"]] == expected[BIG]["runs"][:30]
    assert len(big["charts"]["rows"]["run_id"]) == 30
    longest, most = counted(api, f"/conduit-ui/api/syncs/{BIG}?limit=200")
    assert [r["run_id"] for r in longest["runs"]] == expected[BIG]["runs"][:200]
    small_name = "scale_sync_002"
    small, fewer = counted(api, f"/conduit-ui/api/syncs/{small_name}")
    assert [r["run_id"] for r in small["runs"]] == expected[small_name]["runs"] and len(small["runs"]) == 16
    assert len(statements) == len(most) == len(fewer) <= 10, \
        f"{len(statements)}, {len(most)}, {len(fewer)} statements:\n" + "\n".join(statements.sql)


def test_a_tryton_syncs_page_shows_its_state_without_a_tryton_connection(scale):
    api, expected = scale
    name = "scale_sync_003"  # a Tryton target, 2 entries in quarantine
    facts = expected[name]
    assert quarantined(facts["index"]) == 2
    detail = api.get(f"/conduit-ui/api/syncs/{name}").json()
    assert detail["target"]["type"] == "tryton" and "connection" not in detail["reason"], detail["reason"]
    assert detail["freshness"]["watermark"].startswith(facts["end"].isoformat()[:19])
    assert detail["quarantine"]["open"] == 2
    assert {(e["record_key"], e["reason"], e["run_id"]) for e in detail["quarantine"]["entries"]} == \
        {(f"HS-C-{k}", "full_name is empty", facts["runs"][0]) for k in range(2)}
