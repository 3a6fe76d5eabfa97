"""Worker subprocesses (mitigate/workers.py) and candidate-pair verification spread over
them: the same scores, the same medoids, and no lost work when a worker cannot start."""

from __future__ import annotations

import io
import itertools
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mitigate import keep, neardup, stages, verify, workers
from mitigate.config import load_config
from mitigate.decode import DecodedImage, decode_image
from mitigate.near import HashItem, decide_near_duplicates
from mitigate.sources import index_tar

REPO = Path(__file__).resolve().parents[1]
SHARD = REPO / "data" / "sample" / "shard-00000.tar"


@pytest.fixture(scope="module")
def decoded() -> list:
    """(key, pHash, mirror, signature) of the decodable images of a bundled shard."""
    cfg, _ = load_config(REPO / "configs" / "default.yaml", [])
    with open(SHARD, "rb") as f:
        records = list(index_tar(f, str(SHARD), max_image_bytes=10**8))
    payloads = stages.load_payloads(records, lambda p: open(p, "rb"), 10**8)
    items = stages.compute_signals(payloads, cfg.decode)
    out = [
        (i.record.key, int(i.record.phash, 16), int(i.record.phash_mirror, 16), i.record.signature)
        for i in items
        if i.record.signature is not None
    ]
    assert len(out) >= 20
    # and re-encoded copies of some (pairs that verification merges)
    good = [(r, d) for (r, d), i in zip(payloads, items, strict=True) if i.record.signature]
    for record, data in good[:10]:
        buf = io.BytesIO()
        Image.open(io.BytesIO(data)).convert("RGB").save(buf, "JPEG", quality=60)
        copy = decode_image(buf.getvalue(), max_pixels=10**8)
        if isinstance(copy, DecodedImage):
            out.append((record.key + "~q60", copy.phash, copy.phash_mirror, copy.signature))
    return out


def _all_pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    i, j = zip(*itertools.combinations(range(n), 2), strict=True)
    return np.asarray(i, np.int64), np.asarray(j, np.int64)


@pytest.mark.parametrize("stop_above", [None, 1.0])
def test_parallel_pair_scores_equal_scoring_in_process(
    decoded: list, monkeypatch: pytest.MonkeyPatch, stop_above: float | None
) -> None:
    monkeypatch.setattr(workers, "MIN_PARALLEL_PAIRS", 0)
    monkeypatch.setattr(workers.PairScorer, "MIN_CHUNK", 16)
    sigs = [d[3] for d in decoded]
    i, j = _all_pairs(len(sigs))
    expected = verify.pair_scores(i, j, sigs, stop_above=stop_above)
    with workers.PairScorer(3) as score:
        assert score.wait_ready() == 2
        got = score(i, j, sigs, stop_above=stop_above)
        assert 0 < score.worker_pairs < len(i)  # both the workers and this process scored
    assert np.array_equal(got, expected)
    assert (expected <= 1.0).any() and (expected > 1.0).any()  # both decisions present


