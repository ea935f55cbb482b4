"""The stand-in's HTTP surface: HubSpot's CRM objects API under both path families, and the
``/_admin`` API that tests and demos use to change data and switch faults.

All state lives in :class:`Standin`; handlers only translate HTTP. Handlers are ``async`` and
never await while touching state, so the event loop serialises every change (no locks).
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import re
import time
from collections import Counter
from dataclasses import dataclass, field, replace

from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from conduit.standin.data import DEFAULT_ANCHOR_MS, generate, iso_ms
from conduit.standin.errors import ApiError, not_found, validation_error
from conduit.standin.faults import BodyFault, FaultInjector, Faults, Limits, RateLimiter
from conduit.standin.search import execute, parse_search
from conduit.standin.store import (
    DELETED,
    LIVE,
    SEARCH_DEFAULT_PROPERTIES,
    ObjectStore,
    decode_cursor,
    encode_cursor,
)
from conduit.standin.webhooks import (
    Subscription,
    WebhookSender,
    change_events,
    merge_event,
    privacy_deletion_event,
)

# A page of 100 records: ~0.1 ms with orjson or msgspec (installed with Airflow), ~1 ms with json.
try:
    from orjson import dumps
except ImportError:
    try:
        from msgspec.json import encode as dumps
    except ImportError:
        _encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))

        def dumps(obj: object) -> bytes:
            return _encoder.encode(obj).encode()

OBJECT_TYPES = ("contacts", "companies")
LIST_MAX_LIMIT = 100
BATCH_MAX_INPUTS = 100
_VERSION = re.compile(r"\d{4}-\d{2}")


@dataclass
class StandinConfig:
    seed: int = 1
    contacts: int = 1000
    companies: int = 50
    bad_emails: int = 0
    junk_phones: float = 0.0
    unknown_countries: float = 0.0
    token: str = "standin-token"
    anchor_ms: int = DEFAULT_ANCHOR_MS
    faults: Faults = field(default_factory=Faults)
    enforce_rate_limits: bool = False
    limits: Limits = field(default_factory=Limits)


def now_ms() -> int:
    return int(time.time() * 1000)


class Standin:
    """The server's whole state: stores, faults, rate limits, counters and the webhook sender."""

    def __init__(self, config: StandinConfig):
        self.config = config
        self.webhooks = WebhookSender()
        self.limiter = RateLimiter(config.limits, config.enforce_rate_limits)
        self.requests: Counter[str] = Counter()
        self.sent: Counter[str] = Counter()
        self.last_records: dict[tuple, dict] = {}  # per endpoint and next cursor, a page's last record (repeat_record)
        self.set_faults(config.faults)
        self.reset()

    def reset(self, **overrides) -> None:
        """Back to the seeded data (optionally with other sizes or seed)."""
        config = replace(self.config, **overrides)
        try:
            dataset = generate(config.seed, config.contacts, config.companies, config.bad_emails, config.anchor_ms,
                               junk_phones=config.junk_phones, unknown_countries=config.unknown_countries)
        except ValueError as exc:
            raise validation_error(str(exc)) from None
        self.config = config
        self.stores = {"contacts": ObjectStore(dataset.contacts, now_ms),
                       "companies": ObjectStore(dataset.companies, now_ms)}

    def store(self, object_type: str) -> ObjectStore:
        store = self.stores.get(object_type)
        if store is None:
            raise ApiError(400, "VALIDATION_ERROR", f"Unable to infer object type from: {object_type}")
        return store

    def set_faults(self, faults: Faults) -> None:
        self.faults = faults
        self.injector = FaultInjector(faults)
        # with equal_timestamps every admin change gets the millisecond the fault was switched on
        self.equal_ms = now_ms() if faults.equal_timestamps else None

    def change_ms(self, explicit: int | None) -> int | None:
        return explicit if explicit is not None else self.equal_ms

    def lagging(self, store: ObjectStore) -> frozenset[int]:
        """Records changed too recently for the (simulated) search index."""
        lag = self.faults.search_lag_ms
        if not lag:
            return frozenset()
        cutoff = now_ms() - lag
        return frozenset(pos for pos, at in store.changed_at.items() if at > cutoff)

    def stats(self) -> dict:
        return {"objects": {name: store.counts() for name, store in self.stores.items()},
                "requests": dict(self.requests), "sent": dict(self.sent), "webhooks": dict(self.webhooks.stats)}


