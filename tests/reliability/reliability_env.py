"""What the reliability tests share besides fixtures: the sync environment and its connections."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
DAG_ID = "crm_to_erp_customer_sync"
SEED, CONTACTS = 11, 600  # what sync_helpers.seeded_mapped assumes


@dataclass
class SyncEnv:
    crm: object
    schema: str
    include: Path
    spec_path: Path
    staging: Path
    data_docs: Path

    def edit_spec(self, **changes) -> None:
        """Change the spec for the next parse: ``quality__policy="block"`` sets ``quality.policy``."""
        data = yaml.safe_load(self.spec_path.read_text())
        for dotted, value in changes.items():
            node = data
            *parents, leaf = dotted.split("__")
            for part in parents:
                node = node[part]
            node[leaf] = value
        self.spec_path.write_text(yaml.safe_dump(data))

    def spec(self):
        from conduit.specs.model import load_spec

        return load_spec(self.spec_path)

    def dag(self):
        from airflow.dag_processing.dagbag import DagBag

        bag = DagBag(dag_folder=str(REPO / "dags"))
        assert bag.import_errors == {}
        return bag.dags[DAG_ID]

    def target(self):
        from conduit.hooks.erp import ErpHook

        return ErpHook().get_target()


def hubspot_connection(base_url: str, token: str, **extra) -> str:
    return json.dumps({"conn_type": "hubspot", "host": base_url, "password": token,
                       "extra": {"api_version": "2026-09", "max_retries": 4, "backoff_max": 0.5, **extra}})
