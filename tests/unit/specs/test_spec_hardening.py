"""Spec mistakes that used to load, or to escape as a bare exception, are refused when the file is
read, naming the file and the field: an approval timeout that is huge, zero or negative; a key
given twice in a YAML mapping; a template or a default the mapping engine cannot fill; an
identifier with a trailing newline."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conduit.exceptions import SpecError
from conduit.quality.suite import load_suite
from conduit.rules.model import RulesFileError, load_rules, parse_rules
from conduit.specs.model import load_spec, parse_spec, read_yaml
from conduit.transforms.mapping import map_frame

REPO = Path(__file__).resolve().parents[3]
FLAGSHIP = REPO / "include" / "syncs" / "crm_to_erp_customer_sync.yaml"
RULES = REPO / "include" / "rules" / "order_routing.yaml"
SUITE = REPO / "include" / "expectations" / "erp_customers.yaml"
TEMPLATE = "mapping.customer_number.transforms[0].template"


@pytest.fixture
def data() -> dict:
    return yaml.safe_load(FLAGSHIP.read_text())


def written(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "sync.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


def file_problems(path: Path, loader=load_spec, error: type[SpecError] = SpecError) -> dict[str, str]:
    """What ``loader`` reports for ``path``; every line of the message names the file."""
    with pytest.raises(error) as info:
        loader(path)
    assert info.value.path == str(path)
    assert all(line.startswith(f"{path}: ") for line in str(info.value).splitlines()[1:])
    return dict(info.value.problems)


def line_of(text: str, line: str, nth: int = 1) -> int:
    """The 1-based number of the ``nth`` line of ``text`` that is ``line``."""
    return [i for i, current in enumerate(text.splitlines(), 1) if current == line][nth - 1]


# --- the approval timeout: more than 0, at most a week ----------------------------------------------


@pytest.mark.parametrize("timeout", ["99999999999h", "9" * 400 + "d", 10**20, "P99999999999D", "8d", "P7DT1S"])
def test_a_timeout_beyond_a_week_is_refused_naming_file_and_field(data, tmp_path, timeout):
    """99999999999h used to escape as a bare OverflowError: no file, no field, no DAG file."""
    data["approval"] = {"timeout": timeout}
    path = written(tmp_path, data)
    problems = file_problems(path)
    assert list(problems) == ["approval.timeout"], problems
    assert any(words in problems["approval.timeout"] for words in ("7 days", "999,999,999 days", "too large"))


@pytest.mark.parametrize("timeout", [-3600, "-1h", 0, "0s", "0h", "PT0S", "-PT1H"])
def test_a_timeout_of_zero_or_less_is_refused(data, tmp_path, timeout):
    """Airflow's HITL would reject every run at once, without asking anyone."""
    data["approval"] = {"timeout": timeout}
    problems = file_problems(written(tmp_path, data))
    assert list(problems) == ["approval.timeout"], problems
    assert "must be more than 0" in problems["approval.timeout"]


@pytest.mark.parametrize(("timeout", "expected"), [
    ("12h", timedelta(hours=12)), ("PT12H", timedelta(hours=12)), (43200, timedelta(hours=12)),
    ("90s", timedelta(seconds=90)), ("1s", timedelta(seconds=1)), ("7d", timedelta(days=7)),
    ("P7D", timedelta(days=7)),
])
def test_timeouts_from_a_second_to_a_week_are_accepted(data, tmp_path, timeout, expected):
    data["approval"] = {"timeout": timeout}
    assert load_spec(written(tmp_path, data)).approval.timeout == expected


# --- a key given twice in one YAML mapping: YAML silently keeps the last --------------------------


def test_a_column_mapped_twice_is_refused_naming_the_key_and_both_lines(tmp_path):
    text = FLAGSHIP.read_text().replace("  company_name:\n", "  email:\n    source: company\n  company_name:\n")
    path = tmp_path / "sync.yaml"
    path.write_text(text)
    problems = file_problems(path)
    where = f"line {line_of(text, '  email:', 2)}, column 3"
    assert list(problems) == [where], problems
    assert problems[where].startswith(f"the key 'email' is given twice in one mapping (first at line "
                                      f"{line_of(text, '  email:')}, column 3)")


