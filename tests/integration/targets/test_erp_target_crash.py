"""A load killed with SIGKILL in the middle of staging leaves nothing behind, and the rerun
gives exactly the clean result."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
from erp_target_helpers import batch

from conduit.targets import Watermark

T1, T2 = "2024-03-01T10:00:00.000Z", "2024-03-02T10:00:00.000Z"

# The child loads one batch, says so, then hangs while the load is still staging (PostgreSQL:
# inside the open COPY) until it is killed.
CHILD = """
import sys, time
from erp_target_helpers import batch, make_spec
from conduit.targets import PostgresErpTarget, SqliteErpTarget, Watermark

kind, location, schema = sys.argv[1:4]
target = PostgresErpTarget(location) if kind == "postgres" else SqliteErpTarget(location)

def batches():
    yield batch(*[(i, "2024-03-02T10:00:00.000Z", f"new{i}@x.io") for i in range(1, 2001)])
    print("staging", flush=True)
    time.sleep(600)
    yield batch((9999, "2024-03-02T10:00:00.000Z", "never@x.io"))

target.load(make_spec(schema), batches(), run_id="killed", deleted_keys=["HS-C-1"], watermark=Watermark(9, 9))
"""


def test_sigkill_during_a_load_leaves_the_previous_state(ready):
    target, spec = ready.target, ready.spec
    target.load(spec, [batch((1, T1, "a@x.io"), (2, T1, "b@x.io"))], run_id="r1", watermark=Watermark(1, 1))
    before = target.fetch_rows(spec)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, ready.kind, ready.location, spec.target.db_schema],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        line = child.stdout.readline()
        assert line == "staging\n", child.stderr.read()
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(30) == -signal.SIGKILL
    finally:
        child.kill()
        child.wait()

    pd.testing.assert_frame_equal(target.fetch_rows(spec), before)
    assert target.read_watermark(spec) == Watermark(1, 1)

    rerun = target.load(  # waits for the killed session's lock to go, then completes
        spec, [batch(*[(i, T2, f"new{i}@x.io") for i in range(1, 2001)])], run_id="rerun",
        deleted_keys=["HS-C-1"], watermark=Watermark(9, 9),
    )

    assert (rerun.inserted, rerun.updated, rerun.deleted) == (1998, 2, 1)
    assert target.count(spec) == 1999 and target.read_watermark(spec) == Watermark(9, 9)
