"""Benchmark of mitigate.rebalance on synthetic captions at two dataset sizes.

For each size N the benchmark runs, in a fresh child process (so peak memory is per
size), the whole rebalancing flow the pipeline will run, streaming the data in chunks
as Beam bundles would:

1. sample:   one bottom-k fit sample (``--fit-per-class``) of all captions with their
             kept flags, chunk by chunk, merged with ``bottom_k_merge``; its kept
             members are the filtered class (so each class is <= fit-per-class);
2. fit:      featurise the fit sample and fit the density-ratio model (default C);
3. apply:    raw weights for every kept caption (``DensityRatioModel.weights_for``);
4. finalize: ``finalize_weights`` (clip [0.1, 10], mean 1) + ``weight_summary``;
5. resample: ``resample_counts`` for every kept caption;
6. probes:   ``ProbeTableAccumulator`` over all unfiltered and kept captions.

Only time spent inside library calls is counted (caption generation is excluded).
Peak memory is the child's peak RSS (``resource.getrusage``) and its increase over
the RSS after imports; ``--tracemalloc`` adds the peak of traced Python/numpy
allocations (slower: timings of that run are not reported).

Usage::

    python benchmarks/bench_rebalance.py                      # 100k and 1M
    python benchmarks/bench_rebalance.py --sizes 20000 --fit-per-class 5000
"""

from __future__ import annotations

import argparse
import json
import logging
import pickle
import resource
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator

import numpy as np

SUBJECTS = ["woman", "man", "dog", "cat", "car", "house", "person", "child", "tree", "bird"]
P_SUBJECT = np.array([0.2, 0.2, 0.1, 0.1, 0.08, 0.08, 0.08, 0.06, 0.05, 0.05])
ADJECTIVES = ["young", "old", "smiling", "tall", "red", "blue", "happy", "small", "dark", "wet"]
VERBS = ["standing", "sitting", "walking", "running", "looking at the camera", "posing"]
SCENES = ["on the beach", "in a park", "at night", "in the city", "in a kitchen", "near a lake"]
P_REMOVE = np.array([0.14, 0.06, 0.03, 0.03, 0.03, 0.03, 0.03, 0.03, 0.03, 0.03])  # by subject
FILLER_VOCAB = 20_000  # Zipf-distributed filler words "w0".."w19999"
PROBES = {"woman": ["woman", "women"], "man": ["man", "men"], "dog": ["dog"], "child": ["child"]}
CHUNK = 10_000


def synthetic_chunk(
    start: int, stop: int, seed: int = 0
) -> tuple[list[str], list[str], np.ndarray]:
    """Keys, captions and keep mask for samples ``[start, stop)`` (deterministic)."""
    n = stop - start
    rng = np.random.default_rng([seed, start])
    s = rng.choice(len(SUBJECTS), size=n, p=P_SUBJECT)
    a = rng.integers(len(ADJECTIVES), size=n)
    v = rng.integers(len(VERBS), size=n)
    c = rng.integers(len(SCENES), size=n)
    n_fill = rng.integers(0, 9, size=n)
    fill = np.minimum(rng.zipf(1.3, size=(n, 8)) - 1, FILLER_VOCAB - 1)
    caps = []
    for i in range(n):
        extra = " ".join(f"w{j}" for j in fill[i, : n_fill[i]])
        caps.append(f"a {ADJECTIVES[a[i]]} {SUBJECTS[s[i]]} {VERBS[v[i]]} {SCENES[c[i]]} {extra}")
    keep = rng.random(n) >= P_REMOVE[s]
    keys = [f"{i:010d}" for i in range(start, stop)]
    return keys, caps, keep


