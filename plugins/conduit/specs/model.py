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
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from conduit.exceptions import SpecError

# For Field(pattern=...): pydantic's Rust regex reads `$` as the end of the text. Python's re.match
# would let "name\n" through (its `$` also matches before a final newline): use re.fullmatch.
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


PROPERTY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def template_parts(template: str) -> list[tuple[str, str | None]]:
    """(literal text, CRM property or None) of each piece of a ``template`` step, in order: the
    one reading of a template, shared by the spec's checks and the mapping engine. ValueError for
    what the engine cannot fill: braces that do not pair, and fields that are not a plain property
    name (``{}``, ``{0}``, ``{a.b}``), or that carry a format spec or a conversion (``{id:>8}``,
    ``{id!r}``): it joins text, it does not run ``str.format``."""
    example = "e.g. HS-C-{hs_object_id}; write {{ or }} for a literal brace"
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"{template!r} cannot be read ({exc}); a field is a CRM property in braces, "
                         f"{example}") from None
    parts: list[tuple[str, str | None]] = []
    for literal, name, spec, conversion in parsed:
        if name is not None and not PROPERTY_NAME.fullmatch(name):
            raise ValueError(f"the field {{{name}}} in {template!r} does not name a CRM property "
                             f"(no empty, positional, attribute or index fields), {example}")
        if name is not None and (spec or conversion):
            raise ValueError(f"the field {{{name}{'!' + conversion if conversion else ''}"
                             f"{':' + spec if spec else ''}}} in {template!r} has a "
                             f"{'conversion' if conversion else 'format spec'}; a field takes the property's "
                             f"text as it is, {example}")
        parts.append((literal, name))
    return parts


class Template(_Model):
    """Derive a value from CRM properties, e.g. ``HS-C-{hs_object_id}``."""

    type: Literal["template"]
    template: str

    @field_validator("template")
    @classmethod
    def _engine_can_fill(cls, value: str) -> str:
        template_parts(value)
        return value


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


# How the mapping engine reads a whole number or a true/false from text (``transforms.columns``
# uses these): defined here so that checking a column's default while a DAG file is parsed needs
# neither pandas nor pyarrow.
WHOLE_NUMBER = r"^[+-]?[0-9]{1,18}$"  # 18 digits always fit int64
TRUE_TEXTS = frozenset({"true", "t", "yes", "y", "1"})
FALSE_TEXTS = frozenset({"false", "f", "no", "n", "0"})


def _fits(default: str | int | bool, dtype: DType) -> bool:
    """Whether the mapping engine reads ``default`` as a ``dtype`` value (rather than NULL): whole
    numbers and true/false by the engine's rules above; a timestamp by the engine itself, which
    imports pandas while the spec loads (only specs with a timestamp default pay that)."""
    text = str(default).strip()
    if dtype == "integer":
        return re.fullmatch(WHOLE_NUMBER, text) is not None
    if dtype == "boolean":
        return text.lower() in TRUE_TEXTS | FALSE_TEXTS
    from conduit.transforms.mapping import typed_default

    return typed_default(default, dtype).is_valid


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
        # a default the column's type cannot hold would fill every empty row with NULL instead
        if self.default is not None and self.dtype != "string" and not _fits(self.default, self.dtype):
            raise ValueError(f"default: {self.default!r} is not {'an' if self.dtype == 'integer' else 'a'} "
                             f"{self.dtype}, so every row it fills would load NULL; give a value the column's "
                             f"dtype reads, or change the dtype")
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
                props += [name for _, name in template_parts(step.template) if name]
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


SOURCE_TYPES = ("hubspot",)
"""The ``source.type`` s a spec may name: one variant above each, and one reader each in
``conduit.sources.SOURCES``."""


def _known_source_type(value: Any) -> Any:
    """A missing or unknown ``type`` is named as ``source.type``, with the known types (the
    discriminated union itself would only name ``source``)."""
    if isinstance(value, dict) and value.get("type") not in SOURCE_TYPES:
        given = value.get("type")
        problem = "missing" if given is None else f"unknown source type {given!r}"
        raise ValueError(f"type: {problem}; known: {', '.join(SOURCE_TYPES)}")
    return value


Source = Annotated[HubSpotSource, Field(discriminator="type"), BeforeValidator(_known_source_type)]


