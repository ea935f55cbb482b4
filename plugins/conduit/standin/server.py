"""``conduit-crm-standin``: serve the stand-in HubSpot CRM with uvicorn.

Prints one line with the base URL once the socket listens (``--port 0`` picks a free port, which
is how :mod:`conduit.standin.testing` runs it).
"""

from __future__ import annotations

import argparse
import sys
import time

from conduit.standin.app import StandinConfig, create_app
from conduit.standin.faults import Faults, Limits, RateLimitFault, ServerErrorFault
from conduit.standin.serving import serve


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="conduit-crm-standin", description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1", help="bind address (admin API has no auth: keep loopback)")
    p.add_argument("--port", type=int, default=8700, help="0 picks a free port")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--contacts", type=int, default=10_000)
    p.add_argument("--companies", type=int, default=200)
    p.add_argument("--bad-emails", type=int, default=0, help="seeded contacts with an invalid email")
    p.add_argument("--token", default="standin-token", help="the accepted Bearer token")
    p.add_argument("--anchor-ms", type=int, default=None, help="seeded timestamps end here (epoch ms)")
    limits = p.add_argument_group("rate limits (headers always; 429s only with --enforce-rate-limits)")
    limits.add_argument("--enforce-rate-limits", action="store_true")
    limits.add_argument("--interval-max", type=int, default=Limits.interval_max,
                        help="requests per rolling interval (HubSpot: 10 s)")
    limits.add_argument("--interval-ms", type=int, default=Limits.interval_ms,
                        help="the rolling interval; shorter than HubSpot's 10 s only to test quickly")
    limits.add_argument("--daily-max", type=int, default=Limits.daily_max)
    limits.add_argument("--search-per-second", type=int, default=Limits.search_per_second)
    faults = p.add_argument_group("faults (also switchable at PUT /_admin/faults)")
    faults.add_argument("--rate-limit-every", type=int, default=0, help="every Nth CRM request gets a 429")
    faults.add_argument("--rate-limit-burst", type=int, default=0, help="the first K CRM requests get a 429")
    faults.add_argument("--rate-limit-policy", choices=["TEN_SECONDLY_ROLLING", "SECONDLY", "DAILY"])
    faults.add_argument("--retry-after-s", type=int, default=1)
    faults.add_argument("--server-errors-every", type=int, default=0, help="every Nth CRM request gets a 5xx")
    faults.add_argument("--server-errors-burst", type=int, default=0, help="the first K CRM requests get a 5xx")
    faults.add_argument("--server-error-status", type=int, choices=[500, 502, 503, 504])
    faults.add_argument("--slow-ms", type=int, default=0)
    faults.add_argument("--equal-timestamps", action="store_true")
    faults.add_argument("--search-lag-ms", type=int, default=0)
    return p.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> StandinConfig:
    rate_limit = (RateLimitFault(every=args.rate_limit_every, burst=args.rate_limit_burst,
                                 policy=args.rate_limit_policy, retry_after_s=args.retry_after_s)
                  if args.rate_limit_every or args.rate_limit_burst else None)
    server_errors = (ServerErrorFault(every=args.server_errors_every, burst=args.server_errors_burst,
                                      status=args.server_error_status)
                     if args.server_errors_every or args.server_errors_burst else None)
    faults = Faults(rate_limit=rate_limit, server_errors=server_errors, slow_ms=args.slow_ms,
                    equal_timestamps=args.equal_timestamps, search_lag_ms=args.search_lag_ms)
    extra = {"anchor_ms": args.anchor_ms} if args.anchor_ms is not None else {}
    return StandinConfig(seed=args.seed, contacts=args.contacts, companies=args.companies,
                         bad_emails=args.bad_emails, token=args.token, faults=faults,
                         enforce_rate_limits=args.enforce_rate_limits,
                         limits=Limits(interval_max=args.interval_max, interval_ms=args.interval_ms,
                                       daily_max=args.daily_max, search_per_second=args.search_per_second),
                         **extra)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.monotonic()
    app = create_app(config_from_args(args))
    serve(app, args.host, args.port,
          lambda url: f"conduit-crm-standin ready at {url} (seed {args.seed}, {args.contacts} contacts, "
                      f"{args.companies} companies, seeded in {time.monotonic() - started:.1f}s)")


if __name__ == "__main__":
    sys.exit(main())
