"""Hot identical-hash groups (mitigate/hot.py): many samples with one pHash are verified
against a few leaders, with bounded pairs, sound merges and the same decisions in both
search modes; groups of at most HOT_MIN samples are decided as before (all pairs)."""

from __future__ import annotations

import collections
import dataclasses
import functools
import io
from pathlib import Path

import apache_beam as beam
import near_edits as ne
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mitigate import hashing, hot, hot_rescue, keep, verify
from mitigate.config import DecodeConfig, validate_config
from mitigate.near import HashItem, decide_near_duplicates
from mitigate.pipeline.near import NearDedup
from mitigate.records import SampleRecord

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "data" / "near_eval" / "animals-donkey.jpg"


@pytest.fixture(scope="module")
def image() -> Image.Image:
    im = Image.open(SOURCE).convert("RGB")
    im.thumbnail((160, 160))
    return im


@pytest.fixture(scope="module")
def copies(image: Image.Image) -> list[bytes]:
    """Signatures of real re-encoded, lightly brightened copies of one image."""
    out = []
    for q in range(40, 96, 5):
        for b in (0.92, 1.0, 1.08):
            data = ne.jpeg(ne.brightness(b)(image), q)
            out.append(verify.signature(Image.open(io.BytesIO(data))))
    return out


@pytest.fixture(scope="module")
def look_alikes(image: Image.Image) -> dict[str, bytes]:
    """Different images that look alike (a letter printed on it, recoloured)."""
    return {n: verify.signature(ne.VARIANTS[n](image)) for n in ("letter_A", "digit_5", "recolour")}


def _hashes(image: Image.Image) -> tuple[str, str]:
    p, m = hashing.phash_pair(image)
    return hashing.to_hex(p), hashing.to_hex(m)


class _Counting:
    """verify.pair_scores, counting the pairs it scores."""

    def __init__(self) -> None:
        self.pairs = 0

    def __call__(self, i, j, sigs, stop_above=None):
        self.pairs += len(np.asarray(i))
        return verify.pair_scores(i, j, sigs, stop_above=stop_above)


def _hot_items(image, copies, look_alikes, n: int) -> list[HashItem]:
    """``n`` copies of one image sharing its pHash (the copies' own signatures), one
    copy of each look-alike with that same pHash (planted: the case verification is
    for), and 300 copies of letter_A at a low resolution (never at the top of the keep
    order: they get a leader of their own through the candidates' sample)."""
    p, m = _hashes(image)
    items = [HashItem(f"c{t:05d}", p, m, 25600 - t % 7, copies[t % len(copies)]) for t in range(n)]
    items += [HashItem(f"look-{name}", p, m, 25600, s) for name, s in look_alikes.items()]
    a = look_alikes["letter_A"]
    items += [HashItem(f"a{t:03d}", p, m, 100, a) for t in range(300)]
    return items


