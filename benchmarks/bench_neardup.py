"""Benchmark of mitigate.neardup: exact multi-index hashing -- the compiled kernel and
the numpy join, same run, same pairs asserted -- vs numpy brute force (and LSH, and
optionally imagededup) on random 64-bit hashes with planted near duplicates.

Examples::

    python benchmarks/bench_neardup.py --sizes 1000000 --no-lsh    # kernel vs numpy at 1M
    python benchmarks/bench_neardup.py --sizes 10000000 --no-lsh   # kernel only at 10M
    python benchmarks/bench_neardup.py --calibrate-compiled --sizes 300000,1000000

    python benchmarks/bench_neardup.py --sizes 10000,100000 --k 10
    python benchmarks/bench_neardup.py --sizes 1000000 --brute-max 100000
    python benchmarks/bench_neardup.py --sizes 10000 --imagededup-python /tmp/idd/bin/python
    python benchmarks/bench_neardup.py --calibrate      # refit the COST_* constants

Brute force runs only for N <= --brute-max; above that its time is extrapolated from the
per-pair cost measured in the same run on a --brute-sample-sized prefix (reported as
"extrapolated").  Peak memory is the tracemalloc peak of the measured call (numpy
allocations are traced) plus the process max RSS at the end.  All timings are wall
clock on a possibly shared machine: treat them as +-20 %.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")
log = logging.getLogger("bench_neardup")


LAST_CPU: list[float] = [0.0]


def measure(fn: Callable[[], T], trace: bool = True) -> tuple[T, float, float]:
    """Run ``fn`` once; return (result, wall seconds, tracemalloc peak MiB).

    The process CPU seconds of the call are left in ``LAST_CPU[0]`` (on a shared
    machine CPU time is the less noisy number).
    """
    if trace:
        tracemalloc.start()
        tracemalloc.reset_peak()
    c0 = time.process_time()
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    LAST_CPU[0] = time.process_time() - c0
    peak = 0
    if trace:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return out, dt, peak / 2**20


def cpu_of(fn: Callable[[], object]) -> float:
    """CPU seconds of one untraced call."""
    measure(fn, trace=False)
    return LAST_CPU[0]


def make_data(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """~n hashes: 1 % planted copies at distances 0..k, 0.5 % mirror-rule copies,
    10 chains of 8, hot groups of 1000/100/10 identical hashes, rest random."""
    from mitigate.neardup import synthetic_hashes

    n_planted = n // 100
    n_mirror = n // 200
    hot = (1000, 100, 10) if n >= 10_000 else (10,)
    n_chain = 10 * 8
    n_random = max(1, n - n_planted - n_mirror - n_chain - sum(hot))
    return synthetic_hashes(
        n_random,
        k=k,
        n_planted=n_planted,
        n_mirror_planted=n_mirror,
        n_chains=10,
        chain_length=8,
        hot_sizes=hot,
        seed=seed,
    )


def run_imagededup(python: str, phash: np.ndarray, k: int, workers: int) -> dict[str, Any]:
    """Run imagededup's PHash.find_duplicates on hex encodings in another interpreter."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "hashes.npy")
        np.save(path, phash)
        cmd = [python, os.path.abspath(__file__), "--imagededup-worker", path, str(k), str(workers)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            return {"error": res.stderr.strip().splitlines()[-1:] or ["failed"]}
        return json.loads(res.stdout.strip().splitlines()[-1])


def imagededup_worker(path: str, k: int, workers: int) -> None:
    """Executed under the imagededup interpreter: prints one JSON line."""
    import warnings

    warnings.filterwarnings("ignore")
    logging.disable(logging.INFO)
    from imagededup.methods import PHash

    phash = np.load(path)
    encodings = {str(i): f"{int(h):016x}" for i, h in enumerate(phash.tolist())}
    t0 = time.perf_counter()
    dup = PHash(verbose=False).find_duplicates(
        encoding_map=encodings,
        max_distance_threshold=k,
        scores=True,
        num_dist_workers=workers,
    )
    dt = time.perf_counter() - t0
    pairs = sorted(
        {(min(int(a), int(b)), max(int(a), int(b))) for a, lst in dup.items() for b, _ in lst}
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": dt, "pairs": pairs, "maxrss_mib": peak}))


def bench_size(n: int, args: argparse.Namespace) -> dict[str, Any]:
    from mitigate import neardup as nd

    k = args.k
    p, m = make_data(n, k, args.seed)
    n = p.shape[0]
    groups = nd.collapse_identical(p, m)
    plan = nd.plan_mih(k, groups.n_nodes, 2 * groups.n_nodes)
    row: dict[str, Any] = {
        "n": n,
        "k": k,
        "unique": groups.n_nodes,
        "plan_m": plan.m,
        "plan_radii": list(plan.radii),
    }
    print(
        f"\n== N={n:,} (unique (phash,mirror) {groups.n_nodes:,}), k={k}, "
        f"MIH m={plan.m} radii={plan.radii}, auto mode: {nd.choose_mode(groups.n_nodes, k)}",
        flush=True,
    )

    kplan = nd.plan_compiled(k, groups.n_nodes)
    row.update(kernel_lengths=list(kplan.lengths), kernel_radii=list(kplan.radii))
    print(f"compiled kernel plan: lengths={kplan.lengths} radii={kplan.radii}", flush=True)
    exact, t_exact, _ = measure(
        lambda: nd.find_near_duplicates(p, m, k, mode="exact", engine="compiled"), trace=False
    )
    cpu_exact = LAST_CPU[0]
    rss_kernel = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    row.update(exact_s=t_exact, exact_cpu_s=cpu_exact, kernel_rss_mib=rss_kernel, pairs=len(exact))
    print(
        f"exact, compiled  : {t_exact:8.2f} s wall ({cpu_exact:.2f} s CPU)  process max RSS "
        f"{rss_kernel:7.0f} MiB  {len(exact):,} pairs",
        flush=True,
    )
    if n <= args.numpy_max:
        ref, t_np, _ = measure(
            lambda: nd.find_near_duplicates(p, m, k, mode="exact", engine="numpy"), trace=False
        )
        cpu_np = LAST_CPU[0]
        same = ref.same_as(exact)
        assert same, "compiled kernel and numpy exact search disagree"
        rss_np = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        row.update(
            numpy_s=t_np, numpy_cpu_s=cpu_np, numpy_same=same, speedup_kernel=cpu_np / cpu_exact
        )
        print(
            f"exact, numpy     : {t_np:8.2f} s wall ({cpu_np:.2f} s CPU)  process max RSS "
            f"{rss_np:7.0f} MiB  same pair set: {same}\n"
            f"kernel vs numpy  : {cpu_np / cpu_exact:.2f}x CPU, {t_np / t_exact:.2f}x wall",
            flush=True,
        )
    else:
        np_plan = nd.plan_mih(k, groups.n_nodes, 2 * groups.n_nodes)
        n_query = groups.n_nodes // 2 + groups.n_nodes
        row.update(numpy_model_s=nd.estimate_mih_cost_ns(np_plan, groups.n_nodes, n_query) * 1e-9)

    if n <= args.brute_max:
        brute, t_brute, mem_brute = measure(lambda: nd.brute_force_pairs(p, m, k))
        cpu_brute = LAST_CPU[0]
        same = brute.same_as(exact)
        assert same, "exact MIH and brute force disagree"
        per_pair = t_brute / (n * (n - 1) / 2)
        row.update(
            brute_s=t_brute, brute_cpu_s=cpu_brute, brute_mib=mem_brute, brute_extrapolated=False
        )
        print(
            f"brute force      : {t_brute:8.2f} s wall ({cpu_brute:.2f} s CPU)  peak "
            f"{mem_brute:7.1f} MiB  ({per_pair * 1e9:.2f} ns/pair) same pair set: {same}",
            flush=True,
        )
    else:
        s = min(n, args.brute_sample)
        _, t_s, _ = measure(lambda: nd.brute_force_pairs(p[:s], m[:s], k))
        per_pair = t_s / (s * (s - 1) / 2)
        row.update(brute_ns_pair_cpu=LAST_CPU[0] / (s * (s - 1) / 2) * 1e9)
        t_brute = per_pair * n * (n - 1) / 2
        row.update(brute_s=t_brute, brute_extrapolated=True)
        print(
            f"brute force      : {t_brute:8.0f} s  EXTRAPOLATED from {per_pair * 1e9:.2f} "
            f"ns/pair measured on a {s:,}-item prefix in this run "
            f"({row['brute_ns_pair_cpu']:.2f} ns/pair CPU: the machine-speed calibration)",
            flush=True,
        )
    if "numpy_model_s" in row:
        # The numpy cost model's constants were fitted on a day when brute force cost
        # COST_BRUTE_PAIR_NS per pair: scale by today's measured brute-force cost.
        brute_ns = row.get("brute_ns_pair_cpu", per_pair * 1e9)
        scaled = row["numpy_model_s"] * brute_ns / nd.COST_BRUTE_PAIR_NS
        row.update(numpy_estimate_s=scaled)
        print(
            f"exact, numpy     : not run (N > --numpy-max); ESTIMATE {scaled:.0f} CPU s = cost "
            f"model {row['numpy_model_s']:.0f} s x (brute force {brute_ns:.2f} ns/pair today "
            f"/ {nd.COST_BRUTE_PAIR_NS} ns/pair in the model); kernel vs estimate "
            f"{scaled / cpu_exact:.1f}x",
            flush=True,
        )
    row["speedup"] = t_brute / t_exact
    print(f"speedup exact vs brute: {t_brute / t_exact:.1f}x", flush=True)

    if args.lsh:
        params = nd.plan_lsh(k, groups.n_nodes, target_recall=args.target_recall)
        approx, t_lsh, mem_lsh = measure(
            lambda: nd.find_near_duplicates(p, m, k, mode="lsh", lsh=params)
        )
        cpu_lsh = LAST_CPU[0]
        truth = exact
        true_keys = set(zip(truth.i.tolist(), truth.j.tolist(), strict=True))
        found = sum(
            1 for ij in zip(approx.i.tolist(), approx.j.tolist(), strict=True) if ij in true_keys
        )
        # recall over pairs whose (phash, mirror) differ (identical ones are always found)
        distinct = (p[truth.i] != p[truth.j]) | (m[truth.i] != m[truth.j])
        dk = set(zip(truth.i[distinct].tolist(), truth.j[distinct].tolist(), strict=True))
        found_d = sum(
            1 for ij in zip(approx.i.tolist(), approx.j.tolist(), strict=True) if ij in dk
        )
        est, t_est, _ = measure(
            lambda: nd.estimate_pair_recall(
                p, m, k, approx, n_samples=args.recall_samples, seed=1, skip_identical=True
            )
        )
        row.update(
            lsh_s=t_lsh,
            lsh_cpu_s=cpu_lsh,
            lsh_mib=mem_lsh,
            lsh_b=params.bits_per_table,
            lsh_L=params.n_tables,
            lsh_recall=found / max(1, len(truth)),
            lsh_recall_distinct=found_d / max(1, len(dk)),
            lsh_recall_est=[est.recall, est.ci_low, est.ci_high],
        )
        print(
            f"LSH b={params.bits_per_table} L={params.n_tables}: {t_lsh:8.2f} s wall "
            f"({cpu_lsh:.2f} s CPU)  peak "
            f"{mem_lsh:7.1f} MiB  recall {found / max(1, len(truth)):.4f} (distinct-hash "
            f"pairs {found_d / max(1, len(dk)):.4f}); estimate_pair_recall(distinct, s="
            f"{est.n_queries}) = {est.recall:.4f} [{est.ci_low:.4f}, {est.ci_high:.4f}] "
            f"in {t_est:.2f} s",
            flush=True,
        )

    if n > args.dedup_max:
        return row
    rank = nd.rank_positions(np.random.default_rng(0).permutation(n))
    keep, t_keep, mem_keep = measure(lambda: nd.deduplicate(p, m, k, rank, mode="exact"))
    cpu_keep = LAST_CPU[0]
    row.update(dedup_s=t_keep, dedup_cpu_s=cpu_keep, dedup_mib=mem_keep, kept=int(keep.keep.sum()))
    print(
        f"deduplicate exact: {t_keep:8.2f} s wall ({cpu_keep:.2f} s CPU)  peak {mem_keep:7.1f} "
        f"MiB  kept {int(keep.keep.sum()):,}/{n:,}",
        flush=True,
    )

    if args.imagededup_python and n <= args.imagededup_max:
        ours, t_ours, _ = measure(lambda: nd.find_near_duplicates(p, None, k, mode="exact"))
        res = run_imagededup(args.imagededup_python, p, k, args.imagededup_workers)
        if "error" in res:
            print(f"imagededup       : failed: {res['error']}", flush=True)
        else:
            theirs = {tuple(x) for x in res["pairs"]}
            mine = set(zip(ours.i.tolist(), ours.j.tolist(), strict=True))
            same = theirs == mine
            row.update(imagededup_s=res["seconds"], ours_nomirror_s=t_ours, imagededup_same=same)
            print(
                f"imagededup find_duplicates (pHash only, {args.imagededup_workers} workers): "
                f"{res['seconds']:8.2f} s maxrss {res['maxrss_mib']:.0f} MiB; ours pHash-only "
                f"exact {t_ours:.2f} s (1 thread); same pair set: {same} "
                f"({len(theirs):,} vs {len(mine):,})",
                flush=True,
            )
    return row


def calibrate(seed: int) -> None:
    """Fit the COST_* constants of mitigate.neardup by non-negative least squares."""
    from scipy.optimize import nnls

    from mitigate import neardup as nd

    rng = np.random.default_rng(seed)
    feats: list[list[float]] = []
    times: list[float] = []
    for u in (20_000, 100_000, 400_000):
        full = rng.integers(0, 2**64 - 1, size=u, dtype=np.uint64, endpoint=True)
        q = full[: min(u, 100_000)] ^ np.uint64(1)
        for bits in (10, 12, 14, 16, 18, 20, 22):
            for r in (0, 1, 2):
                vol = nd.cost._ball_volume(bits, r)
                if q.shape[0] * vol > 3e7:
                    continue
                ik, qk = nd.mih._substring(full, 0, bits), nd.mih._substring(q, 0, bits)
                pos = np.arange(bits)
                probes = float(q.shape[0] * vol)
                args_ = (ik, full, qk, q, bits, pos, r, 10)
                best = min(cpu_of(lambda a=args_: nd.mih._join_on_keys(*a)) for _ in range(2))
                idx = nd.mih._SlotIndex(ik.astype(np.intp), full, bits, pos, r, 10, probes)
                nb = 1 << bits
                ovf = 0.0
                if idx.has_overflow:
                    masks = nd.mih._ball_masks(bits, r).astype(np.intp)
                    pk = (qk.astype(np.intp)[:, None] ^ masks[None, :]).ravel()
                    ovf = float(np.take(idx.ovf_count, pk).sum())
                miss = nd.cost._miss_ns(nb * idx.width * 12.0) / nd.COST_MISS_NS
                feats.append(
                    [
                        probes,
                        probes * idx.width,
                        probes * miss,
                        probes * idx.has_overflow,
                        ovf,
                        float(u),
                        float(nb * idx.width),
                    ]
                )
                times.append(best * 1e9)
                print(f"u={u} bits={bits} r={r} width={idx.width}: {best * 1e3:.1f} ms", flush=True)
    a = np.array(feats)
    b = np.array(times)
    scale = a.max(axis=0)
    coef, _ = nnls(a / scale / b[:, None], np.ones_like(b))  # relative-error fit
    coef = coef / scale
    names = [
        "COST_PROBE_NS",
        "COST_SLOT_NS",
        "COST_MISS_NS",
        "COST_OVF_CHECK_NS",
        "COST_CANDIDATE_NS",
        "COST_BUILD_ENTRY_NS",
        "COST_BUILD_SLOT_NS",
    ]
    for name, c in zip(names, coef, strict=True):
        print(f"{name} = {c:.2f}")
    pred = a @ coef
    rel = (pred - b) / b
    for f, t_ns, e in zip(feats, b, rel, strict=True):
        print(
            f"  probes={f[0]:.3g} width={f[1] / f[0]:.0f} ovf={f[4]:.3g}: "
            f"{t_ns / 1e6:.1f} ms, model {(t_ns * (1 + e)) / 1e6:.1f} ms"
        )
    print("median |rel err| =", float(np.median(np.abs(rel))))
    x = rng.integers(0, 2**64 - 1, size=20_000, dtype=np.uint64, endpoint=True)
    t = cpu_of(lambda: nd.brute_force_pairs(x, x ^ np.uint64(3), 10))
    print(f"COST_BRUTE_PAIR_NS = {t / (20_000 * 19_999 / 2) * 1e9:.2f}")
    view = nd.lsh._bytes_le(x)
    luts = nd.lsh._lsh_luts(np.arange(0, 60, 3))
    t = cpu_of(lambda: [nd.lsh._lsh_table_key(view, luts) for _ in range(20)])
    print(f"COST_LSH_KEY_NS = {t / 20 / x.shape[0] * 1e9:.2f}")


def calibrate_compiled(sizes: list[int], seed: int, k: int) -> None:
    """Fit the COMPILED_* constants of mitigate.neardup.compiled: time the kernel on
    the benchmark data (unique nodes) for several plans per size and fit the per-probe,
    per-comparison, per-entry and per-bucket costs by non-negative least squares on
    relative error."""
    from scipy.optimize import nnls

    from mitigate import neardup as nd
    from mitigate.neardup import compiled

    feats: list[np.ndarray] = []
    times: list[float] = []
    for n in sizes:
        p, m = make_data(n, k, seed)
        g = nd.collapse_identical(p, m)
        compiled.compiled_self_join(g.node_phash[:64], g.node_mirror[:64], k, nd.make_plan(k, 4))
        best = compiled.plan_compiled(k, g.n_nodes)
        plans = {nd.make_plan(k, mm) for mm in (3, 4, 5, 6)} | {best}
        for plan in sorted(plans, key=lambda pl: (pl.m, pl.lengths)):
            est = compiled.estimate_compiled_cost_ns(plan, g.n_nodes) * 1e-9
            if est > 60:  # skip plans the current model says take > 1 min
                print(f"n={g.n_nodes} {plan.lengths} {plan.radii}: skipped (model {est:.0f} s)")
                continue
            cpu = cpu_of(
                lambda pl=plan, g=g: compiled.compiled_self_join(g.node_phash, g.node_mirror, k, pl)
            )
            feats.append(compiled.compiled_cost_terms(plan, g.n_nodes))
            times.append(cpu * 1e9)
            print(
                f"n={g.n_nodes} lengths={plan.lengths} radii={plan.radii}: {cpu:.2f} CPU s "
                f"(model before fit {est:.2f} s)",
                flush=True,
            )
    a = np.array(feats)
    b = np.array(times)
    scale = np.where(a.max(axis=0) > 0, a.max(axis=0), 1.0)  # a term may be all 0
    coef, _ = nnls(a / scale / b[:, None], np.ones_like(b))
    coef = coef / scale
    names = [
        "COMPILED_PROBE_NS",
        "COMPILED_CANDIDATE_NS",
        "COMPILED_ENTRY_NS",
        "COMPILED_BUCKET_NS",
        "COMPILED_PROBE_MISS_NS (0 unless a size above 1M is measured)",
    ]
    for name, c in zip(names, coef, strict=True):
        print(f"{name} = {c:.3f}")
    rel = (a @ coef - b) / b
    print("median |rel err| =", float(np.median(np.abs(rel))), " max:", float(np.abs(rel).max()))


def first_call(n: int, engine: str, k: int, seed: int) -> None:
    """Executed in a fresh interpreter: the first exact search of this process
    (``engine``'s import and load included) and a second one; prints one JSON line."""
    from mitigate import neardup as nd

    p, m = make_data(n, k, seed)
    out = {"n": n, "unique": nd.collapse_identical(p, m).n_nodes, "engine": engine}
    for key in ("first", "second"):
        _, wall, _ = measure(
            lambda: nd.find_near_duplicates(p, m, k, mode="exact", engine=engine), trace=False
        )
        out[key] = [wall, LAST_CPU[0]]
    print(json.dumps(out))


def crossover(sizes: list[int], k: int, seed: int) -> None:
    """Where the kernel starts to pay: the first search of a fresh process (numba's
    import and cached-code load included) with each engine, per size."""
    print("n, unique | numpy first / second call CPU s | compiled first / second call CPU s")
    for n in sizes:
        res = {}
        for engine in ("numpy", "compiled"):
            cmd = [sys.executable, os.path.abspath(__file__), "--first-call", str(n), engine]
            cmd += ["--k", str(k), "--seed", str(seed)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            res[engine] = json.loads(done.stdout.strip().splitlines()[-1])
        a, b = res["numpy"], res["compiled"]
        print(
            f"{n:,}, {a['unique']:,} | {a['first'][1]:.3f} / {a['second'][1]:.3f} | "
            f"{b['first'][1]:.3f} / {b['second'][1]:.3f}",
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes",
        default="10000,100000",
        help="comma-separated N values (e.g. 10000,100000,1000000)",
    )
    parser.add_argument("--k", type=int, default=10, help="Hamming threshold in bits")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--brute-max",
        type=int,
        default=100_000,
        help="run brute force only up to this N, extrapolate above",
    )
    parser.add_argument(
        "--brute-sample",
        type=int,
        default=30_000,
        help="prefix size used to measure brute-force cost for extrapolation",
    )
    parser.add_argument("--no-lsh", dest="lsh", action="store_false", help="skip LSH mode")
    parser.add_argument(
        "--numpy-max",
        type=int,
        default=2_000_000,
        help="run the numpy exact search (compared with the kernel) only up to this N",
    )
    parser.add_argument(
        "--dedup-max", type=int, default=2_000_000, help="run deduplicate only up to this N"
    )
    parser.add_argument("--target-recall", type=float, default=0.95)
    parser.add_argument("--recall-samples", type=int, default=2000)
    parser.add_argument(
        "--imagededup-python", default=None, help="python interpreter that has imagededup installed"
    )
    parser.add_argument("--imagededup-max", type=int, default=20_000)
    parser.add_argument("--imagededup-workers", type=int, default=2)
    parser.add_argument("--json", default=None, help="write results to this JSON file")
    parser.add_argument("--calibrate", action="store_true", help="fit cost-model constants")
    parser.add_argument(
        "--calibrate-compiled",
        action="store_true",
        help="fit the compiled kernel's cost constants (at --sizes)",
    )
    parser.add_argument(
        "--crossover",
        action="store_true",
        help="first-call cost of each exact engine in fresh processes (at --sizes)",
    )
    parser.add_argument("--first-call", nargs=2, metavar=("N", "ENGINE"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--imagededup-worker", nargs=3, metavar=("NPY", "K", "WORKERS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.imagededup_worker:
        path, k, workers = args.imagededup_worker
        imagededup_worker(path, int(k), int(workers))
        return 0
    if args.first_call:
        first_call(int(args.first_call[0]), args.first_call[1], args.k, args.seed)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.crossover:
        crossover([int(v) for v in args.sizes.split(",")], args.k, args.seed)
        return 0
    if args.calibrate:
        calibrate(args.seed)
        return 0
    if args.calibrate_compiled:
        calibrate_compiled([int(v) for v in args.sizes.split(",")], args.seed, args.k)
        return 0
    import platform

    print(
        f"python {platform.python_version()}, numpy {np.__version__}, "
        f"{os.cpu_count()} CPUs, load avg {os.getloadavg()}"
    )
    from mitigate import neardup as nd

    warm = np.arange(64, dtype=np.uint64)
    c0, t0 = time.process_time(), time.perf_counter()
    nd.find_near_duplicates(warm, warm, args.k, mode="exact", engine="compiled")
    print(
        f"kernel import + load (or first compile): {time.perf_counter() - t0:.2f} s wall, "
        f"{time.process_time() - c0:.2f} s CPU (not in the timings below)",
        flush=True,
    )
    rows = [bench_size(int(s), args) for s in args.sizes.split(",")]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nprocess max RSS: {rss:.0f} MiB")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
