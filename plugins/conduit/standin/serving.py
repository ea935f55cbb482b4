"""What every stand-in server shares: serving an app on a socket that listens before uvicorn starts
(its base URL printed once it does), and running such a server as a child process for tests and
demos, waiting for that line and for a first answer."""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator

READY = re.compile(r"ready at (http://\S+)")


class AdminSession:
    """A thin ``requests`` client of a stand-in's ``/_admin`` API; errors name the call."""

    what = "stand-in"

    def __init__(self, base_url: str, timeout: float = 60):
        import requests

        self.base_url = base_url
        self.timeout = timeout
        self.session = requests.Session()

    def _call(self, method: str, path: str, json: object = None) -> dict:
        reply = self.session.request(method, f"{self.base_url}/_admin{path}", json=json, timeout=self.timeout)
        if reply.status_code >= 400:
            raise RuntimeError(f"{self.what} admin {method} {path} answered {reply.status_code}: {reply.text}")
        return reply.json()


def serve(app, host: str, port: int, announce: Callable[[str], str]) -> None:
    """Serve ``app``; ``announce(base_url)`` is the line printed once the socket listens (``port``
    0 picks a free port: the line is how a parent process learns it)."""
    import uvicorn

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)  # listening before uvicorn starts: connections queue instead of failing
    bound_host, bound_port = sock.getsockname()[:2]
    url_host = f"[{bound_host}]" if ":" in bound_host else bound_host
    print(announce(f"http://{url_host}:{bound_port}"), flush=True)
    # a fault can hold an answer back for a minute: a stand-in told to stop does not wait for it
    config = uvicorn.Config(app, log_level="warning", access_log=False, loop="auto", http="auto",
                            timeout_graceful_shutdown=1)
    uvicorn.Server(config).run(sockets=[sock])


def flags(options: dict) -> list[str]:
    """Keyword options as command-line flags: ``ship_after_s=0.2`` -> ``--ship-after-s 0.2``; True is
    a bare flag, None and False are left out."""
    argv = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value not in (None, False):
            argv += [flag, str(value)]
    return argv


@contextlib.contextmanager
def server_process(module: str, options: dict, *, what: str, probe: str,
                   startup_timeout: float = 120) -> Iterator[tuple[str, subprocess.Popen]]:
    """Start ``python -m <module>`` on a free loopback port, wait until it answers ``GET probe``,
    yield (base URL, process); always stop it on exit."""
    argv = [sys.executable, "-m", module, "--host", "127.0.0.1", "--port", "0", *flags(options)]
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr, text=True,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            yield _wait_ready(process, stderr, startup_timeout, what, probe), process
        finally:
            stop_process(process)
            process.stdout.close()


def stop_process(process: subprocess.Popen, timeout: float = 10) -> None:
    """SIGTERM, and SIGKILL if it has not ended within ``timeout`` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _wait_ready(process: subprocess.Popen, stderr, timeout: float, what: str, probe: str) -> str:
    import requests

    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if selector.select(timeout=0.2):
                match = READY.search(process.stdout.readline())
                if match:
                    base_url = match.group(1)
                    requests.get(f"{base_url}{probe}", timeout=max(1.0, deadline - time.monotonic()))
                    return base_url
            if process.poll() is not None:
                break
    stderr.seek(0)
    detail = stderr.read().decode(errors="replace")[-4000:]
    state = f"exited with {process.returncode}" if process.poll() is not None else f"not ready after {timeout}s"
    raise RuntimeError(f"{what} {state}: {' '.join(process.args)}\n{detail}")
