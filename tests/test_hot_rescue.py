"""The stranded-follower rescue (mitigate/hot_rescue.py), vectorised: it must decide
exactly as the plain per-follower scan (tests/hot_rescue_reference.py) on random
pools, followers, hashes, centre views and signatures, whatever the block sizes, while
scoring no more pairs."""

from __future__ import annotations

import dataclasses
import functools
import io
from pathlib import Path

import hot_rescue_reference as reference
import near_edits as ne
import numpy as np
import pytest
from PIL import Image

from mitigate import hashing, hot, hot_rescue, verify
from mitigate.near import HashItem
from mitigate.records import Reason

SOURCE = Path(__file__).resolve().parents[1] / "data" / "near_eval" / "animals-donkey.jpg"


@pytest.fixture(scope="module")
def bank() -> list[bytes]:
    """Signatures of 3 random pictures x 4 noisy variants: the variants of one picture
    verify against each other, different pictures do not."""
    rng = np.random.default_rng(5)
    out = []
    for _ in range(3):
        base = rng.integers(0, 256, (8, 8, 3))
        for _ in range(4):
            px = np.clip(base + rng.integers(-3, 4, (8, 8, 3)), 0, 255).astype(np.uint8)
            im = Image.fromarray(px).resize((64, 64), Image.Resampling.NEAREST)
            out.append(verify.signature(im))
    return out


def _flip(h: int, rng: np.random.Generator, most: int) -> int:
    for b in rng.choice(64, size=int(rng.integers(0, most + 1)), replace=False).tolist():
        h ^= 1 << b
    return h


def _item(key: str, base: int, rng: np.random.Generator, bank: list[bytes]) -> HashItem:
    p = _flip(base, rng, 14)
    m = p if rng.random() < 0.5 else _flip(base, rng, 20)
    c = None
    if rng.random() < 0.6:
        c0 = _flip(base, rng, 14)
        c = hashing.to_hex(c0) + hashing.to_hex(_flip(c0, rng, 6))
    sig = None if rng.random() < 0.1 else bank[int(rng.integers(0, len(bank)))]
    return HashItem(key, hashing.to_hex(p), hashing.to_hex(m), 100, sig, c)


def _case(seed: int, bank: list[bytes]):
    """Random stranded followers (with orphans, other decisions, unsigned and missing
    items mixed in) and a random pool; keys interleave so key order matters."""
    rng = np.random.default_rng(seed)
    base = int(rng.integers(0, 2**63))
    n_pool = int(rng.integers(0, 40))
    pool = {}
    for t in range(n_pool):
        key = f"k{int(rng.integers(0, 10**6)):06d}-{t}"
        pool[key] = _item(key, base, rng, bank)
    pool_keys = sorted(pool)
    out: list[hot.HotDecision] = []
    roles: list[hot.Role] = []
    items: dict[str, HashItem] = {}
    for t in range(int(rng.integers(1, 60))):
        key = f"k{int(rng.integers(0, 10**6)):06d}-f{t}"
        it = _item(key, base, rng, bank)
        r = rng.random()
        if r < 0.05 and pool_keys:  # a follower that is in the pool itself
            key = pool_keys[int(rng.integers(0, len(pool_keys)))]
            it = pool[key]
        if rng.random() > 0.05:
            items[key] = it
        role = hot.ORPHAN if rng.random() < 0.15 else hot.FOLLOWER
        roles.append(hot.Role(key, "g", role, "lead", 1.5, 1))
        if pool_keys and rng.random() < 0.7:
            x_key = pool_keys[int(rng.integers(0, len(pool_keys)))]  # its leader's keeper
        else:
            x_key = "elsewhere"
        reason = Reason.NOT_MERGED if rng.random() < 0.85 else Reason.NEAR_DUPLICATE
        out.append((key, reason, x_key, 3, 1.5))
    return out, roles, items, pool, rng


