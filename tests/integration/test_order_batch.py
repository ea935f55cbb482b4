"""The nightly order batch on real Airflow (``dag.test()``): 200 orders from a feed file, one saga
each (a mapped task group), mixed faults in the real services over HTTP. Every order ends shipped
and charged once, or fully compensated; the services' ledgers, the saga log and the report agree."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from airflow.sdk import DagRunState
from order_helpers import effects, new_order, nightly_dag, saga_row

from conduit.exceptions import OrderFeedError
from conduit.orders.feed import read_orders

pytestmark = pytest.mark.postgres

# what each kind of order must leave in the ledgers, and how the report counts it
EXPECTED = {
    "happy": ({"reserve": 1, "authorize": 1, "create": 1, "capture": 1}, "shipped"),
    "declined": ({"reserve": 1, "release": 1}, "compensated"),
    "out_of_stock": ({}, "compensated"),
    "fraud_reject": ({"reserve": 1, "release": 1}, "rejected"),
    "review": ({"reserve": 1, "release": 1}, "needs_review"),
    "undeliverable": ({"reserve": 1, "release": 1, "authorize": 1, "void": 1}, "compensated"),
    "never_ships": ({"reserve": 1, "release": 1, "authorize": 1, "void": 1, "create": 1, "cancel": 1},
                    "compensated"),
}
# each never-shipping order waits out its whole shipping deadline (1 s): five of them are enough
MIX = ["happy"] * 95 + ["never_ships"] * 5 + [kind for kind in EXPECTED if kind not in ("happy", "never_ships")
                                             for _ in range(20)]


def test_two_hundred_orders_with_mixed_faults_end_shipped_once_or_fully_compensated(order_env, tmp_path):
    kinds = {}
    orders = []
    for i, kind in enumerate(MIX):
        order = new_order(order_id=f"N-{i:03d}-{kind}")
        if kind == "out_of_stock":
            order["items"] = [{"sku": "SKU-GONE", "quantity": 1}]
        kinds[order["order_id"]], _ = kind, orders.append(order)
    by_kind = {kind: [o for o, k in kinds.items() if k == kind] for kind in EXPECTED}
    order_env.admin.faults(
        inventory={"out_of_stock_skus": ["SKU-GONE"], "fail_next": 3, "mode": "429", "retry_after_s": 1},
        payment={"decline_orders": by_kind["declined"], "fail_next": 5, "mode": "5xx"},
        fraud={"scores": {**dict.fromkeys(by_kind["fraud_reject"], 0.95), **dict.fromkeys(by_kind["review"], 0.5)}},
        shipping={"fail_create_orders": by_kind["undeliverable"], "never_ship_orders": by_kind["never_ships"],
                  "ship_after_s": 0},  # the others ship at the first status poll
    )
    feed = tmp_path / "pending.jsonl"
    feed.write_text("\n".join(json.dumps(o) for o in orders) + "\n" + json.dumps(orders[0]) + "\n")  # a repeat

    dag_run = nightly_dag().test(run_conf={"feed": str(feed), "ship_within_s": 1, "ship_poll_s": 0.1})

    states = Counter(ti.state for ti in dag_run.get_task_instances())
    assert dag_run.state == DagRunState.SUCCESS, states
    requests = order_env.admin.requests()
    assert requests["payment"]["authorize"]["faulted"] == 5 and requests["inventory"]["reserve"]["faulted"] == 3
    got = Counter()
    for order_id, kind in kinds.items():
        want_effects, want_outcome = EXPECTED[kind]
        assert effects(order_env, order_id) == want_effects, (order_id, kind)
        saga, steps = saga_row(order_id)
        compensated = {s["step"] for s in steps if s["compensation_status"] == "done"}
        undone = {"release": "inventory", "void": "payment", "cancel": "shipping"}
        assert compensated >= {undone[op] for op in want_effects if op in undone}, (order_id, steps)
        assert (saga["status"] == "committed") == (want_outcome == "shipped"), (order_id, saga)
        got[want_outcome] += 1
    report = _report(dag_run)
    assert report == {"orders": 200, **dict(sorted(got.items()))}
    assert report["shipped"] == 95 and report["compensated"] == 65


def _report(dag_run) -> dict:
    from airflow_runs import stored_xcom

    return stored_xcom(dag_run.dag_id, dag_run.run_id, "report")


def test_a_bad_feed_names_the_file_the_line_and_the_order(tmp_path):
    good, bad = new_order(order_id="F-1"), new_order(order_id="F-2", amount=-5)
    feed = tmp_path / "pending.jsonl"
    feed.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n{not json\n")
    with pytest.raises(OrderFeedError) as raised:
        read_orders(feed)
    message = str(raised.value)
    assert str(feed) in message and "2 bad line(s)" in message
    assert "line 2: order 'F-2' is invalid: amount:" in message and "line 3: not JSON" in message
