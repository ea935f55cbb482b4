"""The benchmark harness: Conduit vs dlt vs naive pandas, CRM stand-in -> PostgreSQL.

For each size N it starts the stand-in CRM seeded with N contacts (seed 1, rate-limit budgets
raised so the honest headers never read 0), reads the CRM's truth once over the same API, then
runs every contender as a SEPARATE PROCESS into its own fresh PostgreSQL schema, measuring wall
time and peak RSS (``os.wait4`` of that child: the largest RSS of it and anything it waited for;
plus a sampled peak of the whole process tree, psutil). Then it verifies each table:

* Conduit: row count == N and the target's ``key_checksum`` == ``frame_key_checksum`` of the CRM
  data mapped with the spec (so every ERP row equals the mapped CRM record);
* dlt, pandas: row count == N, distinct ids == N and a checksum over (id, every property) equal to
  the CRM's.

Last, per size, the incremental run: ``bulk_modify`` of 1% of contacts, then Conduit's incremental
path (watermark from the target, cursor lag 0), verified as "exactly those rows updated, every
row still equals the CRM". ``bash bench/run.sh --help`` for options.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
CONTENDERS = ("conduit", "dlt", "pandas")
PROPERTIES = ["email", "firstname", "lastname", "phone", "country", "company", "lifecyclestage", "createdate",
              "lastmodifieddate", "hs_object_id"]
NULL = "\x1fNULL\x1f"  # stands for a missing value in the row digests (never occurs in CRM text)
TOKEN = "standin-token"


def log(message: str) -> None:
    load = "/".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"[bench {datetime.now():%H:%M:%S} load {load}] {message}", file=sys.stderr, flush=True)


# --- measuring a child process -------------------------------------------------------------------


class TreeSampler(threading.Thread):
    """Samples the summed RSS of a process and its descendants (psutil), every ``interval`` s."""

    def __init__(self, pid: int, interval: float = 0.1):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            import psutil
        except ImportError:
            return
        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self.stop.is_set():
            total = 0
            try:
                for proc in [root, *root.children(recursive=True)]:
                    try:
                        total += proc.memory_info().rss
                    except psutil.Error:
                        pass
            except psutil.Error:
                return
            self.peak = max(self.peak, total)
            self.stop.wait(self.interval)


def cpu_seconds(pid: int | None) -> float | None:
    """user+system CPU seconds of a process so far (the stand-in's share of a contender's run)."""
    try:
        import psutil

        times = psutil.Process(pid).cpu_times()
        return times.user + times.system
    except Exception:  # no psutil, no pid, or gone
        return None


STANDIN_PID: int | None = None


def run_measured(name: str, argv: list[str], env: dict[str, str], log_path: Path) -> dict:
    """Run one contender (``argv`` = [python, script, args...]) through bench/measure.py: wall
    seconds, its peak RSS (VmHWM), a sampled peak of its process tree, CPU time, load averages."""
    rss_out = log_path.with_suffix(".rss.json")
    rss_out.unlink(missing_ok=True)
    argv = [argv[0], str(BENCH / "measure.py"), "--rss-out", str(rss_out), "--", *argv[1:]]
    load_before = os.getloadavg()
    standin_before = cpu_seconds(STANDIN_PID)
    log(f"{name}: {Path(argv[5]).name} ... (log {log_path})")
    with open(log_path, "w") as out:
        started, spawned_at = time.monotonic(), time.time()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        sampler = TreeSampler(proc.pid)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        sampler.stop.set()
        sampler.join()
    rss = json.loads(rss_out.read_text()) if rss_out.exists() else {}
    return {"exit_code": proc.returncode, "wall_s": round(wall, 3), "spawned_at": spawned_at,
            "peak_rss_mib": rss.get("VmHWM_mib", float("nan")),
            "wait4_maxrss_mib": round(usage.ru_maxrss / 1024, 1),  # includes the harness's RSS at fork: see measure.py
            "tree_peak_rss_mib": round(sampler.peak / 2**20, 1) if sampler.peak else None,
            "standin_cpu_s": (round(cpu_seconds(STANDIN_PID) - standin_before, 2)
                              if standin_before is not None else None),
            "cpu_user_s": round(usage.ru_utime, 2), "cpu_sys_s": round(usage.ru_stime, 2),
            "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in os.getloadavg()], "log": str(log_path)}


# --- the CRM's truth ----------------------------------------------------------------------------


def fetch_crm(base_url: str) -> dict[str, list]:
    """Every live contact with the bench properties, column-wise, in id order (the list API)."""
    import requests

    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {TOKEN}"
    params = {"limit": 100, "properties": ",".join(PROPERTIES), "archived": "false"}
    columns: dict[str, list] = {"id": [], **{p: [] for p in PROPERTIES}}
    while True:
        reply = session.get(f"{base_url}/crm/v3/objects/contacts", params=params, timeout=60)
        reply.raise_for_status()
        body = reply.json()
        for record in body["results"]:
            columns["id"].append(record["id"])
            props = record["properties"]
            for p in PROPERTIES:
                columns[p].append(props.get(p))
        after = ((body.get("paging") or {}).get("next") or {}).get("after")
        if not after:
            return columns
        params["after"] = after


def digest64(text: str) -> int:
    return int.from_bytes(hashlib.md5(text.encode()).digest()[:8], "big")


def property_checksum(columns: dict[str, list]) -> str:
    """count:sum mod 2**64 of the first 64 bits of md5(id, every property joined by \\x1e)."""
    total = 0
    rows = zip(columns["id"], *(columns[p] for p in PROPERTIES), strict=True)
    count = 0
    for row in rows:
        count += 1
        total += digest64("\x1e".join(NULL if v is None else v for v in row))
    return f"{count}:{total % 2**64:016x}"


def table_property_checksum(conn, table: str, column_of: dict[str, str]) -> str:
    """The same checksum computed by PostgreSQL over a contender's table."""
    parts = " || chr(30) || ".join(f"coalesce({column_of[c]}::text, chr(31) || 'NULL' || chr(31))"
                                   for c in ["id", *PROPERTIES])
    sql = (f"SELECT count(*), coalesce(sum(('x' || left(md5({parts}), 16))::bit(64)::bigint::numeric), 0) "
           f"FROM {table}")
    count, total = conn.execute(sql).fetchone()
    return f"{count}:{int(total) % 2**64:016x}"