@pytest.mark.parametrize("rule", ["medoid", "resolution"])
def test_5000_copies_are_decided_with_a_bounded_number_of_scored_pairs(
    image, copies, look_alikes, rule
):
    items = _hot_items(image, copies, look_alikes, 5000)
    counting = _Counting()
    decisions, report = decide_near_duplicates(
        items, 10, verify_threshold=1.0, keep_rule=rule, score_pairs=counting
    )
    by_key = {d.key: d for d in decisions}
    g = len(items)
    # all pairs would be g * (g - 1) / 2 = 12.9M; leaders bound it linearly
    c, m, r = hot.CANDIDATES, hot.MAX_LEADERS, hot.ROUNDS
    bound = r * (c**2 // 2 + c * m) + g * (r * m + 1) + 8**2  # + the leaders' search
    assert counting.pairs <= bound
    assert report["hot"]["verified_pairs"] <= bound
    assert report["hot"]["groups"] == 1 and report["verify"]["leader_groups"] == 1
    assert report["hot"]["members"] == g
    # the image and letter_A, then (round 2) the two single look-alikes: searched
    assert report["hot"]["leaders"] == 4
    assert report["hot"]["orphans"] == 0
    kept = [it.key for it in items if it.key not in by_key or by_key[it.key].reason == "not_merged"]
    # one copy of the image, one of letter_A, and the two single look-alikes
    assert len(kept) == 4, kept
    assert {"look-digit_5", "look-recolour"} <= set(kept)
    copy_keeper = next(k for k in kept if k.startswith("c"))
    a_keeper = next(k for k in kept if k.startswith("a"))
    for it in items:
        d = by_key.get(it.key)
        if it.key.startswith("c") and it.key != copy_keeper:
            assert (d.reason, d.duplicate_of, d.distance) == ("near_duplicate", copy_keeper, 0)
            assert d.verify_score is not None and d.verify_score <= 1.0
        if it.key.startswith("a") and it.key != a_keeper:
            assert d.duplicate_of == a_keeper and d.verify_score <= 1.0
    for name in ("digit_5", "recolour"):
        d = by_key[f"look-{name}"]
        assert d.reason == "not_merged" and d.verify_score > 1.0  # refused, evidence kept
    assert report["near_duplicates"] == g - 4
    # the report's clusters count the followers (components of the verified pairs):
    # the image's 5,000 copies, letter_A's 300 copies and its look-alike
    assert report["cluster_sizes"] == {"301": 1, "5000": 1}
    big, small = report["largest_clusters"]
    assert report["largest_cluster_sizes"] == [5000, 301]  # its keys are its first few
    assert big[0] == copy_keeper and len(big) == hot.CLUSTER_KEYS
    assert all(k.startswith("c") for k in big)
    assert small[0] == a_keeper and small[1:] == sorted(small[1:])  # then its followers
    assert by_key["look-letter_A"].duplicate_of == a_keeper


def _random_groups(draw, max_group: int) -> list[HashItem]:
    """Random groups of identical pHashes (some within k of each other), random
    signatures from a few images plus noise, some items without one."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n_groups = draw(st.integers(1, 3))
    base = rng.integers(0, 2**63, dtype=np.int64)
    images = [rng.integers(0, 256, (8, 8, 3)) for _ in range(3)]
    # groups within 8 bits of each other, never one pHash: two groups of one hash were
    # one group of up to 2 x max_group, hot where the test needs none (seen: 35 + 30)
    flips = [0, *rng.choice(np.arange(1, 2**8), size=2, replace=False).tolist()]
    items = []
    for g in range(n_groups):
        h = int(base) ^ int(flips[g])
        ph = hashing.to_hex(h)
        for t in range(draw(st.integers(1, max_group))):
            r = rng.random()
            if r < 0.1:
                sig = None
            else:
                px = images[int(rng.integers(0, 3))] + rng.integers(-3, 4, (8, 8, 3))
                im = Image.fromarray(np.clip(px, 0, 255).astype(np.uint8))
                sig = verify.signature(im.resize((64, 64), Image.Resampling.NEAREST))
            items.append(HashItem(f"g{g}-{t:03d}", ph, ph, int(rng.integers(1, 4)), sig))
    return items


@st.composite
def small_groups(draw):
    return _random_groups(draw, hot.HOT_MIN)


@pytest.mark.slow
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_groups(), st.sampled_from(["medoid", "resolution"]))
def test_groups_up_to_hot_min_are_decided_exactly_as_all_pairs(items, rule):
    got = decide_near_duplicates(items, 10, verify_threshold=1.0, keep_rule=rule)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hot, "HOT_MIN", 10**9)  # never hot: every pair verified
        want = decide_near_duplicates(items, 10, verify_threshold=1.0, keep_rule=rule)
    assert got[0] == want[0]
    assert got[1].get("hot", {}).get("groups", 0) == 0


@st.composite
def hot_sized_groups(draw):
    return _random_groups(draw, 12)


@pytest.mark.slow
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hot_sized_groups(), st.sampled_from(["medoid", "resolution"]))
def test_hot_groups_merge_only_verified_pairs_into_kept_samples(items, rule):
    """With HOT_MIN lowered so these groups are hot: every dropped sample is a near
    duplicate of a kept one by a pair that verifies (or has an unsigned end), and every
    sample is decided at most once."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hot, "HOT_MIN", 3)
        mp.setattr(hot, "CANDIDATES", 4)
        mp.setattr(hot, "MAX_LEADERS", 2)
        decisions, report = decide_near_duplicates(items, 10, verify_threshold=1.0, keep_rule=rule)
    by_key = {it.key: it for it in items}
    keys = [d.key for d in decisions]
    assert len(keys) == len(set(keys))
    decided = {d.key: d for d in decisions}
    for d in decisions:
        if d.reason != "near_duplicate":
            continue
        keeper = decided.get(d.duplicate_of)
        assert keeper is None or keeper.reason == "not_merged", d  # the keeper is kept
        a, b = by_key[d.key], by_key[d.duplicate_of]
        if verify.is_signature(a.signature) and verify.is_signature(b.signature):
            first, second = sorted([a, b], key=lambda it: it.key)
            assert verify.score(first.signature, second.signature) == pytest.approx(d.verify_score)
            assert d.verify_score <= 1.0
        else:
            assert d.verify_score is None
    if any(len([i for i in items if i.phash == it.phash]) > 3 for it in items):
        assert report["hot"]["groups"] >= 1


@pytest.mark.slow
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hot_sized_groups())
def test_rounds_assign_as_one_pass_over_every_rounds_leaders(items):
    """group_roles assigns round by round (each round tries only its new leaders on the
    orphans); the partitioned graph assigns each batch once with every round's leaders:
    the roles must be the same, and every later round's leader an orphan of the rounds
    before."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hot, "CANDIDATES", 4)
        mp.setattr(hot, "MAX_LEADERS", 1)
        members = sorted(items, key=lambda it: it.key)
        group = [it for it in members if hot.group_of(it) == hot.group_of(members[0])]
        leaders, _, roles = hot.group_roles(group, 1.0, "resolution")
        assert roles == hot.assign(group, leaders, 1.0)
        assert 1 <= len(leaders) <= hot.ROUNDS
        for r in range(1, len(leaders)):
            assert leaders[r] in hot.orphans(group, leaders[:r], 1.0)
        left = hot.orphans(group, leaders, 1.0)
        assert {r.key for r in roles if r.role == hot.ORPHAN} == {it.key for it in left}
        if len(leaders) < hot.ROUNDS:
            assert not left  # a round is left only when nothing is left to lead


def _two_images(image: Image.Image, copies: list[bytes], n: int) -> list[HashItem]:
    """``n`` copies of the image at a high resolution and ``n`` copies of another
    picture (the image turned) at a low one, all planted on the image's pHash."""
    p, m = _hashes(image)
    turned = image.rotate(90)
    other = [
        verify.signature(Image.open(io.BytesIO(ne.jpeg(ne.brightness(b)(turned), q))))
        for q in (50, 70, 90)
        for b in (0.95, 1.05)
    ]
    items = [HashItem(f"c{t:04d}", p, m, 25600, copies[t % len(copies)]) for t in range(n)]
    items += [HashItem(f"o{t:04d}", p, m, 900, other[t % len(other)]) for t in range(n)]
    return items


