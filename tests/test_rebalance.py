"""Tests for mitigate.rebalance (density-ratio reweighting after filtering)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import random
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from rebalance_reference import bottom_k_threshold
from scipy.optimize import brentq
from scipy.stats import spearmanr

from mitigate.rebalance import (
    DensityRatioModel,
    FeatureConfig,
    ProbeTableAccumulator,
    bottom_k,
    bottom_k_merge,
    caption_terms,
    effective_sample_size,
    finalize_weights,
    fit_density_ratio,
    fit_density_ratio_from_sample,
    key_hash64,
    key_uniform,
    normalize_embeddings,
    probe_term_table,
    resample_counts,
    weight_summary,
)

# --------------------------------------------------------------------------------------
# synthetic data
# --------------------------------------------------------------------------------------

SUBJECTS = ["woman", "man", "dog", "cat", "car", "house", "person", "child", "tree", "bird"]
P_SUBJECT = [0.2, 0.2, 0.1, 0.1, 0.08, 0.08, 0.08, 0.06, 0.05, 0.05]
ADJECTIVES = ["young", "old", "smiling", "tall", "red", "blue", "happy", "small", "dark"]
VERBS = ["standing", "sitting", "walking", "running", "looking at the camera", "posing"]
SCENES = ["on the beach", "in a park", "at night", "in the city", "in a kitchen", "near a lake"]
# removal probability by subject: "woman" 3x as often as "man" (cf. DALL-E 2: 14% vs 6%)
P_REMOVE = {"woman": 0.30, "man": 0.10}
P_REMOVE_OTHER = 0.05
CAPTION_C = 1.0
PROBES = {"woman": ["woman", "women"], "man": ["man", "men"], "dog": ["dog"]}


def synthetic_captions(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    """Captions and a keep mask drawn with the subject-dependent removal above."""
    rng = np.random.default_rng(seed)
    s = rng.choice(len(SUBJECTS), size=n, p=P_SUBJECT)
    a = rng.integers(len(ADJECTIVES), size=n)
    v = rng.integers(len(VERBS), size=n)
    c = rng.integers(len(SCENES), size=n)
    caps = [f"a {ADJECTIVES[a[i]]} {SUBJECTS[s[i]]} {VERBS[v[i]]} {SCENES[c[i]]}" for i in range(n)]
    p_remove = np.array([P_REMOVE.get(SUBJECTS[j], P_REMOVE_OTHER) for j in s])
    keep = rng.random(n) >= p_remove
    return caps, keep


def synthetic_embeddings(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit vectors from a Gaussian mixture, kept with P(keep|x) = sigmoid(0.5 + 3 x0).

    Returns (x, p_keep, keep); the true density ratio of a kept x is
    P(keep) / P(keep | x), i.e. proportional to 1 / p_keep.
    """
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(3, d)) * 1.5
    comp = rng.choice(3, size=n, p=[0.5, 0.3, 0.2])
    z = centers[comp] + rng.normal(size=(n, d))
    x = (z / np.linalg.norm(z, axis=1, keepdims=True)).astype(np.float32)
    p_keep = 1.0 / (1.0 + np.exp(-(0.5 + 3.0 * x[:, 0].astype(np.float64))))
    keep = rng.random(n) < p_keep
    return x, p_keep, keep


@pytest.fixture(scope="module")
def caption_fit() -> dict:
    caps, keep = synthetic_captions(12_000, seed=0)
    kept = [c for c, k in zip(caps, keep, strict=True) if k]
    cfg = FeatureConfig(n_features=2**16)
    xu, xf = cfg.featurize(caps), cfg.featurize(kept)
    # coupled fit sample: the filtered class is the kept members of the unfiltered one.
    # 12k rows is far below production fit samples (~50k+ per class), so the default
    # C (tuned for those; sklearn sums the loss over rows) would over-regularise here.
    model = fit_density_ratio_from_sample(xu, keep, feature_config=cfg, C=CAPTION_C)
    return {"caps": caps, "kept": kept, "cfg": cfg, "xu": xu, "xf": xf, "model": model}


