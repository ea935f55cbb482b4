"""One retry policy for every call Conduit makes to a service, in a request and across task tries.

Inside a task, :func:`call_with_retries` retries one call (an HTTP request, say) on the errors the
caller names, waiting :class:`Backoff` between tries: exponential backoff with full jitter, so that
many workers hit by the same 429 storm do not come back in lockstep, but never sooner than the
server's ``Retry-After`` (:class:`RetryableResponse` carries it). When those retries run out the task
fails, and Airflow's own retries take over: :class:`FullJitterRetryPolicy` spaces those tries with
the same backoff.

Importing this module loads tenacity and the Airflow task SDK (which every Conduit task has loaded
anyway), never pandas.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, timedelta
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, TypeVar

import tenacity
from airflow.sdk import RetryDecision, RetryPolicy
from airflow.sdk.exceptions import AirflowFailException

if TYPE_CHECKING:
    from airflow.sdk import Context

T = TypeVar("T")

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
"""HTTP statuses that say "try again later": rate limited, or the server failed, not the request."""


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter (AWS 'full jitter'): attempt n waits uniform(0, min(cap, base * factor**(n-1)))
    seconds, but never less than the server's Retry-After.

    Full jitter spreads the retries of many clients over the whole window instead of bunching them
    at the same instants, which is what lets a rate-limited API recover. ``max_retries`` bounds
    :func:`call_with_retries`; the wait itself does not depend on it.
    """

    max_retries: int = 6
    base: float = 0.25
    factor: float = 2.0
    cap: float = 30.0

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.base < 0 or self.cap < 0 or self.factor < 1:
            raise ValueError(f"invalid {self!r}: max_retries, base and cap must be >= 0 and factor >= 1")

    def ceiling(self, attempt: int) -> float:
        """The longest jittered wait after failed attempt ``attempt`` (1-based)."""
        if attempt < 1:
            raise ValueError(f"attempt numbers start at 1, got {attempt}")
        try:
            return min(self.cap, self.base * self.factor ** (attempt - 1))
        except OverflowError:  # factor ** a very large attempt: the cap applies long before
            return self.cap

    def wait(self, attempt: int, retry_after: float | None = None, *,
             rng: Callable[[], float] = random.random) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based). ``rng`` returns a float in [0, 1);
        ``retry_after`` is a floor, and is not capped: a server that asks for more time gets it."""
        jittered = rng() * self.ceiling(attempt)
        return jittered if retry_after is None else max(jittered, retry_after)


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """Retry-After as delta-seconds or an HTTP-date (RFC 9110); None when absent or unreadable; never negative.

    ``now`` (seconds since the epoch, default the current time) is what an HTTP-date is measured
    from; a date in the past means "now", i.e. 0. Fractional seconds are accepted too, since some
    servers send them.
    """
    if value is None or not value.strip():
        return None
    try:
        seconds = float(value)
    except ValueError:
        return _seconds_until_http_date(value, time.time() if now is None else now)
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _seconds_until_http_date(value: str, now: float) -> float | None:
    """Seconds from ``now`` until an HTTP-date in any of its three RFC 9110 forms, or None."""
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # the asctime form carries no zone; HTTP-dates are always GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


class RetryableResponse(Exception):
    """A response worth retrying (429 / 5xx): status, message, retry_after (seconds or None)."""

    def __init__(self, status: int, message: str, retry_after: float | None = None):
        self.status = status
        self.message = message
        self.retry_after = retry_after
        super().__init__(f"{status}: {message}")


def call_with_retries(fn: Callable[[], T], *, backoff: Backoff, retry_on: tuple[type[BaseException], ...],
                      on_retry: Callable[[int, BaseException, float], None] | None = None,
                      sleep: Callable[[float], None] = time.sleep) -> T:
    """Call fn until it returns or raises something not in retry_on; at most backoff.max_retries retries.
    on_retry(attempt, exc, wait) is called before each sleep. When retries run out, the last exception is raised.

    ``attempt`` is the 1-based number of the call that just failed. A :class:`RetryableResponse`
    sets the floor of the wait with its ``retry_after``.
    """

    def wait(state: tenacity.RetryCallState) -> float:
        return backoff.wait(state.attempt_number, _retry_after(state.outcome.exception()))

    def before_sleep(state: tenacity.RetryCallState) -> None:
        if on_retry is not None:
            on_retry(state.attempt_number, state.outcome.exception(), state.next_action.sleep)

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(retry_on),
        stop=tenacity.stop_after_attempt(backoff.max_retries + 1),
        wait=wait,
        before_sleep=before_sleep,
        sleep=sleep,
        reraise=True,
    )
    return retrying(fn)


def _retry_after(exc: BaseException | None) -> float | None:
    return exc.retry_after if isinstance(exc, RetryableResponse) else None


class FullJitterRetryPolicy(RetryPolicy):
    """Airflow task retries spaced by :class:`Backoff` (full jitter), for tasks that call services.

    Airflow's own ``retry_exponential_backoff`` derives its "jitter" from a hash of dag, task, logical
    date and try number, without the map index: the mapped tasks of one run that fail together all
    come back at the same instant, into the same overloaded service. This policy draws a fresh
    random wait per failure instead. Its delay bypasses the task's ``max_retry_delay``, so the
    policy caps itself at ``backoff.cap``.

    The task's ``retries`` still bounds how often it runs (``backoff.max_retries`` does not apply
    here). Exceptions in ``fail_without_retry`` fail the task at once; Airflow already does that
    for ``AirflowFailException`` (and its subclasses, such as Conduit's 4xx and quality-gate
    errors) before it asks any policy, which is why it is the default here.
    """

    def __init__(self, backoff: Backoff,
                 fail_without_retry: tuple[type[BaseException], ...] = (AirflowFailException,)) -> None:
        self.backoff = backoff
        self.fail_without_retry = fail_without_retry

    def evaluate(self, exception: BaseException, try_number: int, max_tries: int,
                 context: Context | None = None) -> RetryDecision:
        if isinstance(exception, self.fail_without_retry):
            return RetryDecision.fail(f"{type(exception).__name__} is not worth retrying")
        delay = min(self.backoff.cap, self.backoff.wait(max(1, try_number)))
        return RetryDecision.retry(delay=timedelta(seconds=delay),
                                   reason=f"try {try_number} failed; retrying in {delay:.1f}s (full jitter)")

    def __repr__(self) -> str:
        names = ", ".join(t.__name__ for t in self.fail_without_retry)
        return f"{type(self).__name__}({self.backoff!r}, fail_without_retry=({names}))"
