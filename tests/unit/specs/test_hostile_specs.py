"""Hostile specs (and suites and rules files) are refused when they are read, naming the file and
the field, before anything is run: path traversal in file references, YAML bombs, huge or
non-UTF-8 files, unknown fields, SQL in identifiers and in target checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conduit.exceptions import SpecError
from conduit.quality.suite import load_suite
from conduit.quality.target_checks import BUILTIN_TABLE_CHECKS, table_checks
from conduit.rules.model import RulesFileError, load_rules
from conduit.specs.model import (
    CHECK_SQL_MAX_CHARS,
    MAX_FILE_BYTES,
    MAX_YAML_DEPTH,
    MAX_YAML_VALUES,
    check_sql,
    load_spec,
    load_specs,
    parse_spec,
)

REPO = Path(__file__).resolve().parents[3]
FLAGSHIP = REPO / "include" / "syncs" / "crm_to_erp_customer_sync.yaml"
TABLE_CHECK = "target.checks.table.crm_ids_are_positive"
COLUMN_CHECK = "target.checks.columns.lifecycle_stage.null_check"


CONTROLS = ("accepted", "still", "well_within")  # cases of inputs that must pass: not hostile ones


@pytest.fixture(autouse=True)
def _counted(request, record_property):
    """One hostile input per case, for tests/reliability's summary table."""
    if not any(word in request.node.name for word in CONTROLS):
        record_property("hostile_inputs", ("specs", 1))


@pytest.fixture
def data() -> dict:
    return yaml.safe_load(FLAGSHIP.read_text())


def problems(data: dict) -> dict[str, str]:
    with pytest.raises(SpecError) as info:
        parse_spec(data, "syncs/x.yaml")
    return dict(info.value.problems)


def file_problems(loader, path: Path, error: type[SpecError] = SpecError) -> list[tuple[str, str]]:
    """The problems ``loader`` reports for ``path``; its message names the file on every line."""
    with pytest.raises(error) as info:
        loader(path)
    assert info.value.path == str(path)
    assert all(line.startswith(f"{path}: ") for line in str(info.value).splitlines()[1:])
    return info.value.problems


# --- path traversal: a file reference is a plain file name under include/<folder>/ -----------------


@pytest.mark.parametrize("suite", [
    "../../../../etc/passwd",
    "/etc/passwd",
    "../expectations/erp_customers.yaml",
    "sub/erp_customers.yaml",
    "..\\..\\windows\\win.ini",
    "~/erp_customers.yaml",
    "..",
])
def test_a_suite_outside_include_expectations_is_refused(data, suite):
    data["quality"]["suite"] = suite
    assert problems(data) == {"quality.suite": (
        f"{suite!r} must be a plain file name in include/expectations/ (no '/', '\\', '..' or '~'), "
        "e.g. erp_customers.yaml")}


@pytest.mark.parametrize("suite", ["erp_customers", "erp customers.yaml", "", ".yaml", "C:erp.yaml",
                                   "erp\x00.yaml", "erp_customers.yaml\n", "passwd"])
def test_a_suite_that_is_not_a_yaml_or_json_file_name_is_refused(data, suite):
    data["quality"]["suite"] = suite
    assert "must be a file name of letters, digits" in problems(data)["quality.suite"]


@pytest.mark.parametrize("suite", ["erp_customers.yaml", "erp-customers.v2.yml", "customer_revenue.json"])
def test_plain_suite_file_names_are_accepted(data, suite):
    data["quality"]["suite"] = suite
    assert parse_spec(data, "syncs/x.yaml").quality.suite == suite


def test_a_traversing_spec_file_fails_loading_naming_file_and_field(data, tmp_path):
    data["quality"]["suite"] = "../../../../etc/passwd"
    path = tmp_path / "evil.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError) as info:
        load_specs(tmp_path)  # what the DAG file does: the sync gets no DAG, nothing runs
    assert f"{path}: quality.suite: '../../../../etc/passwd' must be a plain file name" in str(info.value)


# --- YAML bombs, huge and unreadable files: specs, rules files and suites alike --------------------

