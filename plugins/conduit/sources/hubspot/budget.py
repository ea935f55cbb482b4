"""One request budget per HubSpot account, shared by every task that calls it (contract §1.5, §1.8).

HubSpot limits an account, not a client: requests per rolling interval (100, 190 or 250 per 10 s
by tier), searches per second (5), and requests per day (250k, 650k, 1M, ...). Four mapped extract
tasks on two workers that each pace themselves would together overshoot, so the windows live in
one place all of them see:

* :class:`RedisBudget`: sorted sets of request times in Redis, checked and appended by one Lua
  script (atomic: concurrent processes never overshoot), with Redis' own clock (workers' clocks
  may differ);
* :class:`LocalBudget`: the same windows in this process, behind a lock. Correct only when one
  process calls the account (the default without Redis: each task process then paces itself
  alone, and parallel tasks can overshoot; their 429s are still retried).

Before each request the caller :meth:`~Budget.acquire` s a slot (waiting until one frees); after
it, :meth:`~Budget.observe` lets the ``X-HubSpot-RateLimit-*`` headers correct the local view: when
HubSpot says fewer requests remain than we think (another app on the account, a window edge, a
lower limit than the connection says), phantom entries make up the difference, so the pace follows
whichever view is stricter; the same for the day's count. A 429 stays possible (other clients,
clock edges) and is retried; it is no longer how the pace is found.

HubSpot's count is as of when it took the request; its answer arrives a round trip later, when our
window has moved on and may have dropped requests of ours that HubSpot still counted. So the windows
keep their entries one span longer than they count them, and the headers are compared with what the
window held from one span before the answered request was sent (``sent_ms``), not from one span
before the answer arrived: else each answer near a window's edge would add phantoms for our own
requests. (Requests of ours sent after it count too, so another client's use may be seen up to
our concurrency late; phantoms are stamped at the answer's arrival, so they never drop early.)

The windows are made ``margin_ms`` longer than HubSpot's: a request is counted when it is sent, but
HubSpot counts it when it arrives, up to a network delay later.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from conduit.exceptions import CrmDailyLimitReached

log = logging.getLogger(__name__)

TIERS: dict[str, tuple[int, int]] = {
    "free": (100, 250_000),
    "starter": (100, 250_000),
    "professional": (190, 650_000),
    "enterprise": (190, 1_000_000),
    "limit_pack": (250, 1_650_000),  # Professional + one API limit increase pack (+1M/day, 250 per 10 s)
}
"""Requests per 10 s and per day of a private app on each HubSpot tier (contract §1.8)."""

UNLIMITED = "unlimited"
HUBSPOT_HOSTS = ("api.hubapi.com", "api.hubspot.com")
DEFAULT_HUBSPOT_TIER = "starter"
"""The pace for HubSpot itself when the connection names no tier: the lowest (safe on every account)."""

EXTRA_FIELDS = ("rate_limit_tier", "rate_limit_interval_max", "rate_limit_interval_ms", "rate_limit_search_per_second",
                "rate_limit_daily_max", "rate_limit_margin_ms", "rate_limit_timezone", "budget_redis_conn_id")
"""The connection extras that configure the budget (the hook must not send them as headers)."""

_INT_EXTRAS = ("interval_max", "interval_ms", "search_per_second", "daily_max", "margin_ms")


@dataclass(frozen=True)
class RateLimits:
    """One account's limits. ``daily_max`` None: no daily limit is counted."""

    interval_max: int
    daily_max: int | None
    search_per_second: int = 5
    interval_ms: int = 10_000
    margin_ms: int = 50
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        if self.interval_max < 1 or self.search_per_second < 1 or self.interval_ms < 1 or self.margin_ms < 0:
            raise ValueError(f"invalid rate limits {self!r}")
        if self.daily_max is not None and self.daily_max < 1:
            raise ValueError(f"invalid rate limits {self!r}: daily_max must be >= 1")
        ZoneInfo(self.timezone)  # raises on an unknown zone

    @property
    def requests_per_second(self) -> float:
        return self.interval_max * 1000 / (self.interval_ms + self.margin_ms)

    @property
    def searches_per_second(self) -> float:
        return min(self.search_per_second * 1000 / (1000 + self.margin_ms), self.requests_per_second)


# what a form's empty tier select can save: its null choice, rendered and stored as text
_NO_TIER = ("", "null", "none")


