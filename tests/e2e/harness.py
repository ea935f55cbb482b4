"""Run Conduit the way docker-compose.yaml does, as plain processes on this machine.

``AirflowStack`` starts, from a fresh AIRFLOW_HOME:

* a new PostgreSQL metadata database (and an ERP database) on the loopback server,
* the stand-in CRM (``conduit-crm-standin``, the compose ``crm-standin`` service),
* the stand-in order services (``conduit-order-services``, the compose ``order-services`` service:
  inventory, payment, fraud, shipping; the saga log of ``order_fulfilment`` goes to the ERP database),
* ``deploy/airflow-init.sh`` (the compose ``airflow-init`` service: password file + ``db migrate``),
* every long-running component of ``topology.AIRFLOW_COMPONENTS`` (api-server, scheduler,
  dag-processor, triggerer, Celery worker) with CeleryExecutor on the loopback Redis; with
  ``workers`` above 1, more Celery workers on the same queue (``airflow-worker-2``, ...: what
  scaling the compose service out does), each its own process with its own Celery hostname and log.

Each process runs in its own process group with its output in ``<artifacts>/<name>.log``; ``stop()``
kills every group, then proves that no process of the stack is left (by process group *and* by a
marker environment variable every child inherits) and drops the databases.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from e2e import topology

VENV_BIN = Path(sys.executable).parent
MARKER_ENV = "CONDUIT_E2E_STACK_ID"
TERMINAL_RUN_STATES = {"success", "failed"}
# How often waits poll the API (or a log). A poll is one cheap request; a longer interval only adds
# its half on average to every wait, and the suite waits a few hundred times.
POLL_S = 0.25
WORKER = "airflow-worker"  # the Celery worker's compose service (topology.AIRFLOW_COMPONENTS)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], Any], *, timeout: float, interval: float = POLL_S, what: str,
               on_timeout: Callable[[], str] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
        except Exception as exc:  # noqa: BLE001 - keep polling; the last error goes into the message
            last_exc = exc
            result = None
        if result:
            return result
        time.sleep(interval)
    details = on_timeout() if on_timeout else ""
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last_exc!r}){details}")


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log_path: Path

    @property
    def pgid(self) -> int:
        return self.popen.pid  # start_new_session=True: the leader's pid is the group id

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return ""
        return "\n".join(text[-lines:])


def _proc_state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def _proc_pgid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return int(stat.rsplit(")", 1)[1].split()[2])


def _has_marker(pid: int, marker: bytes) -> bool:
    try:
        return marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return "?"


@dataclass
class AirflowStack:
    artifacts: Path
    dags_folder: Path
    pg_dsn: str
    redis_url: str
    workdir: Path
    standin_contacts: int = 300
    plugins_folder: Path = topology.REPO / "plugins"
    username: str = "conduit"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    extra_env: dict[str, str] = field(default_factory=dict)

    stack_id: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    procs: dict[str, Proc] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    api_port: int = 0
    standin_url: str = ""
    standin_token: str = field(default_factory=lambda: "standin-" + secrets.token_hex(8))
    order_services_url: str = ""
    # CONDUIT_ORDER_REVIEW_TIMEOUT_S: short, so the review nobody answers (started with the order saga
    # module) has timed out by the time its test looks; long enough that a review a test answers at
    # once is picked up by the HITL trigger (it polls every 5 s) well before the timeout.
    order_review_timeout_s: int = 15
    # Celery workers on the deployment's queue and the task slots of each; compose runs one worker
    # (its replicas can be scaled out: each is one more `airflow celery worker` on the same queue).
    workers: int = 1
    worker_concurrency: int = 4
    # More extras of the HubSpot connection (e.g. its request budget), beside the API version; the
    # stand-in's URL is known only once it runs, so a test cannot pass the whole connection.
    hubspot_extra: dict[str, Any] = field(default_factory=dict)
    _token: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    _created_dbs: list[str] = field(default_factory=list)

    # --- names --------------------------------------------------------------------------------
    @property
    def metadata_db(self) -> str:
        return f"conduit_e2e_{self.stack_id}"

    @property
    def erp_db(self) -> str:
        return f"conduit_e2e_erp_{self.stack_id}"

    @property
    def queue(self) -> str:
        return f"conduit-e2e-{self.stack_id}"

    @property
    def worker_names(self) -> list[str]:
        """The Celery workers' process names: the compose service's, then ``-2``, ``-3``, ..."""
        return [WORKER if n == 1 else f"{WORKER}-{n}" for n in range(1, self.workers + 1)]

    def celery_hostname(self, worker: str) -> str:
        """A worker's Celery node name (``%h``: this host); the first keeps the one-worker name."""
        suffix = worker.removeprefix(WORKER)
        return f"{self.queue}{suffix.replace('-', '-w')}@%h"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def home(self) -> Path:
        return self.workdir / "airflow-home"

    def erp_dsn(self) -> str:
        return self._dsn_for(self.erp_db)

    def saga_dsn(self) -> str:
        """The saga log's database (conduit_saga_default): the ERP database, like in compose."""
        return self.erp_dsn()

    def _dsn_for(self, database: str) -> str:
        parts = urlsplit(self.pg_dsn)
        return parts._replace(path="/" + database).geturl()

    # --- lifecycle ----------------------------------------------------------------------------
    def start(self, *, with_standin: bool = True, with_order_services: bool = True) -> AirflowStack:
        if self.workers < 1 or self.worker_concurrency < 1:
            raise ValueError(f"workers={self.workers}, worker_concurrency={self.worker_concurrency}: both must be >= 1")
        self.artifacts.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        with self._timed("databases_s"):
            self._create_databases()
        with self._timed("standins_s"):
            # independent processes: start both, then wait for both
            standin = self._spawn_standin() if with_standin else None
            order_services = self._spawn_order_services() if with_order_services else None
            if standin:
                self.standin_url = self._served_url(standin, "the stand-in CRM")
            if order_services:
                self.order_services_url = self._served_url(order_services, "the order services stand-in")
        self.env = self._build_env()
        (self.artifacts / "environment.json").write_text(json.dumps(
            {k: v for k, v in sorted(self.env.items()) if k.startswith(("AIRFLOW", "CONDUIT"))}, indent=2))
        with self._timed("init_s"):
            self._run_init()
        with self._timed("components_s"):
            for name, args in topology.AIRFLOW_COMPONENTS.items():
                for proc_name in self.worker_names if name == WORKER else [name]:
                    extra = self._component_args(proc_name)
                    self._spawn(proc_name, [str(VENV_BIN / "airflow"), *args, *extra],
                                env=self._worker_env(proc_name))
            self._wait_ready()
        with open(self.artifacts / "stack-timings.jsonl", "a") as timings:
            timings.write(json.dumps({"stack_id": self.stack_id, **self.timings}) + "\n")
        return self

    @contextmanager
    def _timed(self, phase: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.timings[phase] = round(time.monotonic() - started, 1)

    def stop(self) -> list[str]:
        """Kill everything, verify nothing is left, drop the databases. Returns the leftovers found
        after the kill (empty when the teardown is clean)."""
        stopping = time.monotonic()
        for proc in reversed(list(self.procs.values())):
            if proc.popen.poll() is None:
                try:
                    os.killpg(proc.pgid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 20
        exited_after: dict[str, float] = {}
        for proc in self.procs.values():
            try:
                proc.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
                exited_after[proc.name] = round(time.monotonic() - stopping, 1)
            except subprocess.TimeoutExpired:
                pass
        ignored_sigterm = [proc.name for proc in self.procs.values() if proc.popen.poll() is None]
        # Whatever still runs in our groups (or carries our marker) gets SIGKILL.
        for pid in self.leftover_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for proc in self.procs.values():
            try:
                os.killpg(proc.pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                proc.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        leftovers: list[str] = []
        try:
            wait_until(lambda: not self.leftover_pids(), timeout=15, what="processes to exit")
        except TimeoutError:
            leftovers = [f"{pid}: {_cmdline(pid)}" for pid in self.leftover_pids()]
        self._drop_databases()
        self._clean_redis()
        self.timings["stop_s"] = round(time.monotonic() - stopping, 1)
        with open(self.artifacts / "stack-timings.jsonl", "a") as timings:
            timings.write(json.dumps({"stack_id": self.stack_id, "stop_s": self.timings["stop_s"],
                                      "exited_after_sigterm_s": exited_after,
                                      "ignored_sigterm": ignored_sigterm}) + "\n")
        return leftovers

    def leftover_pids(self) -> list[int]:
        """Live (non-zombie) processes of this stack: in one of its process groups or carrying its
        marker variable (catches children that started their own session)."""
        pgids = {p.pgid for p in self.procs.values()}
        marker = f"{MARKER_ENV}={self.stack_id}".encode()
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            pid = int(entry)
            if pid == os.getpid():
                continue
            state = _proc_state(pid)
            if state is None or state in ("Z", "X"):
                continue
            if _proc_pgid(pid) in pgids or _has_marker(pid, marker):
                found.append(pid)
        return found

    # --- pieces -------------------------------------------------------------------------------
    def _create_databases(self) -> None:
        import psycopg

        with psycopg.connect(self.pg_dsn, autocommit=True) as conn:
            for db in (self.metadata_db, self.erp_db):
                conn.execute(f'CREATE DATABASE "{db}"')
                self._created_dbs.append(db)

    def _drop_databases(self) -> None:
        import psycopg

        with psycopg.connect(self.pg_dsn, autocommit=True) as conn:
            for db in self._created_dbs:
                conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        self._created_dbs.clear()

    def _clean_redis(self) -> None:
        import redis

        client = redis.Redis.from_url(self.env.get("AIRFLOW__CELERY__BROKER_URL", self.redis_url))
        try:
            for key in client.scan_iter(match=f"*{self.queue}*"):
                client.delete(key)
            for key in client.scan_iter(match="_kombu.binding.*"):
                for member in client.smembers(key):
                    if self.queue.encode() in member:
                        client.srem(key, member)
        finally:
            client.close()

    def _spawn_standin(self) -> Proc:
        return self._spawn(topology.STANDIN_SERVICE, [
            str(VENV_BIN / topology.STANDIN_COMMAND), "--host", "127.0.0.1", "--port", "0", "--seed", "1",
            "--contacts", str(self.standin_contacts), "--token", self.standin_token,
        ], env={**self._base_env(), MARKER_ENV: self.stack_id})

    def _spawn_order_services(self) -> Proc:
        script = VENV_BIN / topology.ORDER_SERVICES_COMMAND
        # the console script is conduit.orders_standin.server:main; an editable install made before the
        # script was declared lacks it, so fall back to running the module itself
        command = [str(script)] if script.exists() else [sys.executable, "-m", topology.ORDER_SERVICES_MODULE]
        return self._spawn(topology.ORDER_SERVICES_SERVICE, [*command, "--host", "127.0.0.1", "--port", "0"],
                           env={**self._base_env(), MARKER_ENV: self.stack_id})

    @staticmethod
    def _served_url(proc: Proc, what: str) -> str:
        """The URL a stand-in announces ("ready at http://...") once it listens."""

        def ready() -> str | None:
            if proc.popen.poll() is not None:
                raise RuntimeError(f"{what} exited:\n{proc.tail()}")
            match = re.search(r"ready at (http://\S+)", proc.log_path.read_text(errors="replace"))
            return match.group(1) if match else None

        return wait_until(ready, timeout=60, what=what, on_timeout=lambda: "\n" + proc.tail())

    def _base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("AIRFLOW", "CONDUIT_", "OPENLINEAGE", "_AIRFLOW"))}
        env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
        env["PYTHONUNBUFFERED"] = "1"
        env.pop("PYTHONPATH", None)
        return env

    def _build_env(self) -> dict[str, str]:
        from cryptography.fernet import Fernet

        parts = urlsplit(self.pg_dsn)
        pg_user = parts.username or "postgres"
        pg_pass = f":{quote(parts.password)}" if parts.password else ""
        pg_host = f"{parts.hostname or '127.0.0.1'}:{parts.port or 5432}"
        metadata = f"{pg_user}{pg_pass}@{pg_host}/{self.metadata_db}"
        redis_base = self.redis_url.rsplit("/", 1)[0]
        broker_db = int(os.environ.get("CONDUIT_E2E_REDIS_DB", "13"))
        self.api_port = free_port()
        staging = self.workdir / "staging"
        staging.mkdir(parents=True, exist_ok=True)
        logs = self.artifacts / "airflow-logs"
        env = self._base_env()
        env.update(topology.FIXED_ENV)
        env.update({
            MARKER_ENV: self.stack_id,
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(self.plugins_folder),
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(logs),
            "AIRFLOW__LOGGING__DAG_PROCESSOR_CHILD_PROCESS_LOG_DIRECTORY": str(logs / "dag_processor"),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{self.username}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.home / "passwords.json"),
            "_AIRFLOW_WWW_USER_USERNAME": self.username,
            "_AIRFLOW_WWW_USER_PASSWORD": self.password,
            "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{metadata}",
            "AIRFLOW__CELERY__BROKER_URL": f"{redis_base}/{broker_db}",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql://{metadata}",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
                {"type": "file", "log_file_path": str(self.artifacts / "openlineage-events.jsonl"),
                 "append": True}),
            # Isolation from anything else on this machine, and a small footprint on a small box.
            "AIRFLOW__OPERATORS__DEFAULT_QUEUE": self.queue,
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(free_port()),
            "AIRFLOW__CORE__PARALLELISM": "8",
            # Airflow's default pools (5 + 10 overflow in each of five components) could take 75 of
            # PostgreSQL's 100 connections; the rest of the suite runs beside this deployment
            "AIRFLOW__DATABASE__SQL_ALCHEMY_POOL_SIZE": "2",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_MAX_OVERFLOW": "4",
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.worker_concurrency),
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            # A loaded 2-core CI box answers the first Execution API calls slowly; 5 s is the default.
            "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
            # A sync run is a chain of 7 task steps (the saga's longer), so per-step latency adds up:
            # - the task supervisor sleeps up to this long between looks at its task process; when the
            #   process closes its sockets a moment before it exits, the supervisor notices the exit
            #   only after that sleep, so with the default (5 s) a finished task often holds its
            #   Celery slot for 5 s more and, with 4 slots, delays the tasks queued behind it;
            "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
            # - an idle scheduler loop sleeps this long (default 1 s) before it sees that a task ended
            #   and queues the next one.
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.2",
            # Connections (JSON form), exactly like the compose file.
            "AIRFLOW_CONN_HUBSPOT_DEFAULT": json.dumps({
                "conn_type": topology.CONNECTION_TYPES["AIRFLOW_CONN_HUBSPOT_DEFAULT"],
                "host": self.standin_url, "password": self.standin_token,
                "extra": {"api_version": topology.HUBSPOT_API_VERSION, **self.hubspot_extra}}),
            "AIRFLOW_CONN_ERP_DEFAULT": json.dumps({
                "conn_type": topology.CONNECTION_TYPES["AIRFLOW_CONN_ERP_DEFAULT"],
                "host": parts.hostname or "127.0.0.1", "port": parts.port or 5432, "login": pg_user,
                "password": parts.password or "", "schema": self.erp_db}),
            **{name: json.dumps({"conn_type": topology.CONNECTION_TYPES[name], "host": self.order_services_url,
                                 "extra": topology.ORDER_SERVICE_EXTRA})
               for name in topology.ORDER_SERVICE_CONNECTIONS},
            topology.SAGA_CONNECTION_ENV: json.dumps({
                "conn_type": topology.CONNECTION_TYPES[topology.SAGA_CONNECTION_ENV],
                "host": parts.hostname or "127.0.0.1", "port": parts.port or 5432, "login": pg_user,
                "password": parts.password or "", "schema": self.erp_db}),
            topology.ORDER_REVIEW_TIMEOUT_ENV: str(self.order_review_timeout_s),
            # HITL: the scheduler applies a timed-out review's default at this interval (15 s by default)
            "AIRFLOW__SCHEDULER__TRIGGER_TIMEOUT_CHECK_INTERVAL": "2",
            "CONDUIT_INCLUDE_DIR": str(topology.REPO / "include"),
            "CONDUIT_STAGING_DIR": str(staging),
            "CONDUIT_REDIS_URL": f"{redis_base}/{broker_db}",
            "CONDUIT_HUBSPOT_WEBHOOK_SECRET": "e2e-" + secrets.token_hex(8),
        })
        env.update(self.extra_env)
        missing = [name for name in topology.REQUIRED_ENV if name not in env]
        assert not missing, f"harness does not set {missing} (topology.REQUIRED_ENV)"
        return env

    def _component_args(self, name: str) -> list[str]:
        if name == "airflow-apiserver":
            return ["--host", "127.0.0.1", "--port", str(self.api_port), "--workers", "1"]
        if name in self.worker_names:
            return ["--queues", self.queue, "--celery-hostname", self.celery_hostname(name),
                    "--concurrency", str(self.worker_concurrency), "--without-gossip", "--without-mingle"]
        return []

    def _worker_env(self, name: str) -> dict[str, str] | None:
        """Every worker starts a log server; a second one on the first one's port could not bind."""
        if name not in self.worker_names[1:]:
            return None
        return {**self.env, "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port())}

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        log_path = self.artifacts / f"{name}.log"
        with open(log_path, "wb") as log:
            popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                     env=env or self.env, cwd=self.workdir, start_new_session=True)
        proc = Proc(name, popen, log_path)
        self.procs[name] = proc
        return proc

    def _run_init(self) -> None:
        log_path = self.artifacts / f"{topology.INIT_SERVICE}.log"
        with open(log_path, "wb") as log:
            result = subprocess.run(["bash", str(topology.INIT_SCRIPT)], stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, env=self.env, cwd=self.workdir,
                                    start_new_session=True, timeout=240)
        if result.returncode != 0:
            raise RuntimeError(f"{topology.INIT_SCRIPT.name} failed ({result.returncode}):\n"
                               + "\n".join(log_path.read_text(errors="replace").splitlines()[-40:]))

    def _check_alive(self) -> None:
        dead = {n: p for n, p in self.procs.items() if p.popen.poll() is not None}
        if dead:
            raise RuntimeError("component(s) exited: " + ", ".join(
                f"{n} (rc={p.popen.returncode}):\n{p.tail()}" for n, p in dead.items()))

    def _wait_ready(self) -> None:
        def api_up() -> bool:
            self._check_alive()
            return requests.get(f"{self.base_url}/api/v2/version", timeout=5).status_code == 200

        wait_until(api_up, timeout=180, what="the API server", on_timeout=self.diagnostics)
        # Warm the Execution API up (its first answer is slow) before a worker's first call.
        started = time.monotonic()
        requests.get(f"{self.base_url}/execution/health", timeout=120).raise_for_status()
        self.timings["execution_api_warmup_s"] = round(time.monotonic() - started, 1)

        def healthy() -> bool:
            self._check_alive()
            health = self.api("GET", "/api/v2/monitor/health").json()
            return all(health.get(part, {}).get("status") == "healthy"
                       for part in ("metadatabase", "scheduler", "triggerer", "dag_processor"))

        wait_until(healthy, timeout=180, what="scheduler/triggerer/dag-processor heartbeats",
                   on_timeout=self.diagnostics)

        worker_logs = [self.procs[name].log_path for name in self.worker_names]

        def workers_ready() -> bool:
            self._check_alive()
            return all(" ready." in log.read_text(errors="replace") for log in worker_logs)

        what = "the Celery worker" if self.workers == 1 else f"the {self.workers} Celery workers"
        wait_until(workers_ready, timeout=180, what=what, on_timeout=self.diagnostics)

    def diagnostics(self) -> str:
        return "".join(f"\n--- {name} (rc={p.popen.poll()}) ---\n{p.tail(25)}" for name, p in self.procs.items())

    # --- REST API v2 --------------------------------------------------------------------------
    def token(self, refresh: bool = False) -> str:
        if self._token is None or refresh:
            resp = requests.post(f"{self.base_url}/auth/token",
                                 json={"username": self.username, "password": self.password}, timeout=30)
            assert resp.status_code == 201, f"POST /auth/token -> {resp.status_code}: {resp.text}"
            self._token = resp.json()["access_token"]
        return self._token

    def api(self, method: str, path: str, *, expect: int | tuple[int, ...] | None = None,
            **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token()}", **kwargs.pop("headers", {})}
        resp = requests.request(method, f"{self.base_url}{path}", headers=headers, timeout=30, **kwargs)
        if expect is not None:
            wanted = (expect,) if isinstance(expect, int) else expect
            assert resp.status_code in wanted, f"{method} {path} -> {resp.status_code}: {resp.text[:2000]}"
        return resp

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> dict:
        def present() -> dict | None:
            self._check_alive()
            resp = self.api("GET", f"/api/v2/dags/{dag_id}")
            return resp.json() if resp.status_code == 200 else None

        def why() -> str:
            errors = self.api("GET", "/api/v2/importErrors").text
            return f"\nimport errors: {errors[:3000]}" + self.diagnostics()

        return wait_until(present, timeout=timeout, what=f"DAG {dag_id} to be parsed", on_timeout=why)

    def unpause(self, dag_id: str) -> dict:
        return self.api("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False}, expect=200).json()

    def trigger(self, dag_id: str, conf: dict | None = None) -> dict:
        body = {"logical_date": None, "conf": conf or {}}
        return self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", json=body, expect=200).json()

    def run_state(self, dag_id: str, run_id: str) -> dict:
        return self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}", expect=200).json()

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        resp = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances",
                        expect=200)
        return resp.json()["task_instances"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 240, fail_fast: bool = True) -> dict:
        """Poll the run until it finishes. With ``fail_fast`` a task going to ``up_for_retry`` or
        ``failed`` ends the wait at once (a healthy e2e sync never needs a retry)."""

        def finished() -> dict | None:
            self._check_alive()
            run = self.run_state(dag_id, run_id)
            if run["state"] in TERMINAL_RUN_STATES:
                return run
            if fail_fast and any(t["state"] in ("up_for_retry", "failed")
                                 for t in self.task_instances(dag_id, run_id)):
                return {**run, "state": "failed", "note": "a task failed or is up for retry"}
            return None

        def why() -> str:
            return "\n" + self.run_summary(dag_id, run_id) + self.diagnostics()

        return wait_until(finished, timeout=timeout, what=f"run {run_id} of {dag_id}",
                          on_timeout=why)

    def run_summary(self, dag_id: str, run_id: str) -> str:
        """Task states, plus the errors logged by every task that did not succeed."""
        tis = self.task_instances(dag_id, run_id)
        lines = [f"{t['task_id']}: {t['state']} (try {t.get('try_number')})" for t in tis]
        run_dir = self.artifacts / "airflow-logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
        for t in tis:
            if t["state"] == "success":
                continue
            for path in sorted(run_dir.glob(f"task_id={t['task_id']}/*.log")):
                lines.append(f"--- {path.relative_to(self.artifacts)} ---")
                for raw in path.read_text(errors="replace").splitlines():
                    try:
                        event = json.loads(raw)
                    except ValueError:
                        lines.append(raw[:500])
                        continue
                    if event.get("level") in ("error", "critical") or "error_detail" in event:
                        detail = event.get("error_detail") or ""
                        if isinstance(detail, list) and detail:
                            detail = [{k: e.get(k) for k in ("exc_type", "exc_value")} | {
                                "at": [f"{f['filename']}:{f['lineno']}" for f in e.get("frames", [])[-3:]]}
                                for e in detail]
                        lines.append(f"{event.get('event')} {detail}"[:3000])
        return "\n".join(lines)


def reset_artifacts(path: Path) -> None:
    """Clear what a previous run of the e2e suite left (only this folder)."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
