"""Rebalancing where captions are written without spaces (Chinese here): the bias
report's probes and the calibrated groups match their terms anywhere in a caption, as
caption_terms does, and the density-ratio features read such text in character pairs
(helper-37: the probes 女人 and 男人 matched nothing, calibration said it had worked,
and the weights stayed at 1 while the filter had taken 30 % of one group)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mitigate.config import validate_config
from mitigate.pipeline.rebalance import _with_calibration
from mitigate.pipeline.run import run
from mitigate.raking import GroupMatcher
from mitigate.rebalance.features import caption_terms
from mitigate.rebalance.probes import ProbeTableAccumulator


def test_terms_without_spaces_are_found_anywhere_in_a_caption():
    matcher = GroupMatcher({"women": ["女人"], "men": ["男人"], "cats": ["cat"]})
    assert matcher.pattern("一个女人在公园里") == 0b001
    assert matcher.pattern("男人和女人") == 0b011
    assert matcher.pattern("a cat and 女人") == 0b101
    assert matcher.pattern("a category") == 0  # a spaced script: whole words still
    acc = ProbeTableAccumulator({"women": ["女人"], "men": ["男人"]})
    for caption in ("一个女人在公园里", "两个男人", "风景"):
        acc.add_unfiltered(caption)
    rows = acc.result()
    assert (rows["women"].hits_unfiltered, rows["men"].hits_unfiltered) == (1, 1)


def test_features_read_unspaced_text_in_pairs_with_masked_terms_cut_out():
    terms = caption_terms("一个女人在血腥的夜里", frozenset({("血腥",)}))
    assert "女人" in terms and "夜里" in terms
    assert not [t for t in terms[1:] if "血" in t or "腥" in t]  # no pair holds the term
    assert caption_terms("a woman at night") == [
        "a",
        "woman",
        "at",
        "night",
        "a woman",
        "woman at",
        "at night",
    ]  # spaced scripts as before


def test_a_calibrated_group_no_caption_holds_is_not_shown_as_calibrated():
    probes = {
        g: {"count_unfiltered": n, "reweighted": 0.5, "calibrated": True}
        for g, n in (("women", 40), ("aliens", 0))
    }
    cal = {
        "groups": ["women", "aliens"],
        "unfiltered_shares": {"women": 0.5, "aliens": 0.0},
        "iterations": 3,
        "error": None,
    }
    out = _with_calibration({"probes": probes}, cal)
    assert out["probes"]["women"]["calibrated"] and not out["probes"]["aliens"]["calibrated"]
    assert "aliens matched no caption of the unfiltered data" in out["warnings"][0]


WOMEN, MEN = "女人", "男人"
CONTEXT = ["在公园里散步", "在厨房做饭", "在海边看日落", "在街上骑车", "在图书馆读书", "在山上"]


def _corpus(n: int, rng: np.random.Generator) -> list[tuple[str, str]]:
    """(key, caption): half of them of women, half of men; the filter term 血腥 in 30 %
    of the women's captions and 8 % of the men's, with a context phrase of its own."""
    out = []
    for i in range(n):
        person = WOMEN if i % 2 == 0 else MEN
        rate = 0.30 if person == WOMEN else 0.08
        if rng.random() < rate:
            caption = f"一个{person}在夜里的血腥电影院"
        else:
            caption = f"一个{person}{CONTEXT[int(rng.integers(len(CONTEXT)))]}"
        out.append((f"s{i:05d}", caption))
    return out


@pytest.fixture(scope="module")
def chinese_shard(tmp_path_factory, photos) -> Path:
    folder = tmp_path_factory.mktemp("zh")
    bases = [Image.open(io.BytesIO(d)).convert("RGB").resize((48, 48)) for d in photos.values()]
    with tarfile.open(folder / "zh.tar", "w") as tar:
        for i, (key, caption) in enumerate(_corpus(1200, np.random.default_rng(5))):
            image = bases[i % len(bases)].copy()  # unrelated to the caption
            image.putpixel((0, 0), (i % 256, i // 256, 7))
            buf = io.BytesIO()
            image.save(buf, "PNG")
            for name, data in ((f"{key}.png", buf.getvalue()), (f"{key}.txt", caption.encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return folder / "zh.tar"


def _run(shard: Path, out: Path, calibrate: bool) -> tuple[dict, list[dict]]:
    rebalance = {
        "enabled": True,
        "n_features": 2**14,
        "probes": {"women": [WOMEN], "men": [MEN]},
    }
    if calibrate:
        rebalance["calibrate_groups"] = ["women", "men"]
    config = validate_config(
        {
            "input": {"paths": [str(shard)]},
            "output": {"path": str(out)},
            "filters": [{"name": "caption_terms", "category": "violence", "terms": ["血腥"]}],
            "dedup": {"near": False},  # the photos are reused on purpose
            "rebalance": rebalance,
        }
    )
    summary = run(config)
    rows = pq.read_table(out / "manifest", columns=["caption", "state", "weight"]).to_pylist()
    return summary, [r for r in rows if r["state"] == "kept"]


def _women_share(kept: list[dict]) -> float:
    women = sum(r["weight"] for r in kept if WOMEN in r["caption"])
    return women / sum(r["weight"] for r in kept)


@pytest.mark.slow
def test_chinese_groups_are_counted_and_calibrated(chinese_shard, tmp_path):
    """The filter's captions have context words of their own (a cinema at night), so
    plain reweighting attributes the loss to them and leaves the groups' gap (as for
    English captions: README, "Why calibrate"); calibrating the groups closes it."""
    summary, kept = _run(chinese_shard, tmp_path / "plain", calibrate=False)
    probes = summary["rebalance"]["probes"]
    assert probes["women"]["count_unfiltered"] == 600 and probes["men"]["count_unfiltered"] == 600
    unweighted = sum(WOMEN in r["caption"] for r in kept) / len(kept)
    assert unweighted < 0.45  # the filter took more of the women's captions
    summary, kept = _run(chinese_shard, tmp_path / "cal", calibrate=True)
    assert summary["rebalance"]["probes"]["women"]["calibrated"]
    assert not summary["rebalance"].get("warnings")
    assert _women_share(kept) == pytest.approx(0.5, abs=1e-6)


def test_a_probe_gap_the_weights_leave_open_is_warned_about():
    """The women share went -14.5 % -> -14.5 % and the run said nothing (helper-37)."""
    from mitigate.pipeline.rebalance import _ess_check

    def row(before, after, count=600, calibrated=False):
        return {
            "change_filtered": before,
            "change_reweighted": after,
            "count_unfiltered": count,
            "calibrated": calibrated,
        }

    probes = {
        "women": row(-0.145, -0.145),  # left open: warned
        "men": row(0.12, 0.02),  # mostly closed
        "cats": row(-0.02, -0.02),  # too small a change to speak of
        "rare": row(-0.5, -0.5, count=10),  # too few captions
        "held": row(-0.2, -0.2, calibrated=True),  # calibrated: its own report
        "none": row(None, None),
    }
    report = {"weights": {"ess_fraction": 0.9}, "probes": probes}
    warnings = _ess_check(report, 0.25)["warnings"]
    assert len(warnings) == 1 and warnings[0].startswith(
        "probe 'women': filtering changed its share by -14.5% and the weights leave -14.5% "
        "(0% of the gap closed)"
    )
