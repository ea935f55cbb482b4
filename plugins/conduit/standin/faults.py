"""Switchable faults and HubSpot's rate limits (contract §1.8): what to do with the next CRM request.

Faults count CRM requests from the moment they are set; admin requests never count.
"""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import asdict, dataclass, replace
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Policy = Literal["TEN_SECONDLY_ROLLING", "SECONDLY", "DAILY"]
_RATE_LIMIT_MESSAGES = {
    "TEN_SECONDLY_ROLLING": "You have reached your ten_secondly_rolling limit.",
    "SECONDLY": "You have reached your secondly limit.",
    "DAILY": "You have reached your daily limit.",
}
_CYCLED_5XX = (500, 502, 503)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RateLimitFault(_Model):
    """429 on every ``every``-th request and/or on the next ``burst`` requests."""

    every: int = Field(default=0, ge=0)
    burst: int = Field(default=0, ge=0)
    policy: Policy | None = Field(default=None, description="default: SECONDLY for search, else TEN_SECONDLY_ROLLING")
    retry_after_s: int | None = Field(default=1, ge=0, description="None: no Retry-After (HubSpot does not promise one)")


class ServerErrorFault(_Model):
    """5xx on every ``every``-th request, on the next ``burst`` requests and/or on a random ``ratio``
    of them (drawn from ``seed``: the same requests fail on every run). ``status`` may also be one
    of HubSpot's other try-again answers (contract §1.9): 423 Locked, 477 migration in progress
    (with ``retry_after_s``), 524 origin timeout."""

    every: int = Field(default=0, ge=0)
    burst: int = Field(default=0, ge=0)
    ratio: float = Field(default=0.0, ge=0, le=1)
    seed: int = 0
    status: Literal[500, 502, 503, 504, 423, 477, 524] | None = Field(
        default=None, description="default: cycle 500, 502, 503")
    retry_after_s: int | None = Field(default=None, ge=0, description="a Retry-After header on the answer")


BodyFaultKind = Literal["stall", "reset", "truncate", "malformed", "no_properties", "wrong_types", "repeat_record"]


class BodyFault(_Model):
    """Spoil the reply to every ``every``-th CRM request and/or the next ``burst`` (a request a 429
    or 5xx fault answers is not spoiled, and does not use up the burst):

    * ``stall``: answer after ``stall_ms`` (a read timeout for a client that waits less);
    * ``reset``: send the headers and half the body, then drop the connection;
    * ``truncate``: a complete 200 whose JSON stops half way; ``malformed``: a 200 that is not JSON;
    * ``no_properties``: the page's records come without ``properties``;
    * ``wrong_types``: the page's records carry numbers and lists where strings belong;
    * ``repeat_record``: the last record the same endpoint served before, again first on this page.
    """

    kind: BodyFaultKind
    every: int = Field(default=0, ge=0)
    burst: int = Field(default=0, ge=0)
    stall_ms: int = Field(default=2000, ge=0)


class Faults(_Model):
    rate_limit: RateLimitFault | None = None
    server_errors: ServerErrorFault | None = None
    slow_ms: int = Field(default=0, ge=0, description="delay every CRM reply")
    equal_timestamps: bool = Field(default=False, description="admin changes all get one millisecond")
    search_lag_ms: int = Field(default=0, ge=0, description="changes younger than this are invisible to search")
    body: list[BodyFault] = Field(default_factory=list, description="spoiled replies (BodyFault)")


@dataclass(frozen=True)
class Injected:
    status: int
    policy: Policy | None = None
    retry_after_s: int | None = None

    @property
    def message(self) -> str:
        return _RATE_LIMIT_MESSAGES[self.policy] if self.policy else "internal error"


