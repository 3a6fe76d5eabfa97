"""The ``blocklist`` filter: config errors, score/decide, the sha256 path that skips
decoding, the old ``dedup.blocklist`` keys, and re-deciding from stored signals."""

from __future__ import annotations

import hashlib
import logging
import math
import pickle

import pytest

from mitigate import filters, stages
from mitigate.config import ConfigError, DecodeConfig, validate_config
from mitigate.filters import ScoringItem
from mitigate.records import SampleRecord

PHASH = "f0f0f0f0f0f0f0f0"


def _record(**kw) -> SampleRecord:
    return SampleRecord(**{"key": "k", "source": "s.tar", "index": 0, **kw})


def _build(entry: dict, base_dir=".") -> filters.Filter:
    cfg = validate_config({"filters": [entry]}, base_dir)
    flt = filters.build_filter(cfg.filters[0])
    flt.setup()
    return flt


def _scored(flt: filters.Filter, record: SampleRecord) -> SampleRecord:
    (score,) = flt.score([ScoringItem(record, None)])
    record.scores[flt.filter_id] = score.value
    if score.info:
        record.score_info[flt.filter_id] = score.info
    return record


def _flip(hex_hash: str, bits: int) -> str:
    return f"{int(hex_hash, 16) ^ ((1 << bits) - 1):016x}"


def test_registered_and_config_errors_name_the_field(tmp_path):
    assert "blocklist" in filters.names()
    listed = tmp_path / "bl.txt"
    listed.write_text(f"{PHASH}\n")
    cases = [
        ({"name": "blocklist"}, r"filters\[0\]\.path: required field is missing"),
        ({"name": "blocklist", "path": "missing.txt"}, r"filters\[0\]\.path: file not found"),
        (
            {"name": "blocklist", "path": str(listed), "max_distance": 17},
            r"filters\[0\]\.max_distance: must be <= 16, got",
        ),
        (
            {"name": "blocklist", "path": str(listed), "max_distance": True},
            r"filters\[0\]\.max_distance: must be a number, not a boolean",
        ),
        ({"name": "blocklist", "path": str(listed), "dist": 1}, r"filters\[0\]\.dist"),
    ]
    for entry, message in cases:
        with pytest.raises(ConfigError, match=message):
            validate_config({"filters": [entry]}, tmp_path)
    listed.write_text(f"{PHASH}\nnot-a-hash\n")
    with pytest.raises(ConfigError, match=r"filters\[0\]\.path: .*bl.txt:2: not a sha256"):
        validate_config({"filters": [{"name": "blocklist", "path": "bl.txt"}]}, tmp_path)


def test_score_is_bits_to_the_nearest_entry_and_decide_drops_within_max_distance(tmp_path):
    sha = hashlib.sha256(b"bad").hexdigest()
    (tmp_path / "bl.txt").write_text(f"# known bad\nsha256:{sha}\nphash:{PHASH}\n")
    flt = _build({"name": "blocklist", "path": "bl.txt", "max_distance": 3}, tmp_path)

    by_sha = _scored(flt, _record(sha256=sha))
    assert by_sha.scores["blocklist"] == 0.0
    drop = flt.decide(by_sha)
    assert (drop.reason, drop.score, drop.threshold) == ("blocklist", 0.0, 3)
    assert drop.detail == "sha256 is on the blocklist"

    near = _scored(flt, _record(sha256="0" * 64, phash=_flip(PHASH, 3), phash_mirror="0" * 16))
    assert near.scores["blocklist"] == 3.0
    drop = flt.decide(near)
    assert drop.reason == "blocklist" and f"listed {PHASH}" in drop.detail

    # the mirror's distance counts too: the nearer of the two
    mirrored = _scored(flt, _record(phash="0" * 16, phash_mirror=_flip(PHASH, 1)))
    assert mirrored.scores["blocklist"] == 1.0

    far = _scored(flt, _record(phash=_flip(PHASH, 4), phash_mirror=_flip(PHASH, 4)))
    assert far.scores["blocklist"] == 4.0 and flt.decide(far) is None

    (tmp_path / "sha_only.txt").write_text(f"{sha}\n")
    sha_only = _build({"name": "blocklist", "path": "sha_only.txt"}, tmp_path)
    none = _scored(sha_only, _record(sha256="1" * 64, phash=PHASH, phash_mirror=PHASH))
    assert math.isinf(none.scores["blocklist"]) and sha_only.decide(none) is None


