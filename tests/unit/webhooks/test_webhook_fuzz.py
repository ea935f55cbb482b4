"""Fuzzing the HubSpot webhook receiver over loopback: a few hundred hostile requests, generated
deterministically from one seed, each get a 4xx (never a 5xx, never a traceback in the log) and
none reaches Redis. A real uvicorn server on 127.0.0.1 serves the app mounted the way Airflow
mounts plugin apps; malformed HTTP goes over raw sockets.

Bodies are signed with the right secret where the case is about the body, so the body parser is
what gets fuzzed, not just the signature check in front of it."""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import json
import logging
import random
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
import redis
import uvicorn
from fastapi import FastAPI, HTTPException

from conduit.webhooks.app import (
    MAX_BODY_BYTES,
    PUBLIC_BASE_URL_ENV,
    SECRET_ENV,
    check_content_length,
    webhook_app,
)
from conduit.webhooks.payload import InvalidPayload, parse_events
from conduit.webhooks.signature import MAX_AGE_MS, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign_v3, verify_v3
from conduit.webhooks.stream import REDIS_URL_ENV, replay_key, stream_key

SEED = 17_2026
SECRET = "fuzz-secret"
SUBSCRIPTIONS = ["contact.creation", "contact.propertyChange", "contact.deletion", "company.propertyChange"]
INT_FIELDS = ["eventId", "objectId", "occurredAt"]
WRONG_INTS = ["123", "", 1.5, 1.0, True, False, None, [], {}, -1, 2**63, 10**30, "0x10", [1], {"n": 1}]
WRONG_SUBSCRIPTIONS = [1, None, True, "", "contact", "x" * 101, "contact.creation; DROP", "../etc.passwd",
                       "contact.creation\n", "联系人.创建", ["contact.creation"], {"t": "contact.creation"}]
WRONG_TOP_LEVEL = [{}, "events", 1, None, True, [], [1], [None], [[]], [""], {"events": []}]


@dataclass(frozen=True)
class Case:
    kind: str
    expect: frozenset[int]  # acceptable statuses; 0 means "the server closed without an answer"
    body: bytes | list[bytes] = b""  # a list is sent chunked (no Content-Length)
    headers: dict[str, str | bytes] = field(default_factory=dict)
    method: str = "POST"
    path: str = ""  # default: the sync's own path
    raw: bytes | None = None  # sent as is over a socket
    half_close: bool = False


@dataclass
class Receiver:
    base_url: str
    sync_name: str
    store: redis.Redis

    @property
    def path(self) -> str:
        return f"/conduit/webhooks/hubspot/{self.sync_name}"

    def stream_length(self) -> int:
        return self.store.xlen(stream_key(self.sync_name))

    def guard_keys(self) -> list[str]:
        return list(self.store.scan_iter(match=replay_key(self.sync_name, "*")))


def _events(rng: random.Random, n: int) -> list[dict]:
    return [{"eventId": rng.randrange(1, 10**9), "subscriptionId": 7, "portalId": 62515, "appId": 9,
             "occurredAt": 1_750_000_000_000 + rng.randrange(10**9), "subscriptionType": rng.choice(SUBSCRIPTIONS),
             "attemptNumber": 0, "objectId": rng.randrange(1, 10**12), "propertyName": "email",
             "propertyValue": "x@example.com", "changeSource": "CRM"} for _ in range(n)]


def _signature(secret: str, method: str, url: str, body: bytes, timestamp: str) -> str:
    """HubSpot v3 over any timestamp text (``sign_v3`` takes only an int)."""
    message = method.encode() + url.encode() + body + timestamp.encode()
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


def _is_hubspot_payload(body: bytes) -> bool:
    """What HubSpot sends, written independently of the receiver's parser: a non-empty JSON array
    of objects with 64-bit non-negative integer ids and times and a ``object.change`` type."""
    try:
        events = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False

    def int64(value: object) -> bool:
        return type(value) is int and 0 <= value < 2**63

    return isinstance(events, list) and bool(events) and all(
        isinstance(e, dict) and all(int64(e.get(k)) for k in INT_FIELDS)
        and isinstance(e.get("subscriptionType"), str) and len(e["subscriptionType"]) <= 100
        and re.fullmatch(r"[a-z_]+\.[A-Za-z_]+", e["subscriptionType"]) is not None
        for e in events)


