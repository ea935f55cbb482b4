"""Airflow DAG order_fulfilment: one order as a saga with compensations (see conduit.orders.dag).

Deployment settings (environment variables, read when this file is parsed, i.e. by the
dag-processor; a change takes effect at the next parse):

``CONDUIT_ORDER_REVIEW_TIMEOUT_S``
    How long, in seconds, the ``human_review`` task waits for an answer. When nobody answers in
    time its default, Reject, applies: the order is refused and its compensations run. A positive
    number; default 14400 (4 hours). An invalid value is an import error of this DAG.
"""

import os
from datetime import timedelta

from conduit.orders.dag import build_order_dag

REVIEW_TIMEOUT_ENV = "CONDUIT_ORDER_REVIEW_TIMEOUT_S"
DEFAULT_REVIEW_TIMEOUT_S = 4 * 60 * 60


def review_timeout_from_env(environ=os.environ) -> timedelta:
    raw = environ.get(REVIEW_TIMEOUT_ENV, "").strip()
    if not raw:
        return timedelta(seconds=DEFAULT_REVIEW_TIMEOUT_S)
    try:
        seconds = float(raw)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"{REVIEW_TIMEOUT_ENV}={raw!r}: expected a positive number of seconds")
    return timedelta(seconds=seconds)


dag = build_order_dag(review_timeout=review_timeout_from_env())
