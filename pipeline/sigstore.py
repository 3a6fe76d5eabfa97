"""Verification signatures kept in files beside the run, not in Beam's collections.

The local runner (Beam's FnApiRunner) holds every collection of a stage in its one
process, encoded and decoded, several times over; a record's 2,315-byte signature was
three quarters of what it held a sample (the Beam worker's peak RSS grew 27 KB a sample,
6.9 KB without signatures: BENCHMARKS.md, "Signatures in files on the local runner").
With ``runner.spill_signatures`` (``auto``: on the local runner whose near-dup search
runs in one worker), the step that makes a record's signature writes it here and sends
the record on without it; the three readers take them back:

* the one-worker near-dup decision: its items carry a 16-byte :func:`ref` and
  :func:`fill` reads the signatures of exactly those items (:mod:`mitigate.pipeline.near`);
* the manifest writer and the quarantine writer, a source's block of indices at a time
  (:func:`read_source`: only the files whose indices meet the block are read).

Layout: ``<store>/<source id>/<first index>-<last index>-<count>-<crc>.sig``, the source
id 16 hex
digits of the source path's SHA-1, the CRC-32 of the file's indices (so two different
sets of samples never share a name), one file per decoded chunk and source, written
whole (:func:`mitigate.pipeline.fs.atomic_write`). A retried chunk writes the same file
again; should a retry group samples otherwise, an index may be in two files, with the
same bytes (a signature is a function of the image). A file holds entries ``(index: u64,
length: u32, signature)``; a signature may be empty (``b""``: a sample decoded without
one) and is then stored as empty, while a sample with no signature (``None``) has no
entry. Every reader runs after a GroupByKey that follows the writes (the decision after
its items' gathering, the writers after the group by source), so the files are complete.
The store is a folder of the run's staging folder, deleted before the run's output is
swapped in (:func:`mitigate.pipeline.run._staged`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import struct
import zlib
from collections.abc import Iterable, Sequence

from mitigate.config import Config
from mitigate.layout import Layout
from mitigate.near import HashItem
from mitigate.pipeline import fs
from mitigate.records import SampleRecord

MAGIC = b"MSIG1\n"
_ENTRY = struct.Struct("<QI")
_REF = struct.Struct("<8sQ")


def location(config: Config) -> str | None:
    """The run's store where ``runner.spill_signatures`` is in force, else None."""
    return Layout(config.output.path).signature_store if config.spills_signatures() else None


def source_id(source: str) -> bytes:
    """Eight bytes naming ``source`` in the store (its folder: their hex)."""
    return hashlib.sha1(source.encode("utf-8", "surrogateescape")).digest()[:8]


def ref(record: SampleRecord) -> bytes:
    """The 16 bytes an item carries for its record's signature: source id and index."""
    return _REF.pack(source_id(record.source), record.index)


def _folder(store: str, sid: bytes) -> str:
    return fs.join(store, sid.hex())


def spill(store: str, records: Sequence[SampleRecord]) -> list[SampleRecord]:
    """Write the signatures of ``records`` (one file per source among them); the
    records back without them (copies where they had one)."""
    by_source: dict[str, list[SampleRecord]] = {}
    for record in records:
        if record.signature is not None:
            by_source.setdefault(record.source, []).append(record)
    for source, group in by_source.items():
        group.sort(key=lambda r: r.index)
        crc = zlib.crc32(b"".join(r.index.to_bytes(8, "little") for r in group))
        name = f"{group[0].index:012d}-{group[-1].index:012d}-{len(group)}-{crc:08x}.sig"
        parts = [MAGIC]
        for record in group:
            sig = record.signature
            assert sig is not None
            parts += (_ENTRY.pack(record.index, len(sig)), sig)
        with fs.atomic_write(fs.join(_folder(store, source_id(source)), name)) as f:
            f.write(b"".join(parts))
    return [r if r.signature is None else dataclasses.replace(r, signature=None) for r in records]


def _entries(path: str) -> Iterable[tuple[int, bytes]]:
    data = fs.read_bytes(path)
    if not data.startswith(MAGIC):
        raise ValueError(f"not a signature file of this version: {path}")
    pos = len(MAGIC)
    while pos < len(data):
        if pos + _ENTRY.size > len(data):
            raise ValueError(f"signature file cut short at byte {pos}: {path}")
        index, length = _ENTRY.unpack_from(data, pos)
        pos += _ENTRY.size
        if pos + length > len(data):
            raise ValueError(f"signature file cut short at byte {pos}: {path}")
        yield index, data[pos : pos + length]
        pos += length


def _span(path: str) -> tuple[int, int]:
    """The first and last index a store file holds, from its name."""
    first, last = path.rsplit("/", 1)[-1].rsplit(os.sep, 1)[-1].split("-")[:2]
    return int(first), int(last)


def _files(store: str, sid: bytes, start: int = 0, stop: int | None = None) -> list[str]:
    """The store files of source ``sid`` holding an index in ``start`` .. ``stop - 1``."""
    paths = next(iter(fs.match([fs.join(_folder(store, sid), "*.sig")]).values()))
    out = []
    for path in paths:
        first, last = _span(path)
        if last >= start and (stop is None or first < stop):
            out.append(path)
    return out


def read_source(
    store: str, source: str, start: int = 0, stop: int | None = None
) -> dict[int, bytes]:
    """The stored signatures of ``source`` by sample index: every one, or those of
    indices ``start`` .. ``stop - 1`` (a manifest part's block; only the files whose
    indices meet it are read)."""
    out: dict[int, bytes] = {}
    for path in _files(store, source_id(source), start, stop):
        for index, sig in _entries(path):
            if index >= start and (stop is None or index < stop):
                out[index] = sig
    return out


def read_block(store: str, source: str, block: int, per_part: int) -> dict[int, bytes]:
    """The stored signatures of manifest block ``block`` of ``source`` (its indices
    ``block * per_part`` .. ``(block + 1) * per_part - 1``)."""
    first = block * per_part
    return read_source(store, source, first, first + per_part)


def read_refs(store: str, refs: Iterable[bytes]) -> dict[bytes, bytes]:
    """The stored signature of each of ``refs`` that has one (read source by source,
    keeping only the signatures asked for)."""
    wanted: dict[bytes, set[int]] = {}
    for r in refs:
        sid, index = _REF.unpack(r)
        wanted.setdefault(sid, set()).add(index)
    out: dict[bytes, bytes] = {}
    for sid, indices in wanted.items():
        for path in _files(store, sid, min(indices), max(indices) + 1):
            for index, sig in _entries(path):
                if index in indices:
                    out[_REF.pack(sid, index)] = sig
    return out


def fill(store: str, items: Sequence[HashItem]) -> list[HashItem]:
    """``items`` with the signature of each :func:`ref` read back (None where the store
    has none), refs dropped; items without a ref as they are."""
    sigs = read_refs(store, [it.ref for it in items if it.ref is not None])
    return [
        it if it.ref is None else dataclasses.replace(it, signature=sigs.get(it.ref), ref=None)
        for it in items
    ]