def _invalid(body: bytes) -> bytes:
    """The body, after checking the case generator made it invalid (else the case proves nothing)."""
    assert not _is_hubspot_payload(body), f"fuzz case body is a valid payload: {body[:200]!r}"
    return body


class Cases:
    """The fuzz cases, all from one ``random.Random(SEED)``: the same on every run."""

    def __init__(self, receiver: Receiver, seed: int = SEED):
        self.rng = random.Random(seed)
        self.url = receiver.base_url + receiver.path
        self.path = receiver.path

    def signed(self, body: bytes, timestamp_ms: int | None = None) -> dict[str, str | bytes]:
        ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        return {SIGNATURE_HEADER: sign_v3(SECRET, "POST", self.url, body, ts), TIMESTAMP_HEADER: str(ts),
                "Content-Type": "application/json"}

    def body_case(self, kind: str, body: bytes) -> Case:
        """A signed body: the parser decides (400), or the size limit does (413)."""
        expect = {413} if len(body) > MAX_BODY_BYTES else {400}
        return Case(kind, frozenset(expect), body=_invalid(body) if len(body) <= MAX_BODY_BYTES else body,
                    headers=self.signed(body))

    def truncated_json(self, n: int) -> Iterator[Case]:
        for _ in range(n):
            body = json.dumps(_events(self.rng, self.rng.randint(1, 5))).encode()
            yield self.body_case("truncated JSON", body[: self.rng.randrange(1, len(body))])

    def wrong_types(self, n: int) -> Iterator[Case]:
        for i in range(n):
            events = _events(self.rng, self.rng.randint(1, 4))
            target = self.rng.choice(events)
            match i % 4:
                case 0 | 1:
                    target[self.rng.choice(INT_FIELDS)] = self.rng.choice(WRONG_INTS)
                case 2:
                    target["subscriptionType"] = self.rng.choice(WRONG_SUBSCRIPTIONS)
                case _:
                    del target[self.rng.choice([*INT_FIELDS, "subscriptionType"])]
            payload = events if i % 7 else self.rng.choice(WRONG_TOP_LEVEL)
            yield self.body_case("wrong types", json.dumps(payload, ensure_ascii=self.rng.random() < 0.5).encode())

    def garbage_bytes(self, n: int) -> Iterator[Case]:
        for i in range(n):
            if i % 3 == 0:  # not UTF-8 inside an otherwise well-formed event
                events = _events(self.rng, 2)
                events[1]["subscriptionType"] = "@"
                bad = self.rng.choice([b"\xff\xfe", b"contact\xc3", b"\xed\xa0\x80", b"\xc0\xaf"])
                body = json.dumps(events).encode().replace(b'"@"', b'"' + bad + b'.creation"')
            else:
                body = self.rng.randbytes(self.rng.randint(1, 4096))
            yield self.body_case("garbage / non-UTF-8 bytes", body)

    def deep_nesting(self, n: int) -> Iterator[Case]:
        for _ in range(n):
            depth = self.rng.choice([64, 200, 1_000, 10_000, 100_000, 600_000])
            shape = self.rng.choice(["arrays", "objects", "in an event"])
            if shape == "arrays":
                body = b"[" * depth + b"]" * depth
            elif shape == "objects":
                body = b"[" + b'{"a":' * depth + b"1" + b"}" * depth + b"]"
            else:
                event = _events(self.rng, 1)[0]
                event["objectId"] = "@"
                body = json.dumps([event]).encode().replace(b'"@"', b"[" * depth + b"]" * depth)
            yield self.body_case("deep nesting", body)

    def huge_bodies(self, n: int) -> Iterator[Case]:
        for i in range(n):
            size = MAX_BODY_BYTES + self.rng.choice([1, 10, 4096, MAX_BODY_BYTES])
            event = _events(self.rng, 1)[0]
            event["propertyValue"] = "x" * size
            body = json.dumps([event]).encode()
            headers = self.signed(body) if i % 2 else {TIMESTAMP_HEADER: "1"}
            if i % 3 == 0:  # chunked: no Content-Length, the limit holds on the bytes read
                chunk = 64 * 1024
                yield Case("huge body (chunked)", frozenset({413}), [body[j:j + chunk] for j in
                                                                  range(0, len(body), chunk)], headers)
            else:
                yield Case("huge body", frozenset({413}), body, headers)

    def signature_headers(self, n: int) -> Iterator[Case]:
        for i in range(n):
            body = json.dumps(_events(self.rng, 2)).encode()
            headers = self.signed(body)
            ts = headers[TIMESTAMP_HEADER]
            assert isinstance(ts, str)
            match i % 10:
                case 0:
                    del headers[SIGNATURE_HEADER]
                case 1:
                    headers[SIGNATURE_HEADER] = ""
                case 2:
                    headers[SIGNATURE_HEADER] = base64.b64encode(self.rng.randbytes(32)).decode()
                case 3:
                    noise = self.rng.randbytes(self.rng.randint(1, 64))  # no CTLs or spaces: a client cannot send them
                    headers[SIGNATURE_HEADER] = bytes(b for b in noise if b > 0x20 and b != 0x7F) or b"\xff"
                case 4:
                    headers[SIGNATURE_HEADER] = "A" * self.rng.choice([45, 1000, 8000])
                case 5:
                    headers[SIGNATURE_HEADER] = _signature("wrong-secret", "POST", self.url, body, ts)
                case 6:
                    headers[SIGNATURE_HEADER] = _signature(SECRET, "GET", self.url, body, ts)
                case 7:
                    headers[SIGNATURE_HEADER] = _signature(SECRET, "POST", self.url + "x", body, ts)
                case 8:
                    headers[SIGNATURE_HEADER] = _signature(SECRET, "POST", self.url, body + b" ", ts)
                case _:
                    good = headers[SIGNATURE_HEADER]
                    assert isinstance(good, str)
                    headers[SIGNATURE_HEADER] = good[:-4] + ("AAA=" if not good.endswith("AAA=") else "BBB=")
            yield Case("signature header", frozenset({401}), body, headers)

    def timestamp_headers(self, n: int) -> Iterator[Case]:
        now = int(time.time() * 1000)
        variants: list[str | bytes | None] = [
            None, "", "abc", "-1", "1.5", "+" + str(now), "1e12", "0x1F", f"{now} 1", f"{now}x", "0",
            str(now - MAX_AGE_MS - 60_000), str(now + MAX_AGE_MS + 60_000), "9" * 20, "9" * 5000,
            "١٧٥٠".encode(), str(now).encode() + b"\xff", "1_750_000_000_000",
        ]
        for i in range(n):
            body = json.dumps(_events(self.rng, 1)).encode()
            ts = variants[i % len(variants)]
            text = ts.decode("latin-1") if isinstance(ts, bytes) else ts or ""
            headers: dict[str, str | bytes] = {SIGNATURE_HEADER: _signature(SECRET, "POST", self.url, body, text)}
            if ts is not None:
                headers[TIMESTAMP_HEADER] = ts
            yield Case("timestamp header", frozenset({401}), body, headers)

    def paths_and_methods(self, n: int) -> Iterator[Case]:
        body = json.dumps(_events(self.rng, 1)).encode()
        names = ["T_UPPER", "a-b", "1abc", "_x", "%2e%2e%2fetc", "..", "x%00y", "%C3%A9t%C3%A9", "a.b", "a%20b"]
        for i in range(n):
            if i % 3 == 0:
                yield Case("method", frozenset({405}), body, self.signed(body),
                           method=self.rng.choice(["GET", "PUT", "DELETE", "PATCH"]))
            elif i % 3 == 1:
                yield Case("path", frozenset({404}), body, self.signed(body),
                           path=f"/conduit/webhooks/hubspot/{self.rng.choice(names)}")
            else:  # signed for the sync's URL, sent with another query or to another sync
                other = self.rng.choice([f"{self.path}?x={self.rng.randrange(10**6)}",
                                         f"{self.path}x", "/conduit/webhooks/hubspot/" + "z" * 300])
                yield Case("signed for another URL", frozenset({401}), body, self.signed(body), path=other)

    def malformed_http(self) -> Iterator[Case]:
        """Over a raw socket: what an HTTP client library would not send."""
        body = json.dumps(_events(self.rng, 1)).encode()
        signed = self.signed(body)
        start = f"POST {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
        sig = f"{SIGNATURE_HEADER}: {signed[SIGNATURE_HEADER]}\r\n{TIMESTAMP_HEADER}: {signed[TIMESTAMP_HEADER]}\r\n"
        sig_bytes = sig.encode()

        def raw(name: str, head: bytes, payload: bytes, expect: set[int], half_close: bool = False) -> Case:
            return Case(f"malformed HTTP: {name}", frozenset(expect), raw=start + head + b"\r\n" + payload,
                        half_close=half_close)

        yield raw("Content-Length not a number", b"Content-Length: abc\r\n", body, {400})
        yield raw("negative Content-Length", b"Content-Length: -1\r\n", body, {400})
        yield raw("Content-Length of 5000 digits", b"Content-Length: " + b"9" * 5000 + b"\r\n", body, {400, 413})
        yield raw("two Content-Lengths", sig_bytes + b"Content-Length: %d\r\nContent-Length: 3\r\n" % len(body),
                  body, {400})
        yield raw("Content-Length and chunked", b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n" % len(body),
                  body, {400})
        yield raw("Content-Length lies low", sig_bytes + b"Content-Length: %d\r\n" % (len(body) - 5), body, {400, 401})
        yield raw("Content-Length lies high, client leaves", sig_bytes + b"Content-Length: %d\r\n" % (len(body) + 50),
                  body, {0, 400}, half_close=True)
        yield raw("chunk size not hex", sig_bytes + b"Transfer-Encoding: chunked\r\n", b"zz\r\n" + body + b"\r\n0\r\n\r\n",
                  {400})
        yield raw("chunked body cut off", sig_bytes + b"Transfer-Encoding: chunked\r\n",
                  b"%x\r\n" % len(body) + body + b"\r\n", {0, 400}, half_close=True)
        yield raw("header value bytes 0x80-0xff", f"{SIGNATURE_HEADER}: ".encode() + bytes(range(0x80, 0x100))
                  + b"\r\nContent-Length: %d\r\n" % len(body), body, {400, 401})
        yield raw("NUL in a header", f"{SIGNATURE_HEADER}: a\x00b\r\n".encode() + b"Content-Length: %d\r\n" % len(body),
                  body, {400, 401})
        yield raw("header of 100 KB", b"X-Filler: " + b"a" * 100_000 + b"\r\nContent-Length: %d\r\n" % len(body),
                  body, {400, 401, 431})
        yield raw("header without colon", b"X-HubSpot-Signature-v3 nothing\r\nContent-Length: %d\r\n" % len(body),
                  body, {400})
        yield Case("malformed HTTP: not HTTP at all", frozenset({0, 400}), raw=b"\x16\x03\x01\x02\x00garbage\r\n\r\n")
        yield Case("malformed HTTP: bad request line", frozenset({0, 400}),
                   raw=b"POST /conduit/webhooks/hubspot/x HTTP/9.9 extra\r\n\r\n")

    def all(self) -> list[Case]:
        return [*self.truncated_json(60), *self.wrong_types(80), *self.garbage_bytes(45), *self.deep_nesting(24),
                *self.huge_bodies(9), *self.signature_headers(60), *self.timestamp_headers(51),
                *self.paths_and_methods(30), *self.malformed_http()]


