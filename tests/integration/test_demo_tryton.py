"""``conduit-demo --target tryton`` (what ``bash scripts/demo.sh --target tryton`` runs), for real.

The demo runs as its own process, as a user runs it: it starts a real Tryton (SQLite, in its home),
the stand-in CRM, and the DAG ``crm_to_tryton_customer_sync``, then prints its report. The test
then serves the demo's Tryton database again, reads every party back over Tryton's REST API and
checks it against a second stand-in of the same seed (what the demo's stand-in served) and the
sync's state database, and the report's numbers against both. A second demo run reuses Tryton's
database and the state, as the demo reuses its other files: incremental, nothing written.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import requests

from conduit.standin.testing import run_standin

REPO = Path(__file__).resolve().parents[2]
DAG_ID = "crm_to_tryton_customer_sync"
CONTACTS, SEED, BAD_EMAILS = 400, 5, 4
COUNTS = ("extracted", "inserted", "updated", "unchanged", "deleted", "rejected", "defects")


def run_demo(home: Path) -> tuple[str, dict[str, int]]:
    proc = subprocess.run(
        [sys.executable, "-m", "conduit.demo", "--target", "tryton", "--home", str(home), "--contacts",
         str(CONTACTS), "--seed", str(SEED), "--bad-emails", str(BAD_EMAILS)],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
    out = proc.stdout
    assert f"Conduit demo: {DAG_ID} success in" in out, out
    counts = {name: int(value) for name, value in re.findall(rf"^  ({'|'.join(COUNTS)})\s+(\d+)", out, re.M)}
    assert set(counts) == set(COUNTS), out
    return out, counts


def served_contacts() -> set[str]:
    """The live contact ids a stand-in seeded as the demo's serves, over its HubSpot API."""
    with run_standin(seed=SEED, contacts=CONTACTS, bad_emails=BAD_EMAILS) as crm:
        ids: set[str] = set()
        params = {"limit": 100, "archived": "false"}
        while True:
            page = requests.get(f"{crm.base_url}/crm/v3/objects/contacts", params=params, timeout=30,
                                headers={"Authorization": f"Bearer {crm.token}"}).json()
            ids |= {r["id"] for r in page["results"]}
            after = page.get("paging", {}).get("next", {}).get("after")
            if not after:
                return ids
            params["after"] = after


def read_tryton(home: Path, monkeypatch) -> tuple[dict[str, dict], str]:
    """Every party of the demo's Tryton (active or not), by code, read over REST from the demo's
    database served again (as the demo serves it); and the database's name."""
    from conduit.demo import demo_tryton
    from conduit.hooks.tryton import TrytonHook
    from conduit.targets.tryton import PARTY_FIELDS

    with demo_tryton(home) as tryton:
        for name, value in tryton.connection_env("tryton_demo_check").items():
            monkeypatch.setenv(name, value)
        parties = list(TrytonHook(tryton_conn_id="tryton_demo_check").iter_search(
            "party.party", [], [*PARTY_FIELDS, "write_date"], context={"active_test": False}))
        database = tryton.database
    by_code = {p["code"]: p for p in parties}
    assert len(by_code) == len(parties), "a code twice"
    return by_code, database


def sample_table(out: str) -> list[dict[str, str]]:
    """The parties the report read back, by its header's columns."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"^    code +name +email +phone +country$", line))
    header = lines[start]
    edges = [m.start() for m in re.finditer(r"\S+", header)] + [None]
    names = header.split()
    rows = []
    for line in lines[start + 1:]:
        if not line.startswith("    HS-C-"):
            break
        rows.append({n: line[a:b].strip() for n, a, b in zip(names, edges, edges[1:], strict=False)})
    return rows


def state_count(home: Path, what: str, table: str) -> int:
    """``SELECT what FROM table`` for the demo's sync, in its state database."""
    with sqlite3.connect(home / "conduit_state.sqlite") as conn:
        return conn.execute(f"SELECT {what} FROM {table} WHERE sync_name = ?", [DAG_ID]).fetchone()[0]


def test_demo_target_tryton_loads_every_served_contact_and_reports_it(tmp_path, monkeypatch):
    from conduit.specs.model import load_spec
    from conduit.targets.tryton import party_row

    home = tmp_path / "demo"
    out, counts = run_demo(home)
    assert "(full extract)" in out
    assert "run it again" in out
    # Tryton's REST key is in a file only its owner reads, not in the report a user may paste somewhere
    key_file = home / "tryton" / "api-key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert len(key_file.read_text()) >= 16 and key_file.read_text() not in out
    assert f"$(cat '{key_file}')" in out

    served = served_contacts()
    assert len(served) == CONTACTS
    quarantined = state_count(home, "count(DISTINCT record_key)", "conduit_quarantine")
    parties, database = read_tryton(home, monkeypatch)
    # every contact the stand-in serves is a party, but the quarantined ones; all active
    assert len(parties) == len(served) - quarantined
    assert set(parties) <= {f"HS-C-{i}" for i in served}
    assert all(p["active"] for p in parties.values())

    # the report says what Tryton and the state hold
    assert counts == {"extracted": len(served), "inserted": len(parties), "updated": 0, "unchanged": 0,
                      "deleted": 0, "rejected": quarantined, "defects": state_count(home, "count(*)", "conduit_defects")}
    assert counts["defects"] >= BAD_EMAILS  # the invalid emails: loaded empty, listed as defects
    reconcile = re.search(r"^  reconcile  (\d+) loaded rows read back, (\d+) differ; (\d+) active parties "
                          r"for (\d+) CRM contacts \((\d+) quarantined, (\d+) missing\)", out, re.M)
    assert reconcile, out
    assert [int(n) for n in reconcile.groups()] == [len(parties), 0, len(parties), len(served), quarantined, 0]
    assert re.search(rf"^Tryton \S+ at http://127\.0\.0\.1:\d+, database '{database}' ", out, re.M), out
    assert re.search(rf"^  parties    {len(parties)} active HS-C-\* parties in Tryton", out, re.M), out
    spec = load_spec(REPO / "include" / "syncs" / f"{DAG_ID}.yaml")
    first = [party_row(p, spec) for p in sorted(parties.values(), key=lambda p: p["id"])[:5]]
    assert sample_table(out) == [{"code": r["customer_number"], "name": r["full_name"], "email": r["email"] or "-",
                                  "phone": r["phone"] or "-", "country": r["country_code"] or "-"} for r in first]

    # run it again: the same Tryton database and state, an incremental run that writes nothing
    out, counts = run_demo(home)
    assert "(incremental extract)" in out
    assert "run it again" not in out
    assert (counts["inserted"], counts["updated"], counts["deleted"], counts["rejected"]) == (0, 0, 0, 0)
    again, _ = read_tryton(home, monkeypatch)
    assert {c: p["write_date"] for c, p in again.items()} == {c: p["write_date"] for c, p in parties.items()}
