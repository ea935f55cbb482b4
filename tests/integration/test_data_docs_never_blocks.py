"""Data Docs report and never block (``DataDocsOperator``): the gate decides. A Data Docs site
that cannot be written (a full or read-only volume) must not fail a run whose load committed,
nor keep ``reconcile`` (which checks that load, then removes the staged files) from running.

Real sync DAG via ``dag.test()``, the stand-in CRM over HTTP, PostgreSQL, Great Expectations."""

from __future__ import annotations

import pytest
from sync_helpers import run_dag, xcom

pytestmark = pytest.mark.postgres


def test_data_docs_that_cannot_be_written_leave_the_load_checked_and_the_run_green(sync_env, tmp_path,
                                                                                  monkeypatch):
    env = sync_env
    env.edit_spec(retries=0, mapping__email__transforms=[{"type": "email"}])  # bad emails: something to show
    env.crm.admin.reset(bad_emails=4)
    not_a_dir = tmp_path / "volume"
    not_a_dir.write_text("")
    monkeypatch.setenv("CONDUIT_DATA_DOCS_DIR", str(not_a_dir / "data_docs"))

    dag_run, states = run_dag(env)

    assert (states["load"], states["reconcile"]) == ("success", "success"), states
    assert dag_run.state == "success", states
    assert env.target().count(env.spec()) == 600 - 4
    docs = xcom(dag_run, "data_docs")
    assert docs["data_docs"] is None and "data_docs" in docs["error"]  # said, in the task's summary
