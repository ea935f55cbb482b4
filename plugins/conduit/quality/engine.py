"""Evaluate an expectation suite on mapped rows with vectorised pandas, the way GX's pandas engine
does (same null handling, same ``mostly`` arithmetic, same string matching), and decide what loads.

GX itself runs in :mod:`conduit.quality.gx_runner` for the validation result and Data Docs; it is
too slow for the gate on a million rows (numbers in ``tests/unit/quality/test_gx_equivalence.py``).

Rows may arrive in chunks: :class:`SuiteEvaluator` takes them one at a time and keeps only counts,
the failing rows and, for the columns that must be unique, a 64-bit hash per row (8 bytes a row, not
the values), so uniqueness holds across chunks. The few rows whose hash repeats are read a second
time to compare their actual values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Literal

from conduit.exceptions import SpecError
from conduit.quality.suite import (
    ROW_LEVEL,
    Between,
    Entry,
    FieldCheck,
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
    import numpy as np
    import pandas as pd

Policy = Literal["block", "quarantine", "warn"]
FAILURE_COLUMNS = ("key", "crm_id", "value")
DEFECT_COLUMNS = ("key", "crm_id", "column", "rule", "value", "reason")
# CPython's hash never returns -1 (it signals an error), so -1 can stand for a null
_NULL_HASH = -1


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
    expectation: Entry
    success: bool
    element_count: int
    unexpected_count: int = 0
    observed_value: Any = None
    failing_rows: pd.DataFrame | None = None

    @property
    def row_level(self) -> bool:
        return isinstance(self.expectation, ROW_LEVEL)

    @property
    def defect(self) -> bool:
        """Its failing rows load and are recorded as defects of the column."""
        return self.expectation.defect

    @property
    def name(self) -> str:
        column, rule = self.expectation.column, self.expectation.rule
        return f"{rule}({column})" if column else rule

    def row_failures(self) -> Iterator[RowFailure]:
        if self.failing_rows is None:
            return
        for key, crm_id, value in self.failing_rows.itertuples(index=False):
            yield RowFailure(
                key, crm_id, self.expectation.rule, self.expectation.column, _reason(self.expectation, value)
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

    @property
    def defect_results(self) -> tuple[ExpectationResult, ...]:
        return tuple(r for r in self.results if r.defect)

    def row_failures(self) -> Iterator[RowFailure]:
        """Findings that keep rows out (defects are not among them)."""
        for result in self.row_results:
            if not result.defect:
                yield from result.row_failures()


@dataclass(frozen=True)
class GateDecision:
    """``load`` False means nothing loads. Under ``quarantine``, ``rejected`` lists the rows kept
    out (columns key, crm_id, reasons), also when the ratio was exceeded. ``defects`` lists, when
    the rows load, one row per defect of a loading row (:data:`DEFECT_COLUMNS`, indexed by row
    position); rows kept out have none, their findings are in the quarantine."""

    load: bool
    reason: str
    rejected: pd.DataFrame | None = None
    rejected_keys: frozenset = field(default_factory=frozenset)
    defects: pd.DataFrame | None = None


# --- evaluation -----------------------------------------------------------------------------------


class SuiteEvaluator:
    """Feed frames with :meth:`add`, then :meth:`report`. ``now`` fixes the ``now`` bounds.

    ``reread`` yields the same frames again, in the same order (e.g. from the staged files): when
    a ``unique`` column has repeated hashes, :meth:`report` reads the rows once more to compare
    the actual values of those rows. Without it, such a report raises ``ValueError``."""

    def __init__(
        self,
        suite: Suite,
        *,
        key: str,
        crm_id: str = "crm_id",
        previous_row_count: int | None = None,
        now: datetime | None = None,
        reread: Callable[[], Iterable[pd.DataFrame]] | None = None,
    ):
        self.now = now or datetime.now(UTC)
        self.suite = suite.at(self.now)
        self.key, self.crm_id = key, crm_id
        self.previous_row_count = previous_row_count
        self.reread = reread
        self.row_count = 0
        n = len(self.suite.expectations)
        self._nonnull = [0] * n
        self._failing: list[list[pd.DataFrame]] = [[] for _ in range(n)]
        # per unique entry, one int64 hash per row of each chunk (_NULL_HASH for nulls)
        self._hashes: dict[int, list[np.ndarray]] = {
            i: [] for i, entry in enumerate(self.suite.expectations) if isinstance(entry, Unique)
        }

    def add(self, frame: pd.DataFrame) -> None:
        import numpy as np

        self._check_columns(frame)
        # failing rows are labelled by position across all chunks, whatever the frames' indexes
        positions = np.arange(self.row_count, self.row_count + len(frame))
        self.row_count += len(frame)
        for i, entry in enumerate(self.suite.expectations):
            if not isinstance(entry, (Unique, *ROW_LEVEL)):
                continue
            values = frame[entry.column]
            nonnull = values.notna().to_numpy()
            self._nonnull[i] += int(nonnull.sum())
            if isinstance(entry, Unique):
                self._hashes[i].append(_hashes(values, nonnull))
                continue
            if isinstance(entry, FieldCheck):  # the values the transform could not normalise
                unexpected = frame[entry.kwargs.invalid_column].notna().to_numpy()
                if unexpected.any():
                    self._failing[i].append(self._identify(
                        frame[unexpected], entry.kwargs.invalid_column, positions[unexpected]))
                continue
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
        duplicated = self._duplicated()
        results = tuple(
            self._result(i, entry, duplicated.get(i)) for i, entry in enumerate(self.suite.expectations)
        )
        return GateReport(self.suite, self.key, self.row_count, results, self.now)

    def _duplicated(self) -> dict[int, pd.DataFrame]:
        """{suite index: every row whose non-null value occurs more than once} for the ``unique``
        entries (GX: ``duplicated(keep=False)``). Only rows whose hash repeats are candidates; their
        actual values decide, so a hash collision never fails a row."""
        candidates = {i: _positions(parts, _repeated(parts)) for i, parts in self._hashes.items()}
        rows = self._fetch({i: positions for i, positions in candidates.items() if len(positions)})
        return {i: _duplicated(rows.get(i, [])) for i in candidates}

    def _fetch(self, wanted: dict[int, np.ndarray]) -> dict[int, list[pd.DataFrame]]:
        """Key, crm_id and value of the ``wanted`` (sorted) positions of each unique entry, from
        one more read of the frames."""
        import numpy as np

        if not wanted:
            return {}
        if self.reread is None:
            raise ValueError(
                "a unique column may have repeated values; SuiteEvaluator needs reread= (the same "
                "frames again) to compare them"
            )
        found: dict[int, list[pd.DataFrame]] = {i: [] for i in wanted}
        offset = 0
        for frame in self.reread():
            for i, positions in wanted.items():
                low, high = np.searchsorted(positions, [offset, offset + len(frame)])
                if high > low:
                    hits = positions[low:high]
                    column = self.suite.expectations[i].column
                    found[i].append(self._identify(frame.iloc[hits - offset], column, hits))
            offset += len(frame)
        if offset != self.row_count:
            raise RuntimeError(f"reread yielded {offset} rows, but {self.row_count} were evaluated")
        return found

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
        problems += [
            (f"mapping.{entry.column}", f"the mapped rows carry no {entry.kwargs.invalid_column!r}: "
                                        "map them with the spec that set on_invalid")
            for entry in self.suite.expectations
            if isinstance(entry, FieldCheck) and entry.kwargs.invalid_column not in frame.columns
        ]
        if self.key not in frame.columns:
            problems.append(("(key)", f"key column {self.key!r} is not a column of the data"))
        if problems:
            raise SpecError(self.suite.path, problems)

    def _result(self, i: int, entry: Entry, duplicated: pd.DataFrame | None) -> ExpectationResult:
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
            unexpected = len(duplicated)
            ok = _mostly_success(self._nonnull[i], unexpected, entry.mostly)
            return ExpectationResult(i, entry, ok, n, unexpected, unexpected, duplicated)
        failing = _concat(self._failing[i])
        unexpected = len(failing)
        # GX: not_null counts every row; other column-map expectations only the non-null ones (a
        # field check is GX's expect_column_values_to_be_null on its invalid column: every row)
        considered = n if isinstance(entry, NotNull | FieldCheck) else self._nonnull[i]
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
    """Evaluate ``suite`` on one frame or on an iterable of chunks (uniqueness spans all chunks).
    Repeated values of a unique column are confirmed by iterating ``frames`` again, so pass a list
    rather than an iterator (see :class:`SuiteEvaluator`'s ``reread``)."""
    import pandas as pd

    chunks = [frames] if isinstance(frames, pd.DataFrame) else frames
    evaluator = SuiteEvaluator(
        suite,
        key=key,
        crm_id=crm_id,
        previous_row_count=previous_row_count,
        now=now,
        reread=None if isinstance(chunks, Iterator) else lambda: chunks,
    )
    for frame in chunks:
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


def _unexpected(entry: Entry, values: pd.Series) -> pd.Series:
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


def _hashes(values: pd.Series, nonnull: np.ndarray) -> np.ndarray:
    """One int64 per row: Python's hash of the value, ``_NULL_HASH`` for a null. Python's hash agrees
    with ``==`` across types (1, 1.0 and True; str and object dtype), as the chunks' dtypes may
    differ (an int column with nulls arrives as float); pandas' ``hash_array`` does not."""
    import numpy as np

    hashes = np.full(len(values), _NULL_HASH, dtype=np.int64)
    present = values[nonnull].to_numpy(dtype=object)
    hashes[nonnull] = np.fromiter(map(hash, present), dtype=np.int64, count=len(present))
    return hashes


def _repeated(parts: list[np.ndarray]) -> np.ndarray:
    """The non-null hashes that occur more than once across the chunks' ``parts``."""
    import numpy as np

    ordered = np.concatenate([np.empty(0, dtype=np.int64), *parts])
    ordered.sort()
    repeated = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
    return repeated[repeated != _NULL_HASH]


def _positions(parts: list[np.ndarray], hashes: np.ndarray) -> np.ndarray:
    """Sorted positions, across the chunks' ``parts``, of the rows whose hash is one of ``hashes``
    (sorted; a binary search stays fast however many values repeat)."""
    import numpy as np

    if not len(hashes):
        return np.empty(0, dtype=np.int64)
    found, offset = [], 0
    for part in parts:
        nearest = hashes[np.searchsorted(hashes, part).clip(max=len(hashes) - 1)]
        found.append(np.flatnonzero(nearest == part) + offset)
        offset += len(part)
    return np.concatenate(found)


def _duplicated(candidates: list[pd.DataFrame]) -> pd.DataFrame:
    """The candidate rows (all non-null) whose value occurs more than once."""
    rows = _concat(candidates)
    return rows[rows["value"].duplicated(keep=False)]


def _reason(entry: Entry, value: Any) -> str:
    column, kw = entry.column, entry.kwargs
    if isinstance(entry, FieldCheck):
        return f"{column} {value!r} could not be normalised by {kw.transform}"
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


def decide(report: GateReport, policy: Policy, max_rejected_ratio: float = 0.0,
           max_defect_ratio: float = 1.0, defect_ratio_min_rows: int = 0,
           rejected_ratio_min_rows: int = 0) -> GateDecision:
    """Only ``critical`` expectations that reject count. A failed table-level one stops the load
    under every policy, and so does a defect rule (``on_failure: defect``) flagging more than
    ``max_defect_ratio`` of the rows of a run that checked at least ``defect_ratio_min_rows``:
    that is a broken source or mapping, not junk. Otherwise
    ``block`` stops on any failure, ``warn`` loads everything, and ``quarantine`` rejects the rows
    of failed row-level expectations and loads the rest, unless rejected/total exceeds
    ``max_rejected_ratio`` (exactly at the ratio still loads) in a run that checked at least
    ``rejected_ratio_min_rows`` (a record that stays bad must not fail every small incremental run
    that reads it again). Rows that break an expectation
    which still passed thanks to ``mostly`` are tolerated and load. Defects never keep a row out;
    they are listed for the rows that load."""
    failed = [r for r in report.results if not r.success and r.expectation.blocking]
    table = [r for r in failed if not r.row_level]
    rows = [r for r in failed if r.row_level]
    if table:
        return GateDecision(False, f"table-level expectation failed: {_describe(table)}")
    excess = _excess_defects(report, max_defect_ratio) if report.row_count >= defect_ratio_min_rows else None
    if excess:
        return GateDecision(False, excess)
    if not rows:
        return _loading(report, "all critical expectations passed")
    if policy == "warn":
        return _loading(report, f"policy warn, loading all rows despite: {_describe(rows)}")
    if policy == "block":
        return GateDecision(False, f"policy block: {_describe(rows)}")
    rejected = _rejected_rows(rows)
    keys = frozenset(rejected["key"].dropna())
    total = report.row_count
    if total >= rejected_ratio_min_rows and Fraction(len(rejected), total) > Fraction(str(max_rejected_ratio)):
        return GateDecision(
            False,
            f"policy quarantine: {len(rejected)} of {total} rows rejected "
            f"({len(rejected) / total:.4%}) exceeds max_rejected_ratio {max_rejected_ratio:.4%}: {_describe(rows)}",
            rejected,
            keys,
        )
    return _loading(
        report,
        f"policy quarantine: {len(rejected)} of {total} rows rejected: {_describe(rows)}",
        rejected,
        keys,
    )


def _loading(report: GateReport, reason: str, rejected: pd.DataFrame | None = None,
             keys: frozenset = frozenset()) -> GateDecision:
    defects = defect_rows(report, rejected.index if rejected is not None else ())
    if len(defects):
        reason += f"; {len(defects)} defects recorded: {_describe_defects(report)}"
    return GateDecision(True, reason, rejected, keys, defects)


def _excess_defects(report: GateReport, max_defect_ratio: float) -> str | None:
    """Why the defects stop the load (a rule above ``max_defect_ratio``), or None."""
    total, limit = report.row_count, Fraction(str(max_defect_ratio))
    over = [r for r in report.defect_results if total and Fraction(r.unexpected_count, total) > limit]
    if not over:
        return None
    described = "; ".join(f"{r.name} {r.unexpected_count} of {total} rows ({r.unexpected_count / total:.2%})"
                          for r in over)
    return f"defects exceed max_defect_ratio {max_defect_ratio:.2%}: {described}"


def _describe_defects(report: GateReport) -> str:
    return "; ".join(f"{r.name} {r.unexpected_count}" for r in report.defect_results if r.unexpected_count)


def defect_rows(report: GateReport, rejected_positions=()) -> pd.DataFrame:
    """One row per defect (:data:`DEFECT_COLUMNS`, indexed by row position) of the rows not in
    ``rejected_positions``, ordered by position then suite order."""
    import pandas as pd

    parts = [
        r.failing_rows.assign(
            column=r.expectation.column,
            rule=r.expectation.rule,
            reason=[_reason(r.expectation, v) for v in r.failing_rows["value"]],
        )
        for r in report.defect_results
        if r.failing_rows is not None and len(r.failing_rows)
    ]
    if not parts:
        return pd.DataFrame(columns=list(DEFECT_COLUMNS))
    rows = pd.concat(parts)[list(DEFECT_COLUMNS)]
    rows = rows[~rows.index.isin(list(rejected_positions))]
    return rows.sort_index(kind="stable")


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
