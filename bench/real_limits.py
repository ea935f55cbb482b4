"""The benchmark with real limits: Conduit and dlt against the stand-in CRM under HubSpot's limits.

The stand-in enforces HubSpot's rate limits (429s) and delays every reply, so the API budget, not
the CPU, is the limit.

    bash bench/run.sh --real-limits                        # 100,000 contacts, Professional, 150 ms
    bash bench/run.sh --real-limits --sizes 100000,1000000 --conn-extra '{"rate_limit_tier": "professional"}'
    bash bench/run.sh --real-limits --conduit-via stack --conn-extra '{"rate_limit_tier": "professional"}'
    bash bench/run.sh --real-limits --no-limits --sizes 1000000 --conduit-via dag   # CPU-bound, vs dlt
    .venv/bin/python bench/real_limits.py --help

Per size N:

1. the CRM's truth: a stand-in WITHOUT limits, seeded like the limited one (same seed, same
   anchor: the same records), is read once over the listing API and stopped (reading it from
   the limited one would cost minutes of budget);
2. the limited stand-in (``--enforce-rate-limits``, the tier's ``--interval-max``/``--daily-max``,
   ``--search-per-second``, ``--slow-ms``: the latency is an ``await asyncio.sleep`` in its
   async handlers, so concurrent requests wait concurrently, as HubSpot's do);
3. each contender as its own process, one after the other, a rolling interval apart so each
   starts with a full budget (the daily count carries over: far below the daily limit here):
   * Conduit as users run it: ``airflow dags test crm_to_erp_customer_sync`` (``bench/dag_run.py``:
     Airflow on SQLite, the ERP in a SQLite file; the mapped extract tasks one after the other), the
     HubSpot connection's extras from ``--conn-extra``; or ``--conduit-via stack``: a deployment
     (``tests/e2e/harness.py``'s ``AirflowStack``: api-server, scheduler, dag-processor, triggerer,
     Celery worker with 4 slots, PostgreSQL metadata and ERP databases) whose HubSpot connection is
     this stand-in, with the extras and a budget in Redis (``--budget-redis-db``, cleared first: the
     mapped tasks are separate processes); its start-up is reported, not counted; the DAG is
     triggered through the API, wall = trigger -> the run's ``end_date``; per task from the API; the
     peak RSS/VmHWM/USS of every task process of the worker (psutil, every 0.1 s, attributed to its
     task instance by the title Airflow's task runner gives it); the deployment is stopped before
     the next contender; or ``--conduit-via script``: ``bench/conduit_sync.py`` into PostgreSQL with
     the spec's parallelism (4 id ranges on 4 threads);
   * dlt: ``bench/dlt_sync.py`` (``rest_api``, the list endpoint, into PostgreSQL);
4. counted AT THE STAND-IN, not by the client: its ``/_admin/stats`` counters (``requests`` per
   endpoint, ``sent`` per error status) before and after each contender; polled every 0.1 s
   during the run, they also date the contender's first and last CRM request;
5. verified as in ``bench/run.py``: Conduit's ERP rows == N and its key checksum == the CRM's
   records mapped with the spec; dlt's rows, distinct ids and property checksum == the CRM's.

``--no-limits``: one stand-in without limits and without latency serves the truth and every
contender (CPU-bound, like ``bench/run.py``); reported: records/s and the ratio to dlt's records/s
at the same N (the issue's target there: the DAG >= 5x at 1M); no ideal, no target.

The ideal is the budget-bound time: N / the best rate any client can reach within the limits,
searches at their cap with full pages (200) and every other request of the rolling budget a full
list page (100): :meth:`Budget.rate`. Reported per contender: wall time (spawn to exit), the
fixed start-up cost (spawn to its first CRM request), the extract step's own time, the CRM phase
(first to last request), the tail (last request to exit), requests, 429s, share of the ideal =
ideal / wall, and the target "wall <= 1.2 x ideal + start-up". Writes
``bench/results/real-limits-<UTC time>.json``; exit code 1 when any run failed (a DAG task that
needed a retry counts as failed) or did not verify.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

import dag_run  # noqa: E402  (bench/ is not a package)
import run as harness  # noqa: E402

CONTENDERS = ("conduit", "dlt")
# HubSpot's per-account limits for private apps (contract §1.8): requests per rolling 10 s, per day.
# Search is 5 requests/s on every tier; the API limit pack raises the burst to 250 (--interval-max 250).
TIERS = {
    "starter": {"interval_max": 100, "daily_max": 250_000},
    "professional": {"interval_max": 190, "daily_max": 650_000},
    "enterprise": {"interval_max": 190, "daily_max": 1_000_000},
}
TARGET_FACTOR = 1.2
log = harness.log


@dataclass(frozen=True)
class Budget:
    interval_max: int
    interval_ms: int
    daily_max: int
    search_per_second: int
    search_page: int
    list_page: int

    @property
    def requests_per_second(self) -> float:
        return self.interval_max * 1000 / self.interval_ms

    def rate(self) -> float:
        """Records/s of the best client: as many searches as the search cap (and the whole
        budget) allow, full pages of ``search_page``, and the rest of the budget as list pages."""
        searches = min(self.search_per_second, self.requests_per_second)
        return searches * self.search_page + (self.requests_per_second - searches) * self.list_page

    def describe(self) -> str:
        searches = min(self.search_per_second, self.requests_per_second)
        return (f"{self.interval_max} requests / {self.interval_ms / 1000:g} s rolling, {self.search_per_second} "
                f"searches/s, {self.daily_max:,}/day -> {searches:g} searches/s x {self.search_page} + "
                f"{self.requests_per_second - searches:g} list calls/s x {self.list_page} = "
                f"{self.rate():,.0f} records/s")


def budget_of(args) -> Budget:
    from conduit.standin.app import LIST_MAX_LIMIT
    from conduit.standin.search import MAX_LIMIT as SEARCH_MAX_LIMIT

    tier = TIERS[args.tier]
    return Budget(interval_max=args.interval_max or tier["interval_max"], interval_ms=args.interval_ms,
                  daily_max=args.daily_max or tier["daily_max"], search_per_second=args.search_per_second,
                  search_page=SEARCH_MAX_LIMIT, list_page=LIST_MAX_LIMIT)


# --- counting at the stand-in ------------------------------------------------------------------------


class RequestClock(threading.Thread):
    """Polls the stand-in's ``/_admin/stats`` (admin calls never count against the budget) and
    dates the first and the last change of its CRM request count."""

    def __init__(self, base_url: str, interval: float = 0.1):
        from conduit.standin.testing import AdminClient

        super().__init__(daemon=True)
        self.admin, self.interval = AdminClient(base_url), interval  # its own session: another thread
        self.baseline = total_requests(self.admin.stats())
        self.first_at: float | None = None
        self.last_at: float | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        seen = self.baseline
        while not self.stop.wait(self.interval):
            try:
                count = total_requests(self.admin.stats())
            except Exception:  # noqa: BLE001 (a missed sample only blurs the dates)
                continue
            if count != seen:
                now = time.time()
                self.first_at = self.first_at or now
                self.last_at, seen = now, count


def refused_by_policy(base_url: str) -> dict[str, int] | None:
    """The limiter's 429s per policy (``GET /_admin/rate_limits``), where the stand-in has that call."""
    import requests

    reply = requests.get(f"{base_url}/_admin/rate_limits", timeout=30)
    return reply.json().get("refused") if reply.status_code == 200 else None