# --- target -------------------------------------------------------------------------------------


# A target check is one boolean SQL expression that Airflow's common-sql operators paste into their
# own SELECT. What may appear in it is allow-listed, so a spec can neither end that statement, start
# another, comment out the rest, read other tables, nor call a function that acts (pg_sleep,
# set_config, dblink, query_to_xml, ...).
CHECK_SQL_MAX_CHARS = 1000
_CHECK_SQL_TOKEN = re.compile(r"""
      (?P<space>\s+)
    | (?P<string>'(?:[^'\\]|'')*')                          # standard strings only: no backslash
    | (?P<quoted>"[A-Za-z_][A-Za-z0-9_]*")                   # a quoted column name
    | (?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)
    | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<comment>--|/\*|\*/)
    | (?P<op><>|!=|<=|>=|\|\||::|[=<>+\-*/%(),.])
""", re.VERBOSE | re.ASCII)
# statements, clauses that make a subquery or a second query, and transaction/session control
_CHECK_SQL_FORBIDDEN = frozenset("""
    SELECT INSERT UPDATE DELETE MERGE UPSERT DROP CREATE ALTER TRUNCATE RENAME GRANT REVOKE COPY
    EXECUTE EXEC CALL DO SET RESET SHOW COMMIT ROLLBACK BEGIN SAVEPOINT RELEASE LOCK VACUUM ANALYZE
    REINDEX CLUSTER COMMENT ATTACH DETACH PRAGMA PREPARE DEALLOCATE LISTEN NOTIFY UNLISTEN LOAD
    IMPORT REFRESH DECLARE FETCH CHECKPOINT DISCARD EXPLAIN WITH INTO UNION INTERSECT EXCEPT
    RETURNING VALUES TABLE
""".split())
# the only names that may be followed by "(": pure functions and the keywords that take a group
_CHECK_SQL_FUNCTIONS = frozenset("""
    COUNT SUM MIN MAX AVG BOOL_AND BOOL_OR EVERY COALESCE NULLIF GREATEST LEAST ABS ROUND FLOOR CEIL
    CEILING MOD LENGTH CHAR_LENGTH CHARACTER_LENGTH OCTET_LENGTH LOWER UPPER TRIM BTRIM LTRIM RTRIM
    SUBSTRING SUBSTR POSITION STRPOS LEFT RIGHT REPLACE CONCAT CAST EXTRACT DATE_PART DATE_TRUNC
    NOW AGE TO_CHAR
""".split())
_CHECK_SQL_GROUPING = frozenset("AND OR NOT IN WHERE FILTER WHEN THEN ELSE CASE BETWEEN LIKE ILIKE IS ANY ALL "
                                "SOME AS DISTINCT".split())


def _check_sql_tokens(sql: str) -> list[tuple[str, str, int]]:
    """(kind, text, offset) of each token but spaces; ValueError at the first one that is not allowed."""
    tokens: list[tuple[str, str, int]] = []
    pos = 0
    while pos < len(sql):
        match = _CHECK_SQL_TOKEN.match(sql, pos)
        if match is None:
            char = sql[pos]
            if char == ";":
                raise ValueError(f"`;` at character {pos + 1} would end the check's statement: a check is one "
                                 "boolean SQL expression, e.g. COUNT(*) FILTER (WHERE crm_id <= 0) = 0")
            if char == "'":
                raise ValueError(f"the string at character {pos + 1} is not closed, or holds a backslash")
            raise ValueError(f"{char!r} at character {pos + 1} is not allowed in a check")
        kind, text = match.lastgroup or "", match.group()
        if kind == "comment":
            raise ValueError(f"`{text}` at character {pos + 1} starts or ends a SQL comment; not allowed in a check")
        if kind == "string" and tokens and tokens[-1][0] == "word" and tokens[-1][2] + len(tokens[-1][1]) == pos:
            raise ValueError(f"a prefixed string ({tokens[-1][1]}'...') at character {tokens[-1][2] + 1} is "
                             "not allowed in a check; use a plain '...' string")
        if kind != "space":
            tokens.append((kind, text, pos))
        pos = match.end()
    return tokens


