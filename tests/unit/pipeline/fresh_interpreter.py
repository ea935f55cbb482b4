"""Run a step in a fresh interpreter, so that ``sys.modules`` shows what the step itself imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
FLAGSHIP = {"spec": str(REPO / "include/syncs/crm_to_erp_customer_sync.yaml"),
            "suite": str(REPO / "include/expectations/erp_customers.yaml")}


def run_script(script: str, tmp_path: Path) -> dict:
    """``script`` (its last line of output: JSON) with Airflow, staging and Data Docs under ``tmp_path``."""
    env = {"PATH": "/usr/bin:/bin", "AIRFLOW_HOME": str(tmp_path / "airflow"),
           "CONDUIT_STAGING_DIR": str(tmp_path / "staging"), "CONDUIT_DATA_DOCS_DIR": str(tmp_path / "docs"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])
