"""Conduit sync DAGs for Airflow: one DAG per spec in include/syncs/*.yaml (see conduit.factory)."""

from conduit.factory import build_sync_dags, include_dir

globals().update(build_sync_dags(include_dir(__file__) / "syncs"))