def test_pickles_without_the_file(tmp_path):
    listed = tmp_path / "bl.txt"
    listed.write_text(f"{PHASH}\n")
    flt = _build({"name": "blocklist", "path": str(listed)})
    listed.unlink()  # workers never need the file
    clone = pickle.loads(pickle.dumps(flt))
    clone.setup()
    assert clone.decide(_scored(clone, _record(phash=PHASH, phash_mirror=PHASH))) is not None


def test_listed_sha256_is_filtered_without_decoding(tmp_path, photos):
    junk = b"not an image at all"  # decoding it would be an error/decode_error
    (tmp_path / "bl.txt").write_text(f"{hashlib.sha256(junk).hexdigest()}\n")
    cfg = validate_config(
        {
            "filters": [
                {"name": "image_quality", "min_side": 1},
                {"name": "blocklist", "path": "bl.txt"},
            ]
        },
        tmp_path,
    )
    built = [filters.build_filter(c) for c in cfg.filters]
    jpg = next(iter(photos.values()))
    items = stages.compute_signals(
        [(_record(key="junk"), junk), (_record(key="ok", index=1), jpg)], DecodeConfig(), built
    )
    blocked, ok = (item.record for item in items)
    assert (blocked.state, blocked.reason, blocked.filter) == ("filtered", "blocklist", "blocklist")
    assert blocked.phash is None and blocked.width is None and items[0].image is None
    assert blocked.scores == {"blocklist": 0.0}
    assert ok.state == "pending" and items[1].image is not None
    # the other filters never score it, and deciding leaves it as it is
    decided = stages.score_and_decide(items, built)
    assert decided[0] == blocked and "image_quality" not in decided[0].scores
    assert decided[1].state == "pending" and decided[1].scores["blocklist"] == math.inf


def test_old_dedup_keys_become_the_first_filter_with_a_warning(tmp_path, caplog):
    (tmp_path / "bl.txt").write_text(f"{PHASH}\n")
    with caplog.at_level(logging.WARNING, logger="mitigate.config"):
        cfg = validate_config(
            {
                "dedup": {"blocklist": "bl.txt", "blocklist_max_distance": 2},
                "filters": [{"name": "image_quality"}],
            },
            tmp_path,
        )
    assert [f.filter_id for f in cfg.filters] == ["blocklist", "image_quality"]
    assert cfg.filters[0].path == str((tmp_path / "bl.txt").resolve())
    assert cfg.filters[0].max_distance == 2
    assert "blocklist" not in cfg.model_dump()["dedup"]
    assert any("deprecated" in r.getMessage() for r in caplog.records)

    cases = [
        ({"dedup": {"blocklist_max_distance": 2}}, r"dedup\.blocklist_max_distance: given"),
        (
            {"dedup": {"blocklist": "bl.txt", "blocklist_max_distance": 20}},
            r"dedup\.blocklist_max_distance: must be <= 16, got",
        ),
        ({"dedup": {"blocklist": "gone.txt"}}, r"dedup\.blocklist: file not found"),
        (
            {
                "dedup": {"blocklist": "bl.txt"},
                "filters": [{"name": "blocklist", "path": "bl.txt"}],
            },
            r"dedup\.blocklist: the blocklist is a filter now",
        ),
    ]
    for raw, message in cases:
        with pytest.raises(ConfigError, match=message):
            validate_config(raw, tmp_path)


def test_redecide_rescores_from_stored_signals_and_applies_a_new_max_distance(tmp_path):
    (tmp_path / "bl.txt").write_text(f"{PHASH}\n")
    (tmp_path / "other.txt").write_text(f"{'0' * 16}\n")
    loose = _build({"name": "blocklist", "path": "bl.txt", "max_distance": 4}, tmp_path)
    near = _record(sha256="a" * 64, phash=_flip(PHASH, 2), phash_mirror=_flip(PHASH, 2))
    (first,) = stages.score_and_decide([ScoringItem(near, None)], [loose])
    assert (first.state, first.reason, first.threshold) == ("filtered", "blocklist", 4)

    # a stricter max_distance: the stored score (2 bits) no longer drops it
    strict = _build({"name": "blocklist", "path": "bl.txt", "max_distance": 1}, tmp_path)
    again = stages.decide(stages.rescore_from_signals(stages.reopen(first), [strict]), [strict])
    assert (again.state, again.reason) == ("pending", None)

    # another list file: scored again from the stored pHash, f0f0..f3 against 00..00
    other = _build({"name": "blocklist", "path": "other.txt", "max_distance": 4}, tmp_path)
    rescored = stages.rescore_from_signals(stages.reopen(first), [other])
    assert rescored.scores["blocklist"] == 34.0  # 8 bytes x 4 bits, + 2 flipped
    assert stages.decide(rescored, [other]).state == "pending"

    # filtered before decoding (no pHash): settled, never re-decided or re-scored
    by_sha = _record(state="filtered", reason="blocklist", sha256="b" * 64)
    by_sha.scores["blocklist"] = 0.0
    assert stages.is_settled(by_sha)
    assert stages.rescore_from_signals(stages.reopen(by_sha), [other]) is by_sha