# --------------------------------------------------------------------------------------
# stable hashing
# --------------------------------------------------------------------------------------


def test_key_hash_is_pinned_and_seeded() -> None:
    # Pinned values: a change here silently changes every fit sample and resample.
    assert key_hash64("sample-000", 0) == 7223828244914905774
    assert key_hash64(b"sample-000", 7) == 6226549960677689629
    assert key_uniform("sample-000", 0) == pytest.approx(0.7406688938754593, abs=0)
    assert key_hash64("sample-000", 0) == key_hash64(b"sample-000", 0)
    assert key_hash64("sample-000", 0) != key_hash64("sample-000", 1)
    # domain separation: the uniform is not just the sampling hash rescaled
    assert key_uniform("k", 3) != (key_hash64("k", 3) >> 11) * 2.0**-53
    with pytest.raises(ValueError):
        key_hash64("k", -1)
    with pytest.raises(TypeError):
        key_hash64(123, 0)  # type: ignore[arg-type]


def test_key_uniform_is_roughly_uniform() -> None:
    u = np.array([key_uniform(f"k{i}", 5) for i in range(20_000)])
    assert u.min() >= 0.0 and u.max() < 1.0
    hist, _ = np.histogram(u, bins=10, range=(0.0, 1.0))
    assert np.all(np.abs(hist - 2000) < 200)  # ~4.7 sigma per bin


# --------------------------------------------------------------------------------------
# features
# --------------------------------------------------------------------------------------


def test_caption_terms_unigrams_and_bigrams() -> None:
    assert caption_terms("A  WOMAN\u200b on") == ["a", "woman", "on", "a woman", "woman on"]
    assert caption_terms(None) == []
    assert caption_terms("") == []


def test_features_pinned_hashing() -> None:
    x = FeatureConfig().featurize(["A woman"])
    assert x.shape == (1, 2**18)
    assert x.indices.tolist() == [52609, 92594, 139080]
    np.testing.assert_allclose(x.data, [3**-0.5] * 3, rtol=1e-6)
    # normalisation makes evasive spellings identical
    y = FeatureConfig().featurize(["\uff41 \uff37\uff2f\u200b\uff2d\uff21\uff2e"])
    assert (x != y).nnz == 0


# full-width letters and a zero-width space: normalisation must fold them
_EVASIVE_WOMAN = "\uff37\uff2f\uff2d\uff21\uff2e wo\u200bman"
DETERMINISM_CAPTIONS = ["A woman on a beach", _EVASIVE_WOMAN, "", None, "a man and a dog"] * 3

_CHILD = r"""
import hashlib, json, sys
from mitigate.rebalance import FeatureConfig
x = FeatureConfig().featurize(json.load(sys.stdin))
h = hashlib.sha256()
for a in (x.data, x.indices, x.indptr):
    h.update(a.tobytes())
sys.stdout.write(h.hexdigest())
"""


def test_features_identical_across_processes() -> None:
    x = FeatureConfig().featurize(DETERMINISM_CAPTIONS)
    h = hashlib.sha256()
    for a in (x.data, x.indices, x.indptr):
        h.update(a.tobytes())
    # a fresh interpreter with a fixed str-hash salt (this one has a random salt)
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD],
        input=json.dumps(DETERMINISM_CAPTIONS),
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout == h.hexdigest()