def _send_raw(base_url: str, case: Case) -> int:
    """The status of the first response, or 0 when the server closed without answering."""
    host, port = base_url.removeprefix("http://").split(":")
    assert case.raw is not None
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(case.raw)
        if case.half_close:
            sock.shutdown(socket.SHUT_WR)
        head = b""
        while b"\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
    return int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else 0


def _send(client: httpx.Client, receiver: Receiver, case: Case) -> int | str:
    """The response's status (0: closed without one), or what went wrong with the connection."""
    if case.raw is not None:
        return _send_raw(receiver.base_url, case)
    content = iter(case.body) if isinstance(case.body, list) else case.body
    try:
        response = client.request(case.method, case.path or receiver.path, content=content, headers=case.headers)
    except httpx.TransportError as exc:  # e.g. the server dropped the connection after a crash
        return f"{type(exc).__name__}: {exc}"
    return response.status_code


@pytest.fixture(scope="module")
def receiver(redis_url: str) -> Iterator[Receiver]:
    """The receiver served by uvicorn on a free loopback port, in this process (so env applies)."""
    sync_name = f"t_fuzz_{uuid.uuid4().hex[:10]}"
    store = redis.Redis.from_url(redis_url, decode_responses=True)
    with pytest.MonkeyPatch.context() as env:
        env.setenv(REDIS_URL_ENV, redis_url)
        env.setenv(SECRET_ENV, SECRET)
        env.delenv(PUBLIC_BASE_URL_ENV, raising=False)
        api = FastAPI()
        api.mount("/conduit", webhook_app)  # what airflow.api_fastapi.app.init_plugins does
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(api, log_config=None, access_log=False, lifespan="off"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 15
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)
        receiver = Receiver(f"http://127.0.0.1:{sock.getsockname()[1]}", sync_name, store)
        try:
            yield receiver
        finally:
            server.should_exit = True
            thread.join(15)
            store.delete(stream_key(sync_name), *receiver.guard_keys())
            store.close()
            sock.close()


