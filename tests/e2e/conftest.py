"""Fixtures of the end-to-end suite: one real Airflow deployment per test module (see harness.py)
and a real Chromium driven by Playwright.

Artifacts (component logs, task logs, OpenLineage events, screenshots) are kept in
``test-artifacts/e2e/``. Under CI=true nothing here skips: a missing service or browser fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from e2e import topology
from e2e.harness import AirflowStack, reset_artifacts

ARTIFACTS = topology.REPO / "test-artifacts" / "e2e"
CHROMIUM = Path(os.environ.get("CONDUIT_E2E_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def e2e_artifacts() -> Path:
    reset_artifacts(ARTIFACTS)
    return ARTIFACTS


def running_stack(request, pg_dsn: str, redis_url: str, artifacts: Path, **options):
    """Start a deployment; always torn down: the finalizer kills every process group, checks
    nothing is left and drops the databases. Yields the stack."""
    workdir = Path(tempfile.mkdtemp(prefix="conduit-e2e-"))
    stack = AirflowStack(artifacts=artifacts, dags_folder=topology.REPO / "dags", pg_dsn=pg_dsn,
                         redis_url=redis_url, workdir=workdir,
                         standin_contacts=int(os.environ.get("CONDUIT_E2E_CONTACTS", "300")),
                         plugins_folder=topology.REPO / "plugins", **options)
    stopped: list[list[str]] = []

    def teardown() -> None:
        if not stopped:
            stopped.append(stack.stop())
        shutil.rmtree(workdir, ignore_errors=True)

    request.addfinalizer(teardown)
    stack.stopped = stopped  # type: ignore[attr-defined]  # lets the last test stop it and assert
    stack.start()
    yield stack
    if not stopped:
        stopped.append(stack.stop())
    assert not stopped[0], f"processes left behind after teardown: {stopped[0]}"


@pytest.fixture(scope="module")
def airflow_stack(request, pg_server_dsn: str, redis_url: str, e2e_artifacts: Path):
    """A running Conduit deployment (CeleryExecutor) on the real sync DAGs."""
    yield from running_stack(request, pg_server_dsn, redis_url, e2e_artifacts)


def ensure_chromium() -> Path:
    """Debian's Chromium; installed with apt when missing (the CI image starts without it)."""
    if CHROMIUM.exists():
        return CHROMIUM
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=False, env=env, timeout=900)
    if CHROMIUM.exists():
        return CHROMIUM
    message = f"Chromium not found at {CHROMIUM} and `apt-get install -y chromium` did not provide it"
    if IN_CI:
        pytest.fail(message + " (under CI=true the browser test must run)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    executable = ensure_chromium()
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(executable), args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()
