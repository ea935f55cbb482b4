import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from crm_samples import contacts

from conduit.exceptions import SpecError
from conduit.specs.model import load_spec, parse_spec
from conduit.transforms.mapping import (
    MAPPED_EXTRA_COLUMNS,
    invalid_column,
    map_frame,
    map_table,
    mapped_schema,
    row_hashes,
)

# every flagship column is judged: on_invalid: null (email, phone, country_code) or clean_text (the rest)
CHECKED = [invalid_column(c) for c in ("customer_number", "crm_id", "email", "first_name", "last_name", "full_name",
                                       "phone", "country_code", "company_name", "lifecycle_stage", "crm_created_at")]

REPO = Path(__file__).resolve().parents[3]
FLAGSHIP = REPO / "include" / "syncs" / "crm_to_erp_customer_sync.yaml"
PROPERTIES = [
    "email",
    "firstname",
    "lastname",
    "phone",
    "country",
    "company",
    "lifecyclestage",
    "createdate",
    "lastmodifieddate",
    "vip",
]


def _spec(mapping: dict):
    return parse_spec(
        {
            "name": "test_sync",
            "source": {"type": "hubspot", "properties": PROPERTIES},
            "target": {"type": "sql", "table": "t", "key": "key"},
            "mapping": {
                "key": {"transforms": [{"type": "template", "template": "K-{hs_object_id}"}]},
                **mapping,
            },
        },
        "test.yaml",
    )


def _raw(**columns) -> pd.DataFrame:
    n = len(next(iter(columns.values())))
    ids = [str(i + 1) for i in range(n)]
    base = {"id": ids, "hs_object_id": ids, "lastmodifieddate": ["2024-03-01T08:00:00.000Z"] * n}
    return pd.DataFrame({**base, **columns})


def test_flagship_spec_end_to_end():
    spec = load_spec(FLAGSHIP)
    raw = pd.DataFrame(
        {
            "id": ["101", "102", "103"],
            "hs_object_id": ["101", "102", "103"],
            "email": ["  Jane.Doe@Example.COM ", "not-an-email", None],
            "firstname": [" Jane ", "Jürgen", ""],
            "lastname": ["Doe", None, "  "],
            "phone": ["(030) 1234567", "+1 415-555-0100 x12", "call me"],
            "country": ["germany", "USA", "Atlantis"],
            "company": [" Acme GmbH ", "", None],
            "lifecyclestage": [" Customer ", None, "LEAD"],
            "createdate": ["2024-01-15T10:30:00.123Z", "1705314600123", "garbage"],
            "lastmodifieddate": [
                "2024-02-01T00:00:00Z",
                "2024-02-02T12:00:00.500Z",
                "2024-02-03T00:00:00+01:00",
            ],
        }
    )
    out = map_frame(raw, spec)

    assert list(out.columns) == spec.columns + list(MAPPED_EXTRA_COLUMNS) + CHECKED
    rows = out.drop(columns=["row_hash", *CHECKED]).astype(object).where(out.notna(), None).to_dict("records")
    # what the transforms could not normalise: nulled, and the given value kept for the gate
    invalid = out[CHECKED].astype(object).where(out[CHECKED].notna(), None).to_dict("records")
    assert invalid == [
        dict.fromkeys(CHECKED),
        {**dict.fromkeys(CHECKED), invalid_column("email"): "not-an-email"},
        {**dict.fromkeys(CHECKED), invalid_column("phone"): "call me",
         invalid_column("country_code"): "Atlantis"},
    ]
    created = datetime(2024, 1, 15, 10, 30, 0, 123000, tzinfo=UTC)
    assert rows[0] == {
        "customer_number": "HS-C-101",
        "crm_id": 101,
        "email": "jane.doe@example.com",
        "first_name": "Jane",
        "last_name": "Doe",
        "full_name": "Jane Doe",
        "phone": "+49301234567",
        "country_code": "DE",
        "company_name": "Acme GmbH",
        "lifecycle_stage": "customer",
        "crm_created_at": created,
        "source_modified_at": datetime(2024, 2, 1, tzinfo=UTC),
    }
    assert rows[1] == {
        "customer_number": "HS-C-102",
        "crm_id": 102,
        "email": None,
        "first_name": "Jürgen",
        "last_name": None,
        "full_name": "Jürgen",
        "phone": "+14155550100",
        "country_code": "US",
        "company_name": None,
        "lifecycle_stage": "lead",
        "crm_created_at": created,
        "source_modified_at": datetime(2024, 2, 2, 12, 0, 0, 500000, tzinfo=UTC),
    }
    assert rows[2] == {
        "customer_number": "HS-C-103",
        "crm_id": 103,
        "email": None,
        "first_name": None,
        "last_name": None,
        "full_name": None,
        "phone": None,
        "country_code": None,
        "company_name": None,
        "lifecycle_stage": "lead",
        "crm_created_at": None,
        "source_modified_at": datetime(2024, 2, 2, 23, 0, tzinfo=UTC),
    }
    assert str(out["crm_id"].dtype) == "Int64"
    assert str(out["crm_created_at"].dtype) == "datetime64[us, UTC]"
    assert out["email"].dtype == object and out["email"].iloc[2] is None
    assert out["row_hash"].str.fullmatch(r"[0-9a-f]{32}").all() and out["row_hash"].is_unique