def test_vectorised_rescue_decides_as_the_plain_scan(bank):
    """80 random cases, half with tiny blocks (many blocks of followers x pool, many
    follower chunks) and the pool passed pre-parsed: the same decisions and stranded
    count as the reference, never more pairs; merges at a later rank, refusals and
    both views happen across the cases (so the comparison is not vacuous)."""
    merged = refused = later = centre_closer = 0
    for seed in range(80):
        out, roles, items, pool, rng = _case(seed, bank)
        k = int(rng.integers(3, 13))
        use_centre = bool(seed % 2)
        counts = {"verified_pairs": 7, "stranded": sum(o[1] == Reason.NOT_MERGED for o in out)}
        want = list(out)
        want_counts = reference.rescue(
            want, roles, items, pool, k, 1.0, verify.pair_scores, use_centre, dict(counts)
        )
        got = list(out)
        with pytest.MonkeyPatch.context() as mp:
            if seed % 4 >= 2:
                mp.setattr(hot_rescue, "BLOCK_CELLS", int(rng.integers(1, 50)))
                mp.setattr(hot_rescue, "FOLLOWER_CHUNK", int(rng.integers(1, 5)))
            others = hot_rescue.pool_of(pool) if seed % 3 == 0 else pool
            got_counts = hot_rescue.rescue(
                got, roles, items, others, k, 1.0, verify.pair_scores, use_centre, dict(counts)
            )
        assert got == want, seed
        assert got_counts["stranded"] == want_counts["stranded"], seed
        assert counts["verified_pairs"] <= got_counts["verified_pairs"]
        assert got_counts["verified_pairs"] <= want_counts["verified_pairs"], seed
        n_merged = sum(a != b for a, b in zip(out, got, strict=True))
        merged += n_merged
        refused += got_counts["stranded"]
        later += got_counts["verified_pairs"] - counts["verified_pairs"] > n_merged
        for a, b in zip(out, got, strict=True):
            if a != b and use_centre:
                x, y = items[b[0]], pool[b[2]]
                centre_closer += b[3] < hot._distance(x, y, False)
    assert merged > 20 and refused > 20 and later > 5 and centre_closer > 0


def test_rescue_measures_a_block_of_followers_against_the_pool_at_once(bank):
    """The scan is vectorised: with 300 stranded followers and a pool of 200 the
    distances are computed in a few blocks of at most BLOCK_CELLS cells (not one
    Python pass a follower x pool sample), and each follower tries its nearest first."""
    rng = np.random.default_rng(1)
    base = int(rng.integers(0, 2**63))
    pool = {f"p{t:03d}": _item(f"p{t:03d}", base, rng, bank) for t in range(200)}
    items = {f"f{t:03d}": _item(f"f{t:03d}", base, rng, bank) for t in range(300)}
    out = [(k, Reason.NOT_MERGED, "elsewhere", 3, 1.5) for k in items]
    roles = [hot.Role(k, "g", hot.FOLLOWER, "lead", 1.5, 1) for k in items]
    shapes: list[tuple[int, ...]] = []
    real = hot_rescue._distances

    def spy(followers, p, use_centre):
        d = real(followers, p, use_centre)
        shapes.append(d.shape)
        return d

    want = list(out)
    reference.rescue(want, roles, items, pool, 10, 1.0, verify.pair_scores, False, {})
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hot_rescue, "_distances", spy)
        mp.setattr(hot_rescue, "BLOCK_CELLS", 200 * 64)
        hot_rescue.rescue(out, roles, items, pool, 10, 1.0, verify.pair_scores, False, {})
    n = sum(verify.is_signature(it.signature) for it in items.values())  # the stranded
    assert n > 256 and shapes == [(64, 200)] * (n // 64) + [(n % 64, 200)]
    assert out == want
    assert any(o[1] == Reason.NEAR_DUPLICATE for o in out)


def test_partitioned_resolve_parses_the_pool_once_for_the_same_side_inputs(bank):
    """near_hot.resolve runs once a batch: the pool's hashes are parsed once while the
    side inputs are the same objects, again when they change; the decisions are those
    of the rescue given the plain mapping."""
    from mitigate.pipeline import near_hot

    rng = np.random.default_rng(2)
    base = int(rng.integers(0, 2**63))
    lead = _item("lead", base, rng, bank)
    keeper = dataclasses.replace(lead, key="keeper", signature=bank[11])
    leaders = {"g": ([lead, *(_item(f"l{t}", base, rng, bank) for t in range(5))], 0)}
    fates = {"lead": (Reason.NEAR_DUPLICATE, "keeper", 0)}
    keepers = {"keeper": keeper}
    held = [
        (hot.Role(f"f{t}", "g", hot.FOLLOWER, "lead", 0.5, 1), _item(f"f{t}", base, rng, bank))
        for t in range(30)
    ]
    calls: list[int] = []
    real = hot_rescue.pool_of

    def spy(others):
        calls.append(len(others))
        return real(others)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hot_rescue, "pool_of", spy)
        first = list(near_hot.resolve(held[:15], fates, keepers, 1.0, False, leaders, 10))
        second = list(near_hot.resolve(held[15:], fates, keepers, 1.0, False, leaders, 10))
        assert calls == [6]  # 5 kept leaders + the keeper: parsed once for two batches
        list(near_hot.resolve(held[:15], dict(fates), keepers, 1.0, False, leaders, 10))
        assert calls == [6, 6]  # other side-input objects: parsed again
    got = [d for tag, d in first + second if tag == "main"]
    items = {it.key: it for _, it in held}
    want, counts = hot.resolve([r for r, _ in held], items, fates, keepers, 1.0)
    others = hot_rescue.kept(leaders["g"][0], fates, keepers)
    reference.rescue(
        want, [r for r, _ in held], items, others, 10, 1.0, verify.pair_scores, False, counts
    )
    assert [(d.key, d.reason, d.duplicate_of, d.distance, d.verify_score) for d in got] == want
    assert any(d.reason == Reason.NEAR_DUPLICATE and d.duplicate_of != "keeper" for d in got)


