"""Issue 3, incremental sync exactly right: real DAG runs (or the operators' steps) against the
stand-in CRM over HTTP and the real PostgreSQL ERP, with the watermark kept in the ERP.

Each test compares the ERP with the CRM as it is now (read over HTTP with the list endpoint and
mapped by the spec), row by row and by row_hash."""

from __future__ import annotations

import pandas as pd
import pytest
from sync_helpers import (
    assert_erp_equals_crm,
    crm_hook,
    crm_ids,
    extract_and_transform,
    extract_summary,
    load,
    run_ok,
    settle,
    staged_ids,
    staging_dir,
    xcom,
)

from conduit.pipeline.cursor import parse_ts_ms
from conduit.sources.hubspot.hook import HubSpotHook

pytestmark = pytest.mark.postgres


def key(crm_id) -> str:
    return f"HS-C-{crm_id}"


def erp_row(env, crm_id):
    rows = env.target().fetch_rows(env.spec(), keys=[key(crm_id)])
    assert len(rows) == 1
    return rows.iloc[0]


def test_equal_timestamps_across_page_boundaries_are_each_updated_once(sync_env):
    """> 200 records share one millisecond and straddle search-page boundaries (a full range page
    cuts the group, then three tie pages): each is read and updated exactly once."""
    spec = sync_env.spec()
    run_ok(sync_env)
    crm = sync_env.crm
    ids = crm_ids(spec)
    tie = crm.admin.clock_ms() - 120_000  # inside the next run's window (after the lag, within the overlap)
    before, tied, after = ids[:130], ids[130:550], ids[550:]
    crm.admin.bulk_modify(ids=before, properties={"company": "Before Tie"}, lastmodifieddate_ms=tie - 5)
    crm.admin.bulk_modify(ids=tied, properties={"company": "Tie GmbH"}, lastmodifieddate_ms=tie)
    crm.admin.bulk_modify(ids=after, properties={"company": "After Tie"}, lastmodifieddate_ms=tie + 5)
    changed = len(before) + len(tied) + len(after)
    assert len(tied) > 2 * spec.source.search_page_size and changed == len(set(before + tied + after))

    dag_run = run_ok(sync_env)

    extract = extract_summary(dag_run)
    assert extract["mode"] == "incremental"
    assert extract["rows"] == changed  # every changed record read once: none lost, none twice
    loaded = xcom(dag_run, "load")
    assert (loaded["inserted"], loaded["updated"], loaded["unchanged"], loaded["deleted"]) == (0, changed, 0, 0)
    got = assert_erp_equals_crm(sync_env.target(), spec)
    assert (got["company_name"] == "Tie GmbH").sum() == len(tied)
    assert sync_env.target().read_watermark(spec).ts_ms == extract["watermark_ms"]


def test_more_than_10000_changes_since_the_watermark_are_all_loaded(sync_env):
    """10,500 records changed since the watermark: more than search's 10,000-result cap."""
    spec = sync_env.spec()
    run_ok(sync_env)  # the watermark (600 contacts loaded)
    crm = sync_env.crm
    crm.admin.reset(contacts=10_500)  # same seed: the first 600 exist in the ERP, 9,900 are new
    ids = crm_ids(spec)
    assert len(ids) == 10_500
    crm.admin.bulk_modify(ids=ids, properties={"company": "Ten Thousand Plus"},
                          lastmodifieddate_ms=crm.admin.clock_ms() - 120_000)

    dag_run = run_ok(sync_env)

    extract = extract_summary(dag_run)
    assert extract["mode"] == "incremental" and extract["rows"] == 10_500
    loaded = xcom(dag_run, "load")
    assert (loaded["inserted"], loaded["updated"], loaded["unchanged"]) == (9_900, 600, 0)
    got = assert_erp_equals_crm(sync_env.target(), spec)
    assert len(got) == 10_500 and (got["company_name"] == "Ten Thousand Plus").all()


