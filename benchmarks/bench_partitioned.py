"""Benchmark of the partitioned near-duplicate search (dedup.partition: clusters).

Hash-only: synthetic 64-bit (pHash, mirror) pairs with planted neighbours at every
distance 0..k (neardup.synthetic_hashes: 10 % planted copies, 2 % mirror copies), no
images decoded. Three parts::

    # recall vs clusterings and clusters per clustering (core only, in memory)
    python benchmarks/bench_partitioned.py choose --n 200000 --clusters 64,512,4000
    # the Beam graph (PartitionedSearch) on the DirectRunner, one fresh process per size,
    # against the exact single-worker search of the same hashes (baseline)
    python benchmarks/bench_partitioned.py beam --sizes 100000,1000000 --max-partition-size 20000
    # worker memory: search of one partition of S hashes in a fresh process, at two N
    python benchmarks/bench_partitioned.py worker --partition-sizes 20000,200000
    # CPU of the nearest-centroid assignment at the 10^9 geometry
    python benchmarks/bench_partitioned.py assign --n 40000 --clusters 4000 --clusterings 5

Timings are wall clock on a shared 2-core machine (+-20 %); ratios are within one run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pickle
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from mitigate import neardup as nd
from mitigate import partition as pt

K = 10


#: Fraction of each chunk drawn from one dense region (``--hot``): every bit of a fixed
#: centre flipped with probability 0.25, so pairs inside it are rare (distance ~24) but
#: the k-modes clusterings put the whole region in one partition per clustering -- the
#: shape of real data's hot spots, and what makes a partition outgrow its bound.
HOT = 0.0


def _hot(n: int, seed: int) -> np.ndarray:
    centre = np.uint64(np.random.default_rng(4242).integers(0, 2**63))
    bits = np.random.default_rng(seed + 77).random((n, 64)) < 0.25
    weights = np.uint64(1) << np.arange(64, dtype=np.uint64)
    return centre ^ (bits * weights).sum(axis=1, dtype=np.uint64)


def _hashes(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    n_hot = int(n * HOT)
    rest = n - n_hot
    p, m = nd.synthetic_hashes(
        int(rest * 0.88),
        k=K,
        n_planted=int(rest * 0.10),
        n_mirror_planted=int(rest * 0.02),
        seed=seed,
    )
    if not n_hot:
        return p, m
    hot = _hot(n_hot, seed)
    return np.r_[p, hot], np.r_[m, hot[::-1]]


# ------------------------------------------------------------------ choose (core)


def choose(n: int, clusters: list[int], clusterings: list[int], probes: int = 1) -> None:
    p, m = _hashes(n, seed=1)
    t0 = time.perf_counter()
    exact = nd.find_near_duplicates(p, m, K, mode="exact")
    t_exact = time.perf_counter() - t0
    print(f"N={p.size:,} exact pairs {len(exact):,} in {t_exact:.1f} s (baseline)")
    print(
        f"{'K':>6} {'C':>3} {'recall':>7} {'recall d=10':>11} {'entries/node':>12} "
        f"{'largest':>8} {'mean':>7} {'fit s':>6} {'search s':>8} {'x baseline':>10}"
    )
    rng = np.random.default_rng(0)
    sample = rng.choice(p.size, size=min(pt.FIT_SAMPLE_SIZE, p.size), replace=False)
    want_d = np.bincount(exact.dist, minlength=K + 1)
    for kk in clusters:
        for c in clusterings:
            t0 = time.perf_counter()
            plan = pt.fit_clusterings(p[sample], m[sample], kk, c, k=K)
            plan = dataclasses.replace(plan, probes=probes)
            t_fit = time.perf_counter() - t0
            t0 = time.perf_counter()
            found, sizes = pt.partition_pairs(plan, p, m, K)
            t_search = time.perf_counter() - t0
            got_d = np.bincount(found.dist, minlength=K + 1)
            print(
                f"{kk:>6} {c:>3} {len(found) / len(exact):>7.4f} {got_d[K] / want_d[K]:>11.4f} "
                f"{sum(sizes) / p.size:>12.2f} {max(sizes):>8,} {np.mean(sizes):>7.0f} "
                f"{t_fit:>6.1f} {t_search:>8.1f} {t_search / t_exact:>10.2f}",
                flush=True,
            )


# ------------------------------------------------------------------ beam


PER_CHUNK = 100_000
BATCH_SAMPLES = 50_000


def _key(chunk: int, i: np.ndarray) -> list[str]:
    return [f"{chunk:05d}-{x:07d}" for x in i.tolist()]


def _generate(chunk: int, per_chunk: int, n_batches: int):
    """One chunk of synthetic hashes (planted neighbours inside the chunk), split into
    pieces by batch (a stable hash of the key), so pairs cross batches."""
    from mitigate import partition_batch as pb

    p, m = _hashes(per_chunk, seed=1000 + chunk)
    keys = np.asarray(_key(chunk, np.arange(p.size)), dtype=np.str_)
    res = np.random.default_rng(chunk).integers(100, 1000, size=p.size)
    bid = (pb.stable_hashes(keys.tolist()) % np.uint64(n_batches)).astype(np.int64)
    yield from pb.split_by(bid, keys, p, m, res)


def _assemble(element):
    from mitigate import partition_batch as pb

    bid, parts = element
    parts = list(parts)
    keys, p, m, res = (np.concatenate([x[i] for x in parts]) for i in range(4))
    order = np.argsort(keys)
    return pb.Batch(bid, keys[order], p[order], m[order], res[order], [None] * keys.size)


def beam_child(
    n: int, max_partition_size: int, clusterings: int, out: str, probes: int = 1
) -> None:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from mitigate.config import validate_config
    from mitigate.pipeline.near_batched import PartitionedSearch

    config = validate_config(
        {
            "dedup": {
                "k": K,
                "partition": "clusters",
                "max_partition_size": max_partition_size,
                "clusterings": clusterings,
                "probes": probes,
                "min_recall": 0.0,
                "verify": False,  # hash-only: no signatures (pairs taken on pHash alone)
                "keep": "resolution",
            }
        }
    )
    per_chunk = min(n, PER_CHUNK)
    chunks = max(1, n // per_chunk)
    n_batches = max(1, chunks * per_chunk // BATCH_SAMPLES)
    t0 = time.perf_counter()
    with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"])) as pipeline:
        batches = (
            pipeline
            | beam.Create(list(range(chunks)))
            | beam.FlatMap(_generate, per_chunk, n_batches)
            | "ByBatch" >> beam.GroupByKey()
            | "Assemble" >> beam.Map(_assemble)
        )
        res = batches | PartitionedSearch(config.dedup)

        def write(_, recall, sizes, counts, clusters, plan):
            Path(out).write_text(
                json.dumps(
                    {
                        "recall": recall,
                        "partitions": sizes["partitions"],
                        "largest_partition": sizes["largest_partition"],
                        "entries": sizes["entries"],
                        "search_tasks": sizes["search_tasks"],
                        "largest_search": sizes["largest_search"],
                        "candidates": counts["merged"] + counts["refused"],
                        "counts": counts,
                        "clusters_per_clustering": plan.n_clusters,
                        "clusterings": plan.n_clusterings,
                        "cluster_sizes": clusters["cluster_sizes"],
                    }
                )
            )

        from apache_beam.pvalue import AsSingleton

        _ = (
            pipeline
            | "Seed" >> beam.Create([None])
            | "Write"
            >> beam.Map(
                write,
                AsSingleton(res["recall"]),
                AsSingleton(res["sizes"]),
                AsSingleton(res["counts"]),
                AsSingleton(res["clusters"]),
                AsSingleton(res["plan"]),
            )
        )
    wall = time.perf_counter() - t0
    report = json.loads(Path(out).read_text())
    report["seconds"] = wall
    report["maxrss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report["n"] = chunks * per_chunk
    Path(out).write_text(json.dumps(report))


def exact_child(n: int, out: str) -> None:
    per_chunk = min(n, PER_CHUNK)
    chunks = max(1, n // per_chunk)
    ps, ms = [], []
    for c in range(chunks):
        p, m = _hashes(per_chunk, seed=1000 + c)
        ps.append(p)
        ms.append(m)
    p, m = np.concatenate(ps), np.concatenate(ms)
    t0 = time.perf_counter()
    # item pairs (identical hashes included), as the partitioned graph reports them
    found = nd.find_near_duplicates(p, m, K, mode="exact")
    wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(out).write_text(json.dumps({"seconds": wall, "pairs": len(found), "maxrss_mib": rss}))


def _child(args: list[str]) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    subprocess.run([sys.executable, __file__, *args, "--hot", str(HOT), "--out", out], check=True)
    return json.loads(Path(out).read_text())


def bytes_per_unit() -> dict[str, float]:
    """Pickled bytes (Beam's default coder for these elements) per unit of each
    shuffled collection, from real elements of 50,000 samples / entries / pairs."""
    from mitigate import partition_batch as pb
    from mitigate.near import HashItem
    from mitigate.verify import SIG_BYTES

    n = 50_000
    p, m = _hashes(n, seed=5)
    keys = np.asarray(_key(1, np.arange(p.size)), dtype=np.str_)
    rng = np.random.default_rng(0)
    sigs = [rng.integers(0, 256, SIG_BYTES, dtype=np.uint8).tobytes() for _ in range(p.size)]
    res = np.full(p.size, 512, np.int64)
    no_sig = pb.Batch(3, keys, p, m, res, [None] * p.size)
    with_sig = pb.Batch(3, keys, p, m, res, sigs)
    ids = no_sig.ids
    ids2, ids3 = ids + 1, ids + 2  # distinct objects (pickle memoises a repeated one)
    item = HashItem(str(keys[0]), "8f3a5b0c1d2e3f40", "0f3a5b0c1d2e3f41", 512, sigs[0])
    per = lambda obj, count: len(pickle.dumps(obj)) / count  # noqa: E731
    return {
        "item_with_signature": per((7, item), 1),
        "batch_per_sample": per((3, no_sig), p.size),
        "batch_with_signature_per_sample": per((3, with_sig), p.size),
        "entry": per((12, (ids, p, m)), p.size),
        "pair": per((3, (ids, ids2, np.zeros(p.size, np.uint8))), p.size),
        "pair_with_key_and_signature": per(
            (3, (ids, ids2, np.zeros(p.size, np.uint8), keys, sigs)), p.size
        ),
        "directed_edge": per((3, (ids, ids2)), p.size),
        "edge_with_m": per((3, (ids, ids2, ids3)), p.size),
        "member_with_signature": per((3, ("member", (ids, ids2, keys, p, m, res, sigs))), p.size),
    }


def shuffled_per_sample(b: dict[str, float], r: dict, rounds: int, signatures: bool) -> dict:
    """Bytes through GroupByKey/CoGroupByKey per sample, by step, from the element sizes
    and the counts of one run (entries, pairs; edges in the rounds bounded by pairs)."""
    n = r["n"]
    pairs = (r["counts"].get("merged", 0) + r["counts"].get("refused", 0)) / n
    batch = b["batch_with_signature_per_sample" if signatures else "batch_per_sample"]
    member = b["member_with_signature"] if signatures else b["entry"] + 40
    in_components = sum(int(s) * c for s, c in r["cluster_sizes"].items()) / n
    steps = {
        "batching (records path: item by key hash)": b["item_with_signature"]
        if signatures
        else batch,
        "partitions": r["entries"] / n * b["entry"],
        "join A (batch + candidate pairs)": batch + r["candidates"] / n * b["pair"],
        "join B (batch + pairs with key, signature)": batch
        + pairs * (b["pair_with_key_and_signature"] if signatures else b["pair"] + 60),
        "star rounds": rounds * 2 * 2 * pairs * b["directed_edge"],
        "final m(u)": 2 * pairs * (b["directed_edge"] + b["edge_with_m"]),
        "members join (batch + labels + edges)": batch
        + in_components * b["directed_edge"]
        + pairs * b["pair"],
        "keep rule (members + edges by component)": in_components * member + pairs * b["pair"],
    }
    steps["total"] = sum(steps.values())
    return {k: round(v, 1) for k, v in steps.items()}


def bench_beam(sizes: list[int], max_partition_size: int, clusterings: int, probes: int) -> None:
    from mitigate.pipeline.near_batched import STAR_ROUNDS

    b = bytes_per_unit()
    print("pickled bytes per unit:", json.dumps({k: round(v, 1) for k, v in b.items()}))
    for n in sizes:
        base = _child(["exact-child", "--n", str(n)])
        r = _child(
            [
                "beam-child",
                "--n",
                str(n),
                "--max-partition-size",
                str(max_partition_size),
                "--clusterings",
                str(clusterings),
                "--probes",
                str(probes),
            ]
        )
        n_items = r["n"]
        pairs = r["counts"]["merged"]
        rec = r["recall"]
        print(
            json.dumps(
                {
                    "n": n_items,
                    "beam_seconds": round(r["seconds"], 1),
                    "exact_one_worker_seconds": round(base["seconds"], 1),
                    "beam_over_exact": round(r["seconds"] / base["seconds"], 2),
                    "pairs_found": pairs,
                    "pairs_exact": base["pairs"],
                    "true_pair_recall": round(pairs / base["pairs"], 4),
                    "measured_pair_recall": rec["estimate"],
                    "measured_ci": [round(x, 4) for x in rec["ci"]],
                    "partitions": r["partitions"],
                    "clusters_per_clustering": r["clusters_per_clustering"],
                    "largest_partition": r["largest_partition"],
                    "search_tasks": r["search_tasks"],
                    "largest_search": r["largest_search"],
                    "entries_per_sample": round(r["entries"] / n_items, 2),
                    "remaining_edges_after_rounds": r["counts"]["remaining"],
                    "shuffled_bytes_per_sample_hash_only": shuffled_per_sample(
                        b, r, STAR_ROUNDS, False
                    ),
                    "shuffled_bytes_per_sample_with_signatures": shuffled_per_sample(
                        b, r, STAR_ROUNDS, True
                    ),
                    "directrunner_maxrss_mib": round(r["maxrss_mib"]),
                    "exact_maxrss_mib": round(base["maxrss_mib"]),
                }
            ),
            flush=True,
        )


# ------------------------------------------------------------------ worker memory


def worker_child(size: int, out: str) -> None:
    """What one worker does with one partition: its chunks of (ids, pHash, mirror) in,
    the exact search (as the Search step), the pairs out."""
    from mitigate import partition_batch as pb

    p, m = _hashes(size, seed=7)
    ids = np.arange(p.size, dtype=np.int64)
    chunks = [(ids[s : s + 2048], p[s : s + 2048], m[s : s + 2048]) for s in range(0, p.size, 2048)]
    t0 = time.perf_counter()
    a, _, _ = pb.search_chunks(chunks, K, "auto")
    wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(out).write_text(json.dumps({"seconds": wall, "pairs": int(a.size), "maxrss_mib": rss}))


def bench_worker(sizes: list[int]) -> None:
    for s in sizes:
        r = _child(["worker-child", "--n", str(s)])
        print(json.dumps({"partition_size": s, **{k: round(v, 1) for k, v in r.items()}}))


def bench_assign(n: int, n_clusters: int, n_clusterings: int) -> None:
    """CPU of nearest-centroid assignment per hash (the map side of the partitioning)."""
    p, m = _hashes(n, seed=3)
    t0 = time.perf_counter()
    plan = pt.fit_clusterings(
        p[: pt.FIT_SAMPLE_SIZE], m[: pt.FIT_SAMPLE_SIZE], n_clusters, n_clusterings
    )
    fit = time.perf_counter() - t0
    t0 = time.process_time()
    pt.assign(plan, p, m)
    cpu = time.process_time() - t0
    print(
        json.dumps(
            {
                "n": p.size,
                "clusters": n_clusters,
                "clusterings": n_clusterings,
                "fit_s": round(fit, 1),
                "assign_cpu_us_per_hash": round(cpu / p.size * 1e6),
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "what",
        choices=["choose", "beam", "worker", "assign", "beam-child", "exact-child", "worker-child"],
    )
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--sizes", default="100000")
    ap.add_argument("--clusters", default="64,512,4000")
    ap.add_argument("--clusterings", default="5")
    ap.add_argument("--max-partition-size", type=int, default=20_000)
    ap.add_argument("--partition-sizes", default="20000,200000")
    ap.add_argument("--probes", type=int, default=1)
    ap.add_argument("--hot", type=float, default=0.0, help="fraction from one dense region")
    ap.add_argument("--out")
    a = ap.parse_args()
    global HOT
    HOT = a.hot
    ints = lambda text: [int(x) for x in text.split(",")]  # noqa: E731
    if a.what == "choose":
        choose(a.n, ints(a.clusters), ints(a.clusterings), a.probes)
    elif a.what == "beam":
        bench_beam(ints(a.sizes), a.max_partition_size, ints(a.clusterings)[0], a.probes)
    elif a.what == "worker":
        bench_worker(ints(a.partition_sizes))
    elif a.what == "assign":
        bench_assign(a.n, ints(a.clusters)[0], ints(a.clusterings)[0])
    elif a.what == "beam-child":
        beam_child(a.n, a.max_partition_size, ints(a.clusterings)[0], a.out, a.probes)
    elif a.what == "exact-child":
        exact_child(a.n, a.out)
    else:
        worker_child(a.n, a.out)


if __name__ == "__main__":
    main()
