"""Tryton ERP over its REST API (trytond >= 8.2): search, read, create, write, delete, with retries.

The API (``trytond/protocols/rest.py``), as this hook uses it:

* ``GET /<db>/rest/model/<model>?d=<domain>&f=<field>&f=...&s=<limit>&p=<offset>&o=<order>``
  searches (domain and order are urlsafe-base64 JSON); ``GET .../<model>/<id>`` reads one record;
  ``POST .../<model>`` creates ONE record (a JSON object; a list is a 500), ``PUT .../<model>/<id>``
  writes the given values, ``DELETE .../<model>/<id>`` deletes. Create and write answer with the
  record read back with the ``f`` fields.
* Without ``f`` a record comes back as ``id``, ``__name__`` and ``rec_name`` only. A relation
  asked for with dotted fields (``addresses.city``, ``addresses.country.code``) comes back nested:
  ``{"addresses": [{"id": 1, "__name__": "party.address", "city": ..., "country": {"id": ..,
  "code": ..}}]}``; asked for plainly, as ids.
* One2Many values are written as actions: ``[["create", [{...}]], ["write", [ids], {...}],
  ["delete", [ids]]]``.
* Auth: ``Authorization: Bearer <key>`` (a validated ``res.user.application`` key for the
  application ``rest``); calls run as the key's user. ``X-Tryton-Context`` carries a context
  (``{"active_test": false}`` finds and writes deactivated records).
* Values: datetimes, dates, times, timedeltas, Decimals and bytes travel as
  ``{"__class__": "datetime", "year": ...}`` objects both ways (:func:`encode_value`,
  :func:`decode_value`). Tryton datetimes are UTC: they come back as aware UTC datetimes, and
  aware datetimes are sent converted to UTC.
* Errors: a refused request (validation, access, a duplicate code) is a 400 with
  ``{"status", "message", "description"}``; a bad key a 401 (HTML); an unknown id a 404 (HTML);
  an unknown model or field, or a body that is not a JSON object, a 500 (HTML, the message in
  ``<p>``); a database busy or down a 503.

429/5xx answers and network errors are retried (:mod:`conduit.retries`: backoff with full
jitter, never sooner than ``Retry-After``); any other 4xx fails at once with
:class:`~conduit.exceptions.TrytonRequestError` (401/403: :class:`~conduit.exceptions.TrytonAuthError`),
except a 404 answering a retried DELETE: the try whose answer was lost deleted the record.
The API key is never logged nor put into a message.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from functools import cached_property
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
from airflow.sdk import BaseHook

from conduit.exceptions import (
    TargetConfigError,
    TrytonAuthError,
    TrytonRequestError,
    TrytonRetryableError,
    mask_secrets,
)
from conduit.retries import (
    RETRYABLE_STATUS,
    Backoff,
    RetryableResponse,
    call_with_retries,
    retry_after_seconds,
)

# What a request retries: 429/5xx answers and network failures (refused, reset, timed out).
_RETRY_ON = (RetryableResponse, requests.ConnectionError, requests.Timeout)
_HTML_MESSAGE = re.compile(r"<p>(.*?)</p>", re.DOTALL)

Order = Sequence[str | Sequence[str]]

# --- values on the wire ---------------------------------------------------------------------------


def _decode_datetime(obj: dict) -> datetime:
    return datetime(obj["year"], obj["month"], obj["day"], obj.get("hour", 0), obj.get("minute", 0),
                    obj.get("second", 0), obj.get("microsecond", 0), tzinfo=UTC)


_DECODERS = {
    "datetime": _decode_datetime,
    "date": lambda obj: date(obj["year"], obj["month"], obj["day"]),
    "time": lambda obj: time(obj.get("hour", 0), obj.get("minute", 0), obj.get("second", 0),
                             obj.get("microsecond", 0)),
    "timedelta": lambda obj: timedelta(seconds=obj["seconds"]),
    "Decimal": lambda obj: Decimal(obj["decimal"]),
    "bytes": lambda obj: base64.b64decode(obj["base64"]),
}


def decode_value(obj: dict) -> Any:
    """A JSON object from Tryton as a Python value (``json.loads`` ``object_hook``): the
    ``{"__class__": ...}`` forms become datetime (aware, UTC), date, time, timedelta, Decimal or
    bytes; any other object stays a dict."""
    decoder = _DECODERS.get(obj.get("__class__"))
    return obj if decoder is None else decoder(obj)


def encode_value(value: Any) -> Any:
    """A Python value in Tryton's JSON form (``json.dumps`` ``default``). An aware datetime is sent
    in UTC; a naive one is taken as UTC already (Tryton's own convention)."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return {"__class__": "datetime", "year": value.year, "month": value.month, "day": value.day,
                "hour": value.hour, "minute": value.minute, "second": value.second,
                "microsecond": value.microsecond}
    if isinstance(value, date):
        return {"__class__": "date", "year": value.year, "month": value.month, "day": value.day}
    if isinstance(value, time):
        if value.tzinfo is not None:
            raise TypeError(f"Tryton times carry no time zone: {value!r}")
        return {"__class__": "time", "hour": value.hour, "minute": value.minute, "second": value.second,
                "microsecond": value.microsecond}
    if isinstance(value, timedelta):
        return {"__class__": "timedelta", "seconds": value.total_seconds()}
    if isinstance(value, Decimal):
        return {"__class__": "Decimal", "decimal": str(value)}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"__class__": "bytes", "base64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, set | frozenset):
        return list(value)
    raise TypeError(f"cannot send a {type(value).__name__} to Tryton: {value!r}")


