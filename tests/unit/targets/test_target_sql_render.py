"""SQL rendering for the SQL ERP target: pure functions, no database."""

from __future__ import annotations

import re

import pytest

from conduit.specs.model import parse_spec
from conduit.targets import sql_render as render
from conduit.targets.sql_render import POSTGRES, SQLITE, TableLayout, quote_ident


@pytest.fixture
def layout() -> TableLayout:
    spec = parse_spec(
        {
            "name": "customers",
            "source": {"type": "hubspot", "properties": ["email", "lastmodifieddate", "vip", "createdate"]},
            "target": {"type": "sql", "table": "erp_customers", "schema": "erp", "key": "customer_number"},
            "mapping": {
                "customer_number": {"transforms": [{"type": "template", "template": "HS-C-{hs_object_id}"}]},
                "crm_id": {"source": "hs_object_id", "dtype": "integer", "nullable": False},
                "email": {"source": "email"},
                "vip": {"source": "vip", "dtype": "boolean"},
                "crm_created_at": {"source": "createdate", "dtype": "timestamp"},
            },
        },
        "test.yaml",
    )
    return TableLayout.of(spec)


def test_quote_ident_doubles_quotes_and_refuses_unusable_names():
    assert quote_ident("customer") == '"customer"'
    assert quote_ident('we"ird') == '"we""ird"'
    for bad in ("", "a\x00b"):
        with pytest.raises(ValueError):
            quote_ident(bad)


def test_layout_follows_the_spec_and_the_key_is_never_nullable(layout):
    assert layout.names == ["customer_number", "crm_id", "email", "vip", "crm_created_at"]
    assert layout.staged_names[-2:] == ["source_modified_at", "row_hash"]
    assert layout.key_column.nullable is False
    assert [c.name for c in layout.all_columns][-7:] == [
        "source_modified_at", "row_hash", "active", "deleted_at", "created_at", "updated_at", "last_run_id"
    ]


def test_postgres_customer_table_types_key_and_defaults(layout):
    ddl = render.create_customer_table(POSTGRES, layout)
    assert ddl.startswith('CREATE TABLE IF NOT EXISTS "erp"."erp_customers"')
    assert '"customer_number" text NOT NULL PRIMARY KEY' in ddl
    assert '"crm_id" bigint NOT NULL' in ddl
    assert '"email" text,' in ddl
    assert '"vip" boolean,' in ddl
    assert '"crm_created_at" timestamptz,' in ddl
    assert '"active" boolean NOT NULL DEFAULT true' in ddl
    assert '"source_modified_at" timestamptz NOT NULL' in ddl


def test_sqlite_has_no_schemas_and_keeps_timestamps_as_text(layout):
    ddl = render.create_customer_table(SQLITE, layout)
    assert ddl.startswith('CREATE TABLE IF NOT EXISTS "erp_customers"')
    assert '"crm_created_at" TEXT' in ddl and '"crm_id" INTEGER NOT NULL' in ddl
    assert "id INTEGER PRIMARY KEY AUTOINCREMENT" in render.create_quarantine_table(SQLITE, "erp")[0]
    assert render.create_state_table(SQLITE, "erp").startswith('CREATE TABLE IF NOT EXISTS "conduit_sync_state"')


def test_state_and_quarantine_tables_live_in_the_customer_tables_schema():
    assert '"erp"."conduit_sync_state"' in render.create_state_table(POSTGRES, "erp")
    table, index, drop_old = render.create_quarantine_table(POSTGRES, "erp")
    assert '"erp"."conduit_quarantine"' in table and "raw_record jsonb" in table
    assert "CREATE UNIQUE INDEX IF NOT EXISTS" in index and '"erp"."conduit_quarantine"' in index
    assert "COALESCE(record_key, ''), COALESCE(crm_id, '')" in index  # two keyless records are two
    assert drop_old == 'DROP INDEX IF EXISTS "erp"."conduit_quarantine_once_per_run"'


def test_staging_is_temporary_and_dropped_at_commit_on_postgres(layout):
    pg = render.create_staging_table(POSTGRES, layout)
    assert pg.startswith('CREATE TEMP TABLE "conduit_staging"') and pg.endswith("ON COMMIT DROP")
    assert '"customer_number" text NOT NULL' in pg and '"crm_id" bigint,' in pg  # only key+tracking required
    assert not render.create_staging_table(SQLITE, layout).endswith("ON COMMIT DROP")
    assert render.copy_into_staging(layout) == (
        'COPY "conduit_staging" ("customer_number", "crm_id", "email", "vip", "crm_created_at", '
        '"source_modified_at", "row_hash") FROM STDIN (FORMAT csv)'
    )
    assert render.insert_positional("conduit_staging", 3) == 'INSERT INTO "conduit_staging" VALUES (?, ?, ?)'


