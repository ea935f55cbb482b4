"""An approved load applies exactly its plan; a retry of a load that already committed it changes nothing."""
from __future__ import annotations

import pytest

from conduit.exceptions import StalePlanError
from conduit.targets.base import KeyChecksum, LoadPlan, LoadResult, refuse_unless_planned

PLAN = LoadPlan(LoadResult(inserted=2, deleted=240), 600, KeyChecksum(600, 1), {}, {})


def test_the_planned_result_passes_and_any_other_is_refused():
    refuse_unless_planned("t", LoadResult(inserted=2, deleted=240), PLAN, applied_earlier=False)
    with pytest.raises(StalePlanError, match="approved plan said"):
        refuse_unless_planned("t", LoadResult(inserted=2, deleted=239), PLAN, applied_earlier=False)


def test_a_retry_after_its_own_commit_passes_only_when_it_changes_nothing():
    refuse_unless_planned("t", LoadResult(unchanged=362, stale_skipped=1), PLAN, applied_earlier=True)
    for result in (LoadResult(inserted=1), LoadResult(updated=1), LoadResult(deleted=1),
                   LoadResult(inserted=2, deleted=240)):  # the plan again: not on top of itself
        with pytest.raises(StalePlanError, match="earlier try of this run"):
            refuse_unless_planned("t", result, PLAN, applied_earlier=True)
