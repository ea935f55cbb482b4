"""Which logged action outcomes a compensation must make definite (repeat with the key) before
undoing: a task that died mid-call, or a failure whose request may have been done or may still be
(a 429/5xx or an unanswered try: the hook's ServiceOutcomeUnknown). A business refusal or another
4xx, or a call that never reached the service, proves nothing was done."""

from __future__ import annotations

import pytest

from conduit.saga.model import ActionStatus, outcome_unknown


@pytest.mark.parametrize(("status", "error", "unknown"), [
    (ActionStatus.RUNNING, None, True),
    (ActionStatus.FAILED, "ServiceOutcomeUnknown: payment POST /payment/authorizations still failing", True),
    # a 429/5xx is no proof nothing was done (done then failed, or queued behind a gateway that gave up)
    (ActionStatus.FAILED, "ServiceOutcomeUnknown: payment POST /payment/authorizations still failing after 1 "
                          "retries: 503: unavailable: payment is temporarily unavailable", True),
    (ActionStatus.FAILED, "ServiceOutcomeUnknown: inventory POST ... after 4 retries: 429: rate_limited", True),
    (ActionStatus.FAILED, "AirflowTaskTimeout: Timeout, PID: 4242", True),
    # no try reached the service: nothing was done
    (ActionStatus.FAILED, "ServiceRetryableError: payment POST ... still failing after 1 retries: "
                          "HTTPConnectionPool(...): Max retries exceeded (Caused by NewConnectionError(...))", False),
    (ActionStatus.FAILED, "ServiceRequestError: payment POST ... answered 422", False),
    (ActionStatus.FAILED, "BusinessRejection: payment refused (402)", False),
    (ActionStatus.FAILED, None, False),
    (ActionStatus.SUCCEEDED, None, False),
    (ActionStatus.PENDING, None, False),
])
def test_outcome_unknown(status, error, unknown):
    assert outcome_unknown(status, error) is unknown


UNKNOWN = "ServiceOutcomeUnknown: payment POST /payment/authorizations still failing after 1 retries: 503"
NEVER_SENT = "ServiceRetryableError: payment POST ... still failing after 1 retries: NewConnectionError(...)"


@pytest.mark.parametrize(("tries", "unknown"), [
    # an earlier try may have been done; the last one never reached the service
    ([("action_started", None), ("action_failed", UNKNOWN), ("action_started", None),
      ("action_failed", NEVER_SENT)], True),
    # an earlier try's task was killed in its call (no end logged), the last one never reached the service
    ([("action_started", None), ("action_started", None), ("action_failed", NEVER_SENT)], True),
    # two tries overlapping (a retry while a dying one still ran), both ended refused
    ([("action_started", None), ("action_started", None), ("action_failed", NEVER_SENT),
      ("action_failed", "BusinessRejection: payment refused (402)")], False),
    # every try proved nothing was done
    ([("action_started", None), ("action_failed", NEVER_SENT), ("action_started", None),
      ("action_failed", "BusinessRejection: payment refused (402)")], False),
    ([], False),
])
def test_any_try_that_may_have_been_done_makes_the_outcome_unknown(tries, unknown):
    assert outcome_unknown(ActionStatus.FAILED, tries[-1][1] if tries else None, tries) is unknown


def test_a_succeeded_action_is_not_unknown_whatever_its_earlier_tries():
    tries = [("action_started", None), ("action_failed", UNKNOWN), ("action_started", None),
             ("action_succeeded", None)]
    assert outcome_unknown(ActionStatus.SUCCEEDED, None, tries) is False
