#!/usr/bin/env python3
"""Verification of candidate pairs, the compiled local part (``mitigate/localscore.py``,
``_scorekernel.py``) against the numpy code it replaced (``benchmarks/old_scoring.py``),
rounds alternating in one process; decisions must be the same, and scores identical or
(``--previous`` of another arithmetic) within float32 rounding, but for random pairs whose
fine alignments a near tie at 16 cells changes (counted; none may cross the threshold).

Two measures on the items of a finished run (its manifest's kept and near-duplicate
samples, as ``bench_medoid.py`` loads them):
* the one-worker near-dup decision (candidate search, verification, the medoid measure),
  in process (``decode.processes`` = 1), CPU seconds;
* ``verify.pair_scores`` on random pairs of those signatures scored in full (no early
  stop: every pair reaches the pair's level), CPU microseconds a pair.

    python benchmarks/bench_pipeline.py --child --workers 1 --mode processes \\
        --out /tmp/run6400 "$PWD"/bench_data/n6400-1024px/*.tar
    python benchmarks/bench_pair_scores.py /tmp/run6400 --rounds 3

``--previous FILE`` makes the old arm an earlier ``mitigate/verify.py`` instead (``git
show REV:mitigate/verify.py > FILE``), loaded beside this tree's as a module of its own,
its ``pair_scores`` put in place of this tree's for its rounds.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))


def _previous(path: Path) -> tuple[Callable[[], None], Callable[[], None]]:
    """(install, uninstall) of the ``pair_scores`` of an earlier ``verify.py`` in this
    process (the one-process decision looks it up in ``mitigate.verify`` at each call)."""
    from mitigate import verify

    spec = importlib.util.spec_from_file_location("verify_previous", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    now = verify.pair_scores

    def install() -> None:
        verify.pair_scores = module.pair_scores

    def uninstall() -> None:
        verify.pair_scores = now

    return install, uninstall


def _decided(decision: object) -> tuple[object, ...]:
    """A decision without its score's float32 rounding."""
    return dataclasses.astuple(dataclasses.replace(decision, verify_score=None))  # type: ignore[call-overload]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="output folder of a finished run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=10000, help="random pairs scored in full")
    parser.add_argument("--previous", type=Path, help="an earlier verify.py as the old arm")
    args = parser.parse_args(argv)
    import old_scoring
    from bench_medoid import load_items

    from mitigate import verify
    from mitigate.config import load_config
    from mitigate.pipeline.near import _decide

    install, uninstall = old_scoring.install, old_scoring.uninstall
    if args.previous is not None:
        install, uninstall = _previous(args.previous)
    config, _ = load_config(REPO / "configs" / "default.yaml", [])
    items = load_items(args.run)
    table = verify.as_signatures([item.signature for item in items])
    rng = np.random.default_rng(0)
    i, j = rng.integers(0, len(items), args.pairs), rng.integers(0, len(items), args.pairs)
    verify.pair_scores(i[:100], j[:100], table)  # the kernels compiled or loaded first
    cpu: dict[str, dict[str, list[float]]] = {
        version: {"decide": [], "pairs": []} for version in ("old", "now")
    }
    decisions, scores = {}, {}
    for _ in range(args.rounds):
        for version in ("old", "now"):
            (install if version == "old" else uninstall)()
            started = time.process_time()
            decisions[version] = _decide(items, [], config.dedup, 1)
            cpu[version]["decide"].append(time.process_time() - started)
            started = time.process_time()
            scores[version] = verify.pair_scores(i, j, table)
            cpu[version]["pairs"].append(time.process_time() - started)
    uninstall()
    same = decisions["now"] == decisions["old"] and np.array_equal(scores["now"], scores["old"])
    (new, _), (old, _) = decisions["now"], decisions["old"]
    assert [_decided(d) for d in new] == [_decided(d) for d in old], "decisions differ"
    # a change in rounding can change which alignments a random pair is scored at finely
    # (near ties at 16 cells): its score then moves more, but not across the threshold
    verified = verify.verified(scores["now"]), verify.verified(scores["old"])
    assert np.array_equal(*verified), "a random pair's verification differs"
    moved = ~np.isclose(scores["now"], scores["old"], rtol=1e-5, atol=0)
    got = np.array([d.verify_score for d in new if d.verify_score is not None])
    was = np.array([d.verify_score for d in old if d.verify_score is not None])
    np.testing.assert_allclose(got, was, rtol=1e-5, err_msg="evidence scores differ")
    change = max(
        np.abs(got - was).max(initial=0), np.abs(scores["now"] - scores["old"])[~moved].max()
    )
    n = len(items)
    old = args.previous or "benchmarks/old_scoring.py"
    print(f"{n} items from {args.run}; old: {old}; best of {args.rounds} alternating rounds, CPU")
    best = {v: {k: min(xs) for k, xs in m.items()} for v, m in cpu.items()}
    for version in ("old", "now"):
        d, p = best[version]["decide"], best[version]["pairs"]
        rounds = ", ".join(f"{x:.2f}" for x in cpu[version]["decide"])
        print(
            f"  {version}: near-dup decision {d:6.2f} s ({d / n * 1000:.2f} ms a sample; "
            f"rounds {rounds}); {args.pairs:,} random pairs in full {p / args.pairs * 1e6:6.1f} "
            f"us a pair"
        )
    ratio_d = best["now"]["decide"] / best["old"]["decide"]
    ratio_p = best["now"]["pairs"] / best["old"]["pairs"]
    results = "identical results"
    if not same:
        results = f"same decisions, scores within {change:.1e}"
        results += f" but {moved.sum()} random pairs' (none across the threshold)" * bool(
            moved.any()
        )
    print(f"  now / old: decision {ratio_d:.2f}, pairs in full {ratio_p:.2f}; {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
