"""Hostile CRM text end to end (issue 17, item 5): NUL characters, text that is not Unicode on the
wire (undecodable bytes, lone surrogate escapes), COPY/CSV control characters, emoji, right-to-left
text and a 1 MiB value, in a handful of the stand-in's 600 contacts, through the real sync DAG
into PostgreSQL. The run succeeds and loads every other contact; each hostile value is stored
byte for byte, or cleaned by the mapping's documented rule with a defect naming the record, or its
record is quarantined with the reason. A second run re-reads them and writes nothing.

The stand-in stores text, not bytes: what cannot be stored as text (undecodable bytes, lone
surrogates) is put on the wire by a small proxy between the sync and the stand-in, which replaces
markers in the response bodies. The load itself is also checked on PostgreSQL and SQLite directly.
"""

from __future__ import annotations

import http.client
import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pandas as pd
import psycopg
import pytest
from sync_helpers import crm_records, mapped, plain, run_ok, xcom

from conduit.exceptions import TargetConfigError
from conduit.targets.defects import read_defects

pytestmark = pytest.mark.postgres

REPO = Path(__file__).resolve().parents[2]
# marker in the stand-in's text -> what the proxy puts on the wire -> what the sync must read
WIRE = {
    "~BADBYTES~": (b"\xff\xfe", "\ufffd\ufffd"),  # not UTF-8 at all
    "~CESU~": (b"\xed\xa0\x80", "\ufffd\ufffd\ufffd"),  # a surrogate encoded as UTF-8 (CESU-8)
    "~LONE~": (b"\\ud800", "\ufffd"),  # a lone high surrogate escape
    "~REVERSED~": (b"\\ude00\\ud83d", "\ufffd\ufffd"),  # a pair in the wrong order
    "~PAIR~": (b"\\ud83d\\ude00", "\U0001f600"),  # a proper pair: 😀, not damaged
}


