"""Triggers run by Airflow's triggerer (deferrable tasks and asset watchers)."""
