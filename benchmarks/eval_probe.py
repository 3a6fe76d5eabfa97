"""Evaluate ``mitigate train`` on real images: an "animal" probe on ``nsfw`` embeddings.

Data: ``data/probe/animals/`` (160 Tux Paint photo stamps, 80 animals, 80 other
objects; ``scripts/make_probe_data.py``), a category no shipped model covers.

1. run the pipeline once (``nsfw`` with ``store_embeddings``), timed: the backbone pass;
2. ``mitigate train`` on 100 labels (the split of ``tests/test_train_pipeline.py``:
   keys with ``int(key) % 8 in (1, 4, 6)`` held out), timed; held-out ROC AUC, and
   recall/precision at the threshold it chose for 0.95 recall, scored by the exported
   head through the ``linear_probe`` filter;
3. ``redecide`` the finished run with the trained filter added, timed: the ratio to
   step 1 is what adding a category to a finished run costs against re-running;
4. the spread: ``--splits`` random stratified 100/60 splits of the same embeddings,
   each fit with :func:`mitigate.train.fit_probe`: min / mean / max held-out AUC (what
   the test's floor is set against).

Usage::

    python benchmarks/eval_probe.py [--splits 20] [--work /tmp/eval_probe]
"""

from __future__ import annotations

import argparse
import csv
import shutil
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
ANIMALS = REPO / "data" / "probe" / "animals"


def config_file(folder: Path, out: Path, extra: list[dict] | None = None) -> Path:
    raw = {
        "input": {"paths": [str(ANIMALS / "*.tar")], "chunk_size": 40},
        "output": {"path": str(out), "samples_per_shard": 50},
        "filters": [{"name": "nsfw", "store_embeddings": True}, *(extra or [])],
        "rebalance": {"enabled": False},
    }
    path = folder / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def main() -> None:
    from sklearn.model_selection import train_test_split

    from mitigate import train
    from mitigate.config import load_config
    from mitigate.filters.probe import LinearProbe, LinearProbeConfig
    from mitigate.pipeline.run import redecide, run

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=int, default=20)
    parser.add_argument("--work", type=Path, default=Path("/tmp/eval_probe"))
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    with open(ANIMALS / "labels.csv", newline="", encoding="utf-8") as f:
        labels = {row["key"]: row["label"] == "1" for row in csv.DictReader(f)}

    out = args.work / "run"
    config, _ = load_config(config_file(args.work, out), [])
    t0 = time.perf_counter()
    run(config)
    backbone_s = time.perf_counter() - t0

    held = [k for k in labels if int(k) % 8 in (1, 4, 6)]
    train_path = args.work / "train.csv"
    with open(train_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["key", "label"])
        writer.writerows((k, int(v)) for k, v in labels.items() if k not in held)
    t0 = time.perf_counter()
    result = train.train(out, "nsfw", train_path, "animal", args.work / "probe", target_recall=0.95)
    train_s = time.perf_counter() - t0
    entry = yaml.safe_load((result.output / "animal.yaml").read_text())["filters"][0]
    head = LinearProbe(LinearProbeConfig.model_validate(entry))
    data = train.load_run_embeddings(out, "nsfw")
    row = {k: i for i, k in enumerate(data.keys)}
    scores = np.array([head.score_embedding(data.embeddings[row[k]]) for k in held])
    truth = np.array([labels[k] for k in held])
    auc = train.evaluate(truth, scores)["roc_auc"]
    dropped = scores >= entry["threshold"]
    recall = dropped[truth].mean()
    precision = truth[dropped].mean() if dropped.any() else float("nan")

    again, _ = load_config(config_file(args.work, args.work / "re", [entry]), [])
    t0 = time.perf_counter()
    redecide(again, str(out))
    redecide_s = time.perf_counter() - t0

    r = result.report
    print(
        f"labels: train {r['n_labelled']} ({r['n_positive']} animal), held out {len(held)} "
        f"({int(truth.sum())} animal)"
    )
    print(f"out-of-fold ROC AUC {r['out_of_fold']['roc_auc']:.4f}, C {r['model']['C']:g}")
    print(f"held-out ROC AUC {auc:.4f}")
    print(
        f"threshold {entry['threshold']:.6f} (target recall 0.95, out-of-fold): held-out "
        f"recall {recall:.3f} ({int(dropped[truth].sum())}/{int(truth.sum())}), precision "
        f"{precision:.3f}"
    )
    print(
        f"backbone run {backbone_s:.1f} s, train {train_s:.1f} s, redecide with the new "
        f"filter {redecide_s:.1f} s (ratio redecide/run {redecide_s / backbone_s:.2f})"
    )

    keys = np.array(list(labels))
    y = np.array([labels[k] for k in keys])
    x = np.stack([data.embeddings[row[k]] for k in keys]).astype(np.float32)
    aucs = []
    for seed in range(args.splits):
        tr, te = train_test_split(np.arange(len(y)), train_size=100, stratify=y, random_state=seed)
        fit = train.fit_probe(x[tr], y[tr], seed=seed)
        aucs.append(train.evaluate(y[te], fit.predict(x[te]))["roc_auc"])
    print(
        f"{args.splits} random stratified 100/60 splits: held-out ROC AUC min "
        f"{min(aucs):.4f}, mean {np.mean(aucs):.4f}, max {max(aucs):.4f}"
    )


if __name__ == "__main__":
    main()
