"""OpenLineage datasets and facets built from the flagship spec, validated against the spec's
JSON schemas with the offline validator."""

from __future__ import annotations

import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from conduit.lineage import openlineage as ol
from conduit.specs.model import load_spec, parse_spec

REPO = Path(__file__).resolve().parents[3]
FLAGSHIP = REPO / "include" / "syncs" / "crm_to_erp_customer_sync.yaml"
# the OpenLineage JSON schemas and an offline validator, vendored: see tests/fixtures/openlineage/README.md
VALIDATOR = REPO / "tests" / "fixtures" / "openlineage" / "validate_events.py"
AUDIT_COLUMNS = {"_conduit_synced_at": "timestamp", "_conduit_deleted": "boolean"}
ASSERTIONS = [
    {"assertion": "not_null", "success": True, "column": "customer_number"},
    {"assertion": "email_syntax", "success": False, "column": "email", "expected": 0, "actual": 2},
    {"assertion": "row_count", "success": True},
]


@pytest.fixture(scope="module")
def spec():
    return load_spec(FLAGSHIP)


@pytest.fixture(scope="module")
def datasets(spec):
    return {
        "crm": ol.hubspot_dataset("https://api.hubapi.com", "contacts", "2026-09"),
        "raw": ol.staged_dataset("worker-1", "/var/conduit/staging", spec, "raw"),
        "mapped": ol.staged_dataset("worker-1", "/var/conduit/staging", spec, "mapped"),
        "erp": ol.postgres_dataset("erp-db", 5432, "erp", spec.target.db_schema, spec.target.table),
    }


# --- naming -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base_url", "version", "expected"),
    [
        ("https://api.hubapi.com", "2026-09", ("https://api.hubapi.com", "crm/objects/2026-09/contacts")),
        ("https://API.hubapi.com/", "v3", ("https://api.hubapi.com", "crm/v3/objects/contacts")),
        ("api.hubapi.com", "2026-03", ("https://api.hubapi.com", "crm/objects/2026-03/contacts")),
        (
            "http://127.0.0.1:8765/hubspot/",
            "v3",
            ("http://127.0.0.1:8765", "hubspot/crm/v3/objects/contacts"),
        ),
        # an IPv6 literal keeps its brackets: "http://::1:8765" names no host and port
        ("http://[::1]:8765/hubspot", "v3", ("http://[::1]:8765", "hubspot/crm/v3/objects/contacts")),
        ("https://user:secret@[FE80::1]", "v3", ("https://[fe80::1]", "crm/v3/objects/contacts")),
    ],
)
def test_hubspot_dataset_names_the_api_root_and_the_objects_path(base_url, version, expected):
    assert ol.hubspot_dataset(base_url, "contacts", version) == ol.DatasetRef(*expected)


def test_a_tryton_dataset_on_an_ipv6_host_keeps_the_brackets():
    facts = {"kind": "tryton", "host": "::1", "port": 8000, "database": "erp"}
    assert ol.erp_dataset(facts, "tryton", "party.party") == ol.DatasetRef("tryton://[::1]:8000", "erp.party.party")


def test_sql_and_file_datasets_follow_the_naming_conventions(spec, tmp_path, monkeypatch):
    assert ol.postgres_dataset("erp-db", None, "erp", "public", "erp_customers") == ol.DatasetRef(
        "postgres://erp-db:5432", "erp.public.erp_customers"
    )
    monkeypatch.chdir(tmp_path)
    assert ol.sqlite_dataset("erp.db", "erp_customers") == ol.DatasetRef(
        f"sqlite://{tmp_path}/erp.db", "erp_customers"
    )
    assert ol.staged_dataset("worker-1", "staging", spec, "raw") == ol.DatasetRef(
        "file://worker-1", f"{tmp_path}/staging/crm_to_erp_customer_sync/raw"
    )


def test_postgres_dataset_refuses_a_missing_host():
    with pytest.raises(ValueError, match="host"):
        ol.postgres_dataset("", 5432, "erp", "public", "erp_customers")


# --- facets -------------------------------------------------------------------------------------