def limits_from_extras(extra: Mapping[str, Any], base_url: str) -> RateLimits | None:
    """The account's limits from a HubSpot connection's extras: ``rate_limit_tier`` (one of
    :data:`TIERS` or ``unlimited``) and/or explicit ``rate_limit_interval_max``,
    ``rate_limit_search_per_second``, ``rate_limit_daily_max`` (override the tier's), plus
    ``rate_limit_interval_ms``, ``rate_limit_margin_ms`` and ``rate_limit_timezone`` (the account's
    zone: the daily limit resets at its midnight). None: no pacing. Without a tier, HubSpot itself
    gets :data:`DEFAULT_HUBSPOT_TIER` and any other base URL (the stand-in, a test double) none."""
    explicit = {key: int(extra[f"rate_limit_{key}"]) for key in _INT_EXTRAS
                if extra.get(f"rate_limit_{key}") not in (None, "")}
    tier = str(extra.get("rate_limit_tier") or "").strip().lower()
    if tier in _NO_TIER:
        real_hubspot = any(host in base_url for host in HUBSPOT_HOSTS)
        tier = DEFAULT_HUBSPOT_TIER if real_hubspot or explicit else UNLIMITED
    if tier == UNLIMITED:
        return None
    if tier not in TIERS:
        raise ValueError(f"rate_limit_tier: unknown tier {tier!r}; known: {', '.join([*TIERS, UNLIMITED])}")
    interval_max, daily_max = TIERS[tier]
    limits = RateLimits(interval_max=interval_max, daily_max=daily_max)
    zone = extra.get("rate_limit_timezone")
    return replace(limits, **explicit, **({"timezone": str(zone)} if zone else {}))


def account_key(base_url: str, token: str) -> str:
    """Names an account's budget without revealing the token: a hash of base URL and token."""
    return hashlib.sha256(f"{base_url.rstrip('/')}\n{token}".encode()).hexdigest()[:24]


@dataclass(frozen=True)
class ServerRemaining:
    """What HubSpot says is left, from one response's headers (None: not said)."""

    interval: int | None = None
    search: int | None = None
    daily: int | None = None


def server_remaining(headers: Mapping[str, str], *, search: bool) -> ServerRemaining:
    """The ``X-HubSpot-RateLimit-*-Remaining`` headers. The ``Secondly`` one is read only on search
    responses (where it describes the search window; HubSpot reportedly sends none there)."""

    def remaining(name: str) -> int | None:
        try:
            return max(0, int(headers["X-HubSpot-RateLimit-" + name]))
        except (KeyError, TypeError, ValueError):
            return None

    return ServerRemaining(interval=remaining("Remaining"), search=remaining("Secondly-Remaining") if search else None,
                           daily=remaining("Daily-Remaining"))


class Budget:
    """The pacing both backends share; subclasses keep the windows (:meth:`_try`, :meth:`_observe`)."""

    def __init__(self, limits: RateLimits, *, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep):
        self.limits = limits
        self._clock, self._sleep = clock, sleep
        self.waited_s = 0.0
        self.reported_daily_max: int | None = None
        """The daily limit HubSpot's headers name (it wins over the connection's in messages)."""

    def acquire(self, *, search: bool) -> int:
        """Wait for a slot in every window the request counts in, take it, and return when it was
        taken (epoch ms of the budget's clock). Raises :class:`CrmDailyLimitReached` when the day's
        requests are used up."""
        while True:
            wait_ms, used = self._try(search, self._day())
            if wait_ms == 0:
                return used
            if wait_ms < 0:
                raise self.daily_limit_reached(used)
            # a little jitter: waiters released by one expiry do not all come back in the same millisecond
            pause = wait_ms / 1000 + random.uniform(0, 0.005)
            self.waited_s += pause
            self._sleep(pause)

    def observe(self, headers: Mapping[str, str], *, search: bool, sent_ms: int | None = None) -> None:
        """The answer's rate-limit headers into the windows; ``sent_ms``: when its request took its
        slot (what :meth:`acquire` returned), so that ours HubSpot counted are not counted twice."""
        said = server_remaining(headers, search=search)
        daily = headers.get("X-HubSpot-RateLimit-Daily")
        if daily is not None and daily.isdigit():
            self.reported_daily_max = int(daily)
        if said != ServerRemaining():
            self._observe(said, self._day(), sent_ms)

    def daily_remaining(self) -> int | None:
        if self.limits.daily_max is None:
            return None
        return max(0, self.limits.daily_max - self._daily_used(self._day()))

    def daily_limit_reached(self, used: int | None = None, *, needed: int | None = None) -> CrmDailyLimitReached:
        daily = self.limits.daily_max
        remaining = 0 if used is None or daily is None else max(0, daily - used)
        return CrmDailyLimitReached(self.reported_daily_max or daily, remaining, self.resets_at(), needed=needed)

    def resets_at(self) -> str:
        """The next midnight in the account's time zone, when HubSpot resets the daily count."""
        zone = ZoneInfo(self.limits.timezone)
        now = datetime.fromtimestamp(self._clock(), zone)
        midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), zone)
        return f"{midnight.isoformat()} ({self.limits.timezone})"

    def _day(self) -> str:
        return datetime.fromtimestamp(self._clock(), ZoneInfo(self.limits.timezone)).date().isoformat()

    # --- the windows ---------------------------------------------------------------------------

    def _try(self, search: bool, day: str) -> tuple[int, int]:
        """(0, taken-at ms) when a slot was taken; (ms to wait, 0) when none is free; (-1, used
        today) when the daily limit is reached."""
        raise NotImplementedError

    def _observe(self, said: ServerRemaining, day: str, sent_ms: int | None) -> None:
        raise NotImplementedError

    def _daily_used(self, day: str) -> int:
        raise NotImplementedError


