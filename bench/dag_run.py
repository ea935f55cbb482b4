"""The flagship DAG as users run it: ``airflow dags test crm_to_erp_customer_sync`` in its own
process, on embedded defaults (Airflow on SQLite in a fresh ``AIRFLOW_HOME``, the stand-in CRM
seeded with ``--contacts`` contacts, the ERP customer master in a SQLite file), twice: the first
run reads everything (no watermark yet), the second is the no-change incremental run (nothing
was modified in the CRM since).

Measured per run, from outside the ``airflow`` process:

* wall seconds from spawn to exit;
* per task: duration, start and end from the metadata DB (``task_instance``), and the CPU seconds
  the process spent over it (psutil; the machine is shared, so CPU compares where wall does not);
* peak RSS: ``airflow dags test`` runs every task **inside the CLI process** (no executor: the
  tasks run one after another in-process, ``run_task_in_process``), so the process's RSS is sampled (psutil,
  every 0.05 s) and each task is given the largest RSS seen between its start and end, and the
  growth of the process's ``VmHWM`` over the task (what the task added to the high-water mark).
  Imports stay in the process once made, so a task's number includes what earlier tasks
  imported. ``--per-task`` then measures what a worker's task process holds: one more full run,
  and each of its tasks again alone in a fresh ``airflow tasks test`` process (Airflow, the DAG
  file, that one task), its peak RSS (VmHWM). (``dags test --use-executor`` would need an API
  server for its LocalExecutor's task processes: the e2e harness's business, not this one's.)

    bash bench/run.sh --dag                          # 100,000 contacts, full + no-change run
    bash bench/run.sh --dag --contacts 10000 --per-task
    bash bench/run.sh --dag --contacts 1000000 --dirty --runs full,refresh   # defects; then full_refresh
    .venv/bin/python bench/dag_run.py --help

Writes ``bench/results/dag-<UTC time>.json`` (per-task rows, samples' summary, logs' paths).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
DAG_ID = "crm_to_erp_customer_sync"
TOKEN = "standin-token"


def log(message: str) -> None:
    load = "/".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"[dag-bench {datetime.now():%H:%M:%S} load {load}] {message}", file=sys.stderr, flush=True)


class ProcessPoller(threading.Thread):
    """Calls :meth:`sample` with the process ``pid`` (a ``psutil.Process``) every ``interval`` s
    until :attr:`stop` is set, the process is gone or ``sample`` returns False."""

    def __init__(self, pid: int, interval: float):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.procs: dict[int, dict] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self.stop.is_set():
            try:
                if self.sample(root) is False:
                    return
            except psutil.NoSuchProcess:
                return
            self.stop.wait(self.interval)

    def sample(self, root) -> bool | None:
        raise NotImplementedError


class Sampler(ProcessPoller):
    """Polls a process and its descendants: RSS and VmHWM per pid, and the root's RSS over time."""

    def __init__(self, pid: int, interval: float = 0.05):
        super().__init__(pid, interval)
        self.timeline: list[tuple[float, float, float]] = []  # (epoch s, root RSS MiB, root VmHWM MiB)
        self.cpu: list[tuple[float, float]] = []  # (epoch s, root user + system CPU s)
        self.tree_peak = 0.0

    def sample(self, root) -> bool | None:
        import psutil

        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return False
        total = 0.0
        now = time.time()
        for proc in procs:
            try:
                rss = proc.memory_info().rss / 2**20
                hwm = _vm_hwm(proc.pid)
                seen = self.procs.setdefault(proc.pid, {"cmdline": " ".join(proc.cmdline())[:160],
                                                        "peak_rss_mib": 0.0, "vm_hwm_mib": 0.0,
                                                        "first_s": now})
            except (psutil.Error, OSError):
                continue
            seen["peak_rss_mib"] = max(seen["peak_rss_mib"], rss)
            seen["vm_hwm_mib"] = max(seen["vm_hwm_mib"], hwm)
            seen["last_s"] = now
            total += rss
            if proc.pid == self.pid:
                self.timeline.append((now, rss, hwm))
                try:
                    times = proc.cpu_times()
                    self.cpu.append((now, times.user + times.system))
                except psutil.Error:
                    pass
        self.tree_peak = max(self.tree_peak, total)
        return None