def total_requests(stats: dict) -> int:
    return sum(stats["requests"].values())


def counted(before: dict, after: dict) -> dict:
    """What the stand-in counted between two ``/_admin/stats`` snapshots."""
    def diff(key: str) -> dict[str, int]:
        return {k: v - before[key].get(k, 0) for k, v in after[key].items() if v - before[key].get(k, 0)}

    requests, sent = diff("requests"), diff("sent")
    return {"requests": sum(requests.values()), "by_endpoint": requests, "http_429": sent.get("429", 0),
            "errors_by_status": sent}


# --- contenders -------------------------------------------------------------------------------------------


def run_conduit_dag(n: int, crm, args, work: Path, expectation) -> dict:
    """``airflow dags test`` of the flagship in a fresh Airflow home; verified on its SQLite ERP."""
    from conduit.targets.sql import SqliteErpTarget

    home = work / f"dag-home-{n}"
    erp = home / "erp.sqlite"
    env = dag_run.environment(home, crm.base_url, erp, conn_extra=args.conn_extra)
    t = time.monotonic()
    import subprocess

    subprocess.run([dag_run.AIRFLOW, "db", "migrate"], env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, cwd=ROOT)
    log(f"conduit N={n}: airflow db migrate {time.monotonic() - t:.1f} s (not counted)")
    run = dag_run.run_dag(f"real-limits-{n}", env, args.results_dir)
    retried = [t["task"] for t in run["tasks"] if (t.get("try_number") or 1) > 1]
    row = {"via": "dag", "exit_code": run["exit_code"], "wall_s": run["wall_s"], "spawned_at": run["spawned_at"],
           "state": run["state"], "peak_rss_mib": run["cli_peak_rss_mib"], "retried_tasks": retried,
           "tasks": [{k: t.get(k) for k in ("task", "state", "duration_s", "try_number")} for t in run["tasks"]],
           # dags test runs the mapped extract tasks one after the other: their sum is the extract's time
           "extract_s": round(sum(t["duration_s"] or 0 for t in run["tasks"] if t["task"].startswith("extract[")), 2),
           "log": run["log"]}
    if run["exit_code"] != 0 or run["state"] != "success":
        row["verified"], row["verify_detail"] = False, f"dag run {run['state']}, exit {run['exit_code']}: {run['log']}"
        return row
    spec = harness.conduit_spec("unused")
    target = SqliteErpTarget(erp)
    count, got, want = target.count(spec), target.key_checksum(spec), expectation.checksum()
    row["verified"] = count == n and got == want and not retried
    row["verify_detail"] = (f"rows {count}/{n}, key_checksum {got} {'==' if got == want else '!='} {want}"
                            + (f", tasks retried: {retried}" if retried else ""))
    return row


# --- Conduit on a deployment: scheduler + Celery worker (tests/e2e/harness.py) -----------------------------

BUDGET_REDIS_CONN_ID = "bench_budget_redis"
BUDGET_KEYS = "conduit:hubspot-budget:*"  # budget.RedisBudget's keys
TASK_TITLE = "airflow worker -- "  # the task runner's process title, then the task instance's id