@pytest.mark.parametrize("rule", ["medoid", "resolution"])
def test_orphans_get_leaders_of_their_own_in_later_rounds(image, copies, rule):
    """One leader a round: the first round's leader is a copy of the image, the other
    picture's copies verify against none (orphans). One round leaves them all kept;
    with rounds, the second round's leader is one of them and the rest follow it."""
    items = _two_images(image, copies, 120)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hot, "MAX_LEADERS", 1)
        mp.setattr(hot, "ROUNDS", 1)
        one, one_report = decide_near_duplicates(items, 10, verify_threshold=1.0, keep_rule=rule)
        mp.setattr(hot, "ROUNDS", 3)
        more, report = decide_near_duplicates(items, 10, verify_threshold=1.0, keep_rule=rule)
    assert one_report["hot"]["orphans"] == 120 and one_report["hot"]["leaders"] == 1
    assert report["hot"]["leaders"] == 2 and report["hot"]["orphans"] == 0
    dropped = {d.key: d for d in more if d.reason == "near_duplicate"}
    kept = sorted(it.key for it in items if it.key not in dropped)
    assert len(kept) == 2 and kept[0].startswith("c") and kept[1].startswith("o"), kept
    by_key = {it.key: it for it in items}
    for d in dropped.values():
        assert d.key[0] == d.duplicate_of[0]  # each picture's copies with their own
        a, b = sorted([by_key[d.key], by_key[d.duplicate_of]], key=lambda it: it.key)
        assert verify.score(a.signature, b.signature) == pytest.approx(d.verify_score)
        assert d.verify_score <= 1.0
    assert report["near_duplicates"] == 238
    assert len([d for d in one if d.reason == "near_duplicate"]) == 119


