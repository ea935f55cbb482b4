"""Which logged action outcomes a compensation must make definite (repeat with the key) before
undoing: a task that died mid-call, or a failure whose request may still be done."""

from __future__ import annotations

import pytest

from conduit.saga.model import ActionStatus, outcome_unknown


@pytest.mark.parametrize(("status", "error", "unknown"), [
    (ActionStatus.RUNNING, None, True),
    (ActionStatus.FAILED, "ServiceOutcomeUnknown: payment POST /payment/authorizations still failing", True),
    (ActionStatus.FAILED, "AirflowTaskTimeout: Timeout, PID: 4242", True),
    (ActionStatus.FAILED, "ServiceRetryableError: payment POST ... 503 unavailable", False),  # nothing was done
    (ActionStatus.FAILED, "ServiceRequestError: payment POST ... answered 422", False),
    (ActionStatus.FAILED, "BusinessRejection: payment refused (402)", False),
    (ActionStatus.FAILED, None, False),
    (ActionStatus.SUCCEEDED, None, False),
    (ActionStatus.PENDING, None, False),
])
def test_outcome_unknown(status, error, unknown):
    assert outcome_unknown(status, error) is unknown
