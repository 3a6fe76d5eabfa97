"""The signature store (pipeline/sigstore.py): signatures written in files at the decode
and read back by the near-dup decision, the manifest and the quarantine writers."""

from __future__ import annotations

from pathlib import Path

import pytest

from mitigate.config import ConfigError, load_config
from mitigate.near import HashItem
from mitigate.pipeline import sigstore
from mitigate.records import SampleRecord

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "configs" / "default.yaml"


def _record(source: str, index: int, signature: bytes | None) -> SampleRecord:
    return SampleRecord(key=f"{source}-{index}", source=source, index=index, signature=signature)


def test_spilled_signatures_read_back_by_source_and_the_records_leave_without_them(tmp_path):
    store = str(tmp_path / "store")
    # two sources in one chunk; an empty signature (decoded without one) is kept apart
    # from no signature (None: no entry)
    records = [
        _record("a.tar", 5, b"\x01" * 2315),
        _record("b.tar", 0, b"\x02" * 2315),
        _record("a.tar", 3, b""),
        _record("a.tar", 4, None),
    ]
    out = sigstore.spill(store, records)
    assert [r.signature for r in out] == [None] * 4
    assert [(r.source, r.index, r.key) for r in out] == [
        (r.source, r.index, r.key) for r in records
    ]
    assert records[0].signature == b"\x01" * 2315  # the inputs are not changed
    assert sigstore.read_source(store, "a.tar") == {5: b"\x01" * 2315, 3: b""}
    assert sigstore.read_source(store, "b.tar") == {0: b"\x02" * 2315}
    assert sigstore.read_source(store, "c.tar") == {}
    # one file per source of the chunk, under the source's id
    files = sorted(p.relative_to(store).as_posix() for p in Path(store).rglob("*.sig"))
    a, b = sigstore.source_id("a.tar").hex(), sigstore.source_id("b.tar").hex()
    assert [f.rsplit("-", 1)[0] for f in files] == sorted(
        [f"{a}/000000000003-000000000005-2", f"{b}/000000000000-000000000000-1"]
    )


def test_a_block_of_indices_reads_only_the_files_that_hold_some(tmp_path):
    # a manifest part of a large source (output.samples_per_manifest_part) reads its
    # block's signatures, not the whole source's
    store = str(tmp_path / "store")
    for first in (0, 10, 20):
        sigstore.spill(store, [_record("s.tar", i, bytes([i])) for i in range(first, first + 10)])
    assert sigstore.read_source(store, "s.tar", 10, 20) == {i: bytes([i]) for i in range(10, 20)}
    assert sigstore.read_source(store, "s.tar", 15, 25) == {i: bytes([i]) for i in range(15, 25)}
    assert sigstore.read_source(store, "s.tar", 30, 40) == {}
    # the files outside the block are not opened: damaged, they do not fail its read
    for path in Path(store).rglob("*.sig"):
        if not path.name.startswith("000000000010-"):
            path.write_bytes(b"damaged")
    assert sigstore.read_source(store, "s.tar", 10, 20) == {i: bytes([i]) for i in range(10, 20)}
    with pytest.raises(ValueError, match="not a signature file"):
        sigstore.read_source(store, "s.tar")


def test_a_retried_or_regrouped_chunk_reads_back_the_same_signatures(tmp_path):
    store = str(tmp_path / "store")
    first = [_record("s.tar", i, bytes([i]) * 10) for i in range(4)]
    sigstore.spill(store, first)
    sigstore.spill(store, first)  # a retry: the same file again
    sigstore.spill(store, first[1:3])  # a retry that grouped the chunk otherwise
    assert len(list(Path(store).rglob("*.sig"))) == 2
    assert sigstore.read_source(store, "s.tar") == {i: bytes([i]) * 10 for i in range(4)}
    # two other sets with the same first index and count never share a file (the
    # second would replace the first, and index 1 would be lost)
    sigstore.spill(store, [_record("t.tar", i, bytes([i])) for i in (0, 1)])
    sigstore.spill(store, [_record("t.tar", i, bytes([i])) for i in (0, 2)])
    assert sigstore.read_source(store, "t.tar") == {0: b"\x00", 1: b"\x01", 2: b"\x02"}


def test_a_source_name_in_another_encoding_has_its_own_folder(tmp_path):
    store = str(tmp_path / "store")
    odd = "caf\udce9.tar"  # a byte that is not UTF-8, as os.fsdecode gives it
    sigstore.spill(store, [_record(odd, 0, b"x"), _record("café.tar", 0, b"y")])
    assert sigstore.read_source(store, odd) == {0: b"x"}
    assert sigstore.read_source(store, "café.tar") == {0: b"y"}


