"""The order services' HTTP surface: inventory, payment, fraud and shipping under their own paths,
and the ``/_admin`` API that tests and demos use to switch faults and read the ledger.

Handlers only translate HTTP: every service request becomes a :class:`Call` that
:meth:`OrderServices.call` answers. Bodies are parsed inside the call, after the idempotency check,
so a repeat is compared by its text and a malformed body is a 400 that is never remembered.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException

from conduit.orders_standin.state import (
    Call,
    OrderServices,
    OrderServicesConfig,
    ServiceError,
    bad_request,
)

M = TypeVar("M", bound=BaseModel)

# --- request bodies (unknown fields are ignored: callers may send more than a service reads) ---------


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Item(_Body):
    sku: str = Field(min_length=1)
    quantity: int = Field(gt=0)


class ReservationBody(_Body):
    order_id: str = Field(min_length=1)
    items: list[Item] = Field(min_length=1)


class AuthorizationBody(_Body):
    order_id: str = Field(min_length=1)
    amount: float = Field(gt=0)
    currency: str = Field(default="EUR", pattern=r"^[A-Z]{3}$")


class ScoreBody(_Body):
    order_id: str = Field(min_length=1)
    amount: float
    email: str | None = None
    country: str | None = None


class Address(_Body):
    name: str = Field(min_length=1)
    line1: str = Field(min_length=1)
    city: str = Field(min_length=1)
    country: str = Field(min_length=1)


class ShipmentBody(_Body):
    order_id: str = Field(min_length=1)
    address: Address


def canonical_body(raw: bytes) -> str:
    """The body as the idempotency check compares it: key order and whitespace make no difference."""
    if not raw.strip():
        return ""
    try:
        return json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":"))
    except ValueError:
        return raw.decode(errors="replace")


def parse(model: type[M], raw: bytes) -> M:
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        raise bad_request(exc) from None


def required_query(request: Request, name: str) -> str:
    value = request.query_params.get(name, "").strip()
    if not value:
        raise ServiceError(400, "bad_request", f"query parameter {name} is required")
    return value


def _json(status: int, body: object, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers)


# an action gets the request, its raw body and the Idempotency-Key, and returns the answer's body
Action = Callable[[Request, bytes, "str | None"], dict]


def create_app(config: OrderServicesConfig | None = None) -> FastAPI:
    services = OrderServices(config)
    app = FastAPI(title="Conduit order services stand-in", docs_url="/_admin/docs",
                  openapi_url="/_admin/openapi.json")
    app.state.services = services
    late = _LateRequests()

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _json(exc.status_code, {"error": code, "message": f"{request.method} {request.url.path}: {exc.detail}"})

    def route(method: str, path: str, service: str, operation: str, action: Action, *,
              key_required: bool = True, success_status: int = 200) -> None:
        async def endpoint(request: Request) -> JSONResponse:
            raw = await request.body()
            call = Call(service, operation, method, request.url.path, canonical_body(raw),
                        request.headers.get("Idempotency-Key") if method == "POST" else None,
                        key_required=key_required and method == "POST", success_status=success_status)
            answer = services.call(call, lambda key: action(request, raw, key))
            if answer.late_s and answer.reply is not None:  # answered now, done once the wait is over
                late.then(answer.late_s, lambda: services.perform(call, lambda key: action(request, raw, key)))
            elif answer.late_s:  # the request waits in the service, then is done (even if its caller is gone)
                await late.hold(answer.late_s)
                answer = services.perform(call, lambda key: action(request, raw, key))
            if answer.delay_s:
                await asyncio.sleep(answer.delay_s)
            return _json(answer.reply.status, answer.reply.body, answer.reply.headers)

        app.add_api_route(path, endpoint, methods=[method], name=f"{service}.{operation}")

    def object_id(request: Request) -> str:
        return request.path_params["object_id"]

    def lookup(collection: str) -> Action:
        return lambda request, raw, key: services.lookup(collection, required_query(request, "idempotency_key"))

    def getter(collection: str) -> Action:
        return lambda request, raw, key: services.get(collection, object_id(request))

    def settle(op: str) -> Action:
        return lambda request, raw, key: services.settle(op, object_id(request), key)

    # inventory
    route("POST", "/inventory/reservations", "inventory", "reserve", success_status=201,
          action=lambda request, raw, key: services.reserve(**parse(ReservationBody, raw).model_dump(),
                                                            idempotency_key=key))
    route("GET", "/inventory/reservations", "inventory", "get", lookup("reservations"))
    route("GET", "/inventory/reservations/{object_id}", "inventory", "get", getter("reservations"))
    route("POST", "/inventory/reservations/{object_id}/release", "inventory", "release",
          lambda request, raw, key: services.release(object_id(request), key))
    # payment
    route("POST", "/payment/authorizations", "payment", "authorize", success_status=201,
          action=lambda request, raw, key: services.authorize(**parse(AuthorizationBody, raw).model_dump(),
                                                              idempotency_key=key))
    route("GET", "/payment/authorizations", "payment", "get", lookup("authorizations"))
    route("GET", "/payment/authorizations/{object_id}", "payment", "get", getter("authorizations"))
    for op in ("capture", "void", "refund"):
        route("POST", f"/payment/authorizations/{{object_id}}/{op}", "payment", op, settle(op))
    # fraud: scoring changes nothing, so the key is optional (given, it still makes a repeat a replay)
    route("POST", "/fraud/scores", "fraud", "score", key_required=False,
          action=lambda request, raw, key: services.score(**parse(ScoreBody, raw).model_dump(), idempotency_key=key))
    # shipping
    route("POST", "/shipping/shipments", "shipping", "create", success_status=201,
          action=lambda request, raw, key: services.create_shipment(**parse(ShipmentBody, raw).model_dump(),
                                                                     idempotency_key=key))
    route("GET", "/shipping/shipments", "shipping", "get", lookup("shipments"))
    route("GET", "/shipping/shipments/{object_id}", "shipping", "status", getter("shipments"))
    route("POST", "/shipping/shipments/{object_id}/cancel", "shipping", "cancel",
          lambda request, raw, key: services.cancel_shipment(object_id(request), key))

    _admin_routes(app, services, late)
    return app


class _LateRequests:
    """Late requests wait here for their delay, or until ``POST /_admin/late/release`` lets them go:
    a test can then order "the compensation ran" before "the late request was done" without racing
    the clock. ``waiting`` counts the held requests not done yet (``GET /_admin/late``)."""

    def __init__(self) -> None:
        self.released: asyncio.Event | None = None
        self.waiting = 0
        self._later: set[asyncio.Task] = set()  # requests answered already and still to be done

    async def hold(self, seconds: float) -> None:
        released = self._event()
        self.waiting += 1
        try:
            await self._wait(released, seconds)
        finally:
            self.waiting -= 1

    def then(self, seconds: float, perform: Callable[[], object]) -> None:
        """Hold like :meth:`hold`, then ``perform``, in the background: the caller has its answer."""
        released = self._event()
        self.waiting += 1

        async def later() -> None:
            try:
                await self._wait(released, seconds)
                perform()
            finally:
                self.waiting -= 1

        task = asyncio.get_running_loop().create_task(later())
        self._later.add(task)
        task.add_done_callback(self._later.discard)

    def drop_answered(self) -> None:
        """Forget the requests answered already and still to be done (a reset: they must not land
        in the fresh state)."""
        for task in list(self._later):
            task.cancel()

    def release(self) -> int:
        waiting, released, self.released = self.waiting, self.released, None
        if released is not None:
            released.set()
        return waiting

    def _event(self) -> asyncio.Event:
        if self.released is None:
            self.released = asyncio.Event()
        return self.released

    @staticmethod
    async def _wait(released: asyncio.Event, seconds: float) -> None:
        try:
            await asyncio.wait_for(released.wait(), seconds)
        except TimeoutError:
            pass


def _admin_routes(app: FastAPI, services: OrderServices, late: _LateRequests) -> None:
    """No auth and no faults here: the server binds to loopback unless told otherwise."""

    @app.get("/_admin/faults")
    async def get_faults():
        return services.fault_settings()

    @app.put("/_admin/faults")
    async def set_faults(request: Request):
        try:
            return services.set_faults(json.loads(await request.body() or b"{}"))
        except ValidationError as exc:
            return _json(400, bad_request(exc, "faults").reply().body)
        except json.JSONDecodeError as exc:
            return _json(400, ServiceError(400, "bad_request", f"faults: the body is not JSON ({exc})").reply().body)

    @app.delete("/_admin/faults")
    async def clear_faults():
        return services.clear_faults()

    @app.get("/_admin/ledger")
    async def ledger():
        return services.ledger()

    @app.get("/_admin/requests")
    async def request_counts():
        return services.request_counts()

    @app.post("/_admin/late/release")
    async def release_late():
        return {"released": late.release()}

    @app.get("/_admin/late")
    async def late_requests():
        return {"waiting": late.waiting}

    @app.post("/_admin/reset")
    async def reset():
        late.drop_answered()
        services.reset()
        return {"reset": True}
