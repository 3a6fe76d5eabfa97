"""Issue 13: how much of a filter's group bias rebalancing restores, and at what cost.

Data: the caption-driven corpus of :mod:`mitigate.rebalance_corpus` (a term filter
drops 30% of woman-captions and 8% of man-captions; dropped captions carry their own
context words). For each size N, in a fresh child process (peak RSS per size):

- baseline: the old path, fit at the old fixed ``C=0.1`` + raw weights + clip/normalise;
- ``C: auto``: k-fold held-out log-loss selection over the default grid, then the fit;
- ``calibrate_groups: [women, men]``: raking with clipping on top of the density-ratio
  weights, in memory (:func:`mitigate.raking.calibrate_weights`) and in its distributed
  form (per-pattern histograms merged from 8 parts, raking, exact fixed-point pass).

Reported: the share of woman-captions among person captions (unfiltered, filtered,
reweighted), the fraction of the gap each variant closes, the held-out probe's change,
the effective sample size, the time of each step as a ratio to the baseline fit, and
peak RSS. The whole corpus is the fit sample (N <= the default fit_sample_size).

With ``--pipeline N1 N2`` the whole pipeline also runs on the corpus written as
WebDataset shards (16x16 noise images, unrelated to the captions), once per variant:
fixed ``C=0.1`` without calibration (the baseline), ``C: auto``, ``C: auto`` with
``calibrate_groups: [women, men]``; wall time as a ratio to the baseline, peak RSS of
the run's process, and the bias table's reweighted changes.

Usage::

    python benchmarks/bench_rebalance_groups.py --sizes 10000 40000 --pipeline 4000 16000
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import time

import numpy as np


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_child(n: int, n_features: int) -> dict:
    from mitigate import raking as rk
    from mitigate import rebalance as rb
    from mitigate import rebalance_select as rs
    from mitigate.rebalance_corpus import FILTER_TERMS, PROBES, make_caption_corpus

    rb.FeatureConfig(n_features=8).featurize(["warm up"])
    corpus = make_caption_corpus(n, seed=0)
    keep = ~corpus.flagged
    kept_caps = [c for c, k in zip(corpus.captions, keep, strict=True) if k]
    cfg = rb.FeatureConfig(
        n_features=n_features, masked_terms=frozenset((t,) for t in FILTER_TERMS)
    )
    out: dict = {"n": n, "kept": int(keep.sum()), "rss_after_imports_mib": rss_mib()}
    pc = time.perf_counter
    t0 = pc()
    x = cfg.featurize(corpus.captions)
    t_feat = pc() - t0

    def weights_at(c: float) -> tuple[np.ndarray, np.ndarray, float]:
        t = pc()
        model = rb.fit_density_ratio_from_sample(x, keep, C=c, feature_config=cfg)
        raw = model.weights(x[keep])
        w = rb.finalize_weights(raw, 0.1, 10.0)
        return raw, w, pc() - t

    raw_fixed, w_fixed, t_fixed = weights_at(0.1)
    t0 = pc()
    folds = rs.fold_ids([rb.key_hash64(k, 0) for k in corpus.keys], rs.DEFAULT_FOLDS)
    sel = rs.select_C(x, keep, folds, rs.DEFAULT_C_GRID, feature_config=cfg)
    t_select = pc() - t0
    raw_auto, w_auto, t_fit_auto = weights_at(sel.C)

    matcher = rk.GroupMatcher({"women": PROBES["women"], "men": PROBES["men"]})
    t0 = pc()
    counts: dict[int, int] = {}
    for cap in corpus.captions:
        p = matcher.pattern(cap)
        counts[p] = counts.get(p, 0) + 1
    pat = np.array([matcher.pattern(cap) for cap in kept_caps])
    t_patterns = pc() - t0
    targets, _ = rk.pattern_counts_to_shares(counts, matcher.names)
    t0 = pc()
    w_cal, fit = rk.calibrate_weights(raw_auto, pat, targets, matcher.names, 0.1, 10.0)
    t_cal = pc() - t0
    w_cal_fixed, _ = rk.calibrate_weights(raw_fixed, pat, targets, matcher.names, 0.1, 10.0)

    # distributed form: 8 parts' histograms merged, raking, exact pass, apply
    t0 = pc()
    hists: dict[int, rb.LogHistogram] = {}
    for part in np.array_split(np.arange(pat.size), 8):
        for p in np.unique(pat[part]):
            h = rb.LogHistogram().add(raw_auto[part][pat[part] == p])
            hists[int(p)] = hists[int(p)].merge(h) if int(p) in hists else h
    cells = {p: rk.HistCell(h, 0.1, 10.0) for p, h in hists.items()}
    dfit = rk.rake(cells, targets, matcher.names, 0.1, 10.0)
    exact = rk.ExactTotals()
    prov = np.clip(np.array([dfit.multipliers[p] for p in pat]) * raw_auto, 0.1, 10.0)
    for p, wi in zip(pat.tolist(), prov.tolist(), strict=True):
        exact.add(p, wi, 0.1, 10.0)
    corr = rk.corrections(exact, dfit.targets, 0.1, 10.0)
    w_dist = np.array(
        [
            rk.apply(r, dfit.multipliers[p], corr[p], 0.1, 10.0)
            for r, p in zip(raw_auto.tolist(), pat.tolist(), strict=True)
        ]
    )
    t_dist = pc() - t0

    unf = corpus.women_share()
    filt = corpus.women_share(np.ones(keep.sum()), kept_only=True)

    def share(w: np.ndarray) -> dict[str, float]:
        s = corpus.women_share(w, kept_only=True)
        table = rb.probe_term_table(corpus.captions, kept_caps, w, PROBES)
        return {
            "share": s,
            "gap_closed": (s - filt) / (unf - filt),
            "rel_err": s / unf - 1.0,
            "women_change": table["women"].rel_change_reweighted,
            "men_change": table["men"].rel_change_reweighted,
            "animals_change": table["animals"].rel_change_reweighted,
            "ess_fraction": rb.effective_sample_size(w) / w.size,
            "mean": float(w.mean()),
            "min": float(w.min()),
            "max": float(w.max()),
        }

    table0 = rb.probe_term_table(corpus.captions, kept_caps, np.ones(len(kept_caps)), PROBES)
    out.update(
        unfiltered=unf,
        filtered=filt,
        filtered_change={g: r.rel_change_filtered for g, r in table0.items()},
        C_auto=sel.C,
        log_loss={repr(c): v for c, v in sel.log_loss.items()},
        fixed=share(w_fixed),
        auto=share(w_auto),
        calibrated=share(w_cal),
        calibrated_from_fixed=share(w_cal_fixed),
        distributed=share(w_dist),
        dist_vs_memory_max_abs=float(np.max(np.abs(w_dist - w_cal))),
        rake_iterations=fit.iterations,
        times_s={
            "featurize": t_feat,
            "fit_fixed": t_fixed,
            "select_C": t_select,
            "fit_auto": t_fit_auto,
            "patterns": t_patterns,
            "calibrate_in_memory": t_cal,
            "calibrate_distributed_form": t_dist,
        },
        peak_rss_mib=rss_mib(),
    )
    return out


VARIANTS = {
    "fixed C=0.1 (old)": {"C": 0.1},
    "C auto": {"C": "auto"},
    "C auto + calibrate_groups": {"C": "auto", "calibrate_groups": ["women", "men"]},
}


def write_shards(n: int, folder: str) -> None:
    """The corpus as WebDataset shards; images are 16x16 noise, unrelated to captions."""
    import io
    from pathlib import Path

    from PIL import Image

    from mitigate.rebalance_corpus import make_caption_corpus, write_corpus_shards

    corpus = make_caption_corpus(n, seed=0)
    rng = np.random.default_rng(1)

    def image_for(i: int) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(buf, "PNG")
        return buf.getvalue()

    write_corpus_shards(corpus, Path(folder), image_for, per_shard=1000)


def run_pipeline_child(data: str, out: str, variant: str) -> dict:
    from mitigate.config import validate_config
    from mitigate.pipeline.run import run
    from mitigate.rebalance_corpus import FILTER_TERMS, PROBES

    config = validate_config(
        {
            "input": {"paths": [f"{data}/*.tar"]},
            "output": {"path": out},
            "filters": [
                {"name": "caption_terms", "category": "sexual", "terms": list(FILTER_TERMS)}
            ],
            "dedup": {"near": False},
            "rebalance": {"enabled": True, "probes": PROBES, **VARIANTS[variant]},
        }
    )
    t0 = time.perf_counter()
    summary = run(config)
    wall = time.perf_counter() - t0
    probes = summary["rebalance"]["probes"]
    return {
        "wall_s": wall,
        "peak_rss_mib": rss_mib(),
        "C": summary["rebalance"]["fit"].get("C"),
        "change": {g: probes[g]["change_reweighted"] for g in probes},
        "filtered": {g: probes[g]["change_filtered"] for g in probes},
        "ess_fraction": summary["rebalance"]["weights"]["ess_fraction"],
    }


def pipeline_bench(sizes: list[int]) -> None:
    import tempfile

    print("\nwhole pipeline (DirectRunner, one process), issue-13 corpus as shards")
    print(
        f"{'N':>7} {'variant':<27}{'C':>6}{'wall s':>8}{'x old':>7}{'RSS MiB':>9}"
        f"{'d women':>9}{'d men':>8}{'d animals':>10}{'ESS':>7}"
    )
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            write_shards(n, tmp)
            base = None
            for variant in VARIANTS:
                cmd = [
                    sys.executable,
                    __file__,
                    "--pipeline-child",
                    tmp,
                    f"{tmp}/out-{len(variant)}",
                    variant,
                ]
                res = subprocess.run(cmd, capture_output=True, text=True, check=True)
                r = json.loads(res.stdout.strip().splitlines()[-1])
                base = base or r["wall_s"]
                ch = r["change"]
                print(
                    f"{n:>7} {variant:<27}{r['C']:>6g}{r['wall_s']:>8.1f}"
                    f"{r['wall_s'] / base:>7.2f}{r['peak_rss_mib']:>9.0f}"
                    f"{100 * ch['women']:>+8.2f}%{100 * ch['men']:>+7.2f}%"
                    f"{100 * ch['animals']:>+9.2f}%{r['ess_fraction']:>7.3f}"
                )


def spawn(n: int, n_features: int) -> dict:
    cmd = [sys.executable, __file__, "--child", str(n), "--n-features", str(n_features)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 40_000])
    ap.add_argument("--n-features", type=int, default=2**18)
    ap.add_argument(
        "--pipeline",
        type=int,
        nargs="*",
        default=[],
        help="also run the whole pipeline at these sizes (three variants each)",
    )
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--pipeline-child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.pipeline_child:
        logging.basicConfig(level=logging.ERROR)
        res = run_pipeline_child(*args.pipeline_child)
        sys.stdout.write(json.dumps(res) + "\n")
        return
    if args.child is not None:
        logging.basicConfig(level=logging.ERROR)
        sys.stdout.write(json.dumps(run_child(args.child, args.n_features)) + "\n")
        return
    results = [spawn(n, args.n_features) for n in args.sizes]
    print(f"issue-13 corpus, n_features={args.n_features}, python {sys.version.split()[0]}")
    for r in results:
        print(
            f"\nN={r['n']:,} (kept {r['kept']:,}): women among person captions "
            f"unfiltered {r['unfiltered']:.4f}, filtered {r['filtered']:.4f}; "
            f"C auto -> {r['C_auto']:g}; held-out log loss "
            + ", ".join(f"C={c}: {v:.4f}" for c, v in r["log_loss"].items())
        )
        print(
            f"{'weights':<34}{'women share':>12}{'gap closed':>11}{'rel err':>10}"
            f"{'d women':>9}{'d men':>8}{'d animals*':>11}{'ESS/kept':>9}{'mean':>9}"
        )
        for label, key in (
            ("density ratio, fixed C=0.1 (old)", "fixed"),
            (f"density ratio, C auto ({r['C_auto']:g})", "auto"),
            ("calibrate_groups on C auto", "calibrated"),
            ("calibrate_groups on C=0.1", "calibrated_from_fixed"),
            ("calibrate_groups, distributed form", "distributed"),
        ):
            s = r[key]
            print(
                f"{label:<34}{s['share']:>12.6f}{100 * s['gap_closed']:>10.1f}%"
                f"{100 * s['rel_err']:>+9.4f}%{100 * s['women_change']:>+8.2f}%"
                f"{100 * s['men_change']:>+7.2f}%{100 * s['animals_change']:>+10.2f}%"
                f"{s['ess_fraction']:>9.4f}{s['mean']:>9.6f}"
            )
        print(
            f"(* held-out probe; filtered changes: women "
            f"{100 * r['filtered_change']['women']:+.1f}%, men "
            f"{100 * r['filtered_change']['men']:+.1f}%, animals "
            f"{100 * r['filtered_change']['animals']:+.1f}%; distributed vs in-memory "
            f"max |dw| {r['dist_vs_memory_max_abs']:.1e}; raking sweeps {r['rake_iterations']})"
        )
        t = r["times_s"]
        base = t["fit_fixed"]
        print(
            "time, x the baseline (fit at fixed C + weights + normalise, "
            f"{base:.2f} s): "
            + ", ".join(f"{k} {v / base:.2f}x" for k, v in t.items() if k != "fit_fixed")
        )
        print(
            f"peak RSS {r['peak_rss_mib']:.0f} MiB (after imports "
            f"{r['rss_after_imports_mib']:.0f} MiB)"
        )
    if args.pipeline:
        pipeline_bench(args.pipeline)


if __name__ == "__main__":
    main()