class LocalBudget(Budget):
    """The windows in this process (threads share them). Correct only for one process per account."""

    def __init__(self, limits: RateLimits, **kwargs: Any):
        super().__init__(limits, **kwargs)
        self._lock = threading.Lock()
        self._interval: deque[float] = deque()
        self._search: deque[float] = deque()
        self._daily: dict[str, int] = {}

    def _trim(self, now: float) -> None:
        """Drop entries older than two spans (one span is counted, one more is kept for :meth:`_observe`)."""
        limits = self.limits
        for window, span in ((self._interval, limits.interval_ms + limits.margin_ms),
                             (self._search, 1000 + limits.margin_ms)):
            while window and window[0] <= now - 2 * span:
                window.popleft()

    @staticmethod
    def _count(window: deque[float], after: float) -> int:
        return sum(1 for t in window if t > after)

    def _try(self, search: bool, day: str) -> tuple[int, int]:
        limits = self.limits
        with self._lock:
            now = int(self._clock() * 1000)  # whole ms, as acquire() returns it (observe's sent_ms)
            used = self._daily.get(day, 0)
            if limits.daily_max is not None and used >= limits.daily_max:
                return -1, used
            self._trim(now)
            interval_span, search_span = limits.interval_ms + limits.margin_ms, 1000 + limits.margin_ms
            wait = 0.0
            if self._count(self._interval, now - interval_span) >= limits.interval_max:
                oldest = self._interval[len(self._interval) - limits.interval_max]
                wait = oldest + interval_span - now
            if search and self._count(self._search, now - search_span) >= limits.search_per_second:
                oldest = self._search[len(self._search) - limits.search_per_second]
                wait = max(wait, oldest + search_span - now)
            if wait > 0:
                return max(1, int(wait + 0.999)), 0
            self._interval.append(now)
            if search:
                self._search.append(now)
            self._daily[day] = used + 1
            return 0, int(now)

    def _observe(self, said: ServerRemaining, day: str, sent_ms: int | None) -> None:
        limits = self.limits
        with self._lock:
            now = int(self._clock() * 1000)
            self._trim(now)
            upto = now if sent_ms is None else sent_ms
            for window, remaining, cap, span in (
                    (self._interval, said.interval, limits.interval_max, limits.interval_ms + limits.margin_ms),
                    (self._search, said.search, limits.search_per_second, 1000 + limits.margin_ms)):
                if remaining is not None:
                    window.extend([now] * max(0, cap - remaining - self._count(window, upto - span)))
            if said.daily is not None and limits.daily_max is not None:
                self._daily[day] = max(self._daily.get(day, 0), limits.daily_max - said.daily)

    def _daily_used(self, day: str) -> int:
        with self._lock:
            return self._daily.get(day, 0)