def test_every_erp_column_lineage_names_exactly_the_crm_properties_of_its_mapping(spec, datasets):
    facet = ol.column_lineage_facet(spec, datasets["crm"])

    assert set(facet.fields) == set(spec.mapping)
    for column, field in spec.mapping.items():
        inputs = facet.fields[column].inputFields
        assert [i.field for i in inputs] == field.source_properties(), column
        assert {(i.namespace, i.name) for i in inputs} == {
            ("https://api.hubapi.com", "crm/objects/2026-09/contacts")
        }
    full_name = facet.fields["full_name"].inputFields
    assert [i.field for i in full_name] == ["firstname", "lastname"]
    assert [i.field for i in facet.fields["phone"].inputFields] == ["phone", "country"]
    assert [i.field for i in facet.fields["customer_number"].inputFields] == ["hs_object_id"]


def test_transformations_say_how_each_column_is_made(spec, datasets):
    fields = ol.column_lineage_facet(spec, datasets["crm"]).fields

    (identity,) = fields["crm_id"].inputFields[0].transformations
    assert (identity.type, identity.subtype, identity.masking) == ("DIRECT", "IDENTITY", False)
    (concat,) = fields["full_name"].inputFields[1].transformations
    assert (concat.type, concat.subtype) == ("DIRECT", "TRANSFORMATION")
    assert concat.description == "concat(firstname, lastname; separator ' ') -> trim"
    assert fields["lifecycle_stage"].transformationDescription == "trim -> lower, default 'lead'"
    assert fields["phone"].transformationDescription == "phone_e164(region from country, default region US)"
    assert fields["customer_number"].transformationDescription == "template 'HS-C-{hs_object_id}'"


def test_cursor_is_dataset_level_filter_and_constant_columns_have_no_lineage(spec, datasets):
    data = spec.model_dump(by_alias=True)
    data["mapping"]["source_system"] = {"default": "hubspot"}
    facet = ol.column_lineage_facet(parse_spec(data, "test.yaml"), datasets["crm"])

    assert "source_system" not in facet.fields
    (cursor,) = facet.dataset
    assert cursor.field == "lastmodifieddate"
    assert (cursor.transformations[0].type, cursor.transformations[0].subtype) == ("INDIRECT", "FILTER")


def test_erp_schema_lists_mapped_columns_with_dtypes_then_audit_columns(spec):
    fields = ol.erp_schema_facet(spec, AUDIT_COLUMNS).fields

    assert [f.name for f in fields] == [*spec.mapping, *AUDIT_COLUMNS]
    by_name = {f.name: f for f in fields}
    assert by_name["crm_id"].type == "integer"
    assert by_name["crm_created_at"].type == "timestamp"
    assert by_name["_conduit_deleted"].type == "boolean"
    assert by_name["customer_number"].description == "ERP customer number derived from the HubSpot contact id"
    assert [f.ordinal_position for f in fields] == list(range(1, len(fields) + 1))


def test_assertions_keep_their_results_as_the_spec_wants_them():
    facet = ol.data_quality_assertions_facet([*ASSERTIONS, {"assertion": "unique", "success": 1, "rows": 5}])

    email = facet.assertions[1]
    assert (email.assertion, email.success, email.column, email.expected, email.actual) == (
        "email_syntax",
        False,
        "email",
        "0",
        "2",
    )
    assert facet.assertions[2].column is None
    assert facet.assertions[3].success is True


# --- per-step lineage ---------------------------------------------------------------------------


def test_builders_leave_out_what_is_not_known_yet(spec, datasets):
    load = ol.load_lineage(spec, datasets["crm"], datasets["mapped"], datasets["erp"])
    gate = ol.gate_lineage(datasets["mapped"])

    (table,) = load.outputs
    assert table.outputFacets == {}
    assert set(table.facets) == {"schema", "columnLineage", "documentation"}
    assert gate.inputs[0].inputFacets == {}
    assert gate.outputs == []


def test_load_reports_rows_and_gate_reports_assertions(spec, datasets):
    load = ol.load_lineage(spec, datasets["crm"], datasets["mapped"], datasets["erp"], row_count=42)
    gate = ol.gate_lineage(datasets["mapped"], ASSERTIONS)

    assert (load.inputs[0].namespace, load.inputs[0].name) == (
        datasets["mapped"].namespace,
        datasets["mapped"].name,
    )
    assert (load.outputs[0].namespace, load.outputs[0].name) == (
        "postgres://erp-db:5432",
        "erp.public.erp_customers",
    )
    assert load.outputs[0].outputFacets["outputStatistics"].rowCount == 42
    assert load.outputs[0].facets["documentation"].description.startswith("Nightly incremental sync")
    assert [a.assertion for a in gate.inputs[0].inputFacets["dataQualityAssertions"].assertions] == [
        "not_null",
        "email_syntax",
        "row_count",
    ]


