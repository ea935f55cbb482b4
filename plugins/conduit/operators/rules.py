"""Routing by business rules kept as data (``include/rules/*.yaml``), not nested branches."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.branch import BaseBranchOperator

if TYPE_CHECKING:
    from airflow.sdk import Context


def rules_path(name: str) -> Path:
    from conduit.factory import include_dir

    path = Path(name)
    return path if path.is_absolute() else include_dir() / "rules" / name


class RulesBranchOperator(BaseBranchOperator):
    """Evaluates a rules file on ``facts`` (templated: e.g. earlier tasks' results) and follows
    ``routes[outcome]``. The rule that fired, its reason and the facts it read are logged, returned
    as XCom and, inside a saga, kept in the saga log; an outcome listed in ``abort_outcomes``
    becomes the saga's cause."""

    template_fields: Sequence[str] = ("facts", "saga_id")
    ui_color = "#f3d9fa"

    def __init__(self, *, rules_file: str, facts: Any, routes: Mapping[str, str], saga_id: str | None = None,
                 log_conn_id: str = "conduit_saga_default", abort_outcomes: Sequence[str] = ("reject",),
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rules_file, self.facts, self.routes = rules_file, facts, dict(routes)
        self.saga_id, self.log_conn_id, self.abort_outcomes = saga_id, log_conn_id, tuple(abort_outcomes)

    def choose_branch(self, context: Context) -> str:
        from dataclasses import asdict

        from airflow.sdk.exceptions import AirflowFailException

        from conduit.rules.engine import evaluate
        from conduit.rules.model import load_rules

        path = rules_path(self.rules_file)
        rules = load_rules(path)
        decision = evaluate(rules, self.facts)
        self.log.info("rules %s: %s (rule %s: %s; facts %s)", rules.name, decision.outcome, decision.rule,
                      decision.reason, decision.facts_used)
        unrouted = None
        if decision.outcome not in self.routes:  # the file gained an outcome this DAG has no path for
            unrouted = (f"{path}: rule {decision.rule} chose {decision.outcome!r}, which {self.task_id} has no "
                        f"route for (routes: {', '.join(sorted(self.routes))})")
        if self.saga_id:
            from conduit.hooks.saga_log import SagaLogHook

            log = SagaLogHook(saga_conn_id=self.log_conn_id).get_conn()
            log.note(self.saga_id, self.task_id, "rule", {"rules": rules.name, **asdict(decision)})
            if unrouted or decision.outcome in self.abort_outcomes:
                log.set_cause(self.saga_id, unrouted or f"{decision.outcome} by rule {decision.rule}: "
                              f"{decision.reason}", step=self.task_id)
        context["ti"].xcom_push(key="decision", value={"rules": rules.name, **asdict(decision)})
        if unrouted:
            raise AirflowFailException(unrouted)
        return self.routes[decision.outcome]
