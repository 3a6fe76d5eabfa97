"""The run folder's layout: every name a run writes, in one place (no Beam here).

::

    OUT/
      shards/shard-NNNNNN.tar               kept samples (WebDataset)
      manifest/part-NNNNNN.parquet          one row per input sample, one part per source
      manifest/part-NNNNNN_BBBBBB.parquet   (and per block of a large source's samples)
      embeddings/<filter id>/part-NNNNNN.npy rows aligned with the manifest part
      quarantine/                           dropped samples, when enabled
      config.yaml  report.html
      summary.json                          written last: it marks a complete run

Paths are strings so that a ``gs://`` (or any URI) root works like a local one; they
are joined as Beam's filesystems join them (``os.path.join`` locally, ``/`` in a URI).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

SHARDS = "shards"
MANIFEST = "manifest"
EMBEDDINGS = "embeddings"
QUARANTINE = "quarantine"
CONFIG = "config.yaml"
REPORT = "report.html"
SUMMARY = "summary.json"
#: Verification signatures while the run lasts (mitigate/pipeline/sigstore.py); deleted
#: before the output is swapped in, so never part of a finished run.
SIGNATURE_STORE = "_signatures"
#: Every top-level entry a run may write except the summary (which is written last).
OUTPUT_NAMES = (SHARDS, MANIFEST, EMBEDDINGS, QUARANTINE, CONFIG, REPORT)
#: Manifest part file names (``part-000000.parquet`` ...).
MANIFEST_PATTERN = "part-*.parquet"


def part_name(ordinal: int, block: int = 0) -> str:
    """``part-NNNNNN`` for an input file's first block (every part of a file under
    ``output.samples_per_manifest_part`` samples), ``part-NNNNNN_BBBBBB`` for its next
    ones: ``.`` sorts before ``_`` and ``_`` after the digits, so names sort as
    (file, block), the input order."""
    return f"part-{ordinal:06d}" + (f"_{block:06d}" if block else "")


def join(base: str, *parts: str) -> str:
    """Join like Beam's ``FileSystems.join``: ``os.path.join`` for a local path, ``/``
    between the parts of a URI."""
    if "://" not in base:
        return os.path.join(base, *parts)
    out = base
    for part in parts:
        out = out.rstrip("/") + "/" + part
    return out


@dataclass(frozen=True)
class Layout:
    """Where a run writes, relative to ``output.path`` (``root``)."""

    root: str

    @property
    def shards(self) -> str:
        return join(self.root, SHARDS)

    @property
    def manifest(self) -> str:
        return join(self.root, MANIFEST)

    @property
    def signature_store(self) -> str:
        return join(self.root, SIGNATURE_STORE)

    @property
    def summary(self) -> str:
        return join(self.root, SUMMARY)

    @property
    def config(self) -> str:
        return join(self.root, CONFIG)

    @property
    def report(self) -> str:
        return join(self.root, REPORT)

    def shard(self, shard_id: int) -> str:
        return join(self.shards, f"shard-{shard_id:06d}.tar")

    def manifest_part(self, ordinal: int, block: int = 0) -> str:
        """Block ``block`` of input file ``ordinal`` (``output.samples_per_manifest_part``
        rows each); names sort in input order."""
        return join(self.manifest, f"{part_name(ordinal, block)}.parquet")

    @property
    def manifest_parts(self) -> str:
        """Glob pattern of every manifest part."""
        return join(self.manifest, MANIFEST_PATTERN)

    @property
    def embeddings(self) -> str:
        return join(self.root, EMBEDDINGS)

    def embeddings_part(self, filter_id: str, ordinal: int, block: int = 0) -> str:
        """Rows align with the manifest part of the same name."""
        return join(self.embeddings, filter_id, f"{part_name(ordinal, block)}.npy")

    def embeddings_beside(self, filter_id: str, manifest_part: str) -> str:
        """The embeddings file whose rows align with the manifest part at this path."""
        name = manifest_part.rsplit("/", 1)[-1].replace(".parquet", ".npy")
        return join(self.embeddings, filter_id, name)
