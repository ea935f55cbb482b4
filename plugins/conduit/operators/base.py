"""What every Conduit operator shares: OpenLineage reporting from its own summary, and how params
arrive."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conduit.hooks.erp import ErpHook
    from conduit.sources.base import CrmSource


def as_bool(value: Any) -> bool:
    """Params arrive as booleans with native rendering, or as text from older run confs."""
    return value if isinstance(value, bool) else str(value).strip().lower() in ("true", "1", "yes", "on")


class LineageReporting:
    """Mixed into operators: ``execute`` stores its summary in ``self.summary`` and ``lineage(summary)``
    builds the OperatorLineage from it. The OpenLineage provider calls these only when a transport is
    configured, and logs (never raises) what they raise, so lineage can never fail a task."""

    summary: dict[str, Any] | None = None

    def lineage(self, summary: dict[str, Any]):
        return None

    def get_openlineage_facets_on_start(self):
        return self.lineage({})

    def get_openlineage_facets_on_complete(self, task_instance):
        return self.lineage(self.summary or {})

    def get_openlineage_facets_on_failure(self, task_instance):
        return self.lineage(self.summary or {})


class SyncHooks:
    """What a sync's operators talk to, built lazily from ``self.spec``: its CRM source (chosen by
    ``source.type``) and the ERP hook. Nothing connects before a task uses it."""

    @cached_property
    def erp_hook(self) -> ErpHook:
        from conduit.hooks.erp import ErpHook

        target = self.spec.target
        return ErpHook(erp_conn_id=target.conn_id, state_conn_id=target.state_conn_id)

    @cached_property
    def source(self) -> CrmSource:
        from conduit.sources import source_for

        return source_for(self.spec)
