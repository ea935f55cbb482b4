"""Fixtures of the reliability tests: the real sync DAG (``dag.test()``) against the stand-in CRM and
an ERP schema on the real PostgreSQL, with the connections (token, DSN, role) each test chooses.

The fixtures of ``tests/integration/conftest.py`` are not visible here; its helpers module is
(``sync_helpers``), and ``make_sync_env`` builds what its ``sync_env`` builds.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import summary_plugin
import yaml
from reliability_env import CONTACTS, DAG_ID, REPO, SEED, SyncEnv, hubspot_connection

sys.path.insert(0, str(REPO / "tests" / "integration"))  # sync_helpers: run the DAG, compare ERP and CRM


def pytest_collection_modifyitems(config):  # not pytest_plugins: pytest refuses it below the top conftest
    summary_plugin.register(config)  # the session's reliability table (see summary_plugin)


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated SQLite metadata DB in the session's private AIRFLOW_HOME."""
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True,
                   env=os.environ.copy(), timeout=300)
    return Path(os.environ["AIRFLOW_HOME"])


@pytest.fixture
def make_sync_env(airflow_db, pg_server_dsn, tmp_path, monkeypatch) -> Iterator[Callable[..., SyncEnv]]:
    """``make_sync_env(schema=..., erp_dsn=..., token=...)``: the stand-in CRM serving ``token``, a
    private include/ whose flagship spec loads into ``schema``, staging and Data Docs under
    tmp_path, and the connections ``hubspot_default`` and ``erp_default`` (= ``erp_dsn``). The
    schema must exist; the caller owns it."""
    from conduit.standin.testing import run_standin

    with contextlib.ExitStack() as stack:
        def make(*, schema: str, erp_dsn: str, token: str = "standin-token") -> SyncEnv:
            include = tmp_path / "include"
            shutil.copytree(REPO / "include", include)
            spec_path = include / "syncs" / f"{DAG_ID}.yaml"
            data = yaml.safe_load(spec_path.read_text())
            data["target"]["schema"] = schema
            spec_path.write_text(yaml.safe_dump(data))
            staging, data_docs = tmp_path / "staging", tmp_path / "data_docs"
            monkeypatch.setenv("CONDUIT_INCLUDE_DIR", str(include))
            monkeypatch.setenv("CONDUIT_STAGING_DIR", str(staging))
            monkeypatch.setenv("CONDUIT_DATA_DOCS_DIR", str(data_docs))
            monkeypatch.setenv("AIRFLOW_CONN_ERP_DEFAULT", erp_dsn)
            crm = stack.enter_context(run_standin(contacts=CONTACTS, seed=SEED, token=token))
            monkeypatch.setenv("AIRFLOW_CONN_HUBSPOT_DEFAULT", hubspot_connection(crm.base_url, token))
            return SyncEnv(crm=crm, schema=schema, include=include, spec_path=spec_path, staging=staging,
                           data_docs=data_docs)

        yield make


@pytest.fixture
def superuser(pg_server_dsn) -> Callable[[str], None]:
    """Run one statement as the test server's superuser (autocommit)."""
    import psycopg

    def run(sql: str) -> None:
        with psycopg.connect(pg_server_dsn, autocommit=True) as conn:
            conn.execute(sql)

    return run
