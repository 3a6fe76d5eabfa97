"""Signatures beside the records (pipeline/signatures.py): the records after exact
dedup no longer carry them, and every output that stores one still gets it."""

from __future__ import annotations

import json
from pathlib import Path

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from mitigate import stages
from mitigate.config import load_config
from mitigate.pipeline import build, fs, sigstore
from mitigate.pipeline.near import Gather
from mitigate.pipeline.run import run
from mitigate.pipeline.signatures import (
    WithSignatures,
    attach,
    signature_of,
    without_signature,
)
from mitigate.records import SampleRecord
from mitigate.sources import index_tar

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "configs" / "default.yaml"
# the default config minus the model filter: the same graph, seconds not minutes
NO_MODEL = [
    "filters=[{name: image_quality}, {name: caption_terms, category: violence, "
    "terms_file: terms/violence.txt}]",
    "rebalance.embedding_filter=null",
]


def _record(index: int, signature: bytes | None) -> SampleRecord:
    return SampleRecord(key=f"k{index}", source="s.tar", index=index, signature=signature)


def test_split_and_attach_give_each_record_its_own_signature():
    records = [_record(0, b"a" * 4), _record(1, None), _record(2, b"c" * 4)]
    light = [without_signature(r) for r in records]
    assert [r.signature for r in light] == [None, None, None]
    assert [r.signature for r in records] == [b"a" * 4, None, b"c" * 4]  # inputs untouched
    pairs = [p for r in records for p in signature_of(r)]
    assert pairs == [(("s.tar", 0), b"a" * 4), (("s.tar", 2), b"c" * 4)]
    back = attach(reversed(light), {index: sig for (_, index), sig in pairs})
    assert [(r.index, r.signature) for r in back] == [(2, b"c" * 4), (1, None), (0, b"a" * 4)]


def test_with_signatures_joins_on_the_occurrence_not_the_key():
    # two occurrences of one key (a duplicate-key input) keep their own signatures
    a = SampleRecord(key="k", source="one.tar", index=3, signature=b"1" * 4)
    b = SampleRecord(key="k", source="two.tar", index=3, signature=b"2" * 4)
    unrelated = SampleRecord(key="x", source="one.tar", index=4, signature=b"3" * 4)
    with TestPipeline() as p:
        sigs = p | "Sigs" >> beam.Create(
            [pair for r in (a, b, unrelated) for pair in signature_of(r)]
        )
        out = (
            p
            | "Records" >> beam.Create([without_signature(a), without_signature(b)])
            | WithSignatures(sigs)
            | beam.Map(lambda r: (r.source, r.signature))
        )
        assert_that(out, equal_to([("one.tar", b"1" * 4), ("two.tar", b"2" * 4)]))


def _signatures_by_occurrence(shards: list[str]) -> dict[tuple[str, int], bytes | None]:
    """Every sample's signature, computed here without the pipeline."""
    config, _ = load_config(DEFAULT, NO_MODEL)
    out: dict[tuple[str, int], bytes | None] = {}
    for shard in shards:
        with open(shard, "rb") as f:
            records = [r for r in index_tar(f, shard) if isinstance(r, SampleRecord)]
        payloads = stages.load_payloads(records, fs.open_read, config.decode.max_image_bytes)
        for item in stages.compute_signals(payloads, config.decode):
            out[item.record.order] = item.record.signature
    return out


