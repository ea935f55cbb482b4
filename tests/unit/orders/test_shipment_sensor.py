"""ShipmentShippedSensor's deadline: anchored on ``since`` (when the shipment was created), so a
retried sensor does not wait ``max_wait_s`` again; without it, from the try's start."""

from __future__ import annotations

import time

import pytest
from airflow.sdk.exceptions import TaskDeferred

from conduit.sensors.shipping import ShipmentShippedSensor


def deferred(**kwargs) -> TaskDeferred:
    sensor = ShipmentShippedSensor(task_id="wait_for_shipment", shipment_id="shp-1", max_wait_s="100",
                                   poll_interval="0.5", **kwargs)
    with pytest.raises(TaskDeferred) as raised:
        sensor.execute({})
    return raised.value


def test_a_retry_keeps_the_deadline_of_the_shipments_creation():
    created = time.time() - 90  # the first try waited 90 s, then its trigger died
    retry = deferred(since=str(created))
    assert retry.trigger.deadline == pytest.approx(created + 100)
    assert retry.timeout.total_seconds() == pytest.approx(10 + 60, abs=1)  # Airflow's backstop: the rest + 60 s


def test_a_deadline_already_passed_still_asks_once():
    late = deferred(since=time.time() - 500)
    assert late.trigger.deadline < time.time() and late.timeout.total_seconds() == pytest.approx(60, abs=1)


# None: a shipping result logged before created_at existed; "None": the same rendered as text
@pytest.mark.parametrize("since", [None, "", "None"])
def test_without_since_the_wait_counts_from_this_try(since):
    start = time.time()
    assert deferred(since=since).trigger.deadline == pytest.approx(start + 100, abs=2)
