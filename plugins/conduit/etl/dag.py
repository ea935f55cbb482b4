"""The ``erp_customer_revenue_etl`` DAG, built from the sync spec whose customer table it reads.
Runs at DAG-parse time: keep it light (the spec, assets and operator classes only)."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, Param

from conduit.etl.assets import DAG_ID, orders_asset, revenue_report_asset
from conduit.etl.operators import CustomerRevenueOperator, SeedOrdersOperator
from conduit.etl.revenue import DEFAULT_RULES as RULES
from conduit.lineage.assets import erp_table_asset
from conduit.specs.model import SyncSpec

FLAGSHIP_SPEC = "crm_to_erp_customer_sync.yaml"
SUITE = "customer_revenue.yaml"


def doc_md(spec: SyncSpec) -> str:
    target = spec.target
    return f"""### {DAG_ID}

Runs whenever **{spec.name}** changed ERP customers (its asset event on
`{target.db_schema}.{target.table}`; dry runs and runs that changed nothing emit none).

* **Reads:** `{target.db_schema}.{target.table}` (active customers) and `{target.db_schema}.erp_orders`
  (connection `{target.conn_id}`); the triggering sync runs' metadata from the asset events.
* **Writes:** `{target.db_schema}.erp_customer_revenue` (replaced as a whole, in one transaction, per
  run) and `{target.db_schema}.erp_customer_revenue_runs` (one row per run: which sync run(s)
  triggered it, their counts and watermark, what was written).
* **Computes:** per active customer: revenue (sum of **completed** orders; pending, cancelled and
  refunded do not count), order count, first/last order date, segment: `none` (no completed
  order), `at_risk` (last order > {RULES.at_risk_days} days ago), `vip` (revenue >= {RULES.vip_revenue:,.0f}),
  `new` (first order <= {RULES.new_days} days ago), else `regular`. Orders count up to the run's `run_after`, so a rerun of a run
  computes the same report; it writes it only if no later run has written one since.
* **Quality gate:** `{SUITE}` (policy block: a failure writes nothing and fails the run).

Trigger with **seed_orders** to create realistic orders (deterministic per **seed**) for customers
that have none yet.
"""


def build_revenue_dag(spec: SyncSpec) -> DAG:
    with DAG(
        dag_id=DAG_ID,
        description=f"Customer revenue report from {spec.target.table} and erp_orders, after each {spec.name} change",
        schedule=[erp_table_asset(spec)],
        start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        default_args={
            "owner": spec.owner,
            "retries": max(spec.retries, 2),
            "retry_delay": timedelta(minutes=1),
            "retry_exponential_backoff": 2.0,
            "max_retry_delay": timedelta(minutes=30),
        },
        params={
            "seed_orders": Param(False, type="boolean", title="Seed orders",
                                 description="Create realistic orders for ERP customers that have none yet."),
            "seed": Param(7, type="integer", title="Seed", description="Random seed of the seeded orders."),
        },
        render_template_as_native_obj=True,
        tags=sorted({"conduit", "erp", "etl", "reporting"}),
        doc_md=doc_md(spec),
    ) as dag:
        seed = SeedOrdersOperator(task_id="seed_orders", spec=spec, enabled="{{ params.seed_orders }}",
                                  seed="{{ params.seed }}")
        revenue = CustomerRevenueOperator(
            task_id="customer_revenue", spec=spec, suite=SUITE,
            inlets=[erp_table_asset(spec), orders_asset(spec)], outlets=[revenue_report_asset(spec)],
        )
        seed >> revenue
    return dag
