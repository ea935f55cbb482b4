"""A stand-in for HubSpot's CRM objects API (contract: crm-erp-contracts.md §1).

``data`` generates the seeded records, ``store``/``search`` hold and query them, ``app`` serves
them with FastAPI, ``server`` is the ``conduit-crm-standin`` command and ``testing.run_standin``
runs the real server in a child process.
"""
