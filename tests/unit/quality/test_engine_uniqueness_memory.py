"""Uniqueness keeps a 64-bit hash per row, not the rows: duplicates are confirmed on a second read
of the rows whose hash repeats (see ``conduit.quality.engine``)."""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import pandas as pd
import pytest

from conduit.quality import engine, evaluate, parse_suite
from conduit.quality.engine import SuiteEvaluator

KEY = "customer_number"
UNIQUE_KEY = parse_suite(
    {"name": "u", "expectations": [{"type": "expect_column_values_to_be_unique", "kwargs": {"column": KEY}}]},
    "u.yaml",
)


def rows(keys, start: int = 0) -> pd.DataFrame:
    return pd.DataFrame({KEY: keys, "crm_id": range(start + 1, start + len(keys) + 1)})


def duplicates(report) -> pd.DataFrame:
    return report.results[0].failing_rows


def test_duplicates_across_chunks_keep_their_keys_crm_ids_and_positions():
    chunks = [rows(["a", "b", None]), rows(["c", "a", None], 3), rows(["b", "d", "a"], 6)]
    evaluator = SuiteEvaluator(UNIQUE_KEY, key=KEY, reread=lambda: chunks)
    for chunk in chunks:
        evaluator.add(chunk)
    result = evaluator.report().results[0]
    assert (result.success, result.unexpected_count, result.element_count) == (False, 5, 9)
    failing = result.failing_rows
    assert failing.index.tolist() == [0, 1, 4, 6, 8]
    assert failing["key"].tolist() == ["a", "b", "a", "b", "a"]
    assert failing["crm_id"].tolist() == [1, 2, 5, 7, 9]
    assert failing["value"].tolist() == failing["key"].tolist()
    whole = duplicates(evaluate(pd.concat(chunks, ignore_index=True), UNIQUE_KEY, key=KEY))
    pd.testing.assert_frame_equal(failing, whole)


def test_mostly_counts_the_non_null_rows():
    suite = parse_suite(
        {
            "name": "u",
            "expectations": [
                {"type": "expect_column_values_to_be_unique", "kwargs": {"column": KEY, "mostly": 0.5}}
            ],
        },
        "u.yaml",
    )
    # 2 of 4 non-null rows are duplicates: 2/4 >= 0.5 passes; the null rows do not count
    frame = rows(["a", "a", "b", "c", None, None])
    [result] = evaluate([frame.iloc[:3], frame.iloc[3:]], suite, key=KEY).results
    assert (result.success, result.unexpected_count) == (True, 2)


def test_equal_values_of_chunks_with_different_dtypes_are_duplicates():
    # an integer column with nulls arrives as float in its chunk
    chunks = [rows(pd.Series([1, 2], dtype="int64")), rows(pd.Series([2.0, None]), 2)]
    assert duplicates(evaluate(chunks, UNIQUE_KEY, key=KEY)).index.tolist() == [1, 2]


def test_a_hash_collision_rejects_no_row(monkeypatch):
    def colliding(values, nonnull):
        return np.where(nonnull, 42, engine._NULL_HASH)

    monkeypatch.setattr(engine, "_hashes", colliding)
    chunks = [rows(["a", "b"]), rows(["c", None, "b"], 2)]
    result = evaluate(chunks, UNIQUE_KEY, key=KEY).results[0]
    assert (result.success, result.unexpected_count) == (False, 2)
    assert result.failing_rows["key"].tolist() == ["b", "b"]
    assert result.failing_rows.index.tolist() == [1, 4]
    assert evaluate([rows(["a", "b"]), rows(["c"], 2)], UNIQUE_KEY, key=KEY).success


def test_repeated_values_need_a_second_read():
    evaluator = SuiteEvaluator(UNIQUE_KEY, key=KEY)
    evaluator.add(rows(["a", "b"]))
    assert evaluator.report().success  # nothing repeats: no second read needed
    evaluator.add(rows(["a"], 2))
    with pytest.raises(ValueError, match="reread"):
        evaluator.report()


def test_a_second_read_with_other_rows_is_refused():
    evaluator = SuiteEvaluator(UNIQUE_KEY, key=KEY, reread=lambda: [rows(["a", "a"])])
    evaluator.add(rows(["a", "a", "b"]))
    with pytest.raises(RuntimeError, match="2 rows, but 3"):
        evaluator.report()


# tracemalloc slows every Python allocation (hashing makes a few a row), so a fifth of a million rows
# keeps this fast; the bound is per row, so it holds at any N
N, CHUNK = 200_000, 10_000


def chunks():
    """N rows with integer keys, the last one repeating the first. Integers, because tracemalloc
    sees numpy's buffers but not the Arrow buffers pandas keeps strings in."""
    for start in range(0, N, CHUNK):
        keys = np.arange(start, start + CHUNK)
        if start + CHUNK == N:
            keys[-1] = 0
        yield rows(keys, start)


def test_retained_memory_is_a_hash_a_row():
    evaluate(rows(["warm", "up"]), UNIQUE_KEY, key=KEY)  # lazy imports and caches are not the rows'
    gc.collect()
    tracemalloc.start()
    try:
        evaluator = SuiteEvaluator(UNIQUE_KEY, key=KEY, reread=chunks)
        for chunk in chunks():
            evaluator.add(chunk)
        del chunk
        gc.collect()
        retained = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    # 8 bytes a row plus a little per chunk; keeping key, crm_id and value of every row took 32
    assert retained < 12 * N
    failing = evaluator.report().results[0].failing_rows
    assert failing.index.tolist() == [0, N - 1] and failing["crm_id"].tolist() == [1, N]
