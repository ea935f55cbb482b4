"""The sync spec: one typed model, loaded from YAML and validated when loaded.

A spec says what to read (``source``), how CRM properties become ERP columns (``mapping``),
which expectations guard the load (``quality``) and where it lands (``target``). Variants of a
section are told apart by their ``type`` field. Errors name the file and the field.
"""

from __future__ import annotations

import re
import string
import zoneinfo
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from conduit.exceptions import SpecError

IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]*$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# --- transforms (each step of a field's pipeline) -----------------------------------------------


class Trim(_Model):
    type: Literal["trim"]


class Lower(_Model):
    type: Literal["lower"]


class Upper(_Model):
    type: Literal["upper"]


class TitleCase(_Model):
    type: Literal["title"]


OnInvalid = Literal["keep_raw", "null", "reject"]
ON_INVALID_DESCRIPTION = (
    "a value this step cannot normalise: keep_raw keeps its best-effort form for the suite to judge "
    "(the default), null loads the record with the column empty and records a defect, reject "
    "quarantines the record"
)


class _Validating(_Model):
    """A step that knows when it could not normalise a value (see ``on_invalid``)."""

    on_invalid: OnInvalid = Field(default="keep_raw", description=ON_INVALID_DESCRIPTION)

    @field_validator("on_invalid", mode="before")
    @classmethod
    def _yaml_null(cls, value: Any) -> Any:
        """``on_invalid: null`` unquoted is YAML's null: it means the word here."""
        return "null" if value is None else value


class Email(_Validating):
    """Trim, lower-case and check the address' syntax (an invalid address is kept for the gate)."""

    type: Literal["email"]


class PhoneE164(_Validating):
    """Parse a phone number and format it as E.164; the region comes from a country column."""

    type: Literal["phone_e164"]
    default_region: str = "US"
    region_from: str | None = Field(default=None, description="CRM property holding the country")


class CountryIso2(_Validating):
    """Country names, alpha-2 or alpha-3 codes to ISO-3166 alpha-2."""

    type: Literal["country_iso2"]


class Template(_Model):
    """Derive a value from CRM properties, e.g. ``HS-C-{hs_object_id}``."""

    type: Literal["template"]
    template: str


class Concat(_Model):
    type: Literal["concat"]
    sources: list[str] = Field(min_length=1)
    separator: str = " "


class MapValues(_Model):
    type: Literal["map_values"]
    values: dict[str, str | None]
    case_insensitive: bool = True


class ToTimestamp(_Model):
    """ISO-8601 or epoch-ms text to a UTC timestamp."""

    type: Literal["timestamp"]


Transform = Annotated[
    Trim | Lower | Upper | TitleCase | Email | PhoneE164 | CountryIso2 | Template | Concat | MapValues
    | ToTimestamp,
    Field(discriminator="type"),
]

DType = Literal["string", "integer", "timestamp", "boolean"]


class FieldMapping(_Model):
    """How one ERP column is made. ``source`` is a CRM property; derived columns omit it and
    start with a ``template`` or ``concat`` step."""

    source: str | None = None
    transforms: list[Transform] = Field(default_factory=list)
    default: str | int | bool | None = None
    dtype: DType = "string"
    nullable: bool = True
    description: str | None = None

    @model_validator(mode="after")
    def _has_an_origin(self) -> FieldMapping:
        derived = self.transforms and self.transforms[0].type in ("template", "concat")
        if self.source is None and not derived and self.default is None:
            raise ValueError("source: needs a `source` property, a first `template`/`concat` step, or a `default`")
        checked = [i for i, step in enumerate(self.transforms)
                   if isinstance(step, _Validating) and step.on_invalid != "keep_raw"]
        if len(checked) > 1:
            raise ValueError(f"transforms[{checked[1]}].on_invalid: only one step of a column may set on_invalid "
                             f"(transforms[{checked[0]}] already does)")
        return self

    @property
    def invalid_check(self) -> _Validating | None:
        """The step whose values that do not normalise are nulled or rejected, if any."""
        return next((step for step in self.transforms
                     if isinstance(step, _Validating) and step.on_invalid != "keep_raw"), None)

    def source_properties(self) -> list[str]:
        """Every CRM property this column reads (for validation and column lineage)."""
        props: list[str] = [self.source] if self.source else []
        for step in self.transforms:
            if isinstance(step, Template):
                props += [name for _, name, _, _ in string.Formatter().parse(step.template) if name]
            elif isinstance(step, Concat):
                props += step.sources
            elif isinstance(step, PhoneE164) and step.region_from:
                props.append(step.region_from)
        return list(dict.fromkeys(props))


