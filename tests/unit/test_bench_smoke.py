"""The benchmark harness runs end to end at a tiny size and verifies what it loaded.

Not a timed test: it checks that bench/run.py starts the stand-in, runs each contender as its own
process into its own schema, verifies the tables (row counts, Conduit's key checksum against the
mapped CRM data, the property checksum for pandas) and the 1%-changed incremental run, and writes
its JSON. dlt joins only when bench/.venv-dlt exists (bench/run.sh creates it; it is not in the lock).
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_harness_runs_and_verifies(pg_server_dsn: str, tmp_path: Path) -> None:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    dsn = make_conninfo("", **conninfo_to_dict(pg_server_dsn))
    contenders = ["conduit", "pandas"] + (["dlt"] if (REPO / "bench/.venv-dlt/bin/python").exists() else [])
    prefix = f"t_bench_{uuid.uuid4().hex[:8]}"
    results = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench/run.py"), "--sizes", "300", "--only", ",".join(contenders),
         "--dsn", dsn, "--results-dir", str(results), "--schema-prefix", prefix],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    [path] = results.glob("bench-*.json")
    rows = json.loads(path.read_text())["rows"]
    full = {r["contender"]: r for r in rows if r["mode"] == "full"}
    assert set(full) == set(contenders)
    for row in rows:
        assert row["verified"], row
        assert row["wall_s"] > 0 and row["peak_rss_mib"] > 0
    [incremental] = [r for r in rows if r["mode"].startswith("incremental")]
    assert incremental["rows"] == 3  # 1% of 300, and exactly those were updated (verified above)
    assert incremental["summary"]["load"]["updated"] == 3
    assert "targets:" in proc.stdout

    import psycopg

    with psycopg.connect(pg_server_dsn) as conn:  # the harness drops its schemas
        left = conn.execute("SELECT count(*) FROM information_schema.schemata WHERE schema_name LIKE %s",
                            [prefix + "%"]).fetchone()[0]
    assert left == 0
