"""Fixtures of the end-to-end suite: real Airflow deployments (see harness.py) and a real Chromium
driven by Playwright.

Starting a deployment costs ~15 s, so consecutive modules that cannot disturb each other share one
(``shared_stack``: the health view works on the sync DAG and its replay DAG, the order saga only on
``order_fulfilment``); a module whose assertions need a deployment nobody else touched (run counts,
ERP contents, a paused sync DAG) gets its own (``airflow_stack``, or ``running_stack`` with
options). A deployment runs only while tests use it, and its teardown must leave nothing behind.

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


def start_stack(pg_dsn: str, redis_url: str, artifacts: Path, **options) -> AirflowStack:
    """A started deployment; when starting fails, what it had started is stopped again."""
    workdir = Path(tempfile.mkdtemp(prefix="conduit-e2e-"))
    stack = AirflowStack(artifacts=artifacts, dags_folder=topology.REPO / "dags", pg_dsn=pg_dsn,
                         redis_url=redis_url, workdir=workdir,
                         standin_contacts=int(os.environ.get("CONDUIT_E2E_CONTACTS", "300")),
                         plugins_folder=topology.REPO / "plugins", **options)
    # what its stop() found left behind, once stopped; lets a test stop it and assert itself
    stack.stopped = []  # type: ignore[attr-defined]
    try:
        stack.start()
    except BaseException:
        stop_stack(stack)
        raise
    return stack


def stop_stack(stack: AirflowStack) -> list[str]:
    """Kill every process group of the deployment (unless a test did), check that nothing is left,
    drop its databases. Returns the leftovers."""
    stopped: list[list[str]] = stack.stopped  # type: ignore[attr-defined]
    if not stopped:
        stopped.append(stack.stop())
    shutil.rmtree(stack.workdir, ignore_errors=True)
    return stopped[0]


def running_stack(request, pg_dsn: str, redis_url: str, artifacts: Path, **options):
    """Start a deployment; always torn down (``stop_stack``), and the teardown must leave nothing
    behind. Yields the stack."""
    stack = start_stack(pg_dsn, redis_url, artifacts, **options)
    request.addfinalizer(lambda: stop_stack(stack))
    yield stack
    leftovers = stop_stack(stack)
    assert not leftovers, f"processes left behind after teardown: {leftovers}"


@pytest.fixture(scope="module")
def airflow_stack(request, pg_server_dsn: str, redis_url: str, e2e_artifacts: Path):
    """A running Conduit deployment (CeleryExecutor) on the real sync DAGs, for one module alone."""
    yield from running_stack(request, pg_server_dsn, redis_url, e2e_artifacts)


SHARED_STACK = "shared_stack"
SHARED_STACK_USERS = "conduit:admin,viewer:viewer,nobody:"
_shared_stacks: list[AirflowStack] = []  # every shared deployment started, the current one last


@pytest.fixture(scope="session")
def _shared_stacks_stopped():
    """At the end of the session every shared deployment is stopped and has left nothing behind."""
    yield
    leftovers = {stack.stack_id: stop_stack(stack) for stack in _shared_stacks}
    _shared_stacks.clear()
    assert not any(leftovers.values()), f"processes left behind after teardown: {leftovers}"


@pytest.fixture(scope="module")
def shared_stack(_shared_stacks_stopped, pg_server_dsn: str, redis_url: str, e2e_artifacts: Path) -> AirflowStack:
    """A running deployment shared by consecutive modules that use different DAGs, with two more
    users: a viewer and one without any role (no DAG access). A module gets the running one, or a
    new one when a test stopped it. It stops after the last of the consecutive tests that use it
    (``pytest_runtest_teardown``), unless a test stops it itself."""
    if not _shared_stacks or _shared_stacks[-1].stopped:  # type: ignore[attr-defined]
        users = {"AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": SHARED_STACK_USERS}
        _shared_stacks.append(start_stack(pg_server_dsn, redis_url, e2e_artifacts, extra_env=users))
    return _shared_stacks[-1]


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item, nextitem) -> None:
    """Stop the shared deployment as soon as the next test does not use it, so it never runs beside
    another deployment (``_shared_stacks_stopped`` asserts at the end that nothing was left)."""
    if _shared_stacks and (nextitem is None or SHARED_STACK not in nextitem.fixturenames):
        stop_stack(_shared_stacks[-1])


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


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    executable = ensure_chromium()
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(executable), args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()
