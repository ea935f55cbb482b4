"""Expectation suites: a YAML (or JSON) file of Great Expectations 1.x expectation types and kwargs,
parsed into a typed model. Errors name the suite file and the entry index and field.

A suite file reads::

    name: erp_customers
    expectations:
      - type: expect_column_values_to_not_be_null
        kwargs: {column: customer_number}
      - type: expect_column_values_to_be_in_set
        kwargs: {column: country_code, value_set_ref: iso3166_alpha2, mostly: 0.99}
        severity: warning

``type`` and ``kwargs`` are GX's own (``kwargs`` are handed to GX unchanged), ``severity`` is GX's
``critical`` (default) / ``warning`` / ``info``. ``on_failure`` is Conduit's: ``reject`` (default)
keeps a breaking row out (per the spec's policy), ``defect`` loads it and records the value as a
defect of that one field (row-level expectations only; ``mostly`` does not apply). Conduit adds ``value_set_ref`` (a named value set,
resolved when loaded), the bound ``now`` for ``expect_column_values_to_be_between`` (resolved per
evaluation) and ``conduit_row_count_change`` (row count against the previous run's).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from conduit.exceptions import SpecError
from conduit.specs.model import read_text, read_yaml, validation_problems

NOW = "now"
LIFECYCLE_STAGES = (
    "subscriber",
    "lead",
    "marketingqualifiedlead",
    "salesqualifiedlead",
    "opportunity",
    "customer",
    "evangelist",
    "other",
)


@cache
def _iso3166_alpha2() -> tuple[str, ...]:
    import pycountry

    return tuple(sorted(country.alpha_2 for country in pycountry.countries))


VALUE_SETS = {
    "iso3166_alpha2": _iso3166_alpha2,
    "hubspot_lifecycle_stages": lambda: LIFECYCLE_STAGES,
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Mostly = Annotated[float, Field(ge=0.0, le=1.0)]
Bound = int | float | str | None


class _ColumnKwargs(_Model):
    column: str
    mostly: Mostly = 1.0


class _BoundsKwargs(_Model):
    min_value: Bound = None
    max_value: Bound = None
    strict_min: bool = False
    strict_max: bool = False

    @model_validator(mode="after")
    def _bounds_make_sense(self):
        bounds = {name: getattr(self, name) for name in ("min_value", "max_value")}
        if all(value is None for value in bounds.values()):
            raise ValueError("min_value: give min_value, max_value or both")
        for name, value in bounds.items():
            if isinstance(value, str) and value != NOW:
                try:
                    _parse_timestamp(value)
                except ValueError:
                    raise ValueError(
                        f"{name}: {value!r} is neither a number, an ISO timestamp nor 'now'"
                    ) from None
        if len({isinstance(value, str) for value in bounds.values() if value is not None}) > 1:
            raise ValueError("max_value: min_value and max_value must both be numbers or both timestamps")
        return self


class _IntBoundsKwargs(_BoundsKwargs):
    min_value: Annotated[int, Field(ge=0)] | None = None
    max_value: Annotated[int, Field(ge=0)] | None = None


class NotNullKwargs(_ColumnKwargs):
    pass


class UniqueKwargs(_ColumnKwargs):
    pass


class MatchRegexKwargs(_ColumnKwargs):
    regex: str

    @model_validator(mode="after")
    def _regex_compiles(self):
        _check_regex(self.regex)
        return self


class InSetKwargs(_ColumnKwargs):
    value_set: list[str | int | float] | None = None
    value_set_ref: str | None = Field(default=None, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _resolve_reference(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("value_set_ref") is not None:
            if data.get("value_set") is not None:
                raise ValueError("value_set_ref: give value_set or value_set_ref, not both")
            ref = data["value_set_ref"]
            if ref not in VALUE_SETS:
                raise ValueError(f"value_set_ref: unknown value set {ref!r} (known: {', '.join(VALUE_SETS)})")
            data = {**data, "value_set": list(VALUE_SETS[ref]())}
        if isinstance(data, dict) and any(isinstance(v, bool) for v in data.get("value_set") or ()):
            raise ValueError("value_set: YAML reads NO/YES/ON/OFF/true/false as booleans; quote such codes")
        return data

    @model_validator(mode="after")
    def _has_a_set(self):
        if self.value_set is None:
            raise ValueError("value_set: give value_set or value_set_ref")
        return self


class BetweenKwargs(_ColumnKwargs, _BoundsKwargs):
    pass


class ValueLengthsKwargs(_ColumnKwargs, _IntBoundsKwargs):
    pass


class RowCountKwargs(_IntBoundsKwargs):
    pass


class RowCountChangeKwargs(_Model):
    max_drop_ratio: Annotated[float, Field(ge=0.0, le=1.0)]


OnFailure = Literal["reject", "defect"]


class _Entry(_Model):
    severity: Literal["critical", "warning", "info"] = "critical"
    on_failure: OnFailure = Field(
        default="reject",
        description="reject: a breaking row is kept out (per the spec's policy); defect: it loads and "
                    "the value is recorded as a defect of that field",
    )

    @property
    def column(self) -> str | None:
        return getattr(self.kwargs, "column", None)

    @property
    def mostly(self) -> float:
        return getattr(self.kwargs, "mostly", 1.0)

    @property
    def defect(self) -> bool:
        return self.on_failure == "defect"

    @property
    def blocking(self) -> bool:
        """Whether a failure can keep rows out or stop the load (defects never do)."""
        return self.severity == "critical" and not self.defect

    @property
    def rule(self) -> str:
        """What a finding names as its rule: the expectation type."""
        return self.type

    @model_validator(mode="after")
    def _defects_are_per_row(self):
        if self.on_failure == "defect":
            if not isinstance(self, ROW_LEVEL):
                raise ValueError(f"on_failure: {self.type} judges the whole table; only row-level "
                                 "expectations can record defects")
            if self.mostly != 1.0:
                raise ValueError("on_failure: `mostly` does not apply to defects (every breaking row is "
                                 "recorded); bound them with the spec's quality.max_defect_ratio")
        return self

    def gx_kwargs(self) -> dict[str, Any]:
        return self.kwargs.model_dump(exclude_defaults=False)


class NotNull(_Entry):
    type: Literal["expect_column_values_to_not_be_null"]
    kwargs: NotNullKwargs


class Unique(_Entry):
    type: Literal["expect_column_values_to_be_unique"]
    kwargs: UniqueKwargs


class MatchRegex(_Entry):
    type: Literal["expect_column_values_to_match_regex"]
    kwargs: MatchRegexKwargs


class InSet(_Entry):
    type: Literal["expect_column_values_to_be_in_set"]
    kwargs: InSetKwargs


class Between(_Entry):
    type: Literal["expect_column_values_to_be_between"]
    kwargs: BetweenKwargs


class ValueLengthsBetween(_Entry):
    type: Literal["expect_column_value_lengths_to_be_between"]
    kwargs: ValueLengthsKwargs


class RowCountBetween(_Entry):
    type: Literal["expect_table_row_count_to_be_between"]
    kwargs: RowCountKwargs


class RowCountChange(_Entry):
    """Conduit's own: fails when the row count fell by more than ``max_drop_ratio`` against the
    ``previous_row_count`` the caller passes (passes when there is none, e.g. on the first run)."""

    type: Literal["conduit_row_count_change"]
    kwargs: RowCountChangeKwargs


class FieldCheckKwargs(_Model):
    column: str
    transform: str
    invalid_column: str


class FieldCheck(_Entry):
    """Not written in suites: the gate adds one per mapped column whose transform sets
    ``on_invalid`` (see :meth:`Suite.with_field_checks`). A row fails when the transform could
    not normalise its value; the failing value is the one the transform was given."""

    type: Literal["conduit_field_normalized"]
    kwargs: FieldCheckKwargs

    @property
    def rule(self) -> str:
        return self.kwargs.transform


Expectation = Annotated[
    NotNull | Unique | MatchRegex | InSet | Between | ValueLengthsBetween | RowCountBetween | RowCountChange,
    Field(discriminator="type"),
]
Entry = Expectation | FieldCheck

# Row-level expectations can reject single rows; a failed table-level one can only stop the load.
ROW_LEVEL = (NotNull, MatchRegex, InSet, Between, ValueLengthsBetween, FieldCheck)
TABLE_LEVEL = (Unique, RowCountBetween, RowCountChange)
_TAGS = frozenset(cls.model_fields["type"].annotation.__args__[0] for cls in ROW_LEVEL + TABLE_LEVEL)


class Suite(_Model):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    expectations: list[Expectation] = Field(min_length=1)
    path: str = Field(default="<memory>", exclude=True)

    def with_field_checks(self, checks: dict[str, tuple[str, str, str]]) -> Suite:
        """This suite plus a :class:`FieldCheck` per ``{column: (transform, on_invalid,
        invalid column)}``: ``on_invalid: null`` records defects, ``reject`` keeps rows out."""
        added = [
            FieldCheck(type="conduit_field_normalized",
                       kwargs=FieldCheckKwargs(column=column, transform=transform, invalid_column=invalid),
                       on_failure="defect" if on_invalid == "null" else "reject")
            for column, (transform, on_invalid, invalid) in checks.items()
        ]
        return self.model_copy(update={"expectations": [*self.expectations, *added]}) if added else self

    def at(self, now: datetime) -> Suite:
        """This suite with every ``now`` bound replaced by ``now`` (ISO-8601, UTC), so that our
        engine and GX compare against the same instant."""
        stamp = now.astimezone(UTC).isoformat()
        entries = [
            entry.model_copy(
                update={
                    "kwargs": entry.kwargs.model_copy(
                        update={
                            name: stamp
                            for name in ("min_value", "max_value")
                            if getattr(entry.kwargs, name) == NOW
                        }
                    )
                }
            )
            if isinstance(entry, Between)
            else entry
            for entry in self.expectations
        ]
        return self.model_copy(update={"expectations": entries})


def _parse_timestamp(text: str):
    import pandas as pd

    stamp = pd.Timestamp(text)
    if stamp is pd.NaT:
        raise ValueError(text)
    return stamp


def _check_regex(pattern: str) -> None:
    """GX matches with pandas' ``str.contains``: Python's ``re`` on object columns, RE2 (pyarrow) on
    the default string dtype. Accept only patterns both understand."""
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"regex: {pattern!r} does not compile: {exc}") from None
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        pc.match_substring_regex(pa.array([""], pa.string()), pattern)
    except pa.ArrowInvalid as exc:
        raise ValueError(f"regex: {pattern!r} is not RE2 syntax (pyarrow): {exc}") from None


def parse_suite(data: Any, path: str) -> Suite:
    if not isinstance(data, dict):
        raise SpecError(path, [("(top level)", "the suite must be a mapping with `name` and `expectations`")])
    try:
        return Suite.model_validate({**data, "path": path})
    except ValidationError as exc:
        problems = validation_problems(exc, _TAGS)
        raise SpecError(path, problems) from None


def load_suite(path: str | Path) -> Suite:
    """Load ``*.yaml``/``*.yml``/``*.json``; raises :class:`SpecError` naming file and field. Read
    like a spec (:func:`~conduit.specs.model.read_yaml`): size-capped, aliases bounded."""
    path = Path(path)
    try:
        data = json.loads(read_text(path)) if path.suffix == ".json" else read_yaml(path)
    except json.JSONDecodeError as exc:
        raise SpecError(str(path), [("(file)", f"not valid JSON: {exc}")]) from None
    except RecursionError:
        raise SpecError(str(path), [("(file)", "not valid JSON: nested too deeply")]) from None
    except SpecError as exc:  # a suite names any problem of its text as the file's, with the line
        raise SpecError(str(path), [("(file)", problem if where == "(file)" else f"{where}: {problem}")
                                    for where, problem in exc.problems]) from None
    return parse_suite(data, str(path))
