"""Quarantine shards: dropped samples written as WebDataset shards for reviewers and
classifier training (``output.quarantine``; duplicates with ``quarantine_duplicates``).

Layout: ``quarantine/<reason>/shard-<source>-<n>.tar``, one series per reason and input
source (source = its position in the sorted input list), samples in input order,
``output.samples_per_shard`` to a shard. The bytes are written by the kept shards'
writer (:class:`mitigate.output.ShardWriter`: fixed tar metadata, sorted JSON), so
they are deterministic; each shard is written under a temporary name and renamed.
Each ``KEY.json`` holds the sample's manifest row under ``mitigate.manifest`` (state,
reason, detail, filter, threshold, duplicate_of, scores, ...). Nothing here imports Beam.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mitigate.output import manifest_row
from mitigate.records import DUPLICATE, FILTERED, SampleRecord

FOLDER = "quarantine"


def wanted(record: SampleRecord, filtered: bool, duplicates: bool) -> bool:
    """Whether ``record`` goes to quarantine (errors never do: their bytes are what
    could not be read or decoded)."""
    return (filtered and record.state == FILTERED) or (duplicates and record.state == DUPLICATE)


def shard_path(reason: str, source_ordinal: int, number: int, block: int = 0) -> str:
    """Relative to the output folder; reason codes are snake_case, safe as names. A
    source's block after its first (``output.samples_per_manifest_part`` samples each)
    is ``shard-NNNNNN_BBBBBB-nnnnnn.tar``: names sort in input order."""
    part = f"{source_ordinal:06d}" + (f"_{block:06d}" if block else "")
    return f"{FOLDER}/{reason}/shard-{part}-{number:06d}.tar"


def manifest_extra(record: SampleRecord, filter_ids: Sequence[str]) -> dict[str, Any]:
    """The record's manifest row, JSON-safe (binary fields as hex)."""
    row = manifest_row(record, filter_ids)
    return {
        "manifest": {k: (v.hex() if isinstance(v, bytes) else v) for k, v in sorted(row.items())}
    }


def chunks(records: Sequence[SampleRecord], per_shard: int) -> list[list[SampleRecord]]:
    """Records in input order, cut into shards of ``per_shard``."""
    ordered = sorted(records, key=lambda r: (r.index, r.key))
    return [ordered[i : i + per_shard] for i in range(0, len(ordered), per_shard)]