def _events(spec, datasets) -> list:
    """A START (little known) and a COMPLETE (all known) event for each step of a sync run."""
    from openlineage.client.event_v2 import Job, Run, RunEvent, RunState

    crm, raw, mapped, erp = datasets["crm"], datasets["raw"], datasets["mapped"], datasets["erp"]
    steps = {
        "extract": (
            ol.extract_lineage(spec, crm, raw),
            ol.extract_lineage(spec, crm, raw, row_count=120, size=48_213, file_count=2),
        ),
        "transform": (
            ol.transform_lineage(spec, raw, mapped),
            ol.transform_lineage(spec, raw, mapped, row_count=120, size=30_100, file_count=1),
        ),
        "gate": (ol.gate_lineage(mapped), ol.gate_lineage(mapped, ASSERTIONS)),
        "load": (
            ol.load_lineage(spec, crm, mapped, erp),
            ol.load_lineage(spec, crm, mapped, erp, audit_columns=AUDIT_COLUMNS, row_count=118),
        ),
        "reconcile": (
            ol.reconcile_lineage(mapped, erp),
            ol.reconcile_lineage(mapped, erp, [{"assertion": "row_count_matches", "success": True}]),
        ),
    }
    events = []
    for task, lineages in steps.items():
        run = Run(runId=str(uuid.uuid4()))
        for state, lineage in zip((RunState.START, RunState.COMPLETE), lineages, strict=True):
            events.append(
                RunEvent(
                    eventType=state,
                    eventTime=datetime.now(UTC).isoformat(),
                    run=run,
                    job=Job(namespace="conduit", name=f"{spec.name}.{task}"),
                    producer="https://github.com/conduit/conduit",
                    inputs=lineage.inputs,
                    outputs=lineage.outputs,
                )
            )
    return events


def _validate(events_file: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(VALIDATOR), "--strict", str(events_file)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_run_events_of_every_step_validate_against_the_openlineage_schemas(spec, datasets, tmp_path):
    from openlineage.client.serde import Serde

    events_file = tmp_path / "events.jsonl"
    events_file.write_text("".join(Serde.to_json(event) + "\n" for event in _events(spec, datasets)))
    # a facet in the wrong place must be caught, or the check below proves nothing
    misplaced = _events(spec, datasets)[7]
    misplaced.outputs[0].facets["outputStatistics"] = misplaced.outputs[0].outputFacets.pop(
        "outputStatistics"
    )
    misplaced_file = tmp_path / "misplaced.jsonl"
    misplaced_file.write_text(Serde.to_json(misplaced) + "\n")

    result = _validate(events_file)

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1].endswith(" 0 problems")
    assert "10 events" in result.stdout
    assert _validate(misplaced_file).returncode == 1


def test_importing_the_module_does_not_import_the_openlineage_client():
    probe = "import sys, conduit.lineage.openlineage; print('openlineage.client' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "False"


def test_every_worker_names_the_shared_staged_files_alike(monkeypatch, spec):
    """Extract on one worker, transform on another: on the shared staging volume they read and
    write the same files, so lineage must name them alike (it named them after each worker's
    host: one dataset per worker, the graph cut between the tasks)."""
    import socket

    from conduit.operators.sync import MappingTransformOperator

    op = MappingTransformOperator(task_id="transform", spec=spec)
    monkeypatch.setenv("CONDUIT_STAGING_DIR", "/shared/conduit/staging")
    monkeypatch.delenv("CONDUIT_STAGING_HOST", raising=False)
    names = set()
    for worker in ("worker-a", "worker-b"):
        monkeypatch.setattr(socket, "gethostname", lambda worker=worker: worker)
        names.add(op.dataset("mapped"))
    assert names == {ol.staged_dataset("conduit-staging", "/shared/conduit/staging", spec, "mapped")}

    monkeypatch.setenv("CONDUIT_STAGING_HOST", "nfs-1")
    assert op.dataset("raw") == ol.staged_dataset("nfs-1", "/shared/conduit/staging", spec, "raw")
