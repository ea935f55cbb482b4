"""Apply a rule set to one case's facts: a pure function, no Airflow, no I/O.

Facts are a JSON-like mapping, e.g. ``{"order": {"amount": 120.0}, "fraud": {"score": 0.12}}``;
a condition's ``field`` is a dotted path into it. Two kinds of trouble are told apart on purpose:

* a **missing** fact (or a null one where an order is needed) makes that condition false, so the
  case falls through to later rules and at last to the default: a case the data cannot settle goes
  where the rule set sends unsettled cases (in order routing: human review), it does not crash;
* a fact of the **wrong kind** (the text ``"120"`` where the rule compares numbers) is a bug in the
  data or the rules, and silently treating it as "no match" would route every such case wrongly
  without anyone noticing, so it raises a :class:`RuleError` naming the rule and the field.
"""

from __future__ import annotations

import numbers
import operator
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # only the types: the engine reads the models' attributes, it never builds them
    from conduit.rules.model import Condition, Rule, RuleSet

_MISSING = object()
_ORDERINGS = {"lt": operator.lt, "le": operator.le, "gt": operator.gt, "ge": operator.ge}


class RuleError(ValueError):
    """A rule cannot be applied to the facts as they are (a text where it compares numbers, ...)."""

    def __init__(self, rule_set: str, rule: str, field: str, problem: str):
        self.rule_set, self.rule, self.field, self.problem = rule_set, rule, field, problem
        super().__init__(f"rule set {rule_set!r}, rule {rule!r}, field {field!r}: {problem}")


@dataclass(frozen=True)
class Decision:
    """What the rule set decided, and why: the rule that matched (None: the default) and every fact
    the evaluation read on the way, so the decision can be explained and replayed."""

    outcome: str
    rule: str | None
    reason: str
    facts_used: dict[str, Any]


def evaluate(rules: RuleSet, facts: Mapping[str, Any]) -> Decision:
    """The outcome of the first rule whose conditions all hold, else the rule set's default."""
    facts_used: dict[str, Any] = {}
    for rule in rules.rules:
        if all(_holds(rules, rule, condition, facts, facts_used) for condition in rule.when):
            return Decision(rule.then, rule.name, rule.reason or f"rule {rule.name!r} matched", facts_used)
    return Decision(rules.default, None, "no rule matched: the rule set's default", facts_used)


def _holds(rules: RuleSet, rule: Rule, condition: Condition, facts: Mapping[str, Any],
           facts_used: dict[str, Any]) -> bool:
    """One condition against the facts, noting the fact it read; a missing fact is simply false."""
    value = fact_at(facts, condition.field)
    if value is _MISSING:
        return False
    facts_used[condition.field] = value
    try:
        return compare(condition.operator, value, condition.operand)
    except _KindMismatch as exc:
        raise RuleError(rules.name, rule.name, condition.field, str(exc)) from None


def fact_at(facts: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path (``order.amount``), or ``_MISSING`` when any step is absent."""
    value: Any = facts
    for key in path.split("."):
        if not isinstance(value, Mapping) or key not in value:
            return _MISSING
        value = value[key]
    return value


class _KindMismatch(Exception):
    """A fact and an operand of different kinds; :func:`_holds` adds the rule and field."""


def compare(op: str, value: Any, operand: Any) -> bool:
    """Apply one operator. Equality and membership may test for null; ordering a null is false."""
    if op in ("eq", "ne"):
        _require_same_kind(op, value, [operand])
        return (value == operand) == (op == "eq")
    if op in ("in", "not_in"):
        _require_same_kind(op, value, operand)
        return (value in operand) == (op == "in")
    if value is None:
        return False
    if op == "between":
        lo, hi = operand
        _require_same_kind(op, value, [lo, hi])
        return lo <= value <= hi
    _require_same_kind(op, value, [operand])
    return _ORDERINGS[op](value, operand)


def kind(value: Any) -> str:
    """The kind of a value as the rules see it: bool is not a number (Python says it is), and a
    ``Decimal`` from a database is one."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, numbers.Real | Decimal):
        return "number"
    if isinstance(value, str):
        return "text"
    return type(value).__name__


def _require_same_kind(op: str, value: Any, operands: list[Any]) -> None:
    """Refuse to compare across kinds, where Python would answer False (``"120" == 120``) or
    something meaningless (``True < 0.3``). Null on either side is left to the comparison."""
    expected = {kind(o) for o in operands if o is not None}
    if value is None or not expected or kind(value) in expected:
        return
    wanted = " or ".join(sorted(expected))
    raise _KindMismatch(f"{op} compares a {wanted} but the fact is a {kind(value)}: {value!r}")