def test_features_with_embeddings() -> None:
    emb = np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32)
    cfg = FeatureConfig(n_features=8, embedding_dim=2, embedding_weight=2.0)
    x = cfg.featurize(["a dog", None], emb)
    assert x.shape == (2, 10) and x.dtype == np.float32
    dense = x.toarray()
    np.testing.assert_allclose(dense[0, 8:], [1.2, 1.6], rtol=1e-6)  # 2 * (0.6, 0.8)
    np.testing.assert_array_equal(dense[1], np.zeros(10))
    np.testing.assert_allclose(np.linalg.norm(dense[0, :8]), 1.0, rtol=1e-6)
    with pytest.raises(ValueError):
        cfg.featurize(["a"], None)
    with pytest.raises(ValueError):
        cfg.featurize(["a", "b"], np.ones((2, 3), dtype=np.float32))
    with pytest.raises(ValueError):
        normalize_embeddings(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError):
        FeatureConfig(n_features=8).featurize(["a"], emb[:1])


# --------------------------------------------------------------------------------------
# estimator
# --------------------------------------------------------------------------------------


def test_captions_without_a_feature_give_weights_of_one_not_a_crash() -> None:
    # Every caption emoji (its words masked or none): no row has a feature, which
    # scikit-learn refuses to fit ("0 feature(s)"); that ended the whole run.
    cfg = FeatureConfig(n_features=16)
    captions = ["🙂🐶", "🌅", "🎉🎉", "😀"] * 6
    x = cfg.featurize(captions)
    assert x.nnz == 0
    model = fit_density_ratio(x, x[:10], feature_config=cfg)
    assert model.coef_indices.size == 0
    assert model.weights(x[:10]) == pytest.approx(np.ones(10), abs=1e-12)
    sample = fit_density_ratio_from_sample(x, np.arange(24) < 10, feature_config=cfg)
    assert sample.weights(x[:10]) == pytest.approx(np.ones(10), abs=1e-12)


def test_density_ratio_recovers_known_ratio() -> None:
    n, d = 20_000, 8
    x, p_keep, keep = synthetic_embeddings(n, d, seed=1)
    cfg = FeatureConfig(n_features=16, embedding_dim=d)
    xu = cfg.featurize([""] * n, x)
    xf = cfg.featurize([""] * int(keep.sum()), x[keep])
    model = fit_density_ratio(xu, xf, feature_config=cfg)
    raw = model.weights(xf)
    true = 1.0 / p_keep[keep]
    assert spearmanr(raw, true)[0] > 0.95
    # P(keep)/P(keep|x) averages to 1 over the kept set
    assert raw.mean() == pytest.approx(1.0, abs=0.05)
    w = finalize_weights(raw, 0.05, 20.0)
    for j in range(3):
        mu = float(x[:, j].mean())
        unweighted_gap = abs(float(x[keep, j].mean()) - mu)
        weighted_gap = abs(float(np.average(x[keep, j], weights=w)) - mu)
        assert weighted_gap < 0.25 * unweighted_gap + 1e-3, j
    # the filtered feature moves a lot without reweighting, so the check above has teeth
    assert abs(float(x[keep, 0].mean()) - float(x[:, 0].mean())) > 0.03


