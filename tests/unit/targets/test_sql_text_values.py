"""The SQL target's last line against text PostgreSQL cannot store: the quarantine's JSON shows a
NUL as ␀, and a NUL that reaches the COPY fails naming its row (the databases themselves are in
tests/reliability/test_hostile_crm_data.py)."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from conduit.exceptions import TargetConfigError
from conduit.targets.sql import _json_dumps, _refuse_nul


def test_quarantine_json_shows_nul_and_keeps_everything_else():
    record = {"id": "1", "firstname": "Ann\x00a", "lastname": None, "list": ["\x00"], "k\x00": "v"}
    dumped = _json_dumps(record)
    assert "\\u0000" not in dumped
    assert json.loads(dumped) == {"id": "1", "firstname": "Ann␀a", "lastname": None, "list": ["␀"], "k␀": "v"}
    literal = {"note": "a literal \\u0000, tab\t, quote \", emoji 😀, \u202eRTL"}
    assert json.loads(_json_dumps(literal)) == literal  # no NUL: as it is


def test_a_nul_in_a_staged_batch_names_its_key_and_column():
    keys = pa.chunked_array([["K1", "K2"], ["K3", "K4"]])
    names = pa.chunked_array([["a", "b"], ["c\x00", None]])
    with pytest.raises(TargetConfigError, match=r"column 'name' of customer_number 'K3' holds a NUL"):
        _refuse_nul(pa.table({"customer_number": keys, "name": names}), "customer_number")


def test_clean_batches_pass_whatever_their_text():
    table = pa.table({"customer_number": ["K1", "K2", "K3"], "name": ["tab\t\\.\n", None, "😀 \ufffd"],
                      "n": pa.array([0, 1, 2], pa.int64())})
    _refuse_nul(table, "customer_number")
    sliced = pa.table({"customer_number": ["K1", "K2"], "name": ["\x00", "ok"]}).slice(1)
    _refuse_nul(sliced, "customer_number")  # the NUL is outside the slice: the rows decide
