"""Two staged rows of one key with the same ``source_modified_at``: the Tryton target keeps the one
the SQL target keeps, the greatest (``source_modified_at``, ``row_hash``), whatever order they come
in (one batch or two). Tryton is a fake here; the SQL target (SQLite) is the reference."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from conduit.specs.model import load_spec, parse_spec
from conduit.targets import tryton as tryton_target
from conduit.targets.sql import SqliteErpTarget
from conduit.targets.tryton import TrytonTarget, rows_frame

SPEC_FILE = Path(__file__).parents[3] / "include" / "syncs" / "crm_to_tryton_customer_sync.yaml"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
NAMES = ("Ada A", "Ada B")


class FakeTryton:
    """A Tryton holding no parties and one country; records what is created."""

    tryton_conn_id = "fake"

    def __init__(self):
        self.created: list[dict[str, Any]] = []

    def search(self, model: str, domain=None, fields=None, **_: Any) -> list[dict[str, Any]]:
        return [{"id": 60, "code": "DE"}] if model == "country.country" else []

    def create_many(self, model: str, vlist: list[dict], **_: Any) -> list[int]:
        self.created += vlist
        return list(range(1, len(vlist) + 1))


@pytest.fixture(scope="module")
def spec():
    return load_spec(SPEC_FILE)


def version(spec, name: str, at: datetime = T0) -> pd.DataFrame:
    frame = pd.DataFrame({
        "customer_number": ["HS-C-7"], "crm_id": pd.array([7], dtype="Int64"), "full_name": [name],
        "email": ["ada@example.com"], "phone": ["+493012345678"], "country_code": ["DE"],
        "source_modified_at": pd.Series([at], dtype="datetime64[us, UTC]"),
    })
    frame["row_hash"] = rows_frame(frame.to_dict("records"), spec)["row_hash"]
    return frame


def greatest_hash_name(spec) -> str:
    """The name of the version with the greater row hash (what SQL's rule keeps on a tie)."""
    hashes = {name: version(spec, name)["row_hash"][0] for name in NAMES}
    assert hashes[NAMES[0]] != hashes[NAMES[1]]
    return max(NAMES, key=hashes.__getitem__)


def arrangements(spec) -> dict[str, list[pd.DataFrame]]:
    a, b = (version(spec, name) for name in NAMES)
    return {"one batch, A first": [pd.concat([a, b], ignore_index=True)],
            "one batch, B first": [pd.concat([b, a], ignore_index=True)],
            "two batches, A first": [a, b], "two batches, B first": [b, a]}


@pytest.mark.parametrize("order", ["one batch, A first", "one batch, B first", "two batches, A first",
                                   "two batches, B first"])
def test_a_tie_keeps_the_greatest_row_hash_as_the_sql_target_does(spec, tmp_path, order):
    batches = arrangements(spec)[order]
    sql_spec = parse_spec({**spec.model_dump(by_alias=True, exclude_none=True), "target": {
        "type": "sql", "table": "erp_customers", "schema": "main", "key": "customer_number"}}, "sql.yaml")
    sql = SqliteErpTarget(tmp_path / "erp.sqlite")
    sql.ensure_ready(sql_spec)
    sql.load(sql_spec, batches, run_id="r1")
    (sql_kept,) = sql.fetch_rows(sql_spec)["full_name"]
    assert sql_kept == greatest_hash_name(spec)

    hook = FakeTryton()
    target = TrytonTarget(hook, SqliteErpTarget(tmp_path / "state.sqlite"))
    target.ensure_ready(spec)
    plan = target.plan(spec, batches, run_id="r1")
    result = target.load(spec, batches, run_id="r1", expected=plan)

    assert [r["full_name"] for r in plan.samples["insert"]] == [sql_kept], order
    assert result.inserted == 1 and [p["name"] for p in hook.created] == [sql_kept], order


def test_newest_rows_prefers_newer_data_then_the_greater_hash(spec):
    older, newer = version(spec, "Ada A", T0), version(spec, "Ada A", T0.replace(day=2))
    kept = tryton_target.newest_rows([newer, older], spec)
    assert list(kept) == ["HS-C-7"] and kept["HS-C-7"]["source_modified_at"] == T0.replace(day=2)
    for batches in arrangements(spec).values():
        (row,) = tryton_target.newest_rows(batches, spec).values()
        assert row["full_name"] == greatest_hash_name(spec)


def test_newest_rows_hashes_a_frame_that_comes_without_its_row_hash(spec):
    batches = [frame.drop(columns="row_hash") for frame in arrangements(spec)["two batches, B first"]]
    (row,) = tryton_target.newest_rows(batches, spec).values()
    assert row["full_name"] == greatest_hash_name(spec)