class ConduitExpectation:
    """The CRM data mapped with the flagship spec: (key, row_hash) per contact, for the ERP checksum."""

    def __init__(self, spec, columns: dict[str, list]):
        self.spec = spec
        self.hashes: dict[str, str] = {}
        self.update(columns)

    def update(self, columns: dict[str, list]) -> None:
        import pyarrow as pa

        from conduit.pipeline.steps import raw_properties
        from conduit.transforms.mapping import map_frame

        props = raw_properties(self.spec)
        key, step = self.spec.target.key, 100_000
        for start in range(0, len(columns["id"]), step):
            table = pa.table({"id": pa.array(columns["id"][start:start + step], pa.string()),
                              **{p: pa.array(columns[p][start:start + step], pa.string()) for p in props}})
            mapped = map_frame(table.to_pandas(), self.spec)
            self.hashes.update(zip(mapped[key].astype(str), mapped["row_hash"], strict=True))

    def checksum(self) -> str:
        from conduit.targets.base import key_checksum_of

        return key_checksum_of(self.hashes.items())


# --- contenders -----------------------------------------------------------------------------------


def pg_connect(dsn: str):
    import psycopg

    return psycopg.connect(dsn, autocommit=True)


def fresh_schema(dsn: str, *schemas: str) -> None:
    with pg_connect(dsn) as conn:
        for schema in schemas:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        conn.execute(f"CREATE SCHEMA {schemas[0]}")


def conduit_spec(schema: str):
    sys.path.insert(0, str(BENCH))
    from conduit_sync import bench_spec

    return bench_spec(schema, 0)