@pytest.mark.redis
@pytest.mark.timeout(300)
def test_fuzzed_requests_get_4xx_and_never_reach_redis(receiver: Receiver, caplog: pytest.LogCaptureFixture,
                                                      record_property):
    cases = Cases(receiver).all()
    assert 300 <= len(cases) <= 500
    record_property("hostile_inputs", ("webhook requests", len(cases)))  # tests/reliability's summary
    assert receiver.stream_length() == 0
    caplog.set_level(logging.WARNING)
    failures, seen = [], collections.Counter()

    # a fresh connection per request: one case's wreckage cannot fail the next
    with httpx.Client(base_url=receiver.base_url, timeout=30, limits=httpx.Limits(max_keepalive_connections=0)) \
            as client:
        for i, case in enumerate(cases):
            status = _send(client, receiver, case)
            seen[case.kind, status] += 1
            if status not in case.expect or not (status == 0 or 400 <= int(status) < 500):
                failures.append(f"#{i} {case.kind}: {status}, expected {sorted(case.expect)}")
            if (length := receiver.stream_length()) != 0:
                failures.append(f"#{i} {case.kind}: {length} entries reached the Redis stream")
                receiver.store.delete(stream_key(receiver.sync_name))  # and go on: report every leak
        guards = receiver.guard_keys()  # a request that passed the signature check leaves one
        # the oracle works: an authentic request after the storm is accepted and lands in the stream
        body = json.dumps(_events(random.Random(SEED), 2)).encode()
        accepted = client.post(receiver.path, content=body, headers=Cases(receiver).signed(body))

    print(f"\nwebhook fuzz, seed {SEED}: {len(cases)} requests\n" + "\n".join(
        f"  {n:4d} x {status or 'closed'}  {kind}" for (kind, status), n in sorted(seen.items())))
    assert failures == [], "\n".join(failures)
    assert guards == []
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [f"{r.name}: {r.getMessage()}" for r in errors]
    assert (accepted.status_code, accepted.json()) == (202, {"accepted": 2})
    assert receiver.stream_length() == 2


