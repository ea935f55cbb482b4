"""The sync health API and pages inside Airflow's own app (``create_app("core")``: the plugin
mounted by the plugins manager, SimpleAuthManager, JWTs from ``/auth/token``), after real runs of
the flagship sync (``dag.test()``, the stand-in CRM over HTTP, the ERP on PostgreSQL).

What the API says is compared with what the runs reported (their XCom summaries) and with the ERP
and its state store; the routes refuse anonymous callers (401) and users without DAG access
(403, no data), and no response carries a secret."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from airflow_runs import forget_dag_runs, register_dags
from sync_helpers import run_ok, xcom

pytestmark = [pytest.mark.postgres]

DAG_ID = "crm_to_erp_customer_sync"
REPLAY_DAG_ID = "conduit_quarantine_replay"
REPO = Path(__file__).resolve().parents[2]
PASSWORDS = {"admin": "admin-pw", "viewer": "viewer-pw", "nobody": "nobody-pw"}
ERP_PASSWORD = "erp-pw-sentinel-4711"  # the server trusts local connections: a password it ignores
JWT_SECRET = "jwt-secret-sentinel-0815-" + "x" * 48  # 64 bytes: what HS512 wants


@contextlib.contextmanager
def generated_syncs(tmp: Path, generate: Callable[[Path], list[str]]) -> Iterator[list[str]]:
    """The health page's world for many syncs: an include folder holding the repo's specs and those
    ``generate(its syncs folder)`` writes (their names are yielded), a SQLite file as every sync's
    ERP and state store, and SimpleAuthManager's users; undone on exit."""
    include = tmp / "include"
    shutil.copytree(REPO / "include", include)
    names = generate(include / "syncs")
    sqlite = json.dumps({"conn_type": "sqlite", "host": str(tmp / "state.db")})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CONDUIT_INCLUDE_DIR", str(include))
        mp.setenv("CONDUIT_STAGING_DIR", str(tmp / "staging"))
        mp.setenv("CONDUIT_DATA_DOCS_DIR", str(tmp / "data_docs"))
        mp.setenv("AIRFLOW_CONN_ERP_DEFAULT", sqlite)
        mp.setenv("AIRFLOW_CONN_CONDUIT_STATE_DEFAULT", sqlite)
        mp.delenv("AIRFLOW_CONN_TRYTON_DEFAULT", raising=False)
        use_simple_auth(mp.setenv, tmp)
        yield names


def use_simple_auth(setenv, tmp_path: Path) -> None:
    """Airflow's SimpleAuthManager as the tests log in: an admin, a viewer, a user with no role
    (``PASSWORDS``), and the JWT secret their tokens are signed with."""
    passwords = tmp_path / "passwords.json"
    passwords.write_text(json.dumps(PASSWORDS))
    setenv("AIRFLOW__CORE__AUTH_MANAGER", "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager")
    setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "admin:admin,viewer:viewer,nobody:")
    setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", str(passwords))
    setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "False")
    setenv("AIRFLOW__API_AUTH__JWT_SECRET", JWT_SECRET)


@pytest.fixture
def airflow_api(airflow_db, tmp_path, monkeypatch):
    """Airflow's API server app in process, with three users: an admin, a viewer and one without
    any role (authenticated, but no DAG access)."""
    from airflow.api_fastapi.app import create_app, purge_cached_app
    from fastapi.testclient import TestClient

    use_simple_auth(monkeypatch.setenv, tmp_path)
    purge_cached_app()
    with TestClient(create_app("core")) as client:
        yield Api(client)
    purge_cached_app()


class Api:
    def __init__(self, client):
        self.client = client
        self.tokens: dict[str, str] = {}
        self.bodies: list[str] = []  # every response body, to look for secrets

    def token(self, user: str) -> str:
        if user not in self.tokens:
            resp = self.client.post("/auth/token", json={"username": user, "password": PASSWORDS[user]})
            assert resp.status_code == 201, resp.text
            self.tokens[user] = resp.json()["access_token"]
        return self.tokens[user]

    def get(self, path: str, user: str | None = "admin", expect: int = 200, **headers):
        if user:
            headers["Authorization"] = f"Bearer {self.token(user)}"
        resp = self.client.get(path, headers=headers)
        assert resp.status_code == expect, f"GET {path} as {user}: {resp.status_code} {resp.text[:500]}"
        if "/static/" not in path:  # the vendored libraries are no answer of ours
            self.bodies.append(resp.text)
        return resp


def open_quarantine(env) -> list[dict]:
    return env.target().open_quarantine(env.spec())


