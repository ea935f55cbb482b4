"""OpenLineage of the revenue ETL: ERP customers + ERP orders -> the revenue report, with the
report's schema, documentation and column lineage. Pure: datasets come in as
:class:`~conduit.lineage.openlineage.DatasetRef`; openlineage-python loads inside the functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from conduit.lineage.openlineage import DatasetRef, input_dataset, output_dataset

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from openlineage.client.facet_v2 import column_lineage_dataset, schema_dataset

REPORT_FIELDS = (
    ("customer_number", "string", "ERP customer number (active customers only)"),
    ("revenue", "decimal(14,2)", "sum of the amounts of completed orders placed by as_of"),
    ("order_count", "integer", "number of completed orders placed by as_of"),
    ("first_order_date", "date", "day (UTC) of the first completed order"),
    ("last_order_date", "date", "day (UTC) of the last completed order"),
    ("segment", "string", "vip, regular, at_risk, new or none"),
    ("as_of", "timestamp", "the instant the run reports as of (the DAG run's run_after)"),
    ("etl_run_id", "string", "the ETL run that wrote the row"),
    ("source_sync_run_id", "string", "the sync run whose asset event triggered the ETL run"),
)
ORDER_FIELDS = (
    ("order_id", "string"), ("customer_number", "string"), ("ordered_at", "timestamp"),
    ("status", "string"), ("amount", "decimal(12,2)"), ("currency", "string"),
)
DESCRIPTION = (
    "Per active ERP customer: revenue, count, first and last date of completed orders, and a "
    "segment; rebuilt by erp_customer_revenue_etl after each sync that changed customers."
)


def schema_facet(fields) -> schema_dataset.SchemaDatasetFacet:
    from openlineage.client.facet_v2 import schema_dataset

    return schema_dataset.SchemaDatasetFacet(
        fields=[
            schema_dataset.SchemaDatasetFacetFields(
                name=field[0], type=field[1], description=field[2] if len(field) > 2 else None,
                ordinal_position=position,
            )
            for position, field in enumerate(fields, start=1)
        ]
    )


def revenue_column_lineage(customers: DatasetRef, orders: DatasetRef) -> column_lineage_dataset.ColumnLineageDatasetFacet:
    """Each report column from the customer/order columns it is computed from; the filters and
    the join (active customers, completed orders by as_of, by customer number) apply to all."""
    from openlineage.client.facet_v2 import column_lineage_dataset as cl

    def step(kind: str, subtype: str, description: str) -> cl.Transformation:
        return cl.Transformation(type=kind, subtype=subtype, description=description, masking=False)

    def source(ref: DatasetRef, field: str, transformation: cl.Transformation) -> cl.InputField:
        return cl.InputField(ref.namespace, ref.name, field, transformations=[transformation])

    identity = step("DIRECT", "IDENTITY", "copied")
    total = step("DIRECT", "AGGREGATION", "sum of completed orders' amounts, in cents, per customer")
    count = step("DIRECT", "AGGREGATION", "count of completed orders per customer")
    first = step("DIRECT", "AGGREGATION", "min of completed orders' order day (UTC)")
    last = step("DIRECT", "AGGREGATION", "max of completed orders' order day (UTC)")
    segment = step("DIRECT", "TRANSFORMATION", "tiers on revenue and on days since first/last order")
    columns = {
        "customer_number": ("copied from the active ERP customers", [source(customers, "customer_number", identity)]),
        "revenue": (total.description, [source(orders, "amount", total)]),
        "order_count": (count.description, [source(orders, "order_id", count)]),
        "first_order_date": (first.description, [source(orders, "ordered_at", first)]),
        "last_order_date": (last.description, [source(orders, "ordered_at", last)]),
        "segment": (segment.description, [source(orders, "amount", segment), source(orders, "ordered_at", segment)]),
    }
    dataset = [
        source(customers, "active", step("INDIRECT", "FILTER", "active customers only")),
        source(orders, "status", step("INDIRECT", "FILTER", "completed orders only")),
        source(orders, "ordered_at", step("INDIRECT", "FILTER", "orders placed by the run's as_of")),
        source(orders, "customer_number", step("INDIRECT", "JOIN", "orders joined to customers")),
        source(orders, "customer_number", step("INDIRECT", "GROUP_BY", "one row per customer")),
    ]
    return cl.ColumnLineageDatasetFacet(
        fields={name: cl.Fields(inputFields=inputs, transformationDescription=text)
                for name, (text, inputs) in columns.items()},
        dataset=dataset,
    )


def revenue_lineage(
    customers: DatasetRef, orders: DatasetRef, report: DatasetRef, *, row_count: int | None = None
) -> OperatorLineage:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from openlineage.client.facet_v2 import documentation_dataset

    report_facets = {
        "schema": schema_facet(REPORT_FIELDS),
        "columnLineage": revenue_column_lineage(customers, orders),
        "documentation": documentation_dataset.DocumentationDatasetFacet(description=DESCRIPTION),
    }
    return OperatorLineage(
        inputs=[input_dataset(customers), input_dataset(orders, {"schema": schema_facet(ORDER_FIELDS)})],
        outputs=[output_dataset(report, report_facets, row_count=row_count)],
    )


def seed_lineage(customers: DatasetRef, orders: DatasetRef, *, row_count: int | None = None) -> OperatorLineage:
    """Seeding reads the customer numbers and writes orders for them."""
    from airflow.providers.openlineage.extractors import OperatorLineage

    return OperatorLineage(
        inputs=[input_dataset(customers)],
        outputs=[output_dataset(orders, {"schema": schema_facet(ORDER_FIELDS)}, row_count=row_count)],
    )
