"""Waits in the triggerer (no worker slot) for a shipment to ship."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

WAITING = frozenset({"created"})


class ShipmentShippedTrigger(BaseTrigger):
    """Polls the shipment's status every ``poll_interval`` seconds until it leaves ``created``
    (``shipped``, or ``cancelled`` by someone else), or ``deadline`` (epoch seconds) passes. The
    deadline is the trigger's own so it holds wherever the trigger runs (also ``dag.test()``,
    which runs triggers inline without Airflow's defer timeout). Transient errors of the status
    call are logged and polled through."""

    def __init__(self, shipment_id: str, *, deadline: float, shipping_conn_id: str = "shipping_default",
                 poll_interval: float = 5.0) -> None:
        super().__init__()
        self.shipment_id, self.deadline = shipment_id, deadline
        self.shipping_conn_id, self.poll_interval = shipping_conn_id, poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}",
                {"shipment_id": self.shipment_id, "deadline": self.deadline,
                 "shipping_conn_id": self.shipping_conn_id, "poll_interval": self.poll_interval})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from conduit.hooks.order_services import ShippingHook

        hook = ShippingHook(self.shipping_conn_id, max_retries=0)
        while True:
            try:
                status = (await asyncio.to_thread(hook.shipment, self.shipment_id))["status"]
            except Exception as exc:  # noqa: BLE001 - a flaky status call is polled through
                self.log.warning("shipment %s status unavailable: %s", self.shipment_id, exc)
                status = None
            if status is not None and status not in WAITING:
                yield TriggerEvent({"shipment_id": self.shipment_id, "status": status})
                return
            if time.time() >= self.deadline:
                yield TriggerEvent({"shipment_id": self.shipment_id, "status": "timeout", "last_status": status})
                return
            await asyncio.sleep(min(self.poll_interval, max(self.deadline - time.time(), 0.05)))