# --- helpers over query parameters ----------------------------------------------------------------


def _property_names(request: Request) -> list[str] | None:
    """``properties`` as comma lists and/or repeated parameters (the SDK repeats them)."""
    raw = request.query_params.getlist("properties")
    names = [name.strip() for value in raw for name in value.split(",") if name.strip()]
    return names or None


def _flag(request: Request, name: str) -> bool:
    value = request.query_params.get(name, "false").lower()
    if value not in ("true", "false"):
        raise validation_error(f"Query parameter {name} must be true or false, got {value!r}", field=name)
    return value == "true"


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit", "10")
    try:
        limit = int(raw)
    except ValueError:
        raise validation_error(f"limit must be an integer, got {raw!r}", field="limit") from None
    if not 1 <= limit <= LIST_MAX_LIMIT:
        raise validation_error(f"limit must be between 1 and {LIST_MAX_LIMIT}, got {limit}", field="limit")
    return limit


async def _json_body(request: Request) -> dict:
    try:
        body = json.loads(await request.body() or b"{}")
    except json.JSONDecodeError as exc:
        raise validation_error(f"Invalid input JSON on line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    if not isinstance(body, dict):
        raise validation_error("Request body must be a JSON object")
    return body


def _json(status: int, body: object, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(body), status_code=status, headers=headers, media_type="application/json")


async def _after_of(request: Request) -> str | None:
    """The paging cursor a list (query) or search (JSON body) request sends, if any."""
    if request.method == "GET":
        return request.query_params.get("after")
    try:
        after = (await request.json()).get("after")
    except (ValueError, AttributeError):
        return None
    return None if after is None else str(after)


class _ConnectionDropped(Exception):
    """Raised mid-body: the server closes the connection with the body half sent."""


async def _spoiled(fault: BodyFault, status: int, body: dict, headers: dict[str, str],
                   previous: dict | None) -> Response:
    """A reply spoiled as ``fault`` says (see :class:`~conduit.standin.faults.BodyFault`)."""
    kind = fault.kind
    if kind == "stall":
        await asyncio.sleep(fault.stall_ms / 1000)
        return _json(status, body, headers)
    if kind in ("no_properties", "wrong_types", "repeat_record") and isinstance(body.get("results"), list):
        results = [dict(r) for r in body["results"]]
        if kind == "no_properties":
            for record in results:
                record.pop("properties", None)
        elif kind == "wrong_types":
            for i, record in enumerate(results):
                names = list(record.get("properties") or {})
                if names:
                    record["properties"] = {**record["properties"], names[i % len(names)]: [i] if i % 2 else i}
        elif previous is not None:
            results.insert(0, previous)
        return _json(status, {**body, "results": results}, headers)
    content = dumps(body)
    if kind == "truncate":
        return Response(content[: len(content) // 2], status_code=status, headers=headers,
                        media_type="application/json")
    if kind == "malformed":
        return Response(b"<html><body>502 Bad Gateway</body></html>", status_code=status, headers=headers,
                        media_type="application/json")

    async def half_then_drop():
        yield content[: len(content) // 2]
        raise _ConnectionDropped("the stand-in dropped the connection mid-body (fault: reset)")

    return StreamingResponse(half_then_drop(), status_code=status, media_type="application/json",
                             headers={**headers, "Content-Length": str(len(content))})


# --- admin request bodies ---------------------------------------------------------------------------

PropertyValue = str | int | float | bool | None


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateBody(_Body):
    properties: dict[str, PropertyValue] = Field(default_factory=dict)
    createdate_ms: int | None = None
    lastmodifieddate_ms: int | None = None


class ModifyBody(_Body):
    properties: dict[str, PropertyValue] = Field(default_factory=dict)
    lastmodifieddate_ms: int | None = None


class BulkModifyBody(_Body):
    count: int | None = Field(default=None, ge=1)
    ids: list[int | str] | None = None
    properties: dict[str, PropertyValue] = Field(default_factory=dict)
    lastmodifieddate_ms: int | None = None
    seed: int | None = Field(default=None, description="pick the random records reproducibly")


class ResetBody(_Body):
    seed: int | None = None
    contacts: int | None = Field(default=None, ge=0)
    companies: int | None = Field(default=None, ge=0)
    bad_emails: int | None = Field(default=None, ge=0)
    junk_phones: float | None = Field(default=None, ge=0, le=1, description="share of contacts with a junk phone")
    unknown_countries: float | None = Field(default=None, ge=0, le=1,
                                            description="share of contacts with a country that is none")


class RateLimitsBody(_Body):
    """New limits for the limiter, which starts afresh (empty windows, nothing used today)."""

    interval_max: int = Field(default=Limits.interval_max, ge=1)
    interval_ms: int = Field(default=Limits.interval_ms, ge=1)
    daily_max: int = Field(default=Limits.daily_max, ge=0)
    search_per_second: int = Field(default=Limits.search_per_second, ge=1)
    retry_after: bool = Field(default=True, description="send Retry-After on 429s (HubSpot does not promise it)")
    enforce: bool = True


class MergeBody(_Body):
    merged: int | str = Field(description="the record merged into the primary (gone afterwards)")


class WebhookBody(_Body):
    target_url: str
    secret: str
    subscription_id: int = 1
    portal_id: int = 62515
    app_id: int = 1


# --- the app ------------------------------------------------------------------------------------------


def create_app(config: StandinConfig | None = None) -> FastAPI:
    standin = Standin(config or StandinConfig())
    app = FastAPI(title="Conduit HubSpot CRM stand-in", docs_url="/_admin/docs", openapi_url="/_admin/openapi.json")
    app.state.standin = standin

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        return _json(exc.status, exc.body())

    def crm(name: str, is_search: bool = False):
        """Wraps a CRM handler with auth, faults, rate limits and counters. Handlers return (status, body)."""

        def decorate(handler):
            @functools.wraps(handler)
            async def endpoint(request: Request, **params):
                object_type = params["object_type"]
                standin.requests[f"{object_type}.{name}"] += 1
                version = request.path_params.get("version")
                if version is not None and not _VERSION.fullmatch(version):
                    return _json(404, ApiError(404, "OBJECT_NOT_FOUND", f"Unknown API version {version!r}").body())
                if request.headers.get("authorization") != f"Bearer {standin.config.token}":
                    standin.sent["401"] += 1
                    return _json(401, _unauthenticated(request.headers.get("authorization")).body())
                headers, over_limit = standin.limiter.hit(now_ms(), is_search)
                fault = standin.injector.next(is_search) or over_limit
                if standin.faults.slow_ms:
                    await asyncio.sleep(standin.faults.slow_ms / 1000)
                if fault is not None:
                    standin.sent[str(fault.status)] += 1
                    if fault.retry_after_s is not None:
                        headers["Retry-After"] = str(fault.retry_after_s)
                    if fault.status == 429:
                        error = ApiError(429, "RATE_LIMITS", fault.message,
                                         extra={"errorType": "RATE_LIMIT", "policyName": fault.policy})
                    else:
                        error = ApiError(fault.status, "INTERNAL_ERROR", "internal error")
                    return _json(fault.status, error.body(), headers)
                spoil = standin.injector.spoil()
                try:
                    status, body = await handler(request, **params)
                except ApiError as exc:
                    standin.sent[str(exc.status)] += 1
                    return _json(exc.status, exc.body(), headers)
                results, previous = body.get("results") if isinstance(body, dict) else None, None
                if isinstance(results, list):
                    # the previous page of the same listing (the page whose next cursor this request
                    # sends), per endpoint: a first page repeats nothing, a live record never shows
                    # up as archived, and another reader's listing does not leak into this one
                    endpoint = (object_type, name, _flag(request, "archived"))
                    previous = standin.last_records.get((endpoint, await _after_of(request)))
                    following = ((body.get("paging") or {}).get("next") or {}).get("after")
                    if following is not None and results:
                        standin.last_records[(endpoint, str(following))] = results[-1]
                if spoil is None:
                    return _json(status, body, headers)
                standin.sent[f"spoiled:{spoil.kind}"] += 1
                return await _spoiled(spoil, status, body, headers, previous)

            return endpoint

        return decorate

    @crm("list")
    async def list_objects(request: Request, object_type: str):
        store = standin.store(object_type)
        limit, archived = _limit(request), _flag(request, "archived")
        after = request.query_params.get("after")
        associations = _associations(request)
        positions, next_id = store.list_page(decode_cursor(after) if after else None, limit, archived)
        names = _property_names(request)
        body: dict = {"results": store.render(positions, names, associations)}
        if next_id is not None:
            cursor = encode_cursor(next_id)
            body["paging"] = {"next": {"after": cursor, "link": str(request.url.include_query_params(after=cursor))}}
        return 200, body

    @crm("get")
    async def get_object(request: Request, object_type: str, record_id: str):
        store = standin.store(object_type)
        archived = _flag(request, "archived")
        pos = store.find(record_id, request.query_params.get("idProperty"))
        if pos is None or (store.state[pos] == LIVE) == archived:
            raise not_found(object_type, record_id)
        return 200, store.render([pos], _property_names(request), _associations(request))[0]

    @crm("search", is_search=True)
    async def search_objects(request: Request, object_type: str):
        store = standin.store(object_type)
        search = parse_search(await request.body(), store.has_property)
        total, positions = execute(store, search, standin.lagging(store))
        names = search.properties or SEARCH_DEFAULT_PROPERTIES[object_type]
        body: dict = {"total": total, "results": store.render(positions, names)}
        if search.after + len(positions) < total:
            body["paging"] = {"next": {"after": str(search.after + len(positions))}}
        return 200, body

    @crm("batch_read")
    async def batch_read(request: Request, object_type: str):
        store = standin.store(object_type)
        started = iso_ms(now_ms())
        body = await _json_body(request)
        inputs = body.get("inputs")
        if not isinstance(inputs, list) or not all(isinstance(i, dict) and "id" in i for i in inputs):
            raise validation_error('inputs must be a list of {"id": ...} objects', field="inputs")
        if len(inputs) > BATCH_MAX_INPUTS:
            raise validation_error(f"Too many inputs: {len(inputs)} (max {BATCH_MAX_INPUTS})", field="inputs")
        archived = _flag(request, "archived")
        names = body.get("properties") or None
        found, missing = [], []
        for item in inputs:
            pos = store.find(str(item["id"]), body.get("idProperty"))
            if pos is None or (store.state[pos] == LIVE) == archived:
                missing.append(str(item["id"]))
            else:
                found.append(pos)
        reply = {"status": "COMPLETE", "results": store.render(found, names), "startedAt": started,
                 "completedAt": iso_ms(now_ms()), "links": {}}
        if not missing:
            return 200, reply
        label = object_type.rstrip("s").upper().replace("COMPANIE", "COMPANY")
        reply["numErrors"] = 1
        reply["errors"] = [{"status": "error", "category": "OBJECT_NOT_FOUND",
                            "message": f"Could not get some {label} objects, they may be deleted or not exist. "
                                       "Check that ids are valid.",
                            "context": {"ids": missing}}]
        return 207, reply

    for prefix in ("/crm/v3/objects/{object_type}", "/crm/objects/{version}/{object_type}"):
        app.add_api_route(prefix, list_objects, methods=["GET"])
        app.add_api_route(prefix + "/search", search_objects, methods=["POST"])
        app.add_api_route(prefix + "/batch/read", batch_read, methods=["POST"])
        app.add_api_route(prefix + "/{record_id}", get_object, methods=["GET"])

    _admin_routes(app, standin)
    return app


def _associations(request: Request) -> list[str]:
    return [name.strip() for value in request.query_params.getlist("associations") for name in value.split(",")]


def _unauthenticated(header: str | None) -> ApiError:
    message = ("Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find "
               "more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview"
               if not header else "The access token provided is invalid or expired.")
    return ApiError(401, "INVALID_AUTHENTICATION", message)


def _admin_routes(app: FastAPI, standin: Standin) -> None:
    """No HubSpot auth and no faults here: the server binds to loopback unless told otherwise."""

    def located(object_type: str, record_id: str) -> tuple[ObjectStore, int]:
        store = standin.store(object_type)
        pos = store.position(record_id)
        if pos is None or store.state[pos] == DELETED:
            raise not_found(object_type, record_id)
        return store, pos

    def full(store: ObjectStore, pos: int) -> dict:
        return store.render([pos], store.all_property_names())[0]

    @app.get("/_admin/clock")
    async def clock():
        now = now_ms()
        return {"now_ms": now, "now": iso_ms(now)}

    @app.get("/_admin/stats")
    async def stats():
        return standin.stats()

    @app.post("/_admin/reset")
    async def reset(body: ResetBody | None = None):
        overrides = body.model_dump(exclude_none=True) if body else {}
        standin.reset(**overrides)
        return standin.stats()["objects"]

    @app.get("/_admin/rate_limits")
    async def get_rate_limits():
        return standin.limiter.state()

    @app.put("/_admin/rate_limits")
    async def set_rate_limits(body: RateLimitsBody):
        """Replace the limits and reset their counts: what a new day (or a new tier) looks like."""
        limits = Limits(interval_max=body.interval_max, interval_ms=body.interval_ms, daily_max=body.daily_max,
                        search_per_second=body.search_per_second, retry_after=body.retry_after)
        standin.limiter = RateLimiter(limits, body.enforce)
        return standin.limiter.state()

    @app.get("/_admin/faults")
    async def get_faults():
        return standin.faults.model_dump()

    @app.put("/_admin/faults")
    async def set_faults(faults: Faults):
        standin.set_faults(faults)
        return faults.model_dump()

    @app.delete("/_admin/faults")
    async def clear_faults():
        standin.set_faults(Faults())
        return standin.faults.model_dump()

    @app.put("/_admin/webhooks")
    async def subscribe(body: WebhookBody):
        standin.webhooks.subscribe(Subscription(**body.model_dump()))
        return body.model_dump(exclude={"secret"})

    @app.delete("/_admin/webhooks")
    async def unsubscribe():
        standin.webhooks.subscribe(None)
        return {}

    @app.post("/_admin/{object_type}/bulk_modify")
    async def bulk_modify(object_type: str, body: BulkModifyBody):
        store = standin.store(object_type)
        if body.ids is not None:
            positions = [located(object_type, str(i))[1] for i in body.ids]
        elif body.count is not None:
            live = [pos for pos in range(len(store)) if store.state[pos] == LIVE]
            positions = random.Random(body.seed).sample(live, min(body.count, len(live)))
        else:
            raise validation_error("bulk_modify needs `count` or `ids`", field="count")
        modified_ms = standin.change_ms(body.lastmodifieddate_ms) or now_ms()
        store.modify_many(positions, body.properties, modified_ms)
        if body.properties:
            standin.webhooks.emit([event for pos in positions for event in change_events(
                object_type, "propertyChange", store.ids[pos], modified_ms, {
                    name: store.value(pos, name) for name in body.properties})])
        return {"ids": [str(store.ids[pos]) for pos in positions], "lastmodifieddate_ms": modified_ms}

    @app.post("/_admin/{object_type}")
    async def create(object_type: str, body: CreateBody):
        store = standin.store(object_type)
        equal = standin.change_ms(None)
        pos = store.create(body.properties, body.createdate_ms if body.createdate_ms is not None else equal,
                           standin.change_ms(body.lastmodifieddate_ms))
        standin.webhooks.emit(change_events(object_type, "creation", store.ids[pos], store.table.created_ms[pos]))
        return full(store, pos)

    @app.patch("/_admin/{object_type}/{record_id}")
    async def modify(object_type: str, record_id: str, body: ModifyBody):
        store, pos = located(object_type, record_id)
        changed = store.modify(pos, body.properties, standin.change_ms(body.lastmodifieddate_ms))
        if changed:
            standin.webhooks.emit(change_events(object_type, "propertyChange", store.ids[pos],
                                                store.table.modified_ms[pos], changed))
        return full(store, pos)

    @app.post("/_admin/{object_type}/{record_id}/archive")
    async def archive(object_type: str, record_id: str):
        store, pos = located(object_type, record_id)
        if store.archive(pos):
            standin.webhooks.emit(change_events(object_type, "deletion", store.ids[pos], store.archived_at[pos]))
        return full(store, pos)

    @app.post("/_admin/{object_type}/{record_id}/restore")
    async def restore(object_type: str, record_id: str):
        store, pos = located(object_type, record_id)
        store.restore(pos)
        return full(store, pos)

    @app.delete("/_admin/{object_type}/{record_id}")
    async def hard_delete(object_type: str, record_id: str):
        """GDPR delete: gone for good (not archived), reported as a privacy deletion."""
        store, pos = located(object_type, record_id)
        store.delete(pos)
        standin.webhooks.emit([privacy_deletion_event(object_type, store.ids[pos], now_ms())])
        return {"deleted": record_id}

    @app.post("/_admin/{object_type}/{record_id}/merge")
    async def merge(object_type: str, record_id: str, body: MergeBody):
        """Merge ``body.merged`` into the record ``record_id`` (the primary, which survives)."""
        store, primary = located(object_type, record_id)
        _, merged = located(object_type, str(body.merged))
        moved = store.merge(primary, merged)
        standin.webhooks.emit([merge_event(object_type, store.ids[primary], [store.ids[merged]],
                                           store.table.modified_ms[primary], moved)])
        return full(store, primary)