def test_upsert_keys_on_the_key_guards_against_older_data_and_dedupes(layout):
    sql = render.upsert(POSTGRES, layout)
    assert 'ON CONFLICT ("customer_number") DO UPDATE SET' in sql
    assert 'excluded."source_modified_at" > t."source_modified_at"' in sql  # never from older data
    # of several rows with one key the newest wins
    assert 'SELECT DISTINCT ON ("customer_number")' in sql
    assert 'ORDER BY "customer_number", "source_modified_at" DESC, "row_hash" DESC' in sql
    assert '"crm_id" = excluded."crm_id"' in sql and '"customer_number" = excluded' not in sql
    assert not re.search(r'\s"?created_at"? =', sql.split("DO UPDATE SET")[1])  # never rewritten
    assert "RETURNING (xmax = 0) AS inserted, (updated_at = %(now)s) AS changed" in sql
    assert "%(run_id)s" in sql


def test_sqlite_upsert_uses_its_own_parameters_and_insert_flag(layout):
    sql = render.upsert(SQLITE, layout)
    assert ":now" in sql and ":run_id" in sql and "%(" not in sql
    assert "RETURNING (created_at = :now) AS inserted" in sql
    assert "WHERE true\nON CONFLICT" in sql  # SQLite's parser needs it before ON CONFLICT
    assert 'row_number() OVER (PARTITION BY "customer_number" ORDER BY "source_modified_at" DESC' in sql


def test_postgres_counts_are_aggregated_in_the_database(layout):
    sql = render.upsert_counts(POSTGRES, layout)
    assert sql.startswith("WITH merged AS (\nINSERT INTO")
    assert "count(*) FILTER (WHERE inserted)" in sql


@pytest.mark.parametrize(
    ("mode", "full_refresh", "expected"),
    [
        ("soft", False, 'UPDATE "erp"."erp_customers" SET active = false, deleted_at = %(now)s'),
        ("hard", False, 'DELETE FROM "erp"."erp_customers" WHERE EXISTS (SELECT 1 FROM "conduit_deleted_keys"'),
        ("hard", True, 'DELETE FROM "erp"."erp_customers" WHERE NOT EXISTS (SELECT 1 FROM "conduit_staging"'),
    ],
)
def test_delete_modes(layout, mode, full_refresh, expected):
    assert render.delete_rows(POSTGRES, layout, mode=mode, full_refresh=full_refresh).startswith(expected)


def test_a_delete_spares_rows_newer_than_the_archived_version(layout):
    sql = render.delete_rows(POSTGRES, layout, mode="soft", full_refresh=False)
    assert 'x."source_modified_at" >= "erp"."erp_customers"."source_modified_at"' in sql


def test_soft_delete_touches_active_rows_only_and_unknown_modes_fail(layout):
    assert "WHERE active AND" in render.delete_rows(SQLITE, layout, mode="soft", full_refresh=True)
    with pytest.raises(ValueError, match="unknown delete mode"):
        render.delete_rows(SQLITE, layout, mode="archive", full_refresh=False)


def test_watermark_only_moves_forward_in_tuple_order():
    sql = render.advance_watermark(POSTGRES, "erp")
    assert 'INSERT INTO "erp"."conduit_sync_state" AS s' in sql
    assert "WHERE (excluded.watermark_ms, excluded.watermark_id) > (s.watermark_ms, s.watermark_id)" in sql


def test_lists_are_passed_as_one_parameter():
    assert "id = ANY(%(ids)s)" in render.mark_replayed(POSTGRES, "erp")
    assert "id IN (SELECT value FROM json_each(:ids))" in render.mark_replayed(SQLITE, "erp")
    assert "AND replayed_at IS NULL" in render.mark_replayed(SQLITE, "erp")


def test_postgres_key_checksum_sums_64_bit_digests_of_active_rows(layout):
    sql = render.postgres_key_checksum(layout)
    assert "left(md5(\"customer_number\"::text || ':' || \"row_hash\"), 16))::bit(64)::bigint" in sql
    assert sql.endswith("WHERE active")