def test_flagship_spec_on_generated_contacts_writes_its_schema():
    spec = load_spec(FLAGSHIP)
    raw = pd.DataFrame(contacts(500))
    out = map_frame(raw, spec)
    assert len(out) == 500
    table = pa.Table.from_pandas(out, schema=mapped_schema(spec), preserve_index=False)
    assert table.equals(map_table(raw, spec))
    assert out["phone"].dropna().str.startswith("+").mean() > 0.8  # most dirty numbers normalise


def test_template_concat_and_defaults():
    spec = _spec(
        {
            "code": {"transforms": [{"type": "template", "template": "{firstname}-{lastname}!"}]},
            "name": {
                "transforms": [{"type": "concat", "sources": ["firstname", "lastname"], "separator": ", "}]
            },
            "constant": {"transforms": [{"type": "template", "template": "CRM"}]},
            "stage": {
                "source": "lifecyclestage",
                "transforms": [{"type": "trim"}, {"type": "upper"}],
                "default": "NEW",
            },
            "vip": {"source": "vip", "dtype": "boolean", "default": False},
            "score": {"source": "company", "dtype": "integer", "default": 0},
        }
    )
    raw = _raw(
        firstname=[" Ann ", None, ""],
        lastname=["Lee", "Kim", None],
        lifecyclestage=["lead", " ", None],
        vip=["yes", "FALSE", "perhaps"],
        company=["12", "x", None],
    )
    out = map_frame(raw, spec)
    assert out["code"].tolist() == [" Ann -Lee!", None, None]  # a missing field: no value to derive
    assert out["name"].tolist() == ["Ann, Lee", "Kim", None]
    assert out["constant"].tolist() == ["CRM"] * 3
    assert out["stage"].tolist() == ["LEAD", "NEW", "NEW"]
    assert out["vip"].tolist() == [True, False, False]
    assert out["score"].tolist() == [12, 0, 0]


def test_map_values_title_and_timestamp_dtype():
    spec = _spec(
        {
            "stage": {
                "source": "lifecyclestage",
                "transforms": [
                    {"type": "map_values", "values": {"MQL": "marketingqualifiedlead", "junk": None}}
                ],
            },
            "exact": {
                "source": "lifecyclestage",
                "transforms": [{"type": "map_values", "values": {"MQL": "m"}, "case_insensitive": False}],
            },
            "company": {"source": "company", "transforms": [{"type": "title"}]},
            "created": {"source": "createdate", "dtype": "timestamp"},
            "created_text": {"source": "createdate", "transforms": [{"type": "timestamp"}]},
        }
    )
    raw = _raw(
        lifecyclestage=["mql", "Junk", "customer"],
        company=["acme gmbh", "o'brien ltd", None],
        createdate=["1705314600000", "2024-01-15T10:30:00Z", "nope"],
    )
    out = map_frame(raw, spec)
    assert out["stage"].tolist() == ["marketingqualifiedlead", None, "customer"]
    assert out["exact"].tolist() == ["mql", "Junk", "customer"]
    assert out["company"].tolist() == ["Acme Gmbh", "O'Brien Ltd", None]
    assert out["created"].tolist()[:2] == [pd.Timestamp("2024-01-15T10:30:00Z")] * 2
    assert pd.isna(out["created"].iloc[2])
    assert out["created_text"].tolist() == ["2024-01-15T10:30:00.000000Z"] * 2 + [None]


def test_template_format_specs_are_refused_when_the_spec_loads():
    with pytest.raises(SpecError, match="has a format spec"):
        _spec({"code": {"transforms": [{"type": "template", "template": "{hs_object_id:>8}"}]}})


