"""The incremental window, the full read day and id ranges as pure functions (HubSpot's search
cursor: tests/unit/sources/test_hubspot_cursor.py)."""

from __future__ import annotations

import pytest

from conduit.pipeline.cursor import Window, id_ranges, incremental_window, parse_ts_ms


def test_window_none_without_watermark():
    assert incremental_window(None, 10_000_000, lag_seconds=60, overlap_seconds=600) is None


def test_window_has_fixed_upper_bound_and_overlap():
    w = incremental_window(5_000_000, 10_000_000, lag_seconds=60, overlap_seconds=600)
    assert w == Window(lower_ms=5_000_000 - 600_000, upper_ms=10_000_000 - 60_000)


def test_window_never_inverted():
    w = incremental_window(10_000_000, 10_000_000, lag_seconds=60, overlap_seconds=0)
    assert w.lower_ms <= w.upper_ms


def test_parse_ts_iso_and_epoch():
    assert parse_ts_ms("2024-01-02T03:04:05.678Z") == 1704164645678
    assert parse_ts_ms("1704164645678") == 1704164645678
    with pytest.raises(ValueError):
        parse_ts_ms(None)


@pytest.mark.parametrize(("lo", "hi", "parts"), [(1, 100, 4), (10_001, 1_010_000, 7), (5, 5, 3), (1, 3, 8)])
def test_id_ranges_cover_every_id_once(lo, hi, parts):
    ranges = id_ranges(lo, hi, parts)
    assert ranges[0][0] == lo and ranges[-1][1] == hi + 1
    assert all(a < b for a, b in ranges)
    assert all(prev[1] == nxt[0] for prev, nxt in zip(ranges, ranges[1:], strict=False))
    assert len(ranges) == min(parts, hi - lo + 1)


def test_webhook_object_ids_from_triggering_asset_events():
    from types import SimpleNamespace

    from conduit.pipeline.steps import webhook_object_ids

    events = {"asset": [SimpleNamespace(extra={"from_trigger": True, "payload": {"object_ids": ["7", "9"]}}),
                        SimpleNamespace(extra={"from_trigger": True, "payload": {"object_ids": ["9", "12"]}}),
                        SimpleNamespace(extra={"sync": "other"})]}
    assert webhook_object_ids(events) == ["7", "9", "12"]
    assert webhook_object_ids(None) == [] and webhook_object_ids({}) == []


@pytest.mark.parametrize(
    ("run_after", "weekday", "expected"),
    [
        ("2026-11-22T01:00:00+00:00", "sunday", True),   # 02:00 Sunday in Berlin
        ("2026-11-21T23:30:00+00:00", "sunday", True),   # already Sunday 00:30 in Berlin, Saturday in UTC
        ("2026-11-21T22:30:00+00:00", "sunday", False),  # Saturday 23:30 in Berlin
        ("2026-11-22T01:00:00+00:00", None, False),
    ],
)
def test_full_read_day_is_judged_in_the_schedules_time_zone(run_after, weekday, expected):
    from datetime import datetime

    from conduit.pipeline.cursor import is_full_read_day

    assert is_full_read_day(datetime.fromisoformat(run_after), "Europe/Berlin", weekday) is expected