def test_the_api_reports_what_the_runs_and_the_erp_hold(sync_env, airflow_api, monkeypatch):
    from conduit.ui.data import clear_state_cache

    dsn = re.sub(r"^postgresql://postgres@", f"postgresql://postgres:{ERP_PASSWORD}@", sync_env_dsn())
    monkeypatch.setenv("AIRFLOW_CONN_ERP_DEFAULT", dsn)
    clear_state_cache()
    register_dags()  # as the dag-processor would: every sync and the replay DAG are in the metadata DB
    for dag_id in (DAG_ID, REPLAY_DAG_ID):  # the page shows both histories: only this test's runs
        forget_dag_runs(dag_id)
    api, crm, spec = airflow_api, sync_env.crm, sync_env.spec()

    # the first night finds 3 contacts without a name (rejected: quarantined, 0.5 % of 600) ...
    ids = [str(i) for i in crm_ids(sync_env)[:7]]
    nameless, junk = ids[:3], ids[3:]
    before_window = crm.admin.clock_ms() - 15 * 60_000  # read by the first run, not by the second's overlap
    for crm_id in nameless:
        crm.admin.modify(crm_id, {"firstname": "", "lastname": ""}, lastmodifieddate_ms=before_window)
    first = run_ok(sync_env)
    # ... the second 4 contacts whose email is junk (loaded without it: defects)
    changed_ms = crm.admin.clock_ms() - 120_000  # inside the next incremental run's window
    for crm_id in junk:
        crm.admin.modify(crm_id, {"email": f"junk.{crm_id}@@example"}, lastmodifieddate_ms=changed_ms)
    second = run_ok(sync_env)
    runs = {first.run_id: first, second.run_id: second}
    load1, gate1 = xcom(first, "load"), xcom(first, "quality_gate")
    load2, gate2 = xcom(second, "load"), xcom(second, "quality_gate")
    assert (load1["inserted"], gate1["rejected"]) == (597, 3)
    assert (load2["updated"], gate2["rejected"], gate2["defects"]["email(email)"]["count"]) == (4, 0, 4)

    # --- the overview: the last run's counts, the backlog, the verdict --------------------------
    overview = api.get("/conduit-ui/api/syncs").json()
    rows = {r["name"]: r for r in overview["syncs"]}
    assert set(rows) == {DAG_ID, "crm_to_tryton_customer_sync"}
    row = rows[DAG_ID]
    assert row["last_run"]["run_id"] == second.run_id and row["last_run"]["state"] == "success"
    assert row["counts"] == {
        "extracted": xcom(second, "transform")["mapped"], "inserted": load2["inserted"], "updated": load2["updated"],
        "unchanged": load2["unchanged"], "deleted": load2["deleted"], "rejected": gate2["rejected"],
        "defects": sum(d["count"] for d in gate2["defects"].values())}
    assert row["quarantine_open"] == len(open_quarantine(sync_env)) == 3
    watermark = sync_env.target().read_watermark(spec)
    assert row["freshness"]["stale"] is False and row["freshness"]["watermark"].startswith(
        iso_ms(watermark.ts_ms)[:19])
    assert row["verdict"] == "healthy" and row["reason"].startswith(f"last run {second.run_id} succeeded at ")
    never = rows["crm_to_tryton_customer_sync"]
    assert (never["verdict"], never["last_run"], never["counts"]) == ("stale", None, None)
    assert "nothing loaded yet" in never["reason"]

    # --- one sync: both runs, the charts, the gate, the quarantine, the plan, lineage ----------
    detail = api.get(f"/conduit-ui/api/syncs/{DAG_ID}").json()
    assert [r["run_id"] for r in detail["runs"]] == [second.run_id, first.run_id]
    for shown in detail["runs"]:
        summaries = {t: xcom(runs[shown["run_id"]], t) for t in ("load", "quality_gate", "transform")}
        assert {k: shown["counts"][k] for k in ("inserted", "updated", "unchanged", "deleted")} == \
            {k: summaries["load"][k] for k in ("inserted", "updated", "unchanged", "deleted")}
        assert shown["counts"]["rejected"] == summaries["quality_gate"]["rejected"]
        assert shown["counts"]["extracted"] == summaries["transform"]["mapped"]
        assert shown["url"].endswith(f"/dags/{DAG_ID}/runs/{shown['run_id'].replace(':', '%3A').replace('+', '%2B')}")
    chart = detail["charts"]["rows"]
    assert chart["run_id"] == [first.run_id, second.run_id]
    assert chart["inserted"] == [load1["inserted"], load2["inserted"]] == [597, 0]
    assert chart["updated"] == [0, 4] and len(chart["duration_s"]) == 2 and all(d > 0 for d in chart["duration_s"])
    rates = detail["charts"]["pass_rate"]
    assert rates["run_id"] == [first.run_id, second.run_id]
    assert rates["expect_column_values_to_not_be_null(full_name)"] == [pytest.approx(1 - 3 / gate1["checked"]), 1.0]
    assert rates["email(email)"][1] == pytest.approx(1 - 4 / gate2["checked"])

    gate = detail["gate"]  # the latest run's
    assert (gate["run_id"], gate["checked"], gate["rejected"]) == (second.run_id, gate2["checked"], 0)
    results = {e["name"]: e for e in gate["expectations"]}
    email = results["email(email)"]
    assert (email["defect"], email["failed"], email["evaluated"]) == (True, 4, gate2["checked"])
    assert {s["value"] for s in email["samples"]} == {f"junk.{i}@@example" for i in junk}
    assert results["expect_column_values_to_not_be_null(full_name)"]["failed"] == 0
    assert gate["data_docs"] and gate["data_docs"].startswith("/conduit-ui/data-docs/")
    first_gate = {e["name"]: e for e in api.get(f"/conduit-ui/api/syncs/{DAG_ID}?run_id={quote(first.run_id)}").json()
                  ["gate"]["expectations"]}
    null_name = first_gate["expect_column_values_to_not_be_null(full_name)"]
    assert (null_name["success"], null_name["failed"], null_name["evaluated"]) == (False, 3, gate1["checked"])
    assert {s["record"] for s in null_name["samples"]} == {f"HS-C-{i}" for i in nameless}
    assert all(s["value"] == {"firstname": "", "lastname": ""} for s in null_name["samples"])

    stored = {e["id"]: e for e in open_quarantine(sync_env)}
    entries = detail["quarantine"]["entries"]
    assert detail["quarantine"]["open"] == 3 and {e["id"] for e in entries} == set(stored)
    for entry in entries:
        assert entry["reason"] == stored[entry["id"]]["reason"] and entry["crm_id"] in nameless
        assert entry["raw_value"] == {"firstname": "", "lastname": ""} and entry["age"]
    plan = xcom_key(second, "plan", "plan")
    assert [r["run_id"] for r in row["recent"]] == [second.run_id, first.run_id]
    assert row["recent"][1]["counts"]["inserted"] == 597 and row["recent"][1]["counts"]["rejected"] == 3
    assert detail["plan"]["run_id"] == second.run_id
    assert {k: detail["plan"][k] for k in ("inserted", "updated", "deleted", "needs_approval")} == \
        {k: plan[k] for k in ("inserted", "updated", "deleted", "needs_approval")}
    lineage = {line["column"]: line for line in detail["lineage"]}
    assert lineage["full_name"]["sources"] == ["firstname", "lastname"]
    assert detail["replay"] == {"dag_id": REPLAY_DAG_ID, "exists": True, "paused": True, "can_trigger": True,
                                "conf": {"sync": DAG_ID, "dry_run": False}, "latest": None}

    # --- the pages, and the Data Docs with every asset served here ------------------------------
    from conduit.ui.app import PAGE_CSP

    page_resp = api.get(f"/conduit-ui/syncs/{DAG_ID}")
    page = page_resp.text
    assert page_resp.headers["content-security-policy"] == PAGE_CSP and f'data-sync="{DAG_ID}"' in page
    assert page.count('data-entry="') == 3 and second.run_id in page
    assert api.get("/conduit-ui/").text.count('data-sync="') == 2
    assert "is not a Conduit sync" in api.get(f"/conduit-ui/syncs/{REPLAY_DAG_ID}").text
    docs = api.get(gate["data_docs"])
    assert "default-src 'self'" in docs.headers["content-security-policy"]
    from conduit.ui.assets import external_urls

    assert external_urls(docs.text) == [] and "/conduit-ui/static/vendor/jquery-3.7.1/jquery.min.js" in docs.text
    validation = re.search(r"(validations/[^'\"]+\.html)", docs.text)  # in the index table's data
    assert validation, "the index links the run's validation page"
    shown = api.get(gate["data_docs"].rsplit("/", 1)[0] + "/" + validation.group(1)).text
    assert external_urls(shown) == [] and "full_name" in shown
    for asset in re.findall(r'(?:src|href)="(/conduit-ui/static/[^"]+)"', docs.text):
        api.get(asset, user=None)
    api.get(gate["data_docs"].rsplit("/", 1)[0] + "/..%2F..%2F..%2F..%2Fetc%2Fpasswd", expect=404)

    # --- who sees what ------------------------------------------------------------------------
    viewer = api.get(f"/conduit-ui/api/syncs/{DAG_ID}", user="viewer").json()
    assert viewer["quarantine"]["open"] == 3 and viewer["replay"]["can_trigger"] is False
    replay_api = f"/api/v2/dags/{REPLAY_DAG_ID}/dagRuns"
    refused = api.client.post(replay_api, json={"logical_date": None, "conf": {"sync": DAG_ID}},
                              headers={"Authorization": f"Bearer {api.token('viewer')}"})
    assert refused.status_code == 403  # Airflow's own check on what the button calls
    assert api.get("/conduit-ui/api/syncs", user="nobody").json()["syncs"] == []
    for path in (f"/conduit-ui/api/syncs/{DAG_ID}", f"/conduit-ui/syncs/{DAG_ID}", gate["data_docs"]):
        denied = api.get(path, user="nobody", expect=403)
        assert denied.json() == {"detail": "Forbidden"}
        assert api.get(path, user=None, expect=401).json() == {"detail": "Not authenticated"}
    assert "Log in" in api.get(f"/conduit-ui/syncs/{DAG_ID}", user=None, expect=401, accept="text/html").text

    # --- the replay empties the quarantine once the CRM is fixed ------------------------------
    for crm_id in nameless:
        crm.admin.modify(crm_id, {"firstname": "Fixed", "lastname": f"Name {crm_id}"})
    replay = replay_dag().test(run_conf={"sync": DAG_ID, "dry_run": False})
    assert replay.state == "success"
    after = api.get(f"/conduit-ui/api/syncs/{DAG_ID}").json()
    assert after["quarantine"] == {"open": 0, "entries": []} and open_quarantine(sync_env) == []
    assert after["replay"]["latest"]["run_id"] == replay.run_id and after["replay"]["latest"]["state"] == "success"
    assert {r["name"]: r for r in api.get("/conduit-ui/api/syncs").json()["syncs"]}[DAG_ID]["quarantine_open"] == 0

    # --- a state store that does not answer: failing, naming the connection, not its DSN ------
    monkeypatch.setenv("AIRFLOW_CONN_ERP_DEFAULT", dsn.replace(":5432/", ":1/"))
    clear_state_cache()
    down = {r["name"]: r for r in api.get("/conduit-ui/api/syncs").json()["syncs"]}[DAG_ID]
    assert down["verdict"] == "failing" and "connection erp_default: " in down["reason"]

    # --- no secret in anything the plugin answered --------------------------------------------
    for body in api.bodies:
        for secret in (ERP_PASSWORD, JWT_SECRET, crm.token, *api.tokens.values(), *PASSWORDS.values()):
            assert secret not in body
        assert "postgresql://" not in body and "password" not in body.lower()


