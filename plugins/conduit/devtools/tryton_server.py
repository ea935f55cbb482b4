"""A real Tryton ERP (trytond + the party module) for tests and the demo, in a child process.

    with TrytonServer() as tryton:                      # SQLite, a free 127.0.0.1 port
        monkeypatch.setenv(*tryton.connection_env("tryton_default").popitem())
        TrytonHook().search("party.party", [["code", "=", "C-1"]], ["name"])
        tryton.stop(); ...; tryton.start()             # an outage: same port, same database

or from a shell (the demo): ``python -m conduit.devtools.tryton_server`` prints the URL, the
database, the REST API key and the Airflow connection, and serves until Ctrl-C.

What a server gets: a database initialised with ``trytond-admin --all -u party
--activate-dependencies`` (user ``admin``, password :data:`ADMIN_PASSWORD`), every ISO 3166
country (the country module ships none), a validated REST API key for ``admin`` made for this
server, and ``trytond`` serving it, warmed up with one request.

Initialising a database takes seconds, so a SQLite one is built once per trytond/module/pycountry
version into a template in :func:`cache_dir` (under a lock, renamed into place when complete, so
concurrent sessions never see half a file) and copied for each server. A PostgreSQL database
(``backend="postgresql"``: 127.0.0.1:5432, trust auth, user postgres) is created and initialised
when missing or not initialised yet, and kept when the server closes.

E-mail contact mechanisms: trytond checks an address's domain in DNS whenever ``email_validator``
is installed (it is, beside Conduit); the server runs with that DNS check off because CI has no
DNS (``email_dns_checks=True`` keeps it). Syntax checks stay on.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from urllib.parse import quote

ADMIN_LOGIN = "admin"
ADMIN_PASSWORD = "conduit-admin"
ADMIN_EMAIL = "admin@example.com"
MODULES = ("party",)
POSTGRES_URI = "postgresql://postgres@127.0.0.1:5432/"
# Bump when what goes into the template changes (modules, countries, settings).
_RECIPE = 1
_LAUNCH = Path(__file__).with_name("_trytond_launch.py")
_TEMPLATE_DB = "template"


def cache_dir() -> Path:
    """Where initialised template databases are kept between test sessions:
    ``$CONDUIT_TRYTON_CACHE``, else ``$XDG_CACHE_HOME/conduit-tryton``, else ``/tmp/conduit-tryton-cache``."""
    if os.environ.get("CONDUIT_TRYTON_CACHE"):
        return Path(os.environ["CONDUIT_TRYTON_CACHE"])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "conduit-tryton"
    return Path(tempfile.gettempdir()) / "conduit-tryton-cache"


def template_name() -> str:
    """The template's file stem: changes with every version that shapes its content."""
    versions = "-".join(f"{dist}{metadata.version(dist)}"
                        for dist in ("trytond", "trytond-party", "trytond-country", "pycountry"))
    return f"{versions}-r{_RECIPE}"


def trytond_config(uri: str, path: Path, port: int) -> str:
    return (f"[database]\nuri = {uri}\npath = {path}\n\n"
            f"[web]\nlisten = 127.0.0.1:{port}\n")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _trytond(command: str, *args: str, what: str, env: dict[str, str] | None = None,
             timeout: float = 300) -> str:
    """Run ``_trytond_launch.py command args``; its output, or a RuntimeError carrying it."""
    argv = [sys.executable, str(_LAUNCH), command, *args]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, **(env or {})})
    if result.returncode != 0:
        output = (result.stdout + result.stderr)[-4000:]
        raise RuntimeError(f"{what} failed (exit {result.returncode}): {' '.join(argv)}\n{output}")
    return result.stdout


def initialise(config_file: Path, database: str) -> None:
    """``trytond-admin --all -u party --activate-dependencies`` on a new database, then every country.

    Only for a database that was never initialised: on an existing one, ``--email`` without
    ``--administrator`` would take admin's administrator flag away (trytond 8.2 ``admin.py``).
    """
    with tempfile.NamedTemporaryFile("w", prefix="tryton-pass-", suffix=".txt") as passfile:
        passfile.write(ADMIN_PASSWORD + "\n")
        passfile.flush()
        _trytond("admin", "-c", str(config_file), "-d", database, "--all", "-u", *MODULES,
                 "--activate-dependencies", "--email", ADMIN_EMAIL,
                 what=f"initialising Tryton database {database!r}", env={"TRYTONPASSFILE": passfile.name})
    _trytond("setup", str(config_file), database, "--countries", what=f"creating countries in {database!r}")


