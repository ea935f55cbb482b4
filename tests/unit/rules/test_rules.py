"""Business rules as data: every operator, first match wins, the default, the shipped order routing
at its boundaries, and mistakes named by file and field (in the file) or rule and field (in the facts)."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from conduit.exceptions import SpecError
from conduit.rules.engine import Decision, RuleError, evaluate
from conduit.rules.model import RuleSet, RulesFileError, load_rules, parse_rules

REPO = Path(__file__).resolve().parents[3]
ORDER_ROUTING = REPO / "include" / "rules" / "order_routing.yaml"


def one_rule(*conditions: dict) -> RuleSet:
    """A rule set whose single rule ``hit`` holds exactly when the conditions do."""
    return parse_rules({"name": "t", "default": "miss", "rules": [{"name": "hit", "when": list(conditions),
                                                                   "then": "hit"}]}, "t.yaml")


def holds(condition: dict, facts: dict) -> bool:
    return evaluate(one_rule(condition), facts).outcome == "hit"


# --- operators ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("condition", "value", "expected"), [
    ({"lt": 5}, 4.9, True), ({"lt": 5}, 5, False),
    ({"le": 5}, 5, True), ({"le": 5}, 5.1, False),
    ({"gt": 5}, 5.1, True), ({"gt": 5}, 5, False),
    ({"ge": 5}, 5, True), ({"ge": 5}, 4.9, False),
    ({"eq": "EUR"}, "EUR", True), ({"eq": "EUR"}, "USD", False),
    ({"eq": 1000}, 1000.0, True), ({"eq": True}, True, True), ({"eq": None}, None, True),
    ({"eq": None}, 3, False),
    ({"ne": "EUR"}, "USD", True), ({"ne": "EUR"}, "EUR", False),
    ({"in": ["EUR", "CHF"]}, "CHF", True), ({"in": ["EUR", "CHF"]}, "USD", False),
    ({"not_in": ["EUR", "CHF"]}, "USD", True), ({"not_in": ["EUR", "CHF"]}, "EUR", False),
    ({"between": [1, 3]}, 1, True), ({"between": [1, 3]}, 3, True), ({"between": [1, 3]}, 2.5, True),
    ({"between": [1, 3]}, 0.99, False), ({"between": [1, 3]}, 3.01, False),
    ({"between": ["a", "m"]}, "kiwi", True),
    ({"lt": 5}, Decimal("4.50"), True),  # a NUMERIC column from a database is a number
])
def test_every_operator(condition, value, expected):
    assert holds({"field": "x.y", **condition}, {"x": {"y": value}}) is expected


def test_all_conditions_of_a_rule_must_hold():
    rules = one_rule({"field": "a", "gt": 0}, {"field": "b", "eq": "yes"})
    assert evaluate(rules, {"a": 1, "b": "yes"}).outcome == "hit"
    assert evaluate(rules, {"a": 1, "b": "no"}).outcome == "miss"
    assert evaluate(rules, {"a": 0, "b": "yes"}).outcome == "miss"


def test_a_rule_without_conditions_always_holds():
    assert evaluate(one_rule(), {}) == Decision("hit", "hit", "rule 'hit' matched", {})


@pytest.mark.parametrize("facts", [{}, {"x": {}}, {"x": 5}, {"x": {"z": 1}}, {"x": None}])
def test_a_missing_fact_makes_the_condition_false(facts):
    for operator in ({"lt": 1}, {"ne": "EUR"}, {"not_in": ["EUR"]}, {"between": [0, 1]}):
        assert not holds({"field": "x.y", **operator}, facts)


def test_a_null_fact_cannot_be_ordered_but_can_be_tested_for_equality():
    assert not holds({"field": "score", "lt": 0.3}, {"score": None})
    assert not holds({"field": "score", "between": [0, 1]}, {"score": None})
    assert holds({"field": "score", "ne": 0.3}, {"score": None})
    assert holds({"field": "score", "in": [None, 0]}, {"score": None})


# --- order, default, the decision -----------------------------------------------------------------


RULES_IN_ORDER = {
    "name": "ordered", "default": "nothing", "rules": [
        {"name": "first", "when": [{"field": "n", "gt": 10}], "then": "big", "reason": "over ten"},
        {"name": "second", "when": [{"field": "n", "gt": 5}], "then": "medium"},
        {"name": "third", "when": [{"field": "n", "gt": 10}], "then": "never reached"},
    ],
}


def test_the_first_matching_rule_wins():
    rules = parse_rules(RULES_IN_ORDER, "ordered.yaml")
    assert evaluate(rules, {"n": 11}) == Decision("big", "first", "over ten", {"n": 11})
    assert evaluate(rules, {"n": 6}) == Decision("medium", "second", "rule 'second' matched", {"n": 6})


def test_the_default_when_no_rule_matches():
    decision = evaluate(parse_rules(RULES_IN_ORDER, "ordered.yaml"), {"n": 1, "unread": "x"})
    assert decision == Decision("nothing", None, "no rule matched: the rule set's default", {"n": 1})


def test_facts_used_are_the_facts_read_on_the_way_to_the_decision():
    rules = load_rules(ORDER_ROUTING)
    facts = {"order": {"order_id": "SO-1", "amount": 5000.0, "currency": "EUR"}, "fraud": {"score": 0.1}}
    assert evaluate(rules, facts).facts_used == {"fraud.score": 0.1, "order.amount": 5000.0}
    # the first condition failing is the whole story: the amount was never read
    assert evaluate(rules, {**facts, "fraud": {"score": 0.9}}).facts_used == {"fraud.score": 0.9}


# --- the shipped order routing --------------------------------------------------------------------


def order(score: float | None, amount: float | None) -> dict:
    facts: dict = {"order": {"order_id": "SO-1", "currency": "EUR"}, "fraud": {}}
    if amount is not None:
        facts["order"]["amount"] = amount
    if score is not None:
        facts["fraud"]["score"] = score
    return facts


@pytest.mark.parametrize(("score", "amount", "outcome", "rule"), [
    (0.12, 120.0, "approve", "low_risk_small_order"),
    (0.2999, 999.99, "approve", "low_risk_small_order"),
    (0.3, 120.0, "review", "medium_fraud_score"),       # 0.3 is no longer "below 0.3"
    (0.8, 120.0, "review", "medium_fraud_score"),       # 0.8 is not yet "above 0.8"
    (0.8001, 120.0, "reject", "high_fraud_score"),
    (0.12, 1000.0, "review", "large_order"),            # 1,000 is no longer "under 1,000"
    (0.0, 999.99, "approve", "low_risk_small_order"),
    (0.95, 50_000.0, "reject", "high_fraud_score"),     # rejection outranks the value review
    (0.5, 50_000.0, "review", "medium_fraud_score"),
    (None, 120.0, "review", None),                      # no score: nobody approves it blindly
    (0.12, None, "review", None),                       # no amount: same
])
def test_order_routing_at_its_boundaries(score, amount, outcome, rule):
    decision = evaluate(load_rules(ORDER_ROUTING), order(score, amount))
    assert (decision.outcome, decision.rule) == (outcome, rule)


def test_order_routing_file_is_complete():
    rules = load_rules(ORDER_ROUTING)
    assert rules.name == "order_routing" and rules.default == "review"
    assert rules.outcomes == ["approve", "review", "reject"]
    assert all(rule.reason for rule in rules.rules)


# --- type mismatches ------------------------------------------------------------------------------


@pytest.mark.parametrize(("condition", "value"), [
    ({"lt": 1000}, "120"), ({"between": [0.3, 0.8]}, "0.5"), ({"eq": 1000}, "1000"),
    ({"in": ["EUR", "CHF"]}, 978), ({"gt": 0.8}, True), ({"eq": 1}, {"nested": 1}),
])
def test_a_fact_of_the_wrong_kind_names_the_rule_and_the_field(condition, value):
    with pytest.raises(RuleError) as info:
        holds({"field": "order.amount", **condition}, {"order": {"amount": value}})
    assert (info.value.rule_set, info.value.rule, info.value.field) == ("t", "hit", "order.amount")
    assert "rule 'hit', field 'order.amount'" in str(info.value) and repr(value) in str(info.value)


def test_the_shipped_rules_refuse_an_amount_sent_as_text():
    facts = order(0.12, None)
    facts["order"]["amount"] = "120.00"
    with pytest.raises(RuleError, match=r"rule 'low_risk_small_order', field 'order.amount': lt compares a number"):
        evaluate(load_rules(ORDER_ROUTING), facts)


# --- broken files ---------------------------------------------------------------------------------


@pytest.fixture
def data() -> dict:
    return yaml.safe_load(ORDER_ROUTING.read_text())


@pytest.mark.parametrize(("mutate", "field", "words"), [
    (lambda d: d["rules"][0]["when"][0].update(lt="0.3", gt=0.1), "rules[0].when[0]", "exactly one operator"),
    (lambda d: d["rules"][0]["when"][0].pop("lt"), "rules[0].when[0]", "got none"),
    (lambda d: d["rules"][0]["when"][0].update(lt=[1]), "rules[0].when[0].lt", "a number or a text"),
    (lambda d: d["rules"][0]["when"][0].update(field="fraud..score"), "rules[0].when[0].field", "pattern"),
    (lambda d: d["rules"][0]["when"][0].update(lesser=1), "rules[0].when[0].lesser", "Extra inputs"),
    (lambda d: d["rules"][2]["when"][0].update(between=[0.8, 0.3]), "rules[2].when[0].between", "low bound"),
    (lambda d: d["rules"][2]["when"][0].update(between=[0.3]), "rules[2].when[0].between[1]", "required"),
    (lambda d: d["rules"][1].update(then="decline"), "rules[1].then", "'decline' is not one of the outcomes"),
    (lambda d: d.update(default="hold"), "default", "'hold' is not one of the outcomes"),
    (lambda d: d.pop("default"), "default", "required"),
    (lambda d: d["rules"][3].update(name="high_fraud_score"), "rules[3].name", "used by an earlier rule"),
    (lambda d: d["rules"][0].pop("then"), "rules[0].then", "required"),
    (lambda d: d["rules"][0]["when"][0].update(lt=None), "rules[0].when[0].lt", "needs a value, got null"),
    (lambda d: d["rules"][2]["when"][0].update(between=None), "rules[2].when[0].between", "needs a value, got null"),
    (lambda d: d["rules"][0]["when"][0].update({"lt": None, "in": None}), "rules[0].when[0]",
     "exactly one operator"),
    (lambda d: d["rules"][0]["when"][0].update({"in": None}) or d["rules"][0]["when"][0].pop("lt"),
     "rules[0].when[0].in", "needs a value, got null"),
    (lambda d: d["rules"][0]["when"][0].update({"not_in": None}) or d["rules"][0]["when"][0].pop("lt"),
     "rules[0].when[0].not_in", "needs a value, got null"),
])
def test_a_broken_rules_file_names_the_file_and_the_field(tmp_path, data, mutate, field, words):
    mutate(data)
    path = tmp_path / "order_routing.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(RulesFileError) as info:
        load_rules(path)
    assert isinstance(info.value, SpecError)  # callers that catch spec errors catch these too
    assert [where for where, _ in info.value.problems] == [field], info.value.problems
    assert words in info.value.problems[0][1]
    message = str(info.value)
    assert message.startswith("invalid rules file\n") and f"{path}: {field}: " in message


def test_an_unquoted_yaml_date_is_refused_as_an_operand(tmp_path):
    path = tmp_path / "dates.yaml"
    path.write_text("name: dates\ndefault: no\nrules:\n  - {name: new, when: [{field: d, eq: 2026-01-31}], then: yes}\n")
    with pytest.raises(RulesFileError, match=r"rules\[0\].when\[0\].eq: needs a number, a text"):
        load_rules(path)


@pytest.mark.parametrize(("text", "field"), [
    ("name: x\nrules: [\n", "line 3, column 1"),
    ("- just\n- a list\n", "(top level)"),
])
def test_unreadable_files_name_the_file(tmp_path, text, field):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(RulesFileError) as info:
        load_rules(path)
    assert info.value.path == str(path) and info.value.problems[0][0] == field


def test_a_missing_file_names_the_file(tmp_path):
    with pytest.raises(RulesFileError, match="nope.yaml: \\(file\\)"):
        load_rules(tmp_path / "nope.yaml")


def test_the_engine_is_pure_python_without_airflow():
    code = "import sys, conduit.rules.engine; print(sorted(m for m in ('airflow', 'pydantic') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
