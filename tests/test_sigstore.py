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
