"""Look for a secret in text and bytes in every form it could take on the way out: as it is,
URL-encoded, JSON-escaped, or base64 at any byte alignment (``Bearer <token>``, ``user:password``
inside a larger encoded blob). A canary secret carries a random core, so any hit is a real leak."""

from __future__ import annotations

import base64
import json
import math
import pickle
import re
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, quote_plus


def _base64_cores(secret: bytes) -> Iterator[tuple[str, bytes]]:
    """The part of base64(prefix + secret + suffix) that depends on the secret alone, for each
    of the three alignments of the secret in the encoded stream, in both alphabets."""
    n = len(secret)
    for k in range(3):
        start, stop = 4 * math.ceil(k / 3), 4 * ((k + n) // 3)
        for name, encode in (("base64", base64.b64encode), ("base64url", base64.urlsafe_b64encode)):
            core = encode(b"\0" * k + secret + b"\0\0")[start:stop]
            yield f"{name}@{k}", core


@dataclass(frozen=True)
class Secret:
    """``core``: the secret's random part; its first or last 12 characters are found even in a
    truncated or re-quoted copy."""

    name: str
    value: str
    core: str
    forms: dict[str, bytes] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        raw = self.value.encode()
        core = self.core.encode()
        candidates = [("raw", raw), ("core", core), ("core head", core[:12]), ("core tail", core[-12:]),
                      ("url", quote(self.value, safe="").encode()),
                      ("url+", quote_plus(self.value).encode()), ("json", json.dumps(self.value)[1:-1].encode()),
                      *_base64_cores(raw)]
        forms: dict[str, bytes] = {}
        for name, needle in candidates:
            if needle not in forms.values():
                forms[name] = needle
        object.__setattr__(self, "forms", forms)


@dataclass(frozen=True)
class Hit:
    artifact: str
    where: str
    secret: str
    form: str
    context: str

    def __str__(self) -> str:
        return f"{self.artifact}: {self.where}: {self.secret} ({self.form}) in ...{self.context}..."


class Scanner:
    """Collects what was scanned (per artifact: how many items, how many bytes) and the hits."""

    def __init__(self, secrets: Iterable[Secret]):
        self.secrets = list(secrets)
        self.scanned: dict[str, list[int]] = {}
        self.hits: list[Hit] = []

    def scan(self, artifact: str, where: str, data: str | bytes | None) -> None:
        if data is None:
            return
        blob = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else bytes(data)
        items = self.scanned.setdefault(artifact, [0, 0])
        items[0] += 1
        items[1] += len(blob)
        lowered = blob.lower()
        for secret in self.secrets:
            found = []
            for form, needle in secret.forms.items():
                exact = form.startswith("base64")  # base64 is case-sensitive; %2f and %2F are the same
                at = (blob if exact else lowered).find(needle if exact else needle.lower())
                if at >= 0:
                    found.append((form, at, len(needle)))
            if found:
                _, at, size = found[0]
                context = re.sub(r"\s+", " ", blob[max(0, at - 80):at + size + 40].decode("utf-8", "replace"))
                self.hits.append(Hit(artifact, where, secret.name, ",".join(f for f, _, _ in found), context))

    def scan_lines(self, artifact: str, where: str, text: str) -> None:
        """A log, line by line (a hit names its line)."""
        for number, line in enumerate(text.splitlines(), 1):
            self.scan(artifact, f"{where}:{number}", line)

    def scan_tree(self, artifact: str, root: Path, *, read_in_child: bool = False) -> None:
        """Every file under ``root``; Parquet also decoded (its pages may be compressed).

        ``read_in_child``: the files are read by a child process, never opened in this one. For a
        tree holding an SQLite database this process has open (AIRFLOW_HOME: the metadata DB and
        its -wal and -shm files): SQLite's locks are POSIX record locks, and closing *any*
        descriptor of a file drops every lock the process holds on that file. Read here, the
        files leave this process's open connections without their locks; the next process that
        closes the database (the ``airflow db migrate`` of another conftest's ``airflow_db``, say)
        then takes itself for the last user, checkpoints and deletes the -wal and -shm under them,
        and this process's later connections fail with "disk I/O error"."""
        files = _read_tree_in_child(Path(root)) if read_in_child else _read_tree(Path(root))
        for name, blob in files:
            path = Path(name)
            self.scan(artifact, name, blob)
            if path.suffix == ".parquet":
                import pyarrow.parquet as pq

                self.scan(artifact, f"{path} (decoded)", json.dumps(pq.read_table(path).to_pylist(), default=str))

    def count(self, artifact: str) -> int:
        return self.scanned.get(artifact, [0, 0])[0]

    def report(self) -> str:
        lines = [f"{'artifact':<34} {'items':>7} {'bytes':>11}  hits"]
        for artifact, (items, size) in self.scanned.items():
            hits = sum(h.artifact == artifact for h in self.hits)
            lines.append(f"{artifact:<34} {items:>7} {size:>11}  {hits}")
        return "\n".join(lines)


def _read_tree(root: Path) -> list[tuple[str, bytes]]:
    """(path, bytes) of every file under ``root``, in path order."""
    return [(str(p), p.read_bytes()) for p in sorted(q for q in root.rglob("*") if q.is_file())]


def _read_tree_in_child(root: Path) -> list[tuple[str, bytes]]:
    """``_read_tree(root)``, done by a child process (see ``Scanner.scan_tree``)."""
    code = ("import pickle, sys\n"
            "from pathlib import Path\n"
            "root = Path(sys.argv[1])\n"
            "files = [(str(p), p.read_bytes()) for p in sorted(q for q in root.rglob('*') if q.is_file())]\n"
            "pickle.dump(files, sys.stdout.buffer)\n")
    child = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, check=True, timeout=300)
    return pickle.loads(child.stdout)
