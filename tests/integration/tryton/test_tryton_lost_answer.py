"""A request Tryton carried out whose answer never came back (the connection reset after Tryton
committed): the hook retries it, and the retry must not turn a done write into a failure. Real
trytond (SQLite) behind a loopback HTTP proxy that drops the first answer to a DELETE.

A DELETE retried that way finds no record (404, a refusal that fails the task without Airflow's
retries). Before, the hard delete of a load failed there, with the party deleted and the ledger
still holding it; the next run found no party to delete and left the ledger so for good."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from test_tryton_target_reactivation import party_rows

from conduit.exceptions import TrytonRequestError
from conduit.hooks.tryton import TrytonHook
from conduit.specs.model import load_spec, parse_spec
from conduit.targets import ledger
from conduit.targets.sql import SqliteErpTarget
from conduit.targets.tryton import ALL_RECORDS, PARTY, TrytonTarget

SPEC_FILE = Path(__file__).resolve().parents[3] / "include" / "syncs" / "crm_to_tryton_customer_sync.yaml"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


class LosingProxy(ThreadingHTTPServer):
    """Forwards every request to ``upstream``; of the first ``drop`` DELETEs it forwards the
    request (Tryton carries it out) and closes the connection without an answer."""

    daemon_threads = True

    def __init__(self, upstream: str, drop: int = 1):
        super().__init__(("127.0.0.1", 0), _Forward)
        self.upstream, self.drop, self.dropped, self.deletes = upstream, drop, 0, 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Forward(BaseHTTPRequestHandler):
    server: LosingProxy

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) or None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length", "connection")}
        answer = requests.request(self.command, self.server.upstream + self.path, data=body, headers=headers,
                                  timeout=30)
        if self.command == "DELETE":
            self.server.deletes += 1
            if self.server.dropped < self.server.drop:
                self.server.dropped += 1
                self.close_connection = True  # done in Tryton; the answer is lost
                return
        self.send_response(answer.status_code)
        for name in ("Content-Type", "Retry-After"):
            if name in answer.headers:
                self.send_header(name, answer.headers[name])
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    do_GET = do_POST = do_PUT = do_DELETE = _forward

    def log_message(self, format, *args) -> None:  # noqa: A002 - quiet
        pass


@pytest.fixture
def proxy(tryton_server) -> Iterator[LosingProxy]:
    server = LosingProxy(tryton_server.base_url)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def lossy_hook(tryton_server, proxy, monkeypatch) -> TrytonHook:
    """A hook to Tryton through the proxy (fast retries)."""
    conn = tryton_server.connection(timeout=10, max_retries=3, backoff_max=0.05)
    conn["host"] = proxy.base_url
    monkeypatch.setenv("AIRFLOW_CONN_TRYTON_LOSSY", json.dumps(conn))
    return TrytonHook(tryton_conn_id="tryton_lossy")


def test_a_delete_whose_answer_was_lost_is_done_on_the_retry(tryton_hook, lossy_hook, proxy):
    code = f"lost-{uuid.uuid4().hex[:8]}"
    party = tryton_hook.create(PARTY, {"name": "Gone GmbH", "code": code}, ["id"])

    lossy_hook.delete(PARTY, party["id"], context=ALL_RECORDS)

    assert (proxy.deletes, proxy.dropped, lossy_hook.retries) == (2, 1, 1)
    assert tryton_hook.search(PARTY, [["code", "=", code]], ["id"], context=ALL_RECORDS) == []


def test_a_record_that_was_never_there_is_still_not_found(tryton_hook, lossy_hook, proxy):
    """Only a retry's 404 counts as done: a first answer 404 is a wrong id, as before."""
    proxy.drop = 0
    with pytest.raises(TrytonRequestError) as info:
        lossy_hook.delete(PARTY, 987654321, context=ALL_RECORDS)
    assert info.value.status == 404


def test_a_hard_delete_load_whose_answer_was_lost_equals_one_clean_load(tryton_hook, lossy_hook, tmp_path):
    data = load_spec(SPEC_FILE).model_dump(by_alias=True, exclude_none=True)
    data["name"] = f"t_{uuid.uuid4().hex[:8]}"
    data["target"]["delete_mode"] = "hard"
    spec = parse_spec(data, "test.yaml")
    code = f"lost-{uuid.uuid4().hex[:8]}"
    target = TrytonTarget(lossy_hook, SqliteErpTarget(tmp_path / "state.sqlite"))
    target.ensure_ready(spec)
    target.load(spec, [party_rows(code, T0, "Gone GmbH")], run_id="r1")

    result = target.load(spec, [], run_id="r2", deleted_keys=[code])

    assert result.deleted == 1
    assert tryton_hook.search(PARTY, [["code", "=", code]], ["id"], context=ALL_RECORDS) == []
    assert ledger.read(target.state, spec.target.state_schema, spec.name, [code]) == {}