# --- what the fuzzing found, pinned ---------------------------------------------------------------


def test_a_timestamp_of_thousands_of_digits_is_refused_not_a_crash():
    """int() of more than 4,300 digits raises ValueError: it was a 500."""
    assert verify_v3(SECRET, "POST", "https://x/y", b"[]", "sig", "9" * 5000) == (
        "timestamp header is not epoch milliseconds")


@pytest.mark.parametrize("header", ["9" * 5000, "0" * 5000 + "12345678", str(MAX_BODY_BYTES + 1)])
def test_a_content_length_of_thousands_of_digits_is_too_large_not_a_crash(header):
    with pytest.raises(HTTPException) as info:
        check_content_length(header, MAX_BODY_BYTES)
    assert info.value.status_code == 413


def test_content_lengths_within_the_limit_pass():
    for header in ["0", "000", str(MAX_BODY_BYTES), "0" * 50 + "1"]:
        check_content_length(header, MAX_BODY_BYTES)


@pytest.mark.parametrize("name", INT_FIELDS)
def test_ids_and_times_beyond_64_bits_are_not_hubspot_events(name):
    """They were accepted and reached the stream."""
    event = {"eventId": 1, "objectId": 2, "occurredAt": 3, "subscriptionType": "contact.creation", name: 2**63}
    with pytest.raises(InvalidPayload, match=f"{name}: Input should be less than or equal to"):
        parse_events(json.dumps([event]).encode())
    event[name] = 2**63 - 1
    assert parse_events(json.dumps([event]).encode())
