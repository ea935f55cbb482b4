"""Data Docs links of runs whose id holds characters a URL path must quote (``/conduit-ui``
inside Airflow's own app, ``create_app("core")``, SimpleAuthManager, the runs triggered through
Airflow's own REST API, the Data Docs written by Great Expectations itself).

Which run ids are real: Airflow 3.3 checks a custom run id against ``[scheduler]
allowed_run_id_pattern`` (``airflow/models/dagrun.py``, ``DagRun.validate_run_id``) with
``re.match``. The default, ``^[A-Za-z0-9_.~:+-]+$``, refuses ``#``, ``?``, ``%``, spaces and ``/``,
but its ``$`` also matches before a final newline, so ``manual__x\\n`` is accepted as it is; and
the pattern is a documented setting a deployment may widen, after which ``#``, ``?``, ``%``,
spaces and ``/`` are all accepted (the tests trigger such runs through the REST API). The sync
page's links and every URL inside a served Data Docs page must name the run quoted, or a browser
reads ``#`` as a fragment, ``?`` as a query, ``%41`` as ``A``, drops a newline (another run's
site) or splits the id at ``/``."""

from __future__ import annotations

import re
import socket
import threading
import time
from datetime import UTC, datetime
from urllib.parse import urljoin

import pytest
from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager
from test_health_api import Api
from test_health_page_hardening import (
    DAG_ID,
    health_app,
    write_data_docs,
)

WIDE_PATTERN = r"^[^\x00]+$"  # what a deployment may set as [scheduler] allowed_run_id_pattern
TRYTON = "crm_to_tryton_customer_sync"
RUN_IDS = {
    "newline-default-pattern": ("manual__nightly\n", None),  # accepted by Airflow's default pattern
    "hash": ("manual__batch#7", WIDE_PATTERN),
    "question-mark": ("manual__why?not", WIDE_PATTERN),
    "percent": ("manual__100%41", WIDE_PATTERN),
    "space": ("manual__after hours", WIDE_PATTERN),
}
HOSTILE = "no_such_stage"  # a lifecycle stage the gate flags: GX writes a validation page for it


