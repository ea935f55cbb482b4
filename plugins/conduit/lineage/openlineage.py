"""OpenLineage datasets and facets for a sync, built from its spec and plain connection facts.

Pure functions: no network, no Airflow context, no hooks. Operators call them from their
``get_openlineage_facets_on_start/complete/failure`` methods; the OpenLineage provider catches
and logs anything raised there, so lineage never fails a task. Every builder accepts missing
run facts (counts, assertions) and leaves out the facets it cannot fill.

openlineage-python is imported inside the functions: DAG files import the operators, and
parsing a DAG must not pay for the OpenLineage client.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from conduit.specs.model import (
    BUILTIN_PROPERTIES,
    Concat,
    FieldMapping,
    MapValues,
    PhoneE164,
    SyncSpec,
    Template,
    Transform,
)

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from openlineage.client.event_v2 import InputDataset, OutputDataset
    from openlineage.client.facet_v2 import (
        column_lineage_dataset,
        data_quality_assertions_dataset,
        documentation_dataset,
        output_statistics_output_dataset,
        schema_dataset,
    )


@dataclass(frozen=True)
class DatasetRef:
    """Where a dataset lives (``namespace``, the datasource) and what it is there (``name``)."""

    namespace: str
    name: str


# --- naming (https://openlineage.io/docs/spec/naming) -------------------------------------------


def hubspot_dataset(base_url: str, object_type: str, api_version: str = "2026-09") -> DatasetRef:
    """The CRM object collection the hook reads: namespace = API root (scheme://host[:port]),
    name = the objects path for the connection's API version."""
    from conduit.sources.hubspot.address import objects_path

    full = base_url if "://" in base_url else f"https://{base_url}"
    url = urlsplit(full)
    if "@" in full.partition("://")[2].removeprefix(url.netloc):
        # credentials with a '/', '?' or '#' in them: the parser took part of them for the host
        # or the path, and the name would carry them. Never quote them: the provider logs this.
        raise ValueError("the HubSpot base URL has an '@' after its host (unencoded credentials?); "
                         "lineage cannot name the CRM dataset")
    try:
        port = url.port
    except ValueError:
        raise ValueError("the HubSpot base URL's port is not a number; lineage cannot name the CRM dataset") from None
    authority = _host(url.hostname) + (f":{port}" if port else "")
    path = objects_path(api_version, object_type)
    prefix = url.path.strip("/")  # a base URL may carry a path (a proxy, the stand-in)
    return DatasetRef(f"{url.scheme}://{authority}", f"{prefix}/{path}" if prefix else path)


def _host(host: str) -> str:
    """A host as a URI authority writes it: an IPv6 literal in brackets (``[::1]``), or
    ``scheme://::1:8000`` names no host and port."""
    return f"[{host}]" if ":" in host else host


def postgres_dataset(host: str, port: int | None, database: str, schema: str, table: str) -> DatasetRef:
    from openlineage.client.naming.dataset import Postgres

    naming = Postgres(host=host, port=str(port or 5432), database=database, schema=schema, table=table)
    return DatasetRef(naming.get_namespace(), naming.get_name())


def sqlite_dataset(path: str, table: str) -> DatasetRef:
    """The naming spec has no SQLite entry; the database file is the datasource, as the
    ``file`` conventions would have it, under the ``sqlite`` scheme the OL SQL parser knows."""
    return DatasetRef(f"sqlite://{os.path.abspath(path)}", table)


def erp_dataset(facts: Mapping[str, Any], schema: str, table: str) -> DatasetRef:
    """Where the ERP rows land, from ``ErpHook.describe()``'s plain facts and the target spec's
    ``location``: a PostgreSQL or SQLite table, or a Tryton model (``tryton://host:port``,
    ``<database>.<model>``)."""
    if facts["kind"] == "tryton":
        return DatasetRef(f"tryton://{_host(facts['host'])}:{facts['port']}", f"{facts['database']}.{table}")
    if facts["kind"] == "sqlite":
        return sqlite_dataset(facts["path"], table)
    return postgres_dataset(facts["host"], facts["port"], facts["database"], schema, table)


def file_dataset(host: str, path: str) -> DatasetRef:
    from openlineage.client.naming.dataset import RemoteFileSystem

    naming = RemoteFileSystem(host=host, path=os.path.abspath(path))
    return DatasetRef(naming.get_namespace(), naming.get_name())


def staged_dataset(
    host: str, staging_dir: str, spec: SyncSpec, stage: Literal["raw", "mapped"]
) -> DatasetRef:
    """A stage's Parquet files as one logical dataset per sync, whatever the run: lineage then
    links the runs instead of growing one dataset per run."""
    return file_dataset(host, os.path.join(staging_dir, spec.name, stage))


# --- facets -------------------------------------------------------------------------------------


def crm_schema_facet(spec: SyncSpec) -> schema_dataset.SchemaDatasetFacet:
    """The CRM properties the sync reads (HubSpot returns every property as text)."""
    from openlineage.client.facet_v2 import schema_dataset

    properties = dict.fromkeys([*BUILTIN_PROPERTIES, *spec.source.properties])
    return schema_dataset.SchemaDatasetFacet(
        fields=[
            schema_dataset.SchemaDatasetFacetFields(name=name, type="string", ordinal_position=position)
            for position, name in enumerate(properties, start=1)
        ]
    )


def erp_schema_facet(
    spec: SyncSpec, audit_columns: Mapping[str, str] | None = None
) -> schema_dataset.SchemaDatasetFacet:
    """The mapped columns with their spec dtypes, then the target's audit columns (name -> type)."""
    from openlineage.client.facet_v2 import schema_dataset

    columns = [(name, field.dtype, field.description) for name, field in spec.mapping.items()]
    columns += [(name, dtype, None) for name, dtype in (audit_columns or {}).items()]
    return schema_dataset.SchemaDatasetFacet(
        fields=[
            schema_dataset.SchemaDatasetFacetFields(
                name=name, type=dtype, description=description, ordinal_position=position
            )
            for position, (name, dtype, description) in enumerate(columns, start=1)
        ]
    )


def _describe_step(step: Transform) -> str:
    if isinstance(step, Template):
        return f"template {step.template!r}"
    if isinstance(step, Concat):
        return f"concat({', '.join(step.sources)}; separator {step.separator!r})"
    if isinstance(step, PhoneE164):
        region_from = f"region from {step.region_from}, " if step.region_from else ""
        return f"phone_e164({region_from}default region {step.default_region})"
    if isinstance(step, MapValues):
        return f"map_values({len(step.values)} values)"
    return step.type


def describe_mapping(field: FieldMapping) -> str:
    """How a column is made, e.g. ``trim -> lower, default 'lead'``; ``identity`` when copied."""
    description = " -> ".join(_describe_step(step) for step in field.transforms) or "identity"
    return description if field.default is None else f"{description}, default {field.default!r}"


def column_lineage_facet(spec: SyncSpec, crm: DatasetRef) -> column_lineage_dataset.ColumnLineageDatasetFacet:
    """Each ERP column's inputs are the CRM properties its mapping reads, as fields of the CRM
    dataset ``crm``.

    Columns that read no property (a constant default) have no lineage and are left out. The
    incremental cursor decides which records arrive at all: dataset-level INDIRECT/FILTER.
    """
    from openlineage.client.facet_v2 import column_lineage_dataset as cl

    def transformation(field: FieldMapping) -> cl.Transformation:
        identity = not field.transforms and field.default is None
        return cl.Transformation(
            type="DIRECT",
            subtype="IDENTITY" if identity else "TRANSFORMATION",
            description=describe_mapping(field),
            masking=False,  # no Conduit transform hashes or redacts a value
        )

    fields = {
        column: cl.Fields(
            inputFields=[
                cl.InputField(crm.namespace, crm.name, prop, transformations=[transformation(field)])
                for prop in field.source_properties()
            ],
            transformationDescription=describe_mapping(field),
        )
        for column, field in spec.mapping.items()
        if field.source_properties()
    }
    cursor_filter = cl.Transformation(
        type="INDIRECT",
        subtype="FILTER",
        description=f"incremental: records whose {spec.source.cursor.property} is in the run's window",
        masking=False,
    )
    return cl.ColumnLineageDatasetFacet(
        fields=fields,
        dataset=[
            cl.InputField(
                crm.namespace, crm.name, spec.source.cursor.property, transformations=[cursor_filter]
            )
        ],
    )


def documentation_facet(spec: SyncSpec) -> documentation_dataset.DocumentationDatasetFacet | None:
    from openlineage.client.facet_v2 import documentation_dataset

    text = " ".join(spec.description.split())  # YAML folded text keeps a trailing newline
    return documentation_dataset.DocumentationDatasetFacet(description=text) if text else None


def output_statistics_facet(
    row_count: int | None = None, size: int | None = None, file_count: int | None = None
) -> output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet | None:
    from openlineage.client.facet_v2 import output_statistics_output_dataset as stats

    if row_count is None and size is None and file_count is None:
        return None
    return stats.OutputStatisticsOutputDatasetFacet(rowCount=row_count, size=size, fileCount=file_count)


_ASSERTION_TEXT_KEYS = ("severity", "name", "description", "expected", "actual")


def data_quality_assertions_facet(
    assertions: Iterable[Mapping[str, Any]],
) -> data_quality_assertions_dataset.DataQualityAssertionsDatasetFacet:
    """From ``{"assertion", "success", "column"?}`` dicts; ``severity``, ``name``,
    ``description``, ``expected`` and ``actual`` are kept when present (as text, as the spec
    wants them); other keys are ignored."""
    from openlineage.client.facet_v2 import data_quality_assertions_dataset as dq

    return dq.DataQualityAssertionsDatasetFacet(
        assertions=[
            dq.Assertion(
                assertion=str(item["assertion"]),
                success=bool(item["success"]),
                column=item.get("column"),
                **{key: str(item[key]) for key in _ASSERTION_TEXT_KEYS if item.get(key) is not None},
            )
            for item in assertions
        ]
    )


# --- datasets -----------------------------------------------------------------------------------


def _present(facets: Mapping[str, Any]) -> dict[str, Any]:
    return {key: facet for key, facet in facets.items() if facet is not None}


def input_dataset(
    ref: DatasetRef, facets: Mapping[str, Any] | None = None, input_facets: Mapping[str, Any] | None = None
) -> InputDataset:
    from openlineage.client.event_v2 import InputDataset

    return InputDataset(
        ref.namespace, ref.name, facets=_present(facets or {}), inputFacets=_present(input_facets or {})
    )


def output_dataset(
    ref: DatasetRef,
    facets: Mapping[str, Any] | None = None,
    *,
    row_count: int | None = None,
    size: int | None = None,
    file_count: int | None = None,
) -> OutputDataset:
    from openlineage.client.event_v2 import OutputDataset

    statistics = output_statistics_facet(row_count, size, file_count)
    return OutputDataset(
        ref.namespace,
        ref.name,
        facets=_present(facets or {}),
        outputFacets=_present({"outputStatistics": statistics}),
    )


def _checked_input(ref: DatasetRef, assertions: Iterable[Mapping[str, Any]] | None) -> InputDataset:
    """An input dataset carrying the results of checks run on it, when there are any yet."""
    checks = list(assertions or [])
    facet = data_quality_assertions_facet(checks) if checks else None
    return input_dataset(ref, input_facets={"dataQualityAssertions": facet})


# --- per-step lineage ---------------------------------------------------------------------------


def extract_lineage(
    spec: SyncSpec,
    crm: DatasetRef,
    staged_raw: DatasetRef,
    *,
    row_count: int | None = None,
    size: int | None = None,
    file_count: int | None = None,
) -> OperatorLineage:
    """CRM object collection -> raw staged files."""
    from airflow.providers.openlineage.extractors import OperatorLineage

    return OperatorLineage(
        inputs=[input_dataset(crm, {"schema": crm_schema_facet(spec)})],
        outputs=[output_dataset(staged_raw, row_count=row_count, size=size, file_count=file_count)],
    )


def transform_lineage(
    spec: SyncSpec,
    staged_raw: DatasetRef,
    staged_mapped: DatasetRef,
    *,
    row_count: int | None = None,
    size: int | None = None,
    file_count: int | None = None,
) -> OperatorLineage:
    """Raw staged files -> mapped staged files (the ERP columns; their column lineage is told
    once, end to end, on the ERP table)."""
    from airflow.providers.openlineage.extractors import OperatorLineage

    mapped = output_dataset(
        staged_mapped,
        {"schema": erp_schema_facet(spec)},
        row_count=row_count,
        size=size,
        file_count=file_count,
    )
    return OperatorLineage(inputs=[input_dataset(staged_raw)], outputs=[mapped])


def gate_lineage(
    staged_mapped: DatasetRef, assertions: Iterable[Mapping[str, Any]] | None = None
) -> OperatorLineage:
    """The quality gate reads the mapped files; its expectation results ride on that input."""
    from airflow.providers.openlineage.extractors import OperatorLineage

    return OperatorLineage(inputs=[_checked_input(staged_mapped, assertions)])


def load_lineage(
    spec: SyncSpec,
    crm: DatasetRef,
    staged_mapped: DatasetRef,
    erp_table: DatasetRef,
    *,
    audit_columns: Mapping[str, str] | None = None,
    row_count: int | None = None,
) -> OperatorLineage:
    """Mapped staged files -> the ERP table, with its schema, its documentation and column
    lineage back to the CRM properties (end to end, across the staging steps)."""
    from airflow.providers.openlineage.extractors import OperatorLineage

    table_facets = {
        "schema": erp_schema_facet(spec, audit_columns),
        "columnLineage": column_lineage_facet(spec, crm),
        "documentation": documentation_facet(spec),
    }
    return OperatorLineage(
        inputs=[input_dataset(staged_mapped)],
        outputs=[output_dataset(erp_table, table_facets, row_count=row_count)],
    )


def reconcile_lineage(
    staged_mapped: DatasetRef, erp_table: DatasetRef, assertions: Iterable[Mapping[str, Any]] | None = None
) -> OperatorLineage:
    """Reconciliation reads both sides; its checks (counts, key checksum) describe the table."""
    from airflow.providers.openlineage.extractors import OperatorLineage

    return OperatorLineage(inputs=[input_dataset(staged_mapped), _checked_input(erp_table, assertions)])