BILLION_LAUGHS = 'a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10))
ALIAS_CHAIN = "a0: &a0 [1]\n" + "".join(f"a{i}: &a{i} [*a{i - 1}]\n" for i in range(1, 100))
HOSTILE_YAML = {  # case: (text, where, words)
    "billion_laughs": (BILLION_LAUGHS, "(file)", f"more than {MAX_YAML_VALUES} values once its aliases"),
    "recursive_alias": ("name: x\nrules: &r [*r]\n", "line 2, column 8", "refers to a node that contains it"),
    "deep_nesting": ("[" * 100_000 + "]" * 100_000, "line 1, column 51", f"deeper than {MAX_YAML_DEPTH} levels"),
    "alias_chain": (ALIAS_CHAIN, "line 48, column 6", f"deeper than {MAX_YAML_DEPTH} levels once its aliases"),
    "many_values": ("[" + ",".join(["1"] * (MAX_YAML_VALUES + 10)) + "]", f"line 1, column {2 * MAX_YAML_VALUES}",
                    f"more than {MAX_YAML_VALUES} values"),
    "month_13": ("name: x\ncreated: 2026-13-45\n", "line 2, column 10", "cannot read the value: month"),
    "huge_integer": ("name: x\nn: " + "9" * 5000 + "\n", "line 2, column 4", "cannot read the value"),
}
LOADERS = {
    "spec": (load_spec, SpecError, ".yaml"),
    "rules": (load_rules, RulesFileError, ".yaml"),
    "suite": (load_suite, SpecError, ".yml"),
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", sorted(LOADERS))
@pytest.mark.parametrize("case", sorted(HOSTILE_YAML))
def test_hostile_yaml_is_refused_quickly_naming_the_file(tmp_path, kind, case):
    """The three loaders share one reader (:func:`conduit.specs.model.read_yaml`)."""
    loader, error, suffix = LOADERS[kind]
    text, where, words = HOSTILE_YAML[case]
    path = tmp_path / f"{case}{suffix}"
    path.write_text(text)

    found = file_problems(loader, path, error)

    [(field, message)] = found
    if kind == "suite":  # a suite names any problem of its text as the file's, the line first in the message
        assert field == "(file)" and (where == "(file)" or message.startswith(f"{where}: ")), found
    else:
        assert field == where, found
    assert words in message, found


@pytest.mark.parametrize("kind", sorted(LOADERS))
def test_python_tags_are_not_constructed(tmp_path, kind):
    loader, error, suffix = LOADERS[kind]
    marker = tmp_path / "pwned"
    path = tmp_path / f"tag{suffix}"
    path.write_text(f'name: !!python/object/apply:os.system ["touch {marker}"]\n')
    [(field, message)] = file_problems(loader, path, error)
    assert "line 1, column 7" in f"{field}: {message}" and "could not determine a constructor" in message
    assert not marker.exists()


@pytest.mark.parametrize("kind", sorted(LOADERS))
def test_files_over_one_mib_are_not_read(tmp_path, kind):
    loader, error, suffix = LOADERS[kind]
    path = tmp_path / f"huge{suffix}"
    path.write_bytes(b"# padding\n" * (MAX_FILE_BYTES // 10 + 1))
    assert file_problems(loader, path, error) == [
        ("(file)", f"larger than {MAX_FILE_BYTES} bytes (1 MiB); a spec, suite or rules file is a few KiB, "
                   "this one is not read")]


def test_a_huge_json_suite_is_not_read_either(tmp_path):
    path = tmp_path / "huge.json"
    path.write_text(json.dumps({"name": "s", "expectations": [], "pad": "x" * MAX_FILE_BYTES}))
    assert "larger than" in file_problems(load_suite, path)[0][1]


def test_exactly_one_mib_is_still_read(tmp_path):
    text = FLAGSHIP.read_bytes()
    path = tmp_path / "padded.yaml"
    path.write_bytes(text + b"#" * (MAX_FILE_BYTES - len(text) - 1) + b"\n")
    assert path.stat().st_size == MAX_FILE_BYTES
    assert load_spec(path).name == "crm_to_erp_customer_sync"


@pytest.mark.parametrize("kind", sorted(LOADERS))
def test_non_utf8_files_and_non_files_name_the_file(tmp_path, kind):
    loader, error, suffix = LOADERS[kind]
    latin1 = tmp_path / f"latin1{suffix}"
    latin1.write_bytes("name: Müller\n".encode("latin-1"))
    assert file_problems(loader, latin1, error) == [("(file)", "not UTF-8 text (byte 7: invalid start byte)")]
    folder = tmp_path / f"folder{suffix}"
    folder.mkdir()
    assert file_problems(loader, folder, error) == [("(file)", "not a regular file")]


def test_a_few_anchors_and_aliases_are_still_fine(tmp_path):
    path = tmp_path / "anchors.yaml"
    text = FLAGSHIP.read_text().replace("  email:\n    source: email\n", "  email: &email\n    source: email\n")
    assert "&email" in text
    path.write_text(text.replace("\nquality:\n", "  contact_email: *email\n\nquality:\n"))
    spec = load_spec(path)
    assert spec.mapping["contact_email"] == spec.mapping["email"]


def test_the_shipped_specs_suites_and_rules_are_well_within_the_bounds():
    include = REPO / "include"
    assert load_specs(include / "syncs")
    for path in sorted((include / "expectations").glob("*.y*ml")):
        assert load_suite(path).expectations, path
    for path in sorted((include / "rules").glob("*.y*ml")):
        assert load_rules(path).rules, path
    for path in sorted(include.rglob("*.y*ml")):
        assert path.stat().st_size < MAX_FILE_BYTES // 50, path


# --- unknown fields are refused at every level ---------------------------------------------------


@pytest.mark.parametrize("place", [
    (), ("source",), ("source", "cursor"), ("schedule",), ("target",), ("target", "checks"),
    ("target", "checks", "table", "crm_ids_are_positive"), ("target", "checks", "columns", "crm_id", "unique_check"),
    ("mapping", "email"), ("mapping", "email", "transforms", 0), ("quality",),
])
def test_unknown_fields_are_refused_where_they_are(data, place):
    node = data
    for key in place:
        node = node[key]
    node["run_this"] = "rm -rf /"
    field = ".".join(str(k) for k in place).replace(".0", "[0]")
    assert problems(data) == {(f"{field}.run_this" if field else "run_this"): "Extra inputs are not permitted"}


# --- SQL in identifiers --------------------------------------------------------------------------


@pytest.mark.parametrize(("mutate", "field", "words"), [
    (lambda d: d["target"].update(table="erp_customers; DROP TABLE erp_customers"), "target.table", "pattern"),
    (lambda d: d["target"].update(schema='public"; DROP SCHEMA public CASCADE; --'), "target.schema", "pattern"),
    (lambda d: d["target"].update(key="customer_number) --"), "target.key", "pattern"),
    (lambda d: d["mapping"].update({"email; DROP TABLE x": {"source": "email"}}), "mapping",
     "'email; DROP TABLE x' is not a plain SQL identifier"),
    (lambda d: d["target"]["checks"]["table"].update({"x; DROP TABLE y": {"check_statement": "true"}}),
     "target.checks.table.x; DROP TABLE y", "pattern"),
    (lambda d: d["target"]["checks"]["columns"].update({"crm_id; DROP TABLE y": {"null_check": {"equal_to": 0}}}),
     "(top level)", "target.checks.columns.crm_id; DROP TABLE y: the ERP table has no such column"),
])
def test_sql_in_identifiers_is_refused(data, mutate, field, words):
    mutate(data)
    found = problems(data)
    assert words in found.get(field, ""), found


# --- target checks: one boolean SQL expression each ------------------------------------------------

HOSTILE_CHECKS = [
    ("COUNT(*) = 0; DROP TABLE erp_customers", "`;` at character 13 would end the check's statement"),
    ("true; DELETE FROM erp_customers", "`;` at character 5"),
    ("true -- the rest is gone", "`--` at character 6 starts or ends a SQL comment"),
    ("true /* hidden */", "`/*` at character 6"),
    ("(SELECT COUNT(*) FROM pg_authid) > 0", "SELECT (at character 2) is not allowed"),
    ("crm_id IN (TABLE pg_shadow)", "TABLE (at character 12) is not allowed"),
    ("EXISTS (SELECT 1)", "the function EXISTS() (at character 1) is not allowed"),
    ("COUNT(*) = 0 UNION ALL VALUES (1)", "UNION (at character 14) is not allowed"),
    ("crm_id IN (VALUES (1))", "VALUES (at character 12) is not allowed"),
    ("DROP TABLE erp_customers", "DROP (at character 1) is not allowed"),
    ("pg_sleep(3600) IS NULL", "the function pg_sleep() (at character 1) is not allowed"),
    ("query_to_xml('DROP TABLE erp_customers', true, true, '') IS NULL", "the function query_to_xml()"),
    ("set_config('role', 'postgres', false) = ''", "the function set_config()"),
    ('"pg_sleep"(10) IS NULL', 'the quoted name "pg_sleep" (at character 1) cannot be called'),
    ("pg_catalog.count(*) = 0", "the schema-qualified function call pg_catalog.count()"),
    ("E'\\'' = 'x'; DROP TABLE erp_customers; --'", "the string at character 2 is not closed, or holds a backslash"),
    ("x = E'a'", "a prefixed string (E'...') at character 5"),
    ("true) AS c FROM pg_shadow WHERE (true", "the `)` at character 5 closes no `(`"),
    ("COUNT((*) = 0", "1 `(` not closed"),
    ("$$ x $$ = ''", "'$' at character 1 is not allowed"),
    ("email ~ 'x'", "'~' at character 7 is not allowed"),
    ("{{ dag_run.conf }} = 1", "'{' at character 1 is not allowed"),
    ("x" * (CHECK_SQL_MAX_CHARS + 1), f"is {CHECK_SQL_MAX_CHARS + 1} characters long"),
]


@pytest.mark.parametrize(("sql", "words"), HOSTILE_CHECKS)
@pytest.mark.parametrize("part", ["check_statement", "partition_clause"])
def test_a_hostile_table_check_is_refused(data, sql, words, part):
    data["target"]["checks"]["table"]["crm_ids_are_positive"][part] = sql
    found = problems(data)
    assert list(found) == [f"{TABLE_CHECK}.{part}"] and words in found[f"{TABLE_CHECK}.{part}"], found


@pytest.mark.parametrize(("sql", "words"), HOSTILE_CHECKS[:6])
def test_a_hostile_column_check_partition_is_refused(data, sql, words):
    data["target"]["checks"]["columns"]["lifecycle_stage"]["null_check"]["partition_clause"] = sql
    found = problems(data)
    assert list(found) == [f"{COLUMN_CHECK}.partition_clause"] and words in found[f"{COLUMN_CHECK}.partition_clause"]


def test_a_drop_table_check_in_a_file_names_file_and_field(data, tmp_path):
    data["target"]["checks"]["table"]["crm_ids_are_positive"]["check_statement"] = "true; DROP TABLE erp_customers"
    path = tmp_path / "evil.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert f"{path}: {TABLE_CHECK}.check_statement: `;` at character 5" in str(info.value)


@pytest.mark.parametrize("sql", [
    *BUILTIN_TABLE_CHECKS.values(),
    "COUNT(*) FILTER (WHERE customer_number <> 'HS-C-' || crm_id) = 0",
    "COUNT(*) FILTER (WHERE crm_id <= 0) = 0",
    "active",
    "NOT active AND deleted_at IS NOT NULL",
    "COUNT(DISTINCT crm_id) = COUNT(*)",
    "MIN(LENGTH(TRIM(email))) > 3",
    "COUNT(*) FILTER (WHERE email LIKE '%;--%' OR first_name = 'O''Brien') >= 0",  # inside strings: data
    "EXTRACT(YEAR FROM crm_created_at) >= 2000",
    "CAST(crm_id AS text) <> '' AND crm_id::text <> ''",
    "COALESCE(SUM(CASE WHEN country_code IS NULL THEN 1 ELSE 0 END), 0) < 10",
    'COUNT(*) FILTER (WHERE "comment" IS NULL) = 0',
    "AVG(crm_id) BETWEEN 0.5 AND 1e12 AND crm_id - -1 > 0",
])
def test_single_boolean_expressions_are_accepted(sql):
    assert check_sql(sql) == sql


def test_the_flagship_checks_pass_unchanged(data):
    spec = parse_spec(data, "syncs/x.yaml")
    assert {name: c["check_statement"] for name, c in table_checks(spec).items()} == {
        **BUILTIN_TABLE_CHECKS,
        "customer_number_matches_crm_id": "COUNT(*) FILTER (WHERE customer_number <> 'HS-C-' || crm_id) = 0",
        "crm_ids_are_positive": "COUNT(*) FILTER (WHERE crm_id <= 0) = 0",
    }
