"""``python -m conduit.devtools.ui_stack`` (``bash scripts/ui.sh``): Airflow with Conduit's UI on
this machine, no Docker, until Ctrl-C.

Starts, on embedded defaults under ``--home`` (default ``.demo/ui``, kept between starts):

* the stand-in HubSpot CRM (``--contacts`` contacts) and the stand-in order services, with their
  connections (``hubspot_default``; ``inventory/payment/fraud/shipping_default``);
* the ERP customer master and the saga log in SQLite files (``erp_default``, ``conduit_saga_default``);
* Airflow on a SQLite metadata database with the LocalExecutor: ``api-server``, ``scheduler``,
  ``dag-processor`` and ``triggerer``, each its own process group, logs in ``<home>/logs/``;
* one SimpleAuthManager user (``admin``) whose password is generated once and kept in the home.

Then prints the URL and the login and waits. Trigger ``crm_to_erp_customer_sync`` in the UI (or
start with ``--trigger``) and open the "Conduit" entry of the nav bar, or the DAG's "Sync health"
tab. ``--nameless K`` first blanks the names of K contacts, which the quality gate quarantines, so
the quarantine list and the replay button have something to show. Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import requests

SYNC_DAG_ID = "crm_to_erp_customer_sync"
COMPONENTS: dict[str, tuple[str, ...]] = {
    "api-server": ("api-server",),
    "scheduler": ("scheduler",),
    "dag-processor": ("dag-processor",),
    "triggerer": ("triggerer",),
}
USERNAME = "admin"
READY_TIMEOUT_S = 240


def free_port(preferred: int = 0) -> int:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
        except OSError:
            sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def kept_secret(path: Path, make=lambda: secrets.token_urlsafe(48)) -> str:
    """A secret made once and kept in ``path`` (tokens and sessions survive a restart)."""
    if not path.exists():
        path.write_text(make())
        path.chmod(0o600)
    return path.read_text().strip()


def airflow_env(repo: Path, home: Path, port: int, crm_url: str, crm_token: str, services_url: str) -> dict[str, str]:
    """Every component's environment: this process's, minus any Airflow/Conduit settings of the
    shell, plus the stack's."""
    from cryptography.fernet import Fernet

    airflow_home = home / "airflow"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CONDUIT_", "_AIRFLOW"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update({
        "PYTHONUNBUFFERED": "1",
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__CORE__DAGS_FOLDER": str(repo / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(airflow_home / "plugins"),  # Conduit's plugin: its entry point
        "AIRFLOW__CORE__AUTH_MANAGER":
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USERNAME}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(airflow_home / "passwords.json"),
        "AIRFLOW__CORE__FERNET_KEY": kept_secret(home / "fernet.key", lambda: Fernet.generate_key().decode()),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__SECRET_KEY": kept_secret(home / "api.key"),
        "AIRFLOW__API_AUTH__JWT_SECRET": kept_secret(home / "jwt.key"),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
        "CONDUIT_INCLUDE_DIR": str(repo / "include"),
        "CONDUIT_STAGING_DIR": str(home / "staging"),
        "AIRFLOW_CONN_HUBSPOT_DEFAULT": json.dumps({"conn_type": "hubspot", "host": crm_url, "password": crm_token,
                                                    "extra": {"api_version": "2026-09"}}),
        "AIRFLOW_CONN_ERP_DEFAULT": json.dumps({"conn_type": "sqlite", "host": str(home / "erp.sqlite")}),
        "AIRFLOW_CONN_CONDUIT_SAGA_DEFAULT": json.dumps({"conn_type": "sqlite", "host": str(home / "saga.sqlite")}),
        **{f"AIRFLOW_CONN_{name.upper()}_DEFAULT": json.dumps({"conn_type": "http", "host": services_url,
                                                               "extra": {"timeout": 10, "max_retries": 5}})
           for name in ("inventory", "payment", "fraud", "shipping")},
    })
    return env


def write_password(airflow_home: Path) -> str:
    """The admin's password, generated once (SimpleAuthManager reads the file, never prints it)."""
    path = airflow_home / "passwords.json"
    users = json.loads(path.read_text()) if path.exists() else {}
    users.setdefault(USERNAME, secrets.token_urlsafe(12))
    path.write_text(json.dumps(users))
    path.chmod(0o600)
    return users[USERNAME]


