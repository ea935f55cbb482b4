"""HubSpotHook and HubSpotSource against the stand-in CRM over real HTTP: paging, retries, errors,
the cursor, the extract's work items."""

from __future__ import annotations

import json
import time

import pytest

from conduit.exceptions import CrmAuthError, CrmRequestError, CrmRetryableError
from conduit.pipeline.cursor import Window, id_ranges, parse_ts_ms
from conduit.sources.hubspot.cursor import iter_changed, iter_id_range
from conduit.sources.hubspot.hook import HubSpotHook
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


@pytest.mark.parametrize(("status", "retry_after_s", "min_wait_s"), [(423, None, 2.0), (477, 1, 1.0), (524, None, 0.0)])
def test_hubspots_other_try_again_answers_are_retried(crm, hook, status, retry_after_s, min_wait_s):
    """423 Locked (wait at least 2 s), 477 migration in progress (its Retry-After), 524: retried,
    not a failed task (contract §1.9)."""
    crm.admin.faults(server_errors={"burst": 1, "status": status, "retry_after_s": retry_after_s})
    started = time.monotonic()
    ids = all_ids(hook.iter_list_pages("contacts", PROPS, limit=100))
    assert len(set(ids)) == 1200 and hook.retries == 1
    assert time.monotonic() - started >= min_wait_s
    assert crm.admin.stats()["sent"].get(str(status)) == 1


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

    from conduit.pipeline.run_plan import RunPlan
    from conduit.pipeline.staging import RunStaging
    from conduit.pipeline.steps import extract_item, plan_extract
    from conduit.sources.hubspot.source import HubSpotSource
    from conduit.specs.model import load_spec

    spec = load_spec(Path(__file__).resolve().parents[2] / "include" / "syncs" / "crm_to_erp_customer_sync.yaml")
    source = HubSpotSource(spec.source, hook=hook)
    record_id = all_ids(hook.iter_list_pages("contacts", ["email"], limit=100))[5]
    crm.admin.modify(record_id, {"firstname": "Fresh"})  # now: above a window that ends 60 s ago
    window = Window(lower_ms=0, upper_ms=crm.admin.clock_ms() - 60_000)
    items = plan_extract(source, RunPlan(window, window.upper_ms), object_ids=[record_id])
    assert [i["kind"] for i in items] == ["changed", "ids", "archived"]
    staging = RunStaging(tmp_path)
    assert extract_item(source, staging, items[1])["rows"] == 1
    (frame,) = list(staging.read_frames("raw"))
    assert frame["id"].tolist() == [record_id] and frame["firstname"].tolist() == ["Fresh"]


# --- column-wise pages (the extract's calls) ------------------------------------------------------


def as_rows(records) -> list[tuple]:
    return [(r["id"], *(r["properties"].get(p) for p in PROPS)) for r in records]


