"""The customer-revenue ETL: a DAG scheduled on the ERP customer table's asset that joins ERP
customers with ERP orders and writes a per-customer revenue reporting table.

:mod:`.revenue` (pure pandas: revenue, counts, segments, the triggering sync's metadata),
:mod:`.orders` (deterministic seeding of realistic orders), :mod:`.store` (the tables, read and
write in one transaction), :mod:`.lineage` (OpenLineage), :mod:`.assets` (Airflow assets),
:mod:`.operators` (wiring). Importing this package loads neither pandas nor SQLAlchemy.
"""