class ModifiesWhilePaging(HubSpotHook):
    """The real hook (real HTTP); after the first non-empty search page it changes two records through the
    stand-in's admin API: one it has already read, one it has not read yet."""

    def __init__(self, crm, unread_id: str, **kwargs):
        super().__init__(**kwargs)
        self.crm, self.unread_id = crm, unread_id
        self.pages = 0
        self.changed: dict[str, int] = {}

    def search_page(self, object_type: str, body: dict):  # the extract's search call (column-wise pages)
        reply = super().search_page(object_type, body)
        if reply:
            self.pages += 1
        if self.pages == 1 and not self.changed:
            read_id = reply.ids[0]
            for record_id in (read_id, self.unread_id):
                changed = self.crm.admin.modify(record_id, {"firstname": "Paged"})
                self.changed[record_id] = parse_ts_ms(changed["properties"]["lastmodifieddate"])
        return reply


def test_record_modified_while_paging_is_not_lost_nor_duplicated(sync_env, tmp_path):
    sync_env.edit_spec(source__cursor__lag_seconds=1)
    spec = sync_env.spec()
    run_ok(sync_env)
    crm, target = sync_env.crm, sync_env.target()
    ids = crm_ids(spec)
    batch = ids[:500]
    start = crm.admin.clock_ms() - 60_000
    for group in range(10):  # 10 timestamps x 50 records: ranges, ties and several pages
        crm.admin.bulk_modify(ids=batch[group * 50:(group + 1) * 50], properties={"lastname": "Batch"},
                              lastmodifieddate_ms=start + group * 1000)
    unread = batch[-1]  # in the last group: read on a later page, if at all

    hook = ModifiesWhilePaging(crm, unread, hubspot_conn_id="hubspot_default")
    staging = staging_dir(tmp_path, "paged")
    summary = extract_and_transform(crm_hook(), target, spec, staging, search_hook=hook)
    assert hook.pages > 3 and len(hook.changed) == 2
    read_first = next(i for i in hook.changed if i != unread)
    assert all(ts >= summary["watermark_ms"] for ts in hook.changed.values())  # both left the run's window

    staged = staged_ids(staging)
    assert len(staged) == len(set(staged))  # nothing twice, although a read record moved mid-paging
    assert set(staged) == set(batch) - {unread}  # nothing skipped either; the moved-away one waits
    raw = {r["id"]: r for f in staging.read_frames("raw") for r in f.to_dict("records")}
    assert raw[read_first]["firstname"] != "Paged"  # this run holds the version it read
    result = load(target, spec, staging, summary, run_id="paged")
    assert (result.inserted, result.updated) == (0, 499)
    assert erp_row(sync_env, unread)["last_name"] != "Batch"  # not seen by this run

    settle(crm, spec)
    dag_run = run_ok(sync_env)  # the next run picks up the newer versions

    loaded = xcom(dag_run, "load")
    assert (loaded["inserted"], loaded["updated"], loaded["unchanged"]) == (0, 2, 498)
    assert_erp_equals_crm(target, spec)
    for record_id in hook.changed:
        assert erp_row(sync_env, record_id)["first_name"] == "Paged"
    assert erp_row(sync_env, unread)["last_name"] == "Batch"


def test_archived_records_are_soft_deleted_and_restored_ones_reactivated(sync_env):
    sync_env.edit_spec(source__cursor__lag_seconds=1)  # a restore is stamped "now"
    spec = sync_env.spec()
    run_ok(sync_env)
    crm, target = sync_env.crm, sync_env.target()
    gone, back = crm_ids(spec)[10:12], crm_ids(spec)[20:22]
    for record_id in gone + back:
        crm.admin.archive(record_id)

    dag_run = run_ok(sync_env)

    assert xcom(dag_run, "load")["deleted"] == 4
    deleted = target.fetch_rows(spec, keys=[key(i) for i in gone + back]).set_index("customer_number")
    assert not deleted["active"].astype(bool).any() and deleted["deleted_at"].notna().all()
    assert_erp_equals_crm(target, spec)
    assert target.count(spec) == 596 and target.count(spec, active_only=False) == 600

    for record_id in back:
        crm.admin.restore(record_id)
    settle(crm, spec)
    dag_run = run_ok(sync_env)

    loaded = xcom(dag_run, "load")
    assert (loaded["inserted"], loaded["updated"], loaded["deleted"]) == (0, 2, 0)
    rows = target.fetch_rows(spec, keys=[key(i) for i in gone + back]).set_index("customer_number")
    for record_id in back:
        assert bool(rows.loc[key(record_id), "active"]) and pd.isna(rows.loc[key(record_id), "deleted_at"])
    for record_id in gone:  # still archived: stays deleted, with its first deletion time
        assert not bool(rows.loc[key(record_id), "active"])
        assert rows.loc[key(record_id), "deleted_at"] == deleted.loc[key(record_id), "deleted_at"]
    assert_erp_equals_crm(target, spec)
    assert target.count(spec) == 598


