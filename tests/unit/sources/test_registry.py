"""The source registry: a spec's ``source.type`` picks the reader; unknown types fail when the spec
loads, naming the file and ``source.type``; the old hook path still works."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conduit import sources
from conduit.exceptions import SpecError
from conduit.sources import register_source, source_for
from conduit.sources.base import CrmSource
from conduit.sources.hubspot.source import HubSpotSource
from conduit.specs.model import _UNION_TAGS, SOURCE_TYPES, load_spec

REPO = Path(__file__).resolve().parents[3]
FLAGSHIP = REPO / "include" / "syncs" / "crm_to_erp_customer_sync.yaml"


@pytest.fixture
def spec():
    return load_spec(FLAGSHIP)


def test_the_flagship_reads_hubspot_without_connecting(spec):
    source = source_for(spec)
    assert isinstance(source, HubSpotSource) and isinstance(source, CrmSource)
    assert "hook" not in source.__dict__  # built on first use, never at parse time
    assert source.object_type == "contacts" and source.id_column == "hs_object_id"
    assert source.raw_properties() == [*spec.source.properties, "hs_object_id"]


def test_every_spec_source_type_has_a_reader_and_names_no_noise_in_error_paths():
    assert set(SOURCE_TYPES) == set(sources.SOURCES)
    assert set(SOURCE_TYPES) <= _UNION_TAGS


@pytest.mark.parametrize(("given", "problem"), [("salesforce", "unknown source type 'salesforce'; known: hubspot"),
                                                (None, "missing; known: hubspot")])
def test_an_unknown_source_type_fails_loading_naming_file_and_field(tmp_path, given, problem):
    data = yaml.safe_load(FLAGSHIP.read_text())
    data["source"]["type"] = given
    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert info.value.problems == [("source.type", problem)]
    assert f"{path}: source.type: {problem}" in str(info.value)


def test_a_type_no_reader_is_registered_for_is_a_spec_error(spec, monkeypatch):
    monkeypatch.setattr(sources, "SOURCES", {})
    with pytest.raises(SpecError) as info:
        source_for(spec)
    assert info.value.problems == [("source.type", "no source reads 'hubspot'; known: ")]
    assert info.value.path == "sync crm_to_erp_customer_sync"


def test_register_source_takes_a_factory(spec, monkeypatch):
    monkeypatch.setattr(sources, "SOURCES", dict(sources.SOURCES))
    seen = []
    register_source("hubspot", lambda config: seen.append(config) or "a source")
    assert source_for(spec) == "a source" and seen == [spec.source]


def test_the_providers_hook_path_still_names_the_hook():
    from conduit.hooks.hubspot import HubSpotHook
    from conduit.provider_info import get_provider_info
    from conduit.sources.hubspot.hook import HubSpotHook as moved

    assert HubSpotHook is moved
    (connection,) = [c for c in get_provider_info()["connection-types"] if c["connection-type"] == "hubspot"]
    module, _, name = connection["hook-class-name"].rpartition(".")
    assert getattr(__import__(module, fromlist=[name]), name) is moved
