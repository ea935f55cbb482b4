"""What the health view tells a browser about specs that do not load: the spec's file relative
to the specs folder, the field and the problem; never a path of the server."""

from __future__ import annotations

from pathlib import Path

import pytest

from conduit.exceptions import SpecError
from conduit.specs.model import load_specs
from conduit.ui.app import public_problem_lines, public_spec_problem, without_server_paths

REPO = Path(__file__).resolve().parents[3]
FLAGSHIP = REPO / "include" / "syncs" / "crm_to_erp_customer_sync.yaml"


def broken_spec(folder: Path, name: str) -> Path:
    text = FLAGSHIP.read_text().replace("name: crm_to_erp_customer_sync", f"name: {name}")
    path = folder / f"{name}.yaml"
    path.write_text(text.replace("lag_seconds: 60", "lag_seconds: soon"))
    return path


def problem_of(folder: Path) -> str:
    with pytest.raises(SpecError) as exc:
        load_specs(folder)
    assert str(folder) in str(exc.value)  # what the log gets
    return public_spec_problem(exc.value, folder)


def test_one_broken_spec_is_named_by_its_file_and_field(tmp_path):
    broken_spec(tmp_path, "broken_sync")
    assert problem_of(tmp_path) == ("invalid sync spec\nbroken_sync.yaml: source.cursor.lag_seconds: Input should "
                                    "be a valid integer, unable to parse string as an integer")


def test_several_broken_specs_are_each_named_by_their_file(tmp_path):
    broken_spec(tmp_path, "broken_a")
    broken_spec(tmp_path, "broken_b")
    shown = problem_of(tmp_path)
    assert str(tmp_path) not in shown
    assert shown.splitlines()[1:] == [f"{name}.yaml: source.cursor.lag_seconds: Input should be a valid integer, "
                                      "unable to parse string as an integer" for name in ("broken_a", "broken_b")]


def test_a_name_used_twice_names_the_specs_folder(tmp_path):
    (tmp_path / "a.yaml").write_text(FLAGSHIP.read_text())
    (tmp_path / "b.yaml").write_text(FLAGSHIP.read_text())
    assert problem_of(tmp_path) == ("invalid sync spec\n(the specs folder): name: used by more than one spec: "
                                    "['crm_to_erp_customer_sync']")


def test_a_file_outside_the_specs_folder_is_named_by_its_file_name(tmp_path):
    error = SpecError(str(tmp_path / "expectations" / "suite.json"), [("(file)", "not valid JSON")])
    assert public_spec_problem(error, tmp_path / "syncs") == "invalid sync spec\nsuite.json: (file): not valid JSON"


@pytest.mark.parametrize(("text", "shown"), [
    ("[Errno 13] Permission denied: '{tmp}/syncs/a.yaml'", "[Errno 13] Permission denied: 'a.yaml'"),
    ("see {tmp}/rules/x.yaml, line 3", "see x.yaml, line 3"),
    ("the path /v3/objects/contacts is the CRM's", "the path /v3/objects/contacts is the CRM's"),  # no such folder
    ("https://api.example.com/crm/v3 answered", "https://api.example.com/crm/v3 answered"),
    ("a/b and c.d: relative", "a/b and c.d: relative"),
])
def test_absolute_paths_of_the_server_are_cut_to_their_file_name(tmp_path, text, shown):
    assert without_server_paths(text.format(tmp=tmp_path)) == shown


# --- each spec on its own (the health view's loading: conduit.ui.data) ------------------------------


def test_a_broken_spec_leaves_the_others_loaded(tmp_path):
    from conduit.ui import data

    (tmp_path / "crm_to_erp_customer_sync.yaml").write_text(FLAGSHIP.read_text())
    broken_spec(tmp_path, "broken_sync")
    (tmp_path / "not_yaml.yaml").write_text("name: [unclosed\n")
    assert list(data.load_sync_specs(tmp_path)) == ["crm_to_erp_customer_sync"]
    problems = data.spec_problems(tmp_path)
    assert [p.name for p in problems] == ["broken_sync", "not_yaml"]  # its name, else its file's stem
    assert [line.split(": ")[0] for p in problems for line in public_problem_lines(p.error, tmp_path)] == [
        "broken_sync.yaml", "not_yaml.yaml"]


def test_a_name_used_twice_is_a_problem_of_that_sync_naming_both_files(tmp_path):
    from conduit.ui import data

    (tmp_path / "a.yaml").write_text(FLAGSHIP.read_text())
    (tmp_path / "b.yaml").write_text(FLAGSHIP.read_text())
    broken_spec(tmp_path, "c_sync")
    ok = FLAGSHIP.read_text().replace("name: crm_to_erp_customer_sync", "name: d_sync")
    (tmp_path / "d.yaml").write_text(ok)
    assert list(data.load_sync_specs(tmp_path)) == ["d_sync"]
    twice = [p for p in data.spec_problems(tmp_path) if p.name == "crm_to_erp_customer_sync"]
    assert [line for p in twice for line in public_problem_lines(p.error, tmp_path)] == [
        "(the specs folder): name: 'crm_to_erp_customer_sync' is used by more than one spec: a.yaml, b.yaml"]
