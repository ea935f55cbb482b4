"""Defects end to end: the flagship loads every customer with a valid key, nulls contact details
that do not normalise and lists each in conduit_defects with its raw value; a fix in the CRM
resolves the defect on the next incremental run (real sync DAG via dag.test(), the stand-in CRM
over HTTP, PostgreSQL). The defects table's SQL on PostgreSQL and SQLite."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from sync_helpers import CONTACTS, SEED, run_dag, run_ok, xcom

from conduit.pipeline import steps
from conduit.quality.defects import Defect
from conduit.standin.data import generate, iter_records
from conduit.targets.defects import read_defects, record_defects
from conduit.transforms.mapping import invalid_column, map_frame

pytestmark = pytest.mark.postgres

JUNK = {"junk_phones": 0.10, "unknown_countries": 0.03}
CHECKED = {"email": "email", "phone": "phone_e164", "country_code": "country_iso2"}


def seeded(spec, **junk) -> pd.DataFrame:
    """The stand-in's seeded contacts mapped by the spec, with each row's CRM id."""
    records = list(iter_records(generate(seed=SEED, contacts=CONTACTS, **junk).contacts))
    raw = steps.records_to_table(records, steps.raw_properties(spec)).to_pandas()
    return map_frame(raw, spec).assign(crm_id_text=raw["id"].astype(str))


def expected_defects(frame: pd.DataFrame) -> set[tuple[str, str, str, str, str]]:
    """(record key, CRM id, column, rule, raw value) of every value the transforms could not normalise."""
    return {(row.customer_number, row.crm_id_text, column, rule, row[invalid_column(column)])
            for column, rule in CHECKED.items()
            for _, row in frame[frame[invalid_column(column)].notna()].iterrows()}


def as_tuples(defects: list[dict]) -> set[tuple[str, str, str, str, str]]:
    return {(d["record_key"], d["crm_id"], d["column_name"], d["rule"], d["raw_value"]) for d in defects}


def test_junk_contact_details_load_as_null_with_every_defect_listed_and_a_fix_resolves_it(sync_env):
    crm, spec, target = sync_env.crm, sync_env.spec(), sync_env.target()
    crm.admin.reset(**JUNK)
    want = seeded(spec, **JUNK)
    expected = expected_defects(want)
    phones = {d for d in expected if d[2] == "phone"}
    assert len(phones) >= 60 and {d for d in expected if d[2] == "country_code"}  # 10% junk + what 3% unknown countries spoil

    first = run_ok(sync_env)

    gate = xcom(first, "quality_gate")
    assert (gate["checked"], gate["rejected"], gate["passed"]) == (600, 0, True)
    assert gate["failed_expectations"] == []
    assert gate["defects"]["phone_e164(phone)"]["count"] == len(phones)
    assert gate["defects_opened"] == len(expected)
    assert xcom(first, "load")["inserted"] == 600  # every customer with a valid key
    rows = target.fetch_rows(spec).set_index("customer_number").sort_index()
    want = want.set_index("customer_number").sort_index()
    assert rows["row_hash"].tolist() == want["row_hash"].tolist()  # what the spec maps, nulls included
    bad_phone_keys = [d[0] for d in phones]
    assert rows.loc[bad_phone_keys, "phone"].isna().all()
    assert rows.drop(bad_phone_keys)["phone"].dropna().str.fullmatch(r"\+[1-9][0-9]+").all()

    docs = xcom(first, "data_docs")
    site = "\n".join(p.read_text(errors="replace") for p in Path(docs["data_docs"]).parent.rglob("*.html"))
    assert "phone_e164(phone) [critical, defect]" in site and "conduit_invalid:phone" in site
    assert "n/a" in site  # examples of the raw values

    defects = read_defects(target, spec)
    assert as_tuples(defects) == expected  # every defect, with its raw value
    assert len(defects) == len(expected)
    assert {d["first_run_id"] for d in defects} == {first.run_id}
    assert all(d["resolved_at"] is None and d["first_seen_at"] == d["last_seen_at"] for d in defects)

    # the CRM gets fixed for one record, gets another bad value for another, a third is
    # touched without changing its bad phone, and a fourth is archived
    phone_only = sorted(d for d in phones if sum(e[0] == d[0] for e in expected) == 1)
    fixed, replaced, touched, archived = phone_only[:4]
    changed_ms = crm.admin.clock_ms() - 120_000  # inside the next incremental run's window
    crm.admin.modify(fixed[1], {"phone": "+49 30 1234567"}, lastmodifieddate_ms=changed_ms)
    crm.admin.modify(replaced[1], {"phone": "still no number"}, lastmodifieddate_ms=changed_ms)
    crm.admin.modify(touched[1], {"firstname": "Touched"}, lastmodifieddate_ms=changed_ms)
    crm.admin.archive(archived[1])

    second = run_ok(sync_env)

    assert xcom(second, "extract")["mode"] == "incremental"
    gate = xcom(second, "quality_gate")
    assert (gate["defects_opened"], gate["defects_seen_again"], gate["defects_resolved"]) == (1, 1, 3)
    assert target.fetch_rows(spec, keys=[fixed[0]]).iloc[0]["phone"] == "+49301234567"
    by_key = {}
    for d in read_defects(target, spec):
        if d["column_name"] == "phone":
            by_key.setdefault(d["record_key"], []).append(d)
    (done,) = by_key[fixed[0]]
    assert done["resolved_at"] is not None and done["resolved_by_run"] == second.run_id
    old, new = by_key[replaced[0]]
    assert (old["raw_value"], old["resolved_by_run"]) == (replaced[4], second.run_id)
    assert (new["raw_value"], new["resolved_at"], new["first_run_id"]) == ("still no number", None, second.run_id)
    (gone,) = by_key[archived[0]]  # the record left the CRM, the load deactivated it: its defect is over
    assert gone["resolved_by_run"] == second.run_id
    assert not target.fetch_rows(spec, keys=[archived[0]]).iloc[0]["active"]
    (again,) = by_key[touched[0]]
    assert again["resolved_at"] is None and again["last_run_id"] == second.run_id
    assert again["first_run_id"] == first.run_id and again["last_seen_at"] > again["first_seen_at"]
    untouched = [d for k, ds in by_key.items() if k not in (fixed[0], replaced[0], touched[0], archived[0]) for d in ds]
    assert untouched and all(d["last_run_id"] == first.run_id and d["resolved_at"] is None for d in untouched)

    # a record with an open defect is purged from the CRM (not archived: no run reads it again);
    # a full refresh deletes what it did not read, and with it the defect is over
    purged = untouched[0]
    crm.admin.delete(purged["crm_id"])

    third = run_ok(sync_env, conf={"full_refresh": True})

    assert xcom(third, "load")["deleted"] == 1 and not target.fetch_rows(spec, keys=[purged["record_key"]]).iloc[0]["active"]
    gate = xcom(third, "quality_gate")
    after = {d["id"]: d for d in read_defects(target, spec)}
    purged_defects = [d for d in after.values() if d["record_key"] == purged["record_key"]]
    assert purged_defects and all(d["resolved_by_run"] == third.run_id for d in purged_defects)
    still_open = [d for d in after.values() if d["resolved_at"] is None]
    assert still_open and all(d["last_run_id"] == third.run_id for d in still_open)  # read again, seen again
    assert gate["defects_resolved"] == len(purged_defects)


def test_a_broken_field_fails_the_run_loudly_before_anything_loads(sync_env, capsys):
    # a source that lost its phone numbers' country codes: far more than a few percent are junk
    sync_env.crm.admin.reset(junk_phones=0.5)

    dag_run, states = run_dag(sync_env)

    assert dag_run.state == "failed" and states["quality_gate"] == "failed", states
    assert sync_env.target().count(sync_env.spec(), active_only=False) == 0
    assert read_defects(sync_env.target(), sync_env.spec()) == []  # a failed gate records nothing
    out = capsys.readouterr().out
    assert "QualityGateFailed: defects exceed max_defect_ratio 25.00%: phone_e164(phone)" in out


# --- the table itself, on both databases ------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def erp(request, tmp_path):
    from conduit.specs.model import load_spec
    from conduit.targets import PostgresErpTarget, SqliteErpTarget

    spec = load_spec(Path(__file__).resolve().parents[2] / "include" / "syncs" / "crm_to_erp_customer_sync.yaml")
    if request.param == "sqlite":
        return SqliteErpTarget(tmp_path / "erp.db"), spec
    schema = request.getfixturevalue("pg_schema")
    spec = spec.model_copy(update={"target": spec.target.model_copy(update={"db_schema": schema})})
    return PostgresErpTarget(request.getfixturevalue("pg_server_dsn")), spec


def test_defects_open_repeat_and_resolve_in_the_table(erp):
    target, spec = erp
    found = [Defect("K1", "1", "phone", "phone_e164", "n/a", "r"), Defect("K2", "2", "phone", "phone_e164", "x", "r")]
    assert record_defects(target, spec, found, run_id="r1", clean_keys=lambda keys: keys).counts() == {
        "defects_opened": 2, "defects_seen_again": 0, "defects_resolved": 0}
    # a retried gate of the same run repeats nothing
    again = record_defects(target, spec, found, run_id="r1", clean_keys=lambda keys: keys)
    assert again.counts()["defects_seen_again"] == 2 and len(read_defects(target, spec)) == 2

    changes = record_defects(target, spec, [Defect("K2", "2", "phone", "phone_e164", "y", "r")], run_id="r2",
                             clean_keys=lambda keys: keys)
    assert changes.counts() == {"defects_opened": 1, "defects_seen_again": 0, "defects_resolved": 2}
    rows = read_defects(target, spec)
    assert [(r["record_key"], r["raw_value"], r["resolved_by_run"]) for r in rows] == [
        ("K1", "n/a", "r2"), ("K2", "x", "r2"), ("K2", "y", None)]
    assert all(r["resolved_at"] >= r["first_seen_at"] for r in rows[:2])
    assert [r["raw_value"] for r in read_defects(target, spec, open_only=True)] == ["y"]
