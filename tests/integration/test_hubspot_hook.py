"""HubSpotHook against the stand-in CRM over real HTTP: paging, retries, errors, the cursor."""

from __future__ import annotations

import json
import time

import pytest

from conduit.exceptions import CrmAuthError, CrmRequestError, CrmRetryableError
from conduit.hooks.hubspot import HubSpotHook
from conduit.pipeline.cursor import Window, id_ranges, iter_changed, iter_id_range, parse_ts_ms
from conduit.standin.testing import run_standin

PROPS = ["email", "firstname", "lastmodifieddate"]


@pytest.fixture(scope="module")
def crm():
    with run_standin(contacts=1200, seed=7) as handle:
        yield handle


@pytest.fixture
def hook(crm, monkeypatch):
    crm.admin.clear_faults()
    crm.admin.reset()
    return make_hook(crm, monkeypatch)


def make_hook(crm, monkeypatch, *, token=None, api_version="2026-09", conn_id="hubspot_test") -> HubSpotHook:
    conn = {"conn_type": "hubspot", "host": crm.base_url, "password": token or crm.token,
            "extra": {"api_version": api_version, "max_retries": 5, "backoff_max": 0.5}}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
    return HubSpotHook(hubspot_conn_id=conn_id)


def all_ids(pages) -> list[str]:
    return [r["id"] for page in pages for r in page]


@pytest.mark.parametrize("version", ["v3", "2026-09"])
def test_list_pages_reach_every_record_once(crm, monkeypatch, version):
    hook = make_hook(crm, monkeypatch, api_version=version)
    ids = all_ids(hook.iter_list_pages("contacts", PROPS, limit=100))
    assert len(ids) == len(set(ids)) == 1200
    assert hook.requests_sent == 12


def test_token_is_sent_as_bearer_and_not_as_extra_headers(hook):
    session = hook.session
    assert session.headers["Authorization"].startswith("Bearer ")
    assert "api_version" not in session.headers and "max_retries" not in session.headers


def test_401_fails_at_once_with_hubspot_message(crm, monkeypatch):
    hook = make_hook(crm, monkeypatch, token="wrong-token")
    with pytest.raises(CrmAuthError) as info:
        next(hook.iter_list_pages("contacts", PROPS))
    assert info.value.status == 401 and info.value.category == "INVALID_AUTHENTICATION"
    assert hook.requests_sent == 1 and hook.retries == 0  # no retry on bad credentials
    assert "wrong-token" not in str(info.value)


def test_other_4xx_fail_without_retry(hook):
    with pytest.raises(CrmRequestError) as info:
        hook.request("GET", hook.objects_path("contacts"), params={"limit": 500})
    assert info.value.status == 400 and hook.retries == 0


def test_429_storm_is_retried_honouring_retry_after(crm, hook):
    crm.admin.faults(rate_limit={"burst": 3, "retry_after_s": 1})
    started = time.monotonic()
    ids = all_ids(hook.iter_list_pages("contacts", PROPS, limit=100))
    assert len(set(ids)) == 1200
    assert hook.retries == 3
    assert time.monotonic() - started >= 3 * 1.0  # waited at least Retry-After each time
    assert crm.admin.stats()["sent"].get("429", 0) >= 3


def test_5xx_storm_is_retried(crm, hook):
    crm.admin.faults(server_errors={"every": 4, "status": 503})
    ids = all_ids(hook.iter_list_pages("contacts", PROPS, limit=100))
    assert len(set(ids)) == 1200 and hook.retries >= 3


def test_endless_5xx_raises_a_retryable_error(crm, hook):
    crm.admin.faults(server_errors={"burst": 100, "status": 502})
    with pytest.raises(CrmRetryableError, match="still failing after 5 retries"):
        next(hook.iter_list_pages("contacts", PROPS))
    assert hook.requests_sent == 6


def window_all(crm) -> Window:
    return Window(lower_ms=0, upper_ms=crm.admin.clock_ms() + 1)


def test_cursor_reads_every_record_once_with_ties_across_pages(crm, hook):
    # 450 records share one millisecond: more than two full search pages of ties
    ids = all_ids(hook.iter_list_pages("contacts", ["email"], limit=100))[:450]
    stamp = crm.admin.clock_ms() - 5_000
    crm.admin.bulk_modify(ids=ids, lastmodifieddate_ms=stamp)
    got = all_ids(iter_changed(lambda b: hook.search("contacts", b), window_all(crm),
                               cursor_property="lastmodifieddate", properties=PROPS, limit=200))
    assert len(got) == len(set(got)) == 1200


def test_cursor_reads_more_than_10000_changes(monkeypatch):
    with run_standin(contacts=10_500, seed=3) as big:
        hook = make_hook(big, monkeypatch, conn_id="hubspot_big")
        got = all_ids(iter_changed(lambda b: hook.search("contacts", b), window_all(big),
                                   cursor_property="lastmodifieddate", properties=["email"], limit=200))
    assert len(got) == len(set(got)) == 10_500


def test_cursor_respects_window_bounds(crm, hook):
    ids = all_ids(hook.iter_list_pages("contacts", ["email"], limit=100))
    now = crm.admin.clock_ms()
    crm.admin.bulk_modify(ids=ids[:10], lastmodifieddate_ms=now - 10_000)
    crm.admin.bulk_modify(ids=ids[10:15], lastmodifieddate_ms=now - 1_000)  # after the upper bound
    window = Window(lower_ms=now - 10_000, upper_ms=now - 5_000)
    got = [r for page in iter_changed(lambda b: hook.search("contacts", b), window,
                                      cursor_property="lastmodifieddate", properties=PROPS) for r in page]
    assert sorted(r["id"] for r in got) == sorted(ids[:10])
    assert all(window.lower_ms <= parse_ts_ms(r["properties"]["lastmodifieddate"]) < window.upper_ms for r in got)


def test_id_ranges_read_every_record_once_in_parallel_partitions(hook):
    ids = sorted(int(i) for i in all_ids(hook.iter_list_pages("contacts", ["email"], limit=100)))
    got = [r["id"] for lo, hi in id_ranges(ids[0], ids[-1], 3)
           for page in iter_id_range(lambda b: hook.search("contacts", b), lo, hi, properties=PROPS, limit=200)
           for r in page]
    assert sorted(int(i) for i in got) == ids


def test_records_named_by_webhooks_are_read_by_id_even_above_the_window(crm, hook, tmp_path):
    from pathlib import Path

    from conduit.pipeline.staging import RunStaging
    from conduit.pipeline.steps import extract_item, plan_extract
    from conduit.specs.model import load_spec

    spec = load_spec(Path(__file__).resolve().parents[2] / "include" / "syncs" / "crm_to_erp_customer_sync.yaml")
    record_id = all_ids(hook.iter_list_pages("contacts", ["email"], limit=100))[5]
    crm.admin.modify(record_id, {"firstname": "Fresh"})  # now: above a window that ends 60 s ago
    window = Window(lower_ms=0, upper_ms=crm.admin.clock_ms() - 60_000)
    items = plan_extract(hook, spec, window=window, watermark_ms=window.upper_ms, object_ids=[record_id])
    assert [i["kind"] for i in items] == ["changed", "ids", "archived"]
    staging = RunStaging(tmp_path)
    assert extract_item(hook, spec, staging, items[1])["rows"] == 1
    (frame,) = list(staging.read_frames("raw"))
    assert frame["id"].tolist() == [record_id] and frame["firstname"].tolist() == ["Fresh"]
