"""``conduit-order-services``: serve the order services stand-in with uvicorn.

Inventory, payment, fraud and shipping under their own paths, plus ``/_admin``. Prints one line with the base URL once the socket listens (``--port 0`` picks a free port, which
is how :mod:`conduit.orders_standin.testing` runs it).
"""

from __future__ import annotations

import argparse
import sys

from conduit.orders_standin.app import create_app
from conduit.orders_standin.state import OrderServicesConfig
from conduit.standin.serving import serve


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = OrderServicesConfig()
    p = argparse.ArgumentParser(prog="conduit-order-services", description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1", help="bind address (admin API has no auth: keep loopback)")
    p.add_argument("--port", type=int, default=8710, help="0 picks a free port")
    p.add_argument("--ship-after-s", type=float, default=defaults.ship_after_s,
                   help="a shipment reads as shipped this long after it was created")
    p.add_argument("--default-stock", type=int, default=defaults.default_stock, help="units of every SKU")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    app = create_app(OrderServicesConfig(ship_after_s=args.ship_after_s, default_stock=args.default_stock))
    serve(app, args.host, args.port,
          lambda url: f"conduit-order-services ready at {url} (ship after {args.ship_after_s}s, "
                      f"{args.default_stock} units per SKU)")


if __name__ == "__main__":
    sys.exit(main())
