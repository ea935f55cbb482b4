"""dlt's contender: its ``rest_api`` source against the stand-in's contacts listing, into
PostgreSQL with ``write_disposition="merge"`` on ``id``. Runs in bench/.venv-dlt (dlt is not in
the project's lock: its pins fight Airflow's); only the standard library and dlt are used here.

    bench/.venv-dlt/bin/python bench/dlt_sync.py --base-url http://127.0.0.1:8700 --token standin-token \\
        --dsn postgresql://postgres@127.0.0.1:5432/test --schema bench_dlt --out /tmp/dlt.json

The table lands as ``<schema>.contacts`` with columns ``id`` and ``properties__<name>``. Every
property is hinted as text so values arrive exactly as the API sent them (dlt would otherwise
turn ISO dates into timestamps), which is what the harness checks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

PROPERTIES = ["email", "firstname", "lastname", "phone", "country", "company", "lifecyclestage", "createdate",
              "lastmodifieddate", "hs_object_id"]


def vm_hwm_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base-url", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--dsn", required=True, help="postgresql:// URL")
    p.add_argument("--schema", required=True, help="dlt dataset name (a PostgreSQL schema)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    started = time.monotonic()

    import dlt
    from dlt.sources.rest_api import rest_api_source

    imported = time.monotonic()
    source = rest_api_source({
        "client": {
            "base_url": args.base_url,
            "auth": {"type": "bearer", "token": args.token},
            "paginator": {"type": "cursor", "cursor_path": "paging.next.after", "cursor_param": "after"},
        },
        "resource_defaults": {"primary_key": "id", "write_disposition": "merge"},
        "resources": [{
            "name": "contacts",
            "endpoint": {
                "path": "crm/v3/objects/contacts",
                "params": {"limit": 100, "properties": ",".join(PROPERTIES), "archived": "false"},
                "data_selector": "results",
            },
            "columns": {f"properties__{name}": {"data_type": "text"} for name in PROPERTIES},
        }],
    })
    with tempfile.TemporaryDirectory(prefix="dlt-bench-") as pipelines_dir:
        pipeline = dlt.pipeline(pipeline_name=f"bench_{args.schema}", pipelines_dir=pipelines_dir,
                                destination=dlt.destinations.postgres(credentials=args.dsn),
                                dataset_name=args.schema, progress="log" if sys.stderr.isatty() else None)
        info = pipeline.run(source)
        trace = pipeline.last_trace
        steps = {s.step: round((s.finished_at - s.started_at).total_seconds(), 3) for s in trace.steps
                 if s.finished_at and s.started_at}
        rows = pipeline.last_trace.last_normalize_info.row_counts if trace.last_normalize_info else {}
    summary = {"dlt_version": dlt.__version__, "import_s": round(imported - started, 3), "steps_s": steps,
               "row_counts": dict(rows), "loads": len(info.loads_ids), "table": f"{args.schema}.contacts",
               "vm_hwm_mib": vm_hwm_mib()}
    Path(args.out).write_text(json.dumps(summary, default=str, indent=2))
    print(f"dlt done in {time.monotonic() - started:.1f}s: {summary}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
