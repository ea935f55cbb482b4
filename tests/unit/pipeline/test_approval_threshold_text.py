"""The approval request shows the threshold the spec applied, not a rounded one, and a share that
reads above it."""

from __future__ import annotations

import pytest

from conduit.pipeline.plan import approval_reason
from conduit.specs.model import ApprovalSpec
from conduit.targets.base import KeyChecksum, LoadPlan, LoadResult


def reason(deleted: int, active: int, limit: float) -> str | None:
    plan = LoadPlan(LoadResult(deleted=deleted), active, KeyChecksum(), {}, {})
    return approval_reason(plan, ApprovalSpec(max_delete_ratio=limit))


@pytest.mark.parametrize(("deleted", "active", "limit", "shown"), [
    (2, 100, 0.015, "(2.0%, above the spec's 1.5%)"),  # was "above the spec's 2%"
    (1, 300, 0.002, "(0.3%, above the spec's 0.2%)"),  # was "above the spec's 0%"
    (201, 10_000, 0.02, "(2.01%, above the spec's 2%)"),  # not "2.0%" above 2%
    (240, 600, 0.05, "(40.0%, above the spec's 5%)"),
    (1, 100_000, 0.0, "(0.001%, above the spec's 0%)"),  # not "0.0%" above 0%
])
def test_the_reason_shows_the_threshold_applied_and_a_share_above_it(deleted, active, limit, shown):
    assert reason(deleted, active, limit) == f"would delete (or deactivate) {deleted} of {active} active customers {shown}"


def test_at_the_threshold_nothing_waits():
    assert reason(15, 1000, 0.015) is None


def test_a_table_of_deactivated_customers_is_not_empty():
    """A first load into an empty ERP waits for nobody; rewriting a table whose customers were all
    deactivated does, as it would with one of them still active."""
    first_load = LoadPlan(LoadResult(inserted=600), 0, KeyChecksum(), {}, {})
    comeback = LoadPlan(LoadResult(inserted=5, updated=600), 0, KeyChecksum(), {}, {})
    one_left = LoadPlan(LoadResult(updated=600), 1, KeyChecksum(), {}, {})
    spec = ApprovalSpec(max_update_ratio=0.2)
    assert approval_reason(first_load, spec) is None
    assert approval_reason(comeback, spec) == ("would update (re-activate) 600 customers while none is active (all "
                                               "deactivated): the spec allows 20% of the active ones")
    assert approval_reason(one_left, spec) is not None


@pytest.mark.parametrize(("ratio", "text"), [
    (0.2, "20%"), (0.05, "5%"), (0.015, "1.5%"), (0.002, "0.2%"), (0.00125, "0.125%"), (0.07, "7%"),
    (0.0, "0%"), (1.0, "100%"),
])
def test_a_ratio_reads_as_the_exact_percentage(ratio, text):
    from conduit.pipeline.plan import percent

    assert percent(ratio) == text
