"""Operators of the nightly order batch: read the feed, report what became of every order."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

if TYPE_CHECKING:
    from airflow.sdk import Context


class PendingOrdersOperator(BaseOperator):
    """Reads and validates the new-orders feed; returns the orders the sagas fan out over (a few
    hundred small records: the mapping needs them as XCom)."""

    template_fields: Sequence[str] = ("feed",)
    ui_color = "#e7f5ff"

    def __init__(self, *, feed: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.feed = feed

    def execute(self, context: Context) -> list[dict[str, Any]]:
        from conduit.orders.feed import read_orders

        orders = read_orders(self.feed)
        self.log.info("%d pending orders in %s", len(orders), self.feed)
        return orders


class OrderBatchReportOperator(BaseOperator):
    """Counts how every order's saga ended (shipped, rejected, needs_review, compensated) from the
    saga log, and fails when any saga is not in a consistent end state (compensation_failed, still
    compensating, or missing): those need a person."""

    template_fields: Sequence[str] = ("orders",)
    ui_color = "#f1f3f5"

    def __init__(self, *, orders: Any, log_conn_id: str = "conduit_saga_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.orders, self.log_conn_id = orders, log_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from conduit.exceptions import SagaCompensationFailed
        from conduit.hooks.saga_log import SagaLogHook
        from conduit.orders.flow import outcome
        from conduit.orders.model import saga_id_for

        log = SagaLogHook(saga_conn_id=self.log_conn_id).get_conn()
        saga_ids = [saga_id_for(order["order_id"]) for order in self.orders or ()]
        outcomes = {saga_id: outcome(saga) if (saga := log.saga(saga_id)) else "missing" for saga_id in saga_ids}
        counts = Counter(outcomes.values())
        summary = {"orders": len(outcomes), **dict(sorted(counts.items()))}
        self.log.info("nightly orders: %s", summary)
        stuck = {s: o for s, o in outcomes.items() if o not in ("shipped", "rejected", "needs_review", "compensated")}
        if stuck:
            raise SagaCompensationFailed(f"{len(stuck)} order saga(s) need a person: {dict(list(stuck.items())[:20])}")
        return summary
