"""Every DAG imports cleanly, carries tags, an owner and retries, and parsing stays light."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def _parse_in_subprocess(dags: Path, include: Path, tmp_path: Path) -> dict:
    """Parse a DAG folder in a fresh interpreter, as the dag-processor does, and report what it saw."""
    script = textwrap.dedent(
        """
        import json, sys
        from airflow.dag_processing.dagbag import DagBag
        before = set(sys.modules)
        bag = DagBag(dag_folder=sys.argv[1])
        loaded = set(sys.modules) - before
        print(json.dumps({
            "errors": {k: str(v) for k, v in bag.import_errors.items()},
            "dags": {d.dag_id: {"tags": sorted(d.tags), "owner": d.owner,
                                "retries": (d.default_args or {}).get("retries", 0)} for d in bag.dags.values()},
            "heavy": sorted(m for m in loaded if m.split(".")[0] in ("pandas", "great_expectations", "pyarrow")),
            # what only a task's work needs: every task process parses the DAG file first
            "task_only": sorted(m for m in loaded if m in ("conduit.quality.engine", "conduit.quality.suite",
                                                           "airflow.providers.http.hooks.http")),
        }))
        """
    )
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "home"), "CONDUIT_INCLUDE_DIR": str(include)}
    out = subprocess.run([sys.executable, "-c", script, str(dags)], env=env, capture_output=True, text=True,
                         timeout=180, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def parsed(tmp_path_factory) -> dict:
    return _parse_in_subprocess(REPO / "dags", REPO / "include", tmp_path_factory.mktemp("parse"))


def test_no_import_errors(parsed):
    assert parsed["errors"] == {}
    assert "crm_to_erp_customer_sync" in parsed["dags"]


def test_every_spec_becomes_a_dag(parsed):
    names = {yaml.safe_load(p.read_text())["name"] for p in (REPO / "include" / "syncs").glob("*.yaml")}
    assert names <= set(parsed["dags"])


def test_tags_owner_retries(parsed):
    for dag_id, dag in parsed["dags"].items():
        assert dag["tags"], f"{dag_id} has no tags"
        assert dag["owner"] and dag["owner"] != "airflow", f"{dag_id} has no owner"
        assert dag["retries"] >= 2, f"{dag_id} retries {dag['retries']} < 2"


def test_parsing_imports_no_heavy_libraries(parsed):
    assert parsed["heavy"] == []
    assert parsed["task_only"] == []


def test_broken_spec_is_an_import_error_naming_file_and_field(tmp_path):
    include = tmp_path / "include"
    shutil.copytree(REPO / "include", include)
    spec_path = include / "syncs" / "crm_to_erp_customer_sync.yaml"
    spec = yaml.safe_load(spec_path.read_text())
    spec["mapping"]["phone"]["transforms"][0]["type"] = "phone_e165"
    spec_path.write_text(yaml.safe_dump(spec))

    result = _parse_in_subprocess(REPO / "dags", include, tmp_path)

    assert "crm_to_erp_customer_sync" not in result["dags"]
    message = next(m for f, m in result["errors"].items() if f.endswith("conduit_syncs.py"))
    assert str(spec_path) in message
    assert "mapping.phone.transforms[0]" in message
    assert "phone_e165" in message


def test_dag_schedule_and_params():
    from conduit.factory import build_sync_dag
    from conduit.specs.model import load_spec

    dag = build_sync_dag(load_spec(REPO / "include" / "syncs" / "crm_to_erp_customer_sync.yaml"))
    cron = dag.timetable.timetable  # cron OR the CRM-changes asset (webhook-driven runs)
    assert cron.expression == "0 2 * * *"
    assert str(cron.timezone) == "Europe/Berlin"
    (watcher,) = dag.timetable.asset_condition.watchers
    assert watcher.trigger.stream_key == "conduit:events:crm_to_erp_customer_sync"
    assert dag.catchup is False
    assert set(dag.params) >= {"full_refresh", "dry_run"}
    assert dag.doc_md and "customer_number" in dag.doc_md


def test_ruff_airflow_rules_pass():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff, "ruff is a dev dependency; uv sync installs it"
    result = subprocess.run([ruff, "check", "--select", "AIR", "--preview", "dags", "plugins"], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
