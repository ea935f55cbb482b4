"""A deletion is two writes in two systems: the party deactivated (soft) or deleted (hard) in
Tryton, then the sink ledger. A task process killed with SIGKILL between them (crash point
``tryton.batch_deleted``) leaves Tryton right and the ledger saying "active"; whatever runs next
(the retry of the same load, a full refresh, the record coming back, a delete_mode switch) must
leave Tryton and the ledger exactly as after a clean deletion. Real trytond (SQLite)."""

from __future__ import annotations

import os
import signal
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from test_tryton_target_reactivation import party_rows

from conduit.crash import ARM, ONCE
from conduit.hooks.tryton import TrytonHook
from conduit.specs.model import load_spec, parse_spec
from conduit.targets import ledger
from conduit.targets.sql import SqliteErpTarget
from conduit.targets.tryton import PARTY, PARTY_FIELDS, TrytonTarget, party_row

SPEC_FILE = Path(__file__).resolve().parents[3] / "include" / "syncs" / "crm_to_tryton_customer_sync.yaml"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
BACK = T0 + timedelta(days=2)
POINT = "tryton.batch_deleted"


def spec_with(name: str, delete_mode: str):
    data = load_spec(SPEC_FILE).model_dump(by_alias=True, exclude_none=True)
    data["name"] = name
    data["target"]["delete_mode"] = delete_mode
    return parse_spec(data, "test.yaml")


@pytest.fixture
def name() -> str:
    return f"t_{uuid.uuid4().hex[:8]}"


def target_at(state: Path) -> TrytonTarget:
    """A target made anew (a fresh hook and store: no connection crosses a fork)."""
    return TrytonTarget(TrytonHook(tryton_conn_id="tryton_test"), SqliteErpTarget(state))


def killed(point: str, marker: Path, load, *args) -> int:
    """``load(*args)`` in a forked task process armed at ``point``; its exit code."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.environ.update({ARM: point, ONCE: str(marker)})
            load(*args)
            code = 0
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def outcome(hook: TrytonHook, state: Path, spec, code: str) -> dict[str, Any]:
    """What is compared (without the code itself): how many parties hold the code, the party's
    mapped fields and active flag, the ledger's version, flag and whether it dates a deletion, the
    open quarantine's rules."""
    target = target_at(state)
    parties = hook.search(PARTY, [["code", "=", code]], PARTY_FIELDS, context={"active_test": False})
    entry = ledger.read(target.state, spec.target.state_schema, spec.name, [code]).get(code)
    return {"parties": len(parties),
            "row": {k: v for k, v in party_row(parties[0], spec).items() if k != spec.target.key}
            if parties else None,
            "active": bool(parties[0]["active"]) if parties else None,
            "ledger": (entry.source_modified_at, entry.active, entry.deleted_at is not None) if entry else None,
            "quarantine": sorted(e["expectation"] for e in target.open_quarantine(spec))}


def loaded(spec, state: Path, code: str, other: str) -> None:
    """``code`` and ``other`` loaded in their version T0."""
    target = target_at(state)
    target.ensure_ready(spec)
    target.load(spec, [party_rows(code, T0, "Old Name"), party_rows(other, T0, "Other")], run_id="r1")


def delete(spec, state: Path, code: str) -> None:
    """The load of ``code`` archived in the CRM."""
    assert target_at(state).load(spec, [], run_id="r2", deleted_keys=[code]).deleted == 1


def reactivate(spec, state: Path, back) -> None:
    target_at(state).load(spec, back, run_id="r3")


# what runs after the deletion: (delete_mode it runs with, the load)
NEXT = {
    "the retry": ("same", lambda spec, t, code, other: t.load(spec, [], run_id="r2", deleted_keys=[code])),
    "a full refresh": ("same", lambda spec, t, code, other: t.load(
        spec, [party_rows(other, T0, "Other")], run_id="r3", full_refresh=True)),
    "a hard full refresh": ("hard", lambda spec, t, code, other: t.load(
        spec, [party_rows(other, T0, "Other")], run_id="r3", full_refresh=True)),
    "a hard delete": ("hard", lambda spec, t, code, other: t.load(spec, [], run_id="r3", deleted_keys=[code])),
    "back in its old version": ("same", lambda spec, t, code, other: t.load(
        spec, [party_rows(code, T0, "Old Name")], run_id="r3")),
    "back with new data": ("same", lambda spec, t, code, other: t.load(
        spec, [party_rows(code, BACK, "New Name")], run_id="r3")),
}
CASES = [("soft", n) for n in NEXT] + [("hard", n) for n in ("the retry", "a full refresh", "back with new data")]


