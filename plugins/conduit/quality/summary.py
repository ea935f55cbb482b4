"""A gate report as a one-screen task-log summary and as OpenLineage DataQualityAssertions."""

from __future__ import annotations

from conduit.quality.engine import GateReport

SAMPLE_IDS = 5
# OpenLineage's severity vocabulary ("error" blocks, "warn" only reports) for GX's
_OL_SEVERITY = {"critical": "error", "warning": "warn", "info": "info"}


def summary_lines(report: GateReport) -> list[str]:
    """Header, then one line per expectation: status, failed count and up to five record ids."""
    failed = sum(not r.success for r in report.results)
    lines = [
        f"suite {report.suite.name}: {len(report.results) - failed} of {len(report.results)} expectations "
        f"passed on {report.row_count} rows"
    ]
    for result in report.results:
        status = "ok  " if result.success else "FAIL"
        line = f"{status} {result.name} [{result.expectation.severity}]"
        if result.row_level or result.failing_rows is not None:
            line += f": {result.unexpected_count} failed"
            if result.unexpected_count:
                ids = result.failing_rows.head(SAMPLE_IDS)
                sample = ", ".join(
                    _record_id(key, crm_id) for key, crm_id in zip(ids["key"], ids["crm_id"], strict=True)
                )
                more = ", ..." if result.unexpected_count > SAMPLE_IDS else ""
                line += f" (e.g. {sample}{more})"
        else:
            line += f": observed {result.observed_value}"
        lines.append(line)
    return lines


def _record_id(key, crm_id) -> str:
    import pandas as pd

    return f"crm_id {crm_id}" if pd.isna(key) else str(key)


def to_ol_assertions(report: GateReport) -> list[dict]:
    """Entries for ``DataQualityAssertionsDatasetFacet.assertions`` (``column`` only when set)."""
    assertions = []
    for result in report.results:
        entry = result.expectation
        assertion = {
            "assertion": entry.type,
            "success": result.success,
            "severity": _OL_SEVERITY[entry.severity],
            "name": result.name,
            "actual": str(
                result.unexpected_count if result.failing_rows is not None else result.observed_value
            ),
        }
        if entry.column:
            assertion["column"] = entry.column
        assertions.append(assertion)
    return assertions
