"""CRM sources: the systems a sync reads, behind one small interface (:class:`~.base.CrmSource`).

:data:`SOURCES` maps a spec's ``source.type`` to the class that reads it (``"module:Class"``,
imported on first use: DAG files import this at parse time). A new system is a new module under
``conduit.sources`` plus one line here (and its ``source`` variant in ``conduit.specs.model``);
:func:`register_source` adds one from outside the package.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conduit.sources.base import CrmSource
    from conduit.specs.model import SyncSpec

SourceFactory = Callable[[Any], "CrmSource"]
"""Builds a source from a spec's ``source`` section (without I/O)."""

SOURCES: dict[str, str | SourceFactory] = {
    "hubspot": "conduit.sources.hubspot.source:HubSpotSource",
}


def register_source(source_type: str, factory: str | SourceFactory) -> None:
    """Make ``source.type: <source_type>`` read with ``factory`` (a callable or ``"module:Class"``)."""
    SOURCES[source_type] = factory


def source_for(spec: SyncSpec) -> CrmSource:
    """The source that reads ``spec.source``, chosen by its ``type``. No I/O."""
    from conduit.exceptions import SpecError

    factory = SOURCES.get(spec.source.type)
    if factory is None:
        raise SpecError(f"sync {spec.name}", [("source.type", f"no source reads {spec.source.type!r}; "
                                                             f"known: {', '.join(sorted(SOURCES))}")])
    if isinstance(factory, str):
        module, _, name = factory.partition(":")
        factory = getattr(import_module(module), name)
    return factory(spec.source)