_GOT: dict[str, list] = {}


def _keep(name: str, values) -> None:
    _GOT[name] = list(values)


def _run_graph(records, partition: str) -> tuple[list, dict]:
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that

    from mitigate.config import DecodeConfig, validate_config
    from mitigate.pipeline.near import NearDedup

    dedup = {"k": 10, "keep": "resolution", "partition": partition}
    dedup.update(max_partition_size=64, clusterings=4, probes=2)
    config = validate_config({"dedup": dedup})
    _GOT.clear()
    with TestPipeline() as pl:
        out, report = pl | beam.Create(records) | NearDedup(config.dedup, DecodeConfig())
        assert_that(
            out | beam.Map(lambda r: (r.key, r.state, r.reason, r.duplicate_of, r.distance)),
            functools.partial(_keep, "records"),
            label="Records",
        )
        assert_that(report, functools.partial(_keep, "report"), label="Report")
    return sorted(_GOT["records"]), _GOT["report"][0]


@pytest.mark.slow
def test_both_search_modes_rescue_stranded_followers_identically():
    """A chain of brightness edits of one photo (z ~ a ~ c ~ k, z !~ c, z !~ k): group
    1 (70 samples, pHash p; copies a and c) leads with a, which the search drops as a
    near duplicate of z (1 bit away, higher resolution); its c copies are refused by z
    (stranded) and rescued by the kept leader of group 2 (70 copies k, 3 bits away).
    One worker and the partitioned graph decide every sample alike."""
    from mitigate.records import SampleRecord

    im = Image.open(SOURCE).convert("RGB")
    im.thumbnail((160, 160))
    sig = {
        b: verify.signature(Image.open(io.BytesIO(ne.jpeg(ne.brightness(b)(im), 90))))
        for b in (0.7, 1.08, 1.22, 1.3)
    }
    assert verify.score(sig[0.7], sig[1.22]) > 1.0 and verify.score(sig[1.22], sig[1.3]) <= 1.0
    p, m = (hashing.to_hex(h) for h in hashing.phash_pair(im))
    near = hashing.to_hex(hashing.from_hex(p) ^ 1)
    p2 = hashing.to_hex(hashing.from_hex(p) ^ 0b111000)
    recs: list[SampleRecord] = []

    def rec(key: str, ph: str, side: int, s: bytes) -> None:
        recs.append(
            SampleRecord(
                key, "mem://r", len(recs), width=side, height=side, phash=ph,
                phash_mirror=m, signature=s,
            )
        )  # fmt: skip

    rec("z-best", near, 400, sig[0.7])
    for t in range(70):
        rec(f"g1-{t:03d}", p, 160 if t else 161, sig[1.08] if t % 2 == 0 else sig[1.22])
    for t in range(70):
        rec(f"g2-{t:03d}", p2, 150 if t else 151, sig[1.3])
    one, one_report = _run_graph(recs, "none")
    many, many_report = _run_graph(recs, "clusters")
    assert one == many
    assert many_report["partition"] == "clusters" and many_report["partitions"] > 1
    assert one_report["hot"] == many_report["hot"]
    assert one_report["hot"]["groups"] == 2 and one_report["hot"]["stranded"] == 0
    got = {r[0]: r for r in one}
    assert len(got) == len(recs)
    assert got["g1-000"][1:4] == ("duplicate", "near_duplicate", "z-best")
    assert got["g2-000"][1] == "pending"  # the kept leader of group 2
    rescued = [k for k, r in got.items() if k.startswith("g1") and r[3] == "g2-000"]
    assert sorted(rescued) == [f"g1-{t:03d}" for t in range(1, 70, 2)]  # the c copies
    assert all(got[f"g1-{t:03d}"][3] == "z-best" for t in range(2, 70, 2))