def test_a_stray_later_approval_does_not_switch_the_breaker_off(tmp_path):
    text = FLAGSHIP.read_text() + "\napproval: {max_delete_ratio: 0.05}\n# ... 200 lines later\napproval:\n"
    path = tmp_path / "sync.yaml"
    path.write_text(text)
    problems = file_problems(path)
    assert list(problems) == [f"line {line_of(text, 'approval:')}, column 1"], problems
    assert "the key 'approval' is given twice" in next(iter(problems.values()))


@pytest.mark.parametrize(("loader", "error", "source", "duplicate"), [
    (load_rules, RulesFileError, RULES, "default: approve\n"),
    (load_suite, SpecError, SUITE, "name: other_suite\n"),
], ids=["rules", "suite"])
def test_rules_files_and_suites_refuse_a_key_given_twice_too(tmp_path, loader, error, source, duplicate):
    path = tmp_path / f"twice{source.suffix}"
    path.write_text(source.read_text() + duplicate)
    with pytest.raises(error) as info:
        loader(path)
    assert f"the key '{duplicate.split(':')[0]}' is given twice" in str(info.value)
    assert str(path) in str(info.value)


def test_keys_that_are_equal_once_read_count_as_the_same_key(tmp_path):
    """``1`` and ``1.0`` are one key of the dict YAML builds: the first would be lost."""
    path = tmp_path / "any.yaml"
    path.write_text("values:\n  1: a\n  1.0: b\n")
    assert file_problems(path, read_yaml) == {
        "line 3, column 3": "the key '1.0' is given twice in one mapping (first at line 2, column 3); YAML would "
                            "silently keep only the last: remove or rename one"}


def test_merge_keys_may_still_be_overridden(tmp_path):
    """``<<: *anchor`` then a key of the anchor's: an override, not a duplicate."""
    text = FLAGSHIP.read_text().replace("  email:\n    source: email\n", "  email: &email\n    source: email\n")
    assert "&email" in text
    text = text.replace("\nquality:\n", "  contact_email:\n    <<: *email\n    source: email\n"
                                        "    description: the same address\n\nquality:\n")
    path = tmp_path / "sync.yaml"
    path.write_text(text)
    spec = load_spec(path)
    assert spec.mapping["contact_email"].transforms == spec.mapping["email"].transforms
    assert spec.mapping["contact_email"].description == "the same address"


# --- templates: what the mapping engine cannot fill is refused at the template field --------------


@pytest.mark.parametrize(("template", "words"), [
    ("HS-C-{}", "the field {} in 'HS-C-{}' does not name a CRM property"),
    ("HS-C-{0}", "the field {0} in 'HS-C-{0}' does not name a CRM property"),
    ("HS-C-{hs_object_id.real}", "the field {hs_object_id.real} in"),
    ("HS-C-{hs_object_id[0]}", "the field {hs_object_id[0]} in"),
    ("HS-C-{ hs_object_id }", "the field { hs_object_id } in"),
    ("HS-C-{hs_object_id:>8}", "the field {hs_object_id:>8} in 'HS-C-{hs_object_id:>8}' has a format spec"),
    ("HS-C-{hs_object_id!r}", "the field {hs_object_id!r} in 'HS-C-{hs_object_id!r}' has a conversion"),
    ("HS-C-{hs_object_id", "'HS-C-{hs_object_id' cannot be read (expected '}' before end of string)"),
    ("HS-C-}", "'HS-C-}' cannot be read (Single '}' encountered in format string)"),
])
def test_a_template_the_engine_cannot_fill_is_refused_at_its_field(data, tmp_path, template, words):
    data["mapping"]["customer_number"]["transforms"][0]["template"] = template
    problems = file_problems(written(tmp_path, data))
    assert list(problems) == [TEMPLATE], problems
    assert problems[TEMPLATE].startswith(words), problems


