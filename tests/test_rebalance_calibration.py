"""Calibration to declared groups (raking with clipping), C selection by held-out loss,
and the caption-driven corpus of issue 13 on which both are measured."""

from __future__ import annotations

import logging
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from fit_samples import noise_fit_sample

from mitigate import raking as rk
from mitigate import rebalance as rb
from mitigate import rebalance_select as rs
from mitigate.rebalance_corpus import FILTER_TERMS, PROBES, make_caption_corpus

NAMES = ("women", "men")


def _synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw ratios and patterns over two overlapping groups (bit 0 women, bit 1 men)."""
    rng = np.random.default_rng(seed)
    pat = rng.choice(4, size=n, p=[0.45, 0.25, 0.25, 0.05])
    raw = rng.lognormal(0.0, 1.2, n) * np.where(pat & 1, 0.6, 1.0)
    return raw, pat


def _shares(w: np.ndarray, pat: np.ndarray) -> dict[str, float]:
    return {g: float(w[(pat >> i) & 1 == 1].sum() / w.sum()) for i, g in enumerate(NAMES)}


# --------------------------------------------------------------------------------------
# raking
# --------------------------------------------------------------------------------------


def test_calibrated_weights_hit_group_shares_mean_and_bounds() -> None:
    raw, pat = _synthetic(20_000, 0)
    targets = {"women": 0.33, "men": 0.27}
    w, result = rk.calibrate_weights(raw, pat, targets, NAMES, 0.1, 10.0)
    for g, share in _shares(w, pat).items():
        assert share == pytest.approx(targets[g], abs=1e-9), g
    assert w.mean() == pytest.approx(1.0, abs=1e-12)
    assert w.min() >= 0.1 and w.max() <= 10.0
    assert np.count_nonzero(w == 10.0) > 0 and np.count_nonzero(w == 0.1) > 0  # clipping bit
    # one multiplier per pattern: inside a pattern the ranking of raw weights is kept
    for p in range(4):
        m = pat == p
        order = np.argsort(raw[m], kind="stable")
        assert np.all(np.diff(w[m][order]) >= -1e-12)
    assert set(result.multipliers) == {0, 1, 2, 3}
    # the shares before calibration were off (so the test is not trivially true)
    plain = rb.finalize_weights(raw, 0.1, 10.0)
    assert abs(_shares(plain, pat)["women"] - targets["women"]) > 0.05


def test_histogram_raking_plus_exact_pass_equals_in_memory_result() -> None:
    """The distributed form: per-pattern histograms merged in any order, raking on
    them, then exact fixed-point totals and a correction: shares exact to 1e-9."""
    raw, pat = _synthetic(30_000, 1)
    targets = {"women": 0.35, "men": 0.3}
    w_min, w_max = 0.2, 5.0

    def hists(parts: list[np.ndarray]) -> dict[int, rb.LogHistogram]:
        out: dict[int, rb.LogHistogram] = {}
        for idx in parts:
            for p in np.unique(pat[idx]):
                h = rb.LogHistogram().add(raw[idx][pat[idx] == p])
                out[int(p)] = out[int(p)].merge(h) if int(p) in out else h
        return out

    idx = np.arange(raw.size)
    a = hists([idx[:7000], idx[7000:]])
    b = hists([idx[20000:], idx[:20000]])
    fits = [
        rk.rake(
            {p: rk.HistCell(h, w_min, w_max) for p, h in hs.items()}, targets, NAMES, w_min, w_max
        )
        for hs in (a, b)
    ]
    assert fits[0].multipliers == fits[1].multipliers  # bit-identical whatever the merge order
    fit = fits[0]
    provisional = np.clip(np.array([fit.multipliers[p] for p in pat]) * raw, w_min, w_max)
    halves = [rk.ExactTotals(), rk.ExactTotals()]
    for i, (p, wi) in enumerate(zip(pat.tolist(), provisional.tolist(), strict=True)):
        halves[i % 2].add(p, wi, w_min, w_max)
    exact = halves[0].merge(halves[1])
    assert exact.cells == halves[1].merge(halves[0]).cells  # integer sums: order-free
    corr = rk.corrections(exact, fit.targets, w_min, w_max)
    w = np.array(
        [
            rk.apply(r, fit.multipliers[p], corr[p], w_min, w_max)
            for r, p in zip(raw.tolist(), pat.tolist(), strict=True)
        ]
    )
    for g, share in _shares(w, pat).items():
        assert share == pytest.approx(targets[g], abs=1e-9), g
    assert w.mean() == pytest.approx(1.0, abs=1e-9)
    assert w.min() >= w_min and w.max() <= w_max
    in_memory, _ = rk.calibrate_weights(raw, pat, targets, NAMES, w_min, w_max)
    np.testing.assert_allclose(w, in_memory, rtol=1e-6)


def test_unreachable_share_is_refused_naming_the_group() -> None:
    raw, pat = _synthetic(5000, 2)
    # women are ~30% of kept samples; 90% would need a mean weight above w_max=2
    with pytest.raises(rk.CalibrationError, match=r"group 'women'.*outside \[w_min=0.5, w_max=2"):
        rk.calibrate_weights(raw, pat, {"women": 0.9, "men": 0.05}, NAMES, 0.5, 2.0)
    with pytest.raises(rk.CalibrationError, match="no kept sample"):
        rk.calibrate_weights(raw[pat == 0], pat[pat == 0], {"women": 0.2, "men": 0.2}, NAMES)


def test_group_matcher_patterns_whole_words_and_phrases() -> None:
    m = rk.GroupMatcher({"women": ["woman", "young lady"], "men": ["man"]})
    assert m.pattern("A Woman's hat") == 0b01
    assert m.pattern("a young lady and a man") == 0b11
    assert m.pattern("a lady") == 0  # the phrase, not its parts
    assert m.pattern("manhattan skyline") == 0  # whole words only
    assert m.pattern(None) == 0
    assert pickle.loads(pickle.dumps(m)).pattern("man") == 0b10
    with pytest.raises(ValueError, match="at most 8 groups"):
        rk.GroupMatcher({str(i): ["x"] for i in range(9)})


# --------------------------------------------------------------------------------------
# C selection
# --------------------------------------------------------------------------------------


def test_select_c_prefers_a_weak_model_on_noise_and_a_strong_one_on_signal() -> None:
    rng = np.random.default_rng(4)
    n = 3000
    words = rng.integers(0, 200, size=(n, 3))
    captions = [" ".join(f"w{j}" for j in row) for row in words]
    cfg = rb.FeatureConfig(n_features=2**12)
    x = cfg.featurize(captions)
    folds = rs.fold_ids([rb.key_hash64(str(i), 0) for i in range(n)], 3)
    grid = (0.01, 1.0, 100.0)
    # noise: removal independent of the caption; a strong model only fits noise
    noise = rs.select_C(x, rng.random(n) > 0.3, folds, grid, feature_config=cfg)
    assert noise.C == 0.01
    assert noise.log_loss[0.01] < noise.log_loss[100.0]
    # signal: captions with w0..w19 are removed 90% of the time, others never
    flagged = (words < 20).any(axis=1)
    keep = ~(flagged & (rng.random(n) < 0.9))
    signal = rs.select_C(x, keep, folds, grid, feature_config=cfg)
    assert signal.C > 0.01
    assert signal.log_loss[signal.C] < signal.log_loss[0.01]
    assert rs.select_C(x, keep, folds, grid, feature_config=cfg) == signal  # deterministic
    assert signal.as_dict()["held_out_log_loss"]["100.0"] == signal.log_loss[100.0]


def test_select_c_on_threads_gives_the_one_by_one_losses_bit_for_bit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The grid's fits run on threads; the held-out losses must be the ones a loop
    over the folds and the grid, one fit after the other, sums (the same floats)."""
    rng = np.random.default_rng(9)
    n = 1200
    words = rng.integers(0, 300, size=(n, 4))
    cfg = rb.FeatureConfig(n_features=2**16)
    x = sp.csr_matrix(cfg.featurize([" ".join(f"w{j}" for j in row) for row in words]))
    keep = ~((words < 30).any(axis=1) & (rng.random(n) < 0.8))
    folds = rs.fold_ids([rb.key_hash64(str(i), 0) for i in range(n)], 3)
    grid = rs.DEFAULT_C_GRID
    losses = dict.fromkeys(grid, 0.0)
    rows = 0
    for f in range(3):
        test, train = folds == f, folds != f
        y = np.r_[np.ones(int(test.sum()), np.int8), np.zeros(int((test & keep).sum()), np.int8)]
        rows += y.size
        for c in grid:
            model = rb.fit_density_ratio(
                x[train], x[train & keep], C=c, feature_config=cfg, tol=1e-4, warn=False
            )
            logits = np.r_[
                model.decision_function(x[test]), model.decision_function(x[test & keep])
            ]
            losses[c] += rs._log_loss(logits, y)
    monkeypatch.setattr(rs, "usable_cores", lambda: 4)  # threads even on one core
    got = rs.select_C(x, keep, folds, grid, feature_config=cfg)
    assert got.log_loss == {c: v / rows for c, v in losses.items()}
    monkeypatch.setattr(rs, "MAX_FIT_THREADS", 1)
    assert rs.select_C(x, keep, folds, grid, feature_config=cfg) == got
    monkeypatch.setattr(rs, "MAX_FIT_THREADS", 4)
    monkeypatch.setattr(rs, "available_memory", lambda: 1)  # room for one fit at a time
    assert rs.select_C(x, keep, folds, grid, feature_config=cfg) == got


