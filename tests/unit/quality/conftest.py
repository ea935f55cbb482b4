from __future__ import annotations

import pytest
from quality_frames import REPO

from conduit.quality import load_suite


@pytest.fixture(scope="session")
def customer_suite():
    return load_suite(REPO / "include" / "expectations" / "erp_customers.yaml")
