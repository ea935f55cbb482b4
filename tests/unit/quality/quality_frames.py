"""Frames of mapped customer rows for the quality tests (imported as a plain module)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[3]
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def customers(rows: list[dict]) -> pd.DataFrame:
    """Mapped customer rows: every column of the flagship mapping, good values unless given."""
    good = {
        "email": "jane.doe+news@mail.example-shop.co.uk",
        "first_name": "Jane",
        "last_name": "Doe",
        "full_name": "Jane Doe",
        "phone": "+4915112345678",
        "country_code": "DE",
        "company_name": "ACME",
        "lifecycle_stage": "customer",
        "crm_created_at": "2021-03-04T05:06:07Z",
    }
    frame = pd.DataFrame(
        [{"customer_number": f"HS-C-{i + 1}", "crm_id": i + 1, **good, **row} for i, row in enumerate(rows)]
    )
    frame["crm_created_at"] = pd.to_datetime(frame["crm_created_at"], utc=True)
    return frame