def test_stranded_followers_try_the_other_kept_samples_within_k(image, copies, look_alikes):
    """A follower refused by its dropped leader's keeper (a look-alike here) is
    verified against the other kept samples of the hot groups within k (a kept leader
    of another group), and merged with the first it verifies against; an orphan is
    left alone; a kept sample beyond k is not tried."""
    p, m = _hashes(image)
    far = hashing.to_hex(hashing.from_hex(p) ^ ((1 << 20) - 1))  # 20 bits away
    lead = HashItem("g-lead", p, m, 100, copies[0])
    follower = HashItem("g-follower", p, m, 100, copies[1])
    orphan = HashItem("g-orphan", p, m, 100, copies[2])
    keeper = HashItem("k-keeper", p, m, 100, look_alikes["letter_A"])
    beyond = HashItem("a-beyond", far, far, 100, copies[1])
    other = HashItem("b-other-leader", p, m, 100, copies[3])
    g = hot.group_of(lead)
    roles = [
        hot.Role(lead.key, g, hot.LEADER, lead.key, None, 0),
        hot.Role(follower.key, g, hot.FOLLOWER, lead.key, 0.1, 1),
        hot.Role(orphan.key, g, hot.ORPHAN, lead.key, 1.5, 1),
    ]
    items = {it.key: it for it in (lead, follower, orphan)}
    fates = {lead.key: ("near_duplicate", keeper.key, 0)}
    keepers = {keeper.key: keeper}
    out, counts = hot.resolve(roles, items, fates, keepers, 1.0)
    assert counts == {"verified_pairs": 1, "stranded": 1}
    others = hot_rescue.kept([lead, other, beyond], fates, keepers)
    assert set(others) == {keeper.key, other.key, beyond.key}  # the dropped leader is not
    counts = hot_rescue.rescue(
        out, roles, items, others, 10, 1.0, verify.pair_scores, False, counts
    )
    assert counts == {"verified_pairs": 2, "stranded": 0}  # one pair: other (beyond: > k)
    got = {d[0]: d for d in out}
    want = verify.score(copies[3], copies[1])  # b-other-leader < g-follower
    assert got[follower.key][1:4] == ("near_duplicate", other.key, 0)
    assert got[follower.key][4] == pytest.approx(want) and want <= 1.0
    assert got[orphan.key][1:3] == ("not_merged", lead.key)


# ----------------------------------------------------------------- both search modes


