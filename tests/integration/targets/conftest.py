"""An ERP target of each kind (SQLite file, PostgreSQL schema) with a small spec."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from erp_target_helpers import make_spec

from conduit.specs.model import SyncSpec
from conduit.targets import ErpTarget, PostgresErpTarget, SqliteErpTarget


@dataclass
class Erp:
    kind: str
    target: ErpTarget
    spec: SyncSpec
    location: str
    """The DSN or the SQLite file path (for child processes)."""

    def with_delete_mode(self, mode: str) -> Erp:
        return Erp(self.kind, self.target, make_spec(self.spec.target.db_schema, delete_mode=mode), self.location)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def erp(request, tmp_path) -> Erp:
    if request.param == "sqlite":
        path = str(tmp_path / "erp.db")
        return Erp("sqlite", SqliteErpTarget(path), make_spec("main"), path)
    dsn = request.getfixturevalue("pg_server_dsn")
    return Erp("postgres", PostgresErpTarget(dsn), make_spec(request.getfixturevalue("pg_schema")), dsn)


@pytest.fixture
def ready(erp: Erp) -> Erp:
    erp.target.ensure_ready(erp.spec)
    return erp