@pytest.mark.parametrize("solver", ["liblinear", "lbfgs"])
def test_a_fit_over_the_columns_in_use_is_the_fit_over_every_column(solver: str) -> None:
    """A small fit sample uses a few of the 2^18 hashed caption columns; the fit runs
    over those alone and must give what the fit over every column gives: zeros in the
    columns no row uses, the same coefficients in the others (to the solvers' last
    bits: their sums group the terms by position)."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(5)
    cfg = FeatureConfig(embedding_dim=64)  # 2^18 caption columns and the embedding's
    words = [f"w{i}" for i in range(400)]
    captions = [" ".join(rng.choice(words, 8)) for _ in range(90)]
    emb = normalize_embeddings(rng.normal(size=(90, cfg.embedding_dim)).astype(np.float32))
    feats = sp.csr_matrix(cfg.featurize(captions, emb))
    kept = rng.random(90) < 0.6
    model = fit_density_ratio(feats, feats[kept], feature_config=cfg, C=1.0, solver=solver)
    x = sp.vstack([feats, feats[kept]], format="csr", dtype=np.float64)
    x.sort_indices()
    y = np.r_[np.ones(90, np.int8), np.zeros(int(kept.sum()), np.int8)]
    extra = {"intercept_scaling": 10.0} if solver == "liblinear" else {}
    full = LogisticRegression(
        C=1.0, solver=solver, max_iter=1000, tol=1e-6, random_state=0, **extra
    )
    full.fit(x, y)
    coef = full.coef_.ravel()
    used = np.unique(x.indices)
    assert used.size < cfg.width // 20  # the compact path is the one under test
    assert np.array_equal(model.coef_indices, np.flatnonzero(coef))
    assert set(model.coef_indices.tolist()) <= set(used.tolist())
    np.testing.assert_allclose(model.coef_values, coef[model.coef_indices], rtol=1e-6, atol=1e-9)
    assert model.intercept == pytest.approx(float(full.intercept_[0]), rel=1e-6, abs=1e-9)


def test_prior_correction_for_unequal_class_sizes() -> None:
    n, d = 30_000, 8
    x, _, keep = synthetic_embeddings(n, d, seed=2)
    cfg = FeatureConfig(n_features=16, embedding_dim=d)
    xf = cfg.featurize([""] * int(keep.sum()), x[keep])
    # unfiltered sample 1/4 the size of the filtered one
    sub = np.arange(n) % 6 == 0
    xu_small = cfg.featurize([""] * int(sub.sum()), x[sub])
    model = fit_density_ratio(xu_small, xf, feature_config=cfg)
    assert model.n_unfiltered * 3 < model.n_filtered
    assert model.log_prior_ratio == pytest.approx(math.log(model.n_filtered / model.n_unfiltered))
    # without the prior factor the mean would be ~n_u/n_f (< 0.3)
    assert model.weights(xf).mean() == pytest.approx(1.0, abs=0.08)


def test_caption_reweighting_restores_probe_frequencies(caption_fit: dict) -> None:
    model: DensityRatioModel = caption_fit["model"]
    kept = caption_fit["kept"]
    w = finalize_weights(model.weights(caption_fit["xf"]), 0.1, 10.0)
    rows = probe_term_table(caption_fit["caps"], kept, w, PROBES)
    # the filter did bias the data: "woman" became >10% rarer
    assert rows["woman"].rel_change_filtered < -0.10
    for g in ("woman", "man", "dog"):
        assert abs(rows[g].rel_change_reweighted) < 0.03, (g, rows[g])
    # the same via weights_for (batched featurisation)
    np.testing.assert_array_equal(
        model.weights_for(kept, batch_size=1000), model.weights(caption_fit["xf"])
    )


def test_fit_is_deterministic_and_model_pickles_small(caption_fit: dict) -> None:
    xu, xf, cfg = caption_fit["xu"], caption_fit["xf"], caption_fit["cfg"]
    model = caption_fit["model"]
    again = fit_density_ratio(xu, xf, feature_config=cfg, C=CAPTION_C)  # rows built separately
    w1, w2 = model.weights(xf), again.weights(xf)
    assert w1.tobytes() == w2.tobytes()
    _ = model.coef  # populate the dense cache; it must not be pickled
    blob = pickle.dumps(model)
    assert len(blob) < 50_000
    restored = pickle.loads(blob)
    assert restored.weights(xf).tobytes() == w1.tobytes()
    assert finalize_weights(w1).tobytes() == finalize_weights(w2).tobytes()


def test_solvers_agree() -> None:
    n, d = 8000, 8
    x, _, keep = synthetic_embeddings(n, d, seed=6)
    cfg = FeatureConfig(n_features=16, embedding_dim=d)
    xu = cfg.featurize([""] * n, x)
    fits = [
        fit_density_ratio_from_sample(xu, keep, feature_config=cfg, solver=s)
        for s in ("liblinear", "lbfgs")
    ]
    a, b = (m.weights(xu[keep]) for m in fits)
    np.testing.assert_allclose(a, b, rtol=0.02)
    with pytest.raises(ValueError):
        fit_density_ratio_from_sample(xu, keep[:-1], feature_config=cfg)
    with pytest.raises(ValueError):
        fit_density_ratio(xu, xu, feature_config=cfg, solver="sag")


def test_fit_rejects_bad_input() -> None:
    cfg = FeatureConfig(n_features=8)
    x = cfg.featurize(["a", "b"])
    with pytest.raises(ValueError):
        fit_density_ratio(x, x[:0], feature_config=cfg)
    with pytest.raises(ValueError):
        fit_density_ratio(x, x, feature_config=FeatureConfig(n_features=16))
    with pytest.raises(ValueError):
        fit_density_ratio(x, x, C=0.0, feature_config=cfg)


def test_dense_and_sparse_features_agree(caption_fit: dict) -> None:
    model = caption_fit["model"]
    xf = caption_fit["xf"][:50]
    np.testing.assert_allclose(model.weights(xf.toarray()), model.weights(xf), rtol=1e-12)
    with pytest.raises(ValueError):
        model.weights(sp.csr_matrix((1, 5)))


# --------------------------------------------------------------------------------------
# finalize / ESS / summary
# --------------------------------------------------------------------------------------


def _scale_by_root_finding(raw: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Reference: solve mean(clip(s * raw, lo, hi)) = 1 for s with a generic root finder."""
    s = brentq(lambda s: np.clip(s * raw, lo, hi).mean() - 1.0, 1e-12, 1e12, xtol=1e-15, rtol=1e-15)
    return np.clip(s * raw, lo, hi)


