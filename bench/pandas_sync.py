"""The naive pandas contender: page through the contacts listing with ``requests``, build one
DataFrame, ``DataFrame.to_sql(method="multi")`` into a staging table, then
``INSERT ... ON CONFLICT (id) DO UPDATE`` into the target. What a quick script usually does.

    .venv/bin/python bench/pandas_sync.py --base-url http://127.0.0.1:8700 --token standin-token \\
        --url postgresql+psycopg://postgres@127.0.0.1:5432/test --schema bench_pandas --out /tmp/pandas.json

The target is ``<schema>.contacts``: ``id`` (primary key) and one text column per property.
"""

from __future__ import annotations

import argparse
import json
import sys
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
    p.add_argument("--url", required=True, help="SQLAlchemy URL")
    p.add_argument("--schema", required=True)
    p.add_argument("--chunksize", type=int, default=1000, help="rows per multi-row INSERT (PostgreSQL caps "
                   "a statement at 65,535 parameters)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    started = time.monotonic()
    phases: dict[str, float] = {}

    import pandas as pd
    import requests
    import sqlalchemy as sa

    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {args.token}"
    url = f"{args.base_url}/crm/v3/objects/contacts"
    params = {"limit": 100, "properties": ",".join(PROPERTIES), "archived": "false"}
    records = []
    t = time.monotonic()
    while True:
        reply = session.get(url, params=params, timeout=60)
        reply.raise_for_status()
        body = reply.json()
        records.extend(body["results"])
        after = (body.get("paging") or {}).get("next", {}).get("after")
        if not after:
            break
        params["after"] = after
    phases["fetch"] = round(time.monotonic() - t, 3)

    t = time.monotonic()
    frame = pd.json_normalize(records)
    frame = frame[["id", *[f"properties.{name}" for name in PROPERTIES]]]
    frame.columns = ["id", *PROPERTIES]
    phases["frame"] = round(time.monotonic() - t, 3)

    engine = sa.create_engine(args.url)
    columns = ", ".join(["id", *PROPERTIES])
    t = time.monotonic()
    with engine.begin() as conn:
        conn.execute(sa.text(
            f"CREATE TABLE IF NOT EXISTS {args.schema}.contacts (id text PRIMARY KEY, "
            + ", ".join(f"{name} text" for name in PROPERTIES) + ")"))
        frame.to_sql("contacts_staging", conn, schema=args.schema, if_exists="replace", index=False,
                     method="multi", chunksize=args.chunksize)
    phases["to_sql"] = round(time.monotonic() - t, 3)
    t = time.monotonic()
    with engine.begin() as conn:
        upserted = conn.execute(sa.text(
            f"INSERT INTO {args.schema}.contacts ({columns}) SELECT {columns} FROM {args.schema}.contacts_staging "
            "ON CONFLICT (id) DO UPDATE SET " + ", ".join(f"{name} = excluded.{name}" for name in PROPERTIES)
        )).rowcount
        conn.execute(sa.text(f"DROP TABLE {args.schema}.contacts_staging"))
    phases["upsert"] = round(time.monotonic() - t, 3)
    summary = {"fetched": len(records), "upserted": upserted, "phases_s": phases, "pandas_version": pd.__version__,
               "vm_hwm_mib": vm_hwm_mib()}
    Path(args.out).write_text(json.dumps(summary, indent=2))
    print(f"pandas done in {time.monotonic() - started:.1f}s: {summary}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