def run_conduit(ctx: dict, schema: str, run_id: str, out: Path, log_path: Path) -> tuple[dict, dict]:
    env = {**os.environ, "AIRFLOW_HOME": ctx["airflow_home"], "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW_CONN_HUBSPOT_DEFAULT": json.dumps(
               {"conn_type": "hubspot", "host": ctx["base_url"], "password": TOKEN,
                "extra": {"api_version": "v3", **ctx.get("conn_extra", {})}})}
    argv = [sys.executable, str(BENCH / "conduit_sync.py"), "--dsn", ctx["dsn"], "--schema", schema,
            "--run-id", run_id, "--lag-seconds", "0", "--out", str(out)]
    measured = run_measured("conduit", argv, env, log_path)
    return measured, json.loads(out.read_text()) if measured["exit_code"] == 0 else {}


def run_dlt(ctx: dict, schema: str, out: Path, log_path: Path) -> tuple[dict, dict]:
    from psycopg.conninfo import conninfo_to_dict

    info = conninfo_to_dict(ctx["dsn"])
    url = (f"postgresql://{info.get('user', 'postgres')}:{info.get('password') or 'unused'}@"
           f"{info.get('host', '127.0.0.1')}:{info.get('port', 5432)}/{info.get('dbname', 'test')}")
    argv = [ctx["dlt_python"], str(BENCH / "dlt_sync.py"), "--base-url", ctx["base_url"], "--token", TOKEN,
            "--dsn", url, "--schema", schema, "--out", str(out)]
    env = {**os.environ, "RUNTIME__DLTHUB_TELEMETRY": "false"}
    env.pop("VIRTUAL_ENV", None)
    measured = run_measured("dlt", argv, env, log_path)
    return measured, json.loads(out.read_text()) if measured["exit_code"] == 0 else {}


def run_pandas(ctx: dict, schema: str, out: Path, log_path: Path) -> tuple[dict, dict]:
    from psycopg.conninfo import conninfo_to_dict

    info = conninfo_to_dict(ctx["dsn"])
    password = f":{info['password']}" if info.get("password") else ""
    url = (f"postgresql+psycopg://{info.get('user', 'postgres')}{password}@{info.get('host', '127.0.0.1')}:"
           f"{info.get('port', 5432)}/{info.get('dbname', 'test')}")
    argv = [sys.executable, str(BENCH / "pandas_sync.py"), "--base-url", ctx["base_url"], "--token", TOKEN,
            "--url", url, "--schema", schema, "--out", str(out)]
    measured = run_measured("pandas", argv, dict(os.environ), log_path)
    return measured, json.loads(out.read_text()) if measured["exit_code"] == 0 else {}


# --- one size ---------------------------------------------------------------------------------------


def bench_size(n: int, args, work: Path, rows: list[dict], save) -> None:
    """Run every contender at size ``n``, appending result rows (saved after each one)."""
    from conduit.standin.testing import run_standin

    tag = f"{n}"
    log(f"N={n}: starting the stand-in")
    with run_standin(contacts=n, seed=args.seed, token=TOKEN, interval_max=10**9, daily_max=10**12,
                     startup_timeout=600) as crm:
        global STANDIN_PID
        STANDIN_PID = crm.process.pid
        ctx = {"base_url": crm.base_url, "dsn": args.dsn, "dlt_python": args.dlt_python,
               "airflow_home": str(work / "airflow-home")}
        t = time.monotonic()
        truth = fetch_crm(crm.base_url)
        log(f"N={n}: read the CRM's truth ({len(truth['id'])} contacts) in {time.monotonic() - t:.1f}s")
        if len(truth["id"]) != n:
            raise SystemExit(f"the stand-in lists {len(truth['id'])} contacts, expected {n}")
        crm_sum = property_checksum(truth)
        expectation = None
        if "conduit" in args.only:
            t = time.monotonic()
            expectation = ConduitExpectation(conduit_spec("unused"), truth)
            log(f"N={n}: mapped the truth with the spec in {time.monotonic() - t:.1f}s")

        for name in [c for c in CONTENDERS if c in args.only]:
            if name == "pandas" and args.pandas_max and n > args.pandas_max:
                rows.append({"contender": name, "n": n, "mode": "full", "skipped": f"--pandas-max {args.pandas_max}"})
                save()
                log(f"pandas at N={n}: skipped (--pandas-max {args.pandas_max})")
                continue
            schema = f"{args.schema_prefix}_{name}_{tag}"
            out, log_path = work / f"{name}-{tag}.json", args.results_dir / f"{name}-{tag}.log"
            fresh_schema(args.dsn, schema, f"{schema}_staging")
            if name == "conduit":
                measured, summary = run_conduit(ctx, schema, f"bench-full-{tag}", out, log_path)
            elif name == "dlt":
                with pg_connect(args.dsn) as conn:  # dlt creates its dataset schema itself
                    conn.execute(f"DROP SCHEMA {schema}")
                measured, summary = run_dlt(ctx, schema, out, log_path)
            else:
                measured, summary = run_pandas(ctx, schema, out, log_path)
            row = {"contender": name, "n": n, "mode": "full", "rows": n, **measured, "summary": summary}
            row["verified"], row["verify_detail"] = (
                verify(name, args.dsn, schema, n, crm_sum, expectation, summary) if measured["exit_code"] == 0
                else (False, f"exit code {measured['exit_code']}, see {log_path}"))
            log(f"{name} N={n}: {row['wall_s']:.1f}s, peak RSS {row['peak_rss_mib']} MiB, "
                f"verified={row['verified']} ({row['verify_detail']})")
            rows.append(row)
            save()

        full = next((r for r in rows if r["contender"] == "conduit" and r["n"] == n and r.get("mode") == "full"), None)
        if full and full.get("verified") and args.incremental:
            rows.append(incremental(n, args, ctx, crm, truth, expectation, work))
            save()


