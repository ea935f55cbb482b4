"""The HubSpot account's request budget (both backends: in-process, and the real Redis) and the plan
of a full read on both of HubSpot's budgets: pure functions and the source over a fake hook."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest

from conduit.exceptions import CrmContractError, CrmDailyLimitReached
from conduit.pipeline.pages import RecordPage
from conduit.sources.hubspot.budget import (
    LocalBudget,
    RateLimits,
    RedisBudget,
    account_key,
    boundary_id,
    full_read_rates,
    full_read_requests,
    limits_from_extras,
    search_streams,
)
from conduit.sources.hubspot.cursor import take_id_range
from conduit.sources.hubspot.source import HubSpotSource, read_concurrently
from conduit.specs.model import load_spec

SPEC = load_spec(Path(__file__).resolve().parents[3] / "include" / "syncs" / "crm_to_erp_customer_sync.yaml")

# --- the limits a connection sets ------------------------------------------------------------------


def test_limits_come_from_the_tier_or_explicit_numbers():
    assert limits_from_extras({}, "http://127.0.0.1:8700") is None  # the stand-in: no pacing unless asked
    assert limits_from_extras({"rate_limit_tier": "unlimited"}, "https://api.hubapi.com") is None
    starter = limits_from_extras({}, "https://api.hubapi.com")  # HubSpot without a tier: the lowest
    assert (starter.interval_max, starter.daily_max, starter.search_per_second) == (100, 250_000, 5)
    pro = limits_from_extras({"rate_limit_tier": "Professional", "rate_limit_timezone": "Europe/Berlin"}, "x")
    assert (pro.interval_max, pro.daily_max, pro.timezone) == (190, 650_000, "Europe/Berlin")
    assert limits_from_extras({"rate_limit_tier": "limit_pack"}, "x").interval_max == 250
    explicit = limits_from_extras({"rate_limit_tier": "enterprise", "rate_limit_interval_max": "20",
                                   "rate_limit_interval_ms": 1000, "rate_limit_daily_max": 50}, "x")
    assert (explicit.interval_max, explicit.interval_ms, explicit.daily_max) == (20, 1000, 50)
    for empty in ("", "null", "None", None):  # the connection form's empty select, however it is saved
        assert limits_from_extras({"rate_limit_tier": empty}, "https://api.hubapi.com") == starter
        assert limits_from_extras({"rate_limit_tier": empty}, "http://127.0.0.1:8700") is None
    with pytest.raises(ValueError, match="unknown tier 'gold'"):
        limits_from_extras({"rate_limit_tier": "gold"}, "x")


def test_an_accounts_budget_is_named_without_its_token():
    key = account_key("https://api.hubapi.com/", "pat-na1-secret-token")
    assert key == account_key("https://api.hubapi.com", "pat-na1-secret-token")
    assert key != account_key("https://api.hubapi.com", "another-token") and "secret" not in key


# --- both backends -------------------------------------------------------------------------------


@pytest.fixture(params=["local", "redis"])
def make_budget(request):
    """Budgets of one account; with Redis each call builds a separate client (another process's view)."""
    if request.param == "local":
        shared: dict = {}

        def local(limits: RateLimits, **kwargs):
            return shared.setdefault("budget", LocalBudget(limits, **kwargs))

        yield local
        return
    import redis

    url = request.getfixturevalue("redis_url")
    account = f"test-{uuid.uuid4().hex}"
    made: list[RedisBudget] = []

    def remote(limits: RateLimits, **kwargs):
        made.append(RedisBudget(limits, redis.Redis.from_url(url), account, **kwargs))
        return made[-1]

    yield remote
    for budget in made[:1]:
        budget.clear()


def most_in_any_window(times_ms: list[int], span_ms: int) -> int:
    times = sorted(times_ms)
    return max(sum(1 for u in times[i:] if u < t + span_ms) for i, t in enumerate(times))


def test_concurrent_takers_never_overshoot_a_window(make_budget):
    limits = RateLimits(interval_max=15, interval_ms=300, daily_max=None, search_per_second=3, margin_ms=0)
    taken: list[int] = []
    searches: list[int] = []

    def taker(search_every: int):
        budget = make_budget(limits)
        for n in range(12):
            search = search_every and n % search_every == 0
            at = budget.acquire(search=bool(search))
            (searches if search else taken).append(at)

    threads = [threading.Thread(target=taker, args=(every,)) for every in (0, 0, 6, 6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(taken) + len(searches) == 48
    assert most_in_any_window(taken + searches, 300) <= 15  # 48 requests: at least 4 windows
    assert most_in_any_window(searches, 1000) <= 3
    assert max(taken + searches) - min(taken + searches) >= 3 * 300 - 5


def test_the_daily_limit_stops_with_what_is_left_and_when_it_resets(make_budget):
    budget = make_budget(RateLimits(interval_max=100, daily_max=3))
    for _ in range(3):
        budget.acquire(search=False)
    assert budget.daily_remaining() == 0
    with pytest.raises(CrmDailyLimitReached) as info:
        budget.acquire(search=True)
    assert (info.value.limit, info.value.remaining) == (3, 0)
    assert "resets at" in str(info.value) and "(UTC)" in info.value.resets_at
    assert "watermark did not move" in str(info.value)


class Waited(Exception):
    pass


def no_waiting(seconds: float):
    raise Waited(seconds)


def test_hubspots_headers_correct_the_local_view(make_budget):
    """HubSpot counted 8 of 10 used (another client on the account): only 2 more go before a wait."""
    budget = make_budget(RateLimits(interval_max=10, daily_max=1000), sleep=no_waiting)
    budget.observe({"X-HubSpot-RateLimit-Max": "10", "X-HubSpot-RateLimit-Remaining": "2",
                    "X-HubSpot-RateLimit-Daily": "1000", "X-HubSpot-RateLimit-Daily-Remaining": "40"}, search=False)
    assert budget.daily_remaining() == 40
    budget.acquire(search=False)
    budget.acquire(search=False)
    with pytest.raises(Waited) as info:
        budget.acquire(search=False)
    assert 9 < info.value.args[0] <= 10.1  # the phantoms were counted just now: a whole window
    # a count below ours changes nothing (ours was already higher)
    budget.observe({"X-HubSpot-RateLimit-Max": "10", "X-HubSpot-RateLimit-Remaining": "9"}, search=False)
    assert budget.daily_remaining() == 38


def test_our_own_requests_in_hubspots_answer_are_not_taken_for_another_clients(make_budget):
    """HubSpot's count is as of when it took our request; its answer comes a round trip later, when
    an earlier search of ours has left our one-second window. That search is ours, not another
    client's: no phantom for it, so two more searches go at once (with the phantom only one)."""
    budget = make_budget(RateLimits(interval_max=100, daily_max=None, search_per_second=3, margin_ms=0),
                         sleep=no_waiting)
    first = budget.acquire(search=True)
    time.sleep(0.6)
    sent = budget.acquire(search=True)
    time.sleep(0.6)  # the "round trip": the first search leaves our window meanwhile
    counted = sum(1 for at in (first, sent) if at > sent - 1000)  # what HubSpot held when it took ours
    assert counted == 2, "the machine overslept: the first search had left HubSpot's window too"
    budget.observe({"X-HubSpot-RateLimit-Secondly": "3", "X-HubSpot-RateLimit-Secondly-Remaining": str(3 - counted)},
                   search=True, sent_ms=sent)
    taken = 0
    with pytest.raises(Waited):
        for _ in range(3):
            budget.acquire(search=True)
            taken += 1
    assert taken == 2


def test_the_secondly_headers_steer_only_searches(make_budget):
    budget = make_budget(RateLimits(interval_max=100, daily_max=None), sleep=no_waiting)
    said = {"X-HubSpot-RateLimit-Secondly": "5", "X-HubSpot-RateLimit-Secondly-Remaining": "0"}
    budget.observe(said, search=False)
    budget.acquire(search=True)  # a list response's secondly pair is not the search window's
    budget.observe(said, search=True)
    with pytest.raises(Waited):
        budget.acquire(search=True)
    budget.acquire(search=False)


# --- planning a full read on both budgets ----------------------------------------------------------

PRO = RateLimits(interval_max=190, daily_max=650_000, margin_ms=0)


def test_the_list_endpoint_takes_what_searches_leave_of_the_interval_budget():
    fast = full_read_rates(PRO, 0.01)  # a short round trip: the interval budget binds
    assert (fast.search_pages_per_s, round(fast.list_pages_per_s, 2)) == (5, 14)
    assert round(fast.list_share, 3) == round(1400 / 2400, 3)
    slow = full_read_rates(PRO, 0.15)  # one list stream sends one call per round trip
    assert round(slow.list_pages_per_s, 2) == 6.67 and round(slow.list_share, 2) == 0.4
    free = full_read_rates(RateLimits(interval_max=100, daily_max=250_000, margin_ms=0), 0.01)
    assert free.list_pages_per_s == 5 and round(free.list_share, 2) == 0.33
    assert full_read_rates(RateLimits(interval_max=40, interval_ms=10_000, daily_max=None), 0.01).list_share == 0


def test_search_streams_grow_with_latency_and_shrink_with_items():
    assert search_streams(PRO, 0.15, 1) == 2 and search_streams(PRO, 0.3, 1) == 3
    assert search_streams(PRO, 0.15, 4) == 1 and search_streams(PRO, 2.0, 1) == 4


def test_the_boundary_is_found_by_count_even_when_ids_are_not_spread_evenly():
    ids = list(range(1, 9001)) + list(range(100_000, 101_000))  # 9,000 dense low ids, 1,000 far above
    probes: list[int] = []

    def count_below(boundary: int) -> int:
        probes.append(boundary)
        return sum(1 for i in ids if i < boundary)

    boundary = boundary_id(count_below, ids[0], ids[-1] + 1, len(ids), 4000)
    assert abs(count_below(boundary) - 4000) <= 100 and len(probes) <= 4
    assert boundary_id(count_below, 1, 101_000, len(ids), 0) == 1
    assert boundary_id(count_below, 1, 101_000, len(ids), len(ids)) == 101_000


def test_a_full_read_needs_about_one_call_per_page():
    assert full_read_requests(10_000, 0.4) == 40 + 30 + 2


class BudgetedHook:
    """Answers the plan's searches from ids; has a budget (the connection sets limits)."""

    def __init__(self, ids, budget, latency_s=0.15):
        self.ids, self.budget, self.latency_s = sorted(ids), budget, latency_s
        self.requests_sent, self.retries = 0, 0

    def iter_list_pages(self, object_type, properties, *, archived=False, limit=100):
        self.requests_sent += 1
        yield [{"id": str(i)} for i in self.ids[:limit]]

    def search(self, object_type, body):
        self.requests_sent += 1
        if "filterGroups" not in body:
            ordered = self.ids if body["sorts"][0]["direction"] == "ASCENDING" else self.ids[::-1]
            return {"results": [{"id": str(ordered[0])}] if ordered else [], "total": len(self.ids)}
        below = int(body["filterGroups"][0]["filters"][0]["value"])
        return {"results": [], "total": sum(1 for i in self.ids if i < below)}


def test_a_budgeted_full_read_lists_the_low_ids_and_searches_the_rest():
    hook = BudgetedHook(range(1001, 11001), LocalBudget(PRO))
    items = HubSpotSource(SPEC.source, hook=hook).plan(None, parallelism=4)
    listed, *searched, archived = items
    assert listed["via"] == "list" and listed["lo"] == 1001 and archived == {"kind": "archived"}
    assert abs((listed["hi"] - 1001) - 4000) <= 100  # 40% of the records at 150 ms (see the rates above)
    assert [s["lo"] for s in searched][0] == listed["hi"] and searched[-1]["hi"] == 11001
    assert len(searched) == 3 and all(s["kind"] == "range" and s["streams"] == 1 for s in searched)
    assert all(a["hi"] == b["lo"] for a, b in zip(searched, searched[1:], strict=False))  # no gap, no overlap
    # one task: one item reads both endpoints at once, split at the same boundary
    (both, _) = HubSpotSource(SPEC.source, hook=hook).plan(None)
    assert both == {"kind": "all", "lo": 1001, "boundary": listed["hi"], "hi": 11001, "streams": 2}


def test_a_full_read_the_days_budget_cannot_cover_stops_before_it_starts():
    budget = LocalBudget(RateLimits(interval_max=190, daily_max=60))
    hook = BudgetedHook(range(1, 10_001), budget)
    with pytest.raises(CrmDailyLimitReached) as info:
        HubSpotSource(SPEC.source, hook=hook).plan(None, parallelism=2)
    assert info.value.needed > 60 and info.value.remaining == 60  # the plan's own two searches are not counted here


def page(ids) -> RecordPage:
    return RecordPage([str(i) for i in ids], ("hs_object_id",), [(str(i),) for i in ids])


def test_a_listed_range_drops_the_ids_past_it_and_stops_asking():
    pulled: list[int] = []

    def pages():
        for start in range(1, 100, 10):
            pulled.append(start)
            yield page(range(start, start + 10))

    got = [i for p in take_id_range(pages(), 1, 35) for i in p.ids]
    assert got == [str(i) for i in range(1, 35)] and pulled == [1, 11, 21, 31]
    # a page that starts with the last record again repeats it (read once); other disorder is an error
    assert [i for p in take_id_range(iter([page([1, 2]), page([2, 3]), page([3])]), 1, 10) for i in p.ids] == ["1", "2", "3"]
    with pytest.raises(CrmContractError, match="out of ascending order"):
        list(take_id_range(iter([page([1, 2]), page([1, 3])]), 1, 10))
    with pytest.raises(CrmContractError, match="out of ascending order"):
        list(take_id_range(iter([page([1, 2]), page([2, 2])]), 1, 10))


def test_concurrent_streams_hand_over_every_page_and_their_errors():
    streams = [lambda n=n: (page([n * 100 + k]) for k in range(20)) for n in range(3)]
    ids = sorted(int(i) for p in read_concurrently(streams, buffer=2) for i in p.ids)
    assert ids == sorted(n * 100 + k for n in range(3) for k in range(20))

    def broken():
        yield page([1])
        raise CrmContractError("bad page")

    with pytest.raises(CrmContractError, match="bad page"):
        list(read_concurrently([broken, streams[0]]))


def test_the_connection_sets_the_budget_and_its_extras_are_not_sent_as_headers(monkeypatch):
    import json

    from conduit.provider_info import get_provider_info
    from conduit.sources.hubspot.budget import EXTRA_FIELDS
    from conduit.sources.hubspot.hook import HubSpotHook

    token = "pat-na1-0123456789"
    extra = {"rate_limit_tier": "enterprise", "rate_limit_daily_max": 5000, "budget_redis_conn_id": "budget_redis"}
    monkeypatch.setenv("AIRFLOW_CONN_HUBSPOT_BUDGETED", json.dumps(
        {"conn_type": "hubspot", "host": "https://api.hubapi.com", "password": token, "extra": extra}))
    monkeypatch.setenv("AIRFLOW_CONN_BUDGET_REDIS", "redis://127.0.0.1:6379/0")
    hook = HubSpotHook("hubspot_budgeted")
    assert not set(EXTRA_FIELDS) & {k.lower() for k in hook.session.headers}
    budget = hook.budget
    assert isinstance(budget, RedisBudget) and (budget.limits.interval_max, budget.limits.daily_max) == (190, 5000)
    assert token not in budget.prefix and budget.prefix.endswith(account_key("https://api.hubapi.com", token))
    monkeypatch.setenv("AIRFLOW_CONN_HUBSPOT_ALONE", json.dumps(
        {"conn_type": "hubspot", "host": "https://api.hubapi.com", "password": token}))
    alone = HubSpotHook("hubspot_alone").budget  # HubSpot without a tier: the lowest, in this process
    assert isinstance(alone, LocalBudget) and alone.limits.interval_max == 100
    # the connection form offers the settings (interval length and margin: extras only, for tests)
    hubspot = next(c for c in get_provider_info()["connection-types"] if c["connection-type"] == "hubspot")
    assert set(hubspot["conn-fields"]) >= set(EXTRA_FIELDS) - {"rate_limit_interval_ms", "rate_limit_margin_ms"}
    monkeypatch.setenv("AIRFLOW_CONN_HUBSPOT_GOLD", json.dumps(
        {"conn_type": "hubspot", "host": "https://api.hubapi.com", "password": token,
         "extra": {"rate_limit_tier": "gold"}}))
    from conduit.exceptions import CrmConfigError

    with pytest.raises(CrmConfigError, match="'hubspot_gold': rate_limit_tier: unknown tier 'gold'"):
        _ = HubSpotHook("hubspot_gold").budget
