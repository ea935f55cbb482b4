"""Secrets never leak (issue 17, item 4).

Runs of the real sync DAG (``dag.test()``) with a canary HubSpot token and a canary ERP password:
a first run that quarantines records, records defects and survives a 5xx burst; an incremental run;
a plan-only run (its plan.json stays); a quality gate that blocks; the CRM answering 401 and 500
with the request's headers echoed in the body (as some proxies and error pages do); and the ERP
unreachable. Then every artifact is scanned for either secret, as it is, URL-encoded, JSON-escaped
or base64-encoded at any alignment (``secret_scan``): task logs (stdout/stderr of ``dag.test()``
and any file under AIRFLOW_HOME), every table of the metadata DB (XCom, rendered template fields,
the audit log, ...), OpenLineage events (file transport), Data Docs, every ERP table (customers,
quarantine, defects, state), staged Parquet and plan files, and the exceptions the hooks raise and
the messages their connection tests return (what the UI's Test button and the REST API show), and
the Conduit UI plugin's answers about those runs (inside Airflow's app, as an admin), when it exists.
The ERP's and the order services' hooks are held to the same with a key of their own.
"""

from __future__ import annotations

import base64
import json
import os
import re
import threading
import traceback
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from airflow.sdk import TaskInstanceState
from airflow_runs import register_dags
from psycopg import sql
from reliability_env import DAG_ID, hubspot_connection
from secret_scan import Scanner, Secret
from sync_helpers import run_dag, seeded_mapped

from conduit.exceptions import CrmRequestError, CrmRetryableError, TargetError
from conduit.hooks.erp import ErpHook
from conduit.hooks.hubspot import HubSpotHook

pytestmark = pytest.mark.postgres

SCHEMA = f"conduit_leak_{os.getpid()}"  # one per session: the sync's asset names carry the schema


@dataclass(frozen=True)
class Canaries:
    token: Secret
    password: Secret

    def dsn(self, dbname: str = "test") -> str:
        # trust auth: the server accepts any password, but it still travels through the connection
        return f"postgresql://postgres:{quote(self.password.value, safe='')}@127.0.0.1:5432/{dbname}"


@pytest.fixture
def canaries() -> Canaries:
    token_core, password_core = uuid.uuid4().hex, uuid.uuid4().hex
    return Canaries(
        token=Secret("HubSpot token", f"pat-LEAKCANARY-{token_core}", token_core),
        # '+', '/' and '=' make the URL-encoded form differ from the raw one
        password=Secret("ERP password", f"LEAKPW{password_core}+/=", password_core),
    )