def test_search_page_holds_what_search_returns(hook):
    body = {"filterGroups": [{"filters": [{"propertyName": "hs_object_id", "operator": "GT", "value": "0"}]}],
            "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}], "properties": PROPS, "limit": 200}
    plain, page = hook.search("contacts", body), hook.search_page("contacts", body)
    assert as_rows(page) == as_rows(plain["results"]) and len(page) == 200
    assert page.total == plain["total"] == 1200 and page.after == plain["paging"]["next"]["after"]
    assert hook.requests_sent == 2


def test_list_record_pages_hold_what_list_pages_return(hook):
    plain = [r for page in hook.iter_list_pages("contacts", PROPS, limit=100) for r in page]
    pages = list(hook.iter_list_record_pages("contacts", PROPS, limit=100))
    assert len(pages) == 12 and as_rows(r for page in pages for r in page) == as_rows(plain)
    assert pages[-1].after is None and hook.requests_sent == 24


def test_batch_read_page_leaves_out_ids_the_crm_does_not_have(hook):
    ids = all_ids(hook.iter_list_pages("contacts", ["email"], limit=100))[:3]
    page = hook.batch_read_page("contacts", [*ids, "999999999"], PROPS)  # a 207 with an error for the last id
    assert page.ids == ids and as_rows(page) == as_rows(hook.batch_read("contacts", ids, PROPS))


def test_429_on_search_pages_is_retried_honouring_retry_after(crm, hook):
    crm.admin.faults(rate_limit={"burst": 2, "retry_after_s": 1})
    started = time.monotonic()
    got = [i for lo, hi in id_ranges(1, 10**7, 2)
           for page in iter_id_range(lambda b: hook.search_page("contacts", b), lo, hi, properties=PROPS)
           for i in page.ids]
    assert len(got) == len(set(got)) == 1200 and hook.retries == 2
    assert time.monotonic() - started >= 2 * 1.0


def test_the_environment_is_read_once_and_its_proxy_applies(crm, monkeypatch):
    for name in ("NO_PROXY", "no_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    direct = make_hook(crm, monkeypatch)
    assert direct.session.trust_env is False
    assert len(next(direct.iter_list_record_pages("contacts", PROPS))) == 100

    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # the environment's proxy (nothing listens there)
    proxied = make_hook(crm, monkeypatch, conn_id="hubspot_proxied")
    proxied._max_retries, proxied._backoff_max = 1, 0.01
    with pytest.raises(CrmRetryableError, match="still failing after 1 retries"):
        proxied.search_page("contacts", {"properties": PROPS, "limit": 1})
    assert proxied.requests_sent == 2


def test_network_errors_are_retried_then_name_the_request(monkeypatch):
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    conn = {"conn_type": "hubspot", "host": f"http://127.0.0.1:{port}", "password": "t",
            "extra": {"api_version": "v3", "max_retries": 2, "backoff_max": 0.01}}
    monkeypatch.setenv("AIRFLOW_CONN_HUBSPOT_DOWN", json.dumps(conn))
    hook = HubSpotHook(hubspot_conn_id="hubspot_down")
    with pytest.raises(CrmRetryableError, match=r"HubSpot POST crm/v3/objects/contacts/search still failing after 2"):
        hook.search_page("contacts", {"properties": PROPS, "limit": 1})
    assert hook.requests_sent == 3 and hook.retries == 2


def test_a_body_off_the_contract_fails_naming_the_request(hook):
    with pytest.raises(CrmRequestError, match=r"GET http://\S+/_admin/docs answered 200: unreadable response body"):
        hook.request("GET", "_admin/docs", decode=hook_decoder())
    assert hook.retries == 0


def hook_decoder():
    from conduit.sources.hubspot.pages import page_decoder

    return page_decoder(tuple(PROPS)).decode


@pytest.mark.parametrize("parallelism", [1, 3])
def test_extract_items_stage_exactly_the_crms_records(hook, tmp_path, parallelism):
    from pathlib import Path

    from conduit.pipeline.run_plan import RunPlan
    from conduit.pipeline.staging import RunStaging
    from conduit.pipeline.steps import extract_item, plan_extract, raw_properties, records_to_table
    from conduit.sources.hubspot.source import HubSpotSource
    from conduit.specs.model import load_spec

    spec = load_spec(Path(__file__).resolve().parents[2] / "include" / "syncs" / "crm_to_erp_customer_sync.yaml")
    source = HubSpotSource(spec.source, hook=hook)
    props = raw_properties(spec)
    crm_table = records_to_table([r for page in hook.iter_list_pages("contacts", props, limit=100) for r in page],
                                 props)
    items = plan_extract(source, RunPlan(None, 0), parallelism=parallelism)
    assert [i["kind"] for i in items] == ["all"] * (parallelism == 1) + ["range"] * (parallelism > 1) * 3 + ["archived"]
    staging = RunStaging(tmp_path)
    results = [extract_item(source, staging, item) for item in items]
    assert sum(r["rows"] for r in results) == 1200
    import pyarrow as pa

    staged = pa.concat_tables([pa.Table.from_pandas(f, preserve_index=False) for f in staging.read_frames("raw")])
    assert staged.schema.names == crm_table.schema.names
    assert sorted(staged.to_pylist(), key=lambda r: int(r["id"])) == crm_table.to_pylist()


def test_a_redirect_is_followed_by_the_session(hook):
    # the stand-in answers a trailing slash with a 307 to the path without it
    body = hook.request("GET", hook.objects_path("contacts") + "/", params={"limit": 3, "properties": "email"})
    assert len(body["results"]) == 3 and hook.requests_sent == 1


def test_a_spec_too_wide_for_one_search_body_is_still_read_every_way(crm, hook):
    """HubSpot refuses a search body over 3,000 characters with a 400 (contract §1.5), and the body
    names every property the spec reads: a wide spec must still read its window, its id ranges and
    the reconciliation's question (searching ids, reading the properties by id), not fail every run."""
    from conduit.sources.hubspot.source import HubSpotSource
    from conduit.specs.model import HubSpotSource as SourceSpec

    wide = [f"customer_master_custom_property_{i:03d}" for i in range(80)]
    config = SourceSpec(type="hubspot", properties=["email", "lastmodifieddate", *wide])
    source = HubSpotSource(config, hook=hook)
    live = all_ids(hook.iter_list_pages("contacts", ["email"], limit=100))
    tagged = live[::97]
    stamp = crm.admin.clock_ms() - 5_000
    for record_id in tagged:
        crm.admin.modify(record_id, {wide[-1]: f"wide-{record_id}"}, lastmodifieddate_ms=stamp)
    window = window_all(crm)

    def read(item) -> dict[str, dict]:
        records = [r for page in source.read(item) for r in page]
        assert len(records) == len({r["id"] for r in records})  # each record once
        return {r["id"]: r["properties"] for r in records}

    changed = read({"kind": "changed", "window": [window.lower_ms, window.upper_ms]})
    assert sorted(changed, key=int) == sorted(live, key=int)
    assert {i: changed[i][wide[-1]] for i in tagged} == {i: f"wide-{i}" for i in tagged}
    ranges = [i for i in source.plan(None, parallelism=3) if i["kind"] == "range"]
    by_range = {k: v for item in ranges for k, v in read(item).items()}
    assert sorted(by_range, key=int) == sorted(live, key=int) and by_range[tagged[0]][wide[-1]] == f"wide-{tagged[0]}"
    late = source.modified_since_created_before(stamp)  # created before, modified at the bound
    assert {r["id"] for r in late} >= set(tagged) and all(r["properties"][wide[-1]] for r in late if r["id"] in tagged)


def test_a_429_without_retry_after_waits_for_its_rolling_window(monkeypatch):
    """HubSpot does not promise Retry-After on a 429 (contract §1.8). A TEN_SECONDLY_ROLLING 429
    without it waits for the rolling window to pass, not only the jittered backoff, whose retries
    (here at most 0.25 + 0.5 + 1 s) run out long before the 10 s window frees a slot."""
    with run_standin(contacts=50, seed=2) as crm:
        crm.admin.enforce_rate_limits(interval_max=3, interval_ms=10_000, retry_after=False)
        conn = {"conn_type": "hubspot", "host": crm.base_url, "password": crm.token,
                "extra": {"api_version": "2026-09", "max_retries": 3}}
        monkeypatch.setenv("AIRFLOW_CONN_HUBSPOT_NO_RETRY_AFTER", json.dumps(conn))
        hook = HubSpotHook(hubspot_conn_id="hubspot_no_retry_after")
        started = time.monotonic()
        pages = [hook.request("GET", hook.objects_path("contacts"), params={"limit": 1}) for _ in range(4)]
        elapsed = time.monotonic() - started
        refused = crm.admin.rate_limits()["refused"]
    assert all(len(page["results"]) == 1 for page in pages)
    assert refused.get("TEN_SECONDLY_ROLLING", 0) >= 1 and hook.retries >= 1
    assert elapsed < 25, elapsed  # one wait of about the window, not a retry loop


@pytest.mark.parametrize("parallelism", [1, 3])
def test_a_budgeted_full_read_survives_a_record_repeated_across_list_pages(crm, monkeypatch, parallelism):
    """With a budget (what HubSpot itself always gets) a full read lists the low ids through
    ``take_id_range``. A list page that starts with the previous page's last record again (the
    stand-in's ``repeat_record``) is a duplicate, not ids out of order: it is read once, as the
    unbudgeted full read (which lists everything) survives it, instead of failing the extract."""
    from pathlib import Path

    from conduit.sources.hubspot.source import HubSpotSource
    from conduit.specs.model import load_spec

    crm.admin.clear_faults()
    crm.admin.reset()
    conn = {"conn_type": "hubspot", "host": crm.base_url, "password": crm.token,
            "extra": {"api_version": "2026-09", "max_retries": 5, "backoff_max": 0.5,
                      "rate_limit_interval_max": 100_000, "rate_limit_daily_max": 10_000_000}}
    monkeypatch.setenv("AIRFLOW_CONN_HUBSPOT_BUDGETED", json.dumps(conn))
    hook = HubSpotHook(hubspot_conn_id="hubspot_budgeted")
    spec = load_spec(Path(__file__).resolve().parents[2] / "include" / "syncs" / "crm_to_erp_customer_sync.yaml")
    source = HubSpotSource(spec.source, hook=hook)
    live = {r["id"] for page in hook.iter_list_pages("contacts", ["email"], limit=100) for r in page}
    items = source.plan(None, parallelism=parallelism)
    assert any(i.get("via") == "list" or "boundary" in i for i in items)  # the list endpoint reads some ids
    crm.admin.faults(body=[{"kind": "repeat_record", "every": 2}])
    try:
        read = [(item, [i for page in source.read(item) for i in page.ids]) for item in items]
    finally:
        crm.admin.clear_faults()
    assert {i for _, ids in read for i in ids} == live
    for listed in [ids for item, ids in read if item.get("via") == "list"]:
        assert len(listed) == len(set(listed))  # the repeated record is read once
