"""A run's one decision: read everything or only a window, which watermark the load stores, and
whether the load deletes what the run did not read. Made by :func:`plan_run`, and only there: the
``plan_extract`` task, the one-process :func:`conduit.pipeline.steps.extract` (its callers plan
first) and the benchmark all call it, so they cannot disagree.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from conduit.pipeline.cursor import Window, incremental_window, is_full_read_day

if TYPE_CHECKING:
    from conduit.specs.model import SyncSpec
    from conduit.targets.base import ErpTarget


@dataclass(frozen=True)
class RunPlan:
    """What one run reads and what its load does with it.

    :param window: the modification window ``[lower, upper)`` to read; None reads every record
    :param watermark_ms: what the load stores as the new watermark (the window's upper bound; for
        a full read, run start minus the cursor's lag as well: what changed later is read again)
    :param delete_missing: the load deletes target rows whose records the run did not read (a
        full refresh or the periodic full read; a first run without a watermark reads everything
        but deletes nothing)
    :param reason: why, in words, for the log
    """

    window: Window | None
    watermark_ms: int
    delete_missing: bool = False
    reason: str = ""

    @property
    def mode(self) -> Literal["full", "incremental"]:
        return "full" if self.window is None else "incremental"

    def item_fields(self) -> dict[str, Any]:
        """What every extract work item carries of the run (JSON-able, for XCom)."""
        return {"mode": self.mode, "watermark_ms": self.watermark_ms,
                "window": [self.window.lower_ms, self.window.upper_ms] if self.window else None,
                "delete_missing": self.delete_missing}


def plan_run(spec: SyncSpec, *, stored_watermark_ms: int | None, run_start_ms: int, full_refresh: bool = False,
             scheduled_run_after: datetime | None = None) -> RunPlan:
    """Decide a run (see :class:`RunPlan`).

    :param stored_watermark_ms: the watermark the target holds (None: never loaded)
    :param run_start_ms: when the run started (epoch ms); the window's upper bound is this minus the lag
    :param full_refresh: the run's ``full_refresh`` param
    :param scheduled_run_after: a scheduled run's ``run_after`` (None for manual and webhook
        runs; the sync allows no backfill): the run on ``source.full_read_weekday`` is the periodic full read
    """
    cursor = spec.source.cursor
    periodic = scheduled_run_after is not None and is_full_read_day(
        scheduled_run_after, spec.schedule.timezone, spec.source.full_read_weekday)
    full = full_refresh or periodic
    window = None if full else incremental_window(stored_watermark_ms, run_start_ms, lag_seconds=cursor.lag_seconds,
                                                  overlap_seconds=cursor.overlap_seconds)
    if window is not None:
        return RunPlan(window, window.upper_ms, delete_missing=False, reason="incremental since the watermark")
    reason = ("full refresh" if full_refresh else
              f"periodic full read ({spec.source.full_read_weekday})" if periodic else "no watermark yet")
    return RunPlan(None, run_start_ms - cursor.lag_seconds * 1000, delete_missing=full, reason=reason)


def watermark_to_go_by(target: ErpTarget, spec: SyncSpec, logger: logging.Logger | None = None) -> int | None:
    """The stored watermark (epoch ms) a run reads the changes since, or None to read everything.
    The watermark belongs to the sync, the rows to the table: a table holding no row (a new one
    after a spec change, one truncated or restored empty) has nothing the watermark vouches for,
    and reading only the changes since it would leave every unchanged customer missing for good."""
    watermark = target.read_watermark(spec)
    if watermark is None:
        return None
    if not target.holds_rows(spec):
        (logger or logging.getLogger(__name__)).warning(
            "%s holds no row although the sync's watermark is %s: reading every record", spec.target.table,
            watermark.ts_ms)
        return None
    return watermark.ts_ms
