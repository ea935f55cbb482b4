"""Run a trytond command (``admin``, ``server`` or ``setup``) with e-mail deliverability checks off.

Run as a script by :mod:`conduit.devtools.tryton_server`, never imported by Conduit::

    python _trytond_launch.py admin  -c trytond.conf -d DB --all ...   # trytond-admin
    python _trytond_launch.py server -c trytond.conf -d DB              # trytond
    python _trytond_launch.py setup  trytond.conf DB --countries --api-key

Why: trytond validates every e-mail contact mechanism (and ``trytond-admin --email``) with
``email_validator`` *and a DNS lookup of the domain* whenever ``email_validator`` is installed, as
it is beside Conduit. Where DNS does not resolve (CI, this sandbox) every address is refused with
"The domain name ... does not exist". The syntax checks stay on; set
``CONDUIT_TRYTON_EMAIL_DNS_CHECKS=1`` to keep trytond's own behaviour.

``setup`` does, with trytond's own Pool and Transaction (no proteus): ``--countries`` creates every
ISO 3166 country from pycountry (the country module ships none; trytond's own importer needs
proteus), ``--api-key`` creates a validated REST key (``res.user.application``, application
``rest``) for ``admin`` and prints it.
"""

from __future__ import annotations

import os
import sys


def _no_dns_checks() -> None:
    import trytond.tools.email_ as email_

    validate = email_.validate_email

    def validate_email(email, check_deliverability=True):  # noqa: ARG001 (trytond's signature)
        return validate(email, check_deliverability=False)

    email_.validate_email = validate_email


def setup(argv: list[str]) -> None:
    config_file, database, *flags = argv
    from trytond.config import update_etc

    update_etc(config_file)
    from trytond.pool import Pool
    from trytond.transaction import Transaction

    Pool.start()
    pool = Pool(database)
    with Transaction().start(database, 0, readonly=True):
        pool.init()
    with Transaction().start(database, 0) as transaction:
        if "--countries" in flags:
            _create_countries(pool)
        if "--api-key" in flags:
            user, = pool.get("res.user").search([("login", "=", "admin")])
            application, = pool.get("res.user.application").create(
                [{"user": user.id, "application": "rest", "state": "validated"}])
            print(f"api-key {application.key}", flush=True)
        transaction.commit()


def _create_countries(pool) -> None:
    import pycountry
    from trytond.tools import remove_forbidden_chars

    country = pool.get("country.country")
    existing = {c.code for c in country.search([])}
    country.create([
        {"name": remove_forbidden_chars(c.name), "code": c.alpha_2, "code3": c.alpha_3,
         "code_numeric": c.numeric}
        for c in pycountry.countries if c.alpha_2 not in existing
    ])


def main() -> int:
    command, *rest = sys.argv[1:]
    if os.environ.get("CONDUIT_TRYTON_EMAIL_DNS_CHECKS") != "1":
        _no_dns_checks()
    sys.argv = [f"trytond-{command}", *rest]
    if command == "admin":
        from trytond.cli.admin import main as admin_main

        admin_main()
    elif command == "server":
        from trytond.cli import main as server_main

        server_main()
    elif command == "setup":
        setup(rest)
    else:
        raise SystemExit(f"unknown command {command!r}: admin, server or setup")
    return 0


if __name__ == "__main__":
    sys.exit(main())
