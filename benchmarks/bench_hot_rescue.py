#!/usr/bin/env python3
"""Stranded followers of hot groups: CPU time and peak RSS of the rescue
(:func:`mitigate.hot_rescue.rescue`: each stranded follower tries the kept samples of
the hot groups within k) against the plain per-follower scan it replaced
(``tests/hot_rescue_reference.py``: a Python loop over the whole pool for each
follower, every candidate within k scored), in the same run, on S stranded followers x
a pool of P kept samples.

Data: the 30 photos of ``data/near_eval`` (longer side 160 px); per photo 4 JPEG
copies (q 50, 70, 85, 95) and 3 look-alikes (a letter, a digit printed on it,
recoloured), real signatures. The case is many hot groups whose leaders the search
dropped: P / 24 groups, each with its own random pHash; its 24 kept samples (the pool:
kept leaders and keepers, pHash within 4 bits of the group's) are the keeper that
refused the followers (a look-alike of the group's photo), one q 95 copy of the photo
and 22 look-alikes of other photos, in random key order; its S / (P / 24) stranded
followers are q 50-85 copies of the photo (pHash within 4 bits). So every follower has
23 kept samples within k = 10 (its own group's; the other groups are ~32 bits away) and
verifies against one of them. Each (S, P, path) runs in a fresh process (its own peak
RSS); the old path only up to ``--old-max-cells`` follower x pool cells.

    python benchmarks/bench_hot_rescue.py --cases 1000:240 1000:2400 10000:2400 \
        10000:24000 100000:24000 --old-max-cells 3000000
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

PER_GROUP = 24
QUALITIES = (50, 70, 85, 95)
LOOKS = ("letter_A", "digit_5", "recolour")


def make_bank(path: Path) -> None:
    """Signatures: per photo, its 4 copies then its 3 look-alikes (7 rows a photo)."""
    import near_edits as ne

    from mitigate import verify

    sigs = []
    for f in sorted((ROOT / "data" / "near_eval").glob("*.jpg")):
        im = Image.open(f).convert("RGB")
        im.thumbnail((160, 160))
        for q in QUALITIES:
            sigs.append(verify.signature(Image.open(io.BytesIO(ne.jpeg(im, q)))))
        sigs += [verify.signature(ne.VARIANTS[v](im)) for v in LOOKS]
    np.save(path, verify.as_signatures(sigs))


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _near(h: int, rng: np.random.Generator) -> str:
    for b in rng.choice(64, size=int(rng.integers(0, 5)), replace=False).tolist():
        h ^= 1 << b
    return f"{h:016x}"


def build(n_stranded: int, n_pool: int, bank: np.ndarray, seed: int = 0):
    """The decisions of :func:`mitigate.hot.resolve` with S stranded followers, their
    roles and items, and the pool (module docstring)."""
    from mitigate import hot
    from mitigate.near import HashItem
    from mitigate.records import Reason

    rng = np.random.default_rng(seed)
    photos = bank.shape[0] // 7
    sig = [bank[t].tobytes() for t in range(bank.shape[0])]
    groups = max(1, n_pool // PER_GROUP)
    pool: dict[str, HashItem] = {}
    keeper: list[str] = []
    for g in range(groups):
        h, ph = int(rng.integers(0, 2**63)), g % photos
        keys = [f"k{int(v):09d}" for v in rng.choice(10**9, size=PER_GROUP, replace=False)]
        for t, key in enumerate(keys):
            if t == 0:  # the keeper that refused the group's followers
                s = sig[7 * ph + 4]
            elif t == 1:  # a kept copy of the photo: the followers verify against it
                s = sig[7 * ph + 3]
            else:  # a look-alike of another photo
                other = (ph + int(rng.integers(1, photos))) % photos
                s = sig[7 * other + 4 + int(rng.integers(0, 3))]
            p = _near(h, rng)
            pool[key] = HashItem(key, p, p, 25600, s)
        keeper.append(keys[0])
    out, roles, items = [], [], {}
    for t in range(n_stranded):
        g = t % groups
        ph = g % photos
        x = pool[keeper[g]]
        p = _near(int(x.phash, 16), rng)
        key = f"f{t:08d}"
        items[key] = HashItem(key, p, p, 25600, sig[7 * ph + int(rng.integers(0, 3))])
        roles.append(hot.Role(key, f"g{g}", hot.FOLLOWER, f"lead{g}", 0.5, 1))
        out.append((key, Reason.NOT_MERGED, keeper[g], 2, 1.5))
    return out, roles, items, pool


def child(args: argparse.Namespace) -> None:
    from mitigate import hot_rescue, verify

    bank = np.load(args.bank)
    out, roles, items, pool = build(args.s, args.p, bank)
    scored = [0]

    def counting(i, j, sigs, stop_above=None):
        scored[0] += len(np.asarray(i))
        return verify.pair_scores(i, j, sigs, stop_above=stop_above)

    if args.path == "old":
        import hot_rescue_reference as reference

        fn = reference.rescue
    else:
        fn = hot_rescue.rescue
    rss_in = _peak_rss_mb()
    counts = {"verified_pairs": 0, "stranded": len(out)}
    t0 = time.process_time()
    counts = fn(out, roles, items, pool, 10, 1.0, counting, False, counts)
    cpu = time.process_time() - t0
    digest = hashlib.sha256(repr(out).encode()).hexdigest()[:12]
    print(
        json.dumps(
            {
                "cpu_s": cpu,
                "peak_rss_mb": _peak_rss_mb(),
                "rss_in_mb": rss_in,
                "scored": scored[0],
                "pairs": counts["verified_pairs"],
                "merged": len(out) - counts["stranded"],
                "stranded": counts["stranded"],
                "digest": digest,
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", nargs="+", default=["1000:240", "10000:2400"], help="S:P")
    ap.add_argument("--old-max-cells", type=int, default=3_000_000)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--bank", help=argparse.SUPPRESS)
    ap.add_argument("--s", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--p", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        bank = Path(tmp) / "bank.npy"
        t0 = time.time()
        make_bank(bank)
        print(f"signature bank: {np.load(bank).shape[0]} signatures in {time.time() - t0:.1f} s")
        print(
            f"{'S':>7} {'P':>6} {'path':<4} {'CPU s':>8} {'peak RSS MB':>11} {'RSS in MB':>9} "
            f"{'pairs':>9} {'kernel pairs':>12} {'merged':>7} {'stranded':>8} "
            f"{'old/new CPU':>11} decisions"
        )
        for case in args.cases:
            s, p = (int(v) for v in case.split(":"))
            got = {}
            for path in ("new", "old") if s * p <= args.old_max_cells else ("new",):
                cmd = [sys.executable, __file__, "--child", "--bank", str(bank)]
                cmd += ["--s", str(s), "--p", str(p), "--path", path]
                res = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                got[path] = r = json.loads(res.strip().splitlines()[-1])
                ratio = same = ""
                if path == "old":
                    ratio = f"{r['cpu_s'] / max(got['new']['cpu_s'], 1e-9):.1f}x"
                    same = "same" if r["digest"] == got["new"]["digest"] else "DIFFER"
                print(
                    f"{s:>7} {p:>6} {path:<4} {r['cpu_s']:>8.2f} {r['peak_rss_mb']:>11.0f} "
                    f"{r['rss_in_mb']:>9.0f} {r['pairs']:>9} {r['scored']:>12} {r['merged']:>7} "
                    f"{r['stranded']:>8} {ratio:>11} {same or r['digest']}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