def test_blocklist_drops_of_runs_before_it_was_a_filter_stay_as_they_are():
    # such runs filtered a pHash match without scoring it with any filter: reopened, it
    # would be kept unscored
    old = _record(state="filtered", reason="blocklist", sha256="c" * 64, phash=PHASH)
    old.filter = "blocklist"
    assert stages.is_settled(old) and stages.reopen(old) is old
    new = _record(state="filtered", reason="blocklist", sha256="c" * 64, phash=PHASH)
    new.filter = "blocklist"
    new.scores["blocklist"] = 2.0
    assert not stages.is_settled(new) and stages.reopen(new).state == "pending"


@pytest.mark.parametrize(
    ("lines", "settings", "warned"),
    [
        (["phash:" + "0f" * 8], {}, True),  # exact pHash match in fast mode
        (["phash:" + "0f" * 8], {"max_distance": 4}, False),  # a distance: the user chose
        (["phash:" + "0f" * 8], {"hash_mode": "exact"}, False),  # full decode: imagehash's
        (["sha256:" + "ab" * 32], {}, False),  # sha256 only: no pHash to mismatch
    ],
)
def test_a_pHash_blocklist_matched_exactly_in_fast_mode_is_warned_about(
    tmp_path, caplog, lines, settings, warned
):
    """decode.hash_mode: fast hashes the reduced decode, which equals imagehash.phash of
    the full image for 74-91 % of images (BENCHMARKS.md): listed pHash values from
    elsewhere, matched at max_distance 0, would miss the rest. The config still loads;
    the warning names the filter and the ways out."""
    (tmp_path / "bl.txt").write_text("\n".join(lines) + "\n")
    entry = {"name": "blocklist", "path": "bl.txt"}
    if "max_distance" in settings:
        entry["max_distance"] = settings["max_distance"]
    raw: dict = {"filters": [entry]}
    if "hash_mode" in settings:
        raw["decode"] = {"hash_mode": settings["hash_mode"]}
    with caplog.at_level(logging.WARNING, logger="mitigate.config"):
        cfg = validate_config(raw, tmp_path)
    messages = [r.getMessage() for r in caplog.records if "blocklist" in r.getMessage()]
    assert cfg.filters[0].name == "blocklist"
    if warned:
        assert len(messages) == 1
        assert messages[0].startswith("filters[0] (blocklist): 1 listed pHash value(s)")
        assert "decode.hash_mode: exact" in messages[0] and "max_distance" in messages[0]
    else:
        assert messages == []


def test_a_hash_list_written_with_a_byte_order_mark_reads_its_first_line(tmp_path):
    """Lists saved by Windows editors start with a byte-order mark: the first hash is
    still read (not refused as "not a sha256"), in a blocklist and a reference list."""
    from mitigate.near import Blocklist, read_hash_list

    sha = "ab" * 32
    (tmp_path / "bl.txt").write_bytes(
        b"\xef\xbb\xbf" + f"{sha}\r\nphash:00ff00ff00ff00ff\r\n".encode()
    )
    listed = Blocklist.read(tmp_path / "bl.txt")
    assert listed.sha256 == frozenset({sha}) and listed.phash == frozenset({0x00FF00FF00FF00FF})
    (tmp_path / "ref.csv").write_bytes(b"\xef\xbb\xbfref1,00ff00ff00ff00ff\n")
    assert read_hash_list(tmp_path / "ref.csv") == [("ref1", "00ff00ff00ff00ff", None)]
