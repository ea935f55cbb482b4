"""The sync spec: the flagship loads; every kind of mistake names the file, the field, the problem."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conduit.exceptions import SpecError
from conduit.specs.model import load_spec, load_specs, parse_spec

REPO = Path(__file__).resolve().parents[3]
FLAGSHIP = REPO / "include" / "syncs" / "crm_to_erp_customer_sync.yaml"


@pytest.fixture
def data() -> dict:
    return yaml.safe_load(FLAGSHIP.read_text())


def problems(data: dict) -> list[tuple[str, str]]:
    with pytest.raises(SpecError) as info:
        parse_spec(data, "syncs/x.yaml")
    assert str(info.value).count("syncs/x.yaml: ") == len(info.value.problems)
    return info.value.problems


def test_flagship_loads():
    spec = load_spec(FLAGSHIP)
    assert spec.name == "crm_to_erp_customer_sync"
    assert spec.target.key == "customer_number" and spec.target.db_schema == "public"
    assert spec.schedule.timezone == "Europe/Berlin"
    assert spec.mapping["full_name"].source_properties() == ["firstname", "lastname"]
    assert spec.mapping["phone"].source_properties() == ["phone", "country"]
    assert spec.mapping["customer_number"].source_properties() == ["hs_object_id"]
    # junk contact details load empty and are recorded as defects; a few percent are normal
    assert {c: m.invalid_check.on_invalid for c, m in spec.mapping.items() if m.invalid_check} == {
        "email": "null", "phone": "null", "country_code": "null"}
    assert (spec.quality.max_rejected_ratio, spec.quality.max_defect_ratio) == (0.01, 0.25)


def test_on_invalid_defaults_to_keep_raw_and_reads_unquoted_yaml_null(data):
    data["mapping"]["email"]["transforms"] = yaml.safe_load("[{type: email}]")
    data["mapping"]["phone"]["transforms"] = yaml.safe_load("[{type: phone_e164, on_invalid: null}]")
    spec = parse_spec(data, "syncs/x.yaml")
    assert spec.mapping["email"].transforms[0].on_invalid == "keep_raw" and spec.mapping["email"].invalid_check is None
    assert spec.mapping["phone"].invalid_check.on_invalid == "null"
    assert (spec.quality.max_defect_ratio, spec.quality.defect_ratio_min_rows) == (0.25, 100)


@pytest.mark.parametrize(
    ("mutate", "field", "words"),
    [
        (lambda d: d["mapping"]["email"]["transforms"][0].update(type="emial"), "mapping.email.transforms[0]",
         "emial"),
        (lambda d: d["mapping"]["phone"]["transforms"][0].update(default_region=5),
         "mapping.phone.transforms[0].default_region", "string"),
        (lambda d: d["target"].update(key="nope"), "target.key", "nope"),
        (lambda d: d["mapping"].update(x={"source": "nosuch"}), "mapping.x", "nosuch"),
        (lambda d: d["mapping"].update(x={"dtype": "string"}), "mapping.x.source", "needs a `source`"),
        (lambda d: d["source"]["cursor"].update(property="zzz"), "source.cursor.property", "zzz"),
        (lambda d: d["source"].update(type="salesforce"), "source.type", "unknown source type 'salesforce'"),
        (lambda d: d["schedule"].update(timezone="Mars/Olympus"), "schedule.timezone", "Mars/Olympus"),
        (lambda d: d["schedule"].update(cron="0 25 * * *"), "schedule.cron", "cron"),
        (lambda d: d["source"].update(page_size=500), "source.page_size", "100"),
        (lambda d: d.update(surprise=1), "surprise", "Extra inputs"),
        (lambda d: d["mapping"].update({"bad column": {"source": "email"}}), "mapping", "'bad column' is not a plain SQL identifier"),
        (lambda d: d["quality"].update(policy="ignore"), "quality.policy", "block"),
        (lambda d: d["target"]["checks"]["columns"].update(emial={"null_check": {"equal_to": 0}}),
         "target.checks.columns.emial", "no such column"),
        (lambda d: d["target"]["checks"]["columns"].update(email={"null_chek": {"equal_to": 0}}),
         "target.checks.columns.email.null_chek", "null_check"),
        (lambda d: d["target"]["checks"]["columns"].update(email={"null_check": {"partition_clause": "active"}}),
         "target.checks.columns.email.null_check", "at least one of equal_to"),
        (lambda d: d["target"]["checks"]["columns"].update(email={"min": {"equal_to": 1, "leq_to": 2}}),
         "target.checks.columns.email.min", "equal_to cannot be combined"),
        (lambda d: d["target"]["checks"]["table"].update({"bad name": {"check_statement": "true"}}),
         "target.checks.table.bad name", "pattern"),
        (lambda d: d["mapping"]["phone"]["transforms"][0].update(on_invalid="drop"),
         "mapping.phone.transforms[0].on_invalid", "'keep_raw', 'null' or 'reject'"),
        (lambda d: d["mapping"]["first_name"]["transforms"][0].update(on_invalid="null"),
         "mapping.first_name.transforms[0].on_invalid", "Extra inputs"),  # trim cannot tell
        (lambda d: d["quality"].update(max_defect_ratio=1.5), "quality.max_defect_ratio", "less than or equal to 1"),
    ],
)
def test_errors_name_field_and_problem(data, mutate, field, words):
    mutate(data)
    found = problems(data)
    assert any(f == field and words in msg for f, msg in found), found


def test_yaml_syntax_error_names_line(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: x\nsource: [unclosed\n")
    with pytest.raises(SpecError) as info:
        load_spec(bad)
    assert str(bad) in str(info.value) and "line" in str(info.value)


def test_folder_reports_every_broken_file_and_duplicate_names(tmp_path, data):
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(data))
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(data))  # same name twice
    data["target"]["key"] = "nope"
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError) as info:
        load_specs(tmp_path)
    text = str(info.value)
    assert "c.yaml" in text and "target.key" in text
    assert "used by more than one spec" in text
