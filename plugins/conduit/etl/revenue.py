"""Per-customer revenue, order count, first/last order date and segment: pure pandas over plain
frames, no database and no Airflow context.

Definitions (also in the DAG's docs):

* only **completed** orders count: ``pending`` is not revenue yet, ``cancelled`` and ``refunded``
  never are; ``order_count`` counts the completed orders, the dates are theirs;
* only orders placed at or before the run's ``as_of`` instant count, so a rerun of a run gives
  the same numbers whatever was ordered since;
* only **active** ERP customers are reported (soft-deleted ones are left out); an active customer
  without completed orders is reported with revenue 0 and segment ``none``;
* amounts are summed in integer cents (no float drift), in the orders' single currency.

Segments, first match wins: ``none`` (no completed order), ``at_risk`` (last completed order more
than ``at_risk_days`` before as_of), ``vip`` (revenue at least ``vip_revenue``), ``new`` (first
completed order at most ``new_days`` before as_of), ``regular``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from conduit.exceptions import RevenueDataError

if TYPE_CHECKING:
    import pandas as pd

REVENUE_STATUS = "completed"
ORDER_STATUSES = ("completed", "pending", "cancelled", "refunded")
SEGMENTS = ("vip", "regular", "at_risk", "new", "none")
ORDER_COLUMNS = ("order_id", "customer_number", "ordered_at", "status", "amount", "currency")
# the whole days pandas' nanosecond timestamps hold: an order outside cannot be computed with
ORDERED_AT_RANGE = (datetime(1677, 9, 22, tzinfo=UTC), datetime(2262, 4, 11, tzinfo=UTC))
REPORT_COLUMNS = (
    "customer_number",
    "revenue",
    "order_count",
    "first_order_date",
    "last_order_date",
    "segment",
)


@dataclass(frozen=True)
class SegmentRules:
    vip_revenue: float = 3000.0
    at_risk_days: int = 180
    new_days: int = 90

    def __post_init__(self) -> None:
        if self.vip_revenue < 0 or self.at_risk_days < 0 or self.new_days < 0:
            raise ValueError(f"segment rules must not be negative: {self}")


DEFAULT_RULES = SegmentRules()


def _examples(values: Iterable[Any], limit: int = 5) -> str:
    values = list(values)
    shown = ", ".join(map(str, values[:limit]))
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


def check_orders(orders: pd.DataFrame, table: str = "erp_orders") -> None:
    """Raise :class:`RevenueDataError` naming the table, column and order ids of rows the report
    cannot use: missing columns, null keys or customers, dates out of :data:`ORDERED_AT_RANGE`
    (PostgreSQL's ``-infinity`` among them), unknown statuses, null or negative amounts, more
    than one currency."""
    import pandas as pd

    missing = [c for c in ORDER_COLUMNS if c not in orders.columns]
    if missing:
        raise RevenueDataError(f"{table}: missing column(s) {', '.join(missing)}")
    problems = []
    if orders["order_id"].isna().any():
        problems.append(f"{table}.order_id: {int(orders['order_id'].isna().sum())} null order ids")
    for column in ("customer_number", "ordered_at"):
        bad = orders.loc[orders[column].isna(), "order_id"]
        if len(bad):
            problems.append(f"{table}.{column}: null for order(s) {_examples(bad)}")
    placed = pd.to_datetime(orders["ordered_at"], utc=True)
    earliest, latest = ORDERED_AT_RANGE
    bad = orders.loc[(placed < earliest) | (placed >= latest), ["order_id", "ordered_at"]]
    if len(bad):
        problems.append(
            f"{table}.ordered_at: not between {earliest:%Y-%m-%d} and {latest:%Y-%m-%d} for order(s) "
            + _examples(f"{o} ({t})" for o, t in bad.itertuples(index=False))
        )
    unknown = orders.loc[~orders["status"].isin(ORDER_STATUSES), ["order_id", "status"]]
    if len(unknown):
        problems.append(
            f"{table}.status: not one of {', '.join(ORDER_STATUSES)} for order(s) "
            + _examples(f"{o} ({s!r})" for o, s in unknown.itertuples(index=False))
        )
    amounts = orders["amount"].astype("float64")
    bad = orders.loc[amounts.isna() | (amounts < 0), ["order_id", "amount"]]
    if len(bad):
        problems.append(
            f"{table}.amount: null or negative for order(s) "
            + _examples(f"{o} ({a})" for o, a in bad.itertuples(index=False))
        )
    currencies = sorted(orders["currency"].dropna().unique())
    if len(currencies) > 1:
        first = orders.groupby("currency")["order_id"].first()
        problems.append(
            f"{table}.currency: one currency expected, found "
            + ", ".join(f"{c} (e.g. order {first[c]})" for c in currencies)
        )
    if problems:
        raise RevenueDataError("cannot compute customer revenue:\n" + "\n".join(problems))


def _utc_day(values: pd.Series) -> pd.Series:
    import pandas as pd

    return pd.to_datetime(values, utc=True).dt.tz_convert(None).dt.normalize()


def _naive_utc(instant: datetime) -> pd.Timestamp:
    import pandas as pd

    stamp = pd.Timestamp(instant)
    return stamp.tz_localize(None) if stamp.tzinfo is None else stamp.tz_convert(UTC).tz_localize(None)


def segments(
    revenue_cents: pd.Series,
    order_count: pd.Series,
    first_order_date: pd.Series,
    last_order_date: pd.Series,
    *,
    as_of: datetime,
    rules: SegmentRules = DEFAULT_RULES,
) -> pd.Series:
    """The segment of each customer (see the module doc), vectorised."""
    import numpy as np
    import pandas as pd

    today = _naive_utc(as_of).normalize()
    since_last = (today - last_order_date).dt.days
    since_first = (today - first_order_date).dt.days
    conditions = [
        (order_count == 0).to_numpy(),
        (since_last > rules.at_risk_days).fillna(False).to_numpy(dtype=bool),
        (revenue_cents >= round(rules.vip_revenue * 100)).to_numpy(),
        (since_first <= rules.new_days).fillna(False).to_numpy(dtype=bool),
    ]
    chosen = np.select(conditions, ["none", "at_risk", "vip", "new"], default="regular")
    return pd.Series(chosen, index=revenue_cents.index, dtype=object)


def customer_revenue(
    customers: pd.DataFrame,
    orders: pd.DataFrame,
    *,
    as_of: datetime,
    rules: SegmentRules = DEFAULT_RULES,
) -> pd.DataFrame:
    """One row per active customer, ordered by customer number, with :data:`REPORT_COLUMNS`
    (dates as day timestamps in UTC, revenue in the orders' currency)."""
    import pandas as pd

    cutoff = pd.Timestamp(_naive_utc(as_of), tz=UTC)
    if "ordered_at" in orders.columns:  # orders placed since as_of neither count nor fail the run
        orders = orders[~(pd.to_datetime(orders["ordered_at"], utc=True) > cutoff)]  # a null date stays, for check_orders
    check_orders(orders)
    if not {"customer_number", "active"} <= set(customers.columns):
        raise RevenueDataError("customers: need the columns customer_number and active")
    active = customers.loc[customers["active"].fillna(False).astype(bool), ["customer_number"]]
    active = active.drop_duplicates().astype({"customer_number": object})

    ordered_at = pd.to_datetime(orders["ordered_at"], utc=True)
    counted = orders[(orders["status"] == REVENUE_STATUS) & (ordered_at <= cutoff)]
    per_customer = (
        counted.assign(
            cents=(counted["amount"].astype("float64") * 100).round().astype("int64"),
            day=_utc_day(counted["ordered_at"]),
        )
        .groupby("customer_number")
        .agg(
            revenue_cents=("cents", "sum"),
            order_count=("order_id", "count"),
            first_order_date=("day", "min"),
            last_order_date=("day", "max"),
        )
    )
    per_customer.index = per_customer.index.astype(object)
    report = active.merge(per_customer, left_on="customer_number", right_index=True, how="left")
    report["revenue_cents"] = report["revenue_cents"].fillna(0).astype("int64")
    report["order_count"] = report["order_count"].fillna(0).astype("int64")
    for column in ("first_order_date", "last_order_date"):
        report[column] = pd.to_datetime(report[column]).astype("datetime64[ns]")
    report["segment"] = segments(
        report["revenue_cents"], report["order_count"], report["first_order_date"],
        report["last_order_date"], as_of=as_of, rules=rules,
    )
    report["revenue"] = report["revenue_cents"] / 100
    return report.sort_values("customer_number").reset_index(drop=True)[list(REPORT_COLUMNS)]


def segment_counts(report: pd.DataFrame) -> dict[str, int]:
    counts = report["segment"].value_counts()
    return {segment: int(counts.get(segment, 0)) for segment in SEGMENTS}


# --- the triggering sync ------------------------------------------------------------------------


def sync_metadata(events: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """What the sync runs that triggered this run reported, from the asset events (plain dicts
    with ``source_dag_id``, ``source_run_id``, ``timestamp`` and the load summary in ``extra``).

    Several syncs may have changed the table since the last ETL run: their counts add up, the
    watermark is the highest, and the latest event names ``sync_run_id``. No events (a manual
    run) gives ``events: 0`` and ``sync_run_id: None``.
    """
    ordered = sorted(events, key=lambda e: (str(e.get("timestamp") or ""), str(e.get("source_run_id") or "")))
    extras = [dict(e.get("extra") or {}) for e in ordered]
    run_ids = [x.get("run_id") or e.get("source_run_id") for e, x in zip(ordered, extras, strict=True)]
    watermarks = [x["watermark_ms"] for x in extras if x.get("watermark_ms") is not None]
    return {
        "events": len(ordered),
        "sync": (extras[-1].get("sync") or ordered[-1].get("source_dag_id")) if ordered else None,
        "sync_run_id": run_ids[-1] if ordered else None,
        "sync_run_ids": run_ids,
        **{key: sum(int(x.get(key) or 0) for x in extras) for key in ("inserted", "updated", "deleted")},
        "watermark_ms": max(watermarks) if watermarks else None,
    }


def report_rows(report: pd.DataFrame, *, run_id: str, as_of: datetime, source_sync_run_id: str | None) -> pd.DataFrame:
    """The report as stored: plain dates, revenue rounded to cents, and where it came from."""
    import pandas as pd

    rows = report.copy()
    for column in ("first_order_date", "last_order_date"):
        rows[column] = rows[column].dt.date.astype(object).where(rows[column].notna(), None)
    rows["revenue"] = rows["revenue"].round(2)
    rows["as_of"] = pd.Timestamp(_naive_utc(as_of), tz=UTC).to_pydatetime()
    rows["etl_run_id"] = run_id
    rows["source_sync_run_id"] = source_sync_run_id
    return rows
