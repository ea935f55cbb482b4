"""The data-quality gate: expectation suites (:mod:`.suite`), a fast pandas evaluator and the
load decision (:mod:`.engine`), GX validation results and Data Docs (:mod:`.gx_runner`), and
summaries for the task log and OpenLineage (:mod:`.summary`).

Importing this package loads neither pandas nor Great Expectations; they load on first use.
"""

from conduit.quality.engine import (
    ExpectationResult,
    GateDecision,
    GateReport,
    RowFailure,
    SuiteEvaluator,
    decide,
    defect_rows,
    evaluate,
    split,
)
from conduit.quality.suite import Suite, load_suite, parse_suite
from conduit.quality.summary import defect_counts, summary_lines, to_ol_assertions

__all__ = [
    "ExpectationResult",
    "GateDecision",
    "GateReport",
    "RowFailure",
    "Suite",
    "SuiteEvaluator",
    "decide",
    "defect_counts",
    "defect_rows",
    "evaluate",
    "load_suite",
    "parse_suite",
    "split",
    "summary_lines",
    "to_ol_assertions",
]
