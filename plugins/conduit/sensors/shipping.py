"""Waiting for a shipment to ship, deferred to the triggerer."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk.bases.sensor import BaseSensorOperator

from conduit.triggers.shipping import WAITING, ShipmentShippedTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context


class ShipmentShippedSensor(BaseSensorOperator):
    """Succeeds once the shipment is ``shipped``; fails when it was cancelled or when ``max_wait_s``
    seconds pass first (no retry: the saga's compensations are the fallback path). Deferrable:
    the wait holds no worker slot. ``since`` (templated, epoch seconds; e.g. when the shipment was
    created) anchors the wait, so a retried sensor (a trigger that died, a lost worker) does not
    wait ``max_wait_s`` again; without it the wait counts from this try's start."""

    template_fields: Sequence[str] = ("shipment_id", "max_wait_s", "poll_interval", "since")
    ui_color = "#fff9db"

    def __init__(self, *, shipment_id: str, max_wait_s: Any = 3600, shipping_conn_id: str = "shipping_default",
                 poll_interval: Any = 5.0, since: Any = None, **kwargs: Any) -> None:
        super().__init__(timeout=3600, **kwargs)
        self.shipment_id, self.shipping_conn_id, self.poll_interval = shipment_id, shipping_conn_id, poll_interval
        self.max_wait_s = max_wait_s  # templated (e.g. from a param), so not Airflow's plain ``timeout``
        self.since = since

    def execute(self, context: Context) -> Any:
        self.timeout, self.poll_interval = float(self.max_wait_s), float(self.poll_interval)
        now = time.time()
        # "None": a template rendering a missing value as text (a DAG without native rendering)
        deadline = (float(self.since) if self.since not in (None, "", "None") else now) + self.timeout
        # a deadline already passed still asks once: a shipment that shipped meanwhile succeeds
        self.defer(trigger=ShipmentShippedTrigger(self.shipment_id, deadline=deadline,
                                                  shipping_conn_id=self.shipping_conn_id,
                                                  poll_interval=self.poll_interval),
                   method_name="execute_complete", timeout=timedelta(seconds=max(deadline - now, 0) + 60))

    def poke(self, context: Context) -> bool:
        from conduit.hooks.order_services import ShippingHook

        status = ShippingHook(self.shipping_conn_id).shipment(self.shipment_id)["status"]
        return self._judge(status)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        self._judge(event["status"])
        return event

    def _judge(self, status: str) -> bool:
        from airflow.sdk.exceptions import AirflowFailException, AirflowSensorTimeout

        if status == "shipped":
            return True
        if status == "timeout":
            raise AirflowSensorTimeout(f"shipment {self.shipment_id} did not ship within {self.timeout}s")
        if status not in WAITING:
            raise AirflowFailException(f"shipment {self.shipment_id} is {status}, not shipped")
        return False