@pytest.mark.slow
@pytest.mark.parametrize(
    "partition, spill", [("none", "auto"), ("none", "false"), ("clusters", "auto")]
)
def test_records_after_exact_dedup_carry_no_signature_and_outputs_keep_them(
    tmp_path, monkeypatch, partition, spill
):
    """Regression (issue 14, stream 14m): the 2,315-byte signature rode on every record
    through every later stage, three quarters of each record's bytes. The records the
    rebalancing and manifest stages see must not carry it, and the manifest and the
    quarantine sidecars must still hold each sample's own signature. With the signatures
    in files (``runner.spill_signatures``, on by default here with the one-worker
    search) no record carries one after the decode, exact dedup included, and the
    decision's items carry a ref to theirs; the store is gone when the run ends."""
    seen = tmp_path / "seen.jsonl"
    finalize = stages.finalize
    resolve = build.resolve_exact
    filled: list[int] = []

    def spy(where: str, record: SampleRecord) -> None:
        with open(seen, "a") as f:  # a file: the runner may run this in a copy of it
            f.write(json.dumps([where, record.key, record.signature is not None]) + "\n")

    def spying_finalize(record: SampleRecord) -> SampleRecord:
        spy("final", record)
        return finalize(record)

    def spying_resolve(element):
        for record in element[1]:
            spy("exact", record)
        return resolve(element)

    def spying_fill(store, items):
        filled.append((sum(it.ref is not None for it in items), len(items)))
        return fill(store, items)

    fill = sigstore.fill
    monkeypatch.setattr(stages, "finalize", spying_finalize)
    monkeypatch.setattr(build, "resolve_exact", spying_resolve)
    monkeypatch.setattr(sigstore, "fill", spying_fill)
    out = tmp_path / "out"
    config, _ = load_config(
        DEFAULT,
        [
            f"output.path={out}",
            f"dedup.partition={partition}",
            "output.quarantine=true",
            "output.quarantine_duplicates=true",
            f"runner.spill_signatures={spill}",
            *NO_MODEL,
        ],
    )
    spilled = partition == "none" and spill == "auto"
    assert config.spills_signatures() is spilled
    run(config)

    flags = [json.loads(line) for line in seen.read_text().splitlines()]
    rows = pq.read_table(out / "manifest").to_pylist()
    final = [carried for where, _, carried in flags if where == "final"]
    assert len(final) == len(rows) > 0
    assert not any(final)
    exact = [carried for where, _, carried in flags if where == "exact"]
    assert len(exact) == len(rows)
    assert any(exact) is not spilled  # before exact dedup: only where not spilled
    # the decision read its items' signatures from the store (every item had a ref;
    # every kept sample was an item)
    kept = sum(r["state"] == "kept" for r in rows)
    if spilled:
        ((refs, items),) = filled
        assert refs == items >= kept > 0
    else:
        assert filled == []
    assert not list(tmp_path.rglob("_signatures")) and not list(tmp_path.rglob("*.sig"))

    expected = _signatures_by_occurrence(
        sorted(str(p) for p in (REPO / "data/sample").glob("*.tar"))
    )
    stored = {(r["source"], r["index"]): r["signature"] for r in rows}
    decoded = {k: v for k, v in expected.items() if v is not None}
    assert len(decoded) > 10
    for occurrence, signature in expected.items():
        if occurrence in stored:
            assert stored[occurrence] == signature, occurrence
    assert {k for k, v in stored.items() if v is not None} == decoded.keys()

    by_key = {r["key"]: r for r in rows}
    quarantined = 0
    for shard in sorted((out / "quarantine").rglob("*.tar")):
        for sample in wds.WebDataset([str(shard)], shardshuffle=False):
            meta = json.loads(sample["json"])["mitigate"]["manifest"]
            row = by_key[sample["__key__"]]
            assert meta["signature"] == row["signature"].hex()
            quarantined += 1
    assert quarantined >= 3  # the filtered captions and the exact duplicate


@pytest.mark.parametrize("values", [[], [3, 1, 2]])
def test_gather_gives_one_list_also_of_nothing(values):
    """The near-dup items are gathered without ToList's side-input copy; the decision
    still needs exactly one list when no sample survived to near dedup."""
    with TestPipeline() as p:
        out = p | beam.Create(values, reshuffle=False) | Gather() | beam.Map(sorted)
        assert_that(out, equal_to([sorted(values)]))


@pytest.mark.slow
def test_stored_embeddings_wait_in_the_store_and_the_outputs_are_the_same(tmp_path, monkeypatch):
    """Regression (memory): with the default config (nsfw storing its 1024-d embeddings,
    rebalancing on them) the local runner's Beam worker grew 54 KB a sample, 11 KB
    without the embeddings: they rode on every record through every stage. With the
    store (``runner.spill_signatures: auto``) no record carries one after the decode;
    rebalancing (fit sample and raw weights) and the manifest writer read them back:
    the manifest, the embeddings files and the weights are those of a run that carried
    them."""
    seen = tmp_path / "seen.jsonl"
    finalize = stages.finalize

    def spying_finalize(record: SampleRecord) -> SampleRecord:
        with open(seen, "a") as f:  # a file: the runner may run this in a copy of it
            f.write(json.dumps(bool(record.embeddings)) + "\n")
        return finalize(record)

    monkeypatch.setattr(stages, "finalize", spying_finalize)
    outs = {}
    for spill in ("auto", "false"):
        out = tmp_path / spill
        config, _ = load_config(DEFAULT, [f"output.path={out}", f"runner.spill_signatures={spill}"])
        summary = run(config)
        carried = [json.loads(line) for line in seen.read_text().splitlines()]
        seen.unlink()
        assert len(carried) == summary["input_count"]
        assert any(carried) is (spill == "false")  # decoded samples carry theirs
        outs[spill] = (out, summary)
    (auto, a), (false, b) = outs["auto"], outs["false"]
    assert a["rebalance"]["fit"] == b["rebalance"]["fit"]
    assert a["rebalance"]["weights"] == b["rebalance"]["weights"]
    files = sorted(
        p.relative_to(auto)
        for p in auto.rglob("*")
        if p.is_file() and p.suffix in (".parquet", ".npy", ".tar")
    )
    assert any(f.suffix == ".npy" for f in files) and any(f.suffix == ".parquet" for f in files)
    for name in files:
        assert (auto / name).read_bytes() == (false / name).read_bytes(), name
    assert not list(tmp_path.rglob("emb-nsfw"))  # the store left with the staging folder
