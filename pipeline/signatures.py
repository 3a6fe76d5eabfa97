"""Verification signatures travel beside the records, not inside them (on runners
where ``runner.spill_signatures`` is off; on the local runner they wait in files
instead: :mod:`mitigate.pipeline.sigstore`).

A record's signature (``mitigate.verify``, 2,315 bytes) is three quarters of its
encoded size, and only two steps read it: the near-dup search (its ``HashItem``) and
the manifest writer (and the quarantine writer, whose sidecars carry the manifest
row). The stages after exact dedup (the near-dup join, rebalancing, the group by
source) only moved it, and the local runner holds each stage's whole input and output
in memory (BENCHMARKS.md, "Beam worker memory per sample (issue 14, stream 14m)").

So after exact dedup (``pipeline/build.py``), :func:`signature_of` takes each record's
signature into a collection of ``(record.order, signature)`` pairs, and the records go
on :func:`without_signature`; the near-dup items are made from the full records in the
same fused stage (no join). The other readers get it back: the manifest writer from
:class:`SourceSignature` elements grouped with the records of its source
(:func:`by_source`, :func:`attach`), the quarantine writer by :class:`WithSignatures`,
a join on ``record.order``. A signature
never changes after the decode, and ``record.order`` (source, index) names one input
occurrence, so every record gets back exactly the signature it had.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import apache_beam as beam

from mitigate.records import SampleRecord

Order = tuple[str, int]  # SampleRecord.order: (source, index)


class SourceSignature(NamedTuple):
    """A signature in the group of its source's records (for the manifest part)."""

    index: int
    signature: bytes


def without_signature(record: SampleRecord) -> SampleRecord:
    """``record`` without its signature (a copy; inputs are never mutated)."""
    if record.signature is None:
        return record
    return dataclasses.replace(record, signature=None)


def signature_of(record: SampleRecord) -> list[tuple[Order, bytes]]:
    """``[(record.order, signature)]``, or nothing for a record without one."""
    return [] if record.signature is None else [(record.order, record.signature)]


def attach(records: Iterable[SampleRecord], signatures: dict[int, bytes]) -> list[SampleRecord]:
    """Records of one source with the signature of their index put back, where one
    exists (copies; a record that has one already keeps it)."""
    out = []
    for record in records:
        sig = signatures.get(record.index)
        if sig is not None and record.signature is None:
            record = dataclasses.replace(record, signature=sig)
        out.append(record)
    return out


def by_source(
    signatures: beam.PCollection, ordinals: dict[str, int], per_part: int, label: str
) -> beam.PCollection:
    """``((source ordinal, block), SourceSignature)`` elements, to group with the
    records of their manifest part (``index // per_part`` is the block)."""
    return signatures | label >> beam.Map(
        lambda kv, ordinals: (
            (ordinals[kv[0][0]], kv[0][1] // per_part),
            SourceSignature(kv[0][1], kv[1]),
        ),
        ordinals=ordinals,
    )


def _rejoin(element: tuple[Order, dict[str, list[Any]]]) -> Iterator[SampleRecord]:
    _, grouped = element
    sigs = grouped["signature"]
    for record in grouped["record"]:
        if sigs and record.signature is None:
            record = dataclasses.replace(record, signature=sigs[0])
        yield record


class WithSignatures(beam.PTransform):
    """Records in, the same records with their signatures back (a join on
    ``record.order``; signatures of records not in the input are dropped)."""

    def __init__(self, signatures: beam.PCollection) -> None:
        super().__init__()
        self.signatures = signatures

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        keyed = records | "ByOrder" >> beam.Map(lambda r: (r.order, r))
        return (
            {"record": keyed, "signature": self.signatures}
            | "Join" >> beam.CoGroupByKey()
            | "Attach" >> beam.FlatMap(_rejoin)
        )
