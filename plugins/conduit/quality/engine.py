"""Evaluate an expectation suite on mapped rows with vectorised pandas, the way GX's pandas engine
does (same null handling, same ``mostly`` arithmetic, same string matching), and decide what loads.

GX itself runs in :mod:`conduit.quality.gx_runner` for the validation result and Data Docs; it is
too slow for the gate on a million rows (numbers in ``tests/unit/quality/test_gx_equivalence.py``).

Rows may arrive in chunks: :class:`SuiteEvaluator` takes them one at a time and keeps only counts,
the failing rows and the columns that must be unique, so uniqueness holds across chunks.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Literal

from conduit.exceptions import SpecError
from conduit.quality.suite import (
    ROW_LEVEL,
    Between,
    Expectation,
    InSet,
    MatchRegex,
    NotNull,
    RowCountBetween,
    RowCountChange,
    Suite,
    Unique,
    ValueLengthsBetween,
)

if TYPE_CHECKING:
    import pandas as pd

Policy = Literal["block", "quarantine", "warn"]
FAILURE_COLUMNS = ("key", "crm_id", "value")


@dataclass(frozen=True)
class RowFailure:
    key: Any
    crm_id: Any
    expectation: str
    column: str
    reason: str


@dataclass(frozen=True)
class ExpectationResult:
    """One suite entry's outcome. ``failing_rows`` holds key, crm_id and value of every row that
    broke it (for table-level ``unique``: every duplicated row), indexed by the row's position in
    the evaluated rows (across chunks)."""

    index: int
    expectation: Expectation
    success: bool
    element_count: int
    unexpected_count: int = 0
    observed_value: Any = None
    failing_rows: pd.DataFrame | None = None

    @property
    def row_level(self) -> bool:
        return isinstance(self.expectation, ROW_LEVEL)

    @property
    def name(self) -> str:
        column = self.expectation.column
        return f"{self.expectation.type}({column})" if column else self.expectation.type

    def row_failures(self) -> Iterator[RowFailure]:
        if self.failing_rows is None:
            return
        for key, crm_id, value in self.failing_rows.itertuples(index=False):
            yield RowFailure(
                key, crm_id, self.expectation.type, self.expectation.column, _reason(self.expectation, value)
            )


@dataclass(frozen=True)
class GateReport:
    suite: Suite
    key: str
    row_count: int
    results: tuple[ExpectationResult, ...]
    evaluated_at: datetime

    @property
    def success(self) -> bool:
        return all(result.success for result in self.results)

    @property
    def row_results(self) -> tuple[ExpectationResult, ...]:
        return tuple(r for r in self.results if r.row_level)

    @property
    def table_results(self) -> tuple[ExpectationResult, ...]:
        return tuple(r for r in self.results if not r.row_level)

    def row_failures(self) -> Iterator[RowFailure]:
        for result in self.row_results:
            yield from result.row_failures()


@dataclass(frozen=True)
class GateDecision:
    """``load`` False means nothing loads. Under ``quarantine``, ``rejected`` lists the rows kept
    out (columns key, crm_id, reasons), also when the ratio was exceeded."""

    load: bool
    reason: str
    rejected: pd.DataFrame | None = None
    rejected_keys: frozenset = field(default_factory=frozenset)


# --- evaluation -----------------------------------------------------------------------------------


class SuiteEvaluator:
    """Feed frames with :meth:`add`, then :meth:`report`. ``now`` fixes the ``now`` bounds."""

    def __init__(
        self,
        suite: Suite,
        *,
        key: str,
        crm_id: str = "crm_id",
        previous_row_count: int | None = None,
        now: datetime | None = None,
    ):
        self.now = now or datetime.now(UTC)
        self.suite = suite.at(self.now)
        self.key, self.crm_id = key, crm_id
        self.previous_row_count = previous_row_count
        self.row_count = 0
        n = len(self.suite.expectations)
        self._nonnull = [0] * n
        self._failing: list[list[pd.DataFrame]] = [[] for _ in range(n)]
        self._unique_columns: list[list[pd.DataFrame]] = [[] for _ in range(n)]

    def add(self, frame: pd.DataFrame) -> None:
        import numpy as np

        self._check_columns(frame)
        # failing rows are labelled by position across all chunks, whatever the frames' indexes
        positions = np.arange(self.row_count, self.row_count + len(frame))
        self.row_count += len(frame)
        for i, entry in enumerate(self.suite.expectations):
            if isinstance(entry, Unique):
                self._unique_columns[i].append(self._identify(frame, entry.column, positions))
            elif isinstance(entry, ROW_LEVEL):
                values = frame[entry.column]
                nonnull = values.notna().to_numpy()
                self._nonnull[i] += int(nonnull.sum())
                if isinstance(entry, NotNull):
                    unexpected = ~nonnull
                else:
                    unexpected = np.zeros(len(frame), dtype=bool)
                    unexpected[nonnull] = _unexpected(entry, values[nonnull]).to_numpy()
                if unexpected.any():
                    self._failing[i].append(
                        self._identify(frame[unexpected], entry.column, positions[unexpected])
                    )

    def report(self) -> GateReport:
        results = tuple(self._result(i, entry) for i, entry in enumerate(self.suite.expectations))
        return GateReport(self.suite, self.key, self.row_count, results, self.now)

    def _identify(self, frame: pd.DataFrame, column: str, positions) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame(
            {
                "key": frame[self.key].array,
                "crm_id": frame[self.crm_id].array if self.crm_id in frame else None,
                "value": frame[column].array,
            },
            index=pd.Index(positions, name="position"),
        )

    def _check_columns(self, frame: pd.DataFrame) -> None:
        problems = [
            (f"expectations[{i}].kwargs.column", f"{entry.column!r} is not a column of the data")
            for i, entry in enumerate(self.suite.expectations)
            if entry.column and entry.column not in frame.columns
        ]
        if self.key not in frame.columns:
            problems.append(("(key)", f"key column {self.key!r} is not a column of the data"))
        if problems:
            raise SpecError(self.suite.path, problems)

    def _result(self, i: int, entry: Expectation) -> ExpectationResult:
        n = self.row_count
        if isinstance(entry, RowCountBetween):
            kw = entry.kwargs
            ok = _within(n, kw.min_value, kw.max_value, kw.strict_min, kw.strict_max)
            return ExpectationResult(i, entry, ok, n, observed_value=n)
        if isinstance(entry, RowCountChange):
            previous = self.previous_row_count
            ok = not previous or (previous - n) / previous <= entry.kwargs.max_drop_ratio
            return ExpectationResult(
                i, entry, ok, n, observed_value={"row_count": n, "previous_row_count": previous}
            )
        if isinstance(entry, Unique):
            failing = _duplicated(self._unique_columns[i])
            nonnull = n - _null_count(self._unique_columns[i])
            unexpected = len(failing)
            ok = _mostly_success(nonnull, unexpected, entry.mostly)
            return ExpectationResult(i, entry, ok, n, unexpected, unexpected, failing)
        failing = _concat(self._failing[i])
        unexpected = len(failing)
        # GX: not_null counts every row; other column-map expectations only the non-null ones
        considered = n if isinstance(entry, NotNull) else self._nonnull[i]
        ok = _mostly_success(considered, unexpected, entry.mostly)
        return ExpectationResult(i, entry, ok, n, unexpected, unexpected, failing)


def evaluate(
    frames: pd.DataFrame | Iterable[pd.DataFrame],
    suite: Suite,
    *,
    key: str,
    crm_id: str = "crm_id",
    previous_row_count: int | None = None,
    now: datetime | None = None,
) -> GateReport:
    """Evaluate ``suite`` on one frame or on an iterable of chunks (uniqueness spans all chunks)."""
    import pandas as pd

    evaluator = SuiteEvaluator(suite, key=key, crm_id=crm_id, previous_row_count=previous_row_count, now=now)
    for frame in [frames] if isinstance(frames, pd.DataFrame) else frames:
        evaluator.add(frame)
    return evaluator.report()


def _mostly_success(considered: int, unexpected: int, mostly: float) -> bool:
    # GX's ``_mostly_success``; nothing to consider is vacuously true
    return considered == 0 or (considered - unexpected) / considered >= mostly


def _within(value, low, high, strict_low: bool, strict_high: bool):
    """Elementwise for Series, plain bool for scalars; NaN/NaT never lie within."""
    ok = True
    if low is not None:
        ok = (value > low if strict_low else value >= low) & ok
    if high is not None:
        ok = (value < high if strict_high else value <= high) & ok
    return ok


def _unexpected(entry: Expectation, values: pd.Series) -> pd.Series:
    """Mask of the non-null ``values`` that break ``entry`` (GX's pandas conditions, negated)."""
    import pandas as pd

    if isinstance(entry, MatchRegex):
        # GX runs ``values.astype(str).str.contains(regex)``, which on pandas' pyarrow string dtype
        # is this RE2 search; calling pyarrow directly halves the time on a million rows
        import pyarrow as pa
        import pyarrow.compute as pc

        matched = pc.match_substring_regex(pa.array(values.astype(str).array), entry.kwargs.regex)
        return pd.Series(~matched.to_numpy(zero_copy_only=False), index=values.index)
    if isinstance(entry, InSet):
        return ~values.isin(entry.kwargs.value_set)
    if isinstance(entry, ValueLengthsBetween):
        kw = entry.kwargs
        return ~_within(
            values.astype(str).str.len(), kw.min_value, kw.max_value, kw.strict_min, kw.strict_max
        )
    if isinstance(entry, Between):
        kw = entry.kwargs
        comparable, low, high = _comparable(values, kw.min_value, kw.max_value)
        return ~_within(comparable, low, high, kw.strict_min, kw.strict_max).astype(bool)
    raise TypeError(f"{entry.type} is not a row-level expectation")


def _comparable(values: pd.Series, low, high):
    """Values and bounds of one kind. String bounds are timestamps: values that do not parse as one
    compare as NaT and so fail (where GX would raise on the mixed column)."""
    import pandas as pd

    if not isinstance(low if low is not None else high, str):
        numbers = values if pd.api.types.is_numeric_dtype(values) else pd.to_numeric(values, errors="coerce")
        return numbers, low, high
    stamps = values
    if not pd.api.types.is_datetime64_any_dtype(values):
        stamps = pd.to_datetime(values, utc=True, errors="coerce", format="ISO8601")
    aware = getattr(stamps.dtype, "tz", None) is not None

    def align(bound):
        if bound is None:
            return None
        bound = pd.Timestamp(bound)
        if aware and bound.tzinfo is None:
            return bound.tz_localize("UTC")
        if not aware and bound.tzinfo is not None:
            return bound.tz_convert("UTC").tz_localize(None)
        return bound

    return stamps, align(low), align(high)


def _concat(parts: list[pd.DataFrame]) -> pd.DataFrame:
    import pandas as pd

    if not parts:
        return pd.DataFrame(columns=list(FAILURE_COLUMNS))
    return parts[0] if len(parts) == 1 else pd.concat(parts)


def _null_count(parts: list[pd.DataFrame]) -> int:
    return sum(int(part["value"].isna().sum()) for part in parts)


def _duplicated(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """Every row whose non-null value occurs more than once (GX: ``duplicated(keep=False)``)."""
    rows = _concat(parts)
    rows = rows[rows["value"].notna()]
    return rows[rows["value"].duplicated(keep=False)]


def _reason(entry: Expectation, value: Any) -> str:
    column, kw = entry.column, entry.kwargs
    if isinstance(entry, NotNull):
        return f"{column} is null"
    if isinstance(entry, MatchRegex):
        return f"{column} {value!r} does not match {kw.regex}"
    if isinstance(entry, InSet):
        allowed = (
            ", ".join(map(str, kw.value_set))
            if len(kw.value_set) <= 10
            else f"{len(kw.value_set)} allowed values"
        )
        return f"{column} {value!r} is not one of {allowed}"
    if isinstance(entry, Unique):
        return f"{column} {value!r} occurs more than once"
    low = kw.min_value if kw.min_value is not None else "-inf"
    high = kw.max_value if kw.max_value is not None else "+inf"
    if isinstance(entry, ValueLengthsBetween):
        return f"{column} {value!r} has length {len(str(value))}, not between {low} and {high}"
    return f"{column} {value!s} is not between {low} and {high}"


# --- decision -------------------------------------------------------------------------------------


def decide(report: GateReport, policy: Policy, max_rejected_ratio: float = 0.0) -> GateDecision:
    """Only ``critical`` expectations count. A failed table-level one stops the load under every
    policy. Otherwise ``block`` stops on any failure, ``warn`` loads everything, and ``quarantine``
    rejects the rows of failed row-level expectations and loads the rest, unless rejected/total
    exceeds ``max_rejected_ratio`` (exactly at the ratio still loads). Rows that break an
    expectation which still passed thanks to ``mostly`` are tolerated and load."""
    failed = [r for r in report.results if not r.success and r.expectation.blocking]
    table = [r for r in failed if not r.row_level]
    rows = [r for r in failed if r.row_level]
    if table:
        return GateDecision(False, f"table-level expectation failed: {_describe(table)}")
    if not rows:
        return GateDecision(True, "all critical expectations passed")
    if policy == "warn":
        return GateDecision(True, f"policy warn, loading all rows despite: {_describe(rows)}")
    if policy == "block":
        return GateDecision(False, f"policy block: {_describe(rows)}")
    rejected = _rejected_rows(rows)
    keys = frozenset(rejected["key"].dropna())
    total = report.row_count
    if Fraction(len(rejected), total) > Fraction(str(max_rejected_ratio)):
        return GateDecision(
            False,
            f"policy quarantine: {len(rejected)} of {total} rows rejected "
            f"({len(rejected) / total:.4%}) exceeds max_rejected_ratio {max_rejected_ratio:.4%}: {_describe(rows)}",
            rejected,
            keys,
        )
    return GateDecision(
        True,
        f"policy quarantine: {len(rejected)} of {total} rows rejected: {_describe(rows)}",
        rejected,
        keys,
    )


def _describe(results: list[ExpectationResult]) -> str:
    return "; ".join(
        f"{r.name} observed {r.observed_value}" if not r.row_level else f"{r.name} {r.unexpected_count} rows"
        for r in results
    )


def _rejected_rows(results: list[ExpectationResult]) -> pd.DataFrame:
    """One row per rejected input row (by index label): key, crm_id and all its reasons."""
    import pandas as pd

    parts = [
        r.failing_rows.assign(reason=[_reason(r.expectation, v) for v in r.failing_rows["value"]])
        for r in results
    ]
    rows = pd.concat(parts)
    grouped = rows.groupby(level=0, sort=True)
    return pd.DataFrame(
        {
            "key": grouped["key"].first(),
            "crm_id": grouped["crm_id"].first(),
            "reasons": grouped["reason"].agg("; ".join),
        }
    )


def split(
    frame: pd.DataFrame, decision: GateDecision, *, offset: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows to load, rejected rows with a ``rejection_reasons`` column). Rows are matched by
    position: pass the evaluated frame, or a chunk with ``offset`` = the rows before it."""
    import numpy as np
    import pandas as pd

    positions = np.arange(offset, offset + len(frame))
    reasons = decision.rejected["reasons"] if decision.rejected is not None else pd.Series(dtype=object)
    mask = np.isin(positions, reasons.index.to_numpy())
    rejected = frame[mask].assign(rejection_reasons=reasons.reindex(positions[mask]).to_numpy())
    return frame[~mask], rejected