@pytest.mark.parametrize(("mode", "then"), CASES)
def test_a_kill_between_a_deletion_and_its_ledger_then_the_next_load_equals_one_clean_run(
        name, tryton_hook, tmp_path, mode, then):
    """soft: the party deactivated, the ledger still "active". Before, the retry and a soft full
    refresh passed over a party Tryton holds inactive and a record back in the version it was
    deleted in was stale (nothing written): the ledger kept "active", with no deletion date
    (``fetch_rows``: an inactive party never deleted), until newer data re-activated the party;
    a re-activation killed half way meanwhile could not be told from an active party (the test
    below). hard: the party gone, the ledger still holding the key; before, nothing removed it."""
    spec = spec_with(name, mode)
    next_mode, next_load = NEXT[then]
    next_spec = spec if next_mode == "same" else spec_with(name, next_mode)
    prefix = uuid.uuid4().hex[:6]
    results, outcomes = {}, {}
    for run in ("clean", "killed"):
        code, other, state = f"{prefix}-{run}", f"{prefix}-{run}-other", tmp_path / f"{run}.sqlite"
        loaded(spec, state, code, other)
        if run == "clean":
            delete(spec, state, code)
        else:
            assert killed(POINT, tmp_path / "fired", delete, spec, state, code) == -signal.SIGKILL, \
                f"not killed at {POINT}"
            left = outcome(tryton_hook, state, spec, code)
            # what the kill left: Tryton right, the ledger still saying active
            assert (left["parties"], left["active"], left["ledger"]) == (
                (1, False, (T0, True, False)) if mode == "soft" else (0, None, (T0, True, False)))
        results[run] = next_load(next_spec, target_at(state), code, other)
        outcomes[run] = outcome(tryton_hook, state, next_spec, code)

    assert outcomes["killed"] == outcomes["clean"], (mode, then)
    if then != "the retry":  # the retry counts no deletion: the killed try made it
        assert results["killed"] == results["clean"], (mode, then)


@pytest.mark.parametrize(("case", "email"), [("accepted", "new@example.com"), ("refused", "not-an-email")])
def test_a_kill_between_a_deactivation_and_its_ledger_then_a_reactivation_killed_half_way(
        name, tryton_hook, tmp_path, case, email):
    """The killed deactivation is not retried (the run failed); the record comes back with new
    data and that load is killed between the re-activation's two writes (``tryton.reactivated``),
    then retried. refused: Tryton refuses the new values; a clean run leaves the party deactivated
    with its old values and quarantines the record. Before, the ledger still said "active", so the
    retry took the half re-activated party for an active one, wrote the values, and when Tryton
    refused them left a deleted customer active in the ERP with data nobody sent."""
    spec = spec_with(name, "soft")
    prefix = uuid.uuid4().hex[:6]
    results, outcomes = {}, {}
    for run in ("clean", "killed"):
        code, other, state = f"{prefix}-{run}", f"{prefix}-{run}-other", tmp_path / f"{run}.sqlite"
        back = [party_rows(code, BACK, "New Name", email)]
        loaded(spec, state, code, other)
        if run == "clean":
            delete(spec, state, code)
        else:
            assert killed(POINT, tmp_path / "fired", delete, spec, state, code) == -signal.SIGKILL
            assert killed("tryton.reactivated", tmp_path / "fired-again", reactivate, spec, state, back) \
                == -signal.SIGKILL
            left = outcome(tryton_hook, state, spec, code)
            assert (left["active"], left["row"]["full_name"]) == (True, "Old Name")
        results[run] = target_at(state).load(spec, back, run_id="r3")  # the retry, past the fired point
        outcomes[run] = outcome(tryton_hook, state, spec, code)

    assert outcomes["killed"] == outcomes["clean"], case
    assert results["killed"] == results["clean"], case