def test_workers_still_starting_take_no_pairs_from_a_short_call_and_serve_the_next(
    decoded: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call does not wait for workers to start: a short one is scored here alone, and
    the workers it started stay for the next calls."""
    monkeypatch.setattr(workers, "MIN_PARALLEL_PAIRS", 0)
    monkeypatch.setattr(workers.PairScorer, "MIN_CHUNK", 16)
    sigs = [d[3] for d in decoded]
    i, j = _all_pairs(len(sigs))
    expected = verify.pair_scores(i, j, sigs)  # (this process's kernels loaded first)
    with workers.PairScorer(2) as score:
        got = score(i[:40], j[:40], sigs)  # a few ms here; a worker needs ~1 s to start
        assert score.worker_pairs == 0 and len(score._workers) == 1
        pid = score._workers[0].proc.pid
        assert np.array_equal(got, expected[:40])
        score.wait_ready()
        got = score(i, j, sigs)
        assert score.worker_pairs > 0 and score._workers[0].proc.pid == pid  # reused
    assert np.array_equal(got, expected)


def _die(*args: object) -> None:
    os._exit(3)


def test_a_worker_that_dies_mid_call_leaves_its_chunk_to_this_process(
    decoded: list, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(workers, "MIN_PARALLEL_PAIRS", 0)
    monkeypatch.setattr(workers.PairScorer, "MIN_CHUNK", 16)
    monkeypatch.setattr(workers, "_score_part", _die)  # sent by reference: the worker dies
    sigs = [d[3] for d in decoded]
    i, j = _all_pairs(len(sigs))
    with workers.PairScorer(2) as score:
        assert score.wait_ready() == 1
        got = score(i, j, sigs)
        assert score._workers == [] and score.worker_pairs == 0
    assert np.array_equal(got, verify.pair_scores(i, j, sigs))
    assert "exit status 3" in caplog.text


def test_a_worker_that_cannot_start_leaves_its_pairs_to_this_process(
    decoded: list, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(workers, "MIN_PARALLEL_PAIRS", 0)
    monkeypatch.setattr(workers, "_BOOT", "import sys; sys.exit(5)")
    sigs = [d[3] for d in decoded]
    i, j = _all_pairs(len(sigs))
    with workers.PairScorer(2) as score:
        got = score(i, j, sigs)
    assert np.array_equal(got, verify.pair_scores(i, j, sigs))
    assert "exit status 5" in caplog.text


def test_an_exception_in_a_worker_is_raised_in_the_caller() -> None:
    w = workers.Worker()
    try:
        with pytest.raises(workers.WorkerError, match="ZeroDivisionError"):
            w.call(divmod, 1, 0)
        assert w.call(divmod, 7, 2) == (3, 1)  # the worker goes on
    finally:
        w.close()


def test_a_closed_worker_ends_at_once_with_its_output_flushed(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Closing the pipe ends the worker without the interpreter's teardown (exit
    handlers do not run: that teardown is what a caller used to wait for), and what a
    call printed still reaches stderr."""
    import atexit

    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)  # the worker's stdout buffered
    marker = tmp_path / "teardown-ran"
    w = workers.Worker()
    w.call(atexit.register, os.mkdir, str(marker))
    w.call(print, "printed-by-a-call")  # lost unless flushed before the exit
    w.close()
    assert w.proc.returncode == 0
    assert not marker.exists()
    assert "printed-by-a-call" in capfd.readouterr().err


def _centrality_per_group(component, keys, phash, mirror, signatures) -> np.ndarray:
    """The medoid measure scored component by component (the implementation before
    scoring moved to one call), as the reference."""
    n = len(keys)
    out = np.zeros(n)
    members: dict[int, list[int]] = {}
    for i, c in enumerate(component.tolist()):
        members.setdefault(c, []).append(i)
    for group in members.values():
        if len(group) < 2:
            continue
        group.sort(key=lambda x: keys[x])
        anchors = group[: keep.MEDOID_ANCHORS]
        gi = np.repeat(np.asarray(group), len(anchors))
        ga = np.tile(np.asarray(anchors), len(group))
        gi, ga = gi[gi != ga], ga[gi != ga]
        if all(verify.is_signature(signatures[x]) for x in group):
            sub = {x: t for t, x in enumerate(group)}
            table = verify.as_signatures([signatures[x] for x in group])
            d = verify.pair_scores([sub[x] for x in gi], [sub[x] for x in ga], table)
        else:
            d = neardup.pair_distance(phash[gi], mirror[gi], phash[ga], mirror[ga]).astype(float)
        total = np.bincount(gi, weights=d, minlength=n)
        count = np.bincount(gi, minlength=n)
        out[group] = total[group] / np.maximum(count[group], 1)
    return out


