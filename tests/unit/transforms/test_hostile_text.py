"""CRM text that cannot be stored as it came (the rule in conduit.transforms.mapping): the pure
functions of conduit.transforms.text, the mapping that applies them, and the gate's view of it
(field checks, defects, rejections)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from conduit.quality.defects import field_checks
from conduit.quality.engine import decide, defect_rows, evaluate
from conduit.quality.suite import load_suite, parse_suite
from conduit.specs.model import load_spec, parse_spec
from conduit.transforms import text
from conduit.transforms.mapping import TEXT_RULE, invalid_column, judged_columns, map_frame, text_sources

REPO = Path(__file__).resolve().parents[3]
FLAGSHIP = load_spec(REPO / "include" / "syncs" / "crm_to_erp_customer_sync.yaml")
EXACT = ["Tab\there", "Line1\nLine2\r\nEnd", "Back\\slash \\N", '"Quoted", \'x\'', "first\n\\.\nlast", "\\.",
         "Zoë 😀 👨‍👩‍👧‍👦", "مرحبا \u202ekcatta\u202c", "\u200fשלום\u200f", "ﬀ ligature", "x" * 1_000_000]


def strings(*values) -> pa.Array:
    return pa.array(list(values), pa.string())


# --- conduit.transforms.text ----------------------------------------------------------------------


def test_clean_text_is_not_damaged_whatever_it_holds():
    assert text.damaged(strings(*EXACT, None, "")) is None
    assert text.damaged(strings()) is None
    # U+FB00 (ﬀ) starts with the same byte as U+FFFD: the first look is only a hint
    assert text.damaged(strings("\ufb00", "\uefbf", "\uffbd")) is None


@pytest.mark.parametrize("values, damaged", [
    (["Ann\x00a", "ok", None], [True, False, False]),
    (["\x00"], [True]),
    (["Jos\ufffd", "a\x00\ufffd", "plain"], [True, True, False]),
    (["end\ufffd"], [True]),
])
def test_damaged_marks_nul_and_replacement_characters(values, damaged):
    assert text.damaged(strings(*values)).to_pylist() == damaged


def test_damaged_sees_only_the_slice():
    values = strings("a\x00", "clean", "b")
    assert text.damaged(values.slice(1)) is None
    assert text.damaged(values.slice(0, 1)).to_pylist() == [True]


def test_nul_is_removed_and_shown_as_the_symbol_for_null():
    values = strings("Ann\x00a", "\x00\x00", None, "clean")
    assert text.without_nul(values).to_pylist() == ["Anna", "", None, "clean"]
    assert text.shown(values).to_pylist() == ["Ann␀a", "␀␀", None, "clean"]


def test_any_of_and_joined():
    a, b = pa.array([True, False, False]), pa.array([False, False, True])
    assert text.any_of([None, None]) is None
    assert text.any_of([None, a]) is a
    assert text.any_of([a, None, b]).to_pylist() == [True, False, True]
    assert text.joined([strings("a", None, None), strings("b", "c", None)], "-").to_pylist() == ["a-b", "c", None]


@pytest.mark.parametrize("data, found", [(b"", False), (b"\xef", False), (b"\xef\xbf", False), (b"x\xef\xbf\xbd", True),
                                         (b"\xef\xbf\xbdx", True), (b"\xef\xef\xbf\xbd", True), (b"\xef\xbf\xbc", False)])
def test_holds_finds_a_byte_sequence(data, found):
    assert text._holds(np.frombuffer(data, np.uint8), text._UTF8_REPLACEMENT) is found


# --- the mapping ----------------------------------------------------------------------------------


def raw(**columns) -> pd.DataFrame:
    n = len(next(iter(columns.values())))
    ids = [str(i + 1) for i in range(n)]
    base = {"id": ids, "hs_object_id": ids, "lastmodifieddate": ["2024-03-01T08:00:00Z"] * n,
            "createdate": ["2024-01-01T00:00:00Z"] * n, "lastname": ["L"] * n}
    return pd.DataFrame({**base, **columns})


def judged(frame: pd.DataFrame, row: int) -> dict[str, str]:
    """The judged (invalid) columns of one mapped row that hold a value."""
    return {c.removeprefix("conduit_invalid:"): v for c, v in frame.iloc[row].items()
            if c.startswith("conduit_invalid:") and v is not None and v == v}


def test_text_is_mapped_exactly_and_judged_clean():
    out = map_frame(raw(firstname=EXACT, company=EXACT), FLAGSHIP)
    assert out["first_name"].tolist() == EXACT and out["company_name"].tolist() == EXACT
    assert out["full_name"].tolist() == [f"{v} L" for v in EXACT]
    assert all(judged(out, i) == {} for i in range(len(EXACT)))


def test_nul_is_removed_and_every_column_made_from_it_records_a_defect():
    out = map_frame(raw(firstname=["Ann\x00a", "\x00", "Anna"], lastname=["Smith", None, "Smith"]), FLAGSHIP)
    assert out["first_name"].tolist() == ["Anna", None, "Anna"]
    assert out["full_name"].tolist() == ["Anna Smith", None, "Anna Smith"]
    assert judged(out, 0) == {"first_name": "Ann␀a", "full_name": "Ann␀a Smith"}
    assert judged(out, 1) == {"first_name": "␀", "full_name": "␀"}
    assert judged(out, 2) == {}
    # once the CRM holds "Anna", the ERP row does not change: the defect just resolves
    fixed = map_frame(raw(firstname=["Anna"], lastname=["Smith"]), FLAGSHIP)
    assert fixed["row_hash"][0] == out["row_hash"][0] and judged(fixed, 0) == {}


def test_a_damaged_contact_detail_is_not_guessed_at():
    out = map_frame(raw(email=["a\x00@example.com", "b@example.com"], phone=["+49 30 12\ufffd34567", "+49 30 1234567"],
                        country=["D\x00E", "Germany"]), FLAGSHIP)
    assert out["email"].tolist() == [None, "b@example.com"]
    assert out["phone"].tolist() == [None, "+49301234567"]  # the damaged country does not spoil the phone
    assert out["country_code"].tolist() == [None, "DE"]
    assert judged(out, 0) == {"email": "a␀@example.com", "phone": "+49 30 12\ufffd34567", "country_code": "D␀E"}
    assert judged(out, 1) == {}


def test_text_sources_and_judged_columns():
    spec = FLAGSHIP
    assert text_sources(spec.mapping["full_name"]) == ["firstname", "lastname"]
    assert text_sources(spec.mapping["customer_number"]) == ["hs_object_id"]
    assert text_sources(spec.mapping["phone"]) == ["phone"]  # not its region_from
    assert judged_columns(spec) == spec.columns  # every flagship column is made from CRM text
    checks = field_checks(spec)
    assert checks["phone"] == ("phone_e164", "null", invalid_column("phone"))
    assert checks["first_name"] == (TEXT_RULE, "null", invalid_column("first_name"))
    defaulted = parse_spec({
        "name": "s", "source": {"type": "hubspot", "properties": ["email", "lastmodifieddate"]},
        "target": {"type": "sql", "table": "t", "key": "k"},
        "mapping": {"k": {"source": "email"}, "origin": {"default": "crm"}},
    }, "s.yaml")
    assert judged_columns(defaulted) == ["k"]  # a constant is no CRM text


# --- the gate -------------------------------------------------------------------------------------


def gate(frame: pd.DataFrame, suite=None):
    suite = (suite or load_suite(REPO / "include" / "expectations" / "erp_customers.yaml"))
    report = evaluate(frame, suite.with_field_checks(field_checks(FLAGSHIP)), key="customer_number")
    decision = decide(report, "quarantine", max_rejected_ratio=0.5)
    return report, decision, defect_rows(report, decision.rejected.index if decision.rejected is not None else ())


def test_the_gate_records_cleaned_text_as_defects_and_rejects_a_name_left_empty():
    out = map_frame(raw(firstname=["Ann\x00a", "Jos\ufffd", "\x00", "Fine"], lastname=["Nul", "Li", "\x00", "Row"],
                        email=["x@example.com", "y\x00@example.com", None, None]), FLAGSHIP)
    report, decision, defects = gate(out)
    assert decision.load and sorted(decision.rejected_keys) == ["HS-C-3"]
    assert decision.rejected.loc[2, "reasons"] == "full_name is null"
    assert sorted(zip(defects["key"], defects["column"], defects["rule"], defects["value"], strict=True)) == [
        ("HS-C-1", "first_name", "clean_text", "Ann␀a"),
        ("HS-C-1", "full_name", "clean_text", "Ann␀a Nul"),
        ("HS-C-2", "email", "email", "y␀@example.com"),
        ("HS-C-2", "first_name", "clean_text", "Jos\ufffd"),
        ("HS-C-2", "full_name", "clean_text", "Jos\ufffd Li"),
    ]
    assert "first_name 'Ann␀a' could not be normalised by clean_text" in defects["reason"].tolist()
    assert all("\x00" not in str(v) for v in defects.to_numpy().ravel())  # storable anywhere


def test_on_invalid_reject_quarantines_a_damaged_contact_detail():
    spec = parse_spec({
        "name": "s", "source": {"type": "hubspot", "properties": ["email", "lastmodifieddate"]},
        "target": {"type": "sql", "table": "t", "key": "k"},
        "mapping": {"k": {"transforms": [{"type": "template", "template": "K{hs_object_id}"}]},
                    "email": {"source": "email", "transforms": [{"type": "email", "on_invalid": "reject"}]}},
    }, "s.yaml")
    out = map_frame(raw(email=["a\x00@example.com", "b@example.com"]), spec)
    assert out["email"].tolist() == ["a@example.com", "b@example.com"]  # rejected rows are not loaded anyway
    not_null = parse_suite({"name": "t", "expectations": [
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "k"}}]}, "t.yaml")
    report = evaluate(out, not_null.with_field_checks(field_checks(spec)), key="k")
    decision = decide(report, "quarantine", max_rejected_ratio=1.0)
    assert sorted(decision.rejected_keys) == ["K1"]
    assert decision.rejected.loc[0, "reasons"] == "email 'a␀@example.com' could not be normalised by email"
