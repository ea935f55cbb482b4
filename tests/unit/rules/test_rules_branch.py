"""RulesBranchOperator: an outcome the rules file has but the DAG has no route for fails the task
without retry, naming the file, the rule, the outcome and the routes there are."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from airflow.sdk.exceptions import AirflowFailException

from conduit.operators.rules import RulesBranchOperator

RULES = """name: routing
outcomes: [approve, review, reject, hold]
default: review
rules:
  - {name: blocked_customer, when: [{field: order.blocked, eq: true}], then: hold}
"""


def choose(tmp_path, blocked: bool) -> tuple[str, dict]:
    path = tmp_path / "routing.yaml"
    path.write_text(RULES)
    op = RulesBranchOperator(task_id="route", rules_file=str(path), facts={"order": {"blocked": blocked}},
                             routes={"approve": "pay", "review": "ask", "reject": "refuse"})
    pushed: dict = {}
    branch = op.choose_branch({"ti": SimpleNamespace(xcom_push=lambda key, value: pushed.update({key: value}))})
    return branch, pushed


def test_a_routed_outcome_follows_its_route(tmp_path):
    branch, pushed = choose(tmp_path, blocked=False)
    assert branch == "ask" and pushed["decision"]["outcome"] == "review"


def test_an_outcome_without_a_route_fails_naming_file_rule_outcome_and_routes(tmp_path):
    with pytest.raises(AirflowFailException) as raised:
        choose(tmp_path, blocked=True)
    assert str(raised.value) == (f"{tmp_path / 'routing.yaml'}: rule blocked_customer chose 'hold', which route "
                                 "has no route for (routes: approve, reject, review)")