class WorkerSampler(dag_run.ProcessPoller):
    """Peak memory of every process under the Celery worker, every ``interval`` s (psutil). The pool
    processes (the worker's children) host the task supervisors; each forks the task process
    (depth 2), which the task runner retitles ``airflow worker -- <task instance id>``: so a task
    process is attributed to its task instance by its title. Deeper processes (OpenLineage forks
    one per event) are kept apart. RSS counts the pages a fork shares with its supervisor; USS
    (``smaps_rollup``) only the process's own."""

    def __init__(self, pid: int, interval: float = 0.1):
        super().__init__(pid, interval)

    def sample(self, root) -> bool | None:
        import psutil

        try:
            children = root.children(recursive=True)
        except psutil.Error:
            return False
        parents = {}
        for proc in children:
            try:
                parents[proc.pid] = proc.ppid()
            except psutil.Error:
                continue
        for proc in children:
            parent = parents.get(proc.pid)
            if parent is None:
                continue
            role = ("pool" if parent == self.pid else "task" if parents.get(parent) == self.pid
                    else "descendant")
            try:
                title = " ".join(proc.cmdline())
                mem = proc.memory_full_info()
                hwm = dag_run._vm_hwm(proc.pid)
            except (psutil.Error, OSError):
                continue
            seen = self.procs.setdefault(proc.pid, {"title": title, "role": role, "peak_rss_mib": 0.0,
                                                    "vm_hwm_mib": 0.0, "peak_uss_mib": 0.0})
            if TASK_TITLE in title:  # set by the task runner after the fork
                seen["title"] = title
            seen["peak_rss_mib"] = max(seen["peak_rss_mib"], mem.rss / 2**20)
            seen["peak_uss_mib"] = max(seen["peak_uss_mib"], mem.uss / 2**20)
            seen["vm_hwm_mib"] = max(seen["vm_hwm_mib"], hwm)
        return None

    def by_task_instance(self) -> dict[str, dict]:
        """Task instance id -> the peaks of the task process that ran it (a retry: the larger)."""
        found: dict[str, dict] = {}
        for pid, p in self.procs.items():
            if p["role"] == "task" and TASK_TITLE in p["title"]:
                ti = p["title"].split(TASK_TITLE, 1)[1].strip()
                if p["vm_hwm_mib"] >= found.get(ti, {}).get("vm_hwm_mib", -1):
                    found[ti] = {"pid": pid, **{k: round(p[k], 1) for k in ("peak_rss_mib", "vm_hwm_mib", "peak_uss_mib")}}
        return found

    def summary(self) -> list[dict]:
        return [{"pid": pid, **p, "title": p["title"][:160],
                 **{k: round(p[k], 1) for k in ("peak_rss_mib", "vm_hwm_mib", "peak_uss_mib")}}
                for pid, p in self.procs.items()]


def pg_url(dsn: str) -> str:
    """The harness takes a URL; the benchmark a libpq DSN."""
    from psycopg.conninfo import conninfo_to_dict

    info = conninfo_to_dict(dsn)
    password = f":{info['password']}" if info.get("password") else ""
    return (f"postgresql://{info.get('user', 'postgres')}{password}@{info.get('host', '127.0.0.1')}:"
            f"{info.get('port', 5432)}/{info.get('dbname', 'postgres')}")


def stack_env(crm_url: str, args) -> dict[str, str]:
    """Applied last over the harness's environment: the HubSpot connection to the benchmark's own
    stand-in, with ``--conn-extra`` and a budget in Redis (the mapped extract tasks are separate
    processes: a budget in one process would not be shared), and no scheduled runs (the DAG's cron
    slot that is due when it is unpaused would start a second, racing run)."""
    from e2e import topology

    extra = {"api_version": topology.HUBSPOT_API_VERSION, **args.conn_extra, "budget_redis_conn_id": BUDGET_REDIS_CONN_ID}
    return {
        "AIRFLOW_CONN_HUBSPOT_DEFAULT": json.dumps({"conn_type": "hubspot", "host": crm_url, "password": harness.TOKEN,
                                                    "extra": extra}),
        f"AIRFLOW_CONN_{BUDGET_REDIS_CONN_ID.upper()}": f"{args.redis_base}/{args.budget_redis_db}",
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
    }


def clear_budget(args) -> int:
    """Forget the budget's windows and day count in its Redis DB; refuses a DB holding anything else."""
    import redis

    client = redis.Redis.from_url(f"{args.redis_base}/{args.budget_redis_db}")
    try:
        others = [k for k in client.scan_iter(count=1000) if not k.startswith(b"conduit:hubspot-budget:")]
        if others:
            raise SystemExit(f"Redis DB {args.budget_redis_db} holds other keys ({others[:3]}...): choose an "
                             "unused one with --budget-redis-db")
        keys = list(client.scan_iter(match=BUDGET_KEYS))
        return client.delete(*keys) if keys else 0
    finally:
        client.close()


