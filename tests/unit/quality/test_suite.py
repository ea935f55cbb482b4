from __future__ import annotations

import json

import pycountry
import pytest

from conduit.exceptions import SpecError
from conduit.quality import load_suite
from conduit.quality.suite import InSet, Suite


def write(tmp_path, text, name="suite.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def problems(path) -> list[tuple[str, str]]:
    with pytest.raises(SpecError) as exc:
        load_suite(path)
    assert str(path) in str(exc.value)
    return exc.value.problems


def test_customer_suite_loads_with_resolved_country_codes(customer_suite):
    assert customer_suite.name == "erp_customers"
    country = next(
        e for e in customer_suite.expectations if isinstance(e, InSet) and e.column == "country_code"
    )
    assert set(country.kwargs.value_set) == {c.alpha_2 for c in pycountry.countries}
    assert "value_set_ref" not in country.gx_kwargs()


def test_unknown_expectation_type_names_the_entry(tmp_path):
    path = write(
        tmp_path,
        "name: s\nexpectations:\n  - type: expect_column_values_to_not_be_null\n"
        "    kwargs: {column: a}\n  - type: expect_magic\n    kwargs: {}\n",
    )
    [(field, message)] = problems(path)
    assert field.startswith("expectations[1]") and "expect_magic" in message


def test_missing_and_unknown_kwargs_name_the_field(tmp_path):
    path = write(
        tmp_path,
        "name: s\nexpectations:\n  - type: expect_column_values_to_match_regex\n"
        "    kwargs: {column: email, colour: red}\n",
    )
    fields = dict(problems(path))
    assert set(fields) == {"expectations[0].kwargs.regex", "expectations[0].kwargs.colour"}


def test_bad_regex_mostly_and_bounds_are_reported(tmp_path):
    path = write(
        tmp_path,
        """
name: s
expectations:
  - {type: expect_column_values_to_match_regex, kwargs: {column: a, regex: "(unclosed"}}
  - {type: expect_column_values_to_not_be_null, kwargs: {column: a, mostly: 1.5}}
  - {type: expect_column_values_to_be_between, kwargs: {column: a}}
  - {type: expect_column_values_to_be_between, kwargs: {column: a, min_value: 1, max_value: now}}
  - {type: expect_column_values_to_be_in_set, kwargs: {column: a, value_set_ref: planets}}
  - {type: expect_column_values_to_be_in_set, kwargs: {column: a, value_set: [DE, NO]}}
""",
    )
    fields = dict(problems(path))
    assert "does not compile" in fields["expectations[0].kwargs.regex"]
    assert "expectations[1].kwargs.mostly" in fields
    assert "expectations[2].kwargs.min_value" in fields
    assert "both be numbers or both timestamps" in fields["expectations[3].kwargs.max_value"]
    assert "planets" in fields["expectations[4].kwargs.value_set_ref"]
    assert "quote" in fields["expectations[5].kwargs.value_set"]


def test_python_only_regex_is_rejected_because_pandas_may_use_re2(tmp_path):
    path = write(
        tmp_path,
        "name: s\nexpectations:\n  - type: expect_column_values_to_match_regex\n"
        "    kwargs: {column: a, regex: '^(?=x)x$'}\n",
    )
    assert "RE2" in dict(problems(path))["expectations[0].kwargs.regex"]


def test_not_yaml_and_missing_file(tmp_path):
    assert problems(write(tmp_path, "name: [unclosed"))[0][0] == "(file)"
    assert problems(tmp_path / "nope.yaml")[0][0] == "(file)"
    assert problems(write(tmp_path, "- a list"))[0][0] == "(top level)"


def test_json_suites_are_accepted(tmp_path):
    path = write(
        tmp_path,
        json.dumps(
            {
                "name": "j",
                "expectations": [
                    {
                        "type": "conduit_row_count_change",
                        "kwargs": {"max_drop_ratio": 0.5},
                        "severity": "warning",
                    }
                ],
            }
        ),
        "s.json",
    )
    suite = load_suite(path)
    assert suite.expectations[0].severity == "warning" and not suite.expectations[0].blocking


def test_now_is_fixed_per_evaluation(customer_suite):
    from datetime import UTC, datetime

    fixed = customer_suite.at(datetime(2026, 1, 2, tzinfo=UTC))
    between = fixed.expectations[-1]
    assert between.kwargs.max_value == "2026-01-02T00:00:00+00:00"
    assert customer_suite.expectations[-1].kwargs.max_value == "now"
    assert isinstance(fixed, Suite)