def verify(name: str, dsn: str, schema: str, n: int, crm_sum: str, expectation, summary: dict) -> tuple[bool, str]:
    with pg_connect(dsn) as conn:
        if name == "conduit":
            from conduit.targets.sql import PostgresErpTarget

            spec = conduit_spec(schema)
            target = PostgresErpTarget(dsn)
            count, got, want = target.count(spec), target.key_checksum(spec), expectation.checksum()
            rejected = summary.get("gate", {}).get("rejected", 0)
            ok = count == n and got == want and rejected == 0
            return ok, f"rows {count}/{n}, key_checksum {got} {'==' if got == want else '!='} {want}, rejected {rejected}"
        table = f"{schema}.contacts"
        column_of = ({"id": "id", **{p: f"properties__{p}" for p in PROPERTIES}} if name == "dlt"
                     else {c: c for c in ["id", *PROPERTIES]})
        count, ids = conn.execute(f"SELECT count(*), count(DISTINCT id) FROM {table}").fetchone()
        got = table_property_checksum(conn, table, column_of)
    ok = count == n and ids == n and got == crm_sum
    return ok, f"rows {count}/{n}, distinct ids {ids}, property checksum {got} {'==' if got == crm_sum else '!='} {crm_sum}"


def incremental(n: int, args, ctx: dict, crm, truth: dict, expectation: ConduitExpectation, work: Path) -> dict:
    from conduit.standin.data import iso_ms

    count = max(1, round(n * args.incremental_fraction))
    schema, tag = f"{args.schema_prefix}_conduit_{n}", f"{n}"
    company = f"Bench Changed {n} GmbH"
    changed = crm.admin.bulk_modify(count=count, properties={"company": company}, seed=args.seed)
    ids, modified = set(changed["ids"]), iso_ms(changed["lastmodifieddate_ms"])
    log(f"N={n}: modified {len(ids)} contacts through the admin API (company, lastmodifieddate {modified})")
    positions = [i for i, record_id in enumerate(truth["id"]) if record_id in ids]
    for i in positions:
        truth["company"][i], truth["lastmodifieddate"][i] = company, modified
    expectation.update({k: [v[i] for i in positions] for k, v in truth.items()})
    time.sleep(0.01)  # the run's upper bound (its start, lag 0) must lie after the change's millisecond
    run_id = f"bench-incremental-{tag}"
    out, log_path = work / f"conduit-incr-{tag}.json", args.results_dir / f"conduit-incremental-{tag}.log"
    measured, summary = run_conduit(ctx, schema, run_id, out, log_path)
    row = {"contender": "conduit", "n": n, "mode": f"incremental ({len(ids)} changed)", "rows": len(ids),
           **measured, "summary": summary}
    if measured["exit_code"] != 0:
        row["verified"], row["verify_detail"] = False, f"exit code {measured['exit_code']}, see {log_path}"
        return row
    from conduit.targets.sql import PostgresErpTarget

    spec = conduit_spec(schema)
    target = PostgresErpTarget(args.dsn)
    got, want = target.key_checksum(spec), expectation.checksum()
    with pg_connect(args.dsn) as conn:
        touched = {str(r[0]) for r in conn.execute(
            f"SELECT crm_id FROM {schema}.erp_customers WHERE last_run_id = %s", [run_id])}
    load = summary["load"]
    ok = (summary["extract"]["mode"] == "incremental" and load["updated"] == len(ids) and load["inserted"] == 0
          and load["deleted"] == 0 and touched == ids and got == want and target.count(spec) == n)
    row["verified"] = ok
    row["verify_detail"] = (f"mode {summary['extract']['mode']}, extracted {summary['extract']['rows']}, "
                            f"updated {load['updated']}/{len(ids)}, inserted {load['inserted']}, rows touched by the "
                            f"run == modified ids: {touched == ids}, key_checksum {'==' if got == want else '!='} CRM")
    log(f"conduit incremental N={n}: {row['wall_s']:.1f}s, verified={ok} ({row['verify_detail']})")
    return row