# KEYS: interval zset, search zset, sequence, daily counter.
# ARGV: interval_max, interval span ms, search_max, search span ms, daily_max (0: none), search (0/1), daily ttl s.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local imax, ispan = tonumber(ARGV[1]), tonumber(ARGV[2])
local smax, sspan = tonumber(ARGV[3]), tonumber(ARGV[4])
local dmax, search, ttl = tonumber(ARGV[5]), ARGV[6] == '1', tonumber(ARGV[7])
local used = tonumber(redis.call('GET', KEYS[4]) or '0')
if dmax > 0 and used >= dmax then return {-1, used} end
-- entries older than one span are not counted, but kept one span more for the observe script
local function full(key, cap, span)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - 2 * span)
  if redis.call('ZCOUNT', key, '(' .. (now - span), '+inf') < cap then return 0 end
  local n = redis.call('ZCARD', key)
  local oldest = redis.call('ZRANGE', key, n - cap, n - cap, 'WITHSCORES')
  return tonumber(oldest[2]) + span - now
end
local wait = full(KEYS[1], imax, ispan)
if search then wait = math.max(wait, full(KEYS[2], smax, sspan)) end
if wait > 0 then return {wait, 0} end
local member = redis.call('INCR', KEYS[3])
redis.call('PEXPIRE', KEYS[3], ispan * 2)
redis.call('ZADD', KEYS[1], now, member)
redis.call('PEXPIRE', KEYS[1], ispan * 3)
if search then
  redis.call('ZADD', KEYS[2], now, member)
  redis.call('PEXPIRE', KEYS[2], ispan * 3)
end
redis.call('INCR', KEYS[4])
redis.call('EXPIRE', KEYS[4], ttl)
return {0, now}
"""

# KEYS as above. ARGV: interval_max, interval span, search_max, search span, daily_max (0: none), ttl, then
# what the server says remains in the interval, the search window and the day (-1: not said), and when
# the answered request took its slot (-1: not known; then now).
_OBSERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local upto = tonumber(ARGV[10])
if upto < 0 then upto = now end
local function catch_up(key, cap, span, remaining)
  if remaining < 0 then return end
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - 2 * span)
  local missing = cap - remaining - redis.call('ZCOUNT', key, '(' .. (upto - span), '+inf')
  for _ = 1, missing do
    redis.call('ZADD', key, now, 'p' .. redis.call('INCR', KEYS[3]))
  end
  if missing > 0 then redis.call('PEXPIRE', key, span * 3) end
end
catch_up(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[7]))
catch_up(KEYS[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[8]))
local dmax, daily_left = tonumber(ARGV[5]), tonumber(ARGV[9])
if dmax > 0 and daily_left >= 0 and dmax - daily_left > tonumber(redis.call('GET', KEYS[4]) or '0') then
  redis.call('SET', KEYS[4], dmax - daily_left, 'EX', tonumber(ARGV[6]))
end
return 0
"""

_DAY_TTL_S = 2 * 86_400


