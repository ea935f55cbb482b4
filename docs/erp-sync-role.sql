-- The PostgreSQL role a Conduit sync runs as: least privilege for the ERP connection (erp_default).
--
-- Run once, as a superuser or the database's owner, with psql variables:
--
--   psql -d erp -v sync_role=conduit_sync -v sync_password='...' -v erp_database=erp \
--        -v sync_schema=erp_sync -f docs/erp-sync-role.sql
--
-- then point the connection at the role:
--
--   AIRFLOW_CONN_ERP_DEFAULT='postgresql://conduit_sync:...@erp-db:5432/erp'
--
-- and set the spec's target.schema to the schema (target: {type: sql, schema: erp_sync, ...}).
-- (tests/reliability/test_least_privilege.py runs this file and the sync DAG as the role.)
--
-- What the sync does with the ERP, and so all it needs:
--   * every run (ensure_ready): CREATE TABLE IF NOT EXISTS the customer table, conduit_sync_state,
--     conduit_quarantine (+ a unique index), and, when the gate finds defects, conduit_defects
--     (+ a partial unique index): CREATE on its schema, every run (PostgreSQL checks the privilege
--     before it sees that a table exists). The role owns the tables it creates;
--   * reads the column names of the customer table from information_schema.columns;
--   * the load and the plan: CREATE TEMP TABLE ... ON COMMIT DROP, COPY ... FROM STDIN into it (the
--     client sends the rows: no file access), INSERT ... ON CONFLICT DO UPDATE, UPDATE (soft
--     deletes), DELETE (only with delete_mode: hard), SELECT: TEMPORARY on the database;
--   * pg_advisory_xact_lock(hashtext(...)) to serialise loads and the state tables' DDL;
--   * SET TIME ZONE / work_mem / temp_buffers for its own session (any role may).
-- Nothing else: not a superuser, no CREATEDB / CREATEROLE / REPLICATION / BYPASSRLS, no schema of
-- its own to drop, nothing in public or any other schema.

-- 1. The login role. A member of no other role, so it has nothing but what follows.
CREATE ROLE :"sync_role" LOGIN PASSWORD :'sync_password'
    NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT;

-- 2. The database: connect, and temporary tables (the load stages incoming rows in them).
GRANT CONNECT, TEMPORARY ON DATABASE :"erp_database" TO :"sync_role";

-- 3. The sync's schema, owned by whoever runs this file (not by the sync, which so cannot drop it):
--    the sync may look up and create tables in it, and owns only what it creates.
CREATE SCHEMA IF NOT EXISTS :"sync_schema";
GRANT USAGE, CREATE ON SCHEMA :"sync_schema" TO :"sync_role";

-- 4. Advisory locks and the hash naming them. PostgreSQL grants both to PUBLIC; a hardened
--    database that revoked them must grant them back to the sync.
GRANT EXECUTE ON FUNCTION pg_catalog.pg_advisory_xact_lock(bigint) TO :"sync_role";
GRANT EXECUTE ON FUNCTION pg_catalog.hashtext(text) TO :"sync_role";

-- 5. Nothing in public. PostgreSQL 15 and later grant PUBLIC only USAGE on it; 14 and older let
--    every role create tables there. (This affects every role in the database, as intended.)
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

-- 6. Only when the customer table exists already, owned by the ERP's own role (the sync then
--    creates only its conduit_* tables next to it): read and write its rows, nothing more; the
--    sync cannot alter, truncate or drop it. Uncomment and name the table:
--
-- GRANT SELECT, INSERT, UPDATE ON TABLE :"sync_schema".erp_customers TO :"sync_role";
-- GRANT DELETE ON TABLE :"sync_schema".erp_customers TO :"sync_role";    -- delete_mode: hard only
