"""Staged Parquet part files for one DAG run: raw/ -> mapped/ (+ archived/, rejected/).

Data moves between tasks through these files, never through XCom. On a Celery/Kubernetes
deployment ``CONDUIT_STAGING_DIR`` must be a volume every worker shares.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

KINDS = ("raw", "archived", "mapped", "mapped_archived", "rejected")
VERSIONS = ".versions"  # each writer's own folder; a kind or partition is a link to the one published

# Arrow's allocator, chosen when pyarrow first allocates: the system one, not mimalloc, which keeps
# freed blocks for reuse (four extract threads writing parts: ~60 MiB of peak RSS holding
# nothing; reading a million staged rows: ~25 MiB). Set here, at the DAG file's import, because
# pa.set_memory_pool() (_use_system_allocator) does not reach the Parquet reader's allocations.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")


def staging_root() -> Path:
    configured = os.environ.get("CONDUIT_STAGING_DIR")
    if configured:
        return Path(configured)
    return Path(os.environ.get("AIRFLOW_HOME", Path.home() / "airflow")) / "conduit" / "staging"


RETENTION_ENV = "CONDUIT_STAGING_RETENTION_DAYS"
DEFAULT_RETENTION_DAYS = 7.0


def staging_retention_s() -> float | None:
    """How long a run's staged files (CRM records, personal data) may outlive its last write:
    ``CONDUIT_STAGING_RETENTION_DAYS`` (default 7; 0 keeps them for ever). Reconcile removes a
    run's files once it has checked the load; these are the runs that never got there (failed,
    plan only, rejected)."""
    value = os.environ.get(RETENTION_ENV, str(DEFAULT_RETENTION_DAYS))
    try:
        days = float(value)
    except ValueError:
        raise ValueError(f"{RETENTION_ENV} must be a number of days, got {value!r}") from None
    return days * 86_400 if days > 0 else None


def last_written(root: Path) -> float:
    """When anything was last written into a run's folder: a part lands in a writer's folder under
    .versions/, a publish replaces a link in the run's folder, and either moves that folder's mtime."""
    versions = root / VERSIONS
    paths = [root, *root.iterdir(), *(versions.iterdir() if versions.is_dir() else ())]
    return max(p.lstat().st_mtime for p in paths)


def sweep_stale_runs(dag_dir: Path, *, keep: str, older_than_s: float, now: float) -> list[str]:
    """Remove the staged files of the DAG's runs (other than ``keep``) not written to for
    ``older_than_s``; returns their folder names. A later clear of such a run reads the CRM anew
    from plan_extract (a plan or load alone says the files are gone)."""
    removed = []
    for run in sorted(dag_dir.iterdir()) if dag_dir.is_dir() else ():
        if run.name == keep or not run.is_dir() or run.is_symlink():
            continue
        if now - last_written(run) > older_than_s:
            RunStaging(run).remove()
            removed.append(run.name)
    return removed


def staging_host() -> str:
    """The host in the staged files' lineage names (``file://<host>/<path>``). Every worker must
    name the same files alike, or lineage shows one dataset per worker: ``CONDUIT_STAGING_HOST``
    when set; else, with ``CONDUIT_STAGING_DIR`` set (the volume every worker shares), the logical
    host ``conduit-staging``; else (one machine's own folder) this machine's name."""
    import socket

    configured = os.environ.get("CONDUIT_STAGING_HOST")
    if configured:
        return configured
    return "conduit-staging" if os.environ.get("CONDUIT_STAGING_DIR") else socket.gethostname()


def data_docs_root() -> Path:
    configured = os.environ.get("CONDUIT_DATA_DOCS_DIR")
    if configured:
        return Path(configured)
    return staging_root().parent / "data_docs"


def _safe(part: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", part)


class RunStaging:
    def __init__(self, root: Path):
        self.root = Path(root)

    @classmethod
    def for_run(cls, dag_id: str, run_id: str, base: Path | None = None) -> RunStaging:
        return cls((base or staging_root()) / _safe(dag_id) / _safe(run_id))

    def dir(self, kind: str, partition: str | None = None) -> Path:
        if kind not in KINDS:
            raise ValueError(f"unknown staging kind {kind!r}")
        return self.root / kind / partition if partition else self.root / kind

    def reset(self, kind: str, partition: str | None = None) -> Path:
        """Empty a kind (or one partition of it) before a task plans what to write into it, so a
        retried task never sees an earlier try's parts."""
        path = self.dir(kind, partition)
        _remove(path)
        if partition is None:  # the kind's partitions, published or abandoned by killed tries
            for version in self.root.joinpath(VERSIONS).glob(f"{kind}.*"):
                version.unlink() if version.is_symlink() else shutil.rmtree(version, ignore_errors=True)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def parts(self, kind: str) -> list[Path]:
        """The kind's part files: its own and one level of partitions (published as links)."""
        base = self.dir(kind)
        if not base.is_dir():
            return []
        found = list(base.glob("part-*.parquet"))
        for partition in base.iterdir():
            if partition.is_dir():
                found.extend(partition.glob("part-*.parquet"))
        return sorted(found)

    def writer(self, kind: str, partition: str | None = None) -> PartWriter:
        """A writer for a whole kind or one partition, used as a context manager: its parts are
        written to a folder of its own and replace what the kind (or partition) held in one step
        when the block ends without an error. Two tries of one task that overlap (a worker presumed
        lost and its replacement) never mix their parts: the partition is one try's whole read."""
        final = self.dir(kind, partition)
        own = self.root / VERSIONS / f"{kind}.{_safe(partition or '_')}.{os.getpid()}.{uuid.uuid4().hex[:12]}"
        own.mkdir(parents=True)
        return PartWriter(own, publish_to=final)

    def read_frames(self, kind: str, columns: list[str] | None = None, *, min_rows: int = 0,
                    drop: Mapping[Path, np.ndarray] | None = None) -> Iterator[pd.DataFrame]:
        """The parts in order, one frame each; with ``min_rows``, consecutive parts are joined
        until a frame holds at least that many rows (small parts, fewer and larger batches).
        ``drop`` names rows to leave out: row numbers per part path."""
        _use_system_allocator()
        pending: list[pa.Table] = []
        rows = 0
        for path in self.parts(kind):
            pending.append(_without_rows(read_part(path, columns), (drop or {}).get(path)))
            rows += pending[-1].num_rows
            if rows >= min_rows:
                yield _joined(pending)
                pending, rows = [], 0
        if pending:
            yield _joined(pending)

    def count(self, kind: str) -> int:
        import pyarrow.parquet as pq

        return sum(pq.ParquetFile(p).metadata.num_rows for p in self.parts(kind))

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _remove(path: Path) -> None:
    """A published kind or partition (a link: the link and the folder it names) or a plain folder."""
    if path.is_symlink():
        target = path.parent / path.readlink()
        path.unlink(missing_ok=True)
        shutil.rmtree(target, ignore_errors=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def read_part(path: Path, columns: list[str] | None = None) -> pa.Table:
    """One part file. ``ParquetFile`` rather than ``pq.read_table``: that goes through
    ``pyarrow.dataset``, whose import also imports pandas (~50 MiB of a task process's RSS, in
    tasks that would not need pandas otherwise). One thread: a part is small, and every thread
    that allocates gets a malloc arena of its own (~20-30 MiB more peak RSS over a million rows,
    for no measurable speed)."""
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as part:
        return part.read(columns=columns, use_threads=False)


def _without_rows(table: pa.Table, rows: np.ndarray | None) -> pa.Table:
    if rows is None or not len(rows):
        return table
    import numpy as np

    keep = np.ones(table.num_rows, dtype=bool)
    keep[rows] = False
    return table.filter(keep)


def _joined(tables: list[pa.Table]) -> pd.DataFrame:
    import pyarrow as pa

    # one chunk per column, as a single part reads: pandas' Arrow-backed columns keep the chunks
    joined = tables[0] if len(tables) == 1 else pa.concat_tables(tables).combine_chunks()
    return joined.to_pandas(use_threads=False)  # one thread: see read_part


class PartWriter:
    """Writes numbered part files; a part is written to a temp name and renamed, so a killed task
    never leaves a truncated part behind. With ``publish_to`` (:meth:`RunStaging.writer`), the parts
    go to a folder of the writer's own, linked in as ``publish_to`` when a ``with`` block ends
    without an error and discarded when it raises."""

    def __init__(self, directory: Path, *, publish_to: Path | None = None):
        self.directory = directory
        self.publish_to = publish_to
        self.parts = 0
        self.rows = 0
        _use_system_allocator()

    def __enter__(self) -> PartWriter:
        return self

    def __exit__(self, error_type, error, traceback) -> None:
        if self.publish_to is None:
            return
        if error_type is None:
            self.publish()
        else:
            shutil.rmtree(self.directory, ignore_errors=True)

    def publish(self) -> None:
        """Replace ``publish_to`` with a link to this writer's folder. ``rename`` of a link is atomic:
        a reader sees the earlier parts or these, never a mix and never none; of two writers that
        overlap, the last to publish wins with its whole output."""
        final = self.publish_to
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.is_dir() and not final.is_symlink():  # emptied by reset, or written before links
            shutil.rmtree(final, ignore_errors=True)
        earlier = final.readlink() if final.is_symlink() else None
        link = self.directory.with_name(self.directory.name + ".link")
        link.symlink_to(os.path.relpath(self.directory, final.parent))
        os.replace(link, final)
        if earlier is not None and (final.parent / earlier).resolve() != self.directory.resolve():
            shutil.rmtree(final.parent / earlier, ignore_errors=True)

    def write(self, table: pa.Table) -> Path | None:
        import pyarrow.parquet as pq

        if table.num_rows == 0:
            return None
        path = self.directory / f"part-{self.parts:05d}.parquet"
        # unique per writer: two tries of one task (a worker lost, then retried) may overlap
        tmp = path.with_suffix(f".{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        # Staged parts live for one run and are read 3-4 times: lz4 without dictionary pages
        # writes ~45% and reads ~25% faster than zstd, for files ~1.7x as large.
        pq.write_table(table, tmp, compression="lz4", use_dictionary=False)
        os.replace(tmp, path)
        self.parts += 1
        self.rows += table.num_rows
        return path


def _use_system_allocator() -> None:
    """Arrow's default allocator (mimalloc) keeps freed blocks for reuse: with four extract threads
    writing parts that is ~60 MiB of peak RSS holding nothing. The system allocator returns them.
    Process-wide; a task process stages and exits. (Where pyarrow started before this module set
    ``ARROW_DEFAULT_MEMORY_POOL``: this reaches pyarrow's own allocations, not the Parquet reader's.)"""
    import pyarrow as pa

    if pa.default_memory_pool().backend_name != "system":
        pa.set_memory_pool(pa.system_memory_pool())
