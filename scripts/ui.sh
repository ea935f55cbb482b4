#!/usr/bin/env bash
# Airflow with Conduit's sync health view on this machine, no Docker: api-server, scheduler,
# dag-processor and triggerer on SQLite, the stand-in CRM and order services, a SQLite ERP. Prints
# the URL and the login and runs until Ctrl-C. Extra arguments go to conduit.devtools.ui_stack
# (--trigger, --nameless K, --contacts N, --port P, --home DIR; --help lists them).
source "$(dirname "$0")/bootstrap.sh"
exec python -m conduit.devtools.ui_stack "$@"
