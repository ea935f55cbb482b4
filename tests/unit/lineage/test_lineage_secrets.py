"""Lineage never publishes a connection's credentials: the CRM dataset built from a HubSpot
connection (as the extract's START and the load's events build it, from the connection alone)
names the API root and the objects path, whatever credentials the connection's URI or host
carries. What cannot be named without them is refused, with a message that does not quote them
(the OpenLineage provider logs it in the task log)."""

from __future__ import annotations

import json

import pytest
from airflow.sdk import Connection

from conduit.lineage.openlineage import DatasetRef, hubspot_dataset
from conduit.sources.hubspot.address import api_version_of, base_url_of

SECRET = "pw0SECRET9"


def crm_dataset(connection: Connection) -> DatasetRef:
    return hubspot_dataset(base_url_of(connection), "contacts", api_version_of(connection.extra_dejson))


@pytest.mark.parametrize(
    ("connection", "expected"),
    [
        (Connection.from_uri(f"hubspot://:{SECRET}@api.hubapi.com:443/https?api_version=2026-09", conn_id="a"),
         ("https://api.hubapi.com:443", "crm/objects/2026-09/contacts")),
        (Connection(conn_id="b", conn_type="hubspot", host=f"https://user:{SECRET}@api.hubapi.com", password="t"),
         ("https://api.hubapi.com", "crm/objects/2026-09/contacts")),
        (Connection(conn_id="c", conn_type="hubspot", host=f"user:{SECRET}@api.hubapi.com", port=8443,
                    schema="https", password="t", extra=json.dumps({"api_version": "v3", "Authorization": f"Bearer {SECRET}"})),
         ("https://api.hubapi.com:8443", "crm/v3/objects/contacts")),
        (Connection(conn_id="d", conn_type="hubspot", host=f"https://api.hubapi.com/?hapikey={SECRET}", password="t"),
         ("https://api.hubapi.com", "crm/objects/2026-09/contacts")),
    ],
)
def test_credentials_in_the_connection_stay_out_of_the_dataset(connection, expected):
    assert crm_dataset(connection) == DatasetRef(*expected)


@pytest.mark.parametrize(
    "host",
    [
        f"https://user:4242/{SECRET}@api.hubapi.com",  # a '/' in the password: the parser sees host "user"
        f"https://user:{SECRET[:3]}/{SECRET[3:]}@api.hubapi.com",
        f"https://user:{SECRET[:3]}#{SECRET[3:]}@api.hubapi.com",
        f"https://user:{SECRET[:3]}?{SECRET[3:]}@api.hubapi.com",
        f"user:{SECRET[:3]}/{SECRET[3:]}@api.hubapi.com",  # no scheme: the hook adds the schema field's
    ],
)
def test_credentials_the_url_parser_misreads_are_refused_without_quoting_them(host):
    connection = Connection(conn_id="e", conn_type="hubspot", host=host, password="t")
    with pytest.raises(ValueError) as info:
        crm_dataset(connection)
    shown = str(info.value) + repr(info.value.__cause__) + repr(info.value.__context__)
    assert SECRET[:3] not in shown and SECRET[3:] not in shown and "4242" not in shown
