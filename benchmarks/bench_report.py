"""Benchmark of the run report (``mitigate.report``) on synthetic runs of two sizes.

For each size N the benchmark writes, into a temporary folder, a finished run's output
as the pipeline would leave it: ``manifest/part-*.parquet`` (one part per 10,000 input
samples, every column the report reads, all states and reasons, three filters' scores,
weights), ``summary.json`` (counts computed from the manifest, a rebalancing report
and a near-duplicate ``dedup`` object so every section renders in full) and
``config.yaml``. Thumbnails come from real photos: the JPEG/PNG/WebP members of the
bundled sample shards, copied into one tar that every manifest row points into.

Then, in a fresh child process per size (so imports and peak memory are per size), it
times ``write_report`` end to end (read the manifest columns, histograms, plots,
thumbnails, HTML, atomic write), ``--repeat`` times, and reports the median and the
page's size. Generation of the synthetic run is not timed.

``--previous TREE`` also runs another checkout's report (its ``mitigate`` first on
``PYTHONPATH``) on the same run, alternating with this tree's, prints this tree's time
and peak memory over the other's, and says whether the two pages are the same bytes.

Usage::

    python benchmarks/bench_report.py                  # 10k and 100k rows
    python benchmarks/bench_report.py --sizes 1000000 --repeat 1
    git worktree add /tmp/wt_old HEAD~1
    python benchmarks/bench_report.py --sizes 1000000 4000000 --repeat 1 --previous /tmp/wt_old
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
PART_ROWS = 10_000
IMAGE_EXTS = ("jpg", "png", "webp")
FILTERS = [
    {"name": "nsfw", "id": None, "category": "sexual", "threshold": 0.3},
    {"name": "image_quality", "id": None, "category": "quality", "max_aspect_ratio": 4.0},
    {"name": "caption_terms", "id": None, "category": "violence", "min_matches": 1},
]
ERRORS = ["decode_error", "missing_caption", "invalid_json", "too_many_pixels", "read_error"]
WORDS = ["a", "woman", "man", "dog", "cat", "on", "the", "beach", "red", "car", "<b>", "&"]


def _ordinary_image(data: bytes) -> bool:
    """Decodable and at most 4 MP: the sample shards also hold a truncated JPEG and a
    decompression bomb, which a real run never thumbnails (they are error rows)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
        with im:
            if im.width * im.height > 4_000_000:
                return False
            im.load()
    except (OSError, ValueError, Image.DecompressionBombError):
        return False
    return True


