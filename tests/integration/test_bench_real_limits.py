"""``bench/real_limits.py`` (``bash bench/run.sh --real-limits``): the benchmark against the stand-in
with HubSpot's limits enforced and a latency on every reply. Not a timed test: at a tiny size and
shrunk limits it checks that the harness counts at the stand-in, verifies the data and reports the
share of the budget-bound ideal; and that the stand-in's latency does not serialise requests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from conduit.standin.testing import run_standin

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

from real_limits import Budget  # noqa: E402


def test_budget_bound_rate_is_computed_from_the_limits() -> None:
    professional = Budget(interval_max=190, interval_ms=10_000, daily_max=650_000, search_per_second=5,
                          search_page=200, list_page=100)
    assert professional.rate() == 5 * 200 + 14 * 100 == 2_400
    starter = Budget(interval_max=100, interval_ms=10_000, daily_max=250_000, search_per_second=5,
                     search_page=200, list_page=100)
    assert starter.rate() == 5 * 200 + 5 * 100
    # a budget smaller than the search cap: every request a search
    assert Budget(interval_max=3, interval_ms=1_000, daily_max=1, search_per_second=5,
                  search_page=200, list_page=100).rate() == 600


def test_latency_delays_each_reply_without_serialising_them() -> None:
    """HubSpot answers concurrent requests concurrently: 8 requests of 300 ms take ~0.3 s, not 2.4 s."""
    with run_standin(contacts=100, slow_ms=300) as crm:
        url = f"{crm.base_url}/crm/v3/objects/contacts"

        def call(_: int) -> float:
            started = time.monotonic()
            requests.get(url, params={"limit": 10}, headers=crm.auth_headers, timeout=30).raise_for_status()
            return time.monotonic() - started

        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            each = list(pool.map(call, range(8)))
        together = time.monotonic() - started
    assert min(each) >= 0.3
    assert together < 1.2, f"8 concurrent requests of 300 ms took {together:.2f} s: the stand-in serialises them"


def test_real_limits_harness_counts_at_the_standin_and_verifies(tmp_path: Path, pg_server_dsn: str) -> None:
    results = tmp_path / "results"
    # 2,000 contacts; 40 requests per 2 s and 5 searches/s, 20 ms per reply: the search cap binds,
    # so Conduit's sequential searches meet 429s now and then. The script path (not the DAG: seconds).
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench/real_limits.py"), "--sizes", "2000", "--only", "conduit",
         "--conduit-via", "script", "--interval-max", "40", "--interval-ms", "2000", "--latency-ms", "20",
         "--conn-extra", '{"max_retries": 8}', "--dsn", pg_server_dsn, "--results-dir", str(results),
         "--schema-prefix", f"bench_rl_t{os.getpid()}"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    [path] = results.glob("real-limits-2*.json")
    report = json.loads(path.read_text())
    assert report["budget_bound_rate"] == 5 * 200 + 15 * 100  # 20 requests/s: 5 searches + 15 list calls
    assert report["conn_extra"] == {"max_retries": 8}
    [row] = report["rows"]
    assert row["contender"] == "conduit" and row["via"] == "script" and row["n"] == 2000
    assert row["verified"] and not row["failed"] and row["exit_code"] == 0
    assert row["verify_detail"].startswith("rows 2000/2000")
    # counted by the stand-in: the extract's own requests, plus the plan's two edge searches
    assert row["requests"] >= row["summary"]["extract"]["requests"] + 2
    assert row["by_endpoint"]["contacts.search"] >= 2000 // 200
    assert row["http_429"] == row["errors_by_status"].get("429", 0) <= row["requests"]
    assert 0 < row["startup_s"] < row["wall_s"] and row["crm_phase_s"] >= 0
    assert row["ideal_s"] == round(2000 / report["budget_bound_rate"], 2)
    assert row["share_of_ideal"] == row["ideal_s"] / row["wall_s"]
    assert row["target_s"] == round(1.2 * row["ideal_s"] + row["startup_s"], 2)
    assert "of ideal" in proc.stdout and "conduit   script" in proc.stdout