def test_finalize_weights_clips_and_normalises() -> None:
    rng = np.random.default_rng(3)
    raw = np.exp(rng.normal(0.0, 1.5, size=5000))  # heavy tails on both sides
    w = finalize_weights(raw, 0.2, 5.0)
    assert w.min() >= 0.2 and w.max() <= 5.0
    assert np.count_nonzero(w == 0.2) > 0 and np.count_nonzero(w == 5.0) > 0
    assert w.mean() == pytest.approx(1.0, rel=1e-12)
    # ranking preserved
    assert np.all(np.diff(w[np.argsort(raw, kind="stable")]) >= 0)
    # it is clip(s * raw) for a single scale s: unclipped weights keep their raw ratios
    inner = (w > 0.2) & (w < 5.0)
    np.testing.assert_allclose(w[inner] / raw[inner], (w[inner] / raw[inner])[0], rtol=1e-12)
    np.testing.assert_allclose(w, _scale_by_root_finding(raw, 0.2, 5.0), rtol=1e-9)
    # scale invariance
    np.testing.assert_allclose(finalize_weights(raw * 1e6, 0.2, 5.0), w, rtol=1e-12)


def test_finalize_weights_edge_cases() -> None:
    np.testing.assert_array_equal(finalize_weights(np.array([1.0, 5.0]), 1.0, 1.0), [1, 1])
    np.testing.assert_allclose(finalize_weights(np.array([2.0, 2.0, 2.0])), [1, 1, 1])
    assert finalize_weights(np.array([])).size == 0
    # zeros stay at w_min = 0 and the rest carry the mass
    np.testing.assert_allclose(
        finalize_weights(np.array([0.0, 1.0, 3.0]), 0.0, 10.0), [0, 0.75, 2.25]
    )
    with pytest.raises(ValueError):
        finalize_weights(np.array([0.0, 0.0]), 0.0, 10.0)
    with pytest.raises(ValueError):
        finalize_weights(np.array([0.0, 0.0, 0.0, 1.0]), 0.0, 2.0)  # max mean 0.5
    with pytest.raises(ValueError):
        finalize_weights(np.array([1.0, np.inf]))
    with pytest.raises(ValueError):
        finalize_weights(np.array([1.0, -1.0]))
    with pytest.raises(ValueError):
        finalize_weights(np.array([1.0]), 1.5, 3.0)