def create_api_key(config_file: Path, database: str) -> str:
    """A new validated REST API key (``res.user.application``, application ``rest``) for admin."""
    output = _trytond("setup", str(config_file), database, "--api-key", what=f"creating an API key in {database!r}")
    for line in output.splitlines():
        if line.startswith("api-key "):
            return line.split(" ", 1)[1].strip()
    raise RuntimeError(f"creating an API key in {database!r} printed no key:\n{output[-2000:]}")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def sqlite_template(cache: Path | None = None) -> Path:
    """The initialised SQLite template for the installed versions, built on first use (~5 s).

    Concurrent sessions wait for one builder (a lock file); the file appears by an atomic rename
    only when complete, so a reader never sees a partial template even without the lock.
    """
    cache = cache or cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / f"{template_name()}.sqlite"
    if target.exists():
        return target
    with _locked(cache / f"{template_name()}.lock"):
        if target.exists():
            return target
        build = Path(tempfile.mkdtemp(prefix="build-", dir=cache))
        try:
            config_file = build / "trytond.conf"
            config_file.write_text(trytond_config("sqlite://", build, free_port()))
            (build / f"{_TEMPLATE_DB}.sqlite").touch()
            initialise(config_file, _TEMPLATE_DB)
            os.replace(build / f"{_TEMPLATE_DB}.sqlite", target)
        finally:
            shutil.rmtree(build, ignore_errors=True)
    return target