@pytest.fixture
def leak_schema(superuser) -> Iterator[str]:
    superuser(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE')
    superuser(f'CREATE SCHEMA "{SCHEMA}"')
    yield SCHEMA
    superuser(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE')


@pytest.fixture
def own_runs_forgotten(airflow_db) -> Iterator[None]:
    """The sync's runs made by the test are deleted after it (with their task instances and XComs):
    the session's later tests share the metadata DB and read the sync's run history, where the
    last of these runs failed on purpose. Runs of earlier tests stay."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        earlier = set(session.scalars(select(DagRun.id).where(DagRun.dag_id == DAG_ID)))
    yield
    with create_session() as session:
        for run in session.scalars(select(DagRun).where(DagRun.dag_id == DAG_ID, DagRun.id.not_in(earlier))):
            session.delete(run)


# --- OpenLineage into a file, for this test only ------------------------------------------------


def _clear_openlineage_config() -> None:
    from airflow.providers.openlineage import conf

    for value in vars(conf).values():
        if callable(getattr(value, "cache_clear", None)):
            value.cache_clear()


@pytest.fixture
def lineage_file(tmp_path) -> Iterator[Path]:
    """OpenLineage events of the DAG runs and tasks ``dag.test()`` runs in this process, as JSON
    lines (the provider's listener with a file transport; registered only for this test, in case
    the session started with OpenLineage off)."""
    from airflow.listeners.listener import get_listener_manager as dag_run_listeners
    from airflow.providers.openlineage.plugins.listener import get_openlineage_listener
    from airflow.sdk.listener import get_listener_manager as task_listeners

    path = tmp_path / "openlineage.jsonl"
    # Built before OpenLineage is switched on: each manager is built once per process, with the
    # listeners of the plugins, and the plugins are loaded once per process, the provider's with
    # its listener only if OpenLineage is on at that moment. Built in here, the managers would
    # hold the listener for the rest of the session (registered by the plugin, so not by this
    # fixture, which unregisters only what it registered).
    all_managers = [task_listeners(), dag_run_listeners()]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW__OPENLINEAGE__TRANSPORT",
                     json.dumps({"type": "file", "log_file_path": str(path), "append": True}))
        patch.setenv("AIRFLOW__OPENLINEAGE__DISABLED", "False")
        patch.setenv("AIRFLOW__OPENLINEAGE__NAMESPACE", "conduit-leak-test")
        _clear_openlineage_config()
        listener = get_openlineage_listener()
        listener.adapter._client = None  # built again from the transport above
        managers = [m for m in all_managers if not m.pm.is_registered(listener)]
        had_executor = listener._executor is not None
        for manager in managers:
            manager.pm.register(listener)
        try:
            yield path
        finally:
            for manager in managers:
                manager.pm.unregister(listener)
            listener.adapter._client = None
            if not had_executor and listener._executor is not None:
                # the process pool of the DAG-run events (forked workers): not left running
                executor, listener._executor = listener._executor, None
                executor.shutdown(wait=True)
    _clear_openlineage_config()


# --- a server whose error answers echo the request's headers ---------------------------------------


class _EchoHandler(BaseHTTPRequestHandler):
    """``/<status>/...``: answers ``status`` with the request's headers in the body: JSON in
    HubSpot's error shape for 4xx (the message quotes the Authorization header), a plain-text page
    for 5xx (headers as they came and URL-encoded, as some proxies' error pages show them)."""

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        status = int(self.path.strip("/").split("/")[0])
        headers = dict(self.headers.items())
        if status < 500:
            body = json.dumps({
                "status": "error", "category": "INVALID_AUTHENTICATION", "correlationId": str(uuid.uuid4()),
                "message": f"The access token provided is invalid or expired: {headers.get('Authorization')}",
                "context": {"headers": headers}}).encode()
            kind = "application/json"
        else:
            echoed = "\n".join(f"{k}: {v}" for k, v in headers.items())
            body = f"upstream failed for {self.command} {self.path}\n{echoed}\n{quote(echoed)}".encode()
            kind = "text/plain"
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Echo-Authorization", headers.get("Authorization", ""))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args) -> None:  # quiet: this test reads the process's output
        pass


@contextmanager
def echoing_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# --- what the scan reads --------------------------------------------------------------------------


def exception_text(exc: BaseException) -> str:
    """Everything an exception shows: the traceback with its causes, repr and args."""
    return "".join(traceback.format_exception(exc)) + repr(exc) + repr(exc.args)


def scan_metadata_db(scanner: Scanner) -> dict[str, int]:
    """Every row of every table of Airflow's metadata DB; returns the row count per table."""
    from airflow.utils.session import create_session
    from sqlalchemy import MetaData, select

    artifacts = {"xcom": "XCom", "rendered_task_instance_fields": "rendered template fields"}
    counts = {}
    with create_session() as session:
        metadata = MetaData()
        metadata.reflect(bind=session.get_bind())
        for table in metadata.sorted_tables:
            rows = session.execute(select(table)).all()
            counts[table.name] = len(rows)
            for number, row in enumerate(rows):
                blob = b"\x1f".join(v if isinstance(v, bytes) else str(v).encode("utf-8", "surrogateescape")
                                    for v in row)
                scanner.scan(artifacts.get(table.name, "metadata DB (other tables)"), f"{table.name} #{number}", blob)
    return counts


def scan_erp(scanner: Scanner, dsn: str, schema: str) -> dict[str, int]:
    """Every row of every table in the ERP schema, as PostgreSQL prints it."""
    artifacts = {"conduit_quarantine": "quarantine rows", "conduit_defects": "defect rows"}
    counts = {}
    with psycopg.connect(dsn) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY 1", (schema,))]
        for table in tables:
            rows = conn.execute(sql.SQL("SELECT t::text FROM {}.{} AS t").format(
                sql.Identifier(schema), sql.Identifier(table))).fetchall()
            counts[table] = len(rows)
            for (text,) in rows:
                scanner.scan(artifacts.get(table, "ERP tables"), f"{schema}.{table}", text)
    return counts


def scan_lineage(scanner: Scanner, path: Path) -> list[dict]:
    events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    for number, event in enumerate(events):
        scanner.scan("OpenLineage events", f"event #{number} {event['eventType']} {event['job']['name']}",
                     json.dumps(event))
    return events


def ui_app():
    """The Conduit plugin's UI app and its prefix, or None while there is none."""
    from conduit.plugin import ConduitPlugin

    apps = [entry for entry in ConduitPlugin().fastapi_apps if entry["name"] != "Conduit webhooks"]
    return apps[0] if apps else None


@contextmanager
def airflow_api_as_admin(tmp_path: Path, monkeypatch) -> Iterator[tuple[object, dict]]:
    """Airflow's API server app in process (the plugins mounted by its plugins manager), and the
    headers of a logged-in admin (SimpleAuthManager, a JWT from ``/auth/token``)."""
    from airflow.api_fastapi.app import create_app, purge_cached_app
    from fastapi.testclient import TestClient

    passwords = tmp_path / "passwords.json"
    passwords.write_text(json.dumps({"admin": "admin-pw"}))
    monkeypatch.setenv("AIRFLOW__CORE__AUTH_MANAGER",
                       "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager")
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "admin:admin")
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", str(passwords))
    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", "jwt-secret-of-the-leak-test-" + "x" * 40)
    purge_cached_app()
    try:
        with TestClient(create_app("core")) as client:
            answer = client.post("/auth/token", json={"username": "admin", "password": "admin-pw"})
            assert answer.status_code == 201, answer.text
            yield client, {"Authorization": f"Bearer {answer.json()['access_token']}"}
    finally:
        purge_cached_app()


def scan_ui_api(scanner: Scanner, client, headers: dict, values: dict[str, str]) -> dict[str, int]:
    """GET every route of the UI app whose path parameters ``values`` fill, as the admin, inside
    Airflow's app; scans each answer. Returns the status per path."""
    from fastapi.routing import APIRoute

    from conduit.ui import data

    getattr(data, "clear_state_cache", lambda: None)()
    entry = ui_app()
    statuses = {}
    for route in entry["app"].routes:
        names = set(getattr(route, "param_convertors", {}))
        if not isinstance(route, APIRoute) or "GET" not in route.methods or not names <= set(values):
            continue
        path = re.sub(r"\{(\w+)(:[^}]*)?\}", lambda m: quote(values[m.group(1)], safe=""), route.path)
        answer = client.get(entry["url_prefix"] + path, headers=headers)
        statuses[path] = answer.status_code
        scanner.scan("Conduit UI API responses", f"GET {entry['url_prefix']}{path} -> {answer.status_code}",
                     answer.content)
    return statuses


# --- the runs -----------------------------------------------------------------------------------


def failed_run(env, **conf) -> dict:
    dag_run, states = run_dag(env, conf=conf)
    assert dag_run.state == "failed", states
    return states


def ok_run(env, **conf):
    dag_run, states = run_dag(env, conf=conf)
    assert dag_run.state == "success", states
    return dag_run


def run_good_and_bad_nights(env, canaries: Canaries, echo: str, monkeypatch) -> str:
    """The runs (see the module's docstring); returns the id of the last successful one."""
    crm, token = env.crm, canaries.token.value
    # failures fail at once (the DAG's retries wait a minute); an email that does not parse rejects
    env.edit_spec(retries=0, mapping__email__transforms=[{"type": "email", "on_invalid": "reject"}])
    crm.admin.reset(bad_emails=3)
    crm.admin.modify(seeded_mapped(env.spec())["crm_id_text"].iloc[10],
                     {"phone": "call me maybe", "lifecyclestage": "not-a-stage"})  # defects
    crm.admin.faults(server_errors={"burst": 2})
    ok_run(env)  # full: quarantines 3 bad emails, records defects, the hook retries the 5xx burst
    crm.admin.clear_faults()
    crm.admin.bulk_modify(5, properties={"company": "Leak Test GmbH"}, seed=3,
                          lastmodifieddate_ms=crm.admin.clock_ms() - 120_000)  # older than the lag
    ok_run(env)  # incremental
    last_ok = ok_run(env, full_refresh=True, plan_only=True)  # the plan and the staged files stay
    env.edit_spec(quality__policy="block")
    assert failed_run(env, full_refresh=True)["quality_gate"] == TaskInstanceState.FAILED
    env.edit_spec(quality__policy="quarantine")
    for status in (401, 500):  # the CRM echoes the Authorization header in its error answers
        monkeypatch.setenv("AIRFLOW_CONN_HUBSPOT_DEFAULT",
                           hubspot_connection(f"{echo}/{status}", token, max_retries=1, backoff_max=0.05))
        assert TaskInstanceState.FAILED in failed_run(env, full_refresh=True).values()
    monkeypatch.setenv("AIRFLOW_CONN_HUBSPOT_DEFAULT", hubspot_connection(crm.base_url, token))
    # the ERP is not there (a database that does not exist; the password still travels)
    monkeypatch.setenv("AIRFLOW_CONN_ERP_DEFAULT", canaries.dsn(f"conduit_missing_{uuid.uuid4().hex[:8]}"))
    assert failed_run(env)["plan_extract"] == TaskInstanceState.FAILED
    return last_ok.run_id


def scan_hook_errors(scanner: Scanner, spec, canaries: Canaries, echo: str, monkeypatch) -> None:
    """The same failures straight from the hooks: their exceptions and connection tests."""
    for status in (401, 403, 404, 500):
        monkeypatch.setenv("AIRFLOW_CONN_HUBSPOT_DEFAULT", hubspot_connection(
            f"{echo}/{status}", canaries.token.value, max_retries=1, backoff_max=0.05))
        hook = HubSpotHook()
        with pytest.raises(CrmRequestError if status < 500 else CrmRetryableError) as raised:
            hook.request("GET", hook.objects_path("contacts"), params={"limit": 1})
        scanner.scan("exceptions", f"HubSpotHook.request -> {status}", exception_text(raised.value))
        scanner.scan("connection test messages", f"HubSpotHook.test_connection -> {status}",
                     HubSpotHook().test_connection()[1])
    monkeypatch.setenv("AIRFLOW_CONN_ERP_DEFAULT", canaries.dsn(f"conduit_missing_{uuid.uuid4().hex[:8]}"))
    ok, message = ErpHook().test_connection()
    assert not ok
    scanner.scan("connection test messages", "ErpHook.test_connection (no such database)", message)
    with pytest.raises(TargetError) as raised:
        ErpHook().get_target().read_watermark(spec)
    scanner.scan("exceptions", "ErpTarget.read_watermark (no such database)", exception_text(raised.value))


def test_no_artifact_of_good_or_failing_runs_holds_the_token_or_the_erp_password(
        make_sync_env, leak_schema, canaries, lineage_file, own_runs_forgotten, pg_server_dsn, capfd, monkeypatch,
        tmp_path):
    env = make_sync_env(schema=leak_schema, erp_dsn=canaries.dsn(), token=canaries.token.value)
    scanner = Scanner([canaries.token, canaries.password])
    with echoing_server() as echo:
        last_ok = run_good_and_bad_nights(env, canaries, echo, monkeypatch)
        scan_hook_errors(scanner, env.spec(), canaries, echo, monkeypatch)

    monkeypatch.setenv("AIRFLOW_CONN_ERP_DEFAULT", canaries.dsn())
    if ui_app() is not None:  # the UI's answers about these runs, read with the ERP password in use
        register_dags()  # as the dag-processor would
        with airflow_api_as_admin(tmp_path, monkeypatch) as (client, headers):
            statuses = scan_ui_api(scanner, client, headers, {"dag_id": DAG_ID, "run_id": last_ok, "path": "index.html"})
        assert 200 in statuses.values(), statuses
    out, err = capfd.readouterr()
    scanner.scan_lines("task logs (dag.test output)", "stdout", out)
    scanner.scan_lines("task logs (dag.test output)", "stderr", err)
    assert "Task failed with exception" in out and "; retry 1/" in out  # failures and retries were logged
    for error in ("QualityGateFailed", "CrmAuthError", "CrmRetryableError", "TargetError"):
        assert f"conduit.exceptions.{error}" in out, error
    # read by a child process: this process has the metadata DB open (see Scanner.scan_tree)
    scanner.scan_tree("AIRFLOW_HOME files (logs, metadata DB file)", Path(os.environ["AIRFLOW_HOME"]),
                      read_in_child=True)
    tables = scan_metadata_db(scanner)
    assert tables["xcom"] > 0 and tables["rendered_task_instance_fields"] > 0
    events = scan_lineage(scanner, lineage_file)
    assert {e["eventType"] for e in events} >= {"START", "COMPLETE", "FAIL"}, "no OpenLineage events were emitted"
    scanner.scan_tree("Data Docs", env.data_docs)
    scanner.scan_tree("staged files and plans", env.staging)
    assert any(p.name == "plan.json" for p in env.staging.rglob("*"))
    erp = scan_erp(scanner, pg_server_dsn, leak_schema)
    assert erp["conduit_quarantine"] >= 3 and erp["conduit_defects"] >= 1 and erp["erp_customers"] > 0
    for artifact in ("Data Docs", "exceptions", "connection test messages"):
        assert scanner.count(artifact) > 0, f"nothing scanned for {artifact}"

    print("\n" + scanner.report())
    assert not scanner.hits, "secrets leaked:\n" + "\n".join(map(str, scanner.hits)) + "\n\n" + scanner.report()


def test_the_ui_plugins_api_is_scanned_when_it_exists():
    """The run test above scans the UI's API answers; this says whether there are any to scan."""
    if ui_app() is None:
        pytest.skip("the Conduit UI plugin (plugins/conduit/ui) serves no API yet: no answers to scan")


def _tryton(base_url: str, key: str):
    from conduit.hooks.tryton import TrytonHook

    conn = {"conn_type": "tryton", "host": base_url, "schema": "erp", "password": key,
            "extra": {"max_retries": 1, "backoff_max": 0.05}}
    return conn, lambda: TrytonHook("tryton_leak"), lambda hook: hook.request("GET", hook.model_path("party.party"))


def _payment(base_url: str, key: str):
    from conduit.hooks.order_services import PaymentHook

    conn = {"conn_type": "http", "host": base_url, "password": key, "extra": {"max_retries": 1, "backoff_max": 0.05}}
    return conn, lambda: PaymentHook("payment_leak"), lambda hook: hook.call("GET", "/payment/authorizations")


@pytest.mark.parametrize("service", [_tryton, _payment], ids=["tryton", "payment"])
def test_other_hooks_mask_a_credential_the_service_echoes(service, capfd, monkeypatch):
    """The ERP's and the order services' hooks send a bearer key too: what an error page echoes
    never reaches their exceptions, connection tests or retry warnings."""
    core = uuid.uuid4().hex
    key = Secret("API key", f"key-LEAKCANARY-{core}", core)
    scanner = Scanner([key])
    with echoing_server() as echo:
        for status in (401, 403, 404, 409, 500, 503):
            conn, make_hook, call = service(f"{echo}/{status}", key.value)
            monkeypatch.setenv(f"AIRFLOW_CONN_{service.__name__.strip('_').upper()}_LEAK", json.dumps(conn))
            with pytest.raises(Exception) as raised:
                call(make_hook())
            scanner.scan("exceptions", f"{service.__name__} -> {status}", exception_text(raised.value))
            scanner.scan("connection test messages", f"{service.__name__} -> {status}", make_hook().test_connection()[1])
    out, err = capfd.readouterr()
    scanner.scan_lines("hook logs", "stdout", out)
    scanner.scan_lines("hook logs", "stderr", err)
    assert "retry 1" in out + err  # the 5xx answers were retried, and logged
    assert not scanner.hits, "secrets leaked:\n" + "\n".join(map(str, scanner.hits))


def test_the_scanner_finds_each_form_of_a_secret():
    secret = Secret("token", "pat-LEAKCANARY-0123456789abcdef+/=", "0123456789abcdef")
    for name, text in {
        "raw": f"x {secret.value} y", "url": f"x={quote(secret.value, safe='')}", "truncated": "…3456789abcdef+",
        "base64": base64.b64encode(b"Bearer " + secret.value.encode()).decode(),
        "base64 offset": base64.b64encode(b"xy:" + secret.value.encode() + b"!").decode(),
        "json": json.dumps({"h": secret.value}),
    }.items():
        scanner = Scanner([secret])
        scanner.scan("a", name, text)
        assert scanner.hits, name
    clean = Scanner([secret])
    clean.scan("a", "clean", "pat-LEAKCANARY-*** Bearer *** 01234567-89abcdef")
    assert not clean.hits
