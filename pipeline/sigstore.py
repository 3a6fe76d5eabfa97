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

The stored embeddings of a filter (``store_embeddings``) wait here too, under
``<store>/emb-<filter id>/`` in the same layout, written by the ``Decide`` step after
the models and read back by rebalancing and the manifest writer (:func:`with_embeddings`).

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

import numpy as np

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


def _folder(store: str, sid: bytes, kind: str = "") -> str:
    return fs.join(store, kind, sid.hex()) if kind else fs.join(store, sid.hex())


def embedding_kind(filter_id: str) -> str:
    """The store's kind (a folder) of filter ``filter_id``'s stored embeddings."""
    return f"emb-{filter_id}"


def spill(
    store: str, records: Sequence[SampleRecord], embeddings: bool = False
) -> list[SampleRecord]:
    """Write the signatures of ``records`` (one file per source among them) and, with
    ``embeddings``, their stored embeddings (float16 bytes, a kind a filter); the
    records back without them (copies where they had any)."""
    entries: dict[tuple[str, str], list[tuple[int, bytes]]] = {}
    for record in records:
        if record.signature is not None:
            entries.setdefault(("", record.source), []).append((record.index, record.signature))
        if embeddings:
            for fid, vector in record.embeddings.items():
                data = np.asarray(vector, dtype=np.float16).tobytes()
                entries.setdefault((embedding_kind(fid), record.source), []).append(
                    (record.index, data)
                )
    for (kind, source), group in entries.items():
        group.sort(key=lambda e: e[0])
        crc = zlib.crc32(b"".join(i.to_bytes(8, "little") for i, _ in group))
        name = f"{group[0][0]:012d}-{group[-1][0]:012d}-{len(group)}-{crc:08x}.sig"
        parts = [MAGIC]
        for index, data in group:
            parts += (_ENTRY.pack(index, len(data)), data)
        with fs.atomic_write(fs.join(_folder(store, source_id(source), kind), name)) as f:
            f.write(b"".join(parts))
    return [
        r
        if r.signature is None and not (embeddings and r.embeddings)
        else dataclasses.replace(r, signature=None, embeddings={} if embeddings else r.embeddings)
        for r in records
    ]


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


def _files(
    store: str, sid: bytes, start: int = 0, stop: int | None = None, kind: str = ""
) -> list[str]:
    """The store files of source ``sid`` holding an index in ``start`` .. ``stop - 1``."""
    paths = fs.files_in(_folder(store, sid, kind), "*.sig")
    out = []
    for path in paths:
        first, last = _span(path)
        if last >= start and (stop is None or first < stop):
            out.append(path)
    return out


def read_source(
    store: str, source: str, start: int = 0, stop: int | None = None, kind: str = ""
) -> dict[int, bytes]:
    """The stored signatures (or entries of ``kind``) of ``source`` by sample index:
    every one, or those of indices ``start`` .. ``stop - 1`` (a manifest part's block;
    only the files whose indices meet it are read)."""
    out: dict[int, bytes] = {}
    for path in _files(store, source_id(source), start, stop, kind):
        for index, sig in _entries(path):
            if index >= start and (stop is None or index < stop):
                out[index] = sig
    return out


def read_block(
    store: str, source: str, block: int, per_part: int, kind: str = ""
) -> dict[int, bytes]:
    """The stored signatures (or entries of ``kind``) of manifest block ``block`` of
    ``source`` (its indices ``block * per_part`` .. ``(block + 1) * per_part - 1``)."""
    first = block * per_part
    return read_source(store, source, first, first + per_part, kind)


def vectors(entries: dict[int, bytes]) -> dict[int, np.ndarray]:
    """Stored embeddings' bytes as their float16 vectors."""
    return {i: np.frombuffer(b, dtype=np.float16) for i, b in entries.items()}


def with_embeddings(
    store: str, records: Sequence[SampleRecord], filter_ids: Sequence[str], block: int, per: int
) -> list[SampleRecord]:
    """Records of one source and manifest block with their stored embeddings put back
    (copies; an embedding a record carries stays)."""
    if not records or not filter_ids:
        return list(records)
    source = records[0].source
    found = {
        fid: vectors(read_block(store, source, block, per, embedding_kind(fid)))
        for fid in filter_ids
    }
    out = []
    for r in records:
        extra = {f: v[r.index] for f, v in found.items() if r.index in v and f not in r.embeddings}
        out.append(dataclasses.replace(r, embeddings={**r.embeddings, **extra}) if extra else r)
    return out


def read_refs(store: str, refs: Iterable[bytes], kind: str = "") -> dict[bytes, bytes]:
    """The stored signature (or entry of ``kind``) of each of ``refs`` that has one
    (read source by source, keeping only those asked for)."""
    wanted: dict[bytes, set[int]] = {}
    for r in refs:
        sid, index = _REF.unpack(r)
        wanted.setdefault(sid, set()).add(index)
    out: dict[bytes, bytes] = {}
    for sid, indices in wanted.items():
        for path in _files(store, sid, min(indices), max(indices) + 1, kind):
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
