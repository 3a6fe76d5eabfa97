"""A caption-driven evaluation corpus for rebalancing (issue 13).

Only the captions carry the signal (images, where a test needs them, are unrelated to
the captions). Half of the person captions name women, half name men. A term filter
(:data:`FILTER_TERMS`, e.g. ``"bikini"``) drops captions that carry one of its terms:
30% of the woman-captions and 8% of the man-captions, so the share of women among
person captions falls from 0.500 to about 0.432. The dropped captions carry their own
context words (``"on a boat"``, ``"sunbathing"``), which occur in only a few kept
captions: a classifier told to separate unfiltered from filtered captions explains the
removal by those words, and the density ratio on the kept set barely moves the gender
balance. That is the case ``rebalance.calibrate_groups`` exists for.

Deterministic for a given ``(n, seed)``; Beam-free.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: The caption filter's terms: a caption with any of them is dropped.
FILTER_TERMS: tuple[str, ...] = ("bikini", "swimsuit", "lingerie")

#: Subjects per group.
SUBJECTS: dict[str, tuple[str, ...]] = {
    "women": ("a woman", "a young woman", "an old woman", "a girl", "two women"),
    "men": ("a man", "a young man", "an old man", "a boy", "two men"),
    "other": ("a dog", "a cat", "a horse", "a red car", "a bicycle", "a wooden chair"),
}

#: Probe groups matching :data:`SUBJECTS` (what the bias report counts).
PROBES: dict[str, list[str]] = {
    "women": ["woman", "women", "girl"],
    "men": ["man", "men", "boy"],
    "animals": ["dog", "cat", "horse"],
}

#: P(a caption of the group is flagged, i.e. carries a filter term).
P_FLAGGED: dict[str, float] = {"women": 0.30, "men": 0.08, "other": 0.0}

#: Share of person captions among all captions (the rest name animals or objects).
P_PERSON = 0.6

#: P(an unflagged caption still uses a flagged caption's context): the context words
#: "rarely occur in kept ones".
P_CONTEXT_LEAK = 0.03

VERBS = ("standing", "sitting", "walking", "smiling", "posing", "reading")
SCENES = (
    "in a park",
    "at the market",
    "on a street",
    "in a kitchen",
    "near a lake",
    "at a desk",
    "on a bus",
    "in a garden",
)
FLAGGED_SCENES = (
    "on a boat",
    "at the pool",
    "sunbathing on the sand",
    "on a yacht deck",
    "by the swimming pool",
)
FLAGGED_WEAR = ("wearing a bikini", "in a swimsuit", "in lingerie")


@dataclass(frozen=True)
class CaptionCorpus:
    """Keys, captions and truth of the corpus.

    Attributes:
        keys: unique sample keys (``"000000"``...).
        captions: one caption per sample.
        groups: ``"women"``, ``"men"`` or ``"other"`` per sample.
        flagged: True where the caption carries a filter term (the filter drops it).
    """

    keys: list[str]
    captions: list[str]
    groups: list[str]
    flagged: np.ndarray

    def women_share(self, weights: np.ndarray | None = None, kept_only: bool = False) -> float:
        """Weighted share of woman-captions among person captions.

        With ``kept_only`` the weights are one per *kept* sample (in corpus order).
        """
        g = np.array(self.groups)
        if kept_only:
            g = g[~self.flagged]
        w = np.ones(g.size) if weights is None else np.asarray(weights, dtype=np.float64)
        women = float(w[g == "women"].sum())
        men = float(w[g == "men"].sum())
        return women / (women + men)


def make_caption_corpus(n: int, seed: int = 0) -> CaptionCorpus:
    """Draw ``n`` captions (see the module docstring for the design)."""
    rng = np.random.default_rng(seed)
    person = rng.random(n) < P_PERSON
    is_woman = rng.random(n) < 0.5
    leak = rng.random(n) < P_CONTEXT_LEAK
    u_flag = rng.random(n)
    picks = rng.integers(0, 1 << 30, size=(n, 4))
    captions, groups, flagged = [], [], np.zeros(n, dtype=bool)
    for i in range(n):
        group = ("women" if is_woman[i] else "men") if person[i] else "other"
        subjects = SUBJECTS[group]
        subject = subjects[picks[i, 0] % len(subjects)]
        verb = VERBS[picks[i, 1] % len(VERBS)]
        if u_flag[i] < P_FLAGGED[group]:
            wear = FLAGGED_WEAR[picks[i, 2] % len(FLAGGED_WEAR)]
            scene = FLAGGED_SCENES[picks[i, 3] % len(FLAGGED_SCENES)]
            caption = f"a photo of {subject} {wear} {verb} {scene}"
            flagged[i] = True
        else:
            scenes = FLAGGED_SCENES if leak[i] else SCENES
            caption = f"a photo of {subject} {verb} {scenes[picks[i, 3] % len(scenes)]}"
        captions.append(caption)
        groups.append(group)
    return CaptionCorpus([f"{i:06d}" for i in range(n)], captions, groups, flagged)


__all__ = [
    "FILTER_TERMS",
    "PROBES",
    "SUBJECTS",
    "CaptionCorpus",
    "make_caption_corpus",
]


def write_corpus_shards(
    corpus: CaptionCorpus, folder: Path, image_for: Callable[[int], bytes], per_shard: int
) -> None:
    """The corpus as WebDataset shards in ``folder`` (``KEY.png`` from ``image_for(i)``,
    ``KEY.txt``), ``per_shard`` samples each, for tests and benchmarks."""
    n = len(corpus.keys)
    for start in range(0, n, per_shard):
        with tarfile.open(Path(folder) / f"shard-{start // per_shard:05d}.tar", "w") as tar:
            for i in range(start, min(start + per_shard, n)):
                for name, data in (
                    (f"{corpus.keys[i]}.png", image_for(i)),
                    (f"{corpus.keys[i]}.txt", corpus.captions[i].encode()),
                ):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
