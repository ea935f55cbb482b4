"""What keeps a task process's memory down when it reads staged parts (issue 15): Arrow allocates
with the system allocator (chosen when the DAG file imports the staging module, before pyarrow
starts), and reading a part neither imports ``pyarrow.dataset`` nor pandas. The part is written
here; it is read in a fresh interpreter, so ``sys.modules`` and Arrow's allocator are the read's own
(building a table from Python lists would import pandas by itself: ``pa.array`` checks for it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]

SCRIPT = """
import json, sys
from conduit.pipeline.staging import RunStaging, read_part
import pyarrow as pa

(part,) = RunStaging({root!r}).parts("raw")
table = read_part(part, ["id"])
print(json.dumps({{"pool": pa.default_memory_pool().backend_name, "ids": table.column("id").to_pylist(),
                  "modules": sorted(m for m in ("pyarrow.dataset", "pandas") if m in sys.modules)}}))
"""


def test_reading_a_part_uses_the_system_allocator_and_imports_neither_dataset_nor_pandas(tmp_path: Path) -> None:
    import pyarrow as pa

    from conduit.pipeline.staging import RunStaging

    with RunStaging(tmp_path / "run").writer("raw", "all") as writer:
        writer.write(pa.table({"id": ["1", "2", "3"], "email": ["a@x.io", None, "c@x.io"]}))
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT.format(root=str(tmp_path / "run"))], capture_output=True,
                          text=True, timeout=120, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"pool": "system", "ids": ["1", "2", "3"], "modules": []}