def check_sql(sql: str | None) -> str | None:
    """Validate a target check's ``check_statement`` / ``partition_clause`` (see the rules above)."""
    if sql is None:
        return None
    if len(sql) > CHECK_SQL_MAX_CHARS:
        raise ValueError(f"is {len(sql)} characters long; a check is one SQL condition of at most "
                         f"{CHECK_SQL_MAX_CHARS}")
    tokens = _check_sql_tokens(sql)
    depth = 0
    for i, (kind, text, pos) in enumerate(tokens):
        word = text.upper()
        if kind == "word" and word in _CHECK_SQL_FORBIDDEN:
            raise ValueError(f"{text} (at character {pos + 1}) is not allowed: a check is one boolean SQL "
                             f'expression, not a statement or a query (quote a column of that name: "{text.lower()}")')
        if kind == "quoted" and i + 1 < len(tokens) and tokens[i + 1][1] == "(":
            raise ValueError(f"the quoted name {text} (at character {pos + 1}) cannot be called in a check")
        if kind == "word" and i + 1 < len(tokens) and tokens[i + 1][1] == "(":
            if i and tokens[i - 1][1] == ".":
                raise ValueError(f"the schema-qualified function call {tokens[i - 2][1]}.{text}() (at character "
                                 f"{tokens[i - 2][2] + 1}) is not allowed in a check")
            if word not in _CHECK_SQL_FUNCTIONS | _CHECK_SQL_GROUPING:
                raise ValueError(f"the function {text}() (at character {pos + 1}) is not allowed in a check; "
                                 f"allowed: {', '.join(sorted(_CHECK_SQL_FUNCTIONS))}")
        depth += {"(": 1, ")": -1}.get(text, 0) if kind == "op" else 0
        if depth < 0:
            raise ValueError(f"the `)` at character {pos + 1} closes no `(`")
    if depth:
        raise ValueError(f"{depth} `(` not closed")
    return sql


class ColumnCheck(_Model):
    """Bounds on one ``SQLColumnCheckOperator`` check's result (its ``column_mapping`` entry)."""

    equal_to: int | float | None = None
    greater_than: int | float | None = None
    geq_to: int | float | None = None
    less_than: int | float | None = None
    leq_to: int | float | None = None
    tolerance: float | None = Field(default=None, ge=0)
    partition_clause: str | None = Field(default=None, description="extra WHERE condition, e.g. `active`")

    @field_validator("partition_clause")
    @classmethod
    def _one_sql_condition(cls, value: str | None) -> str | None:
        return check_sql(value)

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

    @field_validator("check_statement", "partition_clause")
    @classmethod
    def _one_sql_condition(cls, value: str | None) -> str | None:
        return check_sql(value)


class TargetChecks(_Model):
    """SQL checks on the ERP table after each load (PostgreSQL targets), beside Conduit's own."""

    columns: dict[str, dict[Literal["null_check", "distinct_check", "unique_check", "min", "max"], ColumnCheck]] = (
        Field(default_factory=dict))
    table: dict[Annotated[str, Field(pattern=IDENTIFIER)], TableCheck] = Field(default_factory=dict)


class SqlTarget(_Model):
    """A customer-master table in a SQL database (PostgreSQL in production, SQLite embedded). The
    sync's state (watermark, quarantine, defects) lives beside it, in the same schema, and commits
    with the rows."""

    type: Literal["sql"]
    conn_id: str = "erp_default"
    table: str = Field(pattern=IDENTIFIER)
    db_schema: str = Field(default="public", alias="schema", pattern=IDENTIFIER)
    key: str = Field(pattern=IDENTIFIER)
    delete_mode: Literal["soft", "hard"] = "soft"
    batch_size: int = Field(default=10_000, ge=100)
    checks: TargetChecks = Field(default_factory=TargetChecks)

    @property
    def location(self) -> tuple[str, str]:
        """(container, object) where the rows land: here (schema, table)."""
        return self.db_schema, self.table

    @property
    def state_conn_id(self) -> str:
        return self.conn_id

    @property
    def state_schema(self) -> str:
        return self.db_schema

    def mapping_problems(self, mapping: dict[str, FieldMapping]) -> list[str]:
        from conduit.targets.sql_render import BOOKKEEPING_COLUMNS

        table_columns = {*mapping, *(c.name for c in BOOKKEEPING_COLUMNS)}
        return [f"target.checks.columns.{column}: the ERP table has no such column "
                f"(it has {', '.join(sorted(table_columns))})"
                for column in self.checks.columns if column not in table_columns]


