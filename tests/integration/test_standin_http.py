"""The stand-in CRM over real HTTP: a real server process started by ``run_standin``."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections import Counter

import pytest
import requests

from conduit.standin.data import CONTACT_COLUMNS, generate, iter_records
from conduit.standin.testing import run_standin
from conduit.webhooks.signature import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_v3

SEED, CONTACTS, COMPANIES = 11, 2000, 30
V3 = "/crm/v3/objects/contacts"
DATED = "/crm/objects/2026-09/contacts"


@pytest.fixture(scope="module")
def crm():
    with run_standin(seed=SEED, contacts=CONTACTS, companies=COMPANIES) as handle:
        yield handle


@pytest.fixture(autouse=True)
def clean(crm):
    yield
    crm.admin.clear_faults()
    crm.admin.unsubscribe_webhooks()
    crm.admin.reset()


@pytest.fixture(scope="module")
def seeded():
    return generate(seed=SEED, contacts=CONTACTS, companies=COMPANIES)


@pytest.fixture
def api(crm):
    session = requests.Session()
    session.headers.update(crm.auth_headers)
    return session


def _search(api, crm, body, path=V3):
    return api.post(f"{crm.base_url}{path}/search", json=body)


def _window(since_ms: int) -> dict:
    return {"filterGroups": [{"filters": [{"propertyName": "lastmodifieddate", "operator": "GTE",
                                           "value": str(since_ms)}]}],
            "sorts": [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}], "limit": 100}


def test_missing_or_wrong_token_gets_hubspots_401_body(crm):
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        reply = requests.get(f"{crm.base_url}{V3}", headers=headers)
        assert reply.status_code == 401
        body = reply.json()
        assert body["status"] == "error" and body["category"] == "INVALID_AUTHENTICATION"
        assert body["correlationId"] and body["message"]


def test_listing_pages_to_the_end_and_returns_the_seeded_data(crm, api, seeded):
    params = {"limit": 100, "properties": list(CONTACT_COLUMNS[:4])}  # repeated parameters ...
    params_csv = ",".join(CONTACT_COLUMNS[4:])  # ... and a comma list, together
    records, pages = [], 0
    while True:
        reply = api.get(f"{crm.base_url}{V3}", params={**params, "properties": params["properties"] + [params_csv]})
        assert reply.status_code == 200
        assert reply.headers["X-HubSpot-RateLimit-Max"] and reply.headers["X-HubSpot-RateLimit-Daily-Remaining"]
        body = reply.json()
        records += body["results"]
        pages += 1
        if "paging" not in body:
            break
        after = body["paging"]["next"]["after"]
        assert not after.isdigit() and "after=" in body["paging"]["next"]["link"]
        params["after"] = after
    assert pages == CONTACTS // 100
    expected = list(iter_records(seeded.contacts))
    assert [r["id"] for r in records] == [r["id"] for r in expected]
    assert [r["properties"] for r in records] == [r["properties"] for r in expected]
    assert all(r["archived"] is False and r["updatedAt"] == r["properties"]["lastmodifieddate"] for r in records)


def test_a_list_limit_over_100_is_a_validation_error(crm, api):
    reply = api.get(f"{crm.base_url}{V3}", params={"limit": 101})
    assert reply.status_code == 400 and reply.json()["category"] == "VALIDATION_ERROR"


def test_both_path_families_give_identical_bodies(crm, api, seeded):
    record_id = str(seeded.contacts.ids[3])
    for path, method, payload in [
        ("?limit=5&properties=email,phone", "GET", None),
        (f"/{record_id}?properties=email", "GET", None),
        ("/search", "POST", {**_window(0), "limit": 5}),
        ("/batch/read", "POST", {"inputs": [{"id": record_id}], "properties": ["email"]}),
    ]:
        old, new = (api.request(method, f"{crm.base_url}{base}{path}", json=payload).json() for base in (V3, DATED))
        for body in (old, new):
            body.pop("startedAt", None), body.pop("completedAt", None)
            body.get("paging", {}).get("next", {}).pop("link", None)
        assert old == new


def test_get_by_id_or_id_property_and_404_for_unknown_ids(crm, api, seeded):
    email = seeded.contacts.columns["email"][7]
    by_email = api.get(f"{crm.base_url}{V3}/{email.strip()}", params={"idProperty": "email"})
    assert by_email.status_code == 200 and by_email.json()["id"] == str(seeded.contacts.ids[7])
    missing = api.get(f"{crm.base_url}{V3}/999999999")
    assert missing.status_code == 404 and missing.json()["category"] == "OBJECT_NOT_FOUND"


def test_batch_read_reports_missing_ids(crm, api, seeded):
    known = str(seeded.contacts.ids[0])
    reply = api.post(f"{crm.base_url}{V3}/batch/read", json={"inputs": [{"id": known}, {"id": "42"}]})
    body = reply.json()
    assert reply.status_code == 207 and body["status"] == "COMPLETE"
    assert [r["id"] for r in body["results"]] == [known]
    assert body["numErrors"] == 1 and body["errors"][0]["context"]["ids"] == ["42"]
    too_many = api.post(f"{crm.base_url}{V3}/batch/read", json={"inputs": [{"id": known}] * 101})
    assert too_many.status_code == 400


def test_search_ties_come_back_out_of_id_order_and_drain_by_id(crm, api, seeded):
    ms, size = Counter(seeded.contacts.modified_ms).most_common(1)[0]
    assert size > 20
    tie = {"filterGroups": [{"filters": [{"propertyName": "lastmodifieddate", "operator": "EQ", "value": str(ms)}]}],
           "sorts": [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}], "limit": 200}
    body = _search(api, crm, tie).json()
    ids = [int(r["id"]) for r in body["results"]]
    assert body["total"] == size == len(ids) and ids != sorted(ids)

    drained, last_id = [], 0
    while True:
        page = _search(api, crm, {"filterGroups": [{"filters": [
            tie["filterGroups"][0]["filters"][0],
            {"propertyName": "hs_object_id", "operator": "GT", "value": str(last_id)}]}],
            "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}], "limit": 7}).json()["results"]
        if not page:
            break
        drained += [int(r["id"]) for r in page]
        last_id = drained[-1]
    assert drained == sorted(ids)


def test_search_refuses_to_page_past_ten_thousand(crm, api):
    reply = _search(api, crm, {**_window(0), "after": "9900", "limit": 200})
    assert reply.status_code == 400 and reply.json()["category"] == "VALIDATION_ERROR"
    assert _search(api, crm, {**_window(0), "after": "1900", "limit": 200}).json()["results"]


def test_archived_listing_gdpr_delete_and_search(crm, api, seeded):
    ids = [str(i) for i in seeded.contacts.ids[10:13]]
    crm.admin.archive(ids[0])
    crm.admin.archive(ids[1])
    crm.admin.delete(ids[2])
    archived = api.get(f"{crm.base_url}{V3}", params={"archived": "true", "limit": 100}).json()
    assert [r["id"] for r in archived["results"]] == ids[:2] and "paging" not in archived
    assert all(r["archived"] is True and r["archivedAt"] for r in archived["results"])
    assert _search(api, crm, _window(0)).json()["total"] == CONTACTS - 3
    assert api.get(f"{crm.base_url}{V3}/{ids[0]}").status_code == 404
    assert api.get(f"{crm.base_url}{V3}/{ids[0]}", params={"archived": "true"}).status_code == 200
    assert api.get(f"{crm.base_url}{V3}/{ids[2]}", params={"archived": "true"}).status_code == 404
    crm.admin.restore(ids[0])
    assert api.get(f"{crm.base_url}{V3}/{ids[0]}").status_code == 200


def test_rate_limit_fault_sends_429_with_retry_after_and_policy(crm, api):
    crm.admin.faults(rate_limit={"burst": 2, "retry_after_s": 3})
    listed = api.get(f"{crm.base_url}{V3}")
    searched = _search(api, crm, _window(0))
    for reply, policy in ((listed, "TEN_SECONDLY_ROLLING"), (searched, "SECONDLY")):
        assert reply.status_code == 429 and reply.headers["Retry-After"] == "3"
        body = reply.json()
        assert body["policyName"] == policy and body["errorType"] == "RATE_LIMIT"
        assert body["category"] == "RATE_LIMITS" and body["correlationId"]
    assert api.get(f"{crm.base_url}{V3}").status_code == 200
    assert crm.admin.stats()["sent"]["429"] == 2


def test_a_429_may_come_without_retry_after_as_hubspot_does_not_promise_one(crm, api):
    crm.admin.faults(rate_limit={"burst": 1, "retry_after_s": None})
    reply = api.get(f"{crm.base_url}{V3}")
    assert reply.status_code == 429 and "Retry-After" not in reply.headers
    assert reply.json()["policyName"] == "TEN_SECONDLY_ROLLING"
    crm.admin.clear_faults()
    try:
        crm.admin.enforce_rate_limits(interval_max=1, interval_ms=60_000, retry_after=False)
        assert api.get(f"{crm.base_url}{V3}").status_code == 200
        refused = api.get(f"{crm.base_url}{V3}")
        assert refused.status_code == 429 and "Retry-After" not in refused.headers
        assert refused.headers["X-HubSpot-RateLimit-Remaining"] == "0"
    finally:
        crm.admin._call("PUT", "/rate_limits", {"enforce": False})


def test_server_error_fault_then_recovery(crm, api):
    crm.admin.faults(server_errors={"burst": 3})
    assert crm.admin.clock_ms() > 0  # admin calls are never faulted
    statuses = [api.get(f"{crm.base_url}{V3}").status_code for _ in range(4)]
    assert statuses == [500, 502, 503, 200]


def test_search_index_lag_hides_fresh_changes_from_search_only(crm, api, seeded):
    record_id = str(seeded.contacts.ids[20])
    crm.admin.faults(search_lag_ms=1500)
    before = crm.admin.clock_ms()
    crm.admin.modify(record_id, {"lifecyclestage": "customer"})
    got = api.get(f"{crm.base_url}{V3}/{record_id}", params={"properties": "lifecyclestage"}).json()
    assert got["properties"]["lifecyclestage"] == "customer"
    assert _search(api, crm, _window(before)).json()["total"] == 0
    time.sleep(1.6)
    found = _search(api, crm, _window(before)).json()
    assert [r["id"] for r in found["results"]] == [record_id]


def test_admin_modify_bumps_lastmodifieddate_now_or_exactly(crm, api, seeded):
    record_id = str(seeded.contacts.ids[30])
    before = crm.admin.clock_ms()
    crm.admin.modify(record_id, {"phone": "+49 30 1234567"})
    after = crm.admin.clock_ms()
    found = _search(api, crm, _window(before)).json()["results"]
    assert [r["id"] for r in found] == [record_id]
    crm.admin.modify(record_id, {}, lastmodifieddate_ms=1_700_000_000_123)
    got = api.get(f"{crm.base_url}{V3}/{record_id}").json()
    assert got["properties"]["lastmodifieddate"] == "2023-11-14T22:13:20.123Z" == got["updatedAt"]
    assert before <= after


def test_equal_timestamps_fault_puts_changes_in_one_millisecond(crm, api, seeded):
    crm.admin.faults(equal_timestamps=True)
    stamps = {crm.admin.modify(str(seeded.contacts.ids[i]), {"company": f"Co {i}"})["updatedAt"] for i in range(5)}
    stamps.add(crm.admin.create({"firstname": "Ann", "lastname": "Lee"})["updatedAt"])
    assert len(stamps) == 1


class _Receiver(http.server.BaseHTTPRequestHandler):
    received: list[tuple[str, dict, bytes]] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_webhooks_are_delivered_signed_with_v3(crm):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hooks/hubspot"
    try:
        crm.admin.subscribe_webhooks(url, "s3cret")
        created = crm.admin.create({"firstname": "Web", "lastname": "Hook", "email": "web.hook@example.com"})
        crm.admin.modify(created["id"], {"phone": "+1 415-555-0100"})
        crm.admin.archive(created["id"])
        deadline = time.monotonic() + 10
        events = []
        while time.monotonic() < deadline and len(events) < 3:
            time.sleep(0.05)
            events = [event for _, _, body in _Receiver.received for event in json.loads(body)]
        for _, headers, body in _Receiver.received:
            assert verify_v3("s3cret", "POST", url, body, headers[SIGNATURE_HEADER], headers[TIMESTAMP_HEADER]) is None
        assert [e["subscriptionType"] for e in events] == ["contact.creation", "contact.propertyChange",
                                                           "contact.deletion"]
        assert {e["objectId"] for e in events} == {int(created["id"])}
        assert events[1]["propertyName"] == "phone" and events[1]["propertyValue"] == "+1 415-555-0100"
        assert all({"eventId", "subscriptionId", "portalId", "occurredAt", "attemptNumber", "changeSource"} <= set(e)
                   for e in events)
        assert crm.admin.stats()["webhooks"]["events_delivered"] == 3
    finally:
        server.shutdown()
