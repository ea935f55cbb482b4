"""The ETL's OpenLineage (validated against the OpenLineage JSON schemas offline) and its DAG:
scheduled on the sync's ERP table asset, light, owned, retried."""

from __future__ import annotations

import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from conduit.etl import lineage
from conduit.etl.assets import orders_asset, revenue_report_asset
from conduit.etl.dag import build_revenue_dag
from conduit.lineage import openlineage as ol
from conduit.lineage.assets import erp_table_asset
from conduit.specs.model import load_spec

REPO = Path(__file__).resolve().parents[3]
FLAGSHIP = REPO / "include" / "syncs" / "crm_to_erp_customer_sync.yaml"
VALIDATOR = REPO / "tests" / "fixtures" / "openlineage" / "validate_events.py"  # vendored, see its README

CUSTOMERS = ol.postgres_dataset("erp-db", 5432, "erp", "public", "erp_customers")
ORDERS = ol.postgres_dataset("erp-db", 5432, "erp", "public", "erp_orders")
REPORT = ol.postgres_dataset("erp-db", 5432, "erp", "public", "erp_customer_revenue")


@pytest.fixture(scope="module")
def spec():
    return load_spec(FLAGSHIP)


def test_report_has_inputs_schema_and_column_lineage():
    result = lineage.revenue_lineage(CUSTOMERS, ORDERS, REPORT, row_count=588)
    assert [(d.namespace, d.name) for d in result.inputs] == [
        ("postgres://erp-db:5432", "erp.public.erp_customers"), ("postgres://erp-db:5432", "erp.public.erp_orders")]
    (out,) = result.outputs
    assert out.name == "erp.public.erp_customer_revenue" and out.outputFacets["outputStatistics"].rowCount == 588
    assert [f.name for f in out.facets["schema"].fields] == [name for name, *_ in lineage.REPORT_FIELDS]
    columns = out.facets["columnLineage"].fields
    assert [(f.name, f.field) for f in columns["revenue"].inputFields] == [("erp.public.erp_orders", "amount")]
    assert columns["revenue"].inputFields[0].transformations[0].subtype == "AGGREGATION"
    assert [(f.name, f.field) for f in columns["customer_number"].inputFields] == [
        ("erp.public.erp_customers", "customer_number")]
    assert {f.field for f in columns["segment"].inputFields} == {"amount", "ordered_at"}
    filters = {(f.name.rsplit(".", 1)[-1], f.field, f.transformations[0].subtype)
               for f in out.facets["columnLineage"].dataset}
    assert ("erp_customers", "active", "FILTER") in filters and ("erp_orders", "status", "FILTER") in filters
    assert ("erp_orders", "customer_number", "JOIN") in filters


def test_lineage_events_validate_against_the_openlineage_schemas(tmp_path):
    from openlineage.client.event_v2 import Job, Run, RunEvent, RunState
    from openlineage.client.serde import Serde

    steps = {
        "seed_orders": (lineage.seed_lineage(CUSTOMERS, ORDERS), lineage.seed_lineage(CUSTOMERS, ORDERS, row_count=9)),
        "customer_revenue": (lineage.revenue_lineage(CUSTOMERS, ORDERS, REPORT),
                             lineage.revenue_lineage(CUSTOMERS, ORDERS, REPORT, row_count=588)),
    }
    events = []
    for task, pair in steps.items():
        run = Run(runId=str(uuid.uuid4()))
        for state, result in zip((RunState.START, RunState.COMPLETE), pair, strict=True):
            events.append(RunEvent(eventType=state, eventTime=datetime.now(UTC).isoformat(), run=run,
                                   job=Job(namespace="conduit", name=f"erp_customer_revenue_etl.{task}"),
                                   producer="https://github.com/conduit/conduit",
                                   inputs=result.inputs, outputs=result.outputs))
    events_file = tmp_path / "events.jsonl"
    events_file.write_text("".join(Serde.to_json(e) + "\n" for e in events))
    result = subprocess.run([sys.executable, str(VALIDATOR), "--strict", str(events_file)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith("4 events, ")


def test_dag_is_scheduled_on_the_sync_table_asset(spec):
    dag = build_revenue_dag(spec)
    assert dag.dag_id == "erp_customer_revenue_etl" and not dag.catchup and dag.max_active_runs == 1
    assert list(dag.timetable.asset_condition.objects) == [erp_table_asset(spec)]
    assert dag.owner == spec.owner and dag.default_args["retries"] >= 2 and "conduit" in dag.tags
    assert list(dag.task_dict) == ["seed_orders", "customer_revenue"]
    revenue = dag.task_dict["customer_revenue"]
    assert revenue.upstream_task_ids == {"seed_orders"}
    assert revenue.inlets == [erp_table_asset(spec), orders_asset(spec)]
    assert revenue.outlets == [revenue_report_asset(spec)]
    assert revenue_report_asset(spec).name == "conduit.erp_customer_revenue_etl.public.erp_customer_revenue"
    assert "seed_orders" in dag.params and "completed" in dag.doc_md


def test_operator_lineage_names_the_erp_tables(spec, tmp_path, monkeypatch):
    """The operator builds its datasets from the ERP connection (a SQLite file here)."""
    monkeypatch.setenv("AIRFLOW_CONN_ERP_DEFAULT", f'{{"conn_type": "sqlite", "host": "{tmp_path}/erp.db"}}')
    task = build_revenue_dag(spec).task_dict["customer_revenue"]
    result = task.get_openlineage_facets_on_start()
    assert [d.name for d in result.inputs] == ["erp_customers", "erp_orders"]
    assert result.outputs[0].namespace == f"sqlite://{tmp_path}/erp.db"
    assert result.outputs[0].name == "erp_customer_revenue"