def test_every_route_refuses_anonymous_and_invalid_callers(airflow_db, airflow_api):
    api = airflow_api
    for path in ("/conduit-ui/", "/conduit-ui/syncs", f"/conduit-ui/syncs/{DAG_ID}", "/conduit-ui/api/syncs",
                 f"/conduit-ui/api/syncs/{DAG_ID}", f"/conduit-ui/data-docs/{DAG_ID}/r/index.html"):
        assert api.get(path, user=None, expect=401).json() == {"detail": "Not authenticated"}
        resp = api.client.get(path, headers={"Authorization": "Bearer not-a-jwt"})
        assert resp.status_code == 403 and resp.json() == {"detail": "Invalid JWT token"}
        api.client.cookies.set("_token", "not-a-jwt")  # what the UI's browser session sends
        assert api.client.get(path).status_code == 403
        api.client.cookies.clear()
    # the vendored libraries are public (no data), and served as what they are
    js = api.get("/conduit-ui/static/vendor/uplot-1.6.32/uPlot.iife.min.js", user=None)
    assert "javascript" in js.headers["content-type"]


def test_airflow_lists_the_views_so_the_ui_shows_them(airflow_db, airflow_api):
    plugins = airflow_api.get("/api/v2/plugins").json()["plugins"]
    (conduit,) = [p for p in plugins if p["name"] == "conduit"]
    views = {v["name"]: v for v in conduit["external_views"]}
    assert views["Conduit"]["destination"] == "nav" and views["Conduit"]["href"] == "conduit-ui/"
    assert views["Sync health"]["href"] == "conduit-ui/syncs/{DAG_ID}" and views["Sync health"]["destination"] == "dag"
    assert {a["url_prefix"] for a in conduit["fastapi_apps"]} == {"/conduit", "/conduit-ui"}
    assert airflow_api.get("/api/v2/plugins/importErrors").json()["total_entries"] == 0


# --- helpers ------------------------------------------------------------------------------------


def sync_env_dsn() -> str:
    import os

    return os.environ["AIRFLOW_CONN_ERP_DEFAULT"]


def crm_ids(env) -> list[int]:
    from sync_helpers import crm_ids as live_ids

    return sorted(int(i) for i in live_ids(env.spec()))


def iso_ms(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def xcom_key(dag_run, task_id: str, key: str):
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.query(XComModel).filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id, task_id=task_id,
                                                 key=key).one()
        return XComModel.deserialize_value(row)


def replay_dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    return bag.dags[REPLAY_DAG_ID]