@dataclass
class Component:
    name: str
    process: subprocess.Popen
    log: Path

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


@dataclass
class UiStack:
    repo: Path
    home: Path
    port: int
    env: dict[str, str]
    components: dict[str, Component] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        (self.home / "logs").mkdir(parents=True, exist_ok=True)
        (self.home / "staging").mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=self.env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.home)
        for name, args in COMPONENTS.items():
            extra = ["--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"] if name == "api-server" else []
            self._spawn(name, [str(Path(sys.executable).parent / "airflow"), *args, *extra])

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = self.home / "logs" / f"{name}.log"
        with open(log, "ab") as out:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                       env=self.env, cwd=self.home, start_new_session=True)
        self.components[name] = Component(name, process, log)

    def dead(self) -> list[Component]:
        return [c for c in self.components.values() if c.process.poll() is not None]

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if gone := self.dead():
                raise RuntimeError("; ".join(f"{c.name} exited ({c.process.returncode}):\n{c.tail()}" for c in gone))
            with contextlib.suppress(requests.RequestException, ValueError):
                health = requests.get(f"{self.url}/api/v2/monitor/health", timeout=5).json()
                if all(health.get(p, {}).get("status") == "healthy"
                       for p in ("metadatabase", "scheduler", "triggerer", "dag_processor")):
                    return
            time.sleep(1)
        raise TimeoutError(f"Airflow was not healthy after {timeout:.0f} s; see {self.home / 'logs'}")

    def token(self, password: str) -> str:
        resp = requests.post(f"{self.url}/auth/token", json={"username": USERNAME, "password": password}, timeout=30)
        resp.raise_for_status()
        return resp.json()["access_token"]

    def trigger(self, password: str, dag_id: str = SYNC_DAG_ID, timeout: float = 180,
                scheduled_wait_s: float = 15) -> str:
        """Unpause the DAG once it is parsed; returns the id of the run that syncs now. Unpausing
        makes the scheduler start the latest scheduled run (the nightly slot just past), which is
        that run: a manual run beside it would find nothing left to do. When none starts (the DAG
        was unpaused already, or a kept home ran that slot before), a run is triggered."""
        headers = {"Authorization": f"Bearer {self.token(password)}"}
        dag_url = f"{self.url}/api/v2/dags/{dag_id}"
        deadline = time.monotonic() + timeout
        while (dag := requests.get(dag_url, headers=headers, timeout=30)).status_code != 200:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{dag_id} was not parsed within {timeout:.0f} s")
            time.sleep(2)
        if dag.json()["is_paused"]:
            requests.patch(dag_url, json={"is_paused": False}, headers=headers, timeout=30).raise_for_status()
            deadline = time.monotonic() + scheduled_wait_s
            while time.monotonic() < deadline:
                runs = requests.get(f"{dag_url}/dagRuns", params={"state": ["queued", "running"]},
                                    headers=headers, timeout=30).json()["dag_runs"]
                if runs:
                    return runs[0]["dag_run_id"]
                time.sleep(1)
        resp = requests.post(f"{dag_url}/dagRuns", json={"logical_date": None, "conf": {}}, headers=headers,
                             timeout=30)
        resp.raise_for_status()
        return resp.json()["dag_run_id"]

    def stop(self) -> None:
        for component in reversed(list(self.components.values())):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(component.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for component in self.components.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                component.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        for component in self.components.values():  # what did not end on SIGTERM, and its children
            with contextlib.suppress(ProcessLookupError):
                os.killpg(component.process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                component.process.wait(timeout=10)


def blank_names(crm, count: int) -> list[str]:
    """Give ``count`` contacts an empty name, modified before the first run's window closes."""
    if count <= 0:
        return []
    ids = crm.admin.bulk_modify(count, properties={"firstname": "", "lastname": ""},
                                lastmodifieddate_ms=crm.admin.clock_ms() - 15 * 60_000, seed=7)["ids"]
    return [str(i) for i in ids]


@contextlib.contextmanager
def services(args: argparse.Namespace) -> Iterator[tuple]:
    from conduit.orders_standin.testing import run_order_services
    from conduit.standin.testing import run_standin

    token = "standin-" + secrets.token_hex(8)
    with run_standin(token=token, contacts=args.contacts, seed=args.seed) as crm, run_order_services() as orders:
        yield crm, orders


def banner(stack: UiStack, password: str, *, run_id: str | None, nameless: list[str]) -> str:
    lines = [
        "",
        f"Airflow with Conduit's sync health view: {stack.url}",
        f"  login        {USERNAME} / {password}",
        f"  Conduit      {stack.url}/plugin/conduit   (the nav entry; the page alone: {stack.url}/conduit-ui/)",
        f"  a sync       {stack.url}/dags/{SYNC_DAG_ID}/plugin/conduit-sync-health",
        f"  its API      {stack.url}/conduit-ui/api/syncs   (with the login's cookie or a Bearer token)",
        f"  state        {stack.home}   (ERP: erp.sqlite; logs: logs/; rm -rf it to start over)",
    ]
    if run_id:
        lines.append(f"  running      {SYNC_DAG_ID} run {run_id}: watch the page fill")
    else:
        lines.append(f"  next         unpause and trigger {SYNC_DAG_ID} in the UI (or start with --trigger)")
    if nameless:
        lines.append(f"  quarantine   contacts {', '.join(nameless)} have no name: the gate quarantines them")
    lines.append("Ctrl-C stops everything.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=Path(".demo") / "ui", help="where the stack keeps its state")
    parser.add_argument("--port", type=int, default=8080, help="the API server's port (a free one if taken)")
    parser.add_argument("--contacts", type=int, default=2_000, help="contacts the stand-in CRM serves")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--nameless", type=int, default=0, metavar="K",
                        help="blank the names of K contacts first (the gate quarantines them)")
    parser.add_argument("--trigger", action="store_true",
                        help=f"unpause {SYNC_DAG_ID} once up: the scheduled run that starts (or a manual one) syncs")
    args = parser.parse_args(argv)

    repo = Path.cwd()
    if not (repo / "dags").is_dir() or not (repo / "include" / "syncs").is_dir():
        parser.error(f"run from the Conduit repository root (no dags/ and include/syncs/ in {repo})")
    home = args.home.resolve()
    (home / "airflow" / "plugins").mkdir(parents=True, exist_ok=True)
    password = write_password(home / "airflow")
    port = free_port(args.port)

    def stop_on_signal(signum, frame):  # SIGTERM stops it like Ctrl-C; a second one is ignored
        ignore_stop_signals()
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop_on_signal)
    signal.signal(signal.SIGINT, stop_on_signal)
    print(f"starting the stand-in CRM ({args.contacts} contacts), the order services and Airflow "
          f"(SQLite, LocalExecutor) under {home} ...", flush=True)
    try:
        with services(args) as (crm, orders):
            nameless = blank_names(crm, args.nameless)
            stack = UiStack(repo, home, port, airflow_env(repo, home, port, crm.base_url, crm.token, orders.base_url))
            try:
                return serve(stack, password, trigger=args.trigger, nameless=nameless)
            finally:
                # however the stop began (a signal, a component that died), a signal now must not cut
                # the clean-up short: it would leave Airflow components running on their own
                ignore_stop_signals()
                stack.stop()
    except KeyboardInterrupt:
        print("\nstopped", flush=True)
        return 0
    except (RuntimeError, TimeoutError) as exc:
        print(f"the stack did not start: {exc}", file=sys.stderr)
        return 1


def ignore_stop_signals() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def serve(stack: UiStack, password: str, *, trigger: bool, nameless: list[str]) -> int:
    """Start Airflow, say where it is, and wait for Ctrl-C (or a component that dies: 1)."""
    stack.start()
    stack.wait_ready()
    run_id = stack.trigger(password) if trigger else None
    print(banner(stack, password, run_id=run_id, nameless=nameless), flush=True)
    while not (gone := stack.dead()):
        time.sleep(1)
    print("\n".join(f"{c.name} exited ({c.process.returncode}); its log ends:\n{c.tail()}" for c in gone),
          file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
