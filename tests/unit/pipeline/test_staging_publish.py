"""Staged partitions are published whole: overlapping tries of one task never mix their parts."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pyarrow as pa
import pytest

from conduit.pipeline.staging import VERSIONS, RunStaging, read_part


def ids(staging: RunStaging, kind: str = "raw") -> list[list[str]]:
    return [read_part(p, ["id"]).column("id").to_pylist() for p in staging.parts(kind)]


def write(staging: RunStaging, tag: str, parts: int, partition: str | None = "changed") -> None:
    with staging.writer("raw", partition) as writer:
        for n in range(parts):
            writer.write(pa.table({"id": [f"{tag}-{n}"]}))


def test_the_last_writer_to_publish_replaces_the_partition_whole(tmp_path):
    staging = RunStaging(tmp_path)
    first, second = staging.writer("raw", "changed"), staging.writer("raw", "changed")
    for n in range(3):  # interleaved, as two tries of one task overlapping
        first.write(pa.table({"id": [f"a-{n}"]}))
        second.write(pa.table({"id": [f"b-{n}"]}))
    first.write(pa.table({"id": ["a-3"]}))
    second.publish()
    assert ids(staging) == [["b-0"], ["b-1"], ["b-2"]]
    first.publish()
    assert ids(staging) == [["a-0"], ["a-1"], ["a-2"], ["a-3"]]
    # the replaced try's folder is gone; what is left is the published one
    assert [p.name for p in (tmp_path / VERSIONS).iterdir()] == [first.directory.name]


def test_a_writer_that_fails_publishes_nothing_and_leaves_the_earlier_parts(tmp_path):
    staging = RunStaging(tmp_path)
    write(staging, "earlier", 2)
    with pytest.raises(RuntimeError), staging.writer("raw", "changed") as writer:
        writer.write(pa.table({"id": ["half"]}))
        raise RuntimeError("the CRM went away")
    assert ids(staging) == [["earlier-0"], ["earlier-1"]]
    assert not writer.directory.exists()


def test_an_empty_writer_empties_the_partition_and_partitions_read_in_order(tmp_path):
    staging = RunStaging(tmp_path)
    write(staging, "old", 2)
    write(staging, "new", 0)
    write(staging, "ids", 1, partition="ids")
    assert (tmp_path / "raw" / "changed").is_dir() and staging.parts("raw")[0].parent.name == "ids"
    assert ids(staging) == [["ids-0"]]


def test_reset_of_a_kind_removes_its_partitions_and_abandoned_folders(tmp_path):
    staging = RunStaging(tmp_path)
    write(staging, "a", 2)
    abandoned = staging.writer("raw", "range-0")  # a killed try: never published
    abandoned.write(pa.table({"id": ["x"]}))
    with staging.writer("mapped") as writer:
        writer.write(pa.table({"id": ["m"]}))
    staging.reset("raw")
    assert staging.parts("raw") == [] and (tmp_path / "raw").is_dir()
    assert [p.name.split(".")[0] for p in (tmp_path / VERSIONS).iterdir()] == ["mapped"]
    assert ids(staging, "mapped") == [["m"]]


def test_a_plain_folder_from_reset_is_replaced_by_the_publish(tmp_path):
    staging = RunStaging(tmp_path)
    staging.reset("rejected")
    (tmp_path / "rejected" / "part-00000.parquet").write_bytes(b"left by an older layout")
    with staging.writer("rejected") as writer:
        writer.write(pa.table({"id": ["k"]}))
    assert ids(staging, "rejected") == [["k"]]


def _race(root: str, tag: str, start) -> None:
    start.wait()
    for round_ in range(15):
        write(RunStaging(root), f"{tag}{round_}", 3)


def test_processes_writing_one_partition_at_once_all_succeed_and_one_read_wins(tmp_path):
    """The CI failure of stop 25: two workers resetting one partition at once (rmtree, mkdir) made
    one of them fail with FileExistsError. Each writer now has its own folder."""
    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(6)
    workers = [ctx.Process(target=_race, args=(str(tmp_path), tag, start)) for tag in "abcdef"]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert [w.exitcode for w in workers] == [0] * 6
    staged = [i for (i,) in ids(RunStaging(tmp_path))]
    tag = staged[0].split("-")[0]
    assert staged == [f"{tag}-0", f"{tag}-1", f"{tag}-2"]  # one writer's whole output
    # a writer whose publish lost the race may leave its folder (removed with the run's staging)
    assert Path(os.readlink(tmp_path / "raw" / "changed")).name in os.listdir(tmp_path / VERSIONS)