def _mib_text() -> str:
    """~1 MiB (UTF-8) of text mixing everything at once, without edge whitespace (trim keeps it)."""
    unit = 'Ωmega 😀 שלום\t"q" \\. ,;\r\n'
    text = "[" + unit * (1_048_576 // len(unit.encode())) + "]"
    assert len(text.encode()) > 1_000_000
    return text


MIB = _mib_text()

# Stored byte for byte (every value here is its own trimmed self).
EXACT = {
    "controls": {"firstname": "Tab\there", "lastname": "Line1\nLine2\r\nLine3\rEnd",
                 "company": "Form\x0cfeed\x0bVT\x1fUS\x7fDEL\x01SOH"},
    "quotes": {"firstname": "Back\\slash \\N", "lastname": "\"Quoted\", 'single'", "company": "\\."},
    "copy_end": {"firstname": "\\.", "lastname": "first\n\\.\nlast", "company": "\\.\r\n\\.\n\\N"},
    "csv": {"firstname": '""', "lastname": ",", "company": 'a,b;c|d\t"e"'},
    "emoji": {"firstname": "Zoë 😀", "lastname": "👨‍👩‍👧‍👦🏳️‍🌈", "company": "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 Ltd"},
    "rtl": {"firstname": "שלום", "lastname": "مرحبا \u202ekcatta\u202c", "company": "\u200fחברה בע\"מ\u200f"},
    "mib": {"lastname": MIB, "company": "NULL"},
    "pair": {"lastname": "Smile ~PAIR~"},
}
# Cleaned by the rule, with defects: (column, rule, raw value as recorded) per contact.
CLEANED = {
    "nul_name": ({"firstname": "Ann\x00a", "lastname": "Nul"},
                 {"first_name": "Anna", "full_name": "Anna Nul"},
                 {("first_name", "clean_text", "Ann␀a"), ("full_name", "clean_text", "Ann␀a Nul")}),
    "nul_email": ({"email": "nul\x00l@example.com"}, {"email": None},
                  {("email", "email", "nul␀l@example.com")}),
    "bad_bytes": ({"firstname": "Jos~BADBYTES~", "lastname": "Ok"},
                  {"first_name": "Jos\ufffd\ufffd", "full_name": "Jos\ufffd\ufffd Ok"},
                  {("first_name", "clean_text", "Jos\ufffd\ufffd"), ("full_name", "clean_text", "Jos\ufffd\ufffd Ok")}),
    "lone": ({"firstname": "Lo", "lastname": "Smith~LONE~ ~REVERSED~"},
             {"last_name": "Smith\ufffd \ufffd\ufffd", "full_name": "Lo Smith\ufffd \ufffd\ufffd"},
             {("last_name", "clean_text", "Smith\ufffd \ufffd\ufffd"),
              ("full_name", "clean_text", "Lo Smith\ufffd \ufffd\ufffd")}),
    "cesu_phone": ({"phone": "+49 30 1234~CESU~567", "country": "Germany"}, {"phone": None},
                   {("phone", "phone_e164", "+49 30 1234\ufffd\ufffd\ufffd567")}),
    "stored_fffd": ({"company": "Caf\ufffd Crème"}, {"company_name": "Caf\ufffd Crème"},
                    {("company_name", "clean_text", "Caf\ufffd Crème")}),
}
# Quarantined: nothing is left of the name once NULs are removed.
QUARANTINED = {"nul_only_name": {"firstname": "\x00", "lastname": "\x00\x00"}}
COLUMNS_OF = {"firstname": "first_name", "lastname": "last_name", "company": "company_name",
              "email": "email", "phone": "phone"}


def on_the_wire(text: str) -> str:
    """What the sync reads for ``text`` of the stand-in (markers decoded as the proxy sends them)."""
    for marker, (_, read) in WIRE.items():
        text = text.replace(marker, read)
    return text


@contextmanager
def rewriting_proxy(upstream: str) -> Iterator[str]:
    """An HTTP proxy to ``upstream`` that puts :data:`WIRE`'s bytes in place of its markers."""
    up = urlsplit(upstream)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            skip = {"host", "connection", "content-length", "accept-encoding"}
            headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
            conn = http.client.HTTPConnection(up.hostname, up.port, timeout=60)
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                reply = conn.getresponse()
                data = reply.read()
            finally:
                conn.close()
            for marker, (wire, _) in WIRE.items():
                data = data.replace(marker.encode(), wire)
            self.send_response(reply.status)
            for name, value in reply.getheaders():
                if name.lower() not in ("content-length", "transfer-encoding", "connection", "date", "server"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = forward

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _connection(url: str, token: str) -> str:
    return json.dumps({"conn_type": "hubspot", "host": url, "password": token,
                       "extra": {"api_version": "2026-09", "max_retries": 4, "backoff_max": 0.5}})


def _erp_rows(dsn: str, schema: str) -> list[tuple]:
    """Every ERP row, every column, as PostgreSQL returns it (no pandas in between)."""
    with psycopg.connect(dsn) as conn:
        return conn.execute(f'SELECT * FROM "{schema}".erp_customers ORDER BY customer_number').fetchall()


def _stored(dsn: str, schema: str, keys: list[str]) -> dict[str, dict]:
    columns = ["customer_number", "email", "first_name", "last_name", "full_name", "phone", "company_name"]
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(f'SELECT {", ".join(columns)}, octet_length(last_name) FROM "{schema}".erp_customers '
                            "WHERE customer_number = ANY(%s)", [keys]).fetchall()
    return {row[0]: {**dict(zip(columns, row, strict=False)), "last_name_bytes": row[-1]} for row in rows}


@pytest.fixture
def sync_env(make_sync_env, pg_schema, pg_server_dsn):
    """The real sync DAG over the stand-in CRM (600 contacts), loading into a fresh schema."""
    return make_sync_env(schema=pg_schema, erp_dsn=pg_server_dsn)


def test_hostile_crm_text_loads_exactly_or_by_the_rule_and_a_rerun_is_quiet(sync_env, monkeypatch, pg_server_dsn,
                                                                             record_property):
    crm, spec, target = sync_env.crm, sync_env.spec(), sync_env.target()
    monkeypatch.setenv("AIRFLOW_CONN_HUBSPOT_DIRECT", _connection(crm.base_url, crm.token))
    from conduit.hooks.hubspot import HubSpotHook

    direct = HubSpotHook(hubspot_conn_id="hubspot_direct")
    cases = {**EXACT, **{name: props for name, (props, _, _) in CLEANED.items()}, **QUARANTINED}
    record_property("hostile_inputs", ("CRM values", sum(len(props) for props in cases.values())))
    ids = [r["id"] for r in crm_records(spec, direct)][10: 10 + len(cases)]
    case_ids = dict(zip(cases, ids, strict=True))
    now_ms = crm.admin.clock_ms()
    for name, props in cases.items():
        # inside the next incremental run's overlap window, so it reads them again; not the record
        # that stays quarantined: re-read alone with a dozen others, 1 of 15 rejected exceeds the
        # spec's max_rejected_ratio (1%), whatever the reason it is rejected for
        changed_ms = now_ms - (1_800_000 if name in QUARANTINED else 120_000)
        crm.admin.modify(case_ids[name], props, lastmodifieddate_ms=changed_ms)
    key = {name: f"HS-C-{i}" for name, i in case_ids.items()}
    # what the ERP must hold: the CRM's records as the sync reads them off the wire, mapped
    records = [{**r, "properties": {p: None if v is None else on_the_wire(v) for p, v in r["properties"].items()}}
               for r in crm_records(spec, direct)]
    want = mapped(spec, records)
    want = want[want["customer_number"] != key["nul_only_name"]].reset_index(drop=True)

    with rewriting_proxy(crm.base_url) as proxy:
        monkeypatch.setenv("AIRFLOW_CONN_HUBSPOT_DEFAULT", _connection(proxy, crm.token))
        first = run_ok(sync_env)

        gate = xcom(first, "quality_gate")
        assert (gate["checked"], gate["rejected"], gate["passed"]) == (600, 1, True)
        assert xcom(first, "load")["inserted"] == 599  # one bad record stops no other
        got = target.fetch_rows(spec).sort_values("customer_number").reset_index(drop=True)
        assert got["customer_number"].tolist() == want["customer_number"].tolist()
        pd.testing.assert_frame_equal(plain(got[spec.columns]), plain(want[spec.columns]))
        assert got["row_hash"].tolist() == want["row_hash"].tolist()

        # byte for byte, as PostgreSQL returns it
        stored = _stored(pg_server_dsn, sync_env.schema, list(key.values()))
        for name, props in EXACT.items():
            row = stored[key[name]]
            for prop, value in props.items():
                assert row[COLUMNS_OF[prop]] == on_the_wire(value), (name, prop)
        assert stored[key["mib"]]["last_name_bytes"] == len(MIB.encode())
        assert stored[key["mib"]]["full_name"].endswith(" " + MIB)
        assert stored[key["pair"]]["last_name"] == "Smile \U0001f600"
        for name, (_, columns, _) in CLEANED.items():
            for column, value in columns.items():
                assert stored[key[name]][column] == value, (name, column)
        assert key["nul_only_name"] not in stored

        # every cleaned value is a defect naming its record; nothing else is
        defects = read_defects(target, spec)
        assert {(d["crm_id"], d["column_name"], d["rule"], d["raw_value"]) for d in defects} == {
            (case_ids[name], *found) for name, (_, _, expected) in CLEANED.items() for found in expected}
        reasons = {(d["crm_id"], d["column_name"]): d["reason"] for d in defects}
        assert reasons[case_ids["nul_name"], "first_name"] == "first_name 'Ann␀a' could not be normalised by clean_text"
        assert gate["defects_opened"] == len(defects)

        # the record without a name is quarantined, with its id, the reason and its raw record
        (entry,) = [e for e in target.open_quarantine(spec) if e["crm_id"] == case_ids["nul_only_name"]]
        assert (entry["record_key"], entry["column_name"], entry["reason"]) == (
            key["nul_only_name"], "full_name", "full_name is null")
        assert (entry["raw_record"]["firstname"], entry["raw_record"]["lastname"]) == ("␀", "␀␀")

        before = _erp_rows(pg_server_dsn, sync_env.schema)
        second = run_ok(sync_env)

    assert xcom(second, "extract")["mode"] == "incremental"
    assert xcom(second, "extract")["rows"] >= len(cases) - 1  # the hostile records were read again
    load = xcom(second, "load")
    assert (load["inserted"], load["updated"], load["deleted"]) == (0, 0, 0)
    assert _erp_rows(pg_server_dsn, sync_env.schema) == before  # not one byte rewritten
    gate = xcom(second, "quality_gate")
    assert (gate["rejected"], gate["defects_opened"], gate["defects_resolved"]) == (0, 0, 0)
    assert gate["defects_seen_again"] == len(defects)


# --- the load alone, on both databases --------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def erp(request, tmp_path):
    from conduit.specs.model import load_spec
    from conduit.targets import PostgresErpTarget, SqliteErpTarget

    spec = load_spec(REPO / "include" / "syncs" / "crm_to_erp_customer_sync.yaml")
    if request.param == "sqlite":
        path = tmp_path / "erp.db"
        return SqliteErpTarget(path), spec, lambda sql: sqlite3.connect(path).execute(sql).fetchall()
    schema = request.getfixturevalue("pg_schema")
    spec = spec.model_copy(update={"target": spec.target.model_copy(update={"db_schema": schema})})
    dsn = request.getfixturevalue("pg_server_dsn")

    def query(sql: str) -> list[tuple]:
        with psycopg.connect(dsn) as conn:
            return conn.execute(sql.replace("erp_customers", f'"{schema}".erp_customers')).fetchall()

    return PostgresErpTarget(dsn), spec, query


def _raw(values: list[dict]) -> pd.DataFrame:
    ids = [str(1000 + i) for i in range(len(values))]
    rows = [{"id": i, "hs_object_id": i, "lastmodifieddate": "2024-03-01T08:00:00Z", "lastname": "L", **v}
            for i, v in zip(ids, values, strict=True)]
    return pd.DataFrame(rows)


def test_hostile_text_is_stored_byte_for_byte_on_both_databases(erp, record_property):
    from conduit.transforms.mapping import map_frame

    target, spec, query = erp
    hostile = [props for props in EXACT.values()] + [{"firstname": on_the_wire(v)} for v in WIRE] + [
        {"firstname": "Ann\x00a", "company": "\x00lead\x00ing"}]
    record_property("hostile_inputs", ("CRM values", sum(len(props) for props in hostile)))
    frame = map_frame(_raw(hostile), spec)
    target.ensure_ready(spec)
    assert target.load(spec, [frame], run_id="r1").inserted == len(hostile)
    names = ["customer_number", "first_name", "last_name", "full_name", "company_name"]
    stored = {row[0]: row for row in query(f"SELECT {', '.join(names)} FROM erp_customers")}
    for row in frame[names].itertuples(index=False):
        assert stored[row[0]] == tuple(None if pd.isna(v) else v for v in row)
    # what was cleaned: NULs gone, on both databases alike
    assert stored[f"HS-C-{1000 + len(hostile) - 1}"][1:] == ("Anna", "L", "Anna L", "leading")
    assert target.load(spec, [frame], run_id="r2").unchanged == len(hostile)  # the row hashes agree


def test_a_nul_that_bypassed_the_mapping_fails_the_load_naming_its_row(erp, record_property):
    target, spec, query = erp
    record_property("hostile_inputs", ("CRM values", 1))
    from conduit.transforms.mapping import map_frame

    frame = map_frame(_raw([{"firstname": "Fine"}, {"firstname": "Also fine"}]), spec)
    frame.loc[1, "company_name"] = "bad\x00"
    target.ensure_ready(spec)
    if target.dialect.name == "sqlite":  # SQLite can hold it; only PostgreSQL text cannot
        assert target.load(spec, [frame], run_id="r1").inserted == 2
        return
    with pytest.raises(TargetConfigError, match="column 'company_name' of customer_number 'HS-C-1001' holds a NUL"):
        target.load(spec, [frame], run_id="r1")
    assert query("SELECT count(*) FROM erp_customers") == [(0,)]
