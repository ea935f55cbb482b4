"""Airflow DAG erp_customer_revenue_etl: the customer revenue report, scheduled on the ERP customer
table asset of the flagship sync (see conduit.etl.dag)."""

from conduit.etl.dag import FLAGSHIP_SPEC, build_revenue_dag
from conduit.factory import include_dir
from conduit.specs.model import load_spec

dag = build_revenue_dag(load_spec(include_dir(__file__) / "syncs" / FLAGSHIP_SPEC))