def dumps(value: Any) -> str:
    return json.dumps(value, default=encode_value, separators=(",", ":"), ensure_ascii=False)


def loads(data: bytes | str) -> Any:
    return json.loads(data, object_hook=decode_value)


def b64_json(value: Any) -> str:
    """``value`` as urlsafe-base64 JSON: the form of the ``d``/``o`` parameters and ``X-Tryton-Context``."""
    return base64.urlsafe_b64encode(dumps(value).encode("utf-8")).decode("ascii")


def order_param(order: Order) -> list[list[str]]:
    """``["name", ("id", "desc")]`` -> ``[["name", "ASC"], ["id", "DESC"]]``."""
    pairs = []
    for item in order:
        field, direction = (item, "ASC") if isinstance(item, str) else (item[0], item[1] if len(item) > 1 else "ASC")
        pairs.append([field, direction.upper()])
    return pairs


def base_url(host: str, port: int | None = None) -> str:
    """The connection's host as a base URL: ``http://`` when it names no scheme, the connection's
    port when the host names none (an Airflow URI splits them), no trailing slash."""
    url = host.strip() if "://" in host else f"http://{host.strip()}"
    parts = urlsplit(url)
    if port and parts.port is None:
        parts = parts._replace(netloc=f"{parts.netloc}:{port}")
    return urlunsplit(parts).rstrip("/")


def error_message(response: requests.Response, secrets: Iterable[str | None] = ()) -> tuple[str, str]:
    """(message, description): Tryton's JSON error body, or the ``<p>`` of werkzeug's HTML page.
    ``secrets`` (the API key) are masked, before the text is cut short: a proxy's error page may
    echo the request's headers."""
    try:
        body = response.json()
    except ValueError:
        page = mask_secrets(response.text or "", secrets)
        found = _HTML_MESSAGE.search(page)
        text = mask_secrets(html.unescape(found.group(1)), secrets).strip() if found else page[:300].strip()
        return text or response.reason or f"HTTP {response.status_code}", ""
    if isinstance(body, dict):
        return (mask_secrets(str(body.get("message") or response.reason), secrets),
                mask_secrets(str(body.get("description") or ""), secrets))
    return mask_secrets(str(body), secrets)[:300], ""


def _page_domain(domain: list | None, after_id: int) -> list:
    clause = ["id", ">", after_id]
    return [domain, clause] if domain else [clause]


# --- the hook -------------------------------------------------------------------------------------


