"""A CRM record read by more than one work item of a run is staged once: its newest version.

A run's work items overlap by design: the incremental window and the records webhooks named by
id (a change older than the lag is in both), or the archived listing and a read of a record that
was archived and restored in between. The transform maps each CRM record once, so the quality
gate's key uniqueness keeps meaning "two different CRM records map to one ERP key", and the run's
counts count a record once.

Which read wins: the greatest modification time (the cursor property; unparseable or missing
counts as oldest), then the work item that comes later in :data:`ITEM_PRECEDENCE`, then the later
staged row. A read by id ran after the window's search (its records may be newer than the window's
upper bound); the archived listing comes last because archiving does not always move the
modification time, so an equal time means the record was archived after it was read live.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    from conduit.pipeline.staging import RunStaging

ITEM_PRECEDENCE = ("all", "range", "changed", "ids", "archived")
READ_COLUMNS = ("id", "modified", "precedence", "part", "row")


def item_precedence(partition: str) -> int:
    """The rank of a work item's staged partition (``changed``, ``ids``, ``range-<lo>``, ...)."""
    kind = partition.split("-", 1)[0]
    if kind not in ITEM_PRECEDENCE:
        raise ValueError(f"unknown extract work item {partition!r}")
    return ITEM_PRECEDENCE.index(kind)


def superseded(reads: pd.DataFrame) -> pd.DataFrame:
    """The reads that lose to another read of the same record id. ``reads`` has one row per staged
    read with :data:`READ_COLUMNS` (``modified`` a UTC timestamp, NaT when unknown); the answer
    holds the losers' ``part`` and ``row``."""
    ordered = reads.sort_values(["modified", "precedence", "part", "row"], kind="stable", na_position="first")
    return ordered.loc[ordered.duplicated("id", keep="last"), ["part", "row"]]


def repeated_hashes(hashes: Iterable[np.ndarray]) -> np.ndarray:
    """The hash values that occur more than once across all the arrays."""
    import numpy as np

    # sorted in place and compared with the neighbour: np.unique(return_counts=True) would hold
    # four more arrays of every row's size (its copy, the uniques, their indices and counts)
    ordered = np.concatenate([np.empty(0, np.uint64), *hashes])
    ordered.sort()
    return np.unique(ordered[1:][ordered[1:] == ordered[:-1]])


def hash_values(values: pd.Series) -> np.ndarray:
    import pandas as pd

    return pd.util.hash_array(values.to_numpy(dtype=object))


def id_values(ids: pa.ChunkedArray) -> np.ndarray:
    """One uint64 per CRM record id for :func:`repeated_hashes`: the id itself when every id of
    the part is a number (HubSpot's are: a cast, ~6x cheaper than hashing the text), else a hash
    of its text. Equal ids always give equal values; a value two different ids share (``"07"``
    and ``"7"``, or a hash collision) only makes :func:`superseded_reads` compare those ids."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        numbers = pc.cast(ids, pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return hash_values(ids.to_pandas())
    if numbers.null_count:
        return hash_values(ids.to_pandas())
    return numbers.to_numpy().view(np.uint64)


def superseded_reads(staging: RunStaging, modified_property: str) -> dict[Path, np.ndarray]:
    """Per staged raw or archived part, the row numbers :func:`superseded` says to leave out (an
    empty dict when no record was read twice, the usual case). Reads the ``id`` column of every
    part (8 bytes per row are kept), then the modification time of the repeated ids only."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from conduit.pipeline.staging import read_part
    from conduit.transforms.columns import parse_timestamps

    parts = staging.parts("raw") + staging.parts("archived")
    hashes = [id_values(read_part(p, ["id"]).column("id")) for p in parts]
    repeated = repeated_hashes(hashes)
    if not repeated.size:
        return {}
    reads = []
    for number, (path, hashed) in enumerate(zip(parts, hashes, strict=True)):
        rows = np.flatnonzero(np.isin(hashed, repeated))
        if not rows.size:
            continue
        schema = pq.read_schema(path)
        columns = ["id", modified_property] if modified_property in schema.names else ["id"]
        table = read_part(path, columns).take(pa.array(rows))
        modified = (parse_timestamps(table.column(modified_property).combine_chunks()) if len(columns) == 2
                    else pa.nulls(len(rows), pa.timestamp("us", "UTC")))
        reads.append(pd.DataFrame({"id": table.column("id").to_pandas(), "modified": modified.to_pandas(),
                                   "precedence": item_precedence(path.parent.name), "part": number, "row": rows}))
    losers = superseded(pd.concat(reads, ignore_index=True))
    return {parts[number]: np.sort(group["row"].to_numpy()) for number, group in losers.groupby("part")}