def test_the_decision_gets_exactly_its_items_signatures(tmp_path):
    store = str(tmp_path / "store")
    records = [_record("a.tar", i, bytes([i]) * 8) for i in range(3)] + [
        _record("b.tar", 0, b"b" * 8),
        _record("b.tar", 1, None),
    ]
    sigstore.spill(store, records)
    items = [
        HashItem(r.key, "0" * 16, "0" * 16, 1, None, None, sigstore.ref(r))
        for r in records
        if r.index != 2
    ]
    plain = HashItem("plain", "0" * 16, "0" * 16, 1, b"own", None)  # carries its own
    filled = sigstore.fill(store, [*items, plain])
    assert [(it.key, it.signature, it.ref) for it in filled] == [
        ("a.tar-0", b"\x00" * 8, None),
        ("a.tar-1", b"\x01" * 8, None),
        ("b.tar-0", b"b" * 8, None),
        ("b.tar-1", None, None),  # no signature at the decode: none now
        ("plain", b"own", None),
    ]
    # only what was asked for is read into memory
    asked = sigstore.read_refs(store, [items[0].ref])
    assert asked == {items[0].ref: b"\x00" * 8}


@pytest.mark.parametrize("damage", ["magic", "cut"])
def test_a_damaged_store_file_is_an_error_naming_it(tmp_path, damage):
    store = str(tmp_path / "store")
    sigstore.spill(store, [_record("s.tar", 0, b"z" * 100)])
    (path,) = Path(store).rglob("*.sig")
    data = path.read_bytes()
    path.write_bytes(b"XXXXXX" + data[6:] if damage == "magic" else data[:-1])
    with pytest.raises(ValueError, match=str(path.name)):
        sigstore.read_source(store, "s.tar")


@pytest.mark.parametrize(
    "sets, spills",
    [
        ([], True),  # auto on the local runner with the one-worker search
        (["dedup.partition=clusters"], False),  # auto: the batches carry them
        (["runner.spill_signatures=false"], False),
        (
            [
                "runner.name=portable",
                "runner.job_endpoint=localhost:8099",
                "runner.environment_type=LOOPBACK",
            ],
            False,
        ),
        (
            [
                "runner.name=portable",
                "runner.job_endpoint=localhost:8099",
                "runner.environment_type=LOOPBACK",
                "runner.spill_signatures=true",
                "dedup.partition=none",
            ],
            True,
        ),
    ],
)
def test_where_signatures_are_spilled(tmp_path, sets, spills):
    config, _ = load_config(DEFAULT, [f"output.path={tmp_path / 'out'}", *sets])
    assert config.spills_signatures() is spills
    where = sigstore.location(config)
    assert where == (str(tmp_path / "out" / "_signatures") if spills else None)


def test_spilling_with_the_partitioned_search_is_a_config_error_naming_the_field(tmp_path):
    with pytest.raises(ConfigError, match=r"runner\.spill_signatures: true needs the one-worker"):
        load_config(
            DEFAULT,
            [
                f"output.path={tmp_path}",
                "runner.spill_signatures=true",
                "dedup.partition=clusters",
            ],
        )


def test_spilled_embeddings_come_back_by_block_and_by_ref(tmp_path):
    """The stored embeddings (float16, a kind a filter) leave the records at the decode
    with ``embeddings=True`` and come back as the same vectors: by manifest block for
    the manifest writer (an embedding a record carries stays), by ref for the fit
    sample, by source range for a batch of raw weights."""
    import numpy as np

    store = str(tmp_path / "store")
    rng = np.random.default_rng(0)
    records = []
    for index in range(6):
        r = _record("a.tar", index, b"\x01" * 8)
        if index != 2:  # a sample without one (not decoded)
            r.embeddings["nsfw"] = rng.standard_normal(16).astype(np.float16)
        records.append(r)
    kept = sigstore.spill(store, records)  # signatures only: the embeddings ride on
    assert all(r.signature is None for r in kept) and kept[0].embeddings
    out = sigstore.spill(str(tmp_path / "other"), records, embeddings=True)
    assert all(r.signature is None and not r.embeddings for r in out)
    assert records[0].embeddings  # the inputs are not changed
    other = str(tmp_path / "other")
    back = sigstore.with_embeddings(other, out[:4], ["nsfw"], block=0, per=4)
    assert [sorted(r.embeddings) for r in back] == [["nsfw"], ["nsfw"], [], ["nsfw"]]
    for r, orig in zip(back, records, strict=False):
        if r.embeddings:
            assert r.embeddings["nsfw"].dtype == np.float16
            assert np.array_equal(r.embeddings["nsfw"], orig.embeddings["nsfw"])
    second = sigstore.with_embeddings(other, out[4:], ["nsfw"], block=1, per=4)
    assert np.array_equal(second[1].embeddings["nsfw"], records[5].embeddings["nsfw"])
    carried = out[0].copy()
    carried.embeddings["nsfw"] = np.zeros(16, np.float16)
    (same,) = sigstore.with_embeddings(other, [carried], ["nsfw"], block=0, per=4)
    assert not same.embeddings["nsfw"].any()  # its own, not the stored one
    kind = sigstore.embedding_kind("nsfw")
    refs = sigstore.read_refs(other, [sigstore.ref(records[3]), sigstore.ref(records[2])], kind)
    assert list(refs) == [sigstore.ref(records[3])]
    assert refs[sigstore.ref(records[3])] == records[3].embeddings["nsfw"].tobytes()
    assert sigstore.read_source(other, "a.tar") == {i: b"\x01" * 8 for i in range(6)}