class TrytonHook(BaseHook):
    """Talks to a Tryton ERP's REST API with a user application key.

    Connection: host = base URL (``http://127.0.0.1:8000``), schema = database name, password =
    the REST API key; extras ``timeout`` (seconds, default 30), ``max_retries`` (default 6) and
    ``backoff_max`` (longest wait between retries, default 30 s).
    """

    conn_name_attr = "tryton_conn_id"
    default_conn_name = "tryton_default"
    conn_type = "tryton"
    hook_name = "Tryton"

    def __init__(
        self,
        tryton_conn_id: str = default_conn_name,
        *,
        timeout: float | None = None,
        max_retries: int | None = None,
        backoff_max: float | None = None,
    ) -> None:
        super().__init__()
        self.tryton_conn_id = tryton_conn_id
        self._overrides = {"timeout": timeout, "max_retries": max_retries, "backoff_max": backoff_max}
        self.requests_sent = 0
        self.retries = 0

    # --- connection ----------------------------------------------------------------------------

    @cached_property
    def connection(self):
        return self.get_connection(self.tryton_conn_id)

    @cached_property
    def settings(self) -> dict[str, Any]:
        conn = self.connection
        if not conn.host or not conn.schema:
            raise TargetConfigError(f"Tryton connection {self.tryton_conn_id!r} needs the base URL (host) and "
                                    f"the database name (schema)")
        extra = conn.extra_dejson

        def pick(name: str, default: float) -> float:
            value = self._overrides[name]
            return float(value if value is not None else extra.get(name, default))

        return {"base_url": base_url(conn.host, conn.port), "database": conn.schema.strip("/"),
                "timeout": pick("timeout", 30), "max_retries": int(pick("max_retries", 6)),
                "backoff_max": pick("backoff_max", 30)}

    @cached_property
    def session(self) -> requests.Session:
        key = self.connection.password
        if not key:
            raise TargetConfigError(f"Tryton connection {self.tryton_conn_id!r} has no REST API key (password)")
        session = requests.Session()
        session.headers.update({"Authorization": f"Bearer {key}", "Accept": "application/json"})
        return session

    @cached_property
    def backoff(self) -> Backoff:
        """Waits between the retries of one request (full jitter, Retry-After as the floor)."""
        return Backoff(max_retries=self.settings["max_retries"], cap=self.settings["backoff_max"])

    def get_conn(self) -> requests.Session:
        return self.session

    def model_path(self, model: str, record_id: int | None = None) -> str:
        path = f"/{self.settings['database']}/rest/model/{model}"
        return path if record_id is None else f"{path}/{int(record_id)}"

    # --- requests ------------------------------------------------------------------------------

    def _send(self, method: str, path: str, params: Any, body: Any, context: dict | None) -> Any:
        headers = {}
        data = None
        if body is not None:
            data = dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if context:
            headers["X-Tryton-Context"] = b64_json(context)
        session, settings = self.session, self.settings
        self.requests_sent += 1
        response = session.request(method, settings["base_url"] + path, params=params, data=data,
                                   headers=headers, timeout=settings["timeout"])
        if response.status_code < 400:
            if not response.content:
                return None
            try:
                return loads(response.content)
            except ValueError as exc:
                raise TrytonRequestError(response.status_code, method, path, self.tryton_conn_id,
                                         f"unreadable response body: {exc}") from None
        message, description = error_message(response, secrets=(self.connection.password,))
        if response.status_code in RETRYABLE_STATUS:
            raise RetryableResponse(response.status_code, message,
                                    retry_after_seconds(response.headers.get("Retry-After")))
        if response.status_code in (401, 403):
            raise TrytonAuthError(response.status_code, method, path, self.tryton_conn_id,
                                  f"the API key of connection {self.tryton_conn_id!r} was refused ({message})")
        if response.status_code == 404:
            message = f"not found: no such record, or no database {self.settings['database']!r} on this server"
            if method in ("PUT", "DELETE"):
                message += "; a deactivated record is only found with context {'active_test': False}"
        raise TrytonRequestError(response.status_code, method, path, self.tryton_conn_id, message, description)

    def request(self, method: str, path: str, *, params: Any = None, json: Any = None,
                context: dict | None = None, gone_when_retried: bool = False) -> Any:
        """One API call; the decoded JSON body, or None for an empty answer. 429/5xx/network errors
        are retried, then raise :class:`TrytonRetryableError`; other 4xx fail at once.

        ``gone_when_retried`` (a DELETE): a retry answered 404 is done, None. The try before it may
        have deleted the record in Tryton and lost its answer on the way back (a timeout, a reset
        connection); the record is gone either way, which is what the call asked for."""
        tries = 0

        def send() -> Any:
            nonlocal tries
            tries += 1
            try:
                return self._send(method, path, params, json, context)
            except TrytonRequestError as exc:
                if not (gone_when_retried and tries > 1 and exc.status == 404):
                    raise
                self.log.warning("Tryton %s %s: no such record on retry %d, taken as deleted by the try "
                                 "whose answer was lost", method, path, tries - 1)
                return None

        def log_retry(attempt: int, exc: BaseException, wait: float) -> None:
            self.retries += 1
            self.log.warning("Tryton %s %s failed (%s); retry %d/%d in %.1fs",
                             method, path, exc, attempt, self.backoff.max_retries, wait)

        try:
            return call_with_retries(send, backoff=self.backoff, retry_on=_RETRY_ON, on_retry=log_retry)
        except _RETRY_ON as exc:
            raise TrytonRetryableError(
                f"Tryton {method} {path} (connection {self.tryton_conn_id!r}) still failing after "
                f"{self.backoff.max_retries} retries: {exc}") from exc

    # --- API -----------------------------------------------------------------------------------

    def search(self, model: str, domain: list | None = None, fields: Sequence[str] | None = None, *,
               offset: int = 0, limit: int | None = None, order: Order | None = None,
               context: dict | None = None) -> list[dict]:
        """Records of ``model`` matching ``domain`` (``[["code", "=", "C-1"]]``), with ``fields``
        (dotted for relations: ``addresses.city``); without fields only ``id`` and ``rec_name``."""
        params: list[tuple[str, Any]] = [("f", field) for field in fields or ()]
        if domain:
            params.append(("d", b64_json(domain)))
        if limit is not None:
            params.append(("s", int(limit)))
        if offset:
            params.append(("p", int(offset)))
        if order:
            params.append(("o", b64_json(order_param(order))))
        return self.request("GET", self.model_path(model), params=params, context=context)

    def iter_search(self, model: str, domain: list | None = None, fields: Sequence[str] | None = None, *,
                    page_size: int = 500, order: Order | None = None,
                    context: dict | None = None) -> Iterator[dict]:
        """Every matching record, ``page_size`` per request. Without ``order``, pages follow the id
        (``id > last``), so records created or deleted meanwhile shift nothing; with ``order``,
        pages are offsets in that order (``id`` breaks ties)."""
        if page_size < 1:
            raise ValueError(f"page_size must be >= 1, got {page_size}")
        after_id, offset = 0, 0
        while True:
            if order is None:
                page = self.search(model, _page_domain(domain, after_id), fields, limit=page_size,
                                   order=[("id", "ASC")], context=context)
            else:
                pairs = order_param(order)
                if all(field != "id" for field, _ in pairs):
                    pairs.append(["id", "ASC"])
                page = self.search(model, domain, fields, offset=offset, limit=page_size, order=pairs,
                                   context=context)
            yield from page
            if len(page) < page_size:
                return
            after_id, offset = page[-1]["id"], offset + len(page)

    def read(self, model: str, record_id: int, fields: Sequence[str] | None = None, *,
             context: dict | None = None) -> dict:
        """One record by id (deactivated ones too); a 404 :class:`TrytonRequestError` if there is none."""
        params = [("f", field) for field in fields or ()]
        return self.request("GET", self.model_path(model, record_id), params=params, context=context)

    def create(self, model: str, values: dict, fields: Sequence[str] | None = None, *,
               context: dict | None = None) -> dict:
        """Create ONE record (the REST API takes no lists) and return it read back with ``fields``
        (``{}`` when the key's user may create but not read it)."""
        if not isinstance(values, dict):
            raise TypeError(f"Tryton's REST API creates one record per call: values must be a dict, "
                            f"not {type(values).__name__}")
        params = [("f", field) for field in fields or ()]
        return self.request("POST", self.model_path(model), params=params, json=values, context=context) or {}

    def create_many(self, model: str, vlist: list[dict], *, context: dict | None = None) -> list[int]:
        """Create records in one request and one Tryton transaction (the model's RPC ``create``):
        all of them, or none. Returns their ids."""
        return self.request("POST", f"{self.model_path(model)}/create", json={"vlist": list(vlist)},
                            context=context) or []

    def write(self, model: str, record_id: int, values: dict, fields: Sequence[str] | None = None, *,
              context: dict | None = None) -> dict:
        """Write ``values`` to one record; it comes back read with ``fields``. A deactivated record
        is only found with ``context={"active_test": False}``."""
        params = [("f", field) for field in fields or ()]
        answer = self.request("PUT", self.model_path(model, record_id), params=params, json=values,
                              context=context)
        return answer or {"id": int(record_id), "__name__": model}

    def delete(self, model: str, record_id: int, *, context: dict | None = None) -> None:
        """Delete one record (a deactivated one only with ``context={"active_test": False}``). A
        retry that finds the record gone is done (the earlier try deleted it, its answer was lost):
        :meth:`request`'s ``gone_when_retried``."""
        self.request("DELETE", self.model_path(model, record_id), context=context, gone_when_retried=True)

    def describe(self) -> dict[str, Any]:
        """Plain facts for lineage (never the key): ``host``, ``port``, ``database``, ``url``."""
        from urllib.parse import urlsplit

        url = urlsplit(self.settings["base_url"])
        return {"host": url.hostname, "port": url.port or (443 if url.scheme == "https" else 80),
                "database": self.settings["database"], "url": self.settings["base_url"], "path": None}

    def test_connection(self) -> tuple[bool, str]:
        """One request, no retries (the UI's Test button): reachable, database there, key accepted."""
        try:
            self._send("GET", self.model_path("res.user"), [("s", 1)], None, None)
        except RetryableResponse as exc:
            return False, f"Tryton at {self.settings['base_url']} answered {exc}"
        except requests.RequestException as exc:
            return False, f"Tryton at {self.settings['base_url']} is unreachable: {exc}"
        except Exception as exc:  # the UI shows the message
            return False, str(exc)
        return True, f"Tryton database {self.settings['database']!r} at {self.settings['base_url']} accepted the API key"
