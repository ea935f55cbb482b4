"""Helpers of the sync-level acceptance tests: run the real DAG (``dag.test()``) or the operators'
step functions, and compare the ERP with what the stand-in CRM holds right now (read over HTTP)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from conduit.pipeline import steps
from conduit.pipeline.run_plan import plan_run
from conduit.pipeline.staging import RunStaging

DAG_ID = "crm_to_erp_customer_sync"


def edit_spec_file(path: Path, **changes) -> None:
    """Change a spec file for the next parse; ``a__b=value`` sets ``data["a"]["b"]``."""
    import yaml

    data = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        node = data
        *parents, leaf = dotted.split("__")
        for part in parents:
            node = node[part]
        node[leaf] = value
    path.write_text(yaml.safe_dump(data))


@dataclass
class SyncEnv:
    """A sync under test: the stand-in CRM, the ERP schema, a private include/ and its spec file
    (``staging`` and ``data_docs``: where the run's files go, when a fixture sets them)."""

    crm: object
    schema: str
    include: Path
    spec_path: Path
    staging: Path | None = None
    data_docs: Path | None = None

    def edit_spec(self, **changes) -> None:
        """Change the spec for the next parse: ``quality__policy="block"`` sets ``quality.policy``."""
        edit_spec_file(self.spec_path, **changes)

    def spec(self):
        from conduit.specs.model import load_spec

        return load_spec(self.spec_path)

    def dag(self):
        from airflow.dag_processing.dagbag import DagBag

        bag = DagBag(dag_folder=str(Path(__file__).resolve().parents[2] / "dags"))
        assert bag.import_errors == {}
        return bag.dags[DAG_ID]

    def target(self):
        from conduit.hooks.erp import ErpHook

        return ErpHook().get_target()


def run_dag(env, dag=None, **kwargs) -> tuple[Any, dict[str, Any]]:
    """One real DAG run (extract -> transform -> gate/docs -> load -> reconcile)."""
    conf = {"full_refresh": False, "dry_run": False, **kwargs.pop("conf", {})}
    dag_run = (dag or env.dag()).test(run_conf=conf, **kwargs)
    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    return dag_run, states


def run_ok(env, dag=None, **kwargs):
    dag_run, states = run_dag(env, dag, **kwargs)
    assert dag_run.state == "success", states
    return dag_run


def xcom(dag_run, task_id: str) -> Any:
    """A task's returned summary (a mapped task's are added up), as the demo reports them."""
    from conduit.demo import task_summaries

    return task_summaries(dag_run)[task_id]


SEED, CONTACTS = 11, 600  # what the sync_env stand-in serves


def seeded_mapped(spec, *, bad_emails: int = 0) -> pd.DataFrame:
    """The stand-in's seeded contacts mapped by the spec, in CRM order, with each row's CRM id."""
    from conduit.standin.data import generate, iter_records
    from conduit.transforms.mapping import map_frame

    records = list(iter_records(generate(seed=SEED, contacts=CONTACTS, bad_emails=bad_emails).contacts))
    raw = steps.records_to_table(records, steps.raw_properties(spec)).to_pandas()
    frame = map_frame(raw, spec)
    frame["crm_id_text"] = raw["id"].astype(str)
    return frame


def bad_email_ids(spec, bad_emails: int) -> list[str]:
    """CRM ids of the records the stand-in gave an unfixable email at ``reset(bad_emails=...)``."""
    clean, dirty = seeded_mapped(spec), seeded_mapped(spec, bad_emails=bad_emails)
    ids = dirty.loc[clean["email"].ne(dirty["email"]), "crm_id_text"].tolist()
    assert len(ids) == bad_emails
    return ids


def extract_summary(dag_run) -> dict[str, Any]:
    """The run's extract as one summary, whether the DAG extracts in one task or in mapped tasks
    planned by ``plan_extract`` (then ``window`` comes from the plan)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(XComModel).filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id,
                                                  key="return_value").all()
        values = {(r.task_id, r.map_index): XComModel.deserialize_value(r) for r in rows}
    items = [v for (task, _), v in sorted(values.items(), key=lambda kv: kv[0][1]) if task == "extract"]
    plan = next((v for (task, _), v in values.items() if task == "plan_extract"), None)
    if plan is None:
        assert len(items) == 1
        return items[0]
    summary = steps.summarize_extract(items)
    summary["window"] = plan[0]["window"]
    return summary


def crm_hook(conn_id: str = "hubspot_default"):
    from conduit.hooks.hubspot import HubSpotHook

    return HubSpotHook(hubspot_conn_id=conn_id)


def crm_source(spec, hook=None):
    """The spec's CRM source (what the operators use), calling ``hook`` if given."""
    from conduit.sources.hubspot.source import HubSpotSource

    return HubSpotSource(spec.source, hook=hook or crm_hook(spec.source.conn_id))


def crm_records(spec, hook=None) -> list[dict]:
    """Every live CRM record, read through the list endpoint over HTTP (no search, no index lag)."""
    hook = hook or crm_hook()
    props = steps.raw_properties(spec)
    return [r for page in hook.iter_list_pages(spec.source.object, props, limit=100) for r in page]


def crm_ids(spec, hook=None) -> list[str]:
    return [r["id"] for r in crm_records(spec, hook)]


def mapped(spec, records: list[dict]) -> pd.DataFrame:
    from conduit.transforms.mapping import map_frame

    raw = steps.records_to_table(records, steps.raw_properties(spec)).to_pandas()
    return map_frame(raw, spec).sort_values(spec.target.key).reset_index(drop=True)


def crm_mapped(spec, hook=None) -> pd.DataFrame:
    """What the ERP must hold: the CRM's live records as they are now, mapped by the spec."""
    return mapped(spec, crm_records(spec, hook))


def plain(frame: pd.DataFrame) -> pd.DataFrame:
    """Values as Python objects with None for missing, whatever dtype each side chose."""
    return frame.astype(object).where(frame.notna(), None).reset_index(drop=True)


def active_rows(target, spec) -> pd.DataFrame:
    rows = target.fetch_rows(spec)
    return rows[rows["active"].astype(bool)].sort_values(spec.target.key).reset_index(drop=True)


def assert_erp_equals_crm(target, spec, hook=None) -> pd.DataFrame:
    """Active ERP rows == the mapped live CRM, row by row (mapped columns and row_hash); no key twice."""
    want = crm_mapped(spec, hook)
    all_rows = target.fetch_rows(spec)
    assert not all_rows[spec.target.key].duplicated().any()
    got = active_rows(target, spec)
    assert got[spec.target.key].tolist() == want[spec.target.key].tolist()
    pd.testing.assert_frame_equal(plain(got[spec.columns]), plain(want[spec.columns]))
    assert got["row_hash"].tolist() == want["row_hash"].tolist()
    return got


def wait_clock_past(crm, ms: int) -> None:
    """Wait (briefly) until the CRM's clock has passed ``ms``."""
    deadline = time.monotonic() + 30
    while crm.admin.clock_ms() <= ms:
        assert time.monotonic() < deadline, f"CRM clock never passed {ms}"
        time.sleep(0.05)


def settle(crm, spec) -> None:
    """Wait until changes made so far are older than the spec's lag, so the next run's window
    (upper bound = run start - lag) includes them."""
    wait_clock_past(crm, crm.admin.clock_ms() + spec.source.cursor.lag_seconds * 1000 + 20)


# --- the operators' steps, driven directly -----------------------------------------------------


def extract_and_transform(hook, target, spec, staging: RunStaging, *, full: bool = False,
                          search_hook=None) -> dict[str, Any]:
    """What CrmExtractPlanOperator + CrmExtractOperator + MappingTransformOperator do for one
    (manual) run, into ``staging``; ``full`` as the full_refresh param. Returns the extract summary
    with ``watermark_ms`` as the operator computes it (``plan_run``)."""
    target.ensure_ready(spec)
    watermark = target.read_watermark(spec)
    run = plan_run(spec, stored_watermark_ms=watermark.ts_ms if watermark else None,
                   run_start_ms=int(time.time() * 1000), full_refresh=full)
    summary = steps.extract(crm_source(spec, search_hook or hook), staging, run)
    assert summary["watermark_ms"] == run.watermark_ms
    summary["mapped"] = steps.transform(spec, staging)
    return summary


def load(target, spec, staging: RunStaging, summary: dict[str, Any], *, run_id: str):
    """What ErpUpsertOperator does."""
    return steps.load(target, spec, staging, run_id=run_id, watermark_ms=summary["watermark_ms"])


def quarantine_table(env) -> pd.DataFrame:
    """Every entry the sync ever parked (replayed ones included), read from the ERP's database."""
    import os

    import psycopg

    with psycopg.connect(os.environ["AIRFLOW_CONN_ERP_DEFAULT"]) as conn:
        cur = conn.execute(f'SELECT * FROM "{env.schema}".conduit_quarantine ORDER BY id')
        return pd.DataFrame(cur.fetchall(), columns=[c.name for c in cur.description])


def staged_ids(staging: RunStaging, kind: str = "raw") -> list[str]:
    return [i for frame in staging.read_frames(kind, ["id"]) for i in frame["id"].tolist()]


def staging_dir(tmp_path: Path, name: str) -> RunStaging:
    return RunStaging(tmp_path / "manual-staging" / name)


def extract_and_map(env, tmp_path, name: str, object_ids: list[str]):
    """A run's plan_extract (with the ids webhooks named), extract and transform, as the operators
    call the steps; returns the run's plan and its staging area."""
    from conduit.pipeline import steps
    from conduit.pipeline.run_plan import plan_run

    spec, target = env.spec(), env.target()
    run = plan_run(spec, stored_watermark_ms=target.read_watermark(spec).ts_ms,
                   run_start_ms=env.crm.admin.clock_ms())
    staging = staging_dir(tmp_path, name)
    for item in steps.plan_extract(crm_source(spec), run, object_ids=object_ids):
        steps.extract_item(crm_source(spec), staging, item)
    steps.transform(spec, staging)
    return run, staging
