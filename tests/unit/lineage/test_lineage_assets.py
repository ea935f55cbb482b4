"""Airflow assets derived from a spec: globally distinct names, URIs Airflow accepts as given."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from conduit.lineage.assets import crm_changes_asset_name, erp_table_asset
from conduit.specs.model import load_spec, parse_spec

FLAGSHIP = Path(__file__).resolve().parents[3] / "include" / "syncs" / "crm_to_erp_customer_sync.yaml"


@pytest.fixture(scope="module")
def spec():
    return load_spec(FLAGSHIP)


@pytest.fixture(scope="module")
def other_spec(spec):
    """A second sync writing the same table through the same connection."""
    return parse_spec(
        {**spec.model_dump(by_alias=True), "name": "crm_to_erp_customer_backfill"}, "other.yaml"
    )


def test_erp_table_asset_is_named_after_the_spec_and_points_at_the_table(spec):
    asset = erp_table_asset(spec)

    assert asset.name == "conduit.crm_to_erp_customer_sync.public.erp_customers"
    # Asset normalises or rejects URIs it validates; an unchanged URI means it was accepted as given
    assert asset.uri == "x-conduit-erp://erp_default/public/erp_customers"


def test_two_specs_never_share_an_asset_name(spec, other_spec):
    assert erp_table_asset(spec).name != erp_table_asset(other_spec).name
    assert crm_changes_asset_name(spec) == "conduit.crm_to_erp_customer_sync.crm_changes"
    assert crm_changes_asset_name(spec) != crm_changes_asset_name(other_spec)


def test_a_dag_with_the_asset_as_outlet_serialises(spec):
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG
    from airflow.serialization.serialized_objects import DagSerialization

    with DAG(dag_id=spec.name, schedule=None, start_date=datetime(2026, 1, 1)) as dag:
        EmptyOperator(task_id="load", outlets=[erp_table_asset(spec)])

    restored = DagSerialization.from_dict(DagSerialization.to_dict(dag))

    (outlet,) = restored.get_task("load").outlets
    assert (outlet.name, outlet.uri) == (erp_table_asset(spec).name, erp_table_asset(spec).uri)
