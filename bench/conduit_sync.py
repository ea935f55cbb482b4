"""Conduit's contender: the flagship sync through ``conduit.pipeline.steps``, exactly as the
operators call them (extract -> transform -> quality gate -> load), in ONE process so that its
peak RSS covers every step. The bench harness (bench/run.py) starts it and measures it.

    AIRFLOW_CONN_HUBSPOT_DEFAULT='{"conn_type": "hubspot", "host": "http://127.0.0.1:8700",
                                   "password": "standin-token", "extra": {"api_version": "v3"}}' \\
    .venv/bin/python bench/conduit_sync.py --dsn "host=127.0.0.1 user=postgres dbname=test" \\
        --schema bench_conduit --run-id full-1 --out /tmp/conduit.json

The run is decided as the DAG's ``plan_extract`` task decides it (``run_plan.plan_run``: without
a watermark in the target, a fresh schema, it reads everything; with one, the incremental window;
``--full-refresh`` as the DAG's param). The extract follows the DAG: ``plan_extract`` (a full read
is split into ``source.parallelism`` id ranges), then ``extract_item`` per item, each with its own
source (and hook) as each mapped task has, here on threads of this one process (``--workers 1``
reads them one after another). ``--lag-seconds`` overrides the spec's lag so a benchmark's
just-modified records fall inside the window. The GX Data Docs step is not run: it runs beside the
gate in the DAG, off the load's path.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC_FILE = ROOT / "include" / "syncs" / "crm_to_erp_customer_sync.yaml"
SUITE_DIR = ROOT / "include" / "expectations"


def rss_mib() -> float:
    """This address space's peak RSS (VmHWM; ``ru_maxrss`` would include the parent's at fork)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def bench_spec(schema: str, lag_seconds: int | None):
    from conduit.specs.model import load_spec

    spec = load_spec(SPEC_FILE)
    target = spec.target.model_copy(update={"db_schema": schema})
    source = spec.source
    if lag_seconds is not None:
        source = source.model_copy(update={"cursor": source.cursor.model_copy(update={"lag_seconds": lag_seconds})})
    return spec.model_copy(update={"target": target, "source": source})


def plan_this_run(spec, target, *, full_refresh: bool = False):
    """The run's decision as ``CrmExtractPlanOperator`` makes it for a manual run (``plan_run``)."""
    from conduit.pipeline.run_plan import plan_run, watermark_to_go_by

    target.ensure_ready(spec)
    return plan_run(spec, stored_watermark_ms=watermark_to_go_by(target, spec),
                    run_start_ms=int(time.time() * 1000), full_refresh=full_refresh)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dsn", required=True, help="libpq DSN of the ERP database")
    p.add_argument("--schema", required=True)
    p.add_argument("--run-id", required=True)
    p.add_argument("--lag-seconds", type=int, default=None, help="override the spec's cursor lag")
    p.add_argument("--workers", type=int, default=None,
                   help="parallel extract items (default: the spec's source.parallelism, as the DAG maps them)")
    p.add_argument("--reconcile", action="store_true", help="also run the reconcile step (timed separately)")
    p.add_argument("--full-refresh", action="store_true",
                   help="read everything and delete what was not read, as the DAG's full_refresh param")
    p.add_argument("--out", required=True, help="write the summary JSON here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s conduit %(message)s", stream=sys.stderr)
    log = logging.getLogger("bench.conduit")

    started = time.monotonic()
    phases: dict[str, float] = {}
    rss: dict[str, float] = {}

    def mark(name: str, since: float) -> float:
        now = time.monotonic()
        phases[name] = round(now - since, 3)
        rss[name] = round(rss_mib(), 1)
        return now

    from conduit.pipeline import steps
    from conduit.pipeline.staging import RunStaging
    from conduit.sources import source_for
    from conduit.targets.sql import PostgresErpTarget

    t = mark("import", started)
    spec = bench_spec(args.schema, args.lag_seconds)
    source = source_for(spec)
    target = PostgresErpTarget(args.dsn)
    staging_dir = Path(tempfile.mkdtemp(prefix="conduit-bench-staging-"))
    staging = RunStaging.for_run(spec.name, args.run_id, base=staging_dir)
    try:
        # --- extract: CrmExtractPlanOperator, then CrmExtractOperator mapped over the plan's items
        # (one task, and one source, per item; here one thread per item, all in this process) ---
        run = plan_this_run(spec, target, full_refresh=args.full_refresh)
        workers = spec.source.parallelism if args.workers is None else args.workers
        items = steps.plan_extract(source, run, parallelism=workers)
        staging.reset("raw")
        staging.reset("archived")
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            results = list(pool.map(
                lambda item: steps.extract_item(source_for(spec), staging, item, logger=log), items))
        extracted = steps.summarize_extract(results)
        extracted["requests"] = sum(r["requests"] for r in results)  # each item has its own source
        extracted["items"] = len(items)
        extracted["workers"] = workers
        t = mark("extract", t)
        # --- transform (MappingTransformOperator.execute) ---
        mapped = steps.transform(spec, staging)
        t = mark("transform", t)
        # --- quality gate (QualityGateOperator.execute) ---
        _, decision, gate_summary = steps.gate(target, spec, staging, SUITE_DIR / spec.quality.suite,
                                               run_id=args.run_id, full_extract=extracted["mode"] == "full")
        t = mark("gate", t)
        if not decision.load:
            raise SystemExit(f"quality gate failed: {decision.reason}")
        # --- load (ErpUpsertOperator.execute): deletes what was not read as the plan says ---
        result = steps.load(target, spec, staging, run_id=args.run_id, watermark_ms=run.watermark_ms,
                            full_refresh=run.delete_missing)
        t = mark("load", t)
        reconciled = None
        if args.reconcile:
            reconciled = steps.reconcile(source, target, spec, staging, upper_ms=run.watermark_ms,
                                         full_read=run.mode == "full")
            t = mark("reconcile", t)
    finally:
        shutil.rmtree(staging_dir, ignore_errors=True)
    from dataclasses import asdict

    summary = {"extract": extracted, "transform": mapped, "gate": gate_summary, "load": asdict(result),
               "reconcile": reconciled, "phases_s": phases, "peak_rss_mib_after": rss,
               "modules": sorted(m for m in ("pandas", "pyarrow", "great_expectations", "airflow", "numpy")
                                 if m in sys.modules)}
    Path(args.out).write_text(json.dumps(summary, default=str, indent=2))
    log.info("done in %.1fs: %s", time.monotonic() - started, summary["load"])
    return 0


if __name__ == "__main__":
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    sys.exit(main())
