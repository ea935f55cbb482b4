#!/usr/bin/env bash
# The nightly sync once, for real, on embedded defaults: Airflow on SQLite, the stand-in CRM with
# 10,000 contacts, the ERP in a SQLite file under .demo/. `--target tryton` syncs into a real Tryton
# ERP instead (its database kept in .demo/tryton/). Extra arguments go to conduit-demo (--help).
source "$(dirname "$0")/bootstrap.sh"
exec conduit-demo "$@"
