"""Lineage for syncs: OpenLineage datasets and facets (``conduit.lineage.openlineage``) and the
Airflow assets a sync produces (``conduit.lineage.assets``), all derived from the sync spec.

Kept empty so that importing one submodule does not import the other.
"""
