"""Airflow DAG order_fulfilment_nightly: one saga per pending order (see conduit.orders.batch)."""

from conduit.orders.batch import build_nightly_order_dag

dag = build_nightly_order_dag()
