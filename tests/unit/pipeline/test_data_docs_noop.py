"""A no-change run's ``data_docs`` task has nothing to show and returns before importing Great
Expectations (issue 15: GX's import costs seconds and ~110 MiB), and its transform maps nothing
without loading the transforms or pandas.

Run in a fresh interpreter so ``sys.modules`` shows what the steps themselves imported."""

from __future__ import annotations

from pathlib import Path

from fresh_interpreter import FLAGSHIP, run_script

SCRIPT = """
import json, sys
from conduit.operators.sync import DataDocsOperator
from conduit.pipeline import steps
from conduit.specs.model import load_spec

spec = load_spec({spec!r})
op = DataDocsOperator(task_id="data_docs", spec=spec, suite_path={suite!r})
context = {{"run_id": "manual__no_change"}}
staging = op.staging(context)
staging.reset("raw")  # a no-change run's extract: the window held no record
staging.reset("archived")
mapped = steps.transform(spec, staging)
result = op.execute(context)
print(json.dumps({{"mapped": mapped, "result": result, "modules": sorted(m for m in (
    "great_expectations", "conduit.quality.gx_runner", "conduit.quality.engine", "conduit.transforms.mapping",
    "pandas") if m in sys.modules)}}))
"""


def test_no_change_run_maps_nothing_and_skips_data_docs_without_heavy_imports(tmp_path: Path) -> None:
    out = run_script(SCRIPT.format(**FLAGSHIP), tmp_path)
    assert out["mapped"] == {"mapped": 0, "mapped_archived": 0, "superseded_reads": 0}
    assert out["result"] == {"data_docs": None, "rows_validated": 0, "reason": "no rows changed in this run"}
    assert out["modules"] == [], f"a no-change transform + data_docs imported {out['modules']}"
    assert not (tmp_path / "docs").exists()  # no Data Docs site written
