"""Issue 17's one table: what the reliability tests proved in this pytest session, printed at the
end of the run (after the crash matrix's and the storms' own tables).

It adds up what the harnesses record: ``crash_helpers.RESULTS`` (one row per killed crash point:
the sync's tasks, the quarantine replay, the Tryton load, the inline saga) and ``storm_helpers.RESULTS`` (one row
per fault storm or concurrency case), and the hostile inputs that tests report through pytest's
``record_property("hostile_inputs", (kind, count))``: the CRM text (``test_hostile_crm_data.py``,
here), the webhook fuzz (``tests/unit/webhooks/test_webhook_fuzz.py``) and the hostile specs
(``tests/unit/specs/test_hostile_specs.py``). What did not run in this session (only
``tests/reliability`` was selected, say) is listed as not run, not counted as proved.

Registered by ``tests/reliability/conftest.py`` while the tests are collected (a ``pytest_plugins``
line there would break a run of the whole ``tests`` folder: pytest refuses it in a conftest below
the top one), so it sees the reports of every test of the session, not only those under this folder.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from typing import Any

import pytest

NAME = "conduit_reliability_summary"
HOSTILE_KINDS = ("CRM values", "webhook requests", "specs")  # listed even when they did not run

_hostile: dict[str, dict[str, int]] = defaultdict(lambda: {"inputs": 0, "cases": 0, "failed": 0})


def register(config: pytest.Config) -> None:
    """Register this module as a plugin once per session."""
    module = sys.modules[__name__]
    if not config.pluginmanager.is_registered(module):
        config.pluginmanager.register(module, NAME)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when != "call" and not (report.when == "setup" and report.failed):
        return
    for name, value in report.user_properties:
        if name == "hostile_inputs":
            kind, count = value
            row = _hostile[kind]
            row["inputs"] += int(count)
            row["cases"] += 1
            row["failed"] += int(report.failed)


def _results(module: str) -> list[dict[str, Any]] | None:
    """A harness's recorded rows, or None when no test of this session imported it."""
    harness = sys.modules.get(module)
    return None if harness is None else list(harness.RESULTS)


def rows() -> list[tuple]:
    """(what, group, cases, held, rows lost, rows duplicated); None counts: not run here."""
    table: list[tuple] = []
    crashes = [r for r in _results("crash_helpers") or [] if r["mechanism"] == "on"]
    groups = {"sync tasks (PostgreSQL)": lambda r: r["target"] == "postgres" and not r["point"].startswith("replay."),
              "quarantine replay": lambda r: r["point"].startswith("replay."),
              "Tryton load (parties, ledger)": lambda r: r["target"] == "tryton",
              "inline saga (service effects)": lambda r: r["target"] == "saga"}
    for group, belongs in groups.items():
        mine = [r for r in crashes if belongs(r)]
        points = {r["point"].split(" ")[0] for r in mine}  # "saga.action_done (payment)": one point, one step
        held = sum(r["exit"] == -9 and r["equal"] and not r.get("error") for r in mine)
        table.append(("crash points", f"{group}: {len(points)} point{'s' * (len(points) != 1)}" if mine else group,
                      len(mine) if mine else None, held,
                      sum(r["lost"] for r in mine), sum(r["duplicated"] for r in mine)))
    storms = _results("storm_helpers") or []
    for module in ("fault storms", "concurrency"):
        mine = [r for r in storms if r["module"] == module]
        held = sum(r["outcome"] != "FAILED" and r["exact"] for r in mine)
        table.append(("storms survived" if module == "fault storms" else "concurrent runs", module,
                      len(mine) if mine else None, held, sum(r["lost"] for r in mine),
                      sum(r["duplicated"] for r in mine)))
    for kind in dict.fromkeys([*HOSTILE_KINDS, *_hostile]):
        found = _hostile.get(kind)
        if found is None:
            table.append(("hostile inputs", kind, None, None, None, None))
        else:
            table.append(("hostile inputs", f"{kind}: {found['inputs']} inputs", found["cases"],
                          found["cases"] - found["failed"], None, None))
    return table


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter) -> None:
    table = rows()
    if all(cases is None for _, _, cases, *_ in table):
        return
    write = terminalreporter.write_line
    terminalreporter.section("reliability summary (issue 17)")
    write(f"{'what':16} {'group':42} {'cases':>5} {'held':>5} {'rows lost':>9} {'rows dup':>8}")

    def cell(value, width: int) -> str:
        return f"{'-' if value is None else value:>{width}}"

    for what, group, cases, held, lost, dup in table:
        if cases is None:
            write(f"{what:16} {group:42} {'not run in this session':>31}")
            continue
        write(f"{what:16} {group:42} {cases:>5} {held:>5} {cell(lost, 9)} {cell(dup, 8)}")
    ran = [row for row in table if row[2] is not None]
    measured = [row for row in ran if row[4] is not None]  # rows counted by a comparison with a clean run
    lost = sum(row[4] for row in measured)
    dup = sum(row[5] for row in measured)
    not_run = [row[1] for row in table if row[2] is None]
    points = sum(int(row[1].rsplit(": ", 1)[1].split()[0]) for row in ran if row[0] == "crash points")
    inputs = sum(int(row[1].rsplit(": ", 1)[1].split()[0]) for row in ran if row[0] == "hostile inputs")
    storms = sum(row[3] for row in ran if row[0] == "storms survived")
    failed = sum(row[2] - row[3] for row in ran)
    write(f"crash points covered: {points}, storms survived: {storms}, hostile inputs tried: {inputs}; "
          f"rows lost: {lost}, rows duplicated: {dup} (counted in {sum(row[2] for row in measured)} crash, storm "
          f"and concurrency cases compared with a clean run); cases that did not hold: {failed}")
    if not_run:
        write(f"not run in this session, so not counted: {', '.join(not_run)}")