def _unreachable_errors() -> tuple[type[Exception], ...]:
    """Redis' errors for a server out of reach (not for a script it refuses: that is a bug)."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    return RedisConnectionError, RedisTimeoutError


class RedisBudget(Budget):
    """The windows in Redis under ``conduit:hubspot-budget:<account>:*``, for every process that
    calls the account (``account`` from :func:`account_key`: never the token itself).

    Redis out of reach (down, restarting, a network split) does not fail the extract: the budget
    warns once and paces this process alone from then on (a :class:`LocalBudget`, what a
    connection without Redis gets; HubSpot's headers and 429s still correct it)."""

    def __init__(self, limits: RateLimits, client: Any, account: str, **kwargs: Any):
        super().__init__(limits, **kwargs)
        self.client = client
        self.prefix = f"conduit:hubspot-budget:{account}"
        self._acquire = client.register_script(_ACQUIRE)
        self._observe_script = client.register_script(_OBSERVE)
        self.local: LocalBudget | None = None
        """The in-process windows this budget paces with once Redis could not be reached."""
        self._falling_back = threading.Lock()
        # Redis' clock decides the windows; the day is read from the local clock (a skew of seconds
        # around midnight only moves a few requests to the other day's count).

    def _unreachable(self, exc: Exception) -> None:
        with self._falling_back:  # concurrent streams fail together: one warning, one set of windows
            if self.local is not None:
                return
            log.warning("The HubSpot request budget's Redis cannot be reached (%s): this process paces "
                        "itself alone from now on", exc)
            self.local = LocalBudget(self.limits, clock=self._clock, sleep=self._sleep)

    def _keys(self, day: str) -> list[str]:
        p = self.prefix
        return [f"{p}:interval", f"{p}:search", f"{p}:seq", f"{p}:daily:{day}"]

    def _spans(self) -> list[int]:
        limits = self.limits
        return [limits.interval_max, limits.interval_ms + limits.margin_ms, limits.search_per_second,
                1000 + limits.margin_ms]

    def _try(self, search: bool, day: str) -> tuple[int, int]:
        if self.local is None:
            try:
                wait, value = self._acquire(keys=self._keys(day), args=[
                    *self._spans(), self.limits.daily_max or 0, int(search), _DAY_TTL_S])
                return int(wait), int(value)
            except _unreachable_errors() as exc:
                self._unreachable(exc)
        return self.local._try(search, day)

    def _observe(self, said: ServerRemaining, day: str, sent_ms: int | None) -> None:
        if self.local is None:
            remaining = [-1 if v is None else v for v in (said.interval, said.search, said.daily)]
            try:
                self._observe_script(keys=self._keys(day), args=[
                    *self._spans(), self.limits.daily_max or 0, _DAY_TTL_S, *remaining,
                    -1 if sent_ms is None else sent_ms])
                return
            except _unreachable_errors() as exc:
                self._unreachable(exc)
        self.local._observe(said, day, sent_ms)

    def _daily_used(self, day: str) -> int:
        if self.local is None:
            try:
                return int(self.client.get(self._keys(day)[3]) or 0)
            except _unreachable_errors() as exc:
                self._unreachable(exc)
        return self.local._daily_used(day)

    def clear(self) -> None:
        """Forget the account's windows and today's count (tests; an operator after a manual reset)."""
        self.client.delete(*self._keys(self._day()))


# --- planning a full read on both budgets -------------------------------------------------------------


@dataclass(frozen=True)
class FullReadRates:
    """How fast a full read can go: list pages per second (one sequential stream: the list
    endpoint's ``after`` is opaque, so it cannot start mid-way), search pages per second, and the
    share of the records the list endpoint should read so that both finish together."""

    list_pages_per_s: float
    search_pages_per_s: float
    list_share: float


def full_read_rates(limits: RateLimits, latency_s: float, *, list_page: int = 100,
                    search_page: int = 200) -> FullReadRates:
    """Searches take their whole cap (200 records a call against the list's 100); the rest of the
    interval budget goes to the list stream, which can send at most one call per round trip."""
    search = limits.searches_per_second
    listing = max(0.0, limits.requests_per_second - search)
    if latency_s > 0:
        listing = min(listing, 1 / latency_s)
    list_records, search_records = listing * list_page, search * search_page
    return FullReadRates(listing, search, list_records / (list_records + search_records))


def search_streams(limits: RateLimits, latency_s: float, items: int, *, most: int = 4) -> int:
    """Concurrent searches per search item so that ``items`` items keep the search cap busy: a
    sequential reader sends one call per round trip (150 ms: ~6.7/s). Half again as many as the
    cap needs, since the shared budget holds any surplus back."""
    needed = limits.searches_per_second * max(latency_s, 0.0) * 1.5 / max(1, items)
    return max(1, min(most, -int(-needed // 1)))


def boundary_id(count_below: Callable[[int], int], lo: int, hi: int, total: int, target: int, *,
                probes: int = 3) -> int:
    """An id b in (lo, hi] with about ``target`` of the ``total`` live ids in [lo, b), found by
    interpolation: the first guess assumes evenly spread ids, each probe (``count_below(b)``, one
    search's ``total``) narrows the bracket. Stops within 1% of ``total`` or after ``probes``."""
    if target <= 0:
        return lo
    if target >= total:
        return hi
    (a, count_a), (b, count_b) = (lo, 0), (hi, total)
    guess = lo + (hi - lo) * target / total
    for _ in range(probes):
        if b - a < 2:
            break
        probe = min(b - 1, max(a + 1, round(guess)))
        count = count_below(probe)
        if abs(count - target) <= max(1, total // 100):
            return probe
        if count < target:
            a, count_a = probe, count
        else:
            b, count_b = probe, count
        if count_b <= count_a:
            break
        guess = a + (b - a) * (target - count_a) / (count_b - count_a)
    return min(b, max(a + 1, round(guess)))


def full_read_requests(total: int, list_share: float, *, list_page: int = 100, search_page: int = 200,
                       search_items: int = 1) -> int:
    """About how many calls a full read of ``total`` records makes (each item's last page included)."""
    listed = round(total * list_share)
    return -(-listed // list_page) + -(-(total - listed) // search_page) + search_items + 1