class StateStoreSpec(_Model):
    """Where a sync whose target cannot hold it keeps its state (watermark, quarantine, defects,
    load progress): a PostgreSQL or SQLite connection and a schema."""

    conn_id: str = "conduit_state_default"
    db_schema: str = Field(default="public", alias="schema", pattern=IDENTIFIER)


class PartyFields(_Model):
    """Which mapped column fills which part of a Tryton party (``code`` is ``target.key``)."""

    name: str | None = None
    email: str | None = Field(default=None, description="an email contact mechanism")
    phone: str | None = Field(default=None, description="a phone contact mechanism")
    country: str | None = Field(default=None, description="ISO alpha-2 code: the country of the party's address")
    source_id: str | None = Field(default=None, description="an identifier holding the source record's id")


class TrytonTarget(_Model):
    """Parties in a Tryton ERP, written over its REST API; the sync's state in a SQL database."""

    type: Literal["tryton"]
    conn_id: str = "tryton_default"
    model: Literal["party.party"] = "party.party"
    key: str = Field(pattern=IDENTIFIER, description="the mapped column that becomes the party's code")
    fields: PartyFields = Field(default_factory=PartyFields)
    delete_mode: Literal["soft", "hard"] = Field(
        default="soft", description="soft deactivates the party (active = false), hard deletes it")
    state: StateStoreSpec = Field(default_factory=StateStoreSpec)
    batch_size: int = Field(default=200, ge=1, le=1000, description="parties read or written per round")
    max_concurrent_requests: int = Field(default=4, ge=1, le=16)

    @property
    def location(self) -> tuple[str, str]:
        return "tryton", self.model

    @property
    def state_conn_id(self) -> str:
        return self.state.conn_id

    @property
    def state_schema(self) -> str:
        return self.state.db_schema

    def mapping_problems(self, mapping: dict[str, FieldMapping]) -> list[str]:
        used = {self.key: "key", **{column: part for part, column in self.fields.model_dump().items() if column}}
        problems = [f"target.fields.{part}: {column!r} has no entry in `mapping`"
                    for column, part in used.items() if column not in mapping]
        # every mapped column must land somewhere: reconcile compares what Tryton holds with it
        problems += [f"mapping.{column}: a Tryton party has no place for it (map it in target.fields "
                     "or drop it)" for column in mapping if column not in used]
        return problems


Target = Annotated[SqlTarget | TrytonTarget, Field(discriminator="type")]


# --- quality ------------------------------------------------------------------------------------


PLAIN_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,200}")


def plain_file_name(value: str, folder: str, suffixes: tuple[str, ...]) -> str:
    """A file reference in a spec: one file's name in ``include/<folder>/``, never a path."""
    example = f"e.g. erp_customers{suffixes[0]}"
    if "/" in value or "\\" in value or ".." in value or value.startswith("~"):
        raise ValueError(f"{value!r} must be a plain file name in include/{folder}/ (no '/', '\\', '..' or "
                         f"'~'), {example}")
    if not PLAIN_FILE_NAME.fullmatch(value) or not value.endswith(suffixes):
        raise ValueError(f"{value!r} must be a file name of letters, digits, '_', '-' and '.' ending in "
                         f"{', '.join(suffixes)}, {example}")
    return value


class QualitySpec(_Model):
    suite: str = Field(description="file name under include/expectations/")
    policy: Literal["block", "quarantine", "warn"] = "block"
    max_rejected_ratio: float = Field(default=0.0, ge=0.0, le=1.0)
    rejected_ratio_min_rows: int = Field(
        default=100, ge=0,
        description="runs that check fewer rows are not held to max_rejected_ratio: a record that stays bad "
                    "in the CRM must not fail every small incremental run that reads it again",
    )
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

    @field_validator("suite")
    @classmethod
    def _suite_is_a_file_name(cls, value: str) -> str:
        return plain_file_name(value, "expectations", (".yaml", ".yml", ".json"))


