"""Tryton's JSON values and the pure helpers of the Tryton hook (no server)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal

import pytest
import requests

from conduit.hooks.tryton import (
    b64_json,
    base_url,
    decode_value,
    dumps,
    encode_value,
    error_message,
    loads,
    order_param,
)

# As trytond 8.2's JSONEncoder writes them (trytond/protocols/jsonrpc.py).
WIRE = {
    "datetime": {"__class__": "datetime", "year": 2026, "month": 12, "day": 6, "hour": 15, "minute": 22,
                 "second": 49, "microsecond": 679996},
    "date": {"__class__": "date", "year": 2026, "month": 2, "day": 28},
    "time": {"__class__": "time", "hour": 8, "minute": 30, "second": 0, "microsecond": 5},
    "timedelta": {"__class__": "timedelta", "seconds": 5400.5},
    "Decimal": {"__class__": "Decimal", "decimal": "5000.00"},
    "bytes": {"__class__": "bytes", "base64": "aGVsbG8=\n"},
}
PYTHON = {
    "datetime": datetime(2026, 12, 6, 15, 22, 49, 679996, tzinfo=UTC),
    "date": date(2026, 2, 28),
    "time": time(8, 30, 0, 5),
    "timedelta": timedelta(seconds=5400.5),
    "Decimal": Decimal("5000.00"),
    "bytes": b"hello",
}


@pytest.mark.parametrize("kind", sorted(WIRE))
def test_decodes_every_tryton_class(kind):
    assert decode_value(dict(WIRE[kind])) == PYTHON[kind]
    assert type(decode_value(dict(WIRE[kind]))) is type(PYTHON[kind])


@pytest.mark.parametrize("kind", sorted(WIRE))
def test_encode_then_decode_is_the_identity(kind):
    assert loads(dumps(PYTHON[kind])) == PYTHON[kind]


def test_datetimes_come_back_aware_in_utc():
    value = decode_value(dict(WIRE["datetime"]))
    assert value.tzinfo is UTC and value.timestamp() == datetime(2026, 12, 6, 15, 22, 49, 679996,
                                                                 tzinfo=UTC).timestamp()


def test_aware_datetimes_are_sent_in_utc_and_naive_ones_as_they_are():
    berlin = timezone(timedelta(hours=1))
    assert encode_value(datetime(2026, 1, 1, 0, 30, tzinfo=berlin)) == {
        "__class__": "datetime", "year": 2025, "month": 12, "day": 31, "hour": 23, "minute": 30,
        "second": 0, "microsecond": 0}
    assert encode_value(datetime(2026, 1, 1, 1, 30))["hour"] == 1


def test_decimals_keep_their_digits():
    assert loads('{"__class__": "Decimal", "decimal": "0.10"}') == Decimal("0.10")
    assert str(loads(dumps(Decimal("12345678901234567890.123")))) == "12345678901234567890.123"
    assert encode_value(Decimal("1E+2")) == {"__class__": "Decimal", "decimal": "1E+2"}


def test_nested_records_are_decoded_and_other_objects_stay_dicts():
    body = json.dumps([{"id": 1, "__name__": "party.party", "write_date": WIRE["datetime"],
                        "addresses": [{"id": 2, "country": {"id": 60, "code": "DE"}}],
                        "credit_limit_amount": WIRE["Decimal"], "weird": {"__class__": "unknown", "x": 1}}])
    (party,) = loads(body)
    assert party["write_date"] == PYTHON["datetime"] and party["credit_limit_amount"] == Decimal("5000.00")
    assert party["addresses"] == [{"id": 2, "country": {"id": 60, "code": "DE"}}]
    assert party["weird"] == {"__class__": "unknown", "x": 1}


def test_domains_go_out_as_urlsafe_base64_json():
    domain = [["write_date", ">=", datetime(2026, 1, 1, tzinfo=UTC)], ["code", "in", ["HS-1", "HS-2"]]]
    encoded = b64_json(domain)
    assert "+" not in encoded and "/" not in encoded
    assert json.loads(base64.urlsafe_b64decode(encoded)) == [
        ["write_date", ">=", {"__class__": "datetime", "year": 2026, "month": 1, "day": 1, "hour": 0,
                              "minute": 0, "second": 0, "microsecond": 0}],
        ["code", "in", ["HS-1", "HS-2"]]]
    assert json.loads(base64.urlsafe_b64decode(b64_json({"active_test": False}))) == {"active_test": False}


def test_sets_are_lists_and_unknown_types_are_refused():
    assert sorted(loads(dumps({"ids": {3, 1}}))["ids"]) == [1, 3]
    with pytest.raises(TypeError, match="cannot send a object"):
        dumps(object())
    with pytest.raises(TypeError, match="no time zone"):
        encode_value(time(8, 0, tzinfo=UTC))


def test_order_param():
    assert order_param(["name", ("id", "desc"), ["code"]]) == [["name", "ASC"], ["id", "DESC"], ["code", "ASC"]]


@pytest.mark.parametrize(("host", "port", "expected"), [
    ("http://127.0.0.1:8000", None, "http://127.0.0.1:8000"),
    ("http://127.0.0.1:8000/", 9000, "http://127.0.0.1:8000"),
    ("http://127.0.0.1", 8000, "http://127.0.0.1:8000"),          # an Airflow URI splits host and port
    ("127.0.0.1", 8000, "http://127.0.0.1:8000"),
    ("https://erp.example.org/tryton/", None, "https://erp.example.org/tryton"),
    ("https://erp.example.org/tryton", 8443, "https://erp.example.org:8443/tryton"),
])
def test_base_url(host, port, expected):
    assert base_url(host, port) == expected


def response(status: int, body: bytes, content_type: str) -> requests.Response:
    reply = requests.Response()
    reply.status_code, reply._content, reply.reason = status, body, "Reason"
    reply.headers["Content-Type"] = content_type
    return reply


def test_error_message_from_trytons_json_body():
    body = b'{"status": 400, "message": "The code on party must be unique.", "description": ""}'
    assert error_message(response(400, body, "application/json")) == ("The code on party must be unique.", "")
    body = (b'{"status": 400, "message": "The email address \\"x\\" for party \\"A\\" is not valid.", '
            b'"description": "An email address must have an @-sign."}')
    assert error_message(response(400, body, "application/json")) == (
        'The email address "x" for party "A" is not valid.', "An email address must have an @-sign.")


def test_error_message_from_werkzeugs_html_page():
    page = (b"<!doctype html>\n<html lang=en>\n<title>500 Internal Server Error</title>\n"
            b"<h1>Internal Server Error</h1>\n<p>&#39;party.partyx&#39;</p>\n")
    assert error_message(response(500, page, "text/html; charset=utf-8")) == ("'party.partyx'", "")
    assert error_message(response(502, b"", "text/plain")) == ("Reason", "")