def photo_tar(path: Path, max_images: int) -> list[tuple[str, int, int]]:
    """Copy up to ``max_images`` real images from the sample shards into one tar;
    returns (ext, data offset, size) of each."""
    images: list[tuple[str, bytes]] = []
    for shard in sorted((REPO / "data" / "sample").glob("shard-*.tar")):
        try:
            with tarfile.open(shard) as tar:
                for m in tar:
                    ext = m.name.rpartition(".")[2]
                    if ext in IMAGE_EXTS and m.size < 2_000_000:
                        data = tar.extractfile(m).read()
                        if len(data) == m.size and _ordinary_image(data):
                            images.append((ext, data))
        except (tarfile.ReadError, EOFError, OSError):
            pass  # the sample data has a truncated shard on purpose
    images = images[:max_images]
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for i, (ext, data) in enumerate(images):
            info = tarfile.TarInfo(f"img{i:04d}.{ext}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with tarfile.open(path) as tar:
        return [(m.name.rpartition(".")[2], m.offset_data, m.size) for m in tar.getmembers()]


def synthetic_part(
    start: int, stop: int, source: str, photos: list[tuple[str, int, int]], seed: int = 0
) -> pa.Table:
    """Manifest rows ``[start, stop)``: states, reasons, scores, weights, members."""
    n = stop - start
    rng = np.random.default_rng([seed, start])
    nsfw = rng.beta(0.3, 6.0, n)
    aspect = 1.0 + rng.exponential(0.35, n)
    terms = (rng.random(n) < 0.01).astype(np.float64)
    u = rng.random(n)
    state = np.full(n, "kept", dtype=object)
    reason = np.full(n, None, dtype=object)
    filt = np.full(n, None, dtype=object)
    err = u < 0.03
    state[err] = "error"
    reason[err] = rng.choice(ERRORS, size=int(err.sum()), p=[0.5, 0.2, 0.1, 0.1, 0.1])
    rest = ~err
    for mask, r, f in (
        (rest & (nsfw >= 0.3), "nsfw_image_above_threshold", "nsfw"),
        (rest & (aspect > 4.0), "aspect_ratio_out_of_range", "image_quality"),
        (rest & (u > 0.985), "image_too_small", "image_quality"),
        (rest & (terms >= 1), "caption_term_match", "caption_terms"),
    ):
        mask = mask & (state == "kept")
        state[mask], reason[mask], filt[mask] = "filtered", r, f
    dup = (state == "kept") & (rng.random(n) < 0.04)
    state[dup], reason[dup] = "duplicate", "exact_duplicate"
    keys = [f"{i:010d}" for i in range(start, stop)]
    detail = [
        None if r is None else f"{r} at {k}: <detail & more>"
        for k, r in zip(keys, reason, strict=True)
    ]
    n_words = rng.integers(3, 12, n)
    words = rng.integers(len(WORDS), size=(n, 12))
    caption = [" ".join(WORDS[j] for j in words[i, : n_words[i]]) for i in range(n)]
    which = rng.integers(len(photos), size=n)
    members = [[{"ext": photos[j][0], "offset": photos[j][1], "size": photos[j][2]}] for j in which]
    image_ext = [photos[j][0] for j in which]
    unscored = state == "error"
    weight = np.where(state == "kept", rng.lognormal(0.0, 0.3, n), np.nan)

    def scores(x: np.ndarray) -> pa.Array:
        return pa.array(x, mask=unscored, type=pa.float64())

    return pa.table(
        {
            "key": pa.array(keys),
            "source": pa.array([source] * n),
            "index": pa.array(np.arange(start, stop, dtype=np.int64)),
            "state": pa.array(state.tolist(), type=pa.string()),
            "reason": pa.array(reason.tolist(), type=pa.string()),
            "detail": pa.array(detail, type=pa.string()),
            "filter": pa.array(filt.tolist(), type=pa.string()),
            "threshold": pa.array(np.where(state == "filtered", 0.3, np.nan), from_pandas=True),
            "duplicate_of": pa.array([None] * n, type=pa.string()),
            "caption": pa.array(caption),
            "image_ext": pa.array(image_ext),
            "image_path": pa.array([None] * n, type=pa.string()),
            "members": pa.array(members),
            "weight": pa.array(weight, from_pandas=True),
            "score_nsfw": scores(nsfw),
            "score_image_quality": scores(aspect),
            "score_caption_terms": scores(terms),
        }
    )


def make_run(out: Path, n: int, max_images: int) -> None:
    """A finished run's output folder with ``n`` synthetic manifest rows."""
    (out / "manifest").mkdir(parents=True)
    source = out / "photos.tar"
    photos = photo_tar(source, max_images)
    counts: dict[str, dict[str, int]] = {}
    weights: list[np.ndarray] = []
    kept_keys: list[str] = []
    for part, start in enumerate(range(0, n, PART_ROWS)):
        table = synthetic_part(start, min(start + PART_ROWS, n), str(source), photos)
        pq.write_table(table, out / "manifest" / f"part-{part:06d}.parquet")
        states = table.column("state").to_pylist()
        for state, reason in zip(states, table.column("reason").to_pylist(), strict=True):
            entry = counts.setdefault(state, {})
            entry[reason] = entry.get(reason, 0) + 1
        w = table.column("weight").to_numpy(zero_copy_only=False)
        weights.append(w[np.isfinite(w)])
        if len(kept_keys) < 400:
            keys = table.column("key").to_pylist()
            kept_keys += [k for k, s in zip(keys, states, strict=True) if s == "kept"][:400]
    w = np.concatenate(weights)
    ess = float(w.sum() ** 2 / (w**2).sum())
    summary_counts = {
        s: {
            "reasons": {r: c for r, c in sorted(v.items()) if r is not None},
            "total": sum(v.values()),
        }
        for s, v in sorted(counts.items())
    }
    for s in ("duplicate", "error", "filtered", "kept"):
        summary_counts.setdefault(s, {"reasons": {}, "total": 0})
    kept = summary_counts["kept"]["total"]
    probe = {
        "change_filtered": -0.1,
        "change_reweighted": -0.01,
        "count_filtered": 900,
        "count_unfiltered": 1000,
        "filtered": 0.09,
        "reweighted": 0.099,
        "unfiltered": 0.1,
    }
    rng = np.random.default_rng(1)
    sizes = {str(k): int(n / 100 / k**2) + 1 for k in range(2, 12)}
    summary = {
        "config_sha256": "0" * 64,
        "conservation": {"ok": True, "problems": []},
        "counts": summary_counts,
        "filters": [f["name"] for f in FILTERS],
        "input_count": n,
        "manifest_rows": n,
        "models": [
            {
                "category": "sexual",
                "filter": "nsfw",
                "model_file": "open-nsfw.onnx",
                "model_sha256": "ab" * 32,
                "name": "nsfw",
            }
        ],
        "rebalance": {
            "embedding_filter": "nsfw",
            "filtered_by": ["caption_terms", "nsfw"],
            "fit": {"fit_sample": min(n, 50_000), "train_auc": 0.6},
            "masked_terms": 5,
            "mode": "weights",
            "probes": {g: dict(probe) for g in ("women", "men", "people", "animals")},
            "scale": 1.0,
            "weights": {
                "clipped_at_max": 0,
                "clipped_at_min": 0,
                "effective_sample_size": ess,
                "ess_fraction": ess / len(w),
                "max": float(w.max()),
                "mean": float(w.mean()),
                "min": float(w.min()),
                "n": len(w),
                "quantiles": {
                    str(q): float(np.quantile(w, q))
                    for q in (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
                },
            },
        },
        "dedup": {
            "cluster_sizes": sizes,
            "largest_clusters": [kept_keys[i * 20 : i * 20 + 11 - i] for i in range(10)],
            "examples_by_distance": {
                str(d): [list(rng.choice(kept_keys, 2, replace=False)) for _ in range(6)]
                for d in range(0, 9)
            },
            "pair_recall": {"estimate": 0.97, "ci": [0.95, 0.985]},
            "k": 8,
            "mode": "lsh",
        },
        "run": {"runner": {"name": "direct"}, "samples_per_second": 500.0, "wall_seconds": n / 500},
        "samples_written": kept,
        "shards": [{"samples": kept, "shard": "shard-000000.tar"}],
        "source_issues": [],
        "sources": (n + PART_ROWS - 1) // PART_ROWS,
        "versions": {"mitigate": "0.1.0"},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    config = {"input": {"paths": [str(source)]}, "filters": FILTERS}
    (out / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")


def run_child(out: str, repeat: int, keep: str | None = None) -> dict:
    t0 = time.perf_counter()
    from mitigate import report

    imports = time.perf_counter() - t0
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        path = report.write_report(out)
        times.append(time.perf_counter() - t0)
    page = path.read_text(encoding="utf-8")
    if keep:
        Path(keep).write_text(page, encoding="utf-8")
    return {
        "import_s": imports,
        "report_s": statistics.median(times),
        "times": times,
        "bytes": path.stat().st_size,
        "imgs": page.count("<img "),
        "thumbs": page.count("data:image/jpeg"),
        # VmHWM: ru_maxrss survives exec, so it could read the generating parent's peak
        "rss_mib": int(Path("/proc/self/status").read_text().split("VmHWM:")[1].split()[0]) / 1024,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per size (median)")
    parser.add_argument("--images", type=int, default=40, help="real photos in the tar")
    parser.add_argument("--previous", type=Path, help="another checkout to compare with")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--keep", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_child(args.child, args.repeat, args.keep)))
        return 0
    if args.previous is not None and not (args.previous / "mitigate" / "report").is_dir():
        raise SystemExit(f"--previous: no mitigate/report in {args.previous}")
    arms = [("this tree", None)] + ([("previous", args.previous)] if args.previous else [])
    rows = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp, "out")
            t0 = time.perf_counter()
            make_run(out, n, args.images)
            gen = time.perf_counter() - t0
            manifest_mb = sum(p.stat().st_size for p in (out / "manifest").iterdir()) / 2**20
            for label, tree in arms:
                env = dict(os.environ)
                if tree is not None:
                    env["PYTHONPATH"] = str(tree.resolve())
                keep = str(Path(tmp, f"page-{len(rows)}.html"))
                argv = ["--child", str(out), "--repeat", str(args.repeat), "--keep", keep]
                child = subprocess.run(
                    [sys.executable, __file__, *argv],
                    check=True,
                    capture_output=True,
                    text=True,
                    env=env,
                )
                res = json.loads(child.stdout.strip().splitlines()[-1])
                res["page"] = Path(keep).read_bytes()
                rows.append((n, label, gen, manifest_mb, res))
    print(
        "| rows | code | manifest MB | report s (median) | runs s | page MB | <img> | thumbnails "
        "| import s | peak RSS MB |"
    )
    print("|--:|--|--:|--:|--|--:|--:|--:|--:|--:|")
    for n, label, _, manifest_mb, r in rows:
        runs = " ".join(f"{t:.2f}" for t in r["times"])
        print(
            f"| {n:,} | {label} | {manifest_mb:.1f} | {r['report_s']:.2f} | {runs} | "
            f"{r['bytes'] / 2**20:.2f} | {r['imgs']} | {r['thumbs']} | {r['import_s']:.2f} "
            f"| {r['rss_mib']:.0f} |"
        )
    if args.previous is not None:
        for i in range(0, len(rows), 2):
            (n, _, _, _, new), (_, _, _, _, old) = rows[i], rows[i + 1]
            same = "the same bytes" if new["page"] == old["page"] else "PAGES DIFFER"
            print(
                f"{n:,} rows: this tree / previous: time {new['report_s'] / old['report_s']:.2f}x, "
                f"peak RSS {new['rss_mib'] / old['rss_mib']:.2f}x; pages: {same}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
