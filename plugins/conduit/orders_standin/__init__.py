"""A stand-in for the four services an order-fulfilment saga calls: inventory, payment, fraud and
shipping, served by one small HTTP server for demos and tests (not part of the provider's runtime).

Every mutating call is idempotent by its ``Idempotency-Key`` and every created object remembers its
key, so a saga can retry safely and a compensation can find out whether an ambiguous call happened.
Faults (outages, 429s, timeouts after the work was done, late requests done after their caller gave
up, business refusals, slow status) switch on at ``PUT /_admin/faults``; ``GET /_admin/ledger``
lists every effect that really happened.

``faults`` holds the switchable faults, ``state`` the ledger, the idempotency store and the business
rules (pure Python), ``app`` serves them with FastAPI, ``server`` is the ``conduit-order-services``
command and ``testing.run_order_services`` runs the real server in a child process.
"""
