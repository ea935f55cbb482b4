"""The data-quality gate: expectation suites (:mod:`.suite`), a fast pandas evaluator and the
load decision (:mod:`.engine`), GX validation results and Data Docs (:mod:`.gx_runner`), and
summaries for the task log and OpenLineage (:mod:`.summary`).

Importing this package loads none of them (nor pandas or Great Expectations): a name is imported
from its module on first use. The DAG file imports ``conduit.quality.target_checks``, and every
task process parses the DAG file; the evaluator is only the gate's business.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_HOME = {
    **dict.fromkeys(("ExpectationResult", "GateDecision", "GateReport", "RowFailure", "SuiteEvaluator", "decide",
                     "defect_rows", "evaluate", "split"), "conduit.quality.engine"),
    **dict.fromkeys(("Suite", "load_suite", "parse_suite"), "conduit.quality.suite"),
    **dict.fromkeys(("defect_counts", "summary_lines", "to_ol_assertions"), "conduit.quality.summary"),
}

__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_HOME[name]), name)
    globals()[name] = value
    return value