def test_missing_property_column_is_all_null():
    spec = _spec(
        {
            "email": {"source": "email", "transforms": [{"type": "email"}]},
            "stage": {"source": "lifecyclestage", "default": "lead"},
        }
    )
    out = map_frame(_raw(firstname=["a", "b"]), spec)
    assert out["email"].tolist() == [None, None]
    assert out["stage"].tolist() == ["lead", "lead"]


def test_empty_frame():
    spec = load_spec(FLAGSHIP)
    out = map_frame(pd.DataFrame({"id": pd.Series([], dtype=str)}), spec)
    assert list(out.columns) == spec.columns + list(MAPPED_EXTRA_COLUMNS) + CHECKED
    assert len(out) == 0
    assert pa.Table.from_pandas(out, schema=mapped_schema(spec), preserve_index=False).num_rows == 0


def test_mapped_schema_types():
    spec = _spec(
        {
            "n": {"source": "company", "dtype": "integer"},
            "b": {"source": "vip", "dtype": "boolean"},
            "t": {"source": "createdate", "dtype": "timestamp"},
        }
    )
    schema = mapped_schema(spec)
    judged = [invalid_column(c) for c in ("key", "n", "b", "t")]  # made from CRM text: clean_text
    assert schema.names == ["key", "n", "b", "t", "source_modified_at", "row_hash", *judged]
    assert [str(t) for t in schema.types] == [
        "string",
        "int64",
        "bool",
        "timestamp[us, tz=UTC]",
        "timestamp[us, tz=UTC]",
        "string",
        *["string"] * len(judged),
    ]


def test_row_hash_changes_with_any_mapped_value():
    spec = load_spec(FLAGSHIP)
    raw = pd.DataFrame(contacts(1, seed=3))
    base = map_frame(raw, spec)["row_hash"].iloc[0]
    changes = {
        "email": "other@example.com",
        "firstname": "Other",
        "lastname": "Other",
        "phone": "+1 415 555 0199",
        "country": "Japan",
        "company": "Other Inc",
        "lifecyclestage": "evangelist",
        "createdate": "2001-01-01T00:00:00Z",
        "hs_object_id": "7",
    }
    for column, value in changes.items():
        changed = raw.assign(**{column: [value]})
        assert map_frame(changed, spec)["row_hash"].iloc[0] != base, column
    # the cursor is not a mapped column: a new modification time alone keeps the hash
    touched = raw.assign(lastmodifieddate=["2030-01-01T00:00:00Z"])
    assert map_frame(touched, spec)["row_hash"].iloc[0] == base


def test_row_hash_tells_values_apart_that_join_alike():
    def hashes(*columns):
        return row_hashes([pa.array(c, pa.string()) for c in columns]).to_pylist()

    assert len(set(hashes(["", None, "\\N", "\\\\N"]))) == 4  # empty, null and lookalikes
    first = hashes(["a\x1fb"], ["c"])[0]
    assert first != hashes(["a"], ["b\x1fc"])[0]
    assert hashes(["x"], [None])[0] != hashes([None], ["x"])[0]
    ints = row_hashes([pa.array([1, None, 0], pa.int64())]).to_pylist()
    assert len(set(ints)) == 3


def test_row_hash_is_the_same_in_a_new_process(tmp_path):
    spec_path = FLAGSHIP
    raw = pd.DataFrame(contacts(50, seed=11))
    raw.to_parquet(tmp_path / "raw.parquet")
    here = map_frame(raw, load_spec(spec_path))["row_hash"].tolist()
    script = (
        "import json, sys, pandas as pd\n"
        "from conduit.specs.model import load_spec\n"
        "from conduit.transforms.mapping import map_frame\n"
        "raw = pd.read_parquet(sys.argv[1])\n"
        "print(json.dumps(map_frame(raw, load_spec(sys.argv[2]))['row_hash'].tolist()))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "raw.parquet"), str(spec_path)],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345"},
    )
    assert json.loads(done.stdout) == here


def test_bad_data_never_raises():
    spec = load_spec(FLAGSHIP)
    junk = ["\x00", "🙂", "+", "@", "9" * 40, " \x1f ", "\\", "-1", "NaN", "2024-13-45T99:99:99Z"]
    raw = pd.DataFrame({p: junk for p in spec.source.properties} | {"id": junk, "hs_object_id": junk})
    out = map_frame(raw, spec)
    assert len(out) == len(junk)
    assert out["crm_id"].tolist()[7] == -1