def test_centrality_in_one_call_equals_component_by_component(
    decoded: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workers, "MIN_PARALLEL_PAIRS", 0)
    rng = np.random.default_rng(3)
    n = len(decoded)
    keys = [d[0] for d in decoded]
    phash = np.asarray([d[1] for d in decoded], np.uint64)
    mirror = np.asarray([d[2] for d in decoded], np.uint64)
    sigs: list[bytes | None] = [d[3] for d in decoded]
    sigs[4] = None  # its component is measured in pHash bits
    component = rng.integers(0, n // 4, size=n)
    component[-3:] = [n, n + 1, n + 2]  # singletons
    expected = _centrality_per_group(component, keys, phash, mirror, sigs)
    with workers.PairScorer(2) as scorer:
        for score in (verify.pair_scores, scorer):
            got = keep.centrality(component, keys, phash, mirror, sigs, score)
            assert np.array_equal(got, expected)
    assert (expected > 0).sum() >= n // 2


def test_centrality_scores_each_pair_once_and_reuses_the_known_scores(decoded: list) -> None:
    """Scores are symmetric: the medoid measure scores each unordered pair of a group
    once (it scored both orders before), and not at all a pair whose whole score the
    caller knows (verified candidates: at or below the stop_above they were scored
    with); the centrality values stay exactly those of the reference."""
    rng = np.random.default_rng(5)
    n = len(decoded)
    keys = [d[0] for d in decoded]
    phash = np.asarray([d[1] for d in decoded], np.uint64)
    mirror = np.asarray([d[2] for d in decoded], np.uint64)
    sigs = [d[3] for d in decoded]
    component = rng.integers(0, n // 5, size=n)
    originals = n - 10  # the fixture's last 10 are re-encoded copies of its first 10
    component[originals:] = component[:10]
    expected = _centrality_per_group(component, keys, phash, mirror, sigs)
    i, j = _all_pairs(n)
    same = component[i] == component[j]
    i, j = i[same], j[same]
    unordered = int(same.sum())
    stopped = verify.pair_scores(i, j, sigs, stop_above=1.0)
    # either order, as a caller may hold them
    known = {
        ((a, b) if t % 2 else (b, a)): float(x)
        for t, (a, b, x) in enumerate(zip(i.tolist(), j.tolist(), stopped.tolist(), strict=True))
        if x <= 1.0
    }
    assert 5 <= len(known) < unordered
    asked: list[int] = []

    def counting(a, b, table, stop_above=None):
        asked.append(len(np.asarray(a)))
        return verify.pair_scores(a, b, table, stop_above=stop_above)

    plain = keep.centrality(component, keys, phash, mirror, sigs, counting)
    assert np.array_equal(plain, expected)
    assert sum(asked) == unordered  # each unordered pair once (groups under the anchors)
    asked.clear()
    reused = keep.centrality(component, keys, phash, mirror, sigs, counting, known=known)
    assert np.array_equal(reused, expected)
    assert sum(asked) == unordered - len(known)


def test_near_decisions_are_the_same_with_verification_on_two_processes(
    decoded: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workers, "MIN_PARALLEL_PAIRS", 0)
    items = [HashItem(key, f"{p:016x}", f"{m:016x}", 100, sig) for key, p, m, sig in decoded]
    # wide k: many candidate pairs, both verified and refused ones
    args = {"k": 28, "verify_threshold": 1.0, "keep_rule": "medoid"}
    one, report_one = decide_near_duplicates(items, **args)
    with workers.PairScorer(2) as score:
        two, report_two = decide_near_duplicates(items, **args, score_pairs=score)
    assert one == two and report_one == report_two
    assert report_one["verify"]["merged_pairs"] > 0 and report_one["verify"]["refused_pairs"] > 0


def test_workers_started_without_waiting_boot_side_by_side(gate) -> None:
    """``Worker(init, wait=False)`` returns with its init still running, so the decode
    pool's workers boot at once rather than one after the other; a call sent behind the
    init is answered after it; an init that fails surfaces as PoolUnavailable at the
    first receive. (The inits here block on a FIFO until this process opens it: the
    ``gate`` fixture, tests/conftest.py.)"""
    import select

    started = [workers.Worker(gate.start_call, wait=False) for _ in range(2)]
    try:
        assert not gate.opened  # both constructors returned with their inits blocked
        for w in started:
            w.send(divmod, 7, 2)  # queued behind the init
        assert not any(select.select([w.replies], [], [], 0.3)[0] for w in started)
        gate.open()
        assert [w.receive() for w in started] == [(3, 1), (3, 1)]
    finally:
        for w in started:
            w.close()
    failing = workers.Worker((divmod, (1, 0)), wait=False)
    with pytest.raises(workers.PoolUnavailable, match="ZeroDivisionError"):
        failing.receive()
    assert failing.proc.poll() is not None or failing.proc.wait(timeout=10) is not None


# ---------------------------------------------------------------- workers lent between users


@pytest.fixture
def pool():
    """A started decode pool of two workers (tests/test_decode_pool.py's sample records)."""
    from test_decode_pool import _records

    from mitigate.decode_pool import DecodePool
    from mitigate.pipeline.fs import open_read

    cfg, _ = load_config(REPO / "configs" / "default.yaml", [])
    p = DecodePool(2, cfg.decode, [], keep_images=False, opener=open_read)
    p.records = _records(8)
    p.first = [i.record for i in p.run(p.records)[0]]
    yield p
    p.close()


def _pids(ws: list) -> list[int]:
    return sorted(w.proc.pid for w in ws if w is not None)


def test_a_scorer_borrows_the_decode_pools_idle_workers_and_gives_them_back(
    decoded: list, pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workers, "MIN_WARM_PAIRS", 0)
    monkeypatch.setattr(workers.PairScorer, "MIN_CHUNK", 16)
    sigs = [d[3] for d in decoded]
    i, j = _all_pairs(len(sigs))
    expected = verify.pair_scores(i, j, sigs)
    pids = _pids(pool._workers)
    # nothing lent yet: a call under MIN_PARALLEL_PAIRS starts no worker
    with workers.PairScorer(3) as score:
        assert np.array_equal(score(i, j, sigs), expected)
        assert score._workers == [] and score.worker_pairs == 0
    pool.lend_idle()
    assert workers.lent_workers() == 2
    with workers.PairScorer(3) as score:
        assert score.wait_ready() == 2  # the pool's two: none of its own to start
        assert _pids(score._workers) == pids and workers.lent_workers() == 0
        got = score(i, j, sigs)
        assert score.worker_pairs > 0
    assert np.array_equal(got, expected)
    assert workers.lent_workers() == 2  # given back, alive
    again, _ = pool.run(pool.records)  # the owner takes them back
    assert [i.record for i in again] == pool.first
    assert _pids(pool._workers) == pids and workers.lent_workers() == 0


def test_a_short_call_uses_lent_workers_it_would_not_start(
    decoded: list, pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between MIN_WARM_PAIRS and MIN_PARALLEL_PAIRS pairs a call is spread only over
    workers at hand (lent ones here): it starts none of its own."""
    sigs = [d[3] for d in decoded]
    i, j = _all_pairs(len(sigs))
    monkeypatch.setattr(workers, "MIN_WARM_PAIRS", len(i))
    monkeypatch.setattr(workers, "MIN_PARALLEL_PAIRS", len(i) + 1)
    monkeypatch.setattr(workers.PairScorer, "MIN_CHUNK", 16)
    pool.lend_idle()
    with workers.PairScorer(4) as score:
        got = score(i, j, sigs)
        assert _pids(score._workers) == _pids(pool._workers)  # two lent, none started
    assert np.array_equal(got, verify.pair_scores(i, j, sigs))
    with workers.PairScorer(4) as score:  # one pair fewer, nothing of it leaves here
        score(i[1:], j[1:], sigs)
        assert score._workers == []
    assert workers.lent_workers() == 2


def test_an_owner_goes_on_without_a_lent_worker_that_is_out(decoded: list, pool) -> None:
    """The pool needs its workers while a scorer holds them: it starts others in their
    place, and the scorer closes the ones it held (no process is left over)."""
    pids = _pids(pool._workers)
    pool.lend_idle()
    with workers.PairScorer(2) as score:
        assert score.wait_ready() == 1
        (held,) = score._workers
        again, _ = pool.run(pool.records)
        assert [i.record for i in again] == pool.first
        now = _pids(pool._workers)
        assert held.proc.pid not in now and len(set(now) & set(pids)) == 1
    assert held.proc.wait(timeout=10) is not None  # closed with the scorer
    assert workers.lent_workers() == 0


def test_closing_the_owner_withdraws_its_lent_workers(pool) -> None:
    started = [w for w in pool._workers if w is not None]
    pool.lend_idle()
    pool.close()
    assert workers.lent_workers() == 0 and workers.borrow(2) == []
    assert all(w.proc.wait(timeout=10) is not None for w in started)


def test_a_borrowed_worker_that_dies_is_not_lent_again(
    decoded: list, pool, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(workers, "MIN_WARM_PAIRS", 0)
    monkeypatch.setattr(workers.PairScorer, "MIN_CHUNK", 16)
    monkeypatch.setattr(workers, "_score_part", _die)
    sigs = [d[3] for d in decoded]
    i, j = _all_pairs(len(sigs))
    pool.lend_idle()
    with workers.PairScorer(3) as score:
        assert score.wait_ready() == 2
        got = score(i, j, sigs)
    assert np.array_equal(got, verify.pair_scores(i, j, sigs))
    assert "exit status 3" in caplog.text and workers.lent_workers() == 0
    again, _ = pool.run(pool.records)  # the pool finds them dead and starts others
    assert [i.record for i in again] == pool.first