# --- source -------------------------------------------------------------------------------------


class CursorSpec(_Model):
    property: str = "lastmodifieddate"
    lag_seconds: int = Field(default=60, ge=0, description="upper bound = run start minus this")
    overlap_seconds: int = Field(default=600, ge=0, description="re-read window for search-index lag")


class HubSpotSource(_Model):
    type: Literal["hubspot"]
    conn_id: str = "hubspot_default"
    object: Literal["contacts", "companies"] = "contacts"
    properties: list[str] = Field(min_length=1)
    cursor: CursorSpec = Field(default_factory=CursorSpec)
    page_size: int = Field(default=100, ge=1, le=100)
    search_page_size: int = Field(default=200, ge=1, le=200)
    parallelism: int = Field(default=1, ge=1, le=16,
                             description="full reads split into this many id ranges, read by parallel tasks")
    full_read_weekday: Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"] | None = \
        Field(default=None, description="the scheduled run on this day (in the schedule's time zone) reads "
                                        "every record and deletes ids that vanished: a periodic full reconcile")

    @model_validator(mode="after")
    def _cursor_is_read(self) -> HubSpotSource:
        if self.cursor.property not in self.properties:
            raise ValueError(f"cursor.property: {self.cursor.property!r} must be listed in `properties`")
        return self


Source = Annotated[HubSpotSource, Field(discriminator="type")]


# --- target -------------------------------------------------------------------------------------


class ColumnCheck(_Model):
    """Bounds on one ``SQLColumnCheckOperator`` check's result (its ``column_mapping`` entry)."""

    equal_to: int | float | None = None
    greater_than: int | float | None = None
    geq_to: int | float | None = None
    less_than: int | float | None = None
    leq_to: int | float | None = None
    tolerance: float | None = Field(default=None, ge=0)
    partition_clause: str | None = Field(default=None, description="extra WHERE condition, e.g. `active`")

    @model_validator(mode="after")
    def _bounded_once(self) -> ColumnCheck:
        bounds = [b for b in ("equal_to", "greater_than", "geq_to", "less_than", "leq_to") if getattr(self, b) is not None]
        if not bounds:
            raise ValueError("give at least one of equal_to, greater_than, geq_to, less_than, leq_to")
        if "equal_to" in bounds and len(bounds) > 1:
            raise ValueError("equal_to cannot be combined with greater_than, geq_to, less_than or leq_to")
        for low, high in (("greater_than", "geq_to"), ("less_than", "leq_to")):
            if low in bounds and high in bounds:
                raise ValueError(f"give only one of {low} and {high}")
        return self


class TableCheck(_Model):
    """One ``SQLTableCheckOperator`` check: a SQL condition that must hold."""

    check_statement: str = Field(min_length=1, description="true when the check passes; aggregates "
                                                           "(COUNT(*) FILTER (WHERE ...) = 0) also hold on an empty table")
    partition_clause: str | None = None


class TargetChecks(_Model):
    """SQL checks on the ERP table after each load (PostgreSQL targets), beside Conduit's own."""

    columns: dict[str, dict[Literal["null_check", "distinct_check", "unique_check", "min", "max"], ColumnCheck]] = (
        Field(default_factory=dict))
    table: dict[Annotated[str, Field(pattern=IDENTIFIER)], TableCheck] = Field(default_factory=dict)