@pytest.mark.parametrize(("template", "expected"), [
    ("HS-C-{hs_object_id}", ["HS-C-7", "HS-C-8"]),
    ("{{HS}}-{hs_object_id}", ["{HS}-7", "{HS}-8"]),
    ("{firstname}{hs_object_id}", ["Ann7", None]),  # a null field makes the value null
    ("HS-C", ["HS-C", "HS-C"]),
])
def test_templates_the_engine_fills_load_and_map(data, template, expected):
    data["mapping"]["customer_number"]["transforms"][0]["template"] = template
    spec = parse_spec(data, "syncs/x.yaml")
    raw = pd.DataFrame({"id": ["7", "8"], "hs_object_id": ["7", "8"], "firstname": ["Ann", None],
                        "lastmodifieddate": ["2024-03-01T08:00:00.000Z"] * 2})
    assert map_frame(raw, spec)["customer_number"].tolist() == expected


def test_template_parts_is_the_reading_the_engine_uses():
    from conduit.specs.model import template_parts

    assert template_parts("HS-{{C}}-{hs_object_id}/{email}") == [
        ("HS-{", None), ("C}", None), ("-", "hs_object_id"), ("/", "email")]
    with pytest.raises(ValueError, match="has a format spec"):
        template_parts("{hs_object_id:>8}")


# --- a default must be a value of the column's dtype, read as the engine reads it ----------------


@pytest.mark.parametrize(("default", "dtype", "words"), [
    ("abc", "integer", "'abc' is not an integer"),
    ("1.5", "integer", "'1.5' is not an integer"),
    (True, "integer", "True is not an integer"),
    ("maybe", "boolean", "'maybe' is not a boolean"),
    (2, "boolean", "2 is not a boolean"),
    ("next tuesday", "timestamp", "'next tuesday' is not a timestamp"),
])
def test_a_default_the_dtype_cannot_hold_is_refused(data, tmp_path, default, dtype, words):
    """It used to load, and fill every empty row with NULL."""
    data["mapping"]["score"] = {"source": "company", "default": default, "dtype": dtype}
    problems = file_problems(written(tmp_path, data))
    assert list(problems) == ["mapping.score.default"], problems
    assert problems["mapping.score.default"].startswith(words), problems


@pytest.mark.parametrize(("default", "dtype", "filled"), [
    (0, "integer", 0), ("42", "integer", 42), (" -7 ", "integer", -7),
    ("yes", "boolean", True), (False, "boolean", False), ("0", "boolean", False),
    ("2024-01-01T00:00:00Z", "timestamp", pd.Timestamp("2024-01-01T00:00:00Z")),
    ("1704067200000", "timestamp", pd.Timestamp("2024-01-01T00:00:00Z")),
    ("n/a", "string", "n/a"), (5, "string", "5"),
])
def test_a_default_the_dtype_holds_fills_empty_rows(data, default, dtype, filled):
    data["mapping"]["score"] = {"source": "company", "default": default, "dtype": dtype}
    spec = parse_spec(data, "syncs/x.yaml")
    raw = pd.DataFrame({"id": ["7"], "hs_object_id": ["7"], "company": [None],
                        "lastmodifieddate": ["2024-03-01T08:00:00.000Z"]})
    assert map_frame(raw, spec)["score"].tolist() == [filled]


# --- identifiers: a trailing newline is not a plain name -----------------------------------------


@pytest.mark.parametrize(("mutate", "field"), [
    (lambda d: d["mapping"].update({"email\n": d["mapping"].pop("email")}), "mapping"),
    (lambda d: d["target"].update(table="erp_customers\n"), "target.table"),
    (lambda d: d["target"].update(schema="public\n"), "target.schema"),
    (lambda d: d.update(name="crm_sync\n"), "name"),
    (lambda d: d["target"]["checks"]["table"].update(
        {"positive\n": d["target"]["checks"]["table"].popitem()[1]}), "target.checks.table['positive\\n']"),
])
def test_an_identifier_with_a_trailing_newline_is_refused(data, tmp_path, mutate, field):
    mutate(data)
    problems = file_problems(written(tmp_path, data))
    assert list(problems) == [field], problems


@pytest.mark.parametrize("mutate", [
    lambda r: r.update(name="order_routing\n"),
    lambda r: r["rules"][0].update(name="low_risk\n"),
    lambda r: r["rules"][0]["when"][0].update(field="fraud.score\n"),
])
def test_a_rules_name_or_field_path_with_a_trailing_newline_is_refused(mutate):
    rules = yaml.safe_load(RULES.read_text())
    mutate(rules)
    with pytest.raises(RulesFileError, match="should match pattern"):
        parse_rules(rules, "rules/x.yaml")