class FaultInjector:
    """Decides, request by request, whether a configured fault fires."""

    def __init__(self, faults: Faults | None = None):
        self.faults = faults or Faults()
        self._count = 0
        self._rate_limit_burst = self.faults.rate_limit.burst if self.faults.rate_limit else 0
        self._server_error_burst = self.faults.server_errors.burst if self.faults.server_errors else 0
        self._random = random.Random(self.faults.server_errors.seed if self.faults.server_errors else 0)
        self._fired_5xx = 0
        self._body_bursts = [fault.burst for fault in self.faults.body]

    def next(self, is_search: bool) -> Injected | None:
        self._count += 1
        limit, errors = self.faults.rate_limit, self.faults.server_errors
        if limit and (self._rate_limit_burst or (limit.every and self._count % limit.every == 0)):
            self._rate_limit_burst = max(0, self._rate_limit_burst - 1)
            policy = limit.policy or ("SECONDLY" if is_search else "TEN_SECONDLY_ROLLING")
            return Injected(429, policy, limit.retry_after_s)
        if errors and (self._server_error_burst or (errors.every and self._count % errors.every == 0)
                       or (errors.ratio and self._random.random() < errors.ratio)):
            self._server_error_burst = max(0, self._server_error_burst - 1)
            self._fired_5xx += 1
            return Injected(errors.status or _CYCLED_5XX[(self._fired_5xx - 1) % len(_CYCLED_5XX)],
                            retry_after_s=errors.retry_after_s)
        return None

    def spoil(self) -> BodyFault | None:
        """The body fault for the request :meth:`next` just let through, if one fires."""
        for i, fault in enumerate(self.faults.body):
            if self._body_bursts[i] or (fault.every and self._count % fault.every == 0):
                self._body_bursts[i] = max(0, self._body_bursts[i] - 1)
                return fault
        return None


@dataclass
class Limits:
    interval_max: int = 100
    interval_ms: int = 10_000
    daily_max: int = 250_000
    search_per_second: int = 5
    retry_after: bool = True
    """Whether a 429 carries Retry-After: HubSpot's docs do not promise it (contract §1.8)."""


class RateLimiter:
    """Counts requests in HubSpot's windows. Always produces the headers; answers 429 only when
    ``enforce`` is on (off by default: the benchmark hammers the stand-in)."""

    def __init__(self, limits: Limits, enforce: bool = False):
        self.limits = limits
        self.enforce = enforce
        self._interval: deque[int] = deque()
        self._search_second: deque[int] = deque()
        self._daily = 0
        self.refused: dict[str, int] = {}
        """429s the limits (not injected faults) answered, per policy."""

    def state(self) -> dict:
        """The limits, whether they are enforced, today's count and the 429s per policy."""
        return {**asdict(self.limits), "enforce": self.enforce, "daily_used": self._daily, "refused": dict(self.refused)}

    def hit(self, now_ms: int, is_search: bool) -> tuple[dict[str, str], Injected | None]:
        limits = self.limits
        window = self._interval
        while window and window[0] <= now_ms - limits.interval_ms:
            window.popleft()
        searches = self._search_second
        while searches and searches[0] <= now_ms - 1000:
            searches.popleft()
        verdict = None
        if self.enforce:
            if self._daily >= limits.daily_max:
                verdict = Injected(429, "DAILY", math.ceil((86_400_000 - now_ms % 86_400_000) / 1000))
            elif len(window) >= limits.interval_max:
                verdict = Injected(429, "TEN_SECONDLY_ROLLING",
                                   max(1, math.ceil((window[0] + limits.interval_ms - now_ms) / 1000)))
            elif is_search and len(searches) >= limits.search_per_second:
                verdict = Injected(429, "SECONDLY", 1)
        if verdict is not None:
            self.refused[verdict.policy] = self.refused.get(verdict.policy, 0) + 1
            if not limits.retry_after:
                verdict = replace(verdict, retry_after_s=None)
        if verdict is None:  # refused calls do not use up the budget
            window.append(now_ms)
            self._daily += 1
            if is_search:
                searches.append(now_ms)
        headers = {
            "X-HubSpot-RateLimit-Daily": str(limits.daily_max),
            "X-HubSpot-RateLimit-Daily-Remaining": str(max(0, limits.daily_max - self._daily)),
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(limits.interval_ms),
            "X-HubSpot-RateLimit-Max": str(limits.interval_max),
            "X-HubSpot-RateLimit-Remaining": str(max(0, limits.interval_max - len(window))),
            "X-HubSpot-RateLimit-Secondly": str(limits.search_per_second),
            "X-HubSpot-RateLimit-Secondly-Remaining": str(max(0, limits.search_per_second - len(searches))),
        }
        return headers, verdict
