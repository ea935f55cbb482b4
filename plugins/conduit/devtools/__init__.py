"""Tools for developers, tests and the demo: real servers to run against (a Tryton ERP).

Nothing here is imported by the provider's runtime modules (hooks, operators, DAGs).
"""
