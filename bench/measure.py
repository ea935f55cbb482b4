"""Runs a Python script as ``__main__`` and, at exit, writes this process's peak RSS (``VmHWM``
from /proc/self/status) to ``--rss-out`` as JSON. Standard library only (it also runs in
bench/.venv-dlt).

Why not ``wait4``/``RUSAGE_CHILDREN``: Linux keeps ``ru_maxrss`` across ``exec`` and a child
forked (or vforked, as ``subprocess`` does) from the harness starts with the harness's own
high-water mark, so the harness's memory would be charged to every contender. ``VmHWM`` belongs to
the address space that ``exec`` creates, so it counts only the contender.

    python bench/measure.py --rss-out /tmp/rss.json -- bench/conduit_sync.py --schema ...
"""

import atexit
import json
import runpy
import sys


def vm_status() -> dict:
    values = {}
    with open("/proc/self/status") as status:
        for line in status:
            name, _, rest = line.partition(":")
            if name in ("VmHWM", "VmRSS", "VmPeak"):
                values[name] = round(int(rest.split()[0]) / 1024, 1)  # kB -> MiB
    return values


def main() -> None:
    args = sys.argv[1:]
    if len(args) < 4 or args[0] != "--rss-out" or args[2] != "--":
        raise SystemExit("usage: measure.py --rss-out FILE -- SCRIPT [ARGS...]")
    out, script = args[1], args[3]

    def write() -> None:
        with open(out, "w") as f:
            json.dump({f"{k}_mib": v for k, v in vm_status().items()}, f)

    atexit.register(write)
    sys.argv = [script, *args[4:]]
    sys.path[0] = __import__("os").path.dirname(__import__("os").path.abspath(script))
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
