"""A process that runs many saga tasks (``dag.test()`` of the nightly batch, a worker) keeps one pool
per saga-log database, not one idle connection per task: counted in PostgreSQL itself."""

from __future__ import annotations

import json
import uuid
from urllib.parse import urlsplit

import psycopg
import pytest

pytestmark = pytest.mark.postgres


def test_many_saga_log_hooks_in_one_process_share_one_pool(pg_server_dsn, pg_schema, monkeypatch):
    from conduit.hooks.saga_log import SagaLogHook

    app = f"saga-pool-{uuid.uuid4().hex[:8]}"
    pg = urlsplit(pg_server_dsn)
    monkeypatch.setenv("AIRFLOW_CONN_CONDUIT_SAGA_DEFAULT", json.dumps({
        "conn_type": "postgres", "host": pg.hostname, "port": pg.port or 5432, "login": pg.username,
        "schema": pg.path.lstrip("/"), "extra": {"options": f"-csearch_path={pg_schema}", "application_name": app}}))
    hooks = [SagaLogHook() for _ in range(30)]  # kept alive, as the tasks of one dag.test() run are
    for hook in hooks:
        assert hook.get_conn().saga("order-none") is None
    with psycopg.connect(pg_server_dsn) as conn:
        open_connections = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                                        (app,)).fetchone()[0]
    assert 1 <= open_connections <= 5  # SQLAlchemy's default pool size, whatever the number of hooks
