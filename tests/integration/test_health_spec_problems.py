"""Each sync's health stands on its own (``/conduit-ui`` inside Airflow's own app,
``create_app("core")``, SimpleAuthManager, runs in the real metadata DB, a real SQLite state
store): a spec that does not load makes that sync failing, not the whole view a 500, and an
expectation suite that does not load (missing, not YAML, not a suite) makes its sync failing while
the sync's page still renders. What is wrong is named by the file relative to its folder and the
field, to those Airflow would show it to (import errors for a spec, the quality gate's task log
for a suite); no path of the server reaches a browser, the log has the whole message."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager
from test_health_page_hardening import (
    DAG_ID,
    LOAD,
    REPO,
    health_app,
    insert_run,
    seed_state,
)

TRYTON = "crm_to_tryton_customer_sync"  # a registered DAG whose spec the tests break
NEW = "brand_new_sync"  # a spec never parsed into a DAG


class ViewerMayNotReadTaskLogs(SimpleAuthManager):
    """SimpleAuthManager with one per-DAG rule, as FAB's or Keycloak's DAG permissions allow: the
    viewer may read the flagship sync, its runs and XComs, but not its task logs."""

    def is_authorized_dag(self, *, method, user, access_entity=None, details=None):
        if user.username == "viewer" and access_entity == DagAccessEntity.TASK_LOGS:
            return False
        return super().is_authorized_dag(method=method, user=user, access_entity=access_entity,
                                         details=details)


@pytest.fixture
def env(airflow_db, tmp_path, monkeypatch):
    """Airflow's API app with an admin, a viewer and a user without a role, as in
    ``test_health_page_hardening``."""
    with health_app(tmp_path, monkeypatch) as served:
        yield served


@pytest.fixture
def logs_hidden(airflow_db, tmp_path, monkeypatch):
    with health_app(tmp_path, monkeypatch, auth_manager=f"{__name__}.{ViewerMayNotReadTaskLogs.__name__}") as served:
        yield served


def healthy_flagship() -> str:
    """The flagship sync, healthy: a watermark five minutes old, one successful gated run."""
    now = datetime.now(UTC).replace(microsecond=0)
    seed_state(now - timedelta(minutes=5))
    gate = {"checked": 10, "rejected": 0, "passed": 10, "failed_expectations": []}
    insert_run("scheduled__ok_4711", now - timedelta(hours=1), "success", {}, {"load": LOAD, "quality_gate": gate})
    return "scheduled__ok_4711"


def no_server_path(body: str, tmp) -> None:
    assert str(tmp) not in body and str(REPO) not in body, body[:800]


# --- a broken spec: that sync is failing, the others render ----------------------------------------


def break_specs(syncs) -> None:
    """The Tryton flagship's spec (a registered DAG) gets a cursor lag that is no number; a new spec
    beside it has no target at all."""
    tryton = syncs / f"{TRYTON}.yaml"
    tryton.write_text(tryton.read_text().replace("lag_seconds: 60", "lag_seconds: soon"))
    new = (syncs / f"{DAG_ID}.yaml").read_text().replace(f"name: {DAG_ID}", f"name: {NEW}")
    (syncs / f"{NEW}.yaml").write_text(new.replace("\ntarget:", "\nnot_a_target:"))


def test_a_broken_spec_leaves_the_other_syncs_health_alone(env, caplog):
    api, tmp = env
    run_id = healthy_flagship()
    syncs = tmp / "include" / "syncs"
    break_specs(syncs)
    caplog.set_level(logging.ERROR, logger="conduit.ui.app")

    overview = api.get("/conduit-ui/api/syncs")  # was: 500 for every sync
    rows = {r["name"]: r for r in overview.json()["syncs"]}
    assert rows[DAG_ID]["verdict"] == "healthy", rows[DAG_ID]["reason"]
    broken = rows[TRYTON]
    assert broken["verdict"] == "failing" and broken["spec_problem"] is True
    assert f"{TRYTON}.yaml: source.cursor.lag_seconds" in broken["reason"], broken["reason"]
    assert NEW not in broken["reason"]  # its own problem, not the other file's
    assert overview.json()["verdicts"]["failing"] == 1
    problems = overview.json()["spec_problems"]
    assert problems.startswith("2 sync specs do not load:"), problems
    assert f"{TRYTON}.yaml: source.cursor.lag_seconds" in problems and f"{NEW}.yaml: target" in problems, problems
    no_server_path(overview.text, tmp)

    page = api.get("/conduit-ui/", accept="text/html").text
    assert f'data-sync="{DAG_ID}"' in page and f'data-sync="{TRYTON}"' in page
    assert 'data-testid="spec-problems"' in page and f"{NEW}.yaml" in page
    no_server_path(page, tmp)

    detail = api.get(f"/conduit-ui/api/syncs/{DAG_ID}").json()
    assert (detail["verdict"], detail["runs"][0]["run_id"]) == ("healthy", run_id)
    assert run_id in api.get(f"/conduit-ui/syncs/{DAG_ID}", accept="text/html").text

    for accept in ("application/json", "text/html"):  # the broken sync's own page: its problem only
        for path in (f"/conduit-ui/api/syncs/{TRYTON}", f"/conduit-ui/syncs/{TRYTON}"):
            body = api.get(path, expect=500, accept=accept).text
            assert f"{TRYTON}.yaml: source.cursor.lag_seconds" in body and NEW not in body, body[:600]
            no_server_path(body, tmp)
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "conduit.ui.app")
    assert str(syncs / f"{TRYTON}.yaml") in logged and str(syncs / f"{NEW}.yaml") in logged, logged[:600]


def test_a_broken_spec_is_described_only_to_who_may_see_import_errors(env):
    """The viewer may see import errors (SimpleAuthManager's viewer role), ``nobody`` may not: the
    overview still answers both, and tells ``nobody`` only that specs do not load."""
    api, tmp = env
    healthy_flagship()
    break_specs(tmp / "include" / "syncs")
    viewer = api.get("/conduit-ui/api/syncs", user="viewer").json()
    assert {r["name"] for r in viewer["syncs"]} >= {DAG_ID, TRYTON}
    assert "lag_seconds" in {r["name"]: r for r in viewer["syncs"]}[TRYTON]["reason"]
    nobody = api.get("/conduit-ui/api/syncs", user="nobody")
    assert nobody.json()["syncs"] == [] and "do not load" in nobody.json()["spec_problems"]
    assert "lag_seconds" not in nobody.text and f"{NEW}.yaml" not in nobody.text, nobody.text[:600]


# --- a broken expectation suite: the sync is failing, its page renders ---------------------------------


SUITE = "erp_customers.yaml"
BROKEN_SUITES = {
    "missing": (None, f"{SUITE}: (file): no such file"),
    "not-yaml": ("name: erp_customers\nexpectations: [\n  - {type: oops\n", f"{SUITE}: (file): line "),
    "not-a-suite": ("name: erp_customers\nexpectations:\n  - type: expect_the_moon\n"
                    "    kwargs: {column: customer_number}\n", f"{SUITE}: expectations"),
}


def break_suite(tmp, text: str | None) -> None:
    suite = tmp / "include" / "expectations" / SUITE
    suite.unlink()
    if text is not None:
        suite.write_text(text)


@pytest.mark.parametrize("kind", BROKEN_SUITES)
def test_a_broken_suite_is_a_problem_of_its_sync_and_the_page_renders(env, caplog, kind):
    api, tmp = env
    text, named = BROKEN_SUITES[kind]
    run_id = healthy_flagship()
    break_suite(tmp, text)
    caplog.set_level(logging.ERROR, logger="conduit.ui.app")

    detail = api.get(f"/conduit-ui/api/syncs/{DAG_ID}")  # was: a bare 500 (Internal Server Error)
    sync = detail.json()
    assert sync["verdict"] == "failing", sync["reason"]
    assert named in sync["suite_problem"] and named in sync["reason"], sync["suite_problem"]
    assert sync["reason"].startswith("every run fails at the quality gate: its expectation suite does not load")
    assert sync["runs"][0]["run_id"] == run_id and sync["quarantine"]["open"] == 0
    no_server_path(detail.text, tmp)

    page = api.get(f"/conduit-ui/syncs/{DAG_ID}", accept="text/html").text
    assert 'data-testid="suite-problem"' in page and run_id in page and 'data-testid="quarantine"' in page
    no_server_path(page, tmp)

    row = {r["name"]: r for r in api.get("/conduit-ui/api/syncs").json()["syncs"]}[DAG_ID]
    assert row["verdict"] == "failing" and named in row["reason"], row["reason"]
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "conduit.ui.app")
    assert str(tmp / "include" / "expectations" / SUITE) in logged, logged[:600]


def test_a_broken_suite_is_described_only_to_who_may_read_the_task_logs(logs_hidden):
    """Airflow shows why the gate failed in its task log: a user who may read the sync but not its
    task logs learns that the suite does not load, not which file or field."""
    api, tmp = logs_hidden
    run_id = healthy_flagship()
    break_suite(tmp, BROKEN_SUITES["not-a-suite"][0])
    told = api.get(f"/conduit-ui/api/syncs/{DAG_ID}").json()["suite_problem"]  # the admin may read them
    assert BROKEN_SUITES["not-a-suite"][1] in told and "expect_the_moon" in told, told
    told = told.partition(": ")[2]  # the file, the field, the problem

    viewer = api.get(f"/conduit-ui/api/syncs/{DAG_ID}", user="viewer")
    assert viewer.json()["verdict"] == "failing" and "does not load" in viewer.json()["suite_problem"]
    page = api.get(f"/conduit-ui/syncs/{DAG_ID}", user="viewer", accept="text/html").text
    overview = api.get("/conduit-ui/api/syncs", user="viewer").text
    for body in (viewer.text, page, overview):
        assert told not in body and "expect_the_moon" not in body, body[:600]
    assert run_id in page
