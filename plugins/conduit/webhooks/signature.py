"""HubSpot webhook signatures, version 3 (``X-HubSpot-Signature-v3``).

signature = base64(HMAC-SHA256(app secret, method + uri + body + timestamp)), where ``timestamp``
is the ``X-HubSpot-Request-Timestamp`` header (epoch milliseconds) and ``uri`` the full request URL
with HubSpot's percent-decoding of a few characters. Requests older than five minutes are rejected
so a captured request cannot be replayed later.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-HubSpot-Signature-v3"
TIMESTAMP_HEADER = "X-HubSpot-Request-Timestamp"
MAX_AGE_MS = 5 * 60 * 1000
# epoch milliseconds have 13 digits until the year 2286; int() of thousands of digits raises
MAX_TIMESTAMP_DIGITS = 15

# HubSpot decodes these before signing (developers.hubspot.com, "Validating requests", v3).
_DECODE = {"%3A": ":", "%2F": "/", "%3F": "?", "%40": "@", "%21": "!", "%24": "$", "%27": "'",
           "%28": "(", "%29": ")", "%2A": "*", "%2C": ",", "%3B": ";"}


def _canonical_uri(uri: str) -> str:
    for encoded, char in _DECODE.items():
        uri = uri.replace(encoded, char).replace(encoded.lower(), char)
    return uri


def sign_v3(secret: str, method: str, uri: str, body: bytes, timestamp_ms: int) -> str:
    message = method.upper().encode() + _canonical_uri(uri).encode() + body + str(timestamp_ms).encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def verify_v3(
    secret: str, method: str, uri: str, body: bytes, signature: str | None, timestamp: str | None,
    now_ms: int | None = None,
) -> str | None:
    """Return None when the request is authentic and fresh, else the reason it is not."""
    if not signature or not timestamp:
        return "missing signature or timestamp header"
    # int() alone would also take " 12", "1_2" or non-ASCII digits, none of which HubSpot sends
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > MAX_TIMESTAMP_DIGITS:
        return "timestamp header is not epoch milliseconds"
    ts = int(timestamp)
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    if now_ms - ts > MAX_AGE_MS:
        return "timestamp is older than 5 minutes"
    if ts - now_ms > MAX_AGE_MS:
        return "timestamp is in the future"
    expected = sign_v3(secret, method, uri, body, ts)
    # compare bytes: compare_digest raises TypeError on str with non-ASCII characters
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
        return "signature does not match"
    return None
