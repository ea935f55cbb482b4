"""``bench/real_limits.py`` (``bash bench/run.sh --real-limits``): the benchmark against the stand-in
with HubSpot's limits enforced and a latency on every reply. Not a timed test: at a tiny size and
shrunk limits it checks that the harness counts at the stand-in, verifies the data and reports the
share of the budget-bound ideal; that the stand-in's latency does not serialise requests; the
``--no-limits`` mode; and that the deployment path's sampler gives each task process's memory to its
task instance. (``--conduit-via stack`` itself is not run here: a deployment takes 25-60 s to start
and the run ~30 s more at 2,000 contacts; bench/README.md has its numbers.)"""

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

from real_limits import TASK_TITLE, Budget, WorkerSampler, judged, versus_dlt  # noqa: E402


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


def test_no_limits_mode_reports_rates_and_no_ideal(tmp_path: Path, pg_server_dsn: str) -> None:
    """``--no-limits``: the contenders read the unlimited stand-in (no 429 possible, no latency); no
    ideal and no target, records/s instead."""
    results = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench/real_limits.py"), "--sizes", "2000", "--only", "conduit",
         "--conduit-via", "script", "--no-limits", "--dsn", pg_server_dsn, "--results-dir", str(results),
         "--schema-prefix", f"bench_rl_u{os.getpid()}"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    [path] = results.glob("real-limits-2*.json")
    report = json.loads(path.read_text())
    assert report["no_limits"] is True and report["budget"] is None and report["latency_ms"] == 0
    [row] = report["rows"]
    assert row["verified"] and not row["failed"] and row["verify_detail"].startswith("rows 2000/2000")
    assert row["http_429"] == 0 and row["requests"] > 0
    assert row["ideal_s"] is None and row["target_met"] is None and row["share_of_ideal"] is None
    assert row["records_per_s"] == round(2000 / row["wall_s"], 1)
    assert row["vs_dlt"] is None  # dlt did not run
    assert "no limits, no latency" in proc.stdout and "vs dlt" in proc.stdout


def test_ratio_to_dlt_is_per_size_and_failed_runs_get_none() -> None:
    rows = [{"contender": "conduit", "n": 10, "records_per_s": 500.0, "failed": False},
            {"contender": "dlt", "n": 10, "records_per_s": 100.0, "failed": False},
            {"contender": "conduit", "n": 20, "records_per_s": 0.0, "failed": True},
            {"contender": "dlt", "n": 20, "records_per_s": 50.0, "failed": False}]
    versus_dlt(rows)
    assert [r["vs_dlt"] for r in rows] == [5.0, 1.0, None, 1.0]
    unlimited = judged(1000, {"exit_code": 0, "verified": True, "wall_s": 4.0, "extract_s": 2.0}, None)
    assert unlimited["records_per_s"] == 250.0 and unlimited["ideal_s"] is None and not unlimited["failed"]


# A pool process forks a task process that retitles itself as Airflow's task runner does, allocates
# ~80 MiB of its own and waits; a third level (as OpenLineage's per-event forks) stays apart.
TREE = """
import os, sys, time
from setproctitle import setproctitle
if os.fork() == 0:  # the pool process
    if os.fork() == 0:  # the task process
        setproctitle(sys.argv[1])
        if os.fork() == 0:
            setproctitle(sys.argv[1] + " - OpenLineage - on_running")
            time.sleep(3)
            os._exit(0)
        ballast = b"x" * (80 * 2**20)  # after the fork: the task's own pages, not shared
        time.sleep(3)
        os._exit(0)
    os.wait()
    os._exit(0)
os.wait()
"""


def test_worker_sampler_gives_a_task_process_its_task_instance(tmp_path: Path) -> None:
    root = subprocess.Popen([sys.executable, "-c", TREE, f"{TASK_TITLE}ti-123"])
    sampler = WorkerSampler(root.pid, interval=0.1)
    sampler.start()
    root.wait(timeout=30)
    sampler.stop.set()
    sampler.join()
    found = sampler.by_task_instance()
    assert set(found) == {"ti-123"}, sampler.summary()
    assert found["ti-123"]["peak_uss_mib"] >= 80 and found["ti-123"]["vm_hwm_mib"] >= 80
    roles = sorted(p["role"] for p in sampler.procs.values())
    assert roles == ["descendant", "pool", "task"], sampler.summary()
