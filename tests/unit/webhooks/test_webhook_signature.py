"""HubSpot v3 signatures: round trip, freshness, and hostile header values (never a 500)."""

from __future__ import annotations

import pytest

from conduit.webhooks.signature import MAX_AGE_MS, sign_v3, verify_v3

SECRET = "app-secret"
URI = "https://hooks.example.com/conduit/webhooks/hubspot/customers?a=b"
BODY = b'[{"objectId": 1}]'
NOW = 1_750_000_000_000


def verify(signature: str | None, timestamp: str | None, *, uri: str = URI, body: bytes = BODY) -> str | None:
    return verify_v3(SECRET, "POST", uri, body, signature, timestamp, now_ms=NOW)


def test_authentic_fresh_request_passes():
    assert verify(sign_v3(SECRET, "POST", URI, BODY, NOW), str(NOW)) is None


@pytest.mark.parametrize(
    ("uri", "body", "secret"),
    [
        (URI + "&c=d", BODY, SECRET),
        (URI, BODY + b" ", SECRET),
        (URI, BODY, "other-secret"),
    ],
)
def test_any_change_to_uri_body_or_secret_breaks_the_signature(uri, body, secret):
    assert verify(sign_v3(secret, "POST", uri, body, NOW), str(NOW), uri=URI, body=BODY) == (
        "signature does not match"
    )


def test_hubspot_decoded_characters_sign_the_same_as_their_encoding():
    encoded = "https://hooks.example.com/x?email=a%40b.com&t=10%3A00"
    decoded = "https://hooks.example.com/x?email=a@b.com&t=10:00"
    assert sign_v3(SECRET, "POST", encoded, BODY, NOW) == sign_v3(SECRET, "POST", decoded, BODY, NOW)


@pytest.mark.parametrize(
    ("offset_ms", "reason"),
    [(-MAX_AGE_MS - 1, "timestamp is older than 5 minutes"), (MAX_AGE_MS + 1, "timestamp is in the future")],
)
def test_correctly_signed_but_stale_or_future_requests_fail(offset_ms, reason):
    ts = NOW + offset_ms
    assert verify(sign_v3(SECRET, "POST", URI, BODY, ts), str(ts)) == reason


@pytest.mark.parametrize("timestamp", [f" {NOW}", f"+{NOW}", "1_750_000_000_000", "١٢٣", "", "soon"])
def test_timestamp_must_be_plain_ascii_digits(timestamp):
    assert verify(sign_v3(SECRET, "POST", URI, BODY, NOW), timestamp) in (
        "timestamp header is not epoch milliseconds",
        "missing signature or timestamp header",
    )


def test_non_ascii_signature_is_a_mismatch_not_a_crash():
    assert verify("sïgnature", str(NOW)) == "signature does not match"


def test_missing_headers_fail():
    assert verify(None, str(NOW)) == "missing signature or timestamp header"
    assert verify(sign_v3(SECRET, "POST", URI, BODY, NOW), None) == "missing signature or timestamp header"
