"""The incremental window, the periodic full read day and id ranges, as pure functions.

An incremental run reads the records modified in ``[watermark - overlap, run start - lag)``: the
upper bound is fixed for the whole run, so records modified while paging are picked up by the
next run instead of chasing a moving target, and the next run starts ``overlap`` before this run's
upper bound to catch records the source's index showed late. Without a watermark the run reads
everything, split into id ranges read in parallel. :func:`conduit.pipeline.run_plan.plan_run`
decides which; how a source pages through a window is the source's business (``conduit.sources``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Window:
    lower_ms: int  # inclusive
    upper_ms: int  # exclusive


def incremental_window(
    watermark_ms: int | None, run_start_ms: int, *, lag_seconds: int, overlap_seconds: int
) -> Window | None:
    """The window to read, or None when there is no watermark yet (a full extract is needed)."""
    if watermark_ms is None:
        return None
    upper = run_start_ms - lag_seconds * 1000
    lower = watermark_ms - overlap_seconds * 1000
    return Window(lower_ms=min(lower, upper), upper_ms=upper)


def is_full_read_day(run_after: datetime, timezone: str, weekday: str | None) -> bool:
    """Whether a scheduled run is the periodic full read (weekday in the schedule's time zone)."""
    from zoneinfo import ZoneInfo

    return weekday is not None and run_after.astimezone(ZoneInfo(timezone)).strftime("%A").lower() == weekday


def parse_ts_ms(value: str | None) -> int:
    """A timestamp string as epoch ms: ISO-8601 (``2024-01-02T03:04:05.678Z``) or epoch-ms digits."""
    if not value:
        raise ValueError("record has no timestamp")
    if value.isdigit():
        return int(value)
    return int(datetime.fromisoformat(value).timestamp() * 1000)


def id_ranges(min_id: int, max_id: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` half-open ranges [lo, hi) of about equal width covering min_id..max_id."""
    parts = max(1, min(parts, max_id - min_id + 1))
    width = (max_id - min_id + 1) / parts
    bounds = [min_id + round(i * width) for i in range(parts)] + [max_id + 1]
    return list(zip(bounds[:-1], bounds[1:], strict=True))
