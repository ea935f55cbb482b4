"""The SQLite target's fast paths write exactly what the general ones write: a first load straight
into the empty table (no staging table), timestamps as text, and a full refresh's "not staged"
test that SQLite runs as one lookup per row instead of a scan of the staging table per row."""

from __future__ import annotations

import random
import sqlite3
from datetime import datetime

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from conduit.specs.model import parse_spec
from conduit.targets import SqliteErpTarget
from conduit.targets import sql_render as render
from conduit.targets.sql import _sqlite_timestamps
from conduit.targets.sql_render import POSTGRES, SQLITE, TableLayout

SPEC = parse_spec(
    {
        "name": "customer_sync",
        "source": {"type": "hubspot", "properties": ["email", "lastmodifieddate"]},
        "target": {"type": "sql", "table": "erp_customers", "schema": "main", "key": "customer_number"},
        "mapping": {
            "customer_number": {"transforms": [{"type": "template", "template": "HS-C-{hs_object_id}"}],
                                "nullable": False},
            "crm_id": {"source": "hs_object_id", "dtype": "integer", "nullable": False},
            "email": {"source": "email"},
        },
    },
    "test.yaml",
)


def frame(rows: list[tuple[int, str, str, str]]) -> pd.DataFrame:
    """Rows ``(crm_id, modified ISO, email, row_hash)``."""
    return pd.DataFrame({
        "customer_number": [f"HS-C-{r[0]}" for r in rows],
        "crm_id": pd.array([r[0] for r in rows], dtype="Int64"),
        "email": [r[2] for r in rows],
        "source_modified_at": pd.to_datetime([r[1] for r in rows], utc=True, format="ISO8601"),
        "row_hash": [r[3] for r in rows],
    })


def table(target: SqliteErpTarget) -> list[tuple]:
    rows = target.fetch_rows(SPEC)
    return sorted(rows[["customer_number", "crm_id", "email", "source_modified_at", "row_hash", "active"]]
                  .itertuples(index=False, name=None))


def test_a_first_load_without_staging_keeps_what_the_staged_insert_keeps(tmp_path, monkeypatch):
    """Keys repeated within and across batches, equal times with other hashes, equal pairs: the
    direct insert and the staged ``insert_new`` (the general path) leave the same rows."""
    rng = random.Random(7)
    times = ["2024-03-01T10:00:00Z", "2024-03-02T10:00:00Z", "2024-03-02T10:00:00.000001Z"]
    rows = [(rng.randint(1, 300), rng.choice(times), f"e{i}@x.io", rng.choice("abc")) for i in range(2_000)]
    batches = [frame(rows[i:i + 250]) for i in range(0, len(rows), 250)]

    direct = SqliteErpTarget(tmp_path / "direct.db")
    direct.ensure_ready(SPEC)
    fast = direct.load(SPEC, batches, run_id="r1")

    staged = SqliteErpTarget(tmp_path / "staged.db")
    staged.ensure_ready(SPEC)
    monkeypatch.setattr(SqliteErpTarget, "inserts_into_empty", False)
    general = staged.load(SPEC, batches, run_id="r1")

    assert fast == general and fast.inserted == len({r[0] for r in rows})
    # equal (time, hash) pairs may keep another email: the hash stands for the content
    assert [r[:2] + r[3:] for r in table(direct)] == [r[:2] + r[3:] for r in table(staged)]
    again = direct.load(SPEC, batches, run_id="r2")  # not empty now: the merge, nothing to change
    assert (again.inserted, again.updated) == (0, 0)


def test_the_plan_of_a_first_load_is_the_load_and_changes_nothing(tmp_path):
    target = SqliteErpTarget(tmp_path / "erp.db")
    target.ensure_ready(SPEC)
    batches = [frame([(1, "2024-03-01T10:00:00Z", "a@x.io", "a"), (2, "2024-03-01T10:00:00Z", "b@x.io", "b"),
                      (1, "2024-03-02T10:00:00Z", "a2@x.io", "c")])]

    plan = target.plan(SPEC, batches, run_id="r1", deleted_keys=[("HS-C-2", None)], sample_rows=5)

    assert (plan.result.inserted, plan.result.deleted, plan.changed_columns) == (2, 1, {})
    assert [(r["customer_number"], r["email"]) for r in plan.samples["insert"]] == [("HS-C-1", "a2@x.io"),
                                                                                   ("HS-C-2", "b@x.io")]
    assert target.count(SPEC, active_only=False) == 0
    assert target.load(SPEC, batches, run_id="r1", deleted_keys=[("HS-C-2", None)]) == plan.result


def test_timestamps_become_the_text_strftime_gave():
    stamps = [datetime(2024, 1, 1), datetime(1, 1, 1), datetime(9999, 12, 31, 23, 59, 59, 999999),
              datetime(1969, 12, 31, 23, 59, 59, 1), datetime(999, 5, 5, 5, 5, 5, 50), None]
    rng = random.Random(3)
    stamps += [datetime.fromtimestamp(rng.randint(-10**10, 10**10) / 1000) for _ in range(1_000)]
    array = pa.chunked_array([pa.array(stamps[:500], pa.timestamp("us")), pa.array(stamps[500:], pa.timestamp("us"))])

    assert _sqlite_timestamps(array).to_pylist() == pc.strftime(array, format="%Y-%m-%dT%H:%M:%SZ").to_pylist()
    assert _sqlite_timestamps(array)[0].as_py() == "2024-01-01T00:00:00.000000Z"


@pytest.mark.parametrize("mode", ["soft", "hard"])
def test_sqlite_tests_not_staged_once_per_row_not_by_a_scan(mode):
    """``EXPLAIN QUERY PLAN`` of the full refresh's delete: no correlated subquery over the
    unindexed staging table (at 100,000 rows that ran for minutes), a list built once."""
    layout = TableLayout.of(SPEC)
    conn = sqlite3.connect(":memory:")
    conn.execute(render.create_customer_table(SQLITE, layout))
    conn.execute(render.create_staging_table(SQLITE, layout))
    sql = render.delete_rows(SQLITE, layout, mode=mode, full_refresh=True)
    plan = " | ".join(row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", {"now": "x", "run_id": "r",
                                                                                      "kept": "[]"}))
    assert "CORRELATED" not in plan and "LIST SUBQUERY" in plan, plan
    assert "NOT EXISTS" in render.delete_rows(POSTGRES, layout, mode=mode, full_refresh=True)  # a hash anti-join


def test_a_full_refresh_on_sqlite_deletes_what_was_not_staged_nor_kept(tmp_path):
    target = SqliteErpTarget(tmp_path / "erp.db")
    target.ensure_ready(SPEC)
    t1 = "2024-03-01T10:00:00Z"
    target.load(SPEC, [frame([(i, t1, f"{i}@x.io", "a") for i in range(1, 6)])], run_id="r1")

    result = target.load(SPEC, [frame([(1, t1, "1@x.io", "a"), (6, t1, "6@x.io", "a")])], run_id="r2",
                         full_refresh=True, kept_keys=["HS-C-3"])

    assert (result.inserted, result.unchanged, result.deleted) == (1, 1, 3)
    active = {r[0]: r[-1] for r in table(target)}
    assert active == {"HS-C-1": True, "HS-C-2": False, "HS-C-3": True, "HS-C-4": False, "HS-C-5": False,
                      "HS-C-6": True}
