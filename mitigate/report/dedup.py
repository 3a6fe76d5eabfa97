"""The ``dedup`` section: near-duplicate clusters, pairs per distance, recall."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mitigate.report.common import _PALETTE, _esc, _plot, _Thumbs
from mitigate.report.data import cluster_size_bars
from mitigate.report.svgplot import Chart, log_count_axis

#: Largest near-duplicate clusters shown, and example pairs shown per Hamming distance.
DEDUP_CLUSTERS_SHOWN = 6
DEDUP_PAIRS_PER_DISTANCE = 4
#: Pairs refused by verification shown (evidence of what was kept apart).
DEDUP_REFUSED_SHOWN = 8


# summary.json's dedup.mode is the search that ran; "brute" is what mode auto picks
# for inputs too small for multi-index hashing to pay off: exact, like MIH.
_MODE_NAMES = {
    "brute": ("exact", " (all pairs compared: too few hashes for multi-index hashing)"),
    "exact": ("exact", " (multi-index hashing)"),
    "lsh": ("lsh", " (bit-sampling LSH: approximate)"),
}


def _cluster_plot(chart: Chart, bars: Sequence[tuple[str, int]]) -> None:
    """One bar a cluster size (a category each), on a log count axis."""
    (ax,) = chart.panels()
    n = len(bars)
    ax.set_x(-0.6, n - 0.4)
    log_count_axis(
        ax,
        max(b[1] for b in bars),
        "clusters (log)",
        "cluster size (samples)",
        xticks=list(range(n)),
        xlabels=[b[0] for b in bars],
    )
    ax.bars([k - 0.4 for k in range(n)], [0.8] * n, [b[1] for b in bars], _PALETTE["duplicate"])


def _score_note(pair: Sequence[Any]) -> str:
    """Caption of an example pair: its verification score, when it was verified."""
    if len(pair) > 2 and pair[2] is not None:
        return f'<div class="muted">verification score {float(pair[2]):.3f}</div>'
    return ""


def _section_dedup(
    dedup: Mapping[str, Any] | None,
    thumbs: _Thumbs,
    blur: Callable[[int], bool],
    max_thumbs: int,
) -> str:
    if not dedup:
        return (
            '<section id="dedup"><h2>Near-duplicate dedup</h2>'
            '<p class="note">Near-duplicate dedup: not run (summary.json has no "dedup" '
            "object). Exact duplicates are counted in the funnel.</p></section>"
        )
    parts = ['<section id="dedup"><h2>Near-duplicate dedup</h2>']
    recall = dedup.get("pair_recall") or {}
    estimate = recall.get("estimate")
    ci = list(recall.get("ci") or [])
    if estimate is None:
        rec = "pair recall not measured"
    elif len(ci) == 2 and None not in ci:
        rec = f"measured pair recall <b>{estimate:.3f}</b> (95% CI {ci[0]:.3f}–{ci[1]:.3f})"
    else:
        rec = f"measured pair recall <b>{estimate:.3f}</b>"
    mode = str(dedup.get("mode", "?"))
    shown, how = _MODE_NAMES.get(mode, (mode, ""))
    parts.append(
        f"<p>Hamming radius k = <b>{_esc(dedup.get('k', '?'))}</b>, mode "
        f"<b>{_esc(shown)}</b>{_esc(how)}; {rec}.</p>"
    )
    if dedup.get("partitions"):
        parts.append(
            f"<p>Search partitions: <b>{_esc(dedup.get('partition', '?'))}</b>, "
            f"{int(dedup['partitions']):,} partitions ({_esc(dedup.get('clusterings', '?'))} "
            f"clusterings), the largest holding {int(dedup.get('largest_partition') or 0):,} "
            f"hashes{_split_note(dedup)}.</p>"
        )
    sizes = {int(k): int(v) for k, v in (dedup.get("cluster_sizes") or {}).items()}
    if sizes:
        n_clusters = sum(sizes.values())
        n_samples = sum(k * v for k, v in sizes.items())
        parts.append(
            f"<p>{n_clusters:,} clusters holding {n_samples:,} samples (largest: {max(sizes)}).</p>"
        )
        bars = cluster_size_bars(sizes)
        parts.append(_plot(_cluster_plot, bars, alt="near-duplicate cluster sizes"))
    else:
        parts.append('<p class="note">No near-duplicate clusters.</p>')

    clusters = [list(c) for c in (dedup.get("largest_clusters") or [])][:DEDUP_CLUSTERS_SHOWN]
    # each cluster's size (its keys are its best-ranked few; runs before session 27
    # recorded no size: the keys' count stands for it)
    sizes_of = list(dedup.get("largest_cluster_sizes") or [])
    # example pairs: [keeper, duplicate] or [keeper, duplicate, verification score]
    by_distance = {
        int(d): [list(p) for p in pairs][:DEDUP_PAIRS_PER_DISTANCE]
        for d, pairs in (dedup.get("examples_by_distance") or {}).items()
    }
    check = dedup.get("verify") or {}
    refused = [list(r) for r in (check.get("examples_refused") or [])][:DEDUP_REFUSED_SHOWN]
    keys = [k for c in clusters for k in c[:max_thumbs]]
    keys += [k for pairs in by_distance.values() for p in pairs for k in p[:2]]
    keys += [k for r in refused for k in r[:2]]
    where = thumbs.index_of(keys)
    thumbs.prefetch(list(where.values()))  # the shown rows, a part at a time

    def fig(key: str) -> str:
        idx = where.get(key)
        lines: list[str] = []
        if idx is not None:
            row = thumbs.row(idx)
            lines = [row.get("reason") or row.get("state")]
        return thumbs.figure(idx, key, idx is not None and blur(idx), lines)

    if clusters:
        parts.append(f"<h3>Largest clusters (up to {max_thumbs} members each)</h3>")
        for i, c in enumerate(clusters):
            size = int(sizes_of[i]) if i < len(sizes_of) else len(c)
            more = size - min(len(c), max_thumbs)
            extra = f'<p class="muted">… and {more:,} more</p>' if more > 0 else ""
            parts.append(
                f'<div class="cluster"><div class="muted">{size:,} samples</div>'
                f'<div class="strip">{"".join(fig(k) for k in c[:max_thumbs])}</div>{extra}</div>'
            )
    if by_distance:
        parts.append("<h3>Example pairs by Hamming distance</h3>")
        for d in sorted(by_distance):
            pairs = "".join(
                f'<div class="pair">{"".join(fig(k) for k in p[:2])}{_score_note(p)}</div>'
                for p in by_distance[d]
            )
            parts.append(f"<p>distance <b>{d}</b></p><div>{pairs or '<i>none</i>'}</div>")
    if check:
        parts.append(
            f"<h3>Verification</h3><p>Candidate pairs within k were checked with the "
            f"verification signature (threshold <b>{_esc(check.get('threshold'))}</b>): "
            f"<b>{int(check.get('merged_pairs') or 0):,}</b> merged, "
            f"<b>{int(check.get('refused_pairs') or 0):,}</b> refused as different images. "
            f"Keep rule: <b>{_esc(dedup.get('keep', '?'))}</b>.</p>"
        )
        if refused:
            parts.append("<p>Refused pairs (kept apart), closest pHash first:</p>")
            parts.append(
                "<div>"
                + "".join(
                    f'<div class="pair">{"".join(fig(k) for k in r[:2])}'
                    f'<div class="muted">pHash distance {_esc(r[2])}, '
                    f"verification score {float(r[3]):.3f}</div></div>"
                    for r in refused
                )
                + "</div>"
            )
    parts.append("</section>")
    return "".join(parts)


def _split_note(dedup: dict) -> str:
    """Oversized partitions were searched in blocks: say so, with the largest task."""
    tasks, partitions = dedup.get("search_tasks"), dedup.get("partitions")
    if not tasks or not partitions or int(tasks) <= int(partitions):
        return ""
    return (
        f"; partitions above max_partition_size were searched in blocks: {int(tasks):,} "
        f"search tasks, the largest holding {int(dedup.get('largest_search') or 0):,}"
    )