# A run waiting for approval holds its sync (one run at a time): later runs queue behind it and its
# plan goes stale. A week covers a weekend and a holiday; beyond that nobody is reading.
MAX_APPROVAL_TIMEOUT = timedelta(days=7)
_TOO_LONG = f"is longer than {MAX_APPROVAL_TIMEOUT.days} days, the longest a person may take to answer"


class ApprovalSpec(_Model):
    """The circuit breaker: a run whose plan changes more than these shares of the ERP's active
    customers waits for a person (Airflow's HITL) before it loads. An empty ERP getting its first
    customers needs no approval."""

    max_update_ratio: float = Field(default=0.2, ge=0.0, le=1.0)
    max_delete_ratio: float = Field(default=0.05, ge=0.0, le=1.0)
    timeout: timedelta = Field(default=timedelta(hours=12),
                               description="how long a person has to answer: more than 0, at most 7 days")
    on_timeout: Literal["reject"] = "reject"
    sample_rows: int = Field(default=5, ge=0, le=50, description="rows per kind of change shown in the plan")

    @field_validator("timeout", mode="before")
    @classmethod
    def _short_durations(cls, value: Any) -> Any:
        """``12h``, ``30m``, ``90s``, ``2d`` besides seconds and ISO 8601 (``PT12H``)."""
        # a sign is read too: "-1h" then gets the "must be more than 0" message, not a parse error
        match = re.fullmatch(r"\s*(-?\d+(?:\.\d+)?)\s*([smhd])\s*", value) if isinstance(value, str) else None
        if match is None:
            return value
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[match.group(2)]
        try:
            return timedelta(**{unit: float(match.group(1))})
        except OverflowError:  # e.g. 99999999999h: beyond what a timedelta holds
            raise ValueError(f"{value!r} {_TOO_LONG}") from None

    @field_validator("timeout")
    @classmethod
    def _a_person_can_answer(cls, value: timedelta) -> timedelta:
        # 0 or less: Airflow 3.3's HITL times the request out before anyone is asked (before 3.3, 0 meant forever)
        if value <= timedelta(0):
            raise ValueError(f"must be more than 0, not {value.total_seconds():g} seconds (Airflow would reject "
                             "every run at once, or never stop waiting); give how long a person has, e.g. 12h")
        if value > MAX_APPROVAL_TIMEOUT:
            raise ValueError(f"{value} {_TOO_LONG}")
        return value


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
            if not re.fullmatch(IDENTIFIER, column):  # re.match's `$` would let "email\n" through
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
        problems = self.target.mapping_problems(self.mapping)
        if problems:
            raise ValueError(problems[0])
        return self

    @property
    def columns(self) -> list[str]:
        return list(self.mapping)


# --- loading ------------------------------------------------------------------------------------