def test_search_index_lag_inside_the_overlap_window_is_caught_by_the_next_run(sync_env):
    sync_env.edit_spec(source__cursor__overlap_seconds=300)
    spec = sync_env.spec()
    run_ok(sync_env)
    crm, target = sync_env.crm, sync_env.target()
    late = crm_ids(spec)[42]
    changed = crm.admin.modify(late, {"firstname": "Indexed Late"},
                               lastmodifieddate_ms=crm.admin.clock_ms() - 90_000)
    late_ms = parse_ts_ms(changed["properties"]["lastmodifieddate"])
    crm.admin.faults(search_lag_ms=600_000)  # the search index has not caught up with the change

    dag_run = run_ok(sync_env)

    assert extract_summary(dag_run)["rows"] == 0  # inside the window, but invisible to search
    assert erp_row(sync_env, late)["first_name"] != "Indexed Late"
    watermark = target.read_watermark(spec).ts_ms
    assert late_ms < watermark  # the watermark moved past it: only the overlap can bring it back
    assert late_ms >= watermark - 300_000

    crm.admin.clear_faults()  # the index caught up
    dag_run = run_ok(sync_env)

    extract = extract_summary(dag_run)
    assert extract["window"][0] <= late_ms < extract["window"][1]
    assert extract["rows"] == 1
    assert xcom(dag_run, "load")["updated"] == 1
    assert erp_row(sync_env, late)["first_name"] == "Indexed Late"
    assert_erp_equals_crm(target, spec)


def sent(crm, prefix: str) -> int:
    return sum(n for status, n in crm.admin.stats()["sent"].items() if str(status).startswith(prefix))


def test_429_and_5xx_storms_still_give_the_exact_erp(sync_env):
    spec = sync_env.spec()
    crm, target = sync_env.crm, sync_env.target()
    storm = {"rate_limit": {"burst": 2, "every": 6, "retry_after_s": 1}, "server_errors": {"every": 4}}
    crm.admin.faults(**storm)

    dag_run = run_ok(sync_env)  # full extract through the storm
    assert all(ti.try_number == 1 for ti in dag_run.get_task_instances())  # the hook retried, not Airflow
    assert extract_summary(dag_run)["retries"] >= 3 and xcom(dag_run, "load")["inserted"] == 600
    assert sent(crm, "429") >= 2 and sent(crm, "5") >= 1

    ids = crm_ids(spec, crm_hook())
    before_429, before_5xx = sent(crm, "429"), sent(crm, "5")
    crm.admin.bulk_modify(ids=ids[:5], properties={"phone": "+49 30 1234567"},
                          lastmodifieddate_ms=crm.admin.clock_ms() - 120_000)
    crm.admin.archive(ids[5])
    crm.admin.faults(**storm)  # a fresh storm for the incremental run
    dag_run = run_ok(sync_env)

    assert all(ti.try_number == 1 for ti in dag_run.get_task_instances())
    extract = extract_summary(dag_run)
    assert extract["mode"] == "incremental" and extract["retries"] >= 2 and extract["rows"] == 5
    loaded = xcom(dag_run, "load")
    assert (loaded["updated"], loaded["deleted"]) == (5, 1)
    assert sent(crm, "429") - before_429 >= 2 and sent(crm, "5") - before_5xx >= 1
    crm.admin.clear_faults()
    assert_erp_equals_crm(target, spec)
