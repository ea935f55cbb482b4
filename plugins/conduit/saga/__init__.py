"""Saga with compensating actions as an Airflow building block.

``model`` holds the pure bookkeeping, ``log`` the saga log (PostgreSQL or SQLite), ``operators``
the tasks and ``builder.Saga`` the way a DAG author declares a saga. Importing this package is
light (no database driver, no pandas): DAG files use it at parse time.
"""

from conduit.saga.builder import Saga, SagaStep
from conduit.saga.operators import StepContext

__all__ = ["Saga", "SagaStep", "StepContext"]
