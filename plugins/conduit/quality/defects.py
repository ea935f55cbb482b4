"""Defects: a value of one field that is wrong while the record itself is fine (a phone number that
does not parse, an unknown country, text that held a NUL or was not Unicode). The record loads; the defect is kept in the ERP's defects
table until a run reads a clean value for that record and column.

Pure bookkeeping over plain data: which defects a gate found (:func:`found_defects`), and what
that changes in the table (:func:`plan_defects`). The SQL lives in ``conduit.targets.defects``.

A defect is identified by its *slot*: (record key, column, rule). Per slot at most one defect is
open. Against the open ones, a run's findings mean:

* the same raw value again: seen again (``last_seen_at``, ``last_run_id`` move on);
* another raw value: the old defect is resolved (its value is gone) and a new one opens;
* no finding for a slot of a record the run read and loads: resolved (the value is clean now);
* records the run did not read, or kept out (quarantined): their defects stay as they are.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from conduit.specs.model import SyncSpec

Slot = tuple[str, str, str]


@dataclass(frozen=True)
class Defect:
    """One defect a run found."""

    record_key: str
    crm_id: str | None
    column_name: str
    rule: str
    raw_value: str | None
    reason: str

    @property
    def slot(self) -> Slot:
        return (self.record_key, self.column_name, self.rule)


@dataclass(frozen=True)
class OpenDefect:
    """An open defect as the table holds it."""

    id: int
    record_key: str
    column_name: str
    rule: str
    raw_value: str | None

    @property
    def slot(self) -> Slot:
        return (self.record_key, self.column_name, self.rule)


@dataclass(frozen=True)
class DefectChanges:
    """What one run changes: defects to open, open ones seen again, open ones resolved (ids)."""

    opened: list[Defect] = field(default_factory=list)
    seen_again: list[int] = field(default_factory=list)
    resolved: list[int] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {"defects_opened": len(self.opened), "defects_seen_again": len(self.seen_again),
                "defects_resolved": len(self.resolved)}


def plan_defects(open_defects: Iterable[OpenDefect], found: Iterable[Defect],
                 clean_keys: Iterable[str]) -> DefectChanges:
    """The changes a run's ``found`` defects make to the ``open_defects``. ``clean_keys`` are
    record keys of open defects that this run read and loads (not quarantined): their slots
    without a finding this run are resolved."""
    latest = {d.slot: d for d in found}  # one finding per slot (the last, should a key repeat)
    clean = set(clean_keys)
    changes = DefectChanges()
    matched: set[Slot] = set()
    for entry in open_defects:
        again = latest.get(entry.slot)
        if again is not None and again.raw_value == entry.raw_value:
            changes.seen_again.append(entry.id)
            matched.add(entry.slot)
        elif again is not None or entry.record_key in clean:
            changes.resolved.append(entry.id)  # fixed, or replaced by another bad value
    changes.opened.extend(d for slot, d in latest.items() if slot not in matched)
    return changes


def found_defects(defects: pd.DataFrame) -> list[Defect]:
    """:class:`Defect` s of a gate decision's ``defects`` frame; rows without a key (which cannot
    be tracked, and which the key's own expectations keep out) are skipped."""
    return [
        Defect(str(key), _text(crm_id), column, rule, _text(value), reason)
        for key, crm_id, column, rule, value, reason in defects[
            ["key", "crm_id", "column", "rule", "value", "reason"]].itertuples(index=False)
        if not _missing(key)
    ]


def field_checks(spec: SyncSpec) -> dict[str, tuple[str, str, str]]:
    """``{column: (transform, on_invalid, invalid column)}`` (for ``Suite.with_field_checks``), in
    spec order: the columns whose transform nulls or rejects values it cannot normalise, and every
    other column made from CRM text, whose damaged text (a NUL removed, a U+FFFD, see
    ``conduit.transforms.mapping``) is a defect of rule ``clean_text``."""
    from conduit.transforms.mapping import TEXT_RULE, checked_columns, invalid_column, judged_columns

    checked = checked_columns(spec)

    def check(column: str) -> tuple[str, str, str]:
        step = checked[column].invalid_check if column in checked else None
        rule, on_invalid = (step.type, step.on_invalid) if step is not None else (TEXT_RULE, "null")
        return rule, on_invalid, invalid_column(column)

    return {column: check(column) for column in judged_columns(spec)}


def _text(value: Any) -> str | None:
    return None if _missing(value) else str(value)


def _missing(value: Any) -> bool:
    import pandas as pd

    return value is None or bool(pd.isna(value))