@pytest.fixture
def served(airflow_db, tmp_path, monkeypatch):
    """Airflow's API app of ``test_health_page_hardening`` (an admin, a viewer, a user without a
    role), served by uvicorn on a loopback port: a browser's URL is decoded once, as a real server
    does (Starlette's TestClient decodes a path twice, ``%2541`` to ``A``)."""
    import httpx
    import uvicorn

    with health_app(tmp_path, monkeypatch) as (api, tmp):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(api.client.app, lifespan="off", log_level="warning"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.started, "uvicorn did not start"
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{sock.getsockname()[1]}", timeout=30) as client:
                yield Api(client), tmp
        finally:
            server.should_exit = True
            thread.join(timeout=15)
            sock.close()


def trigger(api, run_id: str, dag_id: str = DAG_ID) -> None:
    """A run with ``run_id``, as a user triggers it through Airflow's REST API."""
    resp = api.client.post(f"/api/v2/dags/{dag_id}/dagRuns", json={"dag_run_id": run_id, "logical_date": None},
                           headers={"Authorization": f"Bearer {api.token('admin')}"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["dag_run_id"] == run_id


def record_data_docs(run_id: str, dag_id: str = DAG_ID) -> None:
    """The run's ``data_docs`` task succeeded and returned where its site is, as Airflow stores it."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select, update

    with create_session() as session:
        run = session.scalars(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)).one()
        updated = session.execute(update(TaskInstance).where(
            TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id, TaskInstance.task_id == "data_docs",
        ).values(state="success", try_number=1))
        assert updated.rowcount == 1
        session.execute(XComModel.__table__.insert(), [{
            "dag_run_id": run.id, "dag_id": dag_id, "run_id": run_id, "task_id": "data_docs", "map_index": -1,
            "key": "return_value", "value": XComModel.serialize_value({"data_docs": "index.html", "success": True}),
            "timestamp": datetime.now(UTC)}])


def as_a_browser_reads(url: str) -> str:
    """What a browser requests for ``url`` in a page: tabs and newlines dropped (WHATWG URL
    parsing), the fragment cut."""
    return re.sub(r"[\t\n\r]", "", url).partition("#")[0]


@pytest.mark.parametrize("case", RUN_IDS)
def test_the_data_docs_of_a_run_whose_id_needs_quoting_open_whole(served, monkeypatch, case):
    api, _ = served
    run_id, pattern = RUN_IDS[case]
    if pattern:
        monkeypatch.setenv("AIRFLOW__SCHEDULER__ALLOWED_RUN_ID_PATTERN", pattern)
    trigger(api, run_id)
    write_data_docs(run_id, HOSTILE)
    record_data_docs(run_id)

    detail = api.get(f"/conduit-ui/api/syncs/{DAG_ID}").json()
    docs = {r["run_id"]: r for r in detail["runs"]}[run_id]["data_docs_url"]
    assert docs and docs == detail["links"]["data_docs"], detail["runs"]
    site = docs.removesuffix("index.html")
    assert as_a_browser_reads(docs) == docs, docs  # the link holds no fragment, no newline
    index = api.get(docs)
    assert "bootstrapTable(" in index.text

    # every URL of the index into the run's site (GX's logo, rewritten from its S3 bucket) stays in
    # the site, and a browser that follows it gets the file
    urls = re.findall(r'(?:src|href)="(/conduit-ui/data-docs/[^"]*)"', index.text)
    assert urls, index.text[:600]
    for url in urls:
        read = as_a_browser_reads(url)
        assert read.startswith(site), f"{url!r} is read as {read!r}, outside the site {site!r}"
        api.get(read)
    # and a validation page the index names (relative: resolved against the link) opens too. Not
    # for a newline: GX names the page's folder by the run id as it is, and no mounted app's route
    # matches a path with a newline (Starlette's Mount); see the report
    if "\n" not in run_id:
        validation = re.search(r"(validations/[^'\"]+\.html)", index.text).group(1)
        assert HOSTILE in api.get(urljoin(docs, validation)).text


class ViewerMayNotReadTryton(SimpleAuthManager):
    """SimpleAuthManager with one per-DAG rule, as FAB's or Keycloak's DAG permissions allow: the
    viewer may read the flagship sync, not the Tryton sync."""

    def is_authorized_dag(self, *, method, user, access_entity=None, details=None):
        if user.username == "viewer" and details is not None and details.id == TRYTON:
            return False
        return super().is_authorized_dag(method=method, user=user, access_entity=access_entity,
                                         details=details)


@pytest.fixture
def tryton_hidden(airflow_db, tmp_path, monkeypatch):
    with health_app(tmp_path, monkeypatch, auth_manager=f"{__name__}.{ViewerMayNotReadTryton.__name__}") as served:
        yield served


def test_a_run_id_of_dot_dot_reaches_no_other_syncs_data_docs(tryton_hidden):
    """The route checks the permission of the DAG in the URL and serves that sync's sites only: a
    run id ``..`` (``%2E%2E``; Airflow refuses it for a real run) would make the site's folder the
    one holding every sync's sites, and a user who may read only the flagship read the Tryton
    sync's Data Docs (the CRM values that failed its gate)."""
    api, tmp = tryton_hidden
    site = tmp / "airflow" / "conduit" / "data_docs" / TRYTON / "manual__1"
    site.mkdir(parents=True)
    (site / "index.html").write_text("<html><body>the Tryton sync's failing values</body></html>")
    api.get(f"/conduit-ui/data-docs/{TRYTON}/manual__1/index.html", user="viewer", expect=403)

    path = f"/conduit-ui/data-docs/{DAG_ID}/%2E%2E/{TRYTON}/manual__1/index.html"
    resp = api.get(path, user="viewer", expect=404)
    assert resp.json() == {"detail": "no such Data Docs file"}