def test_the_grids_fits_at_once_are_held_to_the_cores_and_the_memory(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(rs, "usable_cores", lambda: 8)
    gb = 10**9
    assert rs.fit_threads(15, 2 * gb, None) == rs.MAX_FIT_THREADS == 4
    assert rs.fit_threads(3, 2 * gb, 100 * gb) == 3
    with caplog.at_level(logging.INFO, logger="mitigate.rebalance_select"):
        assert rs.fit_threads(15, 2 * gb, 10 * gb) == 2  # half of 10 GB holds two
    assert "2 fits at once, not 4: each holds ~2.0 GB and 10.0 GB is available" in caplog.text
    assert rs.fit_threads(15, 2 * gb, 1 * gb) == 1  # one fit runs whatever it needs
    monkeypatch.setattr(rs, "usable_cores", lambda: 1)
    assert rs.fit_threads(15, 2 * gb, 100 * gb) == 1


def test_available_memory_reads_the_kernel_and_a_containers_limit(tmp_path: Path) -> None:
    def put(relative: str, text: str) -> None:
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    assert rs.available_memory(str(tmp_path)) is None  # nothing readable
    put("proc/meminfo", "MemTotal:  4000 kB\nMemFree:  10 kB\nMemAvailable:  1000 kB\n")
    assert rs.available_memory(str(tmp_path)) == 1000 * 1024
    put("sys/fs/cgroup/memory.max", "max\n")  # cgroup v2, no limit
    put("sys/fs/cgroup/memory.current", "300000\n")
    assert rs.available_memory(str(tmp_path)) == 1000 * 1024
    put("sys/fs/cgroup/memory.max", "800000\n")  # a container's limit less its usage
    assert rs.available_memory(str(tmp_path)) == 500_000
    put("sys/fs/cgroup/memory/memory.limit_in_bytes", "400000\n")  # cgroup v1
    put("sys/fs/cgroup/memory/memory.usage_in_bytes", "350000\n")
    assert rs.available_memory(str(tmp_path)) == 50_000
    if Path("/proc/meminfo").exists():  # this machine: some, and no more than it has
        total = next(x for x in Path("/proc/meminfo").read_text().splitlines() if "MemTotal" in x)
        assert 0 < rs.available_memory() <= int(total.split()[1]) * 1024


def test_select_c_stops_climbing_once_the_loss_rose_twice_and_fits_nothing_it_skips(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Noise: the held-out loss falls from C=0.01 to 0.1, then rises at 1 and 10; with
    patience 2 the climb ends there. The values tried get the losses of the whole
    grid's run bit for bit, the choice is the same, and C=100 is never fitted, even
    with threads free to start it early."""
    sample = noise_fit_sample()
    x, keep, folds, cfg = sample.features, sample.kept, sample.folds, sample.config
    fitted: list[float] = []
    real_fit = rs.fit_stacked

    def counting_fit(*args, **kwargs):
        fitted.append(kwargs["C"])
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(rs, "fit_stacked", counting_fit)
    monkeypatch.setattr(rs, "usable_cores", lambda: 4)  # threads even on one core
    whole = rs.select_C(x, keep, folds, rs.DEFAULT_C_GRID, feature_config=cfg, patience=0)
    assert sorted(fitted) == sorted(list(rs.DEFAULT_C_GRID) * 3) and not whole.not_tried
    loss = [whole.log_loss[c] for c in rs.DEFAULT_C_GRID]
    assert loss[1] < loss[0] and loss[1] < loss[2] < loss[3]  # the shape this test needs
    fitted.clear()
    climbed = rs.select_C(x, keep, folds, rs.DEFAULT_C_GRID, feature_config=cfg)
    assert sorted(fitted) == sorted([0.01, 0.1, 1.0, 10.0] * 3)  # not one fit of C=100
    assert climbed.log_loss == {c: whole.log_loss[c] for c in (0.01, 0.1, 1.0, 10.0)}
    assert climbed.C == whole.C == 0.1
    assert climbed.not_tried == (100.0,) and climbed.patience == 2
    assert climbed.as_dict()["not_tried"] == ["100.0"]
    assert "not_tried" not in whole.as_dict()
    fitted.clear()
    once = rs.select_C(x, keep, folds, rs.DEFAULT_C_GRID, feature_config=cfg, patience=1)
    assert sorted(fitted) == sorted([0.01, 0.1, 1.0] * 3) and once.not_tried == (10.0, 100.0)
    assert once.C == 0.1
    with pytest.raises(ValueError, match="patience"):
        rs.select_C(x, keep, folds, rs.DEFAULT_C_GRID, feature_config=cfg, patience=-1)


@pytest.mark.parametrize(
    ("losses", "patience", "tried"),
    [
        ([5, 4, 4.5, 3, 3.5, 3.6, 1], 2, 6),  # one rise then a fall goes on
        ([5, 4, 4.5, 3, 3.5, 3.6, 1], 1, 3),
        ([5, 4, 4.5, 3, 3.5, 3.6, 1], 0, 7),
        ([5, 4, 4, 4, 1], 1, 5),  # an equal loss is not a rise
        ([1, 2, 3], 3, 3),  # fewer steps than the patience
    ],
)
def test_the_climb_needs_a_value_only_when_no_earlier_value_can_stop_it(
    losses: list[float], patience: int, tried: int
) -> None:
    climb = rs._Climb(patience)
    for i, loss in enumerate(losses):
        if not climb.needed(i):
            break
        climb.done(i, loss)
    assert len(climb.loss) == tried
    # with a value's loss unknown, the next one is needed only if a step already fell
    c = rs._Climb(2)
    c.done(0, 5.0)
    c.done(1, 6.0)  # rose
    assert c.needed(2) and not c.needed(3)  # 3 waits: 2 may rise again
    c.done(2, 5.5)  # fell
    assert c.needed(3) and c.needed(4)  # a fall at 2 means neither 2 nor 3 stops it


def test_fold_ids_and_bad_grids() -> None:
    f = rs.fold_ids([rb.key_hash64(str(i), 0) for i in range(3000)], 3)
    assert sorted(np.bincount(f)) == pytest.approx([1000, 1000, 1000], abs=100)
    x = rb.FeatureConfig(n_features=16).featurize(["a", "b", "c", "d"])
    with pytest.raises(ValueError, match="positive finite"):
        rs.select_C(x, [1, 0, 1, 0], [0, 1, 0, 1], [0.0])
    with pytest.raises(ValueError, match="at least 2 folds"):
        rs.fold_ids([1, 2], 1)
    with pytest.raises(ValueError, match="lacks a filtered or a kept sample"):
        rs.select_C(x, [1, 1, 0, 0], [0, 0, 1, 1], [1.0])
    with pytest.raises(ValueError, match=r"16 columns, feature_config\.width is 32"):
        rs.select_C(x, [1, 0, 1, 0], [0, 0, 1, 1], [1.0], feature_config=rb.FeatureConfig(32))


# --------------------------------------------------------------------------------------
# the issue-13 corpus: captions carry the signal, dropped captions their own context
# --------------------------------------------------------------------------------------

N_CORPUS = 8000


@pytest.fixture(scope="module")
def corpus_fit() -> dict:
    corpus = make_caption_corpus(N_CORPUS, seed=0)
    keep = ~corpus.flagged
    cfg = rb.FeatureConfig(n_features=2**14, masked_terms=frozenset((t,) for t in FILTER_TERMS))
    x = cfg.featurize(corpus.captions)
    folds = rs.fold_ids([rb.key_hash64(k, 0) for k in corpus.keys], 3)
    selection = rs.select_C(x, keep, folds, rs.DEFAULT_C_GRID, feature_config=cfg)
    raw = {
        c: rb.fit_density_ratio_from_sample(x, keep, C=c, feature_config=cfg).weights(x[keep])
        for c in (0.1, selection.C)
    }
    return {"corpus": corpus, "keep": keep, "selection": selection, "raw": raw}


def test_corpus_reproduces_the_issue_case(corpus_fit: dict) -> None:
    corpus = corpus_fit["corpus"]
    groups = np.array(corpus.groups)
    assert np.mean(corpus.flagged[groups == "women"]) == pytest.approx(0.30, abs=0.03)
    assert np.mean(corpus.flagged[groups == "men"]) == pytest.approx(0.08, abs=0.02)
    assert corpus.women_share() == pytest.approx(0.5, abs=0.02)
    kept_share = corpus.women_share(np.ones(int(corpus_fit["keep"].sum())), kept_only=True)
    assert kept_share == pytest.approx(0.432, abs=0.015)
    # the dropped captions' context words rarely occur in kept ones
    kept_caps = [c for c, k in zip(corpus.captions, corpus_fit["keep"], strict=True) if k]
    dropped = [c for c, k in zip(corpus.captions, corpus_fit["keep"], strict=True) if not k]
    assert all(any(t in c for t in FILTER_TERMS) for c in dropped)
    assert not any(any(t in c for t in FILTER_TERMS) for c in kept_caps)
    boat = [" boat" in c or " pool" in c or "sunbathing" in c for c in kept_caps]
    assert 0 < np.mean(boat) < 0.05


def _gap_closed(corpus_fit: dict, weights: np.ndarray) -> float:
    corpus = corpus_fit["corpus"]
    filtered = corpus.women_share(np.ones(weights.size), kept_only=True)
    return (corpus.women_share(weights, kept_only=True) - filtered) / (
        corpus.women_share() - filtered
    )


def test_density_ratio_alone_closes_little_of_the_gap_at_auto_and_fixed_c(
    corpus_fit: dict,
) -> None:
    """Measured (BENCHMARKS.md): held-out log loss prefers the strong model that
    explains removal by the dropped captions' own context words, which closes almost
    none of the gender gap; the old fixed C=0.1 closes about a third at this size."""
    sel = corpus_fit["selection"]
    assert sel.C == 100.0
    assert min(sel.log_loss.values()) == sel.log_loss[100.0] < sel.log_loss[0.1]
    fixed = _gap_closed(corpus_fit, rb.finalize_weights(corpus_fit["raw"][0.1], 0.1, 10.0))
    auto = _gap_closed(corpus_fit, rb.finalize_weights(corpus_fit["raw"][sel.C], 0.1, 10.0))
    assert 0.2 < fixed < 0.45
    assert 0.0 <= auto < 0.05
    assert auto < fixed


@pytest.mark.parametrize("c", [0.1, "auto"])
def test_calibrate_groups_restores_the_declared_groups(corpus_fit: dict, c: object) -> None:
    corpus, keep = corpus_fit["corpus"], corpus_fit["keep"]
    raw = corpus_fit["raw"][0.1 if c == 0.1 else corpus_fit["selection"].C]
    matcher = rk.GroupMatcher({g: PROBES[g] for g in NAMES})
    counts: dict[int, int] = {}
    for cap in corpus.captions:
        p = matcher.pattern(cap)
        counts[p] = counts.get(p, 0) + 1
    targets, _ = rk.pattern_counts_to_shares(counts, NAMES)
    kept_caps = [cap for cap, k in zip(corpus.captions, keep, strict=True) if k]
    pat = np.array([matcher.pattern(cap) for cap in kept_caps])
    w, _ = rk.calibrate_weights(raw, pat, targets, NAMES, 0.1, 10.0)
    table = rb.probe_term_table(corpus.captions, kept_caps, w, PROBES)
    for g in NAMES:
        assert abs(table[g].freq_reweighted - targets[g]) < 1e-6
        assert abs(table[g].rel_change_reweighted) < 0.01  # the issue's target: within 1%
    assert table["women"].rel_change_filtered < -0.14
    # women among person captions: the issue's headline number
    assert corpus.women_share(w, kept_only=True) == pytest.approx(corpus.women_share(), abs=1e-6)
    assert w.mean() == pytest.approx(1.0, abs=1e-12)
    assert w.min() >= 0.1 and w.max() <= 10.0
    assert rb.effective_sample_size(w) / w.size > 0.9
    # held-out probe: not calibrated; its change is reported, not imposed
    assert math.isfinite(table["animals"].rel_change_reweighted)


def test_unreachable_calibration_falls_back_to_plain_weights_with_a_recorded_error() -> None:
    from mitigate.config import validate_config
    from mitigate.pipeline.rebalance import calibration_fit

    cfg = validate_config(
        {"rebalance": {"enabled": True, "calibrate_groups": ["women", "men"], "w_max": 2.0}}
    ).rebalance
    raw, pat = _synthetic(4000, 5)
    hists = {int(p): rb.LogHistogram().add(raw[pat == p]) for p in np.unique(pat)}
    # unfiltered: 90% women, 5% men -- out of reach with w_max = 2
    counts = {1: 900, 2: 50, 0: 50}
    out = calibration_fit(counts, hists, cfg, NAMES)
    assert out["error"] is not None and "group 'women'" in out["error"]
    assert out["unfiltered_shares"] == {"women": 0.9, "men": 0.05}
    assert set(out["multipliers"].values()) == {out["scale"]}  # the plain density ratio
    ok = calibration_fit({1: 300, 2: 250, 3: 20, 0: 430}, hists, cfg, NAMES)
    assert ok["error"] is None and set(ok["multipliers"]) == {0, 1, 2, 3}
    assert sum(ok["targets"].values()) == pytest.approx(4000, rel=1e-12)


def test_group_totals_combiner_is_independent_of_bundling_and_merge_order() -> None:
    from mitigate.config import validate_config
    from mitigate.pipeline.rebalance import ExactTotalsFn, GroupTotalsFn

    cfg = validate_config(
        {"rebalance": {"enabled": True, "calibrate_groups": ["women", "men"]}}
    ).rebalance
    raw, pat = _synthetic(6000, 6)
    items = [("kept", int(p), float(r)) for p, r in zip(pat, raw, strict=True)]
    items += [("unfiltered", int(p), 0.0) for p in np.random.default_rng(7).choice(4, 7000)]
    fn = GroupTotalsFn(cfg, NAMES)

    def combine(chunks: list[list], one_by_one: bool, reverse: bool) -> dict:
        accs = []
        for chunk in chunks:
            acc = fn.create_accumulator()
            if one_by_one:
                for item in chunk:
                    acc = fn.add_input(acc, item)
            else:
                acc = fn.add_inputs(acc, chunk)
            accs.append(acc)
        return fn.extract_output(fn.merge_accumulators(accs[::-1] if reverse else accs))

    a = combine([items[:5000], items[5000:]], one_by_one=True, reverse=False)
    b = combine([items[i::3] for i in range(3)], one_by_one=False, reverse=True)
    assert a["error"] is None
    assert a["multipliers"] == b["multipliers"] and a["targets"] == b["targets"]
    assert a["scale"] == b["scale"]
    exact = ExactTotalsFn(0.1, 10.0)
    pairs = [(int(p), float(w)) for p, w in zip(pat, np.clip(raw, 0.1, 10.0), strict=True)]
    accs = []
    for part in (pairs[:100], pairs[100:]):
        acc = exact.create_accumulator()
        for pair in part:
            acc = exact.add_input(acc, pair)
        accs.append(acc)
    assert exact.merge_accumulators(accs).cells == exact.merge_accumulators(accs[::-1]).cells
