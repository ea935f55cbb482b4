"""Shared fixtures: real PostgreSQL / Redis (never mocked; under CI=true never skipped) and a
private AIRFLOW_HOME so tests never touch a developer's Airflow."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_HOME = Path(tempfile.mkdtemp(prefix="conduit-airflow-home-"))
os.environ.setdefault("AIRFLOW_HOME", str(_HOME))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(REPO / "dags"))
os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(_HOME / "plugins"))
os.environ.setdefault("CONDUIT_INCLUDE_DIR", str(REPO / "include"))
os.environ.setdefault("CONDUIT_STAGING_DIR", str(_HOME / "staging"))

PG_DSN = os.environ.get("CONDUIT_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("CONDUIT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _unavailable(what: str, exc: Exception):
    message = f"{what} is not reachable ({exc})"
    if IN_CI:
        pytest.fail(f"{message}; under CI=true this test must run, not skip", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def pg_server_dsn() -> str:
    import psycopg

    try:
        psycopg.connect(PG_DSN, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        _unavailable("PostgreSQL at " + PG_DSN, exc)
    return PG_DSN


@pytest.fixture
def pg_schema(pg_server_dsn: str):
    """A fresh schema per test, dropped afterwards: tests never see each other's tables."""
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    yield schema
    with psycopg.connect(pg_server_dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        _unavailable("Redis at " + REDIS_URL, exc)
    return REDIS_URL


def pytest_sessionfinish(session, exitstatus) -> None:
    """The private AIRFLOW_HOME goes with a green session; a failed one keeps it (task logs, the
    metadata DB) and says where."""
    if os.environ.get("AIRFLOW_HOME") != str(_HOME):
        return
    if exitstatus == 0:
        shutil.rmtree(_HOME, ignore_errors=True)
    else:
        print(f"\nAIRFLOW_HOME of this session kept for a look: {_HOME}")


class Clock:
    """A clock that moves only when told to (``clock.tick(seconds)``)."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float = 1.0) -> float:
        self.now += seconds
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()
