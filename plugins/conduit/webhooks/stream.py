"""Where CRM change events live in Redis: one stream per sync, shared by the webhook receiver
(producer) and the asset-watcher trigger (consumer). Plain names only, no Redis import here."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

REDIS_URL_ENV = "CONDUIT_REDIS_URL"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

# Same rule as SyncSpec.name, so a request path can never build another key than a sync's own.
SYNC_NAME = re.compile(r"[a-z][a-z0-9_]*")

# Approximate cap on a stream's length: if no watcher consumes for a long time the oldest change
# hints are dropped, which is safe because the scheduled incremental sync still picks them up.
STREAM_MAXLEN = 100_000


def is_sync_name(name: str) -> bool:
    return SYNC_NAME.fullmatch(name) is not None


def _checked(sync_name: str) -> str:
    if not is_sync_name(sync_name):
        raise ValueError(f"sync name {sync_name!r} must match {SYNC_NAME.pattern}")
    return sync_name


def stream_key(sync_name: str) -> str:
    return f"conduit:events:{_checked(sync_name)}"


def replay_key(sync_name: str, signature: str) -> str:
    return f"conduit:webhook-seen:{_checked(sync_name)}:{signature}"


def redis_url_from_env(environ: Mapping[str, str] = os.environ) -> str:
    return environ.get(REDIS_URL_ENV) or DEFAULT_REDIS_URL
