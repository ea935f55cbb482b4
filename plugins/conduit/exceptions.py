"""Every error Conduit raises, in one place.

The split that matters to Airflow: subclasses of ``AirflowFailException`` end the task at once
(retrying cannot help: bad credentials, a broken spec, a failed quality gate); subclasses of
plain ``AirflowException`` are retried by the task's ``retries`` (a flaky network, a 5xx storm).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

from airflow.sdk.exceptions import AirflowException, AirflowFailException


def mask_secrets(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with each secret, as it is or URL-encoded, replaced by ``***``. For messages made
    from what a remote system answered: an error page or a proxy may echo the request's headers,
    credentials included, and a message reaches places no log masker covers (exceptions, the
    UI's connection test, OpenLineage failure facets). Mask before cutting the text short.
    Secrets shorter than 5 characters are left alone, as Airflow's log masker does."""
    forms = {form for secret in secrets if secret and len(secret) >= 5
             for form in (secret, quote(secret, safe=""), quote(secret), quote_plus(secret))}
    if not forms:
        return text
    pattern = "|".join(re.escape(form) for form in sorted(forms, key=len, reverse=True))
    return re.sub(pattern, "***", text, flags=re.IGNORECASE)


class ConduitError(Exception):
    """Base class for Conduit errors that are not Airflow task outcomes."""


class SpecError(ConduitError, ValueError):
    """A sync spec is malformed. The message names the file, the field and the problem."""

    def __init__(self, path: str, problems: list[tuple[str, str]]):
        self.path = path
        self.problems = problems
        lines = [f"{path}: {field}: {problem}" for field, problem in problems]
        super().__init__("invalid sync spec\n" + "\n".join(lines))


class TransformError(ConduitError, ValueError):
    """A transform cannot be applied to a value (used while building, not for bad data)."""


# --- CRM -----------------------------------------------------------------------------------------


class CrmRetryableError(AirflowException):
    """The CRM answered 429/5xx or the network failed, and retries inside the hook ran out.

    Plain AirflowException: the task's own retries (with exponential backoff) try again later.
    """


class CrmRequestError(AirflowFailException):
    """The CRM rejected the request (4xx other than 429): retrying the same request cannot help."""

    def __init__(self, status: int, method: str, url: str, message: str, category: str | None = None):
        self.status = status
        self.method = method
        self.url = url
        self.category = category
        super().__init__(f"CRM {method} {url} answered {status}{f' {category}' if category else ''}: {message}")


class CrmContractError(AirflowFailException):
    """The CRM answered, but not as its contract says (e.g. a search result without the cursor
    property): retrying the same request returns the same answer. The message names the record."""


class CrmAuthError(CrmRequestError):
    """401/403 from the CRM: the token in the connection is missing, wrong or lacks a scope."""


# --- ERP target ---------------------------------------------------------------------------------


class TargetError(AirflowException):
    """The ERP target failed while loading; the transaction was rolled back (nothing partial)."""


class TargetConfigError(AirflowFailException):
    """The ERP connection or table does not fit the spec (wrong conn type, key missing, ...)."""


# --- Quality ------------------------------------------------------------------------------------


class QualityGateFailed(AirflowFailException):
    """Data failed the spec's expectation suite under its policy; nothing was loaded."""


class EmptySourceError(AirflowFailException):
    """A full refresh read no records at all: loading it would delete every ERP customer."""


class StagedFilesGone(AirflowFailException):
    """A step that reads the run's staged files found none: reconcile removed them once it had
    checked the load (a finished run cleared from a later task). Retrying cannot bring them back."""


class RevenueDataError(AirflowFailException):
    """The orders or customers cannot be reported on as they are (retrying cannot help). The
    message names the table, the column and the offending records."""


class ReconciliationError(AirflowFailException):
    """Source and target disagree after a load (counts or key checksum)."""


# --- Saga ---------------------------------------------------------------------------------------


class SagaNotRunning(AirflowFailException):
    """A forward step of a saga that is no longer running (compensated, committed) was asked to run
    again, e.g. a cleared task: repeating it would reserve or charge after the undo."""


