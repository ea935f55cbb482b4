"""A column's ``default`` is checked against its ``dtype`` while the spec loads, i.e. while a DAG file
is parsed: for whole numbers and true/false without pandas or pyarrow, and deciding exactly as the
mapping engine reads them (proved here against the engine on the texts that matter)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from conduit.specs.model import _fits
from conduit.transforms.mapping import typed_default

TEXTS = ["0", "7", "-7", "+7", " 42 ", "007", "1" * 18, "1" * 19, "1.0", "1e3", "", " ", "abc", "0x10",
         "١٢", "true", "True", " YES ", "y", "t", "1", "f", "No", "n", "off", "on", "truth", "yes!", True, False, 5,
         -3, "\t12\n"]


@pytest.mark.parametrize("dtype", ["integer", "boolean"])
def test_the_light_check_decides_as_the_engine_reads(dtype):
    assert [_fits(t, dtype) for t in TEXTS] == [typed_default(t, dtype).is_valid for t in TEXTS]


def test_a_spec_with_integer_and_boolean_defaults_loads_without_pandas_or_pyarrow(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(textwrap.dedent("""
        name: light_defaults
        source: {type: hubspot, object: contacts, properties: [email, score, vip, lastmodifieddate]}
        target: {type: sql, table: erp_customers, key: customer_number}
        mapping:
          customer_number: {source: email}
          score: {source: score, dtype: integer, default: 0}
          vip: {source: vip, dtype: boolean, default: "no"}
    """))
    code = ("import json, sys\nfrom conduit.specs.model import load_spec\nload_spec(sys.argv[1])\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('pandas', 'pyarrow'))))")
    out = subprocess.run([sys.executable, "-c", code, str(spec)], capture_output=True, text=True, timeout=120,
                         env={**os.environ})
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
