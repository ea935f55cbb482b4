"""The one retry policy: backoff bounds, Retry-After parsing, the retry loop, the Airflow task policy."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from airflow.sdk import RetryAction
from airflow.sdk.exceptions import AirflowFailException

from conduit.exceptions import CrmRequestError, CrmRetryableError
from conduit.retries import (
    RETRYABLE_STATUS,
    Backoff,
    FullJitterRetryPolicy,
    RetryableResponse,
    call_with_retries,
    retry_after_seconds,
)

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


# --- Backoff.wait ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("attempt", "ceiling"), [(1, 0.25), (2, 0.5), (3, 1.0), (7, 16.0), (8, 30.0), (50, 30.0)])
def test_wait_is_bounded_by_the_exponential_ceiling_and_the_cap(attempt, ceiling):
    backoff = Backoff()
    assert backoff.wait(attempt, rng=lambda: 0.0) == 0.0  # full jitter: may not wait at all
    assert backoff.wait(attempt, rng=lambda: 0.5) == pytest.approx(ceiling / 2)
    assert backoff.wait(attempt, rng=lambda: 0.999999) == pytest.approx(ceiling, rel=1e-5)


def test_wait_never_overflows_for_huge_attempt_numbers():
    assert Backoff(cap=7.0).wait(100_000, rng=lambda: 1.0) == 7.0


def test_wait_draws_uniformly_below_the_ceiling_by_default():
    waits = [Backoff(base=1.0, cap=4.0).wait(3) for _ in range(200)]
    assert all(0.0 <= w < 4.0 for w in waits) and len(set(waits)) > 1


def test_retry_after_is_a_floor_and_is_not_capped():
    backoff = Backoff(cap=1.0)
    assert backoff.wait(1, retry_after=5.0, rng=lambda: 0.9) == 5.0  # the server asked for more
    assert backoff.wait(3, retry_after=0.1, rng=lambda: 0.5) == 0.5  # the jitter is already longer
    assert backoff.wait(1, retry_after=0.0, rng=lambda: 0.0) == 0.0


@pytest.mark.parametrize("settings", [{"max_retries": -1}, {"base": -0.1}, {"cap": -1.0}, {"factor": 0.5}])
def test_nonsense_settings_are_refused(settings):
    with pytest.raises(ValueError, match="invalid Backoff"):
        Backoff(**settings)


def test_attempt_numbers_start_at_one():
    with pytest.raises(ValueError, match="start at 1"):
        Backoff().wait(0)


# --- retry_after_seconds --------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "seconds"), [("0", 0.0), ("7", 7.0), (" 120 ", 120.0), ("1.5", 1.5)])
def test_retry_after_as_delta_seconds(value, seconds):
    assert retry_after_seconds(value) == seconds


@pytest.mark.parametrize("form", [
    lambda t: format_datetime(t, usegmt=True),          # IMF-fixdate: Sun, 01 Mar 2026 12:00:30 GMT
    lambda t: t.strftime("%A, %d-%b-%y %H:%M:%S GMT"),  # obsolete RFC 850
    lambda t: t.strftime("%a %b %e %H:%M:%S %Y"),       # obsolete asctime (no zone: GMT)
])
def test_retry_after_as_an_http_date_in_each_rfc_9110_form(form):
    assert retry_after_seconds(form(NOW + timedelta(seconds=30)), now=NOW.timestamp()) == 30.0


def test_retry_after_date_is_measured_from_the_current_time_by_default():
    in_a_minute = format_datetime(datetime.now(UTC) + timedelta(seconds=60), usegmt=True)
    assert 55.0 <= retry_after_seconds(in_a_minute) <= 60.0


@pytest.mark.parametrize("value", [None, "", "   ", "soon", "12 seconds", "nan", "inf", "Sun, 99 Foo 2026"])
def test_retry_after_absent_or_unreadable_is_none(value):
    assert retry_after_seconds(value) is None


def test_retry_after_is_never_negative():
    assert retry_after_seconds("-5") == 0.0
    past = format_datetime(NOW - timedelta(hours=1), usegmt=True)
    assert retry_after_seconds(past, now=NOW.timestamp()) == 0.0


# --- call_with_retries ----------------------------------------------------------------------------


class Flaky:
    """Raises the given exceptions in turn, then returns "ok"; counts its calls."""

    def __init__(self, *failures: BaseException):
        self.failures = list(failures)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


def test_retries_what_retry_on_names_then_returns():
    fn = Flaky(ConnectionError("reset"), RetryableResponse(503, "busy"))
    slept: list[float] = []
    assert call_with_retries(fn, backoff=Backoff(), retry_on=(ConnectionError, RetryableResponse),
                             sleep=slept.append) == "ok"
    assert fn.calls == 3 and len(slept) == 2


def test_anything_else_is_raised_at_once():
    fn = Flaky(CrmRequestError(400, "GET", "/x", "bad filter"), RetryableResponse(503, "busy"))
    slept: list[float] = []
    with pytest.raises(CrmRequestError, match="bad filter"):
        call_with_retries(fn, backoff=Backoff(), retry_on=(RetryableResponse,), sleep=slept.append)
    assert fn.calls == 1 and slept == []


def test_stops_after_max_retries_with_the_last_exception():
    fn = Flaky(*(RetryableResponse(500 + i, f"failure {i}") for i in range(10)))
    with pytest.raises(RetryableResponse, match="failure 3") as info:
        call_with_retries(fn, backoff=Backoff(max_retries=3), retry_on=(RetryableResponse,), sleep=lambda _: None)
    assert fn.calls == 4 and info.value.status == 503


def test_zero_max_retries_calls_once():
    fn = Flaky(TimeoutError("slow"))
    with pytest.raises(TimeoutError):
        call_with_retries(fn, backoff=Backoff(max_retries=0), retry_on=(TimeoutError,), sleep=lambda _: None)
    assert fn.calls == 1


def test_on_retry_sees_attempt_exception_and_the_wait_that_is_then_slept():
    failures = (ConnectionError("a"), RetryableResponse(429, "slow down", retry_after=2.0), ConnectionError("c"))
    fn = Flaky(*failures)
    seen: list[tuple[int, BaseException, float]] = []
    slept: list[float] = []
    call_with_retries(fn, backoff=Backoff(base=1.0, cap=4.0), retry_on=(ConnectionError, RetryableResponse),
                      on_retry=lambda *args: seen.append(args), sleep=slept.append)
    assert [(attempt, exc) for attempt, exc, _ in seen] == list(zip([1, 2, 3], failures, strict=True))
    assert [wait for _, _, wait in seen] == slept
    assert 0.0 <= slept[0] < 1.0 and slept[1] == 2.0 and 0.0 <= slept[2] < 4.0  # 2: Retry-After >= ceiling


def test_retry_after_of_a_response_is_honoured():
    fn = Flaky(RetryableResponse(429, "slow down", retry_after=9.0))
    slept: list[float] = []
    call_with_retries(fn, backoff=Backoff(cap=0.5), retry_on=(RetryableResponse,), sleep=slept.append)
    assert slept == [9.0]


def test_retryable_response_names_status_and_message():
    exc = RetryableResponse(429, "You have reached your ten-second limit.", retry_after=1.0)
    assert str(exc) == "429: You have reached your ten-second limit." and exc.retry_after == 1.0
    assert RetryableResponse(503, "busy").retry_after is None
    assert {429, 500, 502, 503, 504} == RETRYABLE_STATUS


# --- FullJitterRetryPolicy ------------------------------------------------------------------------


def test_policy_retries_with_a_jittered_delay_within_the_cap():
    policy = FullJitterRetryPolicy(Backoff(base=10.0, cap=300.0))
    for try_number, ceiling in [(1, 10.0), (2, 20.0), (6, 300.0), (40, 300.0)]:
        decision = policy.evaluate(CrmRetryableError("still 503"), try_number=try_number, max_tries=50)
        assert decision.action is RetryAction.RETRY
        assert timedelta(0) <= decision.retry_delay <= timedelta(seconds=ceiling)
        assert decision.reason.startswith(f"try {try_number} failed")


def test_policy_fails_exceptions_that_must_not_be_retried():
    assert FullJitterRetryPolicy(Backoff()).evaluate(
        CrmRequestError(400, "POST", "/search", "bad filter"), try_number=1, max_tries=3
    ).action is RetryAction.FAIL  # an AirflowFailException subclass, the default
    policy = FullJitterRetryPolicy(Backoff(), fail_without_retry=(KeyError, AirflowFailException))
    decision = policy.evaluate(KeyError("customer_number"), try_number=1, max_tries=3)
    assert decision.action is RetryAction.FAIL and "KeyError" in decision.reason
    assert policy.evaluate(ValueError("x"), try_number=1, max_tries=3).action is RetryAction.RETRY


def test_policy_can_be_set_on_a_task():
    from airflow.sdk import BaseOperator

    policy = FullJitterRetryPolicy(Backoff(base=30.0, cap=600.0))
    task = BaseOperator(task_id="extract", retries=4, retry_policy=policy)
    assert task.retry_policy is policy and task.has_retry_policy
    assert repr(policy) == ("FullJitterRetryPolicy(Backoff(max_retries=6, base=30.0, factor=2.0, cap=600.0), "
                            "fail_without_retry=(AirflowFailException))")


def test_importing_the_module_does_not_load_pandas():
    code = "import sys, conduit.retries; print('pandas' in sys.modules, 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
