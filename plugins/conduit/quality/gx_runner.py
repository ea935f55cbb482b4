"""Run a suite with Great Expectations 1.x core and write its Data Docs.

GX is imported here only, inside functions: importing it takes ~10 s and validating a million rows
much longer, so the gate decides with :mod:`conduit.quality.engine` and GX validates the rows the
gate saw when they are few, or else every failing row plus a random sample. On a sample GX cannot
count the table, so the row-count results on the page are the engine's, marked as such.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conduit.quality.engine import GateReport
from conduit.quality.suite import FieldCheck, RowCountBetween, RowCountChange, Suite

if TYPE_CHECKING:
    import pandas as pd

SITE = "conduit"
FULL_UP_TO = 50_000
SAMPLE_SIZE = 10_000
FAILING_PER_EXPECTATION = 1_000


@dataclass(frozen=True)
class GxValidation:
    result: Any  # great_expectations ExpectationSuiteValidationResult
    sampled: bool
    rows_validated: int
    index_html: Path | None = None
    page_html: Path | None = None


def gx_suite(suite: Suite, *, previous_row_count: int | None = None):
    """The suite as a GX ``ExpectationSuite``. Each description names the expectation type and its
    severity (and ``defect`` for defect rules), so Data Docs show them; ``conduit_row_count_change``
    becomes GX's row-count expectation with the minimum it implies (dropped without a previous
    count); a field check (a transform's ``on_invalid``) becomes ``expect_column_values_to_be_null``
    on the column of values the transform could not normalise, so its failures list them."""
    import great_expectations as gx
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    gx_suite = gx.ExpectationSuite(name=suite.name)
    for index, entry in enumerate(suite.expectations):
        type_, kwargs = entry.type, entry.gx_kwargs()
        if isinstance(entry, RowCountChange):
            if previous_row_count is None:
                continue
            type_ = "expect_table_row_count_to_be_between"
            kwargs = {"min_value": math.ceil(previous_row_count * (1 - entry.kwargs.max_drop_ratio))}
        description = _description(type_, entry.severity, kwargs, defect=entry.defect)
        if isinstance(entry, FieldCheck):
            type_, kwargs = "expect_column_values_to_be_null", {"column": entry.kwargs.invalid_column}
            description = (f"{entry.rule}({entry.column}) [{entry.severity}{', defect' if entry.defect else ''}] "
                           f"values {entry.rule} could not normalise, "
                           + ("loaded as null and recorded as defects" if entry.defect else "records rejected"))
        config = ExpectationConfiguration(
            type=type_,
            kwargs=kwargs,
            meta={"conduit_index": index, "conduit_on_failure": entry.on_failure},
            severity=entry.severity,
            description=description,
        )
        gx_suite.add_expectation(config.to_domain_obj())
    return gx_suite


def _description(type_: str, severity: str, kwargs: dict, *, defect: bool = False) -> str:
    """Data Docs show the description in place of GX's sentence: name the type, whether a failing
    row is a defect (it loads) and the arguments."""
    shown = {
        name: f"<{len(value)} values>" if isinstance(value, list) and len(value) > 10 else value
        for name, value in kwargs.items()
        if name != "column" and value not in (None, False)
    }
    flags = f"{severity}, defect" if defect else severity
    return f"{type_} [{flags}] " + ", ".join(f"{name}={value}" for name, value in shown.items())


def gx_rows(frames: pd.DataFrame | Iterable[pd.DataFrame], report: GateReport, *, full_up_to: int = FULL_UP_TO,
            sample_size: int = SAMPLE_SIZE, seed: int = 0) -> tuple[pd.DataFrame, bool]:
    """The rows GX validates: all rows when few, else up to ``FAILING_PER_EXPECTATION`` failing rows
    of each expectation plus a random sample. ``frames`` are the evaluated rows, whole or in the
    chunks the report was made from; chunks are read one at a time, so a million rows never sit in
    memory together."""
    import numpy as np
    import pandas as pd

    chunks = [frames] if isinstance(frames, pd.DataFrame) else frames
    if report.row_count <= full_up_to:
        return pd.concat(list(chunks), ignore_index=True), False
    failing = [r.failing_rows.index[:FAILING_PER_EXPECTATION] for r in report.results if r.failing_rows is not None]
    rng = np.random.default_rng(seed)
    sample = rng.choice(report.row_count, size=min(sample_size, report.row_count), replace=False)
    wanted = np.unique(np.concatenate([sample, *[np.asarray(f) for f in failing]]))
    picked, offset = [], 0
    for chunk in chunks:
        local = wanted[(wanted >= offset) & (wanted < offset + len(chunk))] - offset
        if len(local):
            picked.append(chunk.iloc[local])
        offset += len(chunk)
    return pd.concat(picked), True


def validate(
    frame: pd.DataFrame,
    report: GateReport,
    *,
    out_dir: str | Path | None = None,
    run_name: str | None = None,
    full_up_to: int = FULL_UP_TO,
    sample_size: int = SAMPLE_SIZE,
) -> GxValidation:
    """Validate ``report``'s suite (its ``now`` already fixed) with GX on the rows ``frame`` held
    when the report was made; with ``out_dir``, also write the Data Docs site there."""
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    rows, sampled = gx_rows(frame, report, full_up_to=full_up_to, sample_size=sample_size)
    sites = {}
    if out_dir is not None:
        sites[SITE] = {
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(out_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        }
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
        data_docs_sites=sites,
    )
    context = gx.get_context(project_config=config, mode="ephemeral")
    batch_definition = (
        context.data_sources.add_pandas(SITE)
        .add_dataframe_asset(report.suite.name)
        .add_batch_definition_whole_dataframe("gate")
    )
    suite = context.suites.add(gx_suite(report.suite, previous_row_count=_previous_row_count(report)))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{report.suite.name}_gate", data=batch_definition, suite=suite)
    )
    run_id = RunIdentifier(run_name=run_name, run_time=report.evaluated_at.astimezone(UTC))
    result = definition.run(
        batch_parameters={"dataframe": rows},
        result_format={"result_format": "COMPLETE", "unexpected_index_column_names": [report.key]},
        run_id=run_id,
    )
    if sampled:
        _use_engine_counts(result, report, len(rows))
    _note_defects(result, report)
    if out_dir is None:
        return GxValidation(result, sampled, len(rows))
    identifier = ValidationResultIdentifier(
        expectation_suite_identifier=ExpectationSuiteIdentifier(name=report.suite.name),
        run_id=run_id,
        batch_identifier=result.batch_id,
    )
    context.validation_results_store.set(identifier, _values_escaped(result))
    site = context.build_data_docs(site_names=[SITE], resource_identifiers=[identifier])
    page = next(Path(out_dir).glob("validations/**/*.html"))
    return GxValidation(result, sampled, len(rows), Path(site[SITE].removeprefix("file://")), page)


def build_data_docs(
    frame: pd.DataFrame | Iterable[pd.DataFrame], report: GateReport, out_dir: str | Path, *, run_name: str | None = None
) -> Path:
    """Write this run's Data Docs under ``out_dir``; returns the path of its ``index.html``."""
    return validate(frame, report, out_dir=out_dir, run_name=run_name).index_html


def _previous_row_count(report: GateReport) -> int | None:
    changes = [r for r in report.table_results if isinstance(r.expectation, RowCountChange)]
    return changes[0].observed_value["previous_row_count"] if changes else None


def _use_engine_counts(result, report: GateReport, rows_validated: int) -> None:
    """GX counted a sample: put the engine's full-table row-count verdicts in its place."""
    by_index = {
        r.index: r
        for r in report.table_results
        if isinstance(r.expectation, RowCountBetween | RowCountChange)
    }
    for evr in result.results:
        engine = by_index.get(evr.expectation_config.meta["conduit_index"])
        if engine is not None:
            evr.success = engine.success
            evr.result["observed_value"] = report.row_count
            evr.expectation_config.description += (
                f", counted by the Conduit engine on all {report.row_count} rows"
            )
    result.success = all(evr.success for evr in result.results)
    result.statistics["successful_expectations"] = sum(evr.success for evr in result.results)
    result.statistics["unsuccessful_expectations"] = sum(not evr.success for evr in result.results)
    result.meta["conduit_sample"] = (
        f"GX validated {rows_validated} of {report.row_count} rows: every failing row (up to "
        f"{FAILING_PER_EXPECTATION} per expectation) and a random sample"
    )


def _note_defects(result, report: GateReport) -> None:
    """Defect rules' failures load: say so on the page, with the engine's counts on all rows."""
    defects = {r.name: r.unexpected_count for r in report.defect_results}
    if defects:
        result.meta["conduit_defects"] = (
            "defect rules (failing rows load; the values are recorded in conduit_defects): "
            + ", ".join(f"{name} {count} rows" for name, count in defects.items()))


def _values_escaped(result):
    """A copy of ``result`` for the Data Docs with every text value its expectations report
    HTML-escaped: GX writes failing values into its pages as markup, and they are CRM data (a
    contact's lifecycle stage ``<img src=x onerror=...>`` would otherwise be an element there). The
    result the gate and its summaries use keeps the values as they are."""
    import copy
    import html

    def escaped(value):
        if isinstance(value, str):
            return html.escape(value)
        if isinstance(value, list | tuple):
            return type(value)(escaped(v) for v in value)
        if isinstance(value, dict):
            return {k: escaped(v) for k, v in value.items()}
        return value

    shown = copy.deepcopy(result)
    for evr in shown.results:
        evr.result = escaped(evr.result)
    return shown