# --- report ---------------------------------------------------------------------------------------------


def report(rows: list[dict]) -> str:
    dlt_rate = {r["n"]: r["rows"] / r["wall_s"] for r in rows
                if r["contender"] == "dlt" and r.get("mode") == "full" and r.get("exit_code") == 0}
    head = (f"{'contender':<9} {'N':>9} {'mode':<28} {'wall s':>8} {'rows/s':>9} {'peak RSS MiB':>12} "
            f"{'tree MiB':>9} {'vs dlt':>7} {'verified':>8} {'CPU s':>7} {'CRM CPU s':>9}  load1 before/after")
    lines = [head, "-" * len(head)]
    for r in rows:
        if r.get("skipped"):
            lines.append(f"{r['contender']:<9} {r['n']:>9} skipped: {r['skipped']}")
            continue
        if r.get("exit_code") != 0:
            lines.append(f"{r['contender']:<9} {r['n']:>9} {r['mode']:<28} FAILED after {r['wall_s']:.1f}s: "
                         f"{r.get('verify_detail')}")
            continue
        rate = r["rows"] / r["wall_s"]
        ratio = f"{rate / dlt_rate[r['n']]:.1f}x" if r["n"] in dlt_rate and r["mode"] == "full" else "-"
        lines.append(f"{r['contender']:<9} {r['n']:>9} {r['mode']:<28} {r['wall_s']:>8.1f} {rate:>9,.0f} "
                     f"{r['peak_rss_mib']:>12.0f} {r['tree_peak_rss_mib'] or 0:>9.0f} {ratio:>7} "
                     f"{'yes' if r['verified'] else 'NO':>8} {r['cpu_user_s'] + r['cpu_sys_s']:>7.1f} "
                     f"{_num(r.get('standin_cpu_s')):>9}  {r['load_before'][0]:.2f}/{r['load_after'][0]:.2f}")
    lines.append("")
    lines += targets(rows)
    return "\n".join(lines)


