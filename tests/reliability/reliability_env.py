"""What the reliability tests share besides fixtures: the sync environment and its connections."""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DAG_ID = "crm_to_erp_customer_sync"
SEED, CONTACTS = 11, 600  # what sync_helpers.seeded_mapped assumes

if str(REPO / "tests" / "integration") not in sys.path:  # sync_helpers: the sync environment, run the DAG
    sys.path.insert(0, str(REPO / "tests" / "integration"))
from sync_helpers import SyncEnv  # noqa: E402,F401 - the one sync environment of the tests


def hubspot_connection(base_url: str, token: str, **extra) -> str:
    return json.dumps({"conn_type": "hubspot", "host": base_url, "password": token,
                       "extra": {"api_version": "2026-09", "max_retries": 4, "backoff_max": 0.5, **extra}})
