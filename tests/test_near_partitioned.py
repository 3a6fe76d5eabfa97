"""The partitioned near-duplicate graph (pipeline/near_partitioned.py) against the
single-worker decisions: synthetic hashes with planted neighbours through Beam, the
recall check, and the bundled data with partitions forced tiny (golden states)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that
from PIL import Image

from mitigate import centre, verify
from mitigate import neardup as nd
from mitigate.config import load_config, validate_config
from mitigate.near import HashItem, decide_near_duplicates
from mitigate.partition import n_clusters_for, stable_hash
from mitigate.partition_batch import Batch
from mitigate.pipeline.near_partitioned import PartitionedSearch, RecallTooLow, check_recall
from mitigate.pipeline.run import run

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "configs" / "default.yaml"


def _items(n: int, seed: int, k: int = 10) -> list[HashItem]:
    p, m = nd.synthetic_hashes(
        n,
        k=k,
        n_planted=n // 3,
        n_mirror_planted=n // 10,
        n_chains=3,
        chain_length=6,
        hot_sizes=(4, 3),
        seed=seed,
    )
    res = np.random.default_rng(seed).integers(1, 4, size=p.size)  # ties: key decides
    ph, mh = nd.uint64_to_hex(p), nd.uint64_to_hex(m)
    return [HashItem(f"s{i:05d}", ph[i], mh[i], int(res[i])) for i in range(p.size)]


def _batches(items: list[HashItem], n_batches: int = 3) -> list[Batch]:
    by: dict[int, list[HashItem]] = {}
    for it in items:
        by.setdefault(stable_hash(it.key) % n_batches, []).append(it)
    return [Batch.of_items(bid, part) for bid, part in sorted(by.items())]


# many small partitions, verification and the medoid rule (the default decision path)
MANY_VERIFIED = {
    "partition": "clusters",
    "max_partition_size": 100,
    "clusterings": 6,
    "verify": True,
    "verify_threshold": 1.0,
    "keep": "medoid",
}


def _search(items: list[HashItem], check, **dedup) -> None:
    rules = {"verify": False, "keep": "resolution"}
    config = validate_config({"dedup": {"k": 10, **rules, **dedup}})
    with TestPipeline() as p:
        out = p | beam.Create(_batches(items)) | PartitionedSearch(config.dedup)
        report = (
            out["recall"],
            out["sizes"] | "S" >> beam.Map(lambda s: {"sizes": s}),
            out["clusters"],
            out["examples"] | "E" >> beam.Map(lambda e: {"examples_by_distance": e}),
            out["counts"],
            out["verify"] | "V" >> beam.Map(lambda v: {"verify": v}),
            out["plan"] | "P" >> beam.Map(lambda plan: {"plan": plan.centroids.shape}),
        ) | "Parts" >> beam.Flatten()
        decisions = out["decisions"] | "D" >> beam.Map(_decision)
        both = (
            decisions
            | "DL" >> beam.combiners.ToList()
            | "DT" >> beam.Map(lambda d: ("decisions", d)),
            report | "RL" >> beam.combiners.ToList() | "RT" >> beam.Map(lambda r: ("report", r)),
        ) | "Both" >> beam.Flatten()
        assert_that(both, lambda got: check(dict(got)))


def _decision(d) -> tuple:
    score = None if d.verify_score is None else round(d.verify_score, 9)
    return (d.key, str(d.reason), d.duplicate_of, d.distance, score)


def _single(items: list[HashItem], **kw) -> tuple[set, dict]:
    decisions, report = decide_near_duplicates(items, 10, mode="exact", **kw)
    return {_decision(d) for d in decisions}, report


def _with_centre(items: list[HashItem], seed: int) -> list[HashItem]:
    """Centre-view hashes with planted neighbours of their own (other pairs than the
    pHash ones); a few items have none (as from an old manifest)."""
    n = len(items)
    c, cm = nd.synthetic_hashes(n, k=10, n_planted=n // 3, n_mirror_planted=n // 10, seed=seed)
    rng = np.random.default_rng(seed)
    pick = rng.permutation(c.size)[:n]
    ch, cmh = nd.uint64_to_hex(c[pick]), nd.uint64_to_hex(cm[pick])
    return [
        dataclasses.replace(it, centre=None if rng.random() < 0.05 else ch[i] + cmh[i])
        for i, it in enumerate(items)
    ]


def _with_signatures(items: list[HashItem], seed: int) -> list[HashItem]:
    """Signatures (verify.signature of small random images): near copies are their
    group's image plus noise (verification merges them); a quarter get a fresh image
    (look-alikes that share a pHash neighbourhood: refused); a few have none (taken on
    pHash alone). Groups join the pairs of both views where items have centre hashes;
    one item in ten is then a taller image (centre-only pairs with it fail the frame
    gate)."""
    p = nd.hex_to_uint64([i.phash for i in items])
    m = nd.hex_to_uint64([i.mirror for i in items])
    exact = nd.find_near_duplicates(p, m, 10, mode="exact")
    ei, ej = exact.i, exact.j
    with_centre = [t for t, it in enumerate(items) if it.centre is not None]
    if with_centre:
        c, cm, _ = centre.centre_arrays([items[t].centre for t in with_centre])
        found = nd.find_near_duplicates(c, cm, 10, mode="exact")
        idx = np.asarray(with_centre)
        ei, ej = np.r_[ei, idx[found.i]], np.r_[ej, idx[found.j]]
    comp = nd.connected_components(len(items), ei, ej)
    rng = np.random.default_rng(seed)
    tall = bool(with_centre)

    def signature(pixels: np.ndarray) -> bytes:
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        height = 80 if tall and rng.random() < 0.1 else 64
        return verify.signature(image.resize((64, height), Image.Resampling.NEAREST))

    base = {int(c): rng.integers(0, 256, (8, 8, 3)) for c in set(comp.tolist())}
    out = []
    for i, it in enumerate(items):
        r = rng.random()
        if r < 0.05:
            sig = None
        elif r < 0.3:
            sig = signature(rng.integers(0, 256, (8, 8, 3)))
        else:
            sig = signature(base[int(comp[i])] + rng.integers(-3, 4, (8, 8, 3)))
        out.append(dataclasses.replace(it, signature=sig))
    return out


def _merged(parts: list[dict]) -> dict:
    out: dict = {}
    for part in parts:
        out.update(part)
    return out


@pytest.mark.slow
def test_one_partition_decides_exactly_as_the_single_worker_path():
    items = _items(300, seed=1)
    want, want_report = _single(items)
    assert len(want) > 100

    def check(got: dict) -> None:
        report = _merged(got["report"])
        assert set(got["decisions"]) == want and len(got["decisions"]) == len(want)
        assert report["sizes"] == {
            "partitions": 1,
            "largest_partition": len(items),
            "entries": len(items),
            "search_tasks": 1,
            "largest_search": len(items),
        }
        assert report["plan"] == (1, 1)
        assert report["estimate"] == 1.0 and report["queries"] > 300
        for key in ("cluster_sizes", "largest_clusters", "examples_by_distance"):
            assert report[key] == want_report[key], key
        assert report["near_duplicates"] == want_report["near_duplicates"]

    _search(items, check)


@pytest.mark.slow
def test_many_partitions_with_recall_one_give_the_same_kept_set_and_duplicate_of():
    items = _items(300, seed=2)
    want, want_report = _single(items)

    def check(got: dict) -> None:
        report = _merged(got["report"])
        assert report["plan"] == (6, n_clusters_for(len(items), 100, probes=2))
        sizes = report["sizes"]
        assert sizes["partitions"] > 100 and sizes["largest_partition"] <= 100
        assert sizes["search_tasks"] == sizes["partitions"]  # none oversized: none split
        assert report["estimate"] == 1.0, report
        assert set(got["decisions"]) == want
        assert report["cluster_sizes"] == want_report["cluster_sizes"]
        assert report["largest_clusters"] == want_report["largest_clusters"]

    _search(items, check, partition="clusters", max_partition_size=100, clusterings=6)


def _with_hot_region(items: list[HashItem], n_hot: int, seed: int) -> list[HashItem]:
    """``n_hot`` more items from one dense region (each bit of a centre flipped with
    probability 0.25): few pairs inside it, but the clusterings put it in one partition."""
    rng = np.random.default_rng(seed)
    centre = np.uint64(rng.integers(0, 2**63))
    bits = rng.random((n_hot, 64)) < 0.25
    hot = centre ^ (bits * (np.uint64(1) << np.arange(64, dtype=np.uint64))).sum(
        axis=1, dtype=np.uint64
    )
    ph, mh = nd.uint64_to_hex(hot), nd.uint64_to_hex(hot[::-1])
    return items + [HashItem(f"h{i:05d}", ph[i], mh[i], 2) for i in range(n_hot)]


@pytest.mark.slow
def test_an_oversized_partition_is_searched_in_blocks_with_the_same_decisions(
    monkeypatch, tmp_path
):
    """The same plan searched with and without cutting oversized partitions into blocks
    gives the same decisions and pairs; with blocks no task holds much over the bound."""
    import pickle

    from mitigate import partition_split

    items = _with_hot_region(_items(300, seed=4), 260, seed=4)

    def keeper(name: str):
        def keep(got: dict) -> None:  # runs in the pipeline: the result goes to a file
            run = {"decisions": set(got["decisions"]), **_merged(got["report"])}
            (tmp_path / name).write_bytes(pickle.dumps(run))

        return keep

    settings = {"partition": "clusters", "max_partition_size": 100, "clusterings": 6}
    _search(items, keeper("split"), **settings)
    monkeypatch.setattr(partition_split, "n_blocks", lambda size, bound: 1)
    _search(items, keeper("whole"), **settings)
    split, whole = (pickle.loads((tmp_path / n).read_bytes()) for n in ("split", "whole"))
    assert split["sizes"]["largest_partition"] > 100  # the hot region outgrew the bound
    assert split["sizes"]["search_tasks"] > split["sizes"]["partitions"]  # and was split
    assert split["sizes"]["largest_search"] <= 110 < whole["sizes"]["largest_search"]
    assert whole["sizes"]["search_tasks"] == whole["sizes"]["partitions"]
    assert split["decisions"] == whole["decisions"] and len(split["decisions"]) > 100
    for key in ("merged", "estimate", "cluster_sizes", "largest_clusters"):
        assert split[key] == whole[key], key


@pytest.mark.slow
def test_verification_and_medoid_in_many_partitions_decide_as_the_single_worker_path():
    items = _with_signatures(_items(300, seed=2), seed=5)
    want, want_report = _single(items, verify_threshold=1.0, keep_rule="medoid")
    reasons = {w[1] for w in want}
    assert reasons == {"near_duplicate", "not_merged"}, reasons
    assert want_report["verify"]["refused_pairs"] > 20

    def check(got: dict) -> None:
        report = _merged(got["report"])
        sizes = report["sizes"]
        assert sizes["partitions"] > 100 and sizes["largest_partition"] <= 100
        assert sizes["search_tasks"] == sizes["partitions"]  # none oversized: none split
        assert report["estimate"] == 1.0, report
        assert set(got["decisions"]) == want and len(got["decisions"]) == len(want)
        for key in ("cluster_sizes", "largest_clusters"):
            assert report[key] == want_report[key], key
        assert report["near_duplicates"] == want_report["near_duplicates"]
        assert report["verify"]["refused_pairs"] == want_report["verify"]["refused_pairs"]
        assert report["merged_pairs"] == want_report["verify"]["merged_pairs"]
        assert report["verify"]["examples_refused"] == want_report["verify"]["examples_refused"]

    _search(items, check, **MANY_VERIFIED)


@pytest.mark.slow
def test_centre_view_in_many_partitions_decides_as_the_single_worker_path():
    """Both views searched in their own partitions, candidates joined, centre-only
    pairs gated and verified: the same decisions as the one-worker search (recall 1)."""
    items = _with_signatures(_with_centre(_items(300, seed=2), seed=7), seed=5)
    want, want_report = _single(items, verify_threshold=1.0, keep_rule="medoid")
    assert want_report["verify"]["centre_only_pairs"] > 20
    without, _ = _single(items, verify_threshold=1.0, keep_rule="medoid", centre_view=False)
    # the centre view's pairs merge more (groups change, so not a superset)
    assert sum(w[1] == "near_duplicate" for w in want) > sum(
        w[1] == "near_duplicate" for w in without
    )

    def check(got: dict) -> None:
        report = _merged(got["report"])
        assert report["estimate"] == 1.0, report
        assert report["sizes"]["partitions"] > 200  # both views' partitions
        assert report["centre_only_pairs"] == want_report["verify"]["centre_only_pairs"]
        assert set(got["decisions"]) == want and len(got["decisions"]) == len(want)
        for key in ("cluster_sizes", "largest_clusters"):
            assert report[key] == want_report[key], key
        assert report["verify"]["refused_pairs"] == want_report["verify"]["refused_pairs"]
        assert report["merged_pairs"] == want_report["verify"]["merged_pairs"]

    _search(items, check, **MANY_VERIFIED)


@pytest.mark.slow
def test_missed_pairs_are_measured_and_fail_the_run_below_min_recall():
    items = _items(400, seed=3)

    def check(got: dict) -> None:
        report = _merged(got["report"])
        assert 0.3 < report["estimate"] < 1.0, report
        lo, hi = report["ci"]
        assert lo < report["estimate"] < hi
        # the decisions are those of the found pairs: never a false duplicate
        dup_of = {d[0]: d[2] for d in got["decisions"]}
        by_key = {i.key: i for i in items}
        for key, other in dup_of.items():
            a, b = by_key[key], by_key[other]
            d = nd.pair_distance(
                *[nd.hex_to_uint64([h]) for h in (a.phash, a.mirror, b.phash, b.mirror)]
            )
            assert int(d[0]) <= 10

    _search(items, check, partition="clusters", max_partition_size=40, clusterings=1)
    config = validate_config({"dedup": {"min_recall": 0.95, "clusterings": 1}})
    with pytest.raises(RecallTooLow, match=r"dedup.min_recall: measured pair recall 0.800"):
        check_recall({"estimate": 0.8, "ci": [0.7, 0.9], "queries": 1000}, config.dedup)
    assert check_recall({"estimate": None, "ci": [0.0, 1.0], "queries": 10}, config.dedup)
    assert check_recall({"estimate": 0.95, "ci": [0.9, 1.0], "queries": 10}, config.dedup)


@pytest.mark.slow
def test_bundled_data_with_tiny_partitions_reaches_the_golden_states(tmp_path, expected_states):
    out = tmp_path / "out"
    config, _ = load_config(
        DEFAULT,
        [
            f"output.path={out}",
            "rebalance.enabled=false",
            "dedup.partition=clusters",
            "dedup.max_partition_size=4",
            "dedup.clusterings=8",
        ],
    )
    summary = run(config)
    rows = pq.read_table(out / "manifest").to_pylist()
    got = {(r["key"], Path(r["source"]).name): (r["state"], r["reason"] or "") for r in rows}
    want = {(e["key"], e["shard"]): (e["state"], e["reason"]) for e in expected_states}
    assert got == want
    related = {
        e["key"]: e["related_key"] for e in expected_states if e["reason"] == "near_duplicate"
    }
    assert {r["key"]: r["duplicate_of"] for r in rows if r["reason"] == "near_duplicate"} == related
    dedup = summary["dedup"]
    assert dedup["partition"] == "clusters" and dedup["clusterings"] == 8
    assert dedup["partitions"] > 20 and dedup["largest_partition"] <= 8
    assert dedup["search_tasks"] >= dedup["partitions"]
    assert dedup["pair_recall"]["estimate"] == 1.0
    assert dedup["near_duplicates"] == len(related)