@settings(max_examples=60, deadline=None)
@given(
    raw=st.lists(st.floats(1e-6, 1e6), min_size=1, max_size=200),
    lo=st.floats(0.0, 1.0),
    hi=st.floats(1.0, 100.0),
)
def test_finalize_weights_properties(raw: list[float], lo: float, hi: float) -> None:
    w = finalize_weights(np.array(raw), lo, hi)
    assert w.min() >= lo and w.max() <= hi
    assert w.mean() == pytest.approx(1.0, rel=1e-9)


def test_effective_sample_size_and_summary() -> None:
    assert effective_sample_size(np.ones(10)) == pytest.approx(10.0)
    assert effective_sample_size(np.array([0.0, 0.0, 4.0])) == pytest.approx(1.0)
    assert effective_sample_size(np.array([1.0, 2.0, 3.0])) == pytest.approx(36 / 14)
    assert effective_sample_size(np.zeros(3)) == 0.0
    s = weight_summary(np.array([0.5, 0.5, 1.0, 2.0]), quantiles=(0.0, 0.5, 1.0))
    assert (s.n, s.mean, s.min, s.max) == (4, 1.0, 0.5, 2.0)
    assert s.quantiles == {0.0: 0.5, 0.5: 0.75, 1.0: 2.0}
    assert s.ess == pytest.approx(16 / 5.5) and s.ess_fraction == pytest.approx(4 / 5.5)
    assert (s.n_at_min, s.n_at_max) == (2, 1)


# --------------------------------------------------------------------------------------
# resampling
# --------------------------------------------------------------------------------------


def test_resample_counts_expectation_and_determinism() -> None:
    levels = np.array([0.0, 0.3, 1.0, 1.7, 2.25])
    n_per = 8000
    weights = np.repeat(levels, n_per)
    keys = [f"s{i:06d}" for i in range(weights.size)]
    counts = resample_counts(weights, keys, seed=11)
    assert counts.dtype == np.int64
    for i, lvl in enumerate(levels):
        c = counts[i * n_per : (i + 1) * n_per]
        assert set(np.unique(c)) <= {math.floor(lvl), math.floor(lvl) + 1}
        se = math.sqrt((lvl % 1) * (1 - lvl % 1) / n_per)
        assert abs(c.mean() - lvl) <= 5 * se + 1e-12, (lvl, c.mean())
    # deterministic, per-key (order independent), seed-dependent
    np.testing.assert_array_equal(resample_counts(weights, keys, seed=11), counts)
    perm = np.random.default_rng(0).permutation(weights.size)
    permuted = resample_counts(weights[perm], [keys[i] for i in perm], seed=11)
    np.testing.assert_array_equal(permuted, counts[perm])
    assert not np.array_equal(resample_counts(weights, keys, seed=12), counts)
    with pytest.raises(ValueError):
        resample_counts(np.ones(2), ["a"], seed=0)
    with pytest.raises(ValueError):
        resample_counts(np.array([-0.5]), ["a"], seed=0)


# --------------------------------------------------------------------------------------
# bottom-k sampling
# --------------------------------------------------------------------------------------


def test_bottom_k_basic() -> None:
    items = [(f"k{i}", i) for i in range(5000)]
    s = bottom_k(items, 300, seed=4)
    assert len(s) == 300
    assert s == sorted(s, key=lambda e: (e[0], e[1]))
    assert all(h == key_hash64(k, 4) and k == f"k{p}" for h, k, p in s)
    # exactly the 300 smallest hashes
    all_h = sorted(key_hash64(k, 4) for k, _ in items)
    assert [e[0] for e in s] == all_h[:300]
    # order- and chunking-independent
    shuffled = items[:]
    random.Random(0).shuffle(shuffled)
    assert bottom_k(shuffled, 300, seed=4, chunk_size=7) == s
    # a different seed gives a different sample; n larger than the stream keeps all
    assert bottom_k(items, 300, seed=5) != s
    assert len(bottom_k(items[:10], 300, seed=4)) == 10
    assert bottom_k(items, 0, seed=4) == []
    # roughly uniform: mean index of the sample near the population mean
    assert abs(np.mean([p for _, _, p in s]) - 2499.5) < 4 * 1443 / math.sqrt(300)
    assert bottom_k_threshold(s, 300) == s[-1][0]
    assert bottom_k_threshold(s[:10], 300) is None