_UNION_TAGS = frozenset({
    "hubspot", "sql", "tryton", "trim", "lower", "upper", "title", "email", "phone_e164", "country_iso2",
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
        elif isinstance(item, str) and not item.isprintable():
            parts.append(f"[{item!r}]")  # a key such as "email\n", escaped: one problem stays one line
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


# Specs, suites and rules files are a few KiB. These bounds refuse hostile files before they cost
# memory or time: a huge file, a "billion laughs" of nested aliases, a bottomless nesting.
MAX_FILE_BYTES = 1024 * 1024
MAX_YAML_VALUES = 50_000  # counted with every alias expanded, as the code reading the data walks it
MAX_YAML_DEPTH = 50


class _RefusedYaml(yaml.YAMLError):
    def __init__(self, where: str, problem: str):
        super().__init__(problem)
        self.where, self.problem = where, problem


def _at(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"


class _BoundedSafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses deep nesting, recursive aliases, documents whose aliases
    expand beyond :data:`MAX_YAML_VALUES` values, and values that do not construct (names the line)."""

    _depth = 0
    _nodes = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        self._nodes += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise _RefusedYaml(_at(self.peek_event().start_mark), f"nested deeper than {MAX_YAML_DEPTH} levels")
            if self._nodes > MAX_YAML_VALUES:
                raise _RefusedYaml(_at(self.peek_event().start_mark), f"holds more than {MAX_YAML_VALUES} values")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_document(self, node: Any) -> Any:
        _expanded(node, {}, set(), 1)
        self._refuse_duplicate_keys(node, set())
        return super().construct_document(node)

    def _refuse_duplicate_keys(self, node: Any, seen: set[int]) -> None:
        """A key given twice in one mapping: YAML keeps the last silently (a second ``email:`` column
        replaces the first, a stray ``approval:`` switches the breaker off). Checked on the composed
        nodes, before ``<<`` merges are flattened: a key that overrides a merged one is meant."""
        if id(node) in seen:  # an alias: checked where its anchor is
            return
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[Any, Any] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # a list or mapping as a key is refused when constructed; `<<` merges
                key = self.construct_object(key_node)
                if key in first:
                    raise _RefusedYaml(_at(key_node.start_mark), f"the key {key_node.value!r} is given twice in one "
                                       f"mapping (first at {_at(first[key].start_mark)}); YAML would silently keep "
                                       "only the last: remove or rename one")
                first[key] = key_node
        children = node.value if isinstance(node, yaml.SequenceNode) else (
            [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else [])
        for child in children:
            self._refuse_duplicate_keys(child, seen)

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as exc:  # e.g. 2026-13-45, or an int of 5,000 digits
            raise _RefusedYaml(_at(node.start_mark), f"cannot read the value: {str(exc)[:200]}") from None


def _expanded(node: Any, seen: dict[int, tuple[int, int]], open_nodes: set[int], depth: int) -> tuple[int, int]:
    """(values, levels) of a composed YAML node with every alias written out, as the code that
    reads the data will walk it; refuses a recursive alias and what exceeds the bounds."""
    if id(node) in open_nodes:
        raise _RefusedYaml(_at(node.start_mark), "an alias refers to a node that contains it (recursive)")
    if depth > MAX_YAML_DEPTH:
        raise _RefusedYaml(_at(node.start_mark), f"nested deeper than {MAX_YAML_DEPTH} levels once its aliases "
                                                 "are expanded")
    size, height = seen.get(id(node)) or (1, 1)
    if id(node) not in seen:
        open_nodes.add(id(node))
        children = node.value if isinstance(node, yaml.SequenceNode) else (
            [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else [])
        for child in children:
            child_size, child_height = _expanded(child, seen, open_nodes, depth + 1)
            size, height = size + child_size, max(height, child_height + 1)
            if size > MAX_YAML_VALUES:
                raise _RefusedYaml("(file)", f"holds more than {MAX_YAML_VALUES} values once its aliases are "
                                             "expanded (a YAML bomb?); write the values out instead")
        open_nodes.discard(id(node))
        seen[id(node)] = size, height
    if depth + height - 1 > MAX_YAML_DEPTH:
        raise _RefusedYaml(_at(node.start_mark), f"nested deeper than {MAX_YAML_DEPTH} levels once its aliases "
                                                 "are expanded")
    return size, height


def read_text(path: Path, error: type[SpecError] = SpecError) -> str:
    """A spec, suite or rules file's UTF-8 text, at most :data:`MAX_FILE_BYTES`; else ``error``."""
    try:
        if not path.is_file():
            raise error(str(path), [("(file)", "no such file" if not path.exists() else "not a regular file")])
        with path.open("rb") as stream:
            data = stream.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise error(str(path), [("(file)", str(exc))]) from None
    if len(data) > MAX_FILE_BYTES:
        raise error(str(path), [("(file)", f"larger than {MAX_FILE_BYTES} bytes (1 MiB); a spec, suite or rules "
                                           "file is a few KiB, this one is not read")])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(str(path), [("(file)", f"not UTF-8 text (byte {exc.start}: {exc.reason})")]) from None


def read_yaml(path: Path, error: type[SpecError] = SpecError) -> Any:
    """A YAML file's data; an unreadable, oversized or hostile file, or bad YAML, raises ``error``
    naming the file and line (see :func:`read_text` and :class:`_BoundedSafeLoader`)."""
    loader = _BoundedSafeLoader(read_text(path, error))
    try:
        return loader.get_single_data()
    except _RefusedYaml as exc:
        raise error(str(path), [(exc.where, exc.problem)]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(yaml)"
        raise error(str(path), [(where, f"not valid YAML: {getattr(exc, 'problem', exc)}")]) from None
    finally:
        loader.dispose()


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
