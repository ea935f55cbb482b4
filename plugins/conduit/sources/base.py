"""What the sync's pipeline asks of a CRM source, and nothing more.

A source reads one object type (contacts, companies, ...) of one CRM system. The pipeline
(:mod:`conduit.pipeline.steps`) plans a run's work items with it, reads each item as pages into
staged Parquet parts, re-reads records by id (webhooks, quarantine replay), asks which of the
ids webhooks named are gone for good (:meth:`CrmSource.gone_records`) and asks it two questions
when it reconciles. Everything system-specific (endpoints, request bodies, the names
of its id, creation and modification properties, how a response is decoded, lineage naming)
stays behind this interface, in ``conduit.sources.<system>``.

The contract of the data a source returns:

* a record is ``{"id": str, "properties": {name: str | None}}``; ids are strings;
* a page is a :class:`~conduit.pipeline.pages.RecordPage` (or a list of such records) holding
  ``id`` plus :meth:`CrmSource.raw_properties`, every value a string or null (what
  :func:`~conduit.pipeline.steps.write_pages` stages);
* timestamps are milliseconds since the epoch (UTC); a window is ``[lower_ms, upper_ms)``.

Sources are built by :func:`conduit.sources.source_for` from a spec's ``source`` section. Building
one does no I/O (DAG files build operators that build sources lazily); connections are looked up
on first use.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conduit.lineage.openlineage import DatasetRef
    from conduit.pipeline.cursor import Window
    from conduit.pipeline.pages import RecordPage

WorkItem = dict[str, Any]
"""One unit of extract work, JSON-able (it travels by XCom to a mapped task). ``kind`` is one of
``changed`` (the records modified in the run's window), ``all`` (every live record), ``range``
(one slice of every live record; carries ``lo``, unique among a run's ranges), ``ids`` (records
read by id; carries ``ids``) or ``archived`` (the archived listing): the pipeline stages each
kind in its own folder and ranks them when one record was read twice
(:data:`conduit.pipeline.dedup.ITEM_PRECEDENCE`). Other keys are the source's own."""


class CrmSource(ABC):
    """A CRM object collection as the sync's pipeline reads it (see the module's contract)."""

    object_type: str
    """The object type read (``contacts``): for logs and messages."""

    id_column: str
    """The property holding the record's id (staged as a property too, so mappings can read it)."""

    @abstractmethod
    def raw_properties(self) -> list[str]:
        """The properties staged for every record: the spec's properties plus :attr:`id_column`,
        each once, in that order."""

    @abstractmethod
    def plan(self, window: Window | None, *, parallelism: int = 1,
             object_ids: Sequence[str] = ()) -> list[WorkItem]:
        """The work items of a run, in precedence order: the records modified in ``window`` (one
        ``changed`` item) or, without a window, every live record (``all``, or up to
        ``parallelism`` ``range`` items read in parallel); then the records ``object_ids`` names
        (``ids``), then the archived listing (``archived``). May ask the CRM (range bounds)."""

    @abstractmethod
    def read(self, item: WorkItem) -> Iterable[RecordPage]:
        """The records of one work item of :meth:`plan`, page by page (each record once)."""

    @abstractmethod
    def read_records(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        """The live records of ``ids`` (any number), each with :meth:`raw_properties`; ids the CRM
        does not have live (archived, deleted, never there) are left out."""

    def gone_records(self, ids: Sequence[str]) -> list[str]:
        """Of ``ids`` (records a read by id did not return), those the CRM confirms it no longer
        has at all: neither live nor archived (erased for privacy, merged into another record, or
        never there). The sync removes their ERP rows, as a full read would. An id the CRM still
        has, live or archived, or whose state the CRM did not say, is never in the answer; a
        source that cannot tell answers none (this default), and its removals wait for a full read."""
        return []

    @abstractmethod
    def count_created_before(self, upper_ms: int) -> int:
        """How many live records were created before ``upper_ms`` (what a run with that upper
        bound could have read, modified since or not)."""

    @abstractmethod
    def modified_since_created_before(self, upper_ms: int) -> list[dict[str, Any]]:
        """The live records created before ``upper_ms`` but modified at or after it, with
        :meth:`raw_properties`: a run with that upper bound could not read them."""

    @abstractmethod
    def dataset(self) -> DatasetRef:
        """The OpenLineage dataset of the object collection (namespace = the system's API root).
        May look up the connection."""

    @property
    @abstractmethod
    def requests_sent(self) -> int:
        """Requests sent so far by this source (retries included), for summaries."""

    @property
    @abstractmethod
    def retries(self) -> int:
        """Requests retried so far by this source, for summaries."""
