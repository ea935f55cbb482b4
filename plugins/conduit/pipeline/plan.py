"""A run's plan, judged and shown: pure functions over a :class:`~conduit.targets.base.LoadPlan`
(no Airflow, no database).

The circuit breaker compares the plan's updates and deletes with the ERP's active customers
before the load; above a threshold a person decides. An empty ERP getting its first customers
needs no approval (there is nothing to lose), and a full refresh is judged like any other run.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conduit.specs.model import ApprovalSpec
    from conduit.targets.base import LoadPlan


def approval_reason(plan: LoadPlan, approval: ApprovalSpec | None) -> str | None:
    """Why this plan needs a person, or None when it may load on its own."""
    if approval is None:
        return None
    if plan.active_before == 0:
        # an empty ERP getting its first customers has nothing to lose; a table whose customers are
        # all deactivated does: re-activating and rewriting them is what the breaker is for (with
        # one customer still active, the same plan would read "N of 1" and wait)
        if plan.result.updated:
            return (f"would update (re-activate) {plan.result.updated} customers while none is active (all "
                    f"deactivated): the spec allows {percent(approval.max_update_ratio)} of the active ones")
        return None
    reasons = []
    for kind, count, limit in (("update", plan.result.updated, approval.max_update_ratio),
                               ("delete (or deactivate)", plan.result.deleted, approval.max_delete_ratio)):
        share = count / plan.active_before
        if share > limit:
            reasons.append(f"would {kind} {count} of {plan.active_before} active customers "
                           f"({share_above(share, limit)}, above the spec's {percent(limit)})")
    return "; ".join(reasons) or None


def percent(ratio: float) -> str:
    """A spec's ratio as the exact percentage it sets: 0.015 -> ``1.5%``, 0.2 -> ``20%``. Rounded,
    the threshold shown would not be the one applied (0.015 read as "2%")."""
    return f"{(Decimal(repr(ratio)) * 100).normalize():f}%"


def share_above(share: float, limit: float) -> str:
    """``share`` (above ``limit``) as a percentage of one decimal, or as many more as it takes to
    read above the limit: 201 of 10,000 against 2% is ``2.01%``, not a contradictory ``2.0%``."""
    for places in range(1, 7):
        shown = f"{share * 100:.{places}f}"
        if Decimal(shown) > Decimal(repr(limit)) * 100:
            return f"{shown}%"
    return f"{share * 100:.6f}%"


def plan_lines(plan: LoadPlan, *, rejected: int = 0) -> list[str]:
    """The plan as a small table for the task log."""
    counts = {"inserted": plan.result.inserted, "updated": plan.result.updated, "deleted": plan.result.deleted,
              "unchanged": plan.result.unchanged, "stale (older than the ERP)": plan.result.stale_skipped,
              "rejected by the gate": rejected}
    lines = [f"plan against {plan.active_before} active ERP customers (checksum {plan.erp_checksum}):"]
    lines += [f"  {kind:<28}{count:>10}" for kind, count in counts.items()]
    if plan.changed_columns:
        lines.append("  columns the updates change: " +
                     ", ".join(f"{c} {n}" for c, n in sorted(plan.changed_columns.items(), key=lambda i: -i[1])))
    for sample in plan.samples.get("update", []):
        changes = ", ".join(f"{c}: {sample['before'][c]!r} -> {sample['after'][c]!r}" for c in sample["changed"])
        lines.append(f"  update {sample['key']}: {changes or 'reactivated'}")
    return lines


def approval_markdown(plan: LoadPlan, reason: str, key: str) -> str:
    """What the person deciding reads in the Airflow UI (Required Actions)."""
    result = plan.result
    rows = [("insert", result.inserted), ("update", result.updated), ("delete / deactivate", result.deleted),
            ("unchanged", result.unchanged)]
    table = "\n".join(f"| {kind} | {count:,} |" for kind, count in rows)
    parts = [f"**This run {reason}.** Approve to apply exactly this plan; reject (or no answer in time) "
             "changes nothing and keeps the watermark.",
             f"| change | rows |\n|---|---:|\n{table}",
             f"Active ERP customers before: {plan.active_before:,}."]
    if plan.changed_columns:
        parts.append("Columns the updates change: " + ", ".join(
            f"`{c}` ({n:,})" for c, n in sorted(plan.changed_columns.items(), key=lambda i: -i[1])))
    parts += _sample_sections(plan, key)
    return "\n\n".join(parts)


def quoted(value: Any) -> str:
    """``value`` as one Markdown code span that reads as the value it is: the samples quote CRM
    values, and a backtick or a line break in one must not end the quote and add text, emphasis
    or links of its own to the request a person approves. Line breaks show as ⏎; the fence is one
    backtick longer than the longest run of backticks inside (CommonMark), padded with a space
    when the value starts or ends with one (the parser strips that space again)."""
    text = re.sub(r"\r\n|\r|\n", "⏎", str(value))
    if not text.strip():
        return f"`{text!r}`" if text else "(empty)"
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text[0] in "` " or text[-1] in "` " else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _sample_sections(plan: LoadPlan, key: str) -> list[str]:
    sections = []
    updates = plan.samples.get("update", [])
    if updates:
        lines = [f"- {quoted(u['key'])}: " + ", ".join(f"{c} {quoted(u['before'][c])} → {quoted(u['after'][c])}"
                                                      for c in u["changed"])
                 for u in updates]
        sections.append("Sample updates:\n" + "\n".join(lines))
    for kind, title in (("delete", "Sample deletes"), ("insert", "Sample inserts")):
        rows = plan.samples.get(kind, [])
        if rows:
            sections.append(f"{title}: " + ", ".join(quoted(r.get(key)) for r in rows))
    return sections


def plan_summary(plan: LoadPlan, reason: str | None) -> dict[str, Any]:
    """The run's XCom: counts, the checksum the load checks, whether a person must approve."""
    return {**plan.to_dict(), "needs_approval": reason is not None, "approval_reason": reason}
