"""A soft-deleted party that comes back with changed data is re-activated in two writes (Tryton
keeps a deactivated party's fields read-only): ``active`` first, then the values. A task process
killed with SIGKILL between the two (crash point ``tryton.reactivated``) leaves the party active
with its old values while the ledger still says deactivated; the retry of the same load must leave
Tryton, the ledger and the quarantine exactly as one clean load does. Real trytond (SQLite)."""

from __future__ import annotations

import os
import signal
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
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
POINT = "tryton.reactivated"


@pytest.fixture
def spec():
    data = load_spec(SPEC_FILE).model_dump(by_alias=True, exclude_none=True)
    data["name"] = f"t_{uuid.uuid4().hex[:8]}"
    data["target"]["delete_mode"] = "soft"
    return parse_spec(data, "test.yaml")


version = party_rows  # one mapped row of a code, modified at a time, with its row hash


def target_at(state: Path) -> TrytonTarget:
    """A target made anew (a fresh hook and store: no connection crosses a fork)."""
    return TrytonTarget(TrytonHook(tryton_conn_id="tryton_test"), SqliteErpTarget(state))


def deactivated(spec, state: Path, code: str) -> None:
    """``code`` loaded (version T0), then archived in the CRM: deactivated in Tryton."""
    target = target_at(state)
    target.ensure_ready(spec)
    target.load(spec, [version(code, T0, "Old Name")], run_id="r1")
    assert target.load(spec, [], run_id="r2", deleted_keys=[code]).deleted == 1


def killed_load(spec, state: Path, batches: list[pd.DataFrame], marker: Path) -> int:
    """The load in a forked task process armed at :data:`POINT`; its exit code."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.environ.update({ARM: POINT, ONCE: str(marker)})
            target_at(state).load(spec, batches, run_id="r3")
            code = 0
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def outcome(hook: TrytonHook, target: TrytonTarget, spec, code: str) -> dict[str, Any]:
    """What is compared (without the code itself): the party's mapped fields and active flag, how
    many parties hold the code, the ledger's version and flag, the open quarantine's rules."""
    parties = hook.search(PARTY, [["code", "=", code]], PARTY_FIELDS, context={"active_test": False})
    entry = ledger.read(target.state, spec.target.state_schema, spec.name, [code]).get(code)
    return {"parties": len(parties),
            "row": {k: v for k, v in party_row(parties[0], spec).items() if k != spec.target.key},
            "active": bool(parties[0]["active"]),
            "ledger": (entry.source_modified_at, entry.active) if entry else None,
            "quarantine": sorted(e["expectation"] for e in target.open_quarantine(spec))}


@pytest.mark.parametrize(("case", "email"), [("accepted", "new@example.com"), ("refused", "not-an-email")])
def test_a_kill_between_the_two_reactivation_writes_then_the_retry_equals_one_clean_load(
        spec, tryton_hook, tmp_path, case, email):
    """accepted: the retry writes the new values (the party is active, the ledger catches up).
    refused: Tryton refuses the new values; a clean load leaves the party deactivated with its
    old values and quarantines the record. Before, the retry found the party active (the killed
    try's first write), wrote the values as to an active party and, refused, left it active with
    the old values: a deleted customer back in the ERP with data nobody sent."""
    prefix = uuid.uuid4().hex[:6]
    clean_code, killed_code = f"{prefix}-clean", f"{prefix}-killed"
    clean_state, killed_state = tmp_path / "clean.sqlite", tmp_path / "killed.sqlite"
    back = T0 + timedelta(days=2)

    deactivated(spec, clean_state, clean_code)
    clean_target = target_at(clean_state)
    clean_result = clean_target.load(spec, [version(clean_code, back, "New Name", email)], run_id="r3")
    clean = outcome(tryton_hook, clean_target, spec, clean_code)

    deactivated(spec, killed_state, killed_code)
    batches = [version(killed_code, back, "New Name", email)]
    assert killed_load(spec, killed_state, batches, tmp_path / "fired") == -signal.SIGKILL, f"not killed at {POINT}"
    killed = outcome(tryton_hook, target_at(killed_state), spec, killed_code)
    # what the kill left: the first write only (active, old values); the ledger still says deactivated
    assert (killed["active"], killed["row"]["full_name"], killed["ledger"]) == (True, "Old Name", (T0, False))

    retry_target = target_at(killed_state)
    retry_result = retry_target.load(spec, batches, run_id="r3")  # the retry, past the fired point

    assert outcome(tryton_hook, retry_target, spec, killed_code) == clean, case
    assert retry_result == clean_result, case
    # and a further load of the same rows has nothing left to do, as after the clean load
    assert retry_target.load(spec, batches, run_id="r3") == clean_target.load(
        spec, [version(clean_code, back, "New Name", email)], run_id="r3"), case


def test_a_party_the_ledger_deactivated_is_deactivated_by_a_full_refresh_that_does_not_bring_it(
        spec, tryton_hook, tmp_path):
    """The killed re-activation left the party active; the CRM record is gone again before the
    next run, a full refresh: the party must end deactivated (as the SQL target deactivates every
    active row the refresh does not bring), not stay active because the ledger said deactivated."""
    prefix = uuid.uuid4().hex[:6]
    code, other = f"{prefix}-killed", f"{prefix}-other"
    state = tmp_path / "state.sqlite"
    deactivated(spec, state, code)
    target = target_at(state)
    target.load(spec, [version(other, T0, "Other")], run_id="r2b")
    assert killed_load(spec, state, [version(code, T0 + timedelta(days=2), "New Name")],
                       tmp_path / "fired") == -signal.SIGKILL

    result = target.load(spec, [version(other, T0, "Other")], run_id="r4", full_refresh=True)

    assert result.deleted == 1
    after = outcome(tryton_hook, target, spec, code)
    assert (after["active"], after["ledger"]) == (False, (T0, False))
