"""Benchmark of ``mitigate train``'s fit on synthetic 1024-d embeddings, on one core.

For each size N, in a fresh child process (so peak memory is per size) with BLAS and
OpenMP limited to one thread (threadpoolctl), it times:

* baseline: one plain ``LogisticRegression(class_weight="balanced")`` fit at C=1 on
  the standardised embeddings (what a user would write by hand, no cross-validation);
* probe:    :func:`mitigate.train.fit_probe` as ``mitigate train`` runs it: the
  standardisation, stratified 5-fold out-of-fold predictions over the 7-value C grid
  (on a stratified sample of 20,000 labels when there are more)
  (warm starts along the grid), the choice of C and the final refit, followed by the
  ONNX export and its onnxruntime check (:func:`mitigate.train.head_model`,
  :func:`mitigate.train.check_export`).

and prints the ratio probe / baseline, the out-of-fold ROC AUC and the child's peak
RSS. Data: N float16 embeddings (as runs store them), 10% positives, positives shifted
along a random direction so the task is learnable but not trivial (AUC ~0.9).

Usage::

    python benchmarks/bench_train.py                    # 25k and 100k
    python benchmarks/bench_train.py --sizes 100000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DIM = 1024


def synthetic(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.1
    direction = rng.normal(size=DIM)
    direction /= np.linalg.norm(direction)
    x = np.abs(rng.normal(size=(n, DIM)).astype(np.float32))  # non-negative, like pooled ReLU
    x += np.outer(np.where(y, 1.0, 0.0), direction * 2.5).astype(np.float32)
    return x.astype(np.float16).astype(np.float32), y


def child(n: int) -> dict:
    from threadpoolctl import threadpool_limits

    from mitigate import train

    with threadpool_limits(limits=1):
        x, y = synthetic(n)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        from sklearn.linear_model import LogisticRegression

        t0, c0 = time.perf_counter(), time.process_time()
        mean, scale = train.standardiser(x)
        z = ((x - mean) / scale).astype(np.float32)
        LogisticRegression(class_weight="balanced", max_iter=1000).fit(z, y)
        baseline = time.perf_counter() - t0
        baseline_cpu = time.process_time() - c0
        del z

        t0, c0 = time.perf_counter(), time.process_time()
        fit = train.fit_probe(x, y)
        with tempfile.TemporaryDirectory() as tmp:
            import onnx

            path = Path(tmp) / "h.onnx"
            onnx.save(train.head_model(fit, "bench", {}), str(path))
            diff = train.check_export(path, fit, x[:5000])
        probe = time.perf_counter() - t0
        probe_cpu = time.process_time() - c0
        auc = train.evaluate(y[fit.cv_rows], fit.oof)["roc_auc"]
    return {
        "n": n,
        "baseline_s": round(baseline, 2),
        "probe_s": round(probe, 2),
        "ratio": round(probe / baseline, 2),
        "baseline_cpu_s": round(baseline_cpu, 2),
        "probe_cpu_s": round(probe_cpu, 2),
        "cpu_ratio": round(probe_cpu / baseline_cpu, 2),
        "n_cross_validated": len(fit.cv_rows),
        "C": fit.C,
        "oof_roc_auc": round(auc, 4),
        "onnx_max_abs_diff": diff,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "rss_after_data_mb": round(rss_before / 1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[25_000, 100_000])
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sys.stdout.write(json.dumps(child(args.child)) + "\n")
        return
    print(
        f"{'N':>8} {'baseline s':>11} {'probe s':>8} {'ratio':>6} {'base CPU s':>11} "
        f"{'probe CPU s':>12} {'CPU ratio':>10} {'CV labels':>10} {'C':>8} {'OOF AUC':>8} "
        f"{'peak RSS MB':>12}"
    )
    for n in args.sizes:
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(n)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(
            f"{r['n']:>8} {r['baseline_s']:>11.2f} {r['probe_s']:>8.2f} {r['ratio']:>6.2f} "
            f"{r['baseline_cpu_s']:>11.2f} {r['probe_cpu_s']:>12.2f} {r['cpu_ratio']:>10.2f} "
            f"{r['n_cross_validated']:>10} {r['C']:>8g} {r['oof_roc_auc']:>8.4f} "
            f"{r['peak_rss_mb']:>12}"
        )


if __name__ == "__main__":
    main()