def start_stack(n: int, crm, args, work: Path):
    """A deployment (tests/e2e/harness.py: init, api-server, scheduler, dag-processor, triggerer,
    Celery worker; metadata and ERP databases of its own) whose HubSpot connection is ``crm``; the
    DAG parsed and unpaused. Stopped again when starting fails."""
    if str(ROOT / "tests") not in sys.path:
        sys.path.insert(0, str(ROOT / "tests"))
    from e2e.harness import AirflowStack

    from conduit.specs.model import load_spec

    # A slot for every extract item of a full read (the id ranges and the archived listing). With one
    # slot fewer, the last item waits in Celery's queue for the whole extract, and once it has waited
    # [scheduler] task_queued_timeout (600 s) Airflow 3.3 refuses its workload token ("Invalid auth
    # token") and the task is retried: the 1M run of 2026-12-07 02:32 failed that way with 4 slots.
    slots = load_spec(ROOT / "include" / "syncs" / f"{dag_run.DAG_ID}.yaml").source.parallelism + 1
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    stack = AirflowStack(artifacts=args.results_dir / f"real-limits-stack-{n}-{stamp}", dags_folder=ROOT / "dags",
                         pg_dsn=pg_url(args.dsn), redis_url=f"{args.redis_base}/0", workdir=work / f"stack-{n}",
                         extra_env=stack_env(crm.base_url, args), worker_concurrency=slots)
    t = time.monotonic()
    try:
        stack.start(with_standin=False, with_order_services=False)
        stack.wait_for_dag(dag_run.DAG_ID)
        stack.unpause(dag_run.DAG_ID)
    except BaseException:
        stop_stack(stack)
        raise
    stack.bench_startup_s = round(time.monotonic() - t, 1)  # type: ignore[attr-defined]
    log(f"conduit N={n}: the deployment started in {stack.bench_startup_s} s (not counted; {stack.timings}); "
        f"logs in {stack.artifacts}")
    return stack


def stop_stack(stack) -> list[str]:
    leftovers = stack.stop()
    if leftovers:
        log(f"the deployment left processes behind: {leftovers}")
    return leftovers


def _api_time(value: str | None) -> float | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


def run_conduit_stack(n: int, stack, args, expectation) -> dict:
    """One triggered run of the flagship on the started deployment; wall = trigger -> the run's end
    (its ``end_date`` in the API); per task from the API; the task processes' peak RSS sampled."""
    from conduit.targets.sql import PostgresErpTarget

    cleared = clear_budget(args)
    sampler = WorkerSampler(stack.procs["airflow-worker"].popen.pid)
    sampler.start()
    spawned = time.time()
    try:
        run = stack.trigger(dag_run.DAG_ID)
        final = stack.wait_for_run(dag_run.DAG_ID, run["dag_run_id"], timeout=args.stack_timeout)
        seen_end = time.time()
        tis = stack.task_instances(dag_run.DAG_ID, run["dag_run_id"])
    finally:
        sampler.stop.set()
        sampler.join()
    peaks = sampler.by_task_instance()
    tasks = []
    for ti in sorted(tis, key=lambda t: (t.get("start_date") or "~", t["map_index"])):
        name = ti["task_id"] if ti["map_index"] < 0 else f"{ti['task_id']}[{ti['map_index']}]"
        peak = peaks.get(ti["id"], {})
        tasks.append({"task": name, "state": ti["state"], "try_number": ti.get("try_number"),
                      "duration_s": round(ti["duration"], 2) if ti.get("duration") is not None else None,
                      "start": _api_time(ti.get("start_date")), "end": _api_time(ti.get("end_date")),
                      "peak_rss_mib": peak.get("peak_rss_mib"), "vm_hwm_mib": peak.get("vm_hwm_mib"),
                      "peak_uss_mib": peak.get("peak_uss_mib")})
    end = _api_time(final.get("end_date")) or seen_end
    retried = [t["task"] for t in tasks if (t.get("try_number") or 1) > 1]
    extract = [t for t in tasks if t["task"].startswith("extract[") and t["start"] and t["end"]]
    task_procs = [p for p in sampler.procs.values() if p["role"] == "task" and TASK_TITLE in p["title"]]
    by_role = {role: [p for p in sampler.procs.values() if p["role"] == role] for role in ("pool", "descendant")}
    row = {"via": "stack", "exit_code": 0 if final["state"] == "success" else 1, "state": final["state"],
           "spawned_at": spawned, "wall_s": round(end - spawned, 2), "seen_end_s": round(seen_end - spawned, 2),
           "stack_startup_s": stack.bench_startup_s, "stack_timings": dict(stack.timings),
           "budget_keys_cleared": cleared, "run_id": run["dag_run_id"], "retried_tasks": retried,
           # the mapped extract tasks run at once: their span is the extract's time
           "extract_s": round(max(t["end"] for t in extract) - min(t["start"] for t in extract), 2) if extract else None,
           "peak_rss_mib": round(max((p["vm_hwm_mib"] for p in task_procs), default=0.0), 1),
           "peak_uss_mib": round(max((p["peak_uss_mib"] for p in task_procs), default=0.0), 1),
           "pool_peak_rss_mib": round(max((p["vm_hwm_mib"] for p in by_role["pool"]), default=0.0), 1),
           "descendant_peak_rss_mib": round(max((p["vm_hwm_mib"] for p in by_role["descendant"]), default=0.0), 1),
           "task_processes": len(task_procs), "descendants": len(by_role["descendant"]), "tasks": tasks,
           "worker_processes": sampler.summary(), "artifacts": str(stack.artifacts)}
    if final["state"] != "success":
        row["verified"] = False
        row["verify_detail"] = f"dag run {final['state']}: " + stack.run_summary(dag_run.DAG_ID, run["dag_run_id"])[-3000:]
        return row
    spec = harness.conduit_spec("public")
    target = PostgresErpTarget(stack.erp_dsn())
    count, got, want = target.count(spec), target.key_checksum(spec), expectation.checksum()
    row["verified"] = count == n and got == want and not retried
    row["verify_detail"] = (f"rows {count}/{n}, key_checksum {got} {'==' if got == want else '!='} {want}"
                            + (f", tasks retried: {retried}" if retried else ""))
    return row


