"""Least privilege (issue 17, item 6): the sync runs as the role ``docs/erp-sync-role.sql`` makes.

The script is run as written (its psql variables filled in) for a fresh role, in a hardened
database: PUBLIC may not connect, make temporary tables, use the public schema, take advisory
locks or hash their names there, so the sync has exactly what the script grants. The real sync DAG
(``dag.test()``, the stand-in CRM over HTTP) then runs with ``erp_default`` logging in as that role:
a first full run that creates the tables and quarantines records, an incremental run that updates
and soft-deletes; and, with the customer table created beforehand by another role and only the
script's table grants, a run that writes into it. What the role must not do is tried for real:
each statement fails with "permission denied".
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pandas as pd
import psycopg
import psycopg.conninfo
import pytest
from reliability_env import REPO
from sync_helpers import active_rows, crm_mapped, extract_summary, plain, run_ok, seeded_mapped, xcom

pytestmark = pytest.mark.postgres

ROLE_SQL = REPO / "docs" / "erp-sync-role.sql"
DATABASE = f"conduit_lp_{os.getpid()}"
SCHEMA = "erp_sync"  # one per session: the sync's asset names carry the schema
OTHER_SCHEMA = "billing"


def psql_variables(text: str, variables: dict[str, str]) -> str:
    """The script as psql sends it with ``-v name=value``: ``:"name"`` an identifier, ``:'name'``
    a literal."""
    def fill(match: re.Match) -> str:
        quote, value = match.group(1), variables[match.group(2)]
        return quote + value.replace(quote, quote * 2) + quote

    return re.sub(r""":(["'])(\w+)\1""", fill, text)


def table_grants(text: str) -> str:
    """Section 6 of the script, uncommented: the grants on a customer table the ERP owns
    (soft deletes: no DELETE)."""
    return "\n".join(line.removeprefix("-- ") for line in text.splitlines() if line.startswith("-- GRANT SELECT"))


@pytest.fixture(scope="module")
def database(pg_server_dsn) -> Iterator[Callable[[str], None]]:
    """A database where PUBLIC has nothing the sync needs (a hardened ERP); runs a statement in it
    as the superuser."""
    admin = psycopg.conninfo.make_conninfo(pg_server_dsn, dbname=DATABASE)

    def superuser(statement: str) -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(statement)

    with psycopg.connect(pg_server_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DATABASE}"')
    superuser(f'REVOKE ALL ON DATABASE "{DATABASE}" FROM PUBLIC; REVOKE ALL ON SCHEMA public FROM PUBLIC; '
              "REVOKE EXECUTE ON FUNCTION pg_advisory_xact_lock(bigint), hashtext(text) FROM PUBLIC")
    yield superuser
    with psycopg.connect(pg_server_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')


@dataclass(frozen=True)
class SyncRole:
    name: str
    password: str
    schema: str

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.name}:{self.password}@127.0.0.1:5432/{DATABASE}"

    def execute(self, statement: str) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(statement)


@pytest.fixture
def sync_role(database) -> Iterator[SyncRole]:
    """A fresh role made by docs/erp-sync-role.sql (with its schema); dropped with all it owns."""
    role = SyncRole(f"conduit_sync_{uuid.uuid4().hex[:8]}", f"pw-{uuid.uuid4().hex}", SCHEMA)
    database(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE')
    database(psql_variables(ROLE_SQL.read_text(), {"sync_role": role.name, "sync_password": role.password,
                                                   "erp_database": DATABASE, "sync_schema": role.schema}))
    yield role
    database(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE')
    database(f'DROP OWNED BY "{role.name}" CASCADE')  # and its grants on the database and the functions
    database(f'DROP ROLE "{role.name}"')


@pytest.fixture
def other_schema(database) -> Iterator[str]:
    """Another application's schema, with a table and a row."""
    database(f'DROP SCHEMA IF EXISTS "{OTHER_SCHEMA}" CASCADE')
    database(f'CREATE SCHEMA "{OTHER_SCHEMA}"')
    database(f'CREATE TABLE "{OTHER_SCHEMA}".payroll (employee text, salary numeric)')
    database(f"INSERT INTO \"{OTHER_SCHEMA}\".payroll VALUES ('someone', 123456)")
    yield OTHER_SCHEMA
    database(f'DROP SCHEMA IF EXISTS "{OTHER_SCHEMA}" CASCADE')


def table_owners(role: SyncRole) -> dict[str, str]:
    """Who owns each table of the role's schema (the role may read the catalog)."""
    with psycopg.connect(role.dsn) as conn:
        return dict(conn.execute("SELECT tablename, tableowner FROM pg_tables WHERE schemaname = %s",
                                 (role.schema,)))


def assert_erp_is_the_crm_but(env, spec, quarantined: list[str]) -> pd.DataFrame:
    """Active ERP rows == the live CRM mapped by the spec, without the quarantined records."""
    want = crm_mapped(spec)
    want = want[~want["crm_id"].astype(str).isin(quarantined)].reset_index(drop=True)
    got = active_rows(env.target(), spec)
    assert got[spec.target.key].tolist() == want[spec.target.key].tolist()
    pd.testing.assert_frame_equal(plain(got[spec.columns]), plain(want[spec.columns]))
    assert got["row_hash"].tolist() == want["row_hash"].tolist()
    return got


def test_the_sync_runs_as_the_role_full_then_incremental_quarantining_what_the_gate_rejects(
        make_sync_env, sync_role):
    env = make_sync_env(schema=sync_role.schema, erp_dsn=sync_role.dsn)
    crm, spec = env.crm, env.spec()
    ids = seeded_mapped(spec)["crm_id_text"].tolist()
    nameless = ids[:3]  # no name: the gate rejects them (0.5 %, under the spec's 1 %)
    for crm_id in nameless:
        crm.admin.modify(crm_id, {"firstname": "", "lastname": ""}, lastmodifieddate_ms=crm.admin.clock_ms() - 900_000)

    first = run_ok(env)

    assert (xcom(first, "quality_gate")["rejected"], xcom(first, "load")["inserted"]) == (3, 597)
    assert sorted(q["crm_id"] for q in env.target().open_quarantine(spec)) == sorted(nameless)
    assert_erp_is_the_crm_but(env, spec, nameless)
    owners = table_owners(sync_role)
    assert {"erp_customers", "conduit_sync_state", "conduit_quarantine"} <= set(owners)
    assert set(owners.values()) == {sync_role.name}  # it created them, and nothing elsewhere

    crm.admin.bulk_modify(ids=ids[10:15], properties={"company": "Least Privilege AG"},
                          lastmodifieddate_ms=crm.admin.clock_ms() - 120_000)
    crm.admin.archive(ids[20])
    second = run_ok(env)

    assert extract_summary(second)["mode"] == "incremental"
    loaded = xcom(second, "load")
    assert (loaded["inserted"], loaded["updated"], loaded["deleted"]) == (0, 5, 1)
    assert_erp_is_the_crm_but(env, spec, nameless)
    assert env.target().count(spec, active_only=False) == 597


def test_the_role_writes_into_a_customer_table_the_erp_owns_but_cannot_alter_it(
        make_sync_env, sync_role, database):
    from conduit.targets.sql_render import POSTGRES, TableLayout, create_customer_table

    env = make_sync_env(schema=sync_role.schema, erp_dsn=sync_role.dsn)
    spec = env.spec()
    database(create_customer_table(POSTGRES, TableLayout.of(spec)))  # the ERP's table, owned by another role
    database(psql_variables(table_grants(ROLE_SQL.read_text()),
                            {"sync_role": sync_role.name, "sync_schema": sync_role.schema}))

    dag_run = run_ok(env)

    assert xcom(dag_run, "load")["inserted"] == 600
    assert_erp_is_the_crm_but(env, spec, [])
    owners = table_owners(sync_role)
    assert owners.pop("erp_customers") == "postgres" and set(owners.values()) == {sync_role.name}
    table = f'"{sync_role.schema}".erp_customers'
    for statement in (f"DROP TABLE {table}", f"ALTER TABLE {table} ADD COLUMN x int", f"TRUNCATE {table}",
                      f"DELETE FROM {table}", f"CREATE INDEX conduit_probe ON {table} (email)"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            sync_role.execute(statement)
    assert env.target().count(spec) == 600


FORBIDDEN = {
    "create a table in public": "CREATE TABLE public.conduit_probe (x int)",
    "create a table in another schema": "CREATE TABLE {other}.conduit_probe (x int)",
    "read another schema's table": "SELECT * FROM {other}.payroll",
    "write another schema's table": "INSERT INTO {other}.payroll VALUES ('me', 1)",
    "create a schema": "CREATE SCHEMA conduit_probe",
    "drop its own schema": "DROP SCHEMA {schema}",
    "create a database": "CREATE DATABASE conduit_probe",
    "create a role": "CREATE ROLE conduit_probe",
    "become the superuser": "SET ROLE postgres",
    "change the server's settings": "ALTER SYSTEM SET work_mem = '1GB'",
    "write a server file": "COPY (SELECT 1) TO '/tmp/conduit_probe'",
    "read a server file": "SELECT pg_read_file('/etc/hostname')",
}


@pytest.mark.parametrize("statement", FORBIDDEN.values(), ids=FORBIDDEN.keys())
def test_the_role_cannot(statement, sync_role, other_schema):
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        sync_role.execute(statement.format(other=f'"{other_schema}"', schema=f'"{sync_role.schema}"'))


def test_the_role_has_no_attribute_beyond_login(sync_role):
    with psycopg.connect(sync_role.dsn) as conn:
        attributes = conn.execute(
            "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, rolinherit, rolcanlogin, "
            "(SELECT count(*) FROM pg_auth_members WHERE member = r.oid) FROM pg_roles AS r WHERE rolname = %s",
            (sync_role.name,)).fetchone()
    assert attributes == (False, False, False, False, False, False, True, 0)


def test_the_script_fills_psql_variables_as_psql_does():
    text = "CREATE ROLE :\"r\" PASSWORD :'p'; GRANT x ON SCHEMA :\"s\" TO :\"r\";"
    assert psql_variables(text, {"r": 'we"ird', "p": "it's", "s": "erp"}) == \
        "CREATE ROLE \"we\"\"ird\" PASSWORD 'it''s'; GRANT x ON SCHEMA \"erp\" TO \"we\"\"ird\";"
    assert table_grants(ROLE_SQL.read_text()).startswith("GRANT SELECT, INSERT, UPDATE ON TABLE")
