"""The SQL checks run on the ERP table after each load, as ``SQLColumnCheckOperator`` /
``SQLTableCheckOperator`` arguments: what every Conduit table must satisfy, plus the spec's own
``target.checks`` (which win on a name clash).

Table checks are aggregates (``COUNT(*) FILTER (WHERE ...) = 0``): the operator takes the MIN of
a per-row condition, which is NULL - a failure - on an empty table; an aggregate gives one row.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from conduit.targets.sql_render import POSTGRES, ROW_HASH, SOURCE_MODIFIED_AT

if TYPE_CHECKING:
    from conduit.specs.model import SyncSpec

BUILTIN_TABLE_CHECKS = {
    "deleted_rows_are_dated": "COUNT(*) FILTER (WHERE NOT active AND deleted_at IS NULL) = 0",
    "active_rows_are_not_dated_deleted": "COUNT(*) FILTER (WHERE active AND deleted_at IS NOT NULL) = 0",
    "updated_not_before_created": "COUNT(*) FILTER (WHERE updated_at < created_at) = 0",
}


def qualified_table(spec: SyncSpec) -> str:
    return POSTGRES.qualify(*spec.target.location)


def column_checks(spec: SyncSpec) -> dict[str, dict[str, dict[str, Any]]]:
    """``column_mapping`` of ``SQLColumnCheckOperator``: the key is present and unique, every
    row carries its change tracking, non-nullable mapped columns are filled on active rows."""
    zero = {"equal_to": 0}
    checks: dict[str, dict[str, dict[str, Any]]] = {
        spec.target.key: {"null_check": dict(zero), "unique_check": dict(zero)},
        ROW_HASH: {"null_check": dict(zero)},
        SOURCE_MODIFIED_AT: {"null_check": dict(zero)},
    }
    for column, field in spec.mapping.items():
        if not field.nullable and column != spec.target.key:
            checks.setdefault(column, {})["null_check"] = {"equal_to": 0, "partition_clause": "active"}
    for column, declared in spec.target.checks.columns.items():
        for name, check in declared.items():
            checks.setdefault(column, {})[name] = check.model_dump(exclude_none=True)
    return checks


def table_checks(spec: SyncSpec) -> dict[str, dict[str, Any]]:
    """``checks`` of ``SQLTableCheckOperator``."""
    checks = {name: {"check_statement": statement} for name, statement in BUILTIN_TABLE_CHECKS.items()}
    checks.update({name: check.model_dump(exclude_none=True) for name, check in spec.target.checks.table.items()})
    return checks