class SqlTarget(_Model):
    """A customer-master table in a SQL database (PostgreSQL in production, SQLite embedded)."""

    type: Literal["sql"]
    conn_id: str = "erp_default"
    table: str = Field(pattern=IDENTIFIER)
    db_schema: str = Field(default="public", alias="schema", pattern=IDENTIFIER)
    key: str = Field(pattern=IDENTIFIER)
    delete_mode: Literal["soft", "hard"] = "soft"
    batch_size: int = Field(default=10_000, ge=100)
    checks: TargetChecks = Field(default_factory=TargetChecks)


Target = Annotated[SqlTarget, Field(discriminator="type")]


# --- quality ------------------------------------------------------------------------------------


class QualitySpec(_Model):
    suite: str = Field(description="file name under include/expectations/")
    policy: Literal["block", "quarantine", "warn"] = "block"
    max_rejected_ratio: float = Field(default=0.0, ge=0.0, le=1.0)
    max_defect_ratio: float = Field(
        default=1.0, ge=0.0, le=1.0,
        description="the largest share of checked rows one defect rule (an `on_failure: defect` expectation or "
                    "a transform's `on_invalid: null`) may flag; above it the gate fails and nothing loads",
    )
    defect_ratio_min_rows: int = Field(
        default=100, ge=0,
        description="runs that check fewer rows are not held to max_defect_ratio: a few edited contacts "
                    "with junk phones are not a broken source",
    )


class ApprovalSpec(_Model):
    """The circuit breaker: a run whose plan changes more than these shares of the ERP's active
    customers waits for a person (Airflow's HITL) before it loads. An empty ERP getting its first
    customers needs no approval."""

    max_update_ratio: float = Field(default=0.2, ge=0.0, le=1.0)
    max_delete_ratio: float = Field(default=0.05, ge=0.0, le=1.0)
    timeout: timedelta = Field(default=timedelta(hours=12), description="how long a person has to answer")
    on_timeout: Literal["reject"] = "reject"
    sample_rows: int = Field(default=5, ge=0, le=50, description="rows per kind of change shown in the plan")

    @field_validator("timeout", mode="before")
    @classmethod
    def _short_durations(cls, value: Any) -> Any:
        """``12h``, ``30m``, ``90s``, ``2d`` besides seconds and ISO 8601 (``PT12H``)."""
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", value) if isinstance(value, str) else None
        if match is None:
            return value
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[match.group(2)]
        return timedelta(**{unit: float(match.group(1))})


class ScheduleSpec(_Model):
    cron: str = "0 2 * * *"
    timezone: str = "UTC"

    @field_validator("cron")
    @classmethod
    def _cron_is_valid(cls, value: str) -> str:
        from croniter import croniter  # airflow's own dependency

        if not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a valid cron expression")
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone_is_known(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name such as Europe/Berlin)") from None
        return value


BUILTIN_PROPERTIES = ("hs_object_id",)


class SyncSpec(_Model):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="becomes the DAG id")
    description: str = ""
    owner: str = "conduit"
    tags: list[str] = Field(default_factory=list)
    retries: int = Field(default=3, ge=0)
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    source: Source
    target: Target
    mapping: dict[str, FieldMapping] = Field(min_length=1)
    quality: QualitySpec | None = None
    approval: ApprovalSpec | None = Field(
        default=None, description="thresholds above which a run's plan waits for a person before loading")
    webhook_trigger: bool = Field(
        default=False,
        description="also run (incrementally) when HubSpot webhooks report changes (needs Redis)",
    )

    @field_validator("mapping")
    @classmethod
    def _columns_are_identifiers(cls, value: dict[str, FieldMapping]) -> dict[str, FieldMapping]:
        for column in value:
            if not re.match(IDENTIFIER, column):
                raise ValueError(f"column name {column!r} is not a plain SQL identifier")
        return value

    @model_validator(mode="after")
    def _mapping_fits_source_and_target(self) -> SyncSpec:
        if self.target.key not in self.mapping:
            raise ValueError(f"target.key: {self.target.key!r} has no entry in `mapping`")
        known = set(self.source.properties) | set(BUILTIN_PROPERTIES)
        for column, field in self.mapping.items():
            missing = [p for p in field.source_properties() if p not in known]
            if missing:
                raise ValueError(
                    f"mapping.{column}: reads {', '.join(map(repr, missing))}, "
                    "which source.properties does not list"
                )
        from conduit.targets.sql_render import BOOKKEEPING_COLUMNS

        table_columns = {*self.mapping, *(c.name for c in BOOKKEEPING_COLUMNS)}
        for column in self.target.checks.columns:
            if column not in table_columns:
                raise ValueError(f"target.checks.columns.{column}: the ERP table has no such column "
                                 f"(it has {', '.join(sorted(table_columns))})")
        return self

    @property
    def columns(self) -> list[str]:
        return list(self.mapping)


