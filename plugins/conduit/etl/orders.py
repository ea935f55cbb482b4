"""Realistic, deterministic ERP orders for existing customers, to seed ``erp_orders``.

Each customer's orders depend only on ``(seed, customer number, as_of)``: adding customers never
changes another customer's orders, and seeding again inserts only what is missing (order ids are
stable). About 15% of customers never order; the others start somewhere in the two years before
``as_of``, a quarter of them stop ordering at some point (they become "at risk"), order counts
are geometric (mean ~5) and amounts log-normal (median ~180, in EUR). Statuses: ~86% completed,
6% cancelled, 5% refunded, 3% pending (pending only within the last 14 days).

Command line (PostgreSQL DSN or SQLite file, the ERP's customers must exist)::

    python -m conduit.etl.orders --erp postgresql://erp@erp-db/erp --schema public --seed 7
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

CURRENCY = "EUR"
HISTORY_DAYS = 730
NO_ORDERS_SHARE = 0.15
CHURN_SHARE = 0.25
STATUS_WEIGHTS = {"completed": 0.86, "cancelled": 0.06, "refunded": 0.05, "pending": 0.03}
PENDING_MAX_AGE = timedelta(days=14)


def order_id(customer_number: str, n: int) -> str:
    return f"SO-{customer_number}-{n:03d}"


def _customer_orders(customer_number: str, *, seed: int, as_of: datetime) -> list[tuple]:
    import numpy as np

    rng = np.random.default_rng([seed, zlib.crc32(customer_number.encode())])
    if rng.random() < NO_ORDERS_SHARE:
        return []
    history = timedelta(days=HISTORY_DAYS)
    start = as_of - history * rng.random()
    end = as_of
    if rng.random() < CHURN_SHARE:
        end = start + (as_of - start) * rng.random()
    count = int(min(rng.geometric(0.2), 40))
    offsets = np.sort(rng.random(count))
    amounts = np.clip(np.round(rng.lognormal(np.log(180.0), 0.9, count), 2), 5.0, 25_000.0)
    statuses = rng.choice(list(STATUS_WEIGHTS), size=count, p=list(STATUS_WEIGHTS.values()))
    rows = []
    for n, (offset, amount, status) in enumerate(zip(offsets, amounts, statuses, strict=True), start=1):
        # whole seconds: what a database round-trips exactly
        ordered_at = (start + (end - start) * float(offset)).replace(microsecond=0)
        if status == "pending" and as_of - ordered_at > PENDING_MAX_AGE:
            status = "completed"
        rows.append((order_id(customer_number, n), customer_number, ordered_at, str(status), float(amount), CURRENCY))
    return rows


def generate_orders(customer_numbers: Iterable[str], *, seed: int, as_of: datetime) -> pd.DataFrame:
    """Orders (``order_id``, ``customer_number``, ``ordered_at`` UTC, ``status``, ``amount``,
    ``currency``) for the given customers, ordered by order id."""
    import pandas as pd

    from conduit.etl.revenue import ORDER_COLUMNS

    as_of = as_of.astimezone(UTC) if as_of.tzinfo else as_of.replace(tzinfo=UTC)
    rows = [row for number in sorted(set(customer_numbers)) for row in _customer_orders(number, seed=seed, as_of=as_of)]
    frame = pd.DataFrame.from_records(rows, columns=list(ORDER_COLUMNS))
    frame["ordered_at"] = pd.to_datetime(frame["ordered_at"], utc=True)
    frame["amount"] = frame["amount"].astype("float64")
    return frame.sort_values("order_id").reset_index(drop=True)


def main(argv: list[str] | None = None) -> int:
    import argparse

    from conduit.etl.store import RevenueStore, engine_for

    parser = argparse.ArgumentParser(prog="python -m conduit.etl.orders", description=__doc__.split("\n\n")[0])
    parser.add_argument("--erp", required=True, help="PostgreSQL DSN/URL, or the path of a SQLite ERP file")
    parser.add_argument("--schema", default="public", help="schema of the ERP tables (PostgreSQL)")
    parser.add_argument("--customers-table", default="erp_customers")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--as-of", type=datetime.fromisoformat, default=None,
                        help="ISO timestamp the two years of history end at (default: now)")
    args = parser.parse_args(argv)
    store = RevenueStore(engine_for(args.erp), schema=args.schema, customers_table=args.customers_table)
    summary = store.seed_orders(seed=args.seed, as_of=args.as_of or datetime.now(UTC))
    print(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
