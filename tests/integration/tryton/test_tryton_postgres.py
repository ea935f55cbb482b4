"""The launcher's PostgreSQL backend: a Tryton on the real PostgreSQL, used through the hook.

The database (``conduit_tryton_it``) is kept between sessions: the first run on a machine
initialises it (about 20 s), later ones reuse it (about 1 s). Parties get fresh codes per run.
"""

from __future__ import annotations

import json
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest

from conduit.devtools.tryton_server import TrytonServer
from conduit.exceptions import TrytonRequestError
from conduit.hooks.tryton import TrytonHook

pytestmark = pytest.mark.postgres


def test_a_postgresql_backed_tryton(pg_server_dsn, monkeypatch):
    server_uri = urlunsplit(urlsplit(pg_server_dsn)._replace(path="/"))
    with TrytonServer("conduit_tryton_it", backend="postgresql", postgres_uri=server_uri) as tryton:
        monkeypatch.setenv("AIRFLOW_CONN_TRYTON_PG", json.dumps(tryton.connection(max_retries=1, backoff_max=0.05)))
        hook = TrytonHook("tryton_pg")
        code = f"PG-{uuid.uuid4().hex[:10]}"
        (germany,) = hook.search("country.country", [["code", "=", "DE"]])
        party = hook.create("party.party", {
            "name": "Postgres GmbH", "code": code,
            "contact_mechanisms": [["create", [{"type": "email", "value": "pg@example.org"}]]],
            "addresses": [["create", [{"city": "Berlin", "country": germany["id"]}]]],
        }, ["active", "contact_mechanisms.value", "addresses.country.code"])
        assert party["active"] is True  # a real boolean here; SQLite answers 1
        assert party["contact_mechanisms"][0]["value"] == "pg@example.org"
        assert party["addresses"][0]["country"]["code"] == "DE"
        with pytest.raises(TrytonRequestError, match='"999999" for field "Country"'):  # PostgreSQL checks the key
            hook.write("party.party", party["id"], {"addresses": [["create", [{"country": 999999}]]]})
        assert hook.write("party.party", party["id"], {"active": False}, ["active"])["active"] is False