def _vm_hwm(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def environment(home: Path, crm_url: str, erp_path: Path, *, conn_extra: dict | None = None) -> dict[str, str]:
    """The embedded defaults of ``scripts/demo.sh``, in ``home``; ``conn_extra`` is merged into the
    HubSpot connection's extras (e.g. the rate budget's settings)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CONDUIT_"))}
    (home / "airflow" / "plugins").mkdir(parents=True, exist_ok=True)
    env.update({
        "AIRFLOW_HOME": str(home / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(home / "airflow" / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "CONDUIT_INCLUDE_DIR": str(ROOT / "include"),
        "CONDUIT_STAGING_DIR": str(home / "staging"),
        "AIRFLOW_CONN_ERP_DEFAULT": json.dumps({"conn_type": "sqlite", "host": str(erp_path)}),
        "AIRFLOW_CONN_HUBSPOT_DEFAULT": json.dumps({"conn_type": "hubspot", "host": crm_url, "password": TOKEN,
                                                    "extra": {"api_version": "2026-09", **(conn_extra or {})}}),
    })
    return env


def _utc(value: str | None) -> float | None:
    if not value:
        return None
    return datetime.fromisoformat(value).replace(tzinfo=UTC).timestamp()


def task_instances(db: Path, run_id: str) -> list[dict]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT task_id, map_index, state, start_date, end_date, duration, try_number FROM task_instance "
            "WHERE dag_id = ? AND run_id = ? ORDER BY start_date", (DAG_ID, run_id)).fetchall()
    return [{"task": t if m < 0 else f"{t}[{m}]", "state": s, "start": _utc(a), "end": _utc(b),
             "duration_s": round(d, 2) if d is not None else None, "try_number": n} for t, m, s, a, b, d, n in rows]


def latest_run(db: Path) -> dict:
    with sqlite3.connect(db) as conn:
        run_id, state, start, end = conn.execute(
            "SELECT run_id, state, start_date, end_date FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1",
            (DAG_ID,)).fetchone()
    return {"run_id": run_id, "state": state, "start": _utc(start), "end": _utc(end)}


AIRFLOW = str(ROOT / ".venv" / "bin" / "airflow")


def run_sampled(argv: list[str], env: dict[str, str], log_path: Path):
    """Run ``argv`` (output to ``log_path``) sampled by a :class:`Sampler` until it exits; returns
    (process, sampler, wait status, rusage, spawned at, exited at)."""
    with open(log_path, "w") as out:
        spawned = time.time()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        sampler = Sampler(proc.pid)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        exited = time.time()
        sampler.stop.set()
        sampler.join()
    return proc, sampler, status, usage, spawned, exited


def run_dag(label: str, env: dict[str, str], results: Path, *, extra: list[str] = ()) -> dict:
    """``airflow dags test`` once, measured; returns the run's row (tasks, RSS, wall)."""
    argv = [AIRFLOW, "dags", "test", DAG_ID, *extra]
    log_path = results / f"dag-{label}.log"
    log(f"{label}: {' '.join(argv[1:])} (log {log_path})")
    proc, sampler, status, usage, spawned, exited = run_sampled(argv, env, log_path)
    db = Path(env["AIRFLOW_HOME"]) / "airflow.db"
    run = latest_run(db)
    tasks = task_instances(db, run["run_id"])
    for task in tasks:
        if task["start"] is None or task["end"] is None:
            continue
        # CPU seconds of the process over the task: the machine is shared, wall time alone misleads
        cpu = [c for t, c in sampler.cpu if task["start"] - sampler.interval <= t <= task["end"] + sampler.interval]
        if len(cpu) >= 2:
            task["cpu_s"] = round(cpu[-1] - cpu[0], 2)
        inside = [(rss, hwm) for t, rss, hwm in sampler.timeline if task["start"] <= t <= task["end"]]
        before = [hwm for t, _, hwm in sampler.timeline if t < task["start"]]
        if inside:
            task["cli_rss_peak_mib"] = round(max(r for r, _ in inside), 1)
            task["cli_hwm_growth_mib"] = round(max(h for _, h in inside) - (before[-1] if before else 0.0), 1)
    started = [t["start"] for t in tasks if t["start"]]
    ended = [t["end"] for t in tasks if t["end"]]
    root = sampler.procs.get(proc.pid, {})
    return {
        "label": label, "run_id": run["run_id"], "state": run["state"], "exit_code": os.waitstatus_to_exitcode(status),
        "wall_s": round(exited - spawned, 2), "spawned_at": spawned, "exited_at": exited,
        "before_first_task_s": round(min(started) - spawned, 2) if started else None,
        "first_to_last_task_s": round(max(ended) - min(started), 2) if started else None,
        "after_last_task_s": round(exited - max(ended), 2) if ended else None,
        "sum_task_s": round(sum(t["duration_s"] or 0 for t in tasks), 2),
        "cli_peak_rss_mib": round(root.get("vm_hwm_mib", 0.0), 1),
        "tree_peak_rss_mib": round(sampler.tree_peak, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "processes": [{"pid": pid, **p} for pid, p in sampler.procs.items()],
        "tasks": tasks, "log": str(log_path),
    }


def run_tasks_apart(label: str, env: dict[str, str], results: Path) -> dict:
    """Each task of one more full run in a process of its own, as a worker runs it: the run is
    made by ``dags test`` into a new, empty ERP file (a first full read, as the measured one;
    reconcile marked success so the staged files stay), then every task of it runs again alone
    with ``airflow tasks test`` (a fresh process: Airflow, the DAG file, the task), measured by the
    peak RSS (VmHWM) of that process. (Not ``full_refresh``: its plan on a SQLite ERP of 100,000
    rows ran for minutes, see bench/README.md.)"""
    home = Path(env["CONDUIT_STAGING_DIR"]).parent
    env = {**env, "AIRFLOW_CONN_ERP_DEFAULT": json.dumps({"conn_type": "sqlite", "host": str(home / "erp-apart.sqlite")})}
    run = run_dag(f"{label}-dagrun", env, results, extra=["--mark-success-pattern", "^reconcile$"])
    rows = []
    # plan_extract runs last: run again, it would plan anew (an incremental run, the load has
    # moved the watermark) and the tasks after it would read its new, empty plan from XCom
    ran = [t for t in run["tasks"] if t["state"] != "skipped" and t["task"] not in ("reconcile", "plan_extract")]
    for task in [*ran, {"task": "reconcile"}, {"task": "plan_extract"}]:
        name, _, index = task["task"].rstrip("]").partition("[")
        argv = [AIRFLOW, "tasks", "test", DAG_ID, name, run["run_id"], *(["--map-index", index] if index else [])]
        log_path = results / f"dag-{label}-{task['task']}.log"
        proc, sampler, status, _, spawned, exited = run_sampled(argv, env, log_path)
        wall = exited - spawned
        root = sampler.procs.get(proc.pid, {})
        code = os.waitstatus_to_exitcode(status)
        rows.append({"task": task["task"], "state": "success" if code == 0 else f"exit {code}",
                     "duration_s": round(wall, 2), "process_peak_mib": round(root.get("vm_hwm_mib", 0.0), 1),
                     "log": str(log_path)})
        log(f"{label}: {task['task']} alone: {wall:.1f} s, peak RSS {rows[-1]['process_peak_mib']:.0f} MiB")
    return {"label": label, "run_id": run["run_id"], "dag_run": run, "tasks": rows}


# One task's step in a process that holds what a worker's task process holds before its task
# (airflow.sdk, the DAG file), then the step (conduit.pipeline.steps, what the operator calls); prints
# its VmHWM. The ERP of plan/load/reconcile is a new SQLite file: a first load, as the full run's.
PROXY = """
import json, os, resource, sys, time
import airflow.sdk
import runpy
runpy.run_path({dag_file!r})  # the DAG file, as the task runner parses it
from pathlib import Path
from conduit.pipeline import steps
from conduit.pipeline.staging import RunStaging
from conduit.specs.model import load_spec
from conduit.sources import source_for
from conduit.targets.sql import SqliteErpTarget

step, run_id, erp, scratch = sys.argv[1:5]
spec = load_spec({spec!r})
suite = Path({include!r}) / "expectations" / spec.quality.suite
staging = RunStaging.for_run(spec.name, run_id)
target = SqliteErpTarget(erp)
started, usage = time.monotonic(), resource.getrusage(resource.RUSAGE_SELF)
if step == "extract":  # one id range of a first full read, into a scratch staging area
    from conduit.pipeline.run_plan import plan_run
    source = source_for(spec)
    run = plan_run(spec, stored_watermark_ms=None, run_start_ms=int(time.time() * 1000))
    item = next(i for i in steps.plan_extract(source, run, parallelism=spec.source.parallelism)
                if i["kind"] == "range")
    steps.extract_item(source, RunStaging(Path(scratch)), item)
elif step == "transform":
    steps.transform(spec, staging)
elif step == "quality_gate":
    target.ensure_ready(spec)
    steps.gate(target, spec, staging, suite, run_id=run_id, full_extract=True)
elif step == "data_docs":
    steps.data_docs(spec, staging, suite, Path(scratch) / "docs", run_name=run_id)
elif step == "plan":
    target.ensure_ready(spec)
    steps.plan(target, spec, staging, run_id=run_id)
elif step == "load":
    steps.load(target, spec, staging, run_id=run_id, watermark_ms=None)
elif step == "reconcile":
    steps.reconcile(source_for(spec), target, spec, staging, upper_ms=int(time.time() * 1000), full_read=True)
done = resource.getrusage(resource.RUSAGE_SELF)
hwm = next(int(line.split()[1]) / 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({{"step": step, "peak_mib": round(hwm, 1), "wall_s": round(time.monotonic() - started, 2),
                  "cpu_s": round(done.ru_utime + done.ru_stime - usage.ru_utime - usage.ru_stime, 2)}}))
"""
PROXY_STEPS = ("extract", "transform", "quality_gate", "data_docs", "plan", "load", "reconcile")


def run_worker_proxy(label: str, env: dict[str, str], results: Path) -> dict:
    """Every step of one more full run (staged files kept: reconcile marked success) in a process
    of its own that first imports what a worker's task process holds (``PROXY``), its peak RSS.
    Unlike ``airflow tasks test``, no in-process execution API and ORM (~110 MiB) are counted."""
    home = Path(env["CONDUIT_STAGING_DIR"]).parent
    env = {**env, "AIRFLOW_CONN_ERP_DEFAULT": json.dumps({"conn_type": "sqlite", "host": str(home / "erp-proxy-run.sqlite")})}
    run = run_dag(f"{label}-dagrun", env, results, extra=["--mark-success-pattern", "^reconcile$"])
    script = PROXY.format(dag_file=str(ROOT / "dags" / "conduit_syncs.py"),
                          spec=str(ROOT / "include" / "syncs" / f"{DAG_ID}.yaml"), include=str(ROOT / "include"))
    erp = home / "erp-proxy.sqlite"
    erp.unlink(missing_ok=True)
    rows = []
    for step in PROXY_STEPS:
        proc = subprocess.run([sys.executable, "-c", script, step, run["run_id"], str(erp), str(home / "proxy-scratch")],
                              env=env, cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            rows.append({"step": step, "state": f"exit {proc.returncode}", "error": proc.stderr[-2000:]})
        else:
            rows.append({"state": "success", **json.loads(proc.stdout.strip().splitlines()[-1])})
        log(f"{label}: {step} in a worker-like process: {rows[-1]}"[:300])
    return {"label": label, "run_id": run["run_id"], "dag_run": run, "steps": rows}


def table_proxy(proxy: dict) -> str:
    lines = [f"{proxy['label']}: every step of {proxy['run_id']} in a process holding airflow.sdk + the DAG file first",
             f"  {'step':<14} {'state':<9} {'wall s':>7} {'CPU s':>6}  {'peak RSS MiB':>12}"]
    lines += [f"  {r['step']:<14} {r['state']:<9} {r.get('wall_s', 0):>7.2f} {r.get('cpu_s', 0):>6.2f}  "
              f"{r.get('peak_mib', 0):>12.0f}" for r in proxy["steps"]]
    return "\n".join(lines)


def table_apart(run: dict) -> str:
    lines = [f"{run['label']}: every task of {run['run_id']} again, each in its own `airflow tasks test` process",
             f"  {'task':<22} {'state':<9} {'wall s':>7}  {'peak RSS MiB':>12}"]
    lines += [f"  {t['task']:<22} {t['state']:<9} {t['duration_s']:>7.2f}  {t['process_peak_mib']:>12.0f}"
              for t in run["tasks"]]
    return "\n".join(lines)


def table(run: dict) -> str:
    rss_head = "CLI RSS MiB  +HWM"
    lines = [f"{run['label']}: {run['state']} in {run['wall_s']:.1f} s wall "
             f"(spawn -> first task {run['before_first_task_s']} s, tasks {run['first_to_last_task_s']} s, "
             f"last task -> exit {run['after_last_task_s']} s; CPU {run['cpu_s']} s; "
             f"peak RSS: CLI process {run['cli_peak_rss_mib']:.0f} MiB, process tree {run['tree_peak_rss_mib']:.0f} MiB)",
             f"  {'task':<22} {'state':<9} {'s':>7} {'CPU s':>6}  {rss_head}"]
    for t in run["tasks"]:
        # a task shorter than the sampling interval has no sample of its own
        rss = (f"{t['cli_rss_peak_mib']:>11.0f} {t['cli_hwm_growth_mib']:>+6.0f}" if "cli_rss_peak_mib" in t
               else f"{'-':>11} {'-':>6}")
        duration = "-" if t["duration_s"] is None else f"{t['duration_s']:.2f}"
        cpu = f"{t['cpu_s']:.1f}" if "cpu_s" in t else "-"
        lines.append(f"  {t['task']:<22} {str(t['state']):<9} {duration:>7} {cpu:>6}  {rss}")
    lines.append(f"  {'sum of tasks':<22} {'':<9} {run['sum_task_s']:>7.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--contacts", type=int, default=100_000, help="the stand-in's seeded contacts (default 100,000)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--runs", default="full,noop",
                   help="comma-separated: full (first run, reads everything), noop (again, nothing changed), "
                        "refresh (triggered with full_refresh: reads everything, deletes what it did not read)")
    p.add_argument("--worker-proxy", action="store_true",
                   help="then one more full run, and each of its steps in a process holding airflow.sdk and the DAG "
                        "file first, as a worker's task process does (peak RSS per step, no execution API)")
    p.add_argument("--per-task", action="store_true",
                   help="then one more full run, and each of its tasks alone in its own process (peak RSS per task)")
    p.add_argument("--home", type=Path, default=None, help="keep Airflow's home, the ERP and the staging here")
    p.add_argument("--dirty", action="store_true",
                   help="CRM data dirty the way real data is: 0.5%% invalid emails, 3%% junk phones, 1%% unknown "
                        "countries (defects the gate records, Data Docs to render; default: clean data)")
    p.add_argument("--results-dir", type=Path, default=BENCH / "results")
    args = p.parse_args(argv)
    from conduit.standin.testing import run_standin

    args.results_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.results_dir / f"dag-{stamp}.json"
    meta = {"started": stamp, "host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "argv": sys.argv[1:], "contacts": args.contacts, "load_before": os.getloadavg()}
    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="conduit-dag-bench-") as tmp:
        home = (args.home or Path(tmp)).resolve()
        log(f"starting the stand-in CRM with {args.contacts} contacts")
        with run_standin(contacts=args.contacts, seed=args.seed, token=TOKEN, interval_max=10**9,
                         daily_max=10**12, startup_timeout=600) as crm:
            if args.dirty:
                meta["dirty"] = crm.admin.reset(bad_emails=args.contacts // 200, junk_phones=0.03,
                                                unknown_countries=0.01)
            env = environment(home, crm.base_url, home / "erp.sqlite")
            t = time.monotonic()
            subprocess.run([str(ROOT / ".venv" / "bin" / "airflow"), "db", "migrate"], env=env, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            log(f"airflow db migrate: {time.monotonic() - t:.1f} s (not counted)")
            for label in [r.strip() for r in args.runs.split(",") if r.strip()]:
                conf = ["-c", json.dumps({"full_refresh": True})] if label == "refresh" else []
                run = run_dag(f"{label}-{args.contacts}", env, args.results_dir, extra=conf)
                run["load_after"] = os.getloadavg()
                runs.append(run)
                print(table(run), flush=True)
                out.write_text(json.dumps({**meta, "runs": runs}, indent=2, default=str))
            if args.per_task:
                apart = run_tasks_apart(f"tasks-{args.contacts}", env, args.results_dir)
                print(table(apart["dag_run"]), flush=True)
                print(table_apart(apart), flush=True)
                meta["tasks_apart"] = apart
                out.write_text(json.dumps({**meta, "runs": runs}, indent=2, default=str))
            if args.worker_proxy:
                proxy = run_worker_proxy(f"proxy-{args.contacts}", env, args.results_dir)
                print(table_proxy(proxy), flush=True)
                meta["worker_proxy"] = proxy
                out.write_text(json.dumps({**meta, "runs": runs}, indent=2, default=str))
    print(f"\nresults: {out}")
    apart_ok = all(t["state"] == "success" for t in meta.get("tasks_apart", {}).get("tasks", []))
    apart_ok &= all(r["state"] == "success" for r in meta.get("worker_proxy", {}).get("steps", []))
    return 0 if apart_ok and all(r["exit_code"] == 0 and r["state"] == "success" for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
