"""``bench/dag_run.py`` (``bash bench/run.sh --dag``) runs the flagship DAG with ``airflow dags test``
twice at a tiny size and reports every task from the metadata DB. Not a timed test: it checks the
harness measures what it says (the runs succeed, the second is the no-change one, every task of the
DAG has a duration, peak RSS is read)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_dag_bench_runs_full_and_no_change(tmp_path: Path) -> None:
    results = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench/dag_run.py"), "--contacts", "300", "--home", str(tmp_path / "home"),
         "--results-dir", str(results)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    [path] = results.glob("dag-2*.json")
    full, noop = json.loads(path.read_text())["runs"]
    for run in (full, noop):
        assert run["state"] == "success" and run["exit_code"] == 0
        assert run["wall_s"] > 0 and run["cli_peak_rss_mib"] > 100
        tasks = {t["task"].split("[")[0]: t for t in run["tasks"]}
        assert {"plan_extract", "extract", "transform", "quality_gate", "data_docs", "plan", "load",
                "reconcile"} <= set(tasks)
        assert all(t["duration_s"] is not None for t in run["tasks"])
    assert len([t for t in full["tasks"] if t["task"].startswith("extract[")]) == 5  # 4 id ranges + archived
    assert len([t for t in noop["tasks"] if t["task"].startswith("extract[")]) == 2  # changed + archived
    assert "noop-300" in proc.stdout and "sum of tasks" in proc.stdout