class SagaConflict(AirflowFailException):
    """A second DAG run tried to act on a saga another run owns (the same order triggered twice)."""


class SagaAborted(AirflowFailException):
    """The saga did not commit (a step failed, a rule or a person rejected it, a wait timed out);
    its compensations have run. The message carries the original cause."""


class SagaCompensationFailed(AirflowFailException):
    """A compensation ran out of retries: the saga is left ``compensation_failed`` for a person;
    clearing the failed compensation task resumes it."""


class BusinessRejection(AirflowFailException):
    """A service refused for a business reason (out of stock, payment declined, undeliverable):
    retrying the same request cannot help, so the saga compensates at once."""


class ServiceRequestError(AirflowFailException):
    """A service rejected the request itself (4xx other than 429): fix the request, not retry it."""


class ServiceRetryableError(AirflowException):
    """A service kept answering 429/5xx or timing out after the hook's retries; the task retries."""


class ServiceOutcomeUnknown(ServiceRetryableError):
    """As :class:`ServiceRetryableError`, and at least one try may have been done: answered 429/5xx
    (no proof nothing was done), or sent and never answered (read timeout, a reply cut off). A
    saga's compensation repeats such an action with its idempotency key before undoing it
    (``conduit.saga.model.outcome_unknown``)."""


class OrderFeedError(AirflowFailException):
    """The new-orders feed cannot be read as it is; the message names the file and the bad lines."""


# --- Plan and approval --------------------------------------------------------------------------


class StalePlanError(AirflowFailException):
    """The ERP changed between the plan and the load (another writer, another run), or the load
    would change other rows than planned: applying it would not be what was approved. Nothing
    changed; run the sync again to plan anew."""


class SyncRunInFlight(AirflowFailException):
    """A quarantine replay found a run of its sync in flight: committing into the sync's table now
    would move the ERP under that run's plan (an approved plan would then be refused as stale).
    Nothing was replayed; not retried (the run may wait hours for its approval). The message
    names the run: replay again after it ends."""


class PlanRejected(AirflowFailException):
    """A person rejected the plan (or nobody answered in time): nothing changed, the watermark
    stays, and the next run plans again."""


# --- Tryton ERP ---------------------------------------------------------------------------------


class TrytonRequestError(AirflowFailException):
    """Tryton refused the request (4xx other than 429: a validation error, a duplicate code, no such
    record): retrying the same request cannot help. Carries Tryton's message, never the API key."""

    def __init__(self, status: int, method: str, path: str, conn_id: str, message: str, description: str = ""):
        self.status = status
        self.method = method
        self.path = path
        self.conn_id = conn_id
        self.tryton_message = message
        self.description = description
        detail = f"{message} ({description})" if description and description not in message else message
        super().__init__(f"Tryton {method} {path} (connection {conn_id!r}) answered {status}: {detail}")


class TrytonAuthError(TrytonRequestError):
    """401/403 from Tryton: the connection's REST API key is wrong, cancelled or not validated."""


class TrytonRetryableError(AirflowException):
    """Tryton kept answering 429/5xx, or the network kept failing, after the hook's retries; the
    task's own retries try again later."""


class CrmDailyLimitReached(AirflowFailException):
    """The CRM account's daily request limit is used up, or would be by this run: not retried
    (a retry before the reset fails the same way). Nothing was loaded and the watermark did not
    move, so the next run after the reset reads everything this one missed."""

    def __init__(self, limit: int | None, remaining: int, resets_at: str, *, needed: int | None = None):
        self.limit, self.remaining, self.resets_at, self.needed = limit, remaining, resets_at, needed
        need = f"; this run needs about {needed:,}" if needed is not None else ""
        of = f" of {limit:,}" if limit is not None else ""
        super().__init__(
            f"HubSpot daily API limit: {remaining:,} requests left{of} for today{need}. The limit resets at "
            f"{resets_at}. Nothing was loaded and the watermark did not move: the next run after the reset "
            "reads everything this one missed.")


class CrmConfigError(AirflowFailException):
    """The CRM connection is misconfigured (an unknown rate-limit tier, say): fix the connection."""
