"""A gate report as a one-screen task-log summary and as OpenLineage DataQualityAssertions."""

from __future__ import annotations

from conduit.quality.engine import GateReport

SAMPLE_IDS = 5
# OpenLineage's severity vocabulary ("error" blocks, "warn" only reports) for GX's
_OL_SEVERITY = {"critical": "error", "warning": "warn", "info": "info"}


def summary_lines(report: GateReport) -> list[str]:
    """Header, then one line per expectation: status, failed count and up to five record ids;
    defect rules (which never fail) with their count and up to five records and values."""
    judged = [r for r in report.results if not r.defect]
    failed = sum(not r.success for r in judged)
    lines = [
        f"suite {report.suite.name}: {len(judged) - failed} of {len(judged)} expectations "
        f"passed on {report.row_count} rows"
    ]
    defects = [r for r in report.results if r.defect]
    if defects:
        found = sum(r.unexpected_count for r in defects)
        lines[0] += f"; {len(defects)} defect rule{'s' if len(defects) > 1 else ''} found {found} defects"
    for result in report.results:
        if result.defect:
            lines.append(_defect_line(result))
            continue
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


def _defect_line(result) -> str:
    status = "DEFECT" if result.unexpected_count else "ok    "
    line = f"{status} {result.name} [defect]: {result.unexpected_count} defects"
    if result.unexpected_count:
        line += f" (e.g. {', '.join(f'{k}: {v!r}' for k, v in _examples(result))}"
        line += ", ...)" if result.unexpected_count > SAMPLE_IDS else ")"
    return line


def _examples(result) -> list[tuple[str, object]]:
    rows = result.failing_rows.head(SAMPLE_IDS)
    return [(_record_id(key, crm_id), value)
            for key, crm_id, value in zip(rows["key"], rows["crm_id"], rows["value"], strict=True)]


def defect_counts(report: GateReport) -> dict[str, dict]:
    """Per defect rule that found any: ``{"count", "examples": [{"record", "value"}, ...]}`` (up
    to five), JSON-able for the gate's XCom summary."""
    return {
        r.name: {"count": r.unexpected_count,
                 "examples": [{"record": record, "value": None if _missing(value) else str(value)}
                              for record, value in _examples(r)]}
        for r in report.defect_results
        if r.unexpected_count
    }


def _missing(value) -> bool:
    import pandas as pd

    return value is None or bool(pd.isna(value))


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
            # a defect rule never blocks: OpenLineage's "warn"
            "severity": "warn" if result.defect else _OL_SEVERITY[entry.severity],
            "name": result.name,
            "actual": str(
                result.unexpected_count if result.failing_rows is not None else result.observed_value
            ),
        }
        if entry.column:
            assertion["column"] = entry.column
        assertions.append(assertion)
    return assertions
