"""The new-orders feed: a JSON Lines file, one order per line, written by the shop. A nightly
run reads every order in it; a bad line stops the run before anything is reserved, naming the
file, the line and the order id."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from conduit.exceptions import BusinessRejection, OrderFeedError
from conduit.orders.model import parse_order

FEED_ENV = "CONDUIT_ORDERS_FEED"
MAX_ORDERS = 1000  # one mapped saga per order: under Airflow's max_map_length (1024)


def default_feed() -> str:
    configured = os.environ.get(FEED_ENV)
    if configured:
        return configured
    return str(Path(os.environ.get("AIRFLOW_HOME", Path.home() / "airflow")) / "conduit" / "orders" / "pending.jsonl")


def read_orders(path: str | Path) -> list[dict[str, Any]]:
    """Every order in the feed, validated. An order repeated with the same contents is one order;
    repeated with other contents it is a bad line (which one the shop meant is not ours to guess)."""
    path = Path(path)
    try:
        lines = path.read_bytes().splitlines()  # decoded per line, so a bad byte names its line
    except OSError as exc:
        raise OrderFeedError(f"{path}: cannot read the orders feed: {exc}") from None
    orders: dict[str, dict[str, Any]] = {}
    first_line: dict[str, int] = {}
    problems = []
    for number, raw in enumerate(lines, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            problems.append(f"line {number}: not UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})")
            continue
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            order = parse_order(data).model_dump()
        except json.JSONDecodeError as exc:
            problems.append(f"line {number}: not JSON ({exc.msg})")
            continue
        except BusinessRejection as exc:
            problems.append(f"line {number}: {exc}")
            continue
        order_id = order["order_id"]
        if order_id in orders and orders[order_id] != order:
            problems.append(f"line {number}: order {order_id} differs from line {first_line[order_id]}")
            continue
        orders.setdefault(order_id, order)
        first_line.setdefault(order_id, number)
    if problems:
        raise OrderFeedError(f"{path}: {len(problems)} bad line(s), nothing processed:\n" + "\n".join(problems[:20]))
    if len(orders) > MAX_ORDERS:
        raise OrderFeedError(f"{path}: {len(orders)} orders; at most {MAX_ORDERS} per run (split the feed)")
    return list(orders.values())
