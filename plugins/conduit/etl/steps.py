"""The ETL run as one function over a store and plain values: read the triggering syncs'
metadata, read customers and orders, compute, gate, write. Operators call it; tests may too."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conduit.etl.revenue import DEFAULT_RULES, SegmentRules

if TYPE_CHECKING:
    import pandas as pd

    from conduit.etl.store import RevenueStore
    from conduit.quality import GateDecision, GateReport

log = logging.getLogger(__name__)


def gate(report: pd.DataFrame, suite_path: str | Path) -> tuple[GateReport, GateDecision]:
    """The report's expectation suite under policy ``block``: any critical failure stops the write."""
    from conduit.quality import decide, evaluate, load_suite

    result = evaluate(report, load_suite(suite_path), key="customer_number")
    return result, decide(result, "block")


def run_revenue_etl(
    store: RevenueStore,
    suite_path: str | Path,
    *,
    run_id: str,
    as_of: datetime,
    events: Iterable[Mapping[str, Any]] = (),
    rules: SegmentRules = DEFAULT_RULES,
    logger: logging.Logger = log,
) -> dict[str, Any]:
    """Replace the report for ``as_of``; raises ``QualityGateFailed`` (nothing written) when the
    computed rows break the suite. Returns the run's summary."""
    from conduit.etl.revenue import customer_revenue, report_rows, segment_counts, sync_metadata
    from conduit.exceptions import QualityGateFailed
    from conduit.quality import summary_lines

    source = sync_metadata(events)
    logger.info("triggered by %s sync event(s): %s", source["events"], source)
    store.ensure_tables()
    customers, orders = store.read_inputs()
    report = customer_revenue(customers, orders, as_of=as_of, rules=rules)
    result, decision = gate(report, suite_path)
    logger.info("quality gate %s\n%s", Path(suite_path).name, "\n".join(summary_lines(result)))
    if not decision.load:
        raise QualityGateFailed(f"{store.where('erp_customer_revenue')}: {decision.reason}\n"
                                + "\n".join(summary_lines(result)))
    segments = segment_counts(report)
    revenue_total = round(float(report["revenue"].sum()), 2)
    run = {
        "etl_run_id": run_id, "as_of": as_of, "customers": len(report), "revenue_total": revenue_total,
        "segments": segments, "source_events": source["events"], "source_sync": source["sync"],
        "source_sync_run_id": source["sync_run_id"], "source_sync_run_ids": source["sync_run_ids"],
        **{f"source_{key}": source[key] for key in ("inserted", "updated", "deleted", "watermark_ms")},
    }
    rows = report_rows(report, run_id=run_id, as_of=as_of, source_sync_run_id=source["sync_run_id"])
    written = store.replace_report(rows, run)
    if written.get("superseded_by"):
        logger.warning("report not written: run %s (as of %s) already wrote a later one; trigger a new run "
                       "for a fresh report", written["superseded_by"], as_of.isoformat())
    return {
        "etl_run_id": run_id, "as_of": as_of.isoformat(), "customers": len(report), "orders_read": len(orders),
        "revenue_total": revenue_total, "segments": segments, **written, "source": source,
        "assertions": [{"assertion": r.name, "success": r.success} for r in result.results],
    }