def no_change_run(stack) -> dict:
    """A second run at once, the CRM unchanged: an incremental run that reads a window and changes
    nothing. Its wall is what a run costs on this deployment whatever the data: the DAG's fixed cost."""
    from conduit.targets.sql import PostgresErpTarget

    spec, target = harness.conduit_spec("public"), PostgresErpTarget(stack.erp_dsn())
    count, checksum = target.count(spec), target.key_checksum(spec)
    spawned = time.time()
    run = stack.trigger(dag_run.DAG_ID)
    final = stack.wait_for_run(dag_run.DAG_ID, run["dag_run_id"], timeout=600)
    end = _api_time(final.get("end_date")) or time.time()
    tis = stack.task_instances(dag_run.DAG_ID, run["dag_run_id"])
    unchanged = target.count(spec) == count and target.key_checksum(spec) == checksum
    return {"state": final["state"], "wall_s": round(end - spawned, 2),
            "verified": final["state"] == "success" and unchanged, "erp_unchanged": unchanged,
            "tasks_s": {(t["task_id"] if t["map_index"] < 0 else f"{t['task_id']}[{t['map_index']}]"):
                        round(t["duration"], 2) if t.get("duration") is not None else None for t in tis}}


def run_conduit_script(n: int, crm, args, work: Path, expectation) -> dict:
    """``bench/conduit_sync.py`` (the steps, the spec's parallelism on threads) into PostgreSQL."""
    schema = f"{args.schema_prefix}_conduit_{n}"
    harness.fresh_schema(args.dsn, schema, f"{schema}_staging")
    ctx = {"base_url": crm.base_url, "dsn": args.dsn, "airflow_home": str(work / "airflow-home"),
           "conn_extra": args.conn_extra}
    measured, summary = harness.run_conduit(ctx, schema, f"real-limits-{n}", work / f"conduit-{n}.json",
                                            args.results_dir / f"real-limits-conduit-{n}.log")
    row = {"via": "script", **measured, "summary": summary, "extract_s": summary.get("phases_s", {}).get("extract")}
    row["verified"], row["verify_detail"] = (
        harness.verify("conduit", args.dsn, schema, n, "", expectation, summary) if measured["exit_code"] == 0
        else (False, f"exit code {measured['exit_code']}, see {measured['log']}"))
    return row


def run_dlt(n: int, crm, args, work: Path, crm_sum: str) -> dict:
    schema = f"{args.schema_prefix}_dlt_{n}"
    harness.fresh_schema(args.dsn, schema)
    with harness.pg_connect(args.dsn) as conn:  # dlt creates its dataset schema itself
        conn.execute(f"DROP SCHEMA {schema}")
    ctx = {"base_url": crm.base_url, "dsn": args.dsn, "dlt_python": args.dlt_python}
    measured, summary = harness.run_dlt(ctx, schema, work / f"dlt-{n}.json",
                                        args.results_dir / f"real-limits-dlt-{n}.log")
    row = {"via": "rest_api", **measured, "summary": summary, "extract_s": summary.get("steps_s", {}).get("extract")}
    row["verified"], row["verify_detail"] = (
        harness.verify("dlt", args.dsn, schema, n, crm_sum, None, summary) if measured["exit_code"] == 0
        else (False, f"exit code {measured['exit_code']}, see {measured['log']}"))
    return row


# --- one size -----------------------------------------------------------------------------------------------


def bench_size(n: int, args, budget: Budget, work: Path, rows: list[dict], save) -> None:
    from conduit.standin.testing import run_standin

    unlimited = {"interval_max": 10**9, "daily_max": 10**12}
    log(f"N={n}: reading the CRM's truth from an unlimited stand-in (seed {args.seed})")
    with run_standin(contacts=n, seed=args.seed, token=harness.TOKEN, startup_timeout=600, **unlimited) as crm:
        truth = harness.fetch_crm(crm.base_url)
        if args.no_limits:  # the contenders read this same stand-in: no limits, no latency
            check_and_run(n, crm, truth, args, None, work, rows, save)
            return
    check_and_run(n, None, truth, args, budget, work, rows, save)


