"""A real Tryton ERP (trytond + party, SQLite) for the whole test session, and hooks on it.

The first session on a machine builds the cached template database (about 5 s); later ones copy
it (a server is ready in about 1 s). See :mod:`conduit.devtools.tryton_server`.
"""

from __future__ import annotations

import json

import pytest

from conduit.devtools.tryton_server import TrytonServer
from conduit.hooks.tryton import TrytonHook


@pytest.fixture(scope="session")
def tryton_server():
    """One trytond for the session; tests that stop it start it again before they end."""
    with TrytonServer(database="conduit_it") as server:
        yield server


@pytest.fixture
def make_tryton_hook(tryton_server, monkeypatch):
    """``make_tryton_hook(conn_id="tryton_test", api_key=None, database=None, **extra) -> TrytonHook``
    on the session's server; fast retries unless ``extra`` says otherwise."""

    def make(conn_id: str = "tryton_test", *, api_key: str | None = None, database: str | None = None,
             **extra) -> TrytonHook:
        extra = {"timeout": 10, "max_retries": 3, "backoff_max": 0.05, **extra}
        conn = tryton_server.connection(**extra)
        if api_key is not None:
            conn["password"] = api_key
        if database is not None:
            conn["schema"] = database
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
        return TrytonHook(tryton_conn_id=conn_id)

    return make


@pytest.fixture
def tryton_hook(make_tryton_hook) -> TrytonHook:
    return make_tryton_hook()
