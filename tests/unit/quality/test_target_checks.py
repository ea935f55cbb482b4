"""The SQL checks a spec implies for its ERP table, and the operators that carry them."""

from __future__ import annotations

from pathlib import Path

import pytest

from conduit.quality.target_checks import BUILTIN_TABLE_CHECKS, column_checks, table_checks
from conduit.specs.model import load_spec

FLAGSHIP = Path(__file__).resolve().parents[3] / "include" / "syncs" / "crm_to_erp_customer_sync.yaml"


@pytest.fixture(scope="module")
def spec():
    return load_spec(FLAGSHIP)


def test_column_checks_cover_key_tracking_required_columns_and_the_specs_own(spec):
    checks = column_checks(spec)
    assert checks["customer_number"] == {"null_check": {"equal_to": 0}, "unique_check": {"equal_to": 0}}
    assert checks["row_hash"] == checks["source_modified_at"] == {"null_check": {"equal_to": 0}}
    # crm_id is `nullable: false` in the mapping; the spec adds uniqueness
    assert checks["crm_id"] == {"null_check": {"equal_to": 0, "partition_clause": "active"},
                                "unique_check": {"equal_to": 0}}
    assert checks["lifecycle_stage"] == {"null_check": {"equal_to": 0, "partition_clause": "active"}}
    assert "email" not in checks  # nullable and not declared
    assert isinstance(checks["crm_id"]["unique_check"]["equal_to"], int)


def test_table_checks_are_the_builtin_ones_plus_the_specs(spec):
    checks = table_checks(spec)
    assert set(BUILTIN_TABLE_CHECKS) < set(checks)
    assert checks["crm_ids_are_positive"] == {"check_statement": "COUNT(*) FILTER (WHERE crm_id <= 0) = 0"}
    # aggregates: one row even on an empty table, where MIN over per-row conditions is NULL
    assert all(c["check_statement"].startswith("COUNT(*) FILTER") for c in checks.values())


def test_a_declared_check_replaces_a_builtin_one_of_the_same_name(spec):
    target = spec.target.model_copy(update={"checks": spec.target.checks.model_copy(update={
        "columns": {"customer_number": {"unique_check": spec.target.checks.columns["crm_id"]["unique_check"]
                                        .model_copy(update={"equal_to": None, "leq_to": 3})}},
    })})
    checks = column_checks(spec.model_copy(update={"target": target}))
    assert checks["customer_number"]["unique_check"] == {"leq_to": 3}


def test_operators_check_the_qualified_table_and_fail_without_retry(spec):
    from conduit.operators.target_checks import ErpColumnCheckOperator, ErpTableCheckOperator

    columns = ErpColumnCheckOperator(task_id="columns", spec=spec)
    table = ErpTableCheckOperator(task_id="table", spec=spec)
    for operator in (columns, table):
        assert operator.conn_id == "erp_default" and operator.table == '"public"."erp_customers"'
        assert operator.retry_on_failure is False
    assert "COUNT(customer_number) - COUNT(DISTINCT(customer_number))" in columns.sql
    assert "WHERE active" in columns.sql
    assert "CASE WHEN COUNT(*) FILTER (WHERE crm_id <= 0) = 0 THEN 1 ELSE 0 END" in table.sql