@settings(max_examples=40, deadline=None)
@given(
    keys=st.sets(st.integers(0, 10_000), max_size=300),
    split=st.integers(0, 2**32 - 1),
    n=st.integers(1, 60),
)
def test_bottom_k_merge_equals_bottom_k_of_union(keys: set[int], split: int, n: int) -> None:
    items = [(f"id-{k}", k) for k in sorted(keys)]
    rng = random.Random(split)
    a = [it for it in items if rng.random() < 0.5]
    b = [it for it in items if it not in a]
    # overlapping parts must not duplicate keys
    b_overlap = b + a[: len(a) // 3]
    expected = bottom_k(items, n, seed=9)
    merged = bottom_k_merge(bottom_k(a, n, seed=9), bottom_k(b_overlap, n, seed=9), n)
    assert merged == expected
    # commutative and associative
    assert bottom_k_merge(bottom_k(b_overlap, n, seed=9), bottom_k(a, n, seed=9), n) == expected
    c = a[: len(a) // 2]
    d = a[len(a) // 2 :]
    left = bottom_k_merge(
        bottom_k_merge(bottom_k(c, n, seed=9), bottom_k(d, n, seed=9), n),
        bottom_k(b, n, seed=9),
        n,
    )
    assert left == expected


# --------------------------------------------------------------------------------------
# probe table
# --------------------------------------------------------------------------------------


def test_probe_table_hand_example() -> None:
    unfiltered = [
        "A WOMAN on a bench",  # woman
        "a man with a dog",  # man
        "The woman's hat",  # woman (possessive)
        "human rights",  # neither: "man" is not a whole word here
        "wo\u200bman and man",  # woman + man (zero-width space removed)
    ]
    filtered = ["a man with a dog", "human rights", "wo\u200bman and man"]
    weights = [2.0, 1.0, 1.0]
    probes = {"woman": ["woman", "women"], "man": ["man"], "two words": ["with a dog"]}
    rows = probe_term_table(unfiltered, filtered, weights, probes)
    w, m, t = rows["woman"], rows["man"], rows["two words"]
    assert (w.hits_unfiltered, w.hits_filtered, w.n_unfiltered, w.n_filtered) == (3, 1, 5, 3)
    assert w.freq_unfiltered == pytest.approx(3 / 5)
    assert w.freq_filtered == pytest.approx(1 / 3)
    assert w.freq_reweighted == pytest.approx(1 / 4)  # weight 1 of total 4
    assert w.rel_change_filtered == pytest.approx((1 / 3) / (3 / 5) - 1)
    assert w.rel_change_reweighted == pytest.approx((1 / 4) / (3 / 5) - 1)
    assert m.freq_unfiltered == pytest.approx(2 / 5)
    assert m.freq_filtered == pytest.approx(2 / 3)
    assert m.freq_reweighted == pytest.approx(3 / 4)
    assert t.freq_unfiltered == pytest.approx(1 / 5)
    assert t.freq_reweighted == pytest.approx(2 / 4)
    assert list(rows) == ["woman", "man", "two words"]


def test_probe_accumulator_merge_and_edge_cases() -> None:
    caps, keep = synthetic_captions(600, seed=5)
    kept = [c for c, k in zip(caps, keep, strict=True) if k]
    weights = [1.0 + (i % 3) * 0.5 for i in range(len(kept))]
    whole = probe_term_table(caps, kept, weights, PROBES)
    cut_u, cut_f = 200, len(kept) // 3
    parts = []
    for us, fs in ((slice(0, cut_u), slice(0, cut_f)), (slice(cut_u, None), slice(cut_f, None))):
        acc = ProbeTableAccumulator(PROBES)
        for c in caps[us]:
            acc.add_unfiltered(c)
        for c, wt in zip(kept[fs], weights[fs], strict=True):
            acc.add_filtered(c, wt)
        parts.append(pickle.loads(pickle.dumps(acc)))
    merged = parts[0].merge(parts[1]).result()
    for g in PROBES:
        assert merged[g].hits_unfiltered == whole[g].hits_unfiltered
        assert merged[g].hits_filtered == whole[g].hits_filtered
        assert merged[g].freq_reweighted == pytest.approx(whole[g].freq_reweighted, rel=1e-12)
    with pytest.raises(ValueError):
        parts[0].merge(ProbeTableAccumulator({"x": ["y"]}))
    with pytest.raises(ValueError):
        probe_term_table(["a"], ["a", "b"], [1.0], PROBES)
    with pytest.raises(ValueError):
        probe_term_table(["a"], ["a"], [1.0, 2.0], PROBES)
    with pytest.raises(ValueError):
        ProbeTableAccumulator({"empty": ["..."]})
    empty = ProbeTableAccumulator(PROBES).result()
    assert math.isnan(empty["woman"].freq_unfiltered)
    assert math.isnan(empty["woman"].rel_change_reweighted)


def test_weight_stats_and_probe_table_are_the_same_in_any_merge_order():
    """A run's summary differed in its last digits between runs (helper-42: ESS
    390.999688513819 vs 390.99968851381925): float sums depend on how the workers'
    bundles split them; integer sums do not."""
    from mitigate.rebalance.probes import ProbeTableAccumulator
    from mitigate.rebalance.weights import WeightStats

    rng = np.random.default_rng(3)
    w = rng.lognormal(0.0, 1.0, 5000).clip(0.1, 10.0)
    captions = [("a woman" if i % 3 else "a man") for i in range(len(w))]
    summaries, tables = set(), set()
    for seed in range(6):
        order = np.random.default_rng(seed).permutation(len(w))
        cuts = np.sort(np.random.default_rng(seed + 50).choice(len(w), 7, replace=False))
        stats, acc = [], []
        for part in np.split(order, cuts):
            stats.append(WeightStats().add(w[part], 0.1, 10.0))
            a = ProbeTableAccumulator({"women": ["woman"], "men": ["man"]})
            for i in part.tolist():
                a.add_filtered(captions[i], float(w[i]))
            acc.append(a)
        total, table = stats[0], acc[0]
        for s, a in zip(stats[1:], acc[1:], strict=True):
            total, table = total.merge(s), table.merge(a)
        summaries.add(repr(total.summary()))
        tables.add(repr(table.result()))
    assert len(summaries) == 1 and len(tables) == 1
    one = WeightStats().add(w, 0.1, 10.0).summary()
    assert one["mean"] == pytest.approx(w.mean(), rel=1e-12)
    assert one["effective_sample_size"] == pytest.approx(w.sum() ** 2 / (w**2).sum(), rel=1e-9)


def test_fixed_sum_is_the_exact_sum_of_the_rounded_values_at_any_size():
    from mitigate.rebalance.weights import FIXED_BITS, fixed_sum

    rng = np.random.default_rng(9)
    for values in (
        rng.lognormal(0, 1, 100_000).clip(0.1, 10),
        rng.uniform(0, 1e6, 5000) ** 2,  # squares past int64 in fixed point
        np.full(3_000_000, 10.0),  # many values at the bound: blocks must not overflow
        np.array([]),
    ):
        ref = sum(int(v) for v in np.rint(values * float(1 << FIXED_BITS)).tolist())
        assert fixed_sum(values) == ref
