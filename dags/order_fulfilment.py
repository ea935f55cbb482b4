"""Airflow DAG order_fulfilment: one order as a saga with compensations (see conduit.orders.dag)."""

from conduit.orders.dag import build_order_dag

dag = build_order_dag()