# --- loading ------------------------------------------------------------------------------------


_UNION_TAGS = frozenset({
    "hubspot", "sql", "trim", "lower", "upper", "title", "email", "phone_e164", "country_iso2",
    "template", "concat", "map_values", "timestamp",
})


def field_path(loc: tuple[Any, ...], union_tags: frozenset[str], union_fields: tuple[str, ...] = ()) -> str:
    """A pydantic error location as a reader writes it: ``mapping.phone.transforms[0].type``."""
    parts: list[str] = []
    for i, item in enumerate(loc):
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif item in union_tags and i and (isinstance(loc[i - 1], int) or loc[i - 1] in union_fields):
            continue  # pydantic puts the discriminator's value in the path: noise to a reader
        elif item == "[key]":
            continue  # a bad dict key: the key before it already names the place
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "(top level)"


def validation_problems(exc: ValidationError, union_tags: frozenset[str],
                        union_fields: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """(field, problem) pairs; whole-model checks name their field as ``"field.path: problem"``."""
    problems = []
    for err in exc.errors(include_url=False):
        where = field_path(err["loc"], union_tags, union_fields)
        msg = err["msg"].removeprefix("Value error, ")
        head, sep, rest = msg.partition(": ")
        if sep and re.fullmatch(r"[A-Za-z_][\w.\[\]]*", head):
            where, msg = (head if where == "(top level)" else f"{where}.{head}"), rest
        problems.append((where, msg))
    return problems


def parse_spec(data: Any, path: str) -> SyncSpec:
    if not isinstance(data, dict):
        raise SpecError(path, [("(top level)", "the file must hold a mapping of spec fields")])
    try:
        return SyncSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(path, validation_problems(exc, _UNION_TAGS, ("source", "target"))) from None


def read_yaml(path: Path, error: type[SpecError] = SpecError) -> Any:
    """A YAML file's data; an unreadable file or bad YAML raises ``error`` naming the file and line."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(yaml)"
        raise error(str(path), [(where, f"not valid YAML: {getattr(exc, 'problem', exc)}")]) from None
    except OSError as exc:
        raise error(str(path), [("(file)", str(exc))]) from None


def load_spec(path: str | Path) -> SyncSpec:
    return parse_spec(read_yaml(Path(path)), str(path))


def load_specs(directory: str | Path) -> list[SyncSpec]:
    """Every ``*.yaml``/``*.yml`` spec in a folder; all problems of all files in one error."""
    specs: list[SyncSpec] = []
    problems: list[SpecError] = []
    for path in sorted([*Path(directory).glob("*.yaml"), *Path(directory).glob("*.yml")]):
        try:
            specs.append(load_spec(path))
        except SpecError as exc:
            problems.append(exc)
    names = [s.name for s in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        problems.append(SpecError(str(directory), [("name", f"used by more than one spec: {duplicates}")]))
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise SpecError(
            str(directory), [(p.path, f"{field}: {msg}") for p in problems for field, msg in p.problems]
        )
    return specs
