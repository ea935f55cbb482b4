"""Data Docs render only when there is something to show (issue 15): a run whose rows broke no
expectation and no defect rule returns before importing Great Expectations; one bad value (a
defect) is enough for a site. Run in a fresh interpreter so ``sys.modules`` shows what the step
imported."""

from __future__ import annotations

from pathlib import Path

from fresh_interpreter import FLAGSHIP, run_script

SCRIPT = """
import json, sys
from conduit.operators.sync import DataDocsOperator
from conduit.pipeline import steps
from conduit.specs.model import load_spec
from conduit.standin.data import generate, iter_records

spec = load_spec({spec!r})
records = list(iter_records(generate(seed=3, contacts=40).contacts))
if {junk!r}:
    records[7]["properties"]["phone"] = "n/a"  # a phone that is none: a defect, the row loads
op = DataDocsOperator(task_id="data_docs", spec=spec, suite_path={suite!r})
context = {{"run_id": "manual__docs"}}
staging = op.staging(context)
with staging.writer("raw", "all") as writer:
    writer.write(steps.records_to_table(records, steps.raw_properties(spec)))
staging.reset("archived")
steps.transform(spec, staging)
result = op.execute(context)
print(json.dumps({{"result": result, "gx": "great_expectations" in sys.modules}}))
"""


def run(tmp_path: Path, *, junk: bool) -> dict:
    return run_script(SCRIPT.format(**FLAGSHIP, junk=junk), tmp_path)


def test_clean_rows_have_nothing_to_show_and_skip_great_expectations(tmp_path: Path) -> None:
    out = run(tmp_path, junk=False)
    assert out["result"] == {"data_docs": None, "rows_validated": 0,
                             "reason": "nothing to show: 40 rows broke no expectation and no defect rule"}
    assert not out["gx"]
    assert not (tmp_path / "docs").exists()


def test_one_defect_is_something_to_show(tmp_path: Path) -> None:
    out = run(tmp_path, junk=True)
    assert out["gx"] and out["result"]["rows_validated"] == 40
    assert Path(out["result"]["data_docs"]).is_file()
