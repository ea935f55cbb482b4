"""The order services' state and rules, pure Python (the app only translates HTTP).

:meth:`OrderServices.call` is the one door every service request goes through: it counts the
request, fires a switched-on transient fault, enforces the ``Idempotency-Key`` contract (a repeat is
answered with the first answer and does nothing again) and runs the business operation. The ledger
gets one entry per effect that really happened, so tests can tell "done once" from "done twice".

All state sits behind one re-entrant lock: the server runs one process, and a lock per object
would buy nothing but deadlocks.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import ValidationError

from conduit.orders_standin.faults import SERVICES, Faults, Injected, merge_faults, take_fault

# operation -> (the status it leads to, the one status it may start from); a call on an object
# already in the target status is a no-op repeat: 200, unchanged, no ledger entry
MOVES: dict[str, tuple[str, str]] = {
    "release": ("released", "reserved"),
    "capture": ("captured", "authorized"),
    "void": ("voided", "authorized"),
    "refund": ("refunded", "captured"),
    "cancel": ("cancelled", "created"),
}
_ADVICE = {
    ("void", "captured"): "; refund it instead",
    ("refund", "authorized"): "; void it instead",
    ("cancel", "shipped"): "; it has left the warehouse",
}
_SERVER_ERRORS = {500: "internal_error", 501: "not_implemented", 502: "bad_gateway", 503: "unavailable",
                  504: "gateway_timeout", 505: "http_version_not_supported", 507: "insufficient_storage"}
_KINDS = {"reservations": "reservation", "authorizations": "authorization", "shipments": "shipment"}


@dataclass
class OrderServicesConfig:
    ship_after_s: float = 1.0
    default_stock: int = 1_000_000


@dataclass(frozen=True)
class Reply:
    status: int
    body: dict
    headers: dict[str, str] = field(default_factory=dict)


class ServiceError(Exception):
    """An answer other than success: ``{"error": code, "message": ...}``."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}

    def reply(self) -> Reply:
        return Reply(self.status, {"error": self.code, "message": self.message}, self.headers)


def bad_request(exc: ValidationError, what: str = "body") -> ServiceError:
    """A 400 naming every offending field, e.g. ``body.items.0.quantity: Input should be greater than 0``."""
    problems = [f"{'.'.join([what, *map(str, e['loc'])])}: {e['msg']}" for e in exc.errors()]
    return ServiceError(400, "bad_request", "; ".join(problems))


@dataclass(frozen=True)
class Call:
    """One request as the idempotency contract sees it. ``body`` is the canonical JSON text."""

    service: str
    operation: str
    method: str = "GET"
    path: str = ""
    body: str = ""
    idempotency_key: str | None = None
    key_required: bool = False
    success_status: int = 200


@dataclass(frozen=True)
class Answer:
    reply: Reply | None  # None: a late request, not done yet (see late_s)
    delay_s: float = 0.0  # hold the answer back this long (timeout fault, slow status endpoint)
    # a late fault: wait this long, then OrderServices.perform does the request (with a reply, a
    # 5xx_then_late fault: the reply is sent at once and the request is done after the wait)
    late_s: float = 0.0


@dataclass(frozen=True)
class _Remembered:
    method: str
    path: str
    body: str
    reply: Reply


def stable_score(order_id: str) -> float:
    """A fraud score that is the same for an order on every run and machine, in [0, 0.25)."""
    digest = hashlib.sha256(order_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % 2500 / 10_000


def _key(call: Call) -> str | None:
    return (call.idempotency_key or "").strip() or None


def fault_reply(service: str, fault: Injected) -> Reply:
    if fault.mode == "429":
        return ServiceError(429, "rate_limited", f"{service}: too many requests, retry after {fault.retry_after_s} s",
                            {"Retry-After": str(fault.retry_after_s)}).reply()
    code = _SERVER_ERRORS.get(fault.status, "server_error")
    return ServiceError(fault.status, code, f"{service} is temporarily unavailable").reply()


def _locked(method):
    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)

    return locked