def _records(image, copies, look_alikes) -> list[SampleRecord]:
    """Two hot groups and ordinary samples: 150 copies of the image with its look-alikes
    and a copy at a 1-bit-different pHash with the highest resolution (it outranks the
    group's leader, whose followers are then checked against it); 120 copies of a
    second image; 70 copies of a third; a few distinct random hashes."""
    p, m = _hashes(image)
    other = image.rotate(90)
    p2, m2 = _hashes(other)
    sig2 = verify.signature(other)
    flipped = hashing.to_hex(hashing.from_hex(p) ^ 1)
    out = []

    def rec(key, ph, mh, side, sig):
        return SampleRecord(
            key,
            "mem://x",
            len(out),
            width=side,
            height=side,
            phash=ph,
            phash_mirror=mh,
            signature=sig,
        )

    for t in range(150):
        out.append(rec(f"c{t:03d}", p, m, 160 - t % 5, copies[t % len(copies)]))
    for name, s in look_alikes.items():
        out.append(rec(f"look-{name}", p, m, 160, s))
    out.append(rec("z-best", flipped, m, 400, copies[3]))
    for t in range(120):
        out.append(rec(f"r{t:03d}", p2, m2, 100 + t % 3, sig2))
    third = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    p3, m3 = _hashes(third)
    for t in range(70):
        out.append(rec(f"e{t:03d}", p3, m3, 120, verify.signature(third)))
    rng = np.random.default_rng(3)
    for t in range(30):
        h = hashing.to_hex(int(rng.integers(0, 2**63)))
        out.append(rec(f"x{t:02d}", h, h, 50, copies[0]))
    return out


_GOT: dict[str, list] = {}


def grab(name: str):
    """An assert_that check that keeps what it got (the pipeline runs in this process)."""
    return functools.partial(_keep, name)


def _keep(name: str, values) -> None:
    _GOT[name] = list(values)


def _run(records: list[SampleRecord], partition: str, against: Path) -> tuple[list, list]:
    config = validate_config(
        {
            "dedup": {
                "k": 10,
                "against": [str(against)],
                "partition": partition,
                "max_partition_size": 64,
                "clusterings": 4,
                "probes": 2,
            }
        }
    )
    got = _GOT
    got.clear()

    with TestPipeline() as pl:
        out, report = pl | beam.Create(records) | NearDedup(config.dedup, DecodeConfig())
        assert_that(
            out
            | beam.Map(
                lambda r: (
                    r.key,
                    r.state,
                    r.reason,
                    r.duplicate_of,
                    r.distance,
                    None if r.verify_score is None else round(r.verify_score, 9),
                )
            ),
            grab("records"),
            label="Records",
        )
        assert_that(report, grab("report"), label="Report")
    return got["records"], got["report"]


@pytest.mark.slow
def test_both_search_modes_decide_hot_groups_identically(image, copies, look_alikes, tmp_path):
    """...with a reference list holding the third group's hash: its 70 copies are all
    eval_overlap (its leader is matched, the members inherit the identical match)."""
    records = _records(image, copies, look_alikes)
    ref = next(r for r in records if r.key.startswith("e"))
    against = tmp_path / "eval.txt"
    against.write_text(f"eval-1,{ref.phash},{ref.phash_mirror}\n")
    one, one_report = _run(records, "none", against)
    many, many_report = _run(records, "clusters", against)
    assert sorted(one) == sorted(many)
    one_report, many_report = one_report[0], many_report[0]
    assert many_report["partition"] == "clusters" and many_report["partitions"] > 1
    assert one_report["hot"] == many_report["hot"]
    assert one_report["hot"]["groups"] == 3
    assert one_report["verify"]["leader_groups"] == many_report["verify"]["leader_groups"] == 3
    assert one_report["eval_overlap"] == many_report["eval_overlap"] == 70
    assert one_report["near_duplicates"] == many_report["near_duplicates"]
    assert one_report["cluster_sizes"] == many_report["cluster_sizes"]
    assert one_report["largest_clusters"] == many_report["largest_clusters"]
    states = {r[0]: r for r in one}
    assert len(states) == len(records)  # every sample once
    # the 1-bit neighbour outranks the group's leader: copies are its duplicates
    dup_of = collections.Counter(r[3] for r in one if r[1] == "duplicate")
    assert dup_of["z-best"] >= 140
    assert states["z-best"][1] == "pending"  # kept (the later stages say so)
    for name in ("letter_A", "digit_5", "recolour"):
        assert states[f"look-{name}"][1] == "pending"
    r_kept = [r for r in one if r[0].startswith("r") and r[1] == "pending"]
    assert len(r_kept) == 1
    overlap = [r for r in one if r[0].startswith("e")]
    assert len(overlap) == 70 and all(r[2:4] == ("eval_overlap", "eval-1") for r in overlap)


