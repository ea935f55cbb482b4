"""The nightly orders feed (conduit.orders.feed.read_orders): bad bytes and conflicting repeats are
bad lines, named by file and line, and nothing is processed."""

from __future__ import annotations

import json

import pytest

from conduit.exceptions import OrderFeedError
from conduit.orders.feed import read_orders


def order(order_id: str, name: str = "Renée", amount: float = 10.0) -> dict:
    return {"order_id": order_id, "items": [{"sku": "S-1", "quantity": 1}], "amount": amount,
            "address": {"name": name, "line1": "Main St 1", "city": "Berlin", "country": "DE"}}


def test_a_line_that_is_not_utf8_is_named_by_file_and_line(tmp_path):
    feed = tmp_path / "pending.jsonl"
    latin1 = json.dumps(order("A-2"), ensure_ascii=False).encode("latin-1")  # é as the single byte 0xe9
    feed.write_bytes(json.dumps(order("A-1")).encode() + b"\n" + latin1 + b"\n")
    with pytest.raises(OrderFeedError) as raised:
        read_orders(feed)
    assert f"{feed}: 1 bad line(s), nothing processed" in str(raised.value)
    assert "line 2: not UTF-8 (byte 0xe9 at column" in str(raised.value)


def test_utf8_names_are_read(tmp_path):
    feed = tmp_path / "pending.jsonl"
    feed.write_text(json.dumps(order("A-1"), ensure_ascii=False) + "\n", encoding="utf-8")
    assert [o["address"]["name"] for o in read_orders(feed)] == ["Renée"]


def test_an_order_repeated_as_is_is_one_order_and_repeated_otherwise_is_a_bad_line(tmp_path):
    feed = tmp_path / "pending.jsonl"
    feed.write_text("\n".join(json.dumps(o) for o in (order("A-1"), order("A-1"), order("A-2"))) + "\n")
    assert [o["order_id"] for o in read_orders(feed)] == ["A-1", "A-2"]
    feed.write_text("\n".join(json.dumps(o) for o in (order("A-1"), order("A-2"), order("A-1", amount=99))) + "\n")
    with pytest.raises(OrderFeedError, match="line 3: order A-1 differs from line 1"):
        read_orders(feed)
