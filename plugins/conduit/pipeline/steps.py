"""The sync's steps over hooks and staged files. Operators call these; so does the benchmark,
so what is measured is exactly what runs in Airflow."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from conduit.pipeline.cursor import ID_PROPERTY, Window, iter_changed
from conduit.pipeline.staging import PartWriter, RunStaging

if TYPE_CHECKING:
    import pyarrow as pa

    from conduit.hooks.hubspot import HubSpotHook
    from conduit.specs.model import SyncSpec
    from conduit.targets.base import ErpTarget

log = logging.getLogger(__name__)
BATCH_ROWS = 10_000


def raw_properties(spec: SyncSpec) -> list[str]:
    return list(dict.fromkeys([*spec.source.properties, ID_PROPERTY]))


def records_to_table(records: list[dict], properties: list[str]) -> pa.Table:
    import pyarrow as pa

    columns = {"id": pa.array([r["id"] for r in records], pa.string())}
    for prop in properties:
        columns[prop] = pa.array([r["properties"].get(prop) for r in records], pa.string())
    return pa.table(columns)


class Progress:
    """Logs pages, rows, rows/s and (when the total is known) an estimate of what remains."""

    def __init__(self, what: str, logger: logging.Logger, total: int | None = None, every_s: float = 5.0):
        self.what, self.log, self.total, self.every_s = what, logger, total, every_s
        self.started = self.last = time.monotonic()
        self.pages = self.rows = 0

    def update(self, rows: int) -> None:
        self.pages += 1
        self.rows += rows
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            self.log.info("%s", self.line(now))

    def line(self, now: float | None = None) -> str:
        elapsed = max((now or time.monotonic()) - self.started, 1e-9)
        rate = self.rows / elapsed
        text = f"{self.what}: {self.pages} pages, {self.rows} rows, {rate:,.0f} rows/s"
        if self.total and rate:
            remaining = max(self.total - self.rows, 0)
            text += f", ~{remaining} rows / {remaining / rate:.0f}s remaining"
        return text


def write_pages(pages: Iterable[list[dict]], writer: PartWriter, properties: list[str], progress: Progress,
                batch_rows: int = BATCH_ROWS) -> int:
    """Stream API pages into Parquet parts of about ``batch_rows`` rows: memory stays flat."""
    buffer: list[dict] = []
    for page in pages:
        buffer.extend(page)
        progress.update(len(page))
        if len(buffer) >= batch_rows:
            writer.write(records_to_table(buffer, properties))
            buffer = []
    if buffer:
        writer.write(records_to_table(buffer, properties))
    return writer.rows


def extract(hook: HubSpotHook, spec: SyncSpec, staging: RunStaging, *, window: Window | None,
            logger: logging.Logger = log) -> dict[str, Any]:
    """CRM -> raw/ (changed or all live records) and archived/ (every archived record)."""
    source = spec.source
    props = raw_properties(spec)
    if window is None:
        pages: Iterator[list[dict]] = hook.iter_list_pages(source.object, props, limit=source.page_size)
        mode = "full"
    else:
        pages = iter_changed(lambda body: hook.search(source.object, body), window,
                             cursor_property=source.cursor.property, properties=props,
                             limit=source.search_page_size)
        mode = "incremental"
    progress = Progress(f"extract {source.object} ({mode})", logger)
    rows = write_pages(pages, staging.writer("raw"), props, progress)
    logger.info("%s", progress.line())
    # Search never returns archived records, and the archived listing has no date filter.
    archived_progress = Progress(f"extract archived {source.object}", logger)
    archived = write_pages(hook.iter_list_pages(source.object, props, archived=True, limit=source.page_size),
                           staging.writer("archived"), props, archived_progress)
    return {"mode": mode, "rows": rows, "archived": archived, "pages": progress.pages,
            "window": [window.lower_ms, window.upper_ms] if window else None,
            "requests": hook.requests_sent, "retries": hook.retries}


def transform(spec: SyncSpec, staging: RunStaging) -> dict[str, int]:
    """raw/ -> mapped/ and archived/ -> mapped_archived/, part by part."""
    import pyarrow as pa

    from conduit.transforms.mapping import map_frame, mapped_schema

    schema = mapped_schema(spec)
    counts = {}
    for source_kind, mapped_kind in (("raw", "mapped"), ("archived", "mapped_archived")):
        writer = staging.writer(mapped_kind)
        for frame in staging.read_frames(source_kind):
            writer.write(pa.Table.from_pandas(map_frame(frame, spec), schema=schema, preserve_index=False))
        counts[mapped_kind] = writer.rows
    return counts


def load(target: ErpTarget, spec: SyncSpec, staging: RunStaging, *, run_id: str, watermark_ms: int | None,
         full_refresh: bool = False, dry_run: bool = False, rejected_keys: frozenset[str] = frozenset()):
    """mapped/ -> the ERP, in one transaction together with deletes and the new watermark."""
    from conduit.targets.base import Watermark

    key = spec.target.key

    def batches():
        for frame in staging.read_frames("mapped"):
            yield frame[~frame[key].isin(rejected_keys)] if rejected_keys else frame

    deleted = [k for frame in staging.read_frames("mapped_archived", [key]) for k in frame[key].tolist()]
    return target.load(
        spec, batches(), run_id=run_id, deleted_keys=deleted,
        watermark=Watermark(watermark_ms, 0) if watermark_ms is not None else None,
        full_refresh=full_refresh, dry_run=dry_run,
    )
