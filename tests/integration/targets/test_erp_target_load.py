"""Loading into a real SQLite file and a real PostgreSQL schema: counts, change detection,
deletes, watermark, atomicity and the quarantine."""

from __future__ import annotations

import threading

import pandas as pd
import pytest
from erp_target_helpers import batch, make_spec

from conduit.exceptions import TargetConfigError, TargetError
from conduit.targets import PostgresErpTarget, SqliteErpTarget, Watermark, frame_key_checksum

T1, T2, T3 = "2024-03-01T10:00:00.000Z", "2024-03-02T10:00:00.000Z", "2024-03-03T10:00:00.000Z"


def rows_by_key(erp) -> dict[str, dict]:
    frame = erp.target.fetch_rows(erp.spec)
    return {row["customer_number"]: row for row in frame.to_dict("records")}


def snapshot(erp):
    """Everything a load can change: the table, the watermark, the open quarantine."""
    return (erp.target.fetch_rows(erp.spec), erp.target.read_watermark(erp.spec), erp.target.open_quarantine(erp.spec))


def assert_unchanged(erp, before):
    rows, watermark, quarantine = snapshot(erp)
    pd.testing.assert_frame_equal(rows, before[0])
    assert (watermark, quarantine) == before[1:]


def test_inserts_updates_and_leaves_unchanged_rows_alone(ready):
    target, spec = ready.target, ready.spec
    first = target.load(spec, [batch((1, T1, "a@x.io"), (2, T1, "b@x.io")), batch((3, T1, "c@x.io"))], run_id="r1")
    assert (first.inserted, first.updated, first.unchanged) == (3, 0, 0)
    before = rows_by_key(ready)

    second = target.load(spec, [batch((1, T1, "a@x.io"), (2, T2, "b2@x.io"), (4, T2, "d@x.io"))], run_id="r2")

    assert (second.inserted, second.updated, second.unchanged, second.stale_skipped) == (1, 1, 1, 0)
    after = rows_by_key(ready)
    assert after["HS-C-2"]["email"] == "b2@x.io" and after["HS-C-2"]["last_run_id"] == "r2"
    assert after["HS-C-2"]["updated_at"] > before["HS-C-2"]["updated_at"]
    assert after["HS-C-2"]["created_at"] == before["HS-C-2"]["created_at"]
    for unchanged in ("HS-C-1", "HS-C-3"):
        assert after[unchanged] == before[unchanged]  # not rewritten: updated_at and last_run_id stay
    assert after["HS-C-4"]["active"] and after["HS-C-4"]["created_at"] == after["HS-C-4"]["updated_at"]
    assert target.count(spec) == 4


def test_rows_round_trip_with_their_types(ready):
    frame = batch((7, T1, "x@y.io", True))
    frame["crm_created_at"] = pd.to_datetime(["2021-06-01T12:00:00+02:00"]).tz_convert("Europe/Berlin")
    ready.target.load(ready.spec, [frame], run_id="r1")

    stored = ready.target.fetch_rows(ready.spec, keys=["HS-C-7"])

    row = stored.iloc[0]
    assert row["crm_id"] == 7 and bool(row["vip"]) is True
    assert row["crm_created_at"] == pd.Timestamp("2021-06-01T10:00:00Z")
    assert row["source_modified_at"] == pd.Timestamp(T1)
    assert str(stored["crm_created_at"].dtype) == "datetime64[us, UTC]"
    assert ready.target.fetch_rows(ready.spec, keys=["HS-C-404"]).empty


def test_an_older_rerun_never_overwrites_newer_data(ready):
    target, spec = ready.target, ready.spec
    target.load(spec, [batch((1, T2, "new@x.io"), (2, T2, "b@x.io"))], run_id="nightly")

    rerun = target.load(spec, [batch((1, T1, "old@x.io"), (2, T1, "b@x.io"))], run_id="backfill")

    assert (rerun.stale_skipped, rerun.unchanged, rerun.updated) == (1, 1, 0)
    assert rows_by_key(ready)["HS-C-1"]["email"] == "new@x.io"