@pytest.mark.slow
def test_both_search_modes_decide_rounds_and_clusters_identically(
    image, copies, look_alikes, tmp_path
):
    """One leader a round, three rounds: the image's copies lead round 1; the turned
    picture's copies (orphans) round 2; a look-alike round 3; two look-alikes stay
    orphans. Both graphs decide the same, and the report's clusters count followers."""
    recs = []
    for t, it in enumerate(_two_images(image, copies, 80)):
        side = 160 if it.key.startswith("c") else 30
        recs.append(
            SampleRecord(
                it.key, "mem://r", t, width=side, height=side, phash=it.phash,
                phash_mirror=it.mirror, signature=it.signature,
            )
        )  # fmt: skip
    for name, sig in look_alikes.items():
        recs.append(dataclasses.replace(recs[0], key=f"look-{name}", signature=sig))
    against = tmp_path / "eval.txt"
    against.write_text("")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hot, "MAX_LEADERS", 1)
        one, one_report = _run(recs, "none", against)
        many, many_report = _run(recs, "clusters", against)
    assert sorted(one) == sorted(many)
    one_report, many_report = one_report[0], many_report[0]
    assert one_report["hot"] == many_report["hot"]
    assert one_report["hot"]["leaders"] == 3 and one_report["hot"]["orphans"] == 2
    assert one_report["cluster_sizes"] == many_report["cluster_sizes"] == {"80": 2}
    assert one_report["largest_clusters"] == many_report["largest_clusters"]
    kept = sorted(r[0] for r in one if r[1] == "pending")
    assert [k[0] for k in kept] == ["c", "l", "l", "l", "o"], kept


# ----------------------------------------------------------------- medoid member side


def test_medoid_centrality_scores_members_against_bounded_anchors_in_bounded_chunks():
    """A component of 200 members with anchors bounded (8 here): 200 x 8 anchor pairs
    (not all 19,900 pairs), scored in chunks of at most twice CENTRALITY_CHUNK pairs,
    with the same centrality as in one call; a component with an unsigned member is
    measured in pHash bits alike."""
    rng = np.random.default_rng(11)
    n = 230
    sigs: list[bytes | None] = []
    for _ in range(n):
        px = rng.integers(0, 256, (8, 8, 3))
        im = Image.fromarray(px.astype(np.uint8)).resize((64, 64), Image.Resampling.NEAREST)
        sigs.append(verify.signature(im))
    keys = [f"m{t:04d}" for t in rng.permutation(n)]
    ph = rng.integers(0, 2**63, size=n, dtype=np.int64).astype(np.uint64)
    component = np.zeros(n, np.int64)
    component[200:] = 1
    sigs[210] = None  # component 1 is measured in pHash bits
    calls: list[int] = []

    def counting(i, j, s, stop_above=None):
        calls.append(len(np.asarray(i)))
        return verify.pair_scores(i, j, s, stop_above=stop_above)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(keep, "MEDOID_ANCHORS", 8)
        whole = keep.centrality(component, keys, ph, ph, sigs)
        mp.setattr(keep, "CENTRALITY_CHUNK", 100)
        chunked = keep.centrality(component, keys, ph, ph, sigs, counting)
    np.testing.assert_array_equal(chunked, whole)
    # every (member, anchor) pair, an anchor pair once though met both ways
    assert sum(calls) == 200 * 8 - 8 - 8 * 7 // 2
    assert len(calls) > 1 and max(calls) <= 2 * 100
    assert np.all(whole > 0)
