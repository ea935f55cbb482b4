"""How many searches a second three concurrent search streams reach through one shared request
budget (in Redis), against the stand-in enforcing HubSpot's Professional limits at 150 ms a reply:
with the budget as it is (``observe``: the rate-limit headers steer it) and with ``observe`` off.

    .venv/bin/python bench/search_pace.py [--contacts 100000] [--seconds 30] [--redis redis://127.0.0.1:6379/9]

A diagnostic for the full read's list/search split (bench/README.md, the 1M run on a deployment):
it prints searches/s per variant against the budget's pace (5/s less its margin: 4.76/s).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))

from conduit.sources.hubspot.cursor import iter_id_range  # noqa: E402
from conduit.sources.hubspot.hook import HubSpotHook  # noqa: E402
from conduit.standin.testing import run_standin  # noqa: E402


def pace(hooks: list[HubSpotHook], seconds: float) -> tuple[int, float]:
    counts = [0] * len(hooks)
    stop = time.monotonic() + seconds

    def run(i: int) -> None:
        for _ in iter_id_range(lambda body: hooks[i].search_page("contacts", body), 0, 10**12,
                               properties=["email"], limit=200):
            counts[i] += 1
            if time.monotonic() > stop:
                return

    started = time.monotonic()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(hooks))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts), time.monotonic() - started


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--contacts", type=int, default=100_000)
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--streams", type=int, default=3)
    p.add_argument("--redis", default="redis://127.0.0.1:6379/9", help="where the budget's windows live")
    p.add_argument("--variants", default="observe,no-observe,observe,no-observe")
    args = p.parse_args()
    with run_standin(contacts=args.contacts, seed=1, slow_ms=150, enforce_rate_limits=True, interval_max=190,
                     daily_max=650_000) as crm:  # Professional, as the connection says
        os.environ["AIRFLOW_CONN_HUBSPOT_DEFAULT"] = json.dumps({
            "conn_type": "hubspot", "host": crm.base_url, "password": crm.token,
            "extra": {"api_version": "2026-09", "rate_limit_tier": "professional", "budget_redis_conn_id": "bench_budget"}})
        os.environ["AIRFLOW_CONN_BENCH_BUDGET"] = args.redis
        for variant in args.variants.split(","):
            hooks = [HubSpotHook() for _ in range(args.streams)]
            hooks[0].budget.clear()
            if variant == "no-observe":
                for hook in hooks:
                    hook.budget.observe = lambda headers, **_: None
            searches, wall = pace(hooks, args.seconds)
            refused = crm.admin.rate_limits().get("refused")
            print(f"{variant:<11} {searches} searches in {wall:.1f} s = {searches / wall:.2f}/s (the budget's pace "
                  f"{hooks[0].budget.limits.searches_per_second:.2f}/s), latency "
                  f"{[round(h.latency_s, 3) for h in hooks]} s, refused so far {refused}", flush=True)
            time.sleep(1.2)  # an empty search window for the next variant


if __name__ == "__main__":
    main()