def _num(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def targets(rows: list[dict]) -> list[str]:
    out = ["targets:"]
    rows = [r for r in rows if r.get("verified")]
    full = {r["n"]: r for r in rows if r["contender"] == "conduit" and r.get("mode") == "full"}
    incr = {r["n"]: r for r in rows if r["contender"] == "conduit" and str(r.get("mode", "")).startswith("incr")}
    dlt = {r["n"]: r for r in rows if r["contender"] == "dlt" and r.get("mode") == "full"}
    for n, r in sorted(full.items()):
        if n in dlt:
            ratio = (n / r["wall_s"]) / (n / dlt[n]["wall_s"])
            out.append(f"  N={n}: Conduit rows/s = {ratio:.1f}x dlt's (target >= 10x): {'met' if ratio >= 10 else 'MISSED'}")
        out.append(f"  N={n}: Conduit peak RSS {r['peak_rss_mib']:.0f} MiB (target <= 256): "
                   f"{'met' if r['peak_rss_mib'] <= 256 else 'MISSED'}")
        if n in incr:
            share = incr[n]["wall_s"] / r["wall_s"]
            out.append(f"  N={n}: incremental (1% changed) {incr[n]['wall_s']:.1f}s = {share:.1%} of the full sync "
                       f"(target <= 10%): {'met' if share <= 0.10 else 'MISSED'}")
    return out


def merge(paths: list[Path], results_dir: Path) -> int:
    latest: dict[tuple, dict] = {}
    for path in paths:
        for row in json.loads(path.read_text())["rows"]:
            if row.get("skipped") or row.get("exit_code") == 0:
                row.setdefault("source", path.name)
                key = (row["contender"], row["n"], row.get("mode", "full").split(" (")[0])
                if not (row.get("skipped") and key in latest):
                    latest[key] = row
    rows = sorted(latest.values(), key=lambda r: (r["n"], r.get("mode", "full") != "full", CONTENDERS.index(r["contender"])))
    text = report(rows)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = results_dir / f"bench-merged-{stamp}.json"
    results_dir.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"merged_from": [str(p) for p in paths], "rows": rows, "table": text.splitlines()},
                              indent=2, default=str))
    print(text)
    print(f"\nresults: {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Conduit vs dlt vs pandas: CRM stand-in -> PostgreSQL.")
    p.add_argument("--sizes", default="100000,1000000", help="comma-separated contact counts")
    p.add_argument("--only", default=",".join(CONTENDERS), help="comma-separated subset of conduit,dlt,pandas")
    p.add_argument("--dsn", default=os.environ.get("BENCH_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=test"))
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--pandas-max", type=int, default=0, help="skip pandas above this N (0: never skip)")
    p.add_argument("--incremental-fraction", type=float, default=0.01)
    p.add_argument("--no-incremental", dest="incremental", action="store_false")
    p.add_argument("--dlt-python", default=str(BENCH / ".venv-dlt" / "bin" / "python"))
    p.add_argument("--results-dir", type=Path, default=BENCH / "results")
    p.add_argument("--schema-prefix", default="bench", help="schemas are <prefix>_<contender>_<N>, dropped at the end")
    p.add_argument("--keep-schemas", action="store_true", help="leave the schemas for inspection")
    p.add_argument("--merge", nargs="+", type=Path, metavar="JSON",
                   help="run nothing: print one table from earlier result files (the latest row per "
                        "contender, N and mode wins) and write it as bench-merged-<time>.json")
    args = p.parse_args(argv)
    if args.merge:
        return merge(args.merge, args.results_dir)
    args.only = [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = set(args.only) - set(CONTENDERS)
    if unknown:
        p.error(f"unknown contender(s) {sorted(unknown)}; choose from {CONTENDERS}")
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    rows: list[dict] = []
    path = args.results_dir / f"bench-{stamp}.json"
    meta = {"started": stamp, "host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "argv": sys.argv[1:], "sizes": sizes, "contenders": args.only}

    def save() -> None:
        path.write_text(json.dumps({**meta, "rows": rows}, indent=2, default=str))

    with tempfile.TemporaryDirectory(prefix="conduit-bench-") as tmp:
        for n in sizes:
            bench_size(n, args, Path(tmp), rows, save)
            if not args.keep_schemas:
                with pg_connect(args.dsn) as conn:
                    for name in CONTENDERS:
                        for suffix in ("", "_staging"):
                            conn.execute(f"DROP SCHEMA IF EXISTS {args.schema_prefix}_{name}_{n}{suffix} CASCADE")
    text = report(rows)
    path.write_text(json.dumps({**meta, "rows": rows, "table": text.splitlines()}, indent=2, default=str))
    print(text)
    print(f"\nresults: {path}")
    return 0 if all(r.get("verified") or r.get("skipped") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