def chunks(n: int) -> Iterator[tuple[list[str], list[str], np.ndarray]]:
    for start in range(0, n, CHUNK):
        yield synthetic_chunk(start, min(start + CHUNK, n))


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def run_child(n: int, per_class: int, n_features: int, trace: bool) -> dict:
    from mitigate import rebalance as rb

    # warm the lazy sklearn import so it is not counted as fit time / memory growth
    rb.FeatureConfig(n_features=8).featurize(["warm up"])
    out: dict = {"n": n, "rss_after_imports_mib": rss_mib()}
    if trace:
        tracemalloc.start()
    t: dict[str, float] = dict.fromkeys(
        ["sample", "fit_featurize", "fit_lr", "apply", "finalize", "resample", "probes"], 0.0
    )
    pc = time.perf_counter

    # 1. one bounded uniform fit sample of all samples, kept flag in the payload,
    #    bundle by bundle (as a Beam CombineFn would); its kept members are the
    #    filtered class (coupled sample, see fit_density_ratio)
    acc: list = []
    n_kept = 0
    for keys, caps, keep in chunks(n):
        t0 = pc()
        part = rb.bottom_k(
            zip(keys, zip(caps, keep.tolist(), strict=True), strict=True), per_class, seed=1
        )
        acc = rb.bottom_k_merge(acc, part, per_class)
        t["sample"] += pc() - t0
        n_kept += int(keep.sum())

    # 2. fit
    cfg = rb.FeatureConfig(n_features=n_features)
    t0 = pc()
    xu = cfg.featurize([e[2][0] for e in acc])
    kept_flags = np.array([e[2][1] for e in acc], dtype=bool)
    t["fit_featurize"] = pc() - t0
    t0 = pc()
    model = rb.fit_density_ratio_from_sample(xu, kept_flags, feature_config=cfg)
    t["fit_lr"] = pc() - t0
    del xu, acc
    out["model_pickle_bytes"] = len(pickle.dumps(model))
    out["train_auc"] = model.train_auc

    # 3. raw weights for every kept sample
    raw = np.empty(n_kept, dtype=np.float64)
    pos = 0
    for _, caps, keep in chunks(n):
        kept_caps = [c for c, m in zip(caps, keep, strict=True) if m]
        t0 = pc()
        raw[pos : pos + len(kept_caps)] = model.weights_for(kept_caps)
        t["apply"] += pc() - t0
        pos += len(kept_caps)

    # 4. finalize
    t0 = pc()
    w = rb.finalize_weights(raw, 0.1, 10.0)
    summary = rb.weight_summary(w)
    t["finalize"] = pc() - t0
    out["ess_fraction"] = summary.ess_fraction
    out["w_p01_p99"] = [summary.quantiles[0.01], summary.quantiles[0.99]]

    # 5 + 6. resample counts and the probe table, streaming
    probes = rb.ProbeTableAccumulator(PROBES)
    pos = 0
    total_copies = 0
    for keys, caps, keep in chunks(n):
        kept_keys = [k for k, m in zip(keys, keep, strict=True) if m]
        kept_caps = [c for c, m in zip(caps, keep, strict=True) if m]
        wk = w[pos : pos + len(kept_keys)]
        pos += len(kept_keys)
        t0 = pc()
        total_copies += int(rb.resample_counts(wk, kept_keys, seed=3).sum())
        t1 = pc()
        part = rb.ProbeTableAccumulator(PROBES)
        for c in caps:
            part.add_unfiltered(c)
        for c, wi in zip(kept_caps, wk, strict=True):
            part.add_filtered(c, float(wi))
        probes = probes.merge(part)
        t2 = pc()
        t["resample"] += t1 - t0
        t["probes"] += t2 - t1
    rows = probes.result()
    out["probe_rel_change"] = {
        g: [r.rel_change_filtered, r.rel_change_reweighted] for g, r in rows.items()
    }
    out["resampled_over_kept"] = total_copies / n_kept
    out["n_kept"] = n_kept
    out["fit_n"] = [model.n_unfiltered, model.n_filtered]
    out["times_s"] = t
    out["peak_rss_mib"] = rss_mib()
    if trace:
        out["tracemalloc_peak_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    return out


def spawn(n: int, args: argparse.Namespace, trace: bool) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        str(n),
        "--fit-per-class",
        str(args.fit_per_class),
        "--n-features",
        str(args.n_features),
    ]
    if trace:
        cmd.append("--tracemalloc")
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def fmt_table(results: list[dict], traced: list[dict] | None) -> str:
    def per_us(r: dict, phase: str, denom: str) -> float:
        d = r["n"] if denom == "n" else r["n_kept"]
        return 1e6 * r["times_s"][phase] / d

    rows: list[tuple[str, list[float], str]] = [
        ("samples N", [r["n"] for r in results], "{:.0f}"),
        ("kept", [r["n_kept"] for r in results], "{:.0f}"),
        ("fit sample (unfilt+filt)", [sum(r["fit_n"]) for r in results], "{:.0f}"),
        ("sample pass [s]", [r["times_s"]["sample"] for r in results], "{:.2f}"),
        ("  per sample [us]", [per_us(r, "sample", "n") for r in results], "{:.2f}"),
        ("fit: featurize [s]", [r["times_s"]["fit_featurize"] for r in results], "{:.2f}"),
        ("fit: logistic reg. [s]", [r["times_s"]["fit_lr"] for r in results], "{:.2f}"),
        ("apply weights [s]", [r["times_s"]["apply"] for r in results], "{:.2f}"),
        ("  per kept sample [us]", [per_us(r, "apply", "kept") for r in results], "{:.2f}"),
        ("finalize+summary [s]", [r["times_s"]["finalize"] for r in results], "{:.3f}"),
        ("  per kept sample [us]", [per_us(r, "finalize", "kept") for r in results], "{:.3f}"),
        ("resample counts [s]", [r["times_s"]["resample"] for r in results], "{:.2f}"),
        ("  per kept sample [us]", [per_us(r, "resample", "kept") for r in results], "{:.2f}"),
        ("probe table [s]", [r["times_s"]["probes"] for r in results], "{:.2f}"),
        ("  per sample [us]", [per_us(r, "probes", "n") for r in results], "{:.2f}"),
        ("RSS after imports [MiB]", [r["rss_after_imports_mib"] for r in results], "{:.0f}"),
        ("peak RSS [MiB]", [r["peak_rss_mib"] for r in results], "{:.0f}"),
        (
            "peak RSS - imports [MiB]",
            [r["peak_rss_mib"] - r["rss_after_imports_mib"] for r in results],
            "{:.0f}",
        ),
    ]
    if traced:
        rows.append(
            ("tracemalloc peak [MiB]", [r["tracemalloc_peak_mib"] for r in traced], "{:.1f}")
        )
    rows += [
        ("model pickle [KiB]", [r["model_pickle_bytes"] / 1024 for r in results], "{:.1f}"),
        ("train AUC", [r["train_auc"] for r in results], "{:.4f}"),
        ("ESS / kept", [r["ess_fraction"] for r in results], "{:.4f}"),
        ("resampled / kept", [r["resampled_over_kept"] for r in results], "{:.4f}"),
    ]
    for g in PROBES:
        rows.append(
            (
                f"'{g}' d filtered [%]",
                [100 * r["probe_rel_change"][g][0] for r in results],
                "{:+.2f}",
            )
        )
        rows.append(
            (
                f"'{g}' d reweighted [%]",
                [100 * r["probe_rel_change"][g][1] for r in results],
                "{:+.2f}",
            )
        )
    head = f"{'metric':<28}" + "".join(f"{r['n']:>14,d}" for r in results)
    if len(results) > 1:
        head += f"{'ratio last/first':>18}"
    lines = [head, "-" * len(head)]
    for name, vals, f in rows:
        line = f"{name:<28}" + "".join(f"{f.format(v):>14}" for v in vals)
        if len(results) > 1 and vals[0] not in (0, 0.0) and "[%]" not in name:
            line += f"{vals[-1] / vals[0]:>17.2f}x"
        lines.append(line)
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--fit-per-class", type=int, default=50_000)
    ap.add_argument("--n-features", type=int, default=2**18)
    ap.add_argument("--tracemalloc", action="store_true", help="also run a traced pass")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        logging.basicConfig(level=logging.WARNING)
        res = run_child(args.child, args.fit_per_class, args.n_features, args.tracemalloc)
        sys.stdout.write(json.dumps(res) + "\n")
        return
    results = [spawn(n, args, trace=False) for n in args.sizes]
    traced = [spawn(n, args, trace=True) for n in args.sizes] if args.tracemalloc else None
    print(
        f"mitigate.rebalance benchmark: fit sample <= {args.fit_per_class} per class, "
        f"n_features={args.n_features}, chunk={CHUNK}, python {sys.version.split()[0]}"
    )
    print(fmt_table(results, traced))


if __name__ == "__main__":
    main()