def check_and_run(n: int, crm, truth: dict, args, budget: Budget | None, work: Path, rows: list[dict], save) -> None:
    from conduit.standin.testing import run_standin

    if len(truth["id"]) != n:
        raise SystemExit(f"the stand-in lists {len(truth['id'])} contacts, expected {n}")
    crm_sum = harness.property_checksum(truth)
    expectation = harness.ConduitExpectation(harness.conduit_spec("unused"), truth) if "conduit" in args.only else None
    truth.clear()
    if crm is not None:
        run_contenders(n, crm, args, None, work, rows, save, crm_sum, expectation)
        return
    log(f"N={n}: the limited stand-in: {budget.describe()}, {args.latency_ms} ms per reply; "
        f"ideal {n / budget.rate():.1f} s")
    with run_standin(contacts=n, seed=args.seed, token=harness.TOKEN, startup_timeout=600, enforce_rate_limits=True,
                     interval_max=budget.interval_max, interval_ms=budget.interval_ms, daily_max=budget.daily_max,
                     search_per_second=budget.search_per_second, slow_ms=args.latency_ms) as crm:
        run_contenders(n, crm, args, budget, work, rows, save, crm_sum, expectation)


def run_contenders(n: int, crm, args, budget: Budget | None, work: Path, rows: list[dict], save, crm_sum: str,
                   expectation) -> None:
    """Each contender against ``crm`` in turn, counted at the stand-in; ``budget`` None: no limits."""
    harness.STANDIN_PID = crm.process.pid
    ideal_s = n / budget.rate() if budget else None
    for i, name in enumerate(c for c in CONTENDERS if c in args.only):
        if i and budget:  # a fresh rolling window (and search second) for the next contender
            time.sleep(budget.interval_ms / 1000 + 1)
        stack = start_stack(n, crm, args, work) if name == "conduit" and args.conduit_via == "stack" else None
        try:
            clock = RequestClock(crm.base_url)
            before, load_before, refused_before = crm.admin.stats(), os.getloadavg(), refused_by_policy(crm.base_url)
            clock.start()
            try:
                if stack is not None:
                    row = run_conduit_stack(n, stack, args, expectation)
                elif name == "conduit":
                    run_conduit = run_conduit_dag if args.conduit_via == "dag" else run_conduit_script
                    row = run_conduit(n, crm, args, work, expectation)
                else:
                    row = run_dlt(n, crm, args, work, crm_sum)
            finally:
                clock.stop.set()
                clock.join()
            # the full run's requests and 429s; the no-change run's are its own
            after, refused = crm.admin.stats(), refused_by_policy(crm.base_url)
            if stack is not None and row["verified"]:
                row["no_change"] = no_change_run(stack)
                if not row["no_change"]["verified"]:
                    row["verified"] = False
                    row["verify_detail"] += f"; the no-change run after it: {row['no_change']}"
        finally:
            if stack is not None:  # before the next contender: an idle deployment still takes CPU
                leftovers = stop_stack(stack)
        if stack is not None:
            row.update(stack_stop_s=stack.timings.get("stop_s"), stack_leftovers=leftovers)
        row.update(contender=name, n=n, **counted(before, after), **phases(row, clock),
                   load_before=[round(x, 2) for x in load_before], load_after=[round(x, 2) for x in os.getloadavg()])
        row.update(judged(n, row, ideal_s))
        if refused is not None and refused_before is not None:
            row["http_429_by_policy"] = {k: v - refused_before.get(k, 0) for k, v in refused.items()
                                         if v != refused_before.get(k, 0)}
        rows.append(row)
        save()
        share = f"{row['share_of_ideal']:.0%} of the ideal, " if budget else ""
        log(f"{name} N={n}: {row['wall_s']:.1f} s, {row['requests']} requests, {row['http_429']} x 429, {share}"
            f"verified={row['verified']} ({row['verify_detail']})")


def phases(row: dict, clock: RequestClock) -> dict:
    """Spawn -> first CRM request (the fixed start-up cost), first -> last request, last -> exit."""
    spawned, wall = row["spawned_at"], row["wall_s"]
    if clock.first_at is None:
        return {"startup_s": None, "crm_phase_s": None, "after_last_request_s": None}
    startup = clock.first_at - spawned
    crm_phase = clock.last_at - clock.first_at
    return {"startup_s": round(startup, 2), "crm_phase_s": round(crm_phase, 2),
            "after_last_request_s": round(wall - startup - crm_phase, 2)}


def judged(n: int, row: dict, ideal_s: float | None) -> dict:
    """Rates, and without limits (``ideal_s`` None) no ideal and no target."""
    ok = row.get("exit_code") == 0 and row.get("verified")
    extract_s = row.get("extract_s")
    judged = {"records_per_s": round(n / row["wall_s"], 1) if ok else 0.0, "failed": not ok}
    if ideal_s is None:
        return {**judged, "ideal_s": None, "share_of_ideal": None, "extract_share_of_ideal": None,
                "target_s": None, "target_met": None}
    bound = ideal_s * TARGET_FACTOR + (row["startup_s"] or 0)
    return {**judged, "ideal_s": round(ideal_s, 2), "share_of_ideal": ideal_s / row["wall_s"] if ok else 0.0,
            "extract_share_of_ideal": ideal_s / extract_s if ok and extract_s else None,
            "target_s": round(bound, 2), "target_met": bool(ok and row["wall_s"] <= bound)}