class OrderServices:
    """Inventory, payment, fraud and shipping in memory. ``clock`` returns epoch seconds."""

    def __init__(self, config: OrderServicesConfig | None = None, clock: Callable[[], float] = time.time):
        self.config = config or OrderServicesConfig()
        self.clock = clock
        self._lock = threading.RLock()
        self.reset()

    @_locked
    def reset(self) -> None:
        self.faults = Faults()
        self.objects: dict[str, dict[str, dict]] = {name: {} for name in _KINDS}
        self.held: Counter[str] = Counter()  # units per SKU held by live reservations
        self.entries: list[tuple[str, dict]] = []  # (service, ledger entry), in global order
        self.remembered: dict[tuple[str, str], _Remembered] = {}
        self.in_flight: Counter[tuple[str, str]] = Counter()  # (service, key) of held requests not done yet
        self.counts: defaultdict[str, defaultdict[str, Counter[str]]] = defaultdict(lambda: defaultdict(Counter))

    # --- the door every request goes through ----------------------------------------------------

    @_locked
    def call(self, call: Call, action: Callable[[str | None], dict]) -> Answer:
        """Runs ``action(idempotency_key)`` under the contract; a ServiceError it raises becomes the answer."""
        counts = self.counts[call.service][call.operation]
        counts["received"] += 1
        fault = take_fault(getattr(self.faults, call.service), call.operation)
        if fault is not None:
            counts["faulted"] += 1
            if fault.mode == "late":  # nothing happened yet: the caller performs it after the delay
                self._hold(call)
                return Answer(None, late_s=fault.delay_s)
            if fault.mode == "5xx_then_late":  # a 503 now, and still done after the delay
                self._hold(call)
                return Answer(fault_reply(call.service, fault), late_s=fault.delay_s)
            if fault.mode == "5xx_after_effect":  # done (a repeat is replayed), and yet a 503
                self._execute(call, action, counts)
                return Answer(fault_reply(call.service, fault))
            if fault.mode != "timeout":  # nothing happened and nothing is remembered: a retry must run
                return Answer(fault_reply(call.service, fault))
        in_use = self._key_in_use(call)
        if in_use is not None:
            return Answer(in_use)
        reply = self._execute(call, action, counts)
        slow = self.faults.shipping.status_delay_s if (call.service, call.operation) == ("shipping", "status") else 0
        return Answer(reply, (fault.delay_s if fault else 0.0) + slow)

    @_locked
    def perform(self, call: Call, action: Callable[[str | None], dict]) -> Answer:
        """A late request, once its delay is over: done now, under the same contract (a key the
        service saw meanwhile makes it a repeat that does nothing)."""
        key = _key(call)
        if key is not None and self.in_flight[(call.service, key)] > 0:
            self.in_flight[(call.service, key)] -= 1
        return Answer(self._execute(call, action, self.counts[call.service][call.operation]))

    def _hold(self, call: Call) -> None:
        key = _key(call)
        if key is not None:
            self.in_flight[(call.service, key)] += 1

    def _key_in_use(self, call: Call) -> Reply | None:
        """The 409 for a request whose key is that of a held request not done yet (when the
        service's ``key_in_use_conflict`` is on): no answer for the key exists yet to replay."""
        key = _key(call)
        if (key is None or not getattr(self.faults, call.service).key_in_use_conflict
                or not self.in_flight[(call.service, key)] or (call.service, key) in self.remembered):
            return None
        return ServiceError(409, "idempotency_key_in_use",
                            f"a request with Idempotency-Key {key!r} is still being processed; "
                            f"retry it later").reply()

    def _execute(self, call: Call, action: Callable[[str | None], dict], counts: Counter[str]) -> Reply:
        key = _key(call)
        if key is None and call.key_required:
            return ServiceError(400, "missing_idempotency_key",
                                f"{call.method} {call.path} needs an Idempotency-Key header").reply()
        first = self.remembered.get((call.service, key)) if key else None
        if first is not None:
            if (first.method, first.path, first.body) == (call.method, call.path, call.body):
                counts["replayed"] += 1
                return first.reply
            return ServiceError(422, "idempotency_key_reused",
                                f"Idempotency-Key {key!r} was first used for {first.method} {first.path} with "
                                f"another body; {call.method} {call.path} needs a new key").reply()
        try:
            reply = Reply(call.success_status, action(key))
        except ServiceError as exc:
            reply = exc.reply()
        if key is not None and reply.status != 400:  # a rejected request never started: the fix may reuse the key
            self.remembered[(call.service, key)] = _Remembered(call.method, call.path, call.body, reply)
        return reply

    # --- shared helpers ---------------------------------------------------------------------------

    def _record(self, service: str, op: str, order_id: str, object_id: str | None, key: str | None,
                **details) -> None:
        entry = {"seq": len(self.entries) + 1, "op": op, "order_id": order_id, "object_id": object_id,
                 "idempotency_key": key, "at": self.clock(), **copy.deepcopy(details)}
        self.entries.append((service, entry))

    def _create(self, collection: str, prefix: str, obj: dict) -> dict:
        object_id = f"{prefix}-{len(self.objects[collection]) + 1}"
        self.objects[collection][object_id] = obj = {f"{_KINDS[collection]}_id": object_id, **obj}
        return obj

    def _find(self, collection: str, object_id: str) -> dict:
        obj = self.objects[collection].get(object_id)
        if obj is None:
            raise ServiceError(404, "not_found", f"no {_KINDS[collection]} {object_id!r}")
        return self._refresh(collection, obj)

    @_locked
    def get(self, collection: str, object_id: str) -> dict:
        return copy.deepcopy(self._find(collection, object_id))

    @_locked
    def lookup(self, collection: str, idempotency_key: str) -> dict:
        """What a compensation asks: did the call with this key create something?"""
        found = [self._refresh(collection, obj) for obj in self.objects[collection].values()
                 if obj["idempotency_key"] == idempotency_key]
        return {"results": copy.deepcopy(found)}

    def _move(self, service: str, collection: str, object_id: str, op: str, key: str | None, **details) -> dict:
        obj = self._find(collection, object_id)
        target, source = MOVES[op]
        if obj["status"] == source:
            obj["status"] = target
            self._record(service, op, obj["order_id"], object_id, key, **details)
        elif obj["status"] != target:
            raise ServiceError(409, "invalid_state",
                               f"{_KINDS[collection]} {object_id} of order {obj['order_id']} is {obj['status']}; "
                               f"{op} needs {source}{_ADVICE.get((op, obj['status']), '')}")
        return copy.deepcopy(obj)

    # --- inventory ----------------------------------------------------------------------------------

    def available(self, sku: str) -> int:
        if sku in self.faults.inventory.out_of_stock_skus:
            return 0
        return max(0, self.config.default_stock - self.held[sku])

    @_locked
    def reserve(self, order_id: str, items: list[dict], idempotency_key: str | None) -> dict:
        """All items or nothing."""
        wanted: Counter[str] = Counter()
        for item in items:
            wanted[item["sku"]] += item["quantity"]
        for sku, quantity in wanted.items():
            if self.available(sku) < quantity:
                raise ServiceError(409, "out_of_stock", f"order {order_id}: SKU {sku} has {self.available(sku)} "
                                                        f"units available, {quantity} wanted")
        self.held.update(wanted)
        reservation = self._create("reservations", "res", {
            "order_id": order_id, "items": copy.deepcopy(items), "status": "reserved",
            "idempotency_key": idempotency_key})
        self._record("inventory", "reserve", order_id, reservation["reservation_id"], idempotency_key, items=items)
        return copy.deepcopy(reservation)

    @_locked
    def release(self, reservation_id: str, idempotency_key: str | None) -> dict:
        reservation = self._find("reservations", reservation_id)
        if reservation["status"] == "reserved":
            for item in reservation["items"]:
                self.held[item["sku"]] -= item["quantity"]
        return self._move("inventory", "reservations", reservation_id, "release", idempotency_key,
                          items=reservation["items"])

    # --- payment --------------------------------------------------------------------------------------

    def _decline_reason(self, order_id: str, amount: float) -> str | None:
        faults = self.faults.payment
        if faults.decline_all:
            return "all payments are declined"
        if order_id in faults.decline_orders:
            return "the card was declined"
        if faults.decline_above is not None and amount > faults.decline_above:
            return f"the amount is above the limit of {faults.decline_above}"
        return None

    @_locked
    def authorize(self, order_id: str, amount: float, currency: str, idempotency_key: str | None) -> dict:
        reason = self._decline_reason(order_id, amount)
        if reason:
            raise ServiceError(402, "declined", f"payment of {amount} {currency} for order {order_id} declined: {reason}")
        authorization = self._create("authorizations", "auth", {
            "order_id": order_id, "amount": amount, "currency": currency, "status": "authorized",
            "idempotency_key": idempotency_key})
        self._record("payment", "authorize", order_id, authorization["authorization_id"], idempotency_key,
                     amount=amount, currency=currency)
        return copy.deepcopy(authorization)

    @_locked
    def settle(self, op: str, authorization_id: str, idempotency_key: str | None) -> dict:
        """capture, void or refund."""
        authorization = self._find("authorizations", authorization_id)
        return self._move("payment", "authorizations", authorization_id, op, idempotency_key,
                          amount=authorization["amount"], currency=authorization["currency"])

    # --- fraud ----------------------------------------------------------------------------------------

    @_locked
    def score(self, order_id: str, amount: float, idempotency_key: str | None, **_signals) -> dict:
        faults = self.faults.fraud
        score = faults.scores.get(order_id, faults.default_score)
        score = stable_score(order_id) if score is None else score
        self._record("fraud", "score", order_id, None, idempotency_key, score=score, amount=amount)
        return {"order_id": order_id, "score": score}

    # --- shipping -------------------------------------------------------------------------------------

    def _refresh(self, collection: str, obj: dict) -> dict:
        """A created shipment has shipped once ``ship_after_s`` passed (unless held by ``never_ship_orders``)."""
        faults = self.faults.shipping
        ship_after = self.config.ship_after_s if faults.ship_after_s is None else faults.ship_after_s
        if (collection == "shipments" and obj["status"] == "created" and obj["order_id"] not in faults.never_ship_orders
                and self.clock() - obj["created_at"] >= ship_after):
            obj["status"] = "shipped"
        return obj

    @_locked
    def create_shipment(self, order_id: str, address: dict, idempotency_key: str | None) -> dict:
        if order_id in self.faults.shipping.fail_create_orders:
            raise ServiceError(422, "undeliverable", f"order {order_id} cannot be delivered to {address.get('city')}, "
                                                     f"{address.get('country')}")
        shipment = self._create("shipments", "shp", {
            "order_id": order_id, "status": "created", "idempotency_key": idempotency_key,
            "address": copy.deepcopy(address), "created_at": self.clock()})
        self._record("shipping", "create", order_id, shipment["shipment_id"], idempotency_key)
        return copy.deepcopy(shipment)

    @_locked
    def cancel_shipment(self, shipment_id: str, idempotency_key: str | None) -> dict:
        return self._move("shipping", "shipments", shipment_id, "cancel", idempotency_key)

    # --- admin ----------------------------------------------------------------------------------------

    @_locked
    def set_faults(self, patch: object) -> dict:
        self.faults = merge_faults(self.faults, patch)
        return self.faults.model_dump()

    @_locked
    def clear_faults(self) -> dict:
        self.faults = Faults()
        return self.faults.model_dump()

    @_locked
    def fault_settings(self) -> dict:
        return self.faults.model_dump()

    @_locked
    def ledger(self) -> dict[str, list[dict]]:
        grouped: dict[str, list[dict]] = {name: [] for name in SERVICES}
        for service, entry in self.entries:
            grouped[service].append(copy.deepcopy(entry))
        return grouped

    @_locked
    def request_counts(self) -> dict[str, dict[str, dict[str, int]]]:
        return {service: {op: {name: counts[name] for name in ("received", "faulted", "replayed")}
                          for op, counts in ops.items()} for service, ops in self.counts.items()}