def test_newer_identical_content_advances_the_source_time_so_older_data_stays_out(ready):
    target, spec = ready.target, ready.spec
    target.load(spec, [batch((1, T1, "a@x.io"))], run_id="r1")
    touched = target.load(spec, [batch((1, T3, "a@x.io"))], run_id="r2")  # CRM touched, content same
    assert (touched.updated, touched.unchanged) == (0, 1)
    row = rows_by_key(ready)["HS-C-1"]
    assert row["last_run_id"] == "r1" and row["source_modified_at"] == pd.Timestamp(T3)

    late = target.load(spec, [batch((1, T2, "in-between@x.io"))], run_id="r3")  # older than T3

    assert late.stale_skipped == 1 and rows_by_key(ready)["HS-C-1"]["email"] == "a@x.io"


def test_duplicates_within_a_load_keep_the_newest(ready):
    result = ready.target.load(
        ready.spec,
        [batch((1, T2, "newest@x.io"), (2, T1, "b@x.io")), batch((1, T1, "older@x.io"), (2, T1, "b@x.io"))],
        run_id="r1",
    )
    assert (result.inserted, result.updated, result.unchanged) == (2, 0, 0)
    assert rows_by_key(ready)["HS-C-1"]["email"] == "newest@x.io"


def _twin(erp, tmp_path):
    """A second, empty target of the same kind (its own SQLite file or PostgreSQL schema)."""
    if erp.kind == "sqlite":
        twin = SqliteErpTarget(str(tmp_path / "twin.db"))
        spec = erp.spec
    else:
        import psycopg

        schema = f"{erp.spec.target.db_schema}_twin"
        with psycopg.connect(erp.location, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE; CREATE SCHEMA "{schema}"')
        twin, spec = PostgresErpTarget(erp.location), make_spec(schema)
    twin.ensure_ready(spec)
    return twin, spec


def _content(rows: dict[str, dict]) -> dict[str, tuple]:
    """What a load decides per row; the load's own timestamps compared separately."""
    return {k: tuple(v for c, v in r.items() if c not in ("created_at", "updated_at", "deleted_at"))
            for k, r in rows.items()}


def test_a_first_load_inserts_directly_and_writes_what_the_merge_writes(ready, tmp_path):
    """An empty table takes a plain insert (no merge, no full-refresh delete); a table holding rows
    takes the merge. The same load writes the same rows either way."""
    batches = [batch((1, T2, "newest@x.io"), (2, T1, "b@x.io")), batch((1, T1, "older@x.io"), (3, T1, "c@x.io"))]
    archived = [("HS-C-3", None)]

    direct = ready.target.load(ready.spec, batches, run_id="r1", full_refresh=True, deleted_keys=archived,
                               watermark=Watermark(5, 0))

    assert (direct.inserted, direct.updated, direct.unchanged, direct.stale_skipped, direct.deleted) == (3, 0, 0, 0, 1)
    assert ready.target.read_watermark(ready.spec) == Watermark(5, 0)
    rows = rows_by_key(ready)
    assert rows["HS-C-1"]["email"] == "newest@x.io" and rows["HS-C-1"]["last_run_id"] == "r1"
    assert rows["HS-C-1"]["created_at"] == rows["HS-C-1"]["updated_at"] and rows["HS-C-1"]["active"]
    assert not rows["HS-C-3"]["active"]  # archived in the same run: inserted, then soft-deleted

    twin, spec = _twin(ready, tmp_path)
    twin.load(spec, [batch((9, T1, "other@x.io"))], run_id="r0")  # not empty: the merge runs
    merged = twin.load(spec, batches, run_id="r1", full_refresh=True, deleted_keys=archived, kept_keys=["HS-C-9"])
    assert (merged.inserted, merged.updated, merged.unchanged, merged.deleted) == (3, 0, 0, 1)
    twin_rows = {r["customer_number"]: r for r in twin.fetch_rows(spec).to_dict("records")}
    del twin_rows["HS-C-9"]
    assert _content(twin_rows) == _content(rows)


def test_soft_delete_marks_once_and_newer_data_reactivates(ready):
    target, spec = ready.target, ready.spec
    target.load(spec, [batch((1, T1, "a@x.io"), (2, T1, "b@x.io"))], run_id="r1")

    assert target.load(spec, [], run_id="r2", deleted_keys=["HS-C-1", "HS-C-404"]).deleted == 1
    assert target.load(spec, [], run_id="r3", deleted_keys=["HS-C-1"]).deleted == 0  # already inactive
    gone = rows_by_key(ready)["HS-C-1"]
    assert not gone["active"] and gone["deleted_at"] is not pd.NaT and gone["last_run_id"] == "r2"
    assert (target.count(spec), target.count(spec, active_only=False)) == (1, 2)

    same_age = target.load(spec, [batch((1, T1, "a@x.io"))], run_id="r4")
    assert same_age.stale_skipped == 1 and not rows_by_key(ready)["HS-C-1"]["active"]

    back = target.load(spec, [batch((1, T2, "a@x.io"))], run_id="r5")  # restored in the CRM

    assert back.updated == 1
    row = rows_by_key(ready)["HS-C-1"]
    assert row["active"] and pd.isna(row["deleted_at"]) and row["last_run_id"] == "r5"


def test_hard_delete_removes_rows(ready):
    erp = ready.with_delete_mode("hard")
    erp.target.load(erp.spec, [batch((1, T1, "a@x.io"), (2, T1, "b@x.io"))], run_id="r1")

    assert erp.target.load(erp.spec, [], run_id="r2", deleted_keys=["HS-C-2"]).deleted == 1

    assert list(rows_by_key(erp)) == ["HS-C-1"] and erp.target.count(erp.spec, active_only=False) == 1


def test_full_refresh_deletes_what_the_load_did_not_bring(ready):
    target, spec = ready.target, ready.spec
    target.load(spec, [batch((1, T1, "a@x.io"), (2, T1, "b@x.io"), (3, T1, "c@x.io"))], run_id="r1")

    result = target.load(spec, [batch((1, T1, "a@x.io")), batch((3, T2, "c2@x.io"))], run_id="r2", full_refresh=True)

    assert (result.unchanged, result.updated, result.deleted) == (1, 1, 1)
    assert {k: r["active"] for k, r in rows_by_key(ready).items()} == {"HS-C-1": True, "HS-C-2": False, "HS-C-3": True}


def test_full_refresh_spares_kept_keys_the_load_left_out(ready):
    """A record the source still has but this load leaves out (quarantined) is not a delete."""
    target, spec = ready.target, ready.spec
    target.load(spec, [batch((1, T1, "a@x.io"), (2, T1, "b@x.io"), (3, T1, "c@x.io"))], run_id="r1")

    result = target.load(spec, [batch((1, T1, "a@x.io"))], run_id="r2", full_refresh=True, kept_keys=["HS-C-2"])

    assert result.deleted == 1
    rows = rows_by_key(ready)
    assert {k: r["active"] for k, r in rows.items()} == {"HS-C-1": True, "HS-C-2": True, "HS-C-3": False}
    assert rows["HS-C-2"]["email"] == "b@x.io" and rows["HS-C-2"]["last_run_id"] == "r1"


def test_watermark_is_stored_with_the_load_and_never_moves_back(ready):
    target, spec = ready.target, ready.spec
    assert target.read_watermark(spec) is None
    target.load(spec, [batch((1, T1, "a@x.io"))], run_id="r1", watermark=Watermark(1_000, 7))
    target.load(spec, [], run_id="r2", watermark=Watermark(1_000, 6))
    target.load(spec, [], run_id="r3", watermark=Watermark(999, 99))
    assert target.read_watermark(spec) == Watermark(1_000, 7)

    target.load(spec, [], run_id="r4", watermark=Watermark(1_000, 8))

    assert target.read_watermark(spec) == Watermark(1_000, 8)


def test_a_failing_source_mid_load_leaves_everything_as_it_was(ready):
    target, spec = ready.target, ready.spec
    target.load(spec, [batch((1, T1, "a@x.io"))], run_id="r1", watermark=Watermark(1, 1))
    before = snapshot(ready)

    def batches():
        yield batch((1, T2, "changed@x.io"), (2, T2, "b@x.io"))
        raise ConnectionError("CRM went away")

    with pytest.raises(ConnectionError, match="CRM went away"):  # the source's error, not wrapped
        target.load(spec, batches(), run_id="r2", deleted_keys=["HS-C-1"], watermark=Watermark(9, 9),
                     full_refresh=True)

    assert_unchanged(ready, before)


def test_a_database_error_mid_load_rolls_back_and_is_retryable(ready):
    target, spec = ready.target, ready.spec
    target.load(spec, [batch((1, T1, "a@x.io"))], run_id="r1", watermark=Watermark(1, 1))
    before = snapshot(ready)
    keyless = batch((3, T2, "c@x.io"))
    keyless["customer_number"] = pd.array([None], dtype="str")

    with pytest.raises(TargetError, match="rolled back"):
        target.load(spec, [batch((2, T2, "b@x.io")), keyless], run_id="r2", watermark=Watermark(9, 9))

    assert_unchanged(ready, before)


def test_a_batch_that_does_not_fit_the_spec_names_the_column(ready):
    wrong = batch((1, T1, "a@x.io"))
    wrong["crm_id"] = ["not a number"]
    with pytest.raises(TargetConfigError, match="'crm_id' does not hold integer"):
        ready.target.load(ready.spec, [wrong], run_id="r1")
    with pytest.raises(TargetConfigError, match="no column 'row_hash'"):
        ready.target.load(ready.spec, [batch((1, T1, "a@x.io")).drop(columns="row_hash")], run_id="r1")


def test_dry_run_reports_counts_and_changes_nothing(ready):
    target, spec = ready.target, ready.spec
    target.load(spec, [batch((1, T1, "a@x.io"))], run_id="r1", watermark=Watermark(1, 1))
    before = snapshot(ready)

    result = target.load(spec, [batch((1, T2, "a2@x.io"), (2, T2, "b@x.io"))], run_id="r2",
                         deleted_keys=["HS-C-1"], watermark=Watermark(5, 5), dry_run=True)

    assert (result.inserted, result.updated, result.deleted) == (1, 1, 1)
    assert_unchanged(ready, before)


def test_key_checksum_matches_the_source_frame(ready):
    target, spec = ready.target, ready.spec
    source = batch((1, T1, "a@x.io"), (2, T1, "b@x.io"), (3, T1, "c@x.io"))
    target.load(spec, [source], run_id="r1")
    assert target.key_checksum(spec) == frame_key_checksum(source, "customer_number")

    target.load(spec, [], run_id="r2", deleted_keys=["HS-C-2"])

    assert target.key_checksum(spec) == frame_key_checksum(source.iloc[[0, 2]], "customer_number")
    assert target.key_checksum(spec) != frame_key_checksum(source, "customer_number")


def test_quarantine_is_kept_once_per_run_and_replayed_exactly_once_with_the_load(ready):
    target, spec = ready.target, ready.spec
    finding = {"record_key": "HS-C-9", "crm_id": "9", "expectation": "email_is_valid", "column_name": "email",
               "reason": "not an address", "raw_record": {"email": "nope", "when": pd.Timestamp(T1)}}
    assert target.quarantine(spec, [finding, {**finding, "column_name": None}], run_id="r1") == 2
    assert target.quarantine(spec, [finding], run_id="r1") == 0  # the task's retry
    parked = target.open_quarantine(spec)
    assert [(q["record_key"], q["column_name"]) for q in parked] == [("HS-C-9", "email"), ("HS-C-9", None)]
    assert parked[0]["raw_record"] == {"email": "nope", "when": "2024-03-01 10:00:00+00:00"}

    def failing():
        yield batch((9, T2, "fixed@x.io"))
        raise ConnectionError("CRM went away")

    with pytest.raises(ConnectionError):
        target.load(spec, failing(), run_id="replay", replayed_quarantine_ids=[parked[0]["id"]])
    assert len(target.open_quarantine(spec)) == 2  # the failed replay marked nothing

    target.load(spec, [batch((9, T2, "fixed@x.io"))], run_id="replay", replayed_quarantine_ids=[parked[0]["id"]])

    assert [q["id"] for q in target.open_quarantine(spec)] == [parked[1]["id"]]
    assert target.mark_replayed(spec, [parked[0]["id"], parked[1]["id"]], run_id="later") == 1


def test_ensure_ready_is_idempotent_and_concurrent_callers_agree(erp):
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def prepare():
        try:
            start.wait()
            erp.target.ensure_ready(erp.spec)
        except BaseException as exc:  # collected: the test thread asserts
            errors.append(exc)

    threads = [threading.Thread(target=prepare) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert errors == []
    erp.target.ensure_ready(erp.spec)
    assert erp.target.count(erp.spec) == 0 and erp.target.read_watermark(erp.spec) is None


def test_ensure_ready_names_a_missing_column(erp):
    erp.target.ensure_ready(erp.spec)
    other = erp.spec.model_copy(update={"mapping": {**erp.spec.mapping, "vat_id": erp.spec.mapping["email"]}})

    with pytest.raises(TargetConfigError, match=r"erp_customers exists but has no column vat_id"):
        erp.target.ensure_ready(other)


def test_connection_facts(erp):
    assert erp.target.test_connection() == (True, f"connected to {erp.kind}")
    facts = erp.target.describe()
    assert facts["kind"] == erp.kind and set(facts) == {"kind", "host", "port", "database", "path"}