def versus_dlt(rows: list[dict]) -> None:
    """Each row's records/s over dlt's at the same N (the issue's unlimited target: the DAG >= 5x)."""
    dlt = {r["n"]: r["records_per_s"] for r in rows if r["contender"] == "dlt" and not r["failed"]}
    for r in rows:
        r["vs_dlt"] = round(r["records_per_s"] / dlt[r["n"]], 2) if dlt.get(r["n"]) and not r["failed"] else None


# --- report -----------------------------------------------------------------------------------------------


def report(rows: list[dict], budget: Budget | None, latency_ms: int) -> str:
    versus_dlt(rows)
    if budget is None:
        return report_unlimited(rows)
    lines = [f"budget: {budget.describe()}; {latency_ms} ms latency on every reply",
             "share of ideal = (N / budget-bound rate) / wall; target: wall <= "
             f"{TARGET_FACTOR} x ideal + start-up (spawn -> first CRM request); requests and 429s counted by the stand-in"]
    head = (f"{'contender':<9} {'via':<8} {'N':>9} {'wall s':>8} {'start-up s':>10} {'extract s':>9} "
            f"{'requests':>8} {'429s':>5} {'rec/s':>7} {'vs dlt':>6} {'ideal s':>8} {'of ideal':>8} {'extract':>7} "
            f"{'target s':>8} {'target':>6} {'verified':>8}  load1")
    lines += [head, "-" * len(head)]
    for r in rows:
        share = r["extract_share_of_ideal"]
        lines.append(
            f"{r['contender']:<9} {r['via']:<8} {r['n']:>9} {r['wall_s']:>8.1f} {_num(r['startup_s']):>10} "
            f"{_num(r['extract_s']):>9} {r['requests']:>8} {r['http_429']:>5} {r['records_per_s']:>7,.0f} "
            f"{_ratio(r):>6} {r['ideal_s']:>8.1f} {r['share_of_ideal']:>8.0%} "
            f"{'-' if share is None else f'{share:.0%}':>7} "
            f"{r['target_s']:>8.1f} {'met' if r['target_met'] else 'MISSED':>6} {'FAILED' if r['failed'] else 'yes':>8}"
            f"  {r['load_before'][0]:.1f}/{r['load_after'][0]:.1f}")
    lines += ["", "of ideal = ideal / wall; extract = ideal / the extract step's own time (Conduit: its extract "
              "tasks; dlt: its extract step); start-up = spawn (stack: trigger) -> first CRM request "
              "(stand-in's clock, +-0.1 s)"]
    return "\n".join(lines + _details(rows))


def report_unlimited(rows: list[dict]) -> str:
    lines = ["no limits, no latency: the stand-in answers as fast as it can (CPU-bound); "
             "vs dlt = records/s / dlt's records/s at the same N (the issue's target: the DAG >= 5x at 1M)"]
    head = (f"{'contender':<9} {'via':<8} {'N':>9} {'wall s':>8} {'start-up s':>10} {'extract s':>9} "
            f"{'requests':>8} {'rec/s':>8} {'vs dlt':>6} {'peak RSS MiB':>12} {'verified':>8}  load1")
    lines += [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['contender']:<9} {r['via']:<8} {r['n']:>9} {r['wall_s']:>8.1f} {_num(r['startup_s']):>10} "
            f"{_num(r['extract_s']):>9} {r['requests']:>8} {r['records_per_s']:>8,.0f} {_ratio(r):>6} "
            f"{_num(r.get('peak_rss_mib')):>12} {'FAILED' if r['failed'] else 'yes':>8}"
            f"  {r['load_before'][0]:.1f}/{r['load_after'][0]:.1f}")
    lines += ["", "start-up = spawn (stack: trigger) -> first CRM request; peak RSS: the process (dags test: the CLI, "
              "every task in it; stack: the largest task process of the Celery worker)"]
    return "\n".join(lines + _details(rows))


def _details(rows: list[dict]) -> list[str]:
    lines = [f"  {r['contender']} N={r['n']}: first -> last CRM request {_num(r['crm_phase_s'])} s, then "
             f"{_num(r['after_last_request_s'])} s to exit; requests by endpoint {r['by_endpoint']}, errors "
             f"{r['errors_by_status']}{_policies(r)}; {r['verify_detail']}" for r in rows]
    for r in rows:
        if r.get("via") != "stack":
            continue
        lines += [f"  conduit on the deployment N={r['n']}: start-up {r['stack_startup_s']} s (not counted: "
                  f"{r['stack_timings']}), wall = trigger -> the run's end_date {r['wall_s']} s (seen by polling "
                  f"{r['seen_end_s']} s); {r['task_processes']} task processes, the largest {r['peak_rss_mib']} MiB VmHWM "
                  f"({r['peak_uss_mib']} MiB USS), pool processes (supervisors) up to {r['pool_peak_rss_mib']} MiB, "
                  f"{r['descendants']} processes the tasks forked up to {r['descendant_peak_rss_mib']} MiB; "
                  f"stopped in {r.get('stack_stop_s')} s",
                  f"    {'task':<22} {'state':<9} {'try':>3} {'start s':>8} {'s':>7}  {'peak RSS MiB':>12} {'VmHWM':>6} "
                  f"{'USS':>6}"]
        if r.get("no_change"):
            nc = r["no_change"]
            lines.append(f"    then a no-change run (the DAG's fixed cost here): {nc['wall_s']} s, {nc['state']}, ERP "
                         f"{'unchanged' if nc['erp_unchanged'] else 'CHANGED'}; task s: "
                         + ", ".join(f"{k} {_num(v)}" for k, v in nc["tasks_s"].items()))
        t0 = r["spawned_at"]
        for t in r["tasks"]:
            lines.append(f"    {t['task']:<22} {str(t['state']):<9} {t.get('try_number') or '-':>3} "
                         f"{_num(t['start'] - t0 if t['start'] else None):>8} {_num(t['duration_s']):>7}  "
                         f"{_num(t['peak_rss_mib']):>12} {_num(t['vm_hwm_mib']):>6} {_num(t.get('peak_uss_mib')):>6}")
    return lines


