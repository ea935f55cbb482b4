"""The rules file: a typed, ordered rule set, loaded from YAML and validated when loaded.

.. code-block:: yaml

    name: order_routing
    outcomes: [approve, review, reject]      # optional: every `then` and the default must be one
    default: review                          # when no rule matches
    rules:                                   # in order; the first rule whose conditions all hold wins
      - name: high_fraud_score
        when: [{field: fraud.score, gt: 0.8}]
        then: reject
        reason: fraud score above 0.8

A condition reads one fact by a dotted path (``order.amount``) and applies exactly one operator:
``lt``, ``le``, ``gt``, ``ge``, ``eq``, ``ne``, ``in``, ``not_in`` or ``between`` (``[lo, hi]``,
inclusive). Mistakes fail the load with an error naming the file, the field and the problem, in the
same words as a broken sync spec (:func:`conduit.specs.model.validation_problems`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, ValidationError, model_validator

from conduit.exceptions import SpecError
from conduit.specs.model import IDENTIFIER, validation_problems

FIELD_PATH = r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$"
OPERATORS = ("lt", "le", "gt", "ge", "eq", "ne", "in", "not_in", "between")


class RulesFileError(SpecError):
    """A rules file is malformed. Like :class:`SpecError` (which it is), the message names the file,
    the field and the problem."""

    def __init__(self, path: str, problems: list[tuple[str, str]]):
        super().__init__(path, problems)
        _, _, lines = str(self).partition("\n")
        self.args = (f"invalid rules file\n{lines}",)


def _number_or_text(value: Any) -> int | float | str:
    """Operands of ``lt``/``le``/``gt``/``ge``/``between``: only numbers and texts have an order here.
    A bool is refused although Python counts it as a number: ``gt: true`` is a typo, not a rule."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"needs a number or a text, got {value!r}")
    return value


def _scalar(value: Any) -> bool | int | float | str | None:
    """Operands of ``eq``/``ne``/``in``/``not_in``. A YAML date (``2026-01-31`` unquoted) is refused:
    facts are JSON-like, so the rule must quote it to compare texts."""
    if value is not None and not isinstance(value, bool | int | float | str):
        raise ValueError(f"needs a number, a text, true/false or null, got {value!r}")
    return value


Ordered = Annotated[int | float | str, PlainValidator(_number_or_text)]
Scalar = Annotated[bool | int | float | str | None, PlainValidator(_scalar)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Condition(_Model):
    """One test of one fact: ``{field: fraud.score, lt: 0.3}``. Exactly one operator is set."""

    field: str = Field(pattern=FIELD_PATH, description="dotted path into the facts, e.g. order.amount")
    lt: Ordered | None = None
    le: Ordered | None = None
    gt: Ordered | None = None
    ge: Ordered | None = None
    eq: Scalar = None
    ne: Scalar = None
    in_: list[Scalar] | None = Field(default=None, alias="in", min_length=1)
    not_in: list[Scalar] | None = Field(default=None, min_length=1)
    between: tuple[Ordered, Ordered] | None = Field(default=None, description="[lo, hi], both inclusive")

    @model_validator(mode="after")
    def _one_operator(self) -> Condition:
        given = [op for op in OPERATORS if _attribute(op) in self.model_fields_set]
        if len(given) != 1:
            raise ValueError(f"needs exactly one operator among {', '.join(OPERATORS)}; "
                             f"got {', '.join(given) or 'none'}")
        if given[0] not in ("eq", "ne") and getattr(self, _attribute(given[0])) is None:
            # ``lt: null`` counts as given (it was written) but compares with nothing
            raise ValueError(f"{given[0]}: needs a value, got null (only eq and ne compare with null)")
        return self

    @model_validator(mode="after")
    def _between_is_a_range(self) -> Condition:
        if self.between is not None:
            lo, hi = self.between
            if isinstance(lo, str) != isinstance(hi, str):
                raise ValueError(f"between: both bounds must be numbers or both texts, got {[lo, hi]}")
            if lo > hi:
                raise ValueError(f"between: the low bound comes first, got {[lo, hi]}")
        return self

    @property
    def operator(self) -> str:
        """The operator's name as written in the file (``in``, not the attribute ``in_``)."""
        return next(op for op in OPERATORS if _attribute(op) in self.model_fields_set)

    @property
    def operand(self) -> Any:
        """What the fact is compared with: a value, a list (``in``/``not_in``) or ``(lo, hi)``."""
        return getattr(self, _attribute(self.operator))


def _attribute(operator: str) -> str:
    """``in`` is a Python keyword, so its attribute is ``in_``."""
    return "in_" if operator == "in" else operator


class Rule(_Model):
    """If every condition in ``when`` holds (an empty ``when`` always holds), the outcome is ``then``."""

    name: str = Field(pattern=IDENTIFIER)
    when: list[Condition] = Field(default_factory=list)
    then: str = Field(min_length=1)
    reason: str | None = Field(default=None, description="why, in words a reviewer reads with the decision")


class RuleSet(_Model):
    """Ordered rules, first match wins, and the outcome when none matches."""

    name: str = Field(pattern=IDENTIFIER)
    description: str = ""
    outcomes: list[str] | None = Field(default=None, min_length=1,
                                       description="when given, the only outcomes a rule or the default may have")
    rules: list[Rule]
    default: str = Field(min_length=1)

    @model_validator(mode="after")
    def _rule_names_are_unique(self) -> RuleSet:
        names = [rule.name for rule in self.rules]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise ValueError(f"rules[{i}].name: {name!r} is used by an earlier rule; a decision names its rule")
        return self

    @model_validator(mode="after")
    def _outcomes_are_known(self) -> RuleSet:
        if self.outcomes is None:
            return self
        for i, rule in enumerate(self.rules):
            if rule.then not in self.outcomes:
                raise ValueError(f"rules[{i}].then: {rule.then!r} is not one of the outcomes {self.outcomes}")
        if self.default not in self.outcomes:
            raise ValueError(f"default: {self.default!r} is not one of the outcomes {self.outcomes}")
        return self


def parse_rules(data: Any, path: str) -> RuleSet:
    """Validate already-read YAML data; ``path`` only names the source in errors."""
    if not isinstance(data, dict):
        raise RulesFileError(path, [("(top level)", "the file must hold a mapping of rule set fields")])
    try:
        return RuleSet.model_validate(data)
    except ValidationError as exc:
        raise RulesFileError(path, validation_problems(exc, frozenset())) from None


def load_rules(path: str | Path) -> RuleSet:
    """Read and validate a rules file; any mistake is a :class:`RulesFileError` naming file and field."""
    from conduit.specs.model import read_yaml

    return parse_rules(read_yaml(Path(path), RulesFileError), str(path))
