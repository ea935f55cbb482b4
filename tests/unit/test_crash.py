"""conduit.crash: a crash point is inert unless armed, kills with SIGKILL once, then lets the retry pass."""

from __future__ import annotations

import os
import signal

from conduit.crash import ARM, ONCE, crash_point


def in_child(point: str, env: dict[str, str]) -> int:
    pid = os.fork()
    if pid == 0:
        os.environ.update(env)
        crash_point(point)
        os._exit(0)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_unarmed_or_other_points_do_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv(ARM, raising=False)
    crash_point("load.mid_copy")
    marker = tmp_path / "fired"
    assert in_child("load.mid_copy", {ARM: "load.after_copy", ONCE: str(marker)}) == 0
    assert in_child("load.mid_copy", {ARM: "load.mid_copy"}) == 0  # no marker file named: inert
    assert not marker.exists()


def test_an_armed_point_kills_once_and_the_retry_passes(tmp_path):
    env = {ARM: "load.mid_copy", ONCE: str(tmp_path / "fired")}
    assert in_child("load.mid_copy", env) == -signal.SIGKILL
    assert (tmp_path / "fired").exists()
    assert in_child("load.mid_copy", env) == 0
