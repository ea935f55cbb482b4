"""Switchable faults of the order services, one settings object per service.

Every service has the same transient faults (the next N calls fail with a 503, a 429 or a timeout
after the work was done, or wait in the service before the work is done, or fail with a 503 that
does not mean nothing was done: the work done first, or done later); each adds the business
refusals a saga has to handle. Settings are patched, not replaced: ``PUT /_admin/faults`` changes
only the keys it names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

OPERATIONS: dict[str, tuple[str, ...]] = {
    "inventory": ("reserve", "release", "get"),
    "payment": ("authorize", "capture", "void", "refund", "get"),
    "fraud": ("score",),
    "shipping": ("create", "cancel", "status", "get"),
}
SERVICES = tuple(OPERATIONS)
Mode = Literal["5xx", "429", "timeout", "late", "5xx_after_effect", "5xx_then_late"]
Score = Annotated[float, Field(ge=0, le=1)]


class TransientFaults(BaseModel):
    """The next ``fail_next`` calls to the service (only those of ``operation``, when given) fail."""

    model_config = ConfigDict(extra="forbid")
    service: ClassVar[str] = ""

    fail_next: int = Field(default=0, ge=0, description="how many calls still fail; each faulted call uses one")
    operation: str | None = Field(default=None, description="only calls of this operation fail")
    mode: Mode = Field(default="5xx", description="5xx: 503 unavailable (or ``status``); 429: rate_limited; "
                                                  "timeout: done and remembered, answered after delay_s; "
                                                  "late: held delay_s (or until POST /_admin/late/release) "
                                                  "before it is done (a request queued in the service), "
                                                  "then done and answered; "
                                                  "5xx_after_effect: done (its answer remembered for a "
                                                  "repeat), then answered 503; "
                                                  "5xx_then_late: answered 503 at once, and held like a late "
                                                  "request, then done (a gateway gave up on a service "
                                                  "still working)")
    key_in_use_conflict: bool = Field(
        default=False,
        description="a request whose Idempotency-Key is that of a request still held (late, 5xx_then_late) "
                    "and not done yet is answered 409 idempotency_key_in_use, and not remembered (the "
                    "IETF Idempotency-Key draft's answer while the first request is still processed); "
                    "off, it is done now and the held one, done later, is its replay")
    status: int = Field(default=503, ge=500, le=599,
                        description="the status a 5xx, 5xx_after_effect or 5xx_then_late fault answers with "
                                    "(503 unavailable, 507 insufficient storage, ...)")
    retry_after_s: int = Field(default=1, ge=0, description="the 429's Retry-After header")
    delay_s: float = Field(default=3.0, ge=0,
                           description="how long a timeout fault holds the answer (a late or 5xx_then_late "
                                       "fault the request) back")

    @field_validator("operation")
    @classmethod
    def _known_operation(cls, value: str | None) -> str | None:
        if value is not None and value not in OPERATIONS[cls.service]:
            raise ValueError(f"unknown {cls.service} operation {value!r}; one of {', '.join(OPERATIONS[cls.service])}")
        return value


class InventoryFaults(TransientFaults):
    service: ClassVar[str] = "inventory"
    out_of_stock_skus: list[str] = Field(default_factory=list, description="these SKUs have 0 units")


class PaymentFaults(TransientFaults):
    service: ClassVar[str] = "payment"
    decline_orders: list[str] = Field(default_factory=list)
    decline_all: bool = False
    decline_above: float | None = Field(default=None, description="amounts above this are declined")


class FraudFaults(TransientFaults):
    service: ClassVar[str] = "fraud"
    scores: dict[str, Score] = Field(default_factory=dict, description="order_id -> score")
    default_score: Score | None = Field(default=None, description="the score of orders not in `scores`")


class ShippingFaults(TransientFaults):
    service: ClassVar[str] = "shipping"
    fail_create_orders: list[str] = Field(default_factory=list, description="refused as undeliverable")
    never_ship_orders: list[str] = Field(default_factory=list, description="stay `created` forever")
    ship_after_s: float | None = Field(default=None, ge=0, description="overrides the server's --ship-after-s")
    status_delay_s: float = Field(default=0.0, ge=0, description="the status GET answers this much later")


class Faults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inventory: InventoryFaults = Field(default_factory=InventoryFaults)
    payment: PaymentFaults = Field(default_factory=PaymentFaults)
    fraud: FraudFaults = Field(default_factory=FraudFaults)
    shipping: ShippingFaults = Field(default_factory=ShippingFaults)


def merge_faults(current: Faults, patch: object) -> Faults:
    """``current`` with the keys ``patch`` names replaced; raises pydantic's ValidationError, which
    names every unknown or invalid key, and leaves ``current`` untouched when it does."""
    if not isinstance(patch, dict):
        return Faults.model_validate(patch)  # raises: the body must be an object
    merged: dict[str, object] = current.model_dump()
    for name, given in patch.items():
        merged[name] = {**merged[name], **given} if name in SERVICES and isinstance(given, dict) else given
    return Faults.model_validate(merged)


@dataclass(frozen=True)
class Injected:
    """A transient fault that fired for one call."""

    mode: Mode
    retry_after_s: int
    delay_s: float
    status: int = 503


def take_fault(settings: TransientFaults, operation: str) -> Injected | None:
    """Fires one of the next ``fail_next`` faults if this call's operation is one they apply to."""
    if settings.fail_next <= 0 or settings.operation not in (None, operation):
        return None
    settings.fail_next -= 1
    return Injected(settings.mode, settings.retry_after_s, settings.delay_s, settings.status)