def _ratio(row: dict) -> str:
    return "-" if row.get("vs_dlt") is None else f"{row['vs_dlt']:.2f}x"


def _policies(row: dict) -> str:
    return f" (429s by policy {row['http_429_by_policy']})" if "http_429_by_policy" in row else ""


def _num(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="100000", help="comma-separated contact counts (default 100000)")
    p.add_argument("--only", default=",".join(CONTENDERS), help="comma-separated subset of conduit,dlt")
    p.add_argument("--tier", choices=sorted(TIERS), default="professional", help="HubSpot's limits (contract §1.8)")
    p.add_argument("--interval-max", type=int, default=0, help="requests per rolling interval (default: the tier's)")
    p.add_argument("--interval-ms", type=int, default=10_000, help="the rolling interval (HubSpot: 10 s)")
    p.add_argument("--daily-max", type=int, default=0, help="requests per day (default: the tier's)")
    p.add_argument("--search-per-second", type=int, default=5)
    p.add_argument("--latency-ms", type=int, default=150, help="delay of every CRM reply (HubSpot: 100-300 ms)")
    p.add_argument("--conn-extra", type=json.loads, default={},
                   help="JSON merged into Conduit's HubSpot connection extras, e.g. the rate budget's settings")
    p.add_argument("--conduit-via", choices=["dag", "stack", "script"], default="dag",
                   help="dag: airflow dags test (tasks one after the other); stack: a triggered run on a deployment "
                        "(tests/e2e/harness.py: scheduler + Celery worker, the mapped tasks at once; start-up not "
                        "counted); script: bench/conduit_sync.py, 4 threads")
    p.add_argument("--no-limits", action="store_true",
                   help="the stand-in without limits and without latency (CPU-bound): rows/s and the ratio to dlt's")
    p.add_argument("--redis-base", default="redis://127.0.0.1:6379", help="Redis of the stack's budget (and broker)")
    p.add_argument("--budget-redis-db", type=int, default=9,
                   help="the stack's budget DB (cleared before the run; must hold nothing else; not 13: e2e's broker)")
    p.add_argument("--stack-timeout", type=float, default=3600, help="longest wait for the stack's run, s")
    p.add_argument("--dsn", default=os.environ.get("BENCH_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=test"))
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--dlt-python", default=str(BENCH / ".venv-dlt" / "bin" / "python"))
    p.add_argument("--results-dir", type=Path, default=BENCH / "results")
    p.add_argument("--schema-prefix", default="bench_rl", help="PostgreSQL schemas <prefix>_<contender>_<N>, dropped")
    args = p.parse_args(argv)
    args.only = [c.strip() for c in args.only.split(",") if c.strip()]
    if set(args.only) - set(CONTENDERS):
        p.error(f"unknown contender(s) {sorted(set(args.only) - set(CONTENDERS))}; choose from {CONTENDERS}")
    if not isinstance(args.conn_extra, dict):
        p.error("--conn-extra must be a JSON object")
    budget = None if args.no_limits else budget_of(args)
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = args.results_dir / f"real-limits-{stamp}.json"
    meta = {"started": stamp, "host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "argv": sys.argv[1:], "sizes": sizes, "contenders": args.only, "tier": args.tier,
            "budget": asdict(budget) if budget else None, "budget_bound_rate": budget.rate() if budget else None,
            "no_limits": args.no_limits, "latency_ms": 0 if args.no_limits else args.latency_ms,
            "conn_extra": args.conn_extra, "conduit_via": args.conduit_via}
    rows: list[dict] = []

    def save() -> None:
        path.write_text(json.dumps({**meta, "rows": rows}, indent=2, default=str))

    # a SIGTERM unwinds like Ctrl-C, so the finally blocks stop the stand-ins and the deployment
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="conduit-real-limits-") as tmp:
        try:
            for n in sizes:
                bench_size(n, args, budget, Path(tmp), rows, save)
        finally:
            with harness.pg_connect(args.dsn) as conn:
                for n in sizes:
                    for name in CONTENDERS:
                        for suffix in ("", "_staging"):
                            conn.execute(f"DROP SCHEMA IF EXISTS {args.schema_prefix}_{name}_{n}{suffix} CASCADE")
    text = report(rows, budget, args.latency_ms)
    path.write_text(json.dumps({**meta, "rows": rows, "table": text.splitlines()}, indent=2, default=str))
    print(text)
    print(f"\nresults: {path}")
    return 0 if rows and not any(r["failed"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