class TrytonServer:
    """One trytond serving one database on 127.0.0.1; a context manager (enter starts, exit closes).

    :param database: the database name (the SQLite file's stem, or the PostgreSQL database).
    :param backend: ``sqlite`` (a copy of the cached template in ``workdir``) or ``postgresql``
        (``postgres_uri``; created and initialised when missing, kept on close).
    :param port: the port to serve on; a free one by default. :meth:`start` after :meth:`stop`
        reuses it.
    :param workdir: where the config, the SQLite file and the server log go; a temporary
        directory (removed on close) by default.
    :param email_dns_checks: let trytond look e-mail domains up in DNS (off: CI has no DNS).
    """

    def __init__(self, database: str = "conduit", *, backend: str = "sqlite", postgres_uri: str = POSTGRES_URI,
                 port: int | None = None, workdir: str | Path | None = None, cache: Path | None = None,
                 email_dns_checks: bool = False, startup_timeout: float = 60.0, keep_database: bool = False) -> None:
        if backend not in ("sqlite", "postgresql"):
            raise ValueError(f"backend must be 'sqlite' or 'postgresql', not {backend!r}")
        self.database = database
        self.backend = backend
        self.postgres_uri = postgres_uri if postgres_uri.endswith("/") else postgres_uri + "/"
        self.port = port or free_port()
        self.admin_password = ADMIN_PASSWORD
        self.api_key: str | None = None
        self.startup_timeout = startup_timeout
        self._workdir = Path(workdir) if workdir is not None else None
        self._own_workdir = workdir is None
        self._cache = cache
        self._email_dns_checks = email_dns_checks
        self._keep_database = keep_database  # serve an existing SQLite file again instead of the template
        self._process: subprocess.Popen | None = None
        self._log = None

    # --- where ---------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="conduit-tryton-"))
        return self._workdir

    @property
    def config_file(self) -> Path:
        return self.workdir / "trytond.conf"

    @property
    def log_path(self) -> Path:
        return self.workdir / "trytond.log"

    @property
    def database_uri(self) -> str:
        return "sqlite://" if self.backend == "sqlite" else self.postgres_uri

    def url_for(self, model: str, record_id: int | None = None) -> str:
        """The REST URL of a model (``party.party``), or of one record."""
        url = f"{self.base_url}/{self.database}/rest/model/{model}"
        return url if record_id is None else f"{url}/{record_id}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # --- an Airflow connection -----------------------------------------------------------------

    def connection(self, **extra) -> dict:
        """The connection as Airflow's JSON form: host = base URL, schema = database, password = key."""
        return {"conn_type": "tryton", "host": self.base_url, "schema": self.database,
                "password": self._key(), "extra": extra}

    def connection_uri(self, **extra) -> str:
        """The connection as an Airflow URI (``tryton://http://:KEY@127.0.0.1:PORT/DB?timeout=5``)."""
        query = "&".join(f"{quote(str(k), safe='')}={quote(str(v), safe='')}" for k, v in extra.items())
        uri = f"tryton://http://:{quote(self._key(), safe='')}@127.0.0.1:{self.port}/{quote(self.database, safe='')}"
        return f"{uri}?{query}" if query else uri

    def connection_env(self, conn_id: str = "tryton_default", **extra) -> dict[str, str]:
        """``{"AIRFLOW_CONN_<ID>": <JSON connection>}``, for ``os.environ`` or ``monkeypatch.setenv``."""
        return {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(self.connection(**extra))}

    def _key(self) -> str:
        if self.api_key is None:
            raise RuntimeError("the Tryton server has no API key yet: start() it first")
        return self.api_key

    # --- life cycle ----------------------------------------------------------------------------

    def __enter__(self) -> TrytonServer:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc_info) -> None:
        self.close()

    def start(self) -> TrytonServer:
        """Prepare the database (first call only), serve it, and wait until it answers."""
        if self.running:
            return self
        if self.api_key is None:
            self._prepare()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if self._email_dns_checks:
            env["CONDUIT_TRYTON_EMAIL_DNS_CHECKS"] = "1"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop())
        self._process = subprocess.Popen(
            [sys.executable, str(_LAUNCH), "server", "-c", str(self.config_file), "-d", self.database],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        atexit.register(self.stop)
        self._wait_ready()
        return self

    def stop(self) -> None:
        """Stop the server process (the database stays; :meth:`start` serves it again)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            from conduit.standin.serving import stop_process

            stop_process(process)
        if self._log is not None:
            self._log.close()
            self._log = None
        atexit.unregister(self.stop)

    def close(self) -> None:
        """Stop, and remove the temporary working directory (a SQLite database with it)."""
        self.stop()
        if self._own_workdir and self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    # --- internals ---------------------------------------------------------------------------

    def _prepare(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(trytond_config(self.database_uri, self.workdir, self.port))
        database_file = self.workdir / f"{self.database}.sqlite"
        if self.backend == "sqlite" and not (self._keep_database and database_file.exists()):
            shutil.copyfile(sqlite_template(self._cache), database_file)
        elif not self._postgres_ready():
            initialise(self.config_file, self.database)
        self.api_key = create_api_key(self.config_file, self.database)

    def _postgres_ready(self) -> bool:
        """Create the PostgreSQL database if missing; whether it is initialised with our modules."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.postgres_uri + "postgres", autocommit=True, connect_timeout=5) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))
                return False
        with psycopg.connect(self.postgres_uri + self.database, connect_timeout=5) as conn:
            try:
                states = dict(conn.execute("SELECT name, state FROM ir_module").fetchall())
            except psycopg.errors.UndefinedTable:
                return False
        return all(states.get(module) == "activated" for module in MODULES)

    def _wait_ready(self) -> None:
        """Until the server answers a REST call with the key: the warm-up request trytond wants
        (on a fresh server the first login could fail with ``KeyError: 'res.user'``)."""
        request = urllib.request.Request(f"{self.url_for('res.user')}?s=1",
                                         headers={"Authorization": f"Bearer {self.api_key}"})
        deadline = time.monotonic() + self.startup_timeout
        last: object = None
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                break
            try:
                with urllib.request.urlopen(request, timeout=10) as reply:
                    if reply.status == 200:
                        return
                    last = f"HTTP {reply.status}"
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}"
            except OSError as exc:  # not listening yet
                last = exc
            time.sleep(0.1)
        state = (f"exited with {self._process.returncode}" if self._process is not None
                 and self._process.poll() is not None else f"not ready after {self.startup_timeout}s ({last})")
        log = self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""
        self.stop()
        raise RuntimeError(f"trytond on {self.base_url} {state}; its log ({self.log_path}):\n{log}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m conduit.devtools.tryton_server",
        description="Serve a Tryton ERP (party module, every country) with a REST API key until Ctrl-C.")
    parser.add_argument("--database", default="conduit", help="database name (default: conduit)")
    parser.add_argument("--postgres", action="store_true",
                        help=f"a PostgreSQL database at {POSTGRES_URI} instead of SQLite (kept on exit)")
    parser.add_argument("--port", type=int, default=None, help="port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--workdir", default=None,
                        help="keep config, SQLite file and log here (default: a temporary directory, removed on exit)")
    parser.add_argument("--keep", action="store_true",
                        help="serve the SQLite database already in --workdir instead of a fresh one")
    parser.add_argument("--conn-id", default="tryton_default", help="Airflow connection id to print")
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of text")
    args = parser.parse_args(argv)

    server = TrytonServer(args.database, backend="postgresql" if args.postgres else "sqlite",
                          port=args.port, workdir=args.workdir, keep_database=args.keep)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with server:
        env_name, conn_json = server.connection_env(args.conn_id).popitem()
        if args.json:
            print(json.dumps({"base_url": server.base_url, "database": server.database, "api_key": server.api_key,
                              "admin_password": server.admin_password, "connection_uri": server.connection_uri(),
                              env_name: conn_json}), flush=True)
        else:
            print(f"Tryton {metadata.version('trytond')} ready at {server.base_url}\n"
                  f"  database      {server.database} ({server.backend}; files and log in {server.workdir})\n"
                  f"  REST API key  {server.api_key}\n"
                  f"  REST example  curl -H 'Authorization: Bearer {server.api_key}' "
                  f"'{server.url_for('party.party')}?f=name&f=code'\n"
                  f"  admin login   {ADMIN_LOGIN} / {server.admin_password}\n"
                  f"  export {env_name}='{conn_json}'\n"
                  "Ctrl-C stops it.", flush=True)
        try:
            while server.running:
                time.sleep(0.5)
        except KeyboardInterrupt:
            return 0
        log = server.log_path.read_text(errors="replace")[-4000:]
        print(f"trytond exited; the end of its log:\n{log}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
