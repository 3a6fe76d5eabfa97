"""What ``mitigate train`` writes besides the head: the config snippet, the readable
report (``report.md``) and the review sheet of out-of-fold mistakes and their
neighbours (split from :mod:`mitigate.train`, which fits and exports the probe)."""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mitigate import calibrate, review

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from mitigate.train import Opener, RunEmbeddings


def snippet(
    name: str,
    category: str,
    backbone: str,
    onnx_path: Path,
    cal: calibrate.CalibrationResult,
    metrics: dict[str, Any],
) -> str:
    """The config entry of the trained filter, with the numbers as comments."""
    head = (
        f"# Linear probe '{name}' on '{backbone}' embeddings, trained by `mitigate train`.\n"
        f"# Out-of-fold ROC AUC {metrics['roc_auc']:.4f}, average precision "
        f"{metrics['average_precision']:.4f}; the threshold below was chosen on\n"
        "# out-of-fold scores. Add this entry to `filters:` next to the backbone filter\n"
        f"# '{backbone}' (keep its store_embeddings: true to redecide finished runs).\n"
    )
    body = calibrate.threshold_snippet(name, cal.threshold, cal, name="linear_probe")
    return (
        head
        + body
        + f"    category: {calibrate.yaml_text(category)}\n"
        + f"    backbone: {calibrate.yaml_text(backbone)}\n"
        + f"    model: {{path: {json.dumps(str(onnx_path))}}}\n"
    )


def markdown(report: dict[str, Any]) -> str:
    """A short readable report (the numbers are in report.json)."""
    t = report["threshold"]
    oof = report["out_of_fold"]
    m = report["model"]
    pct = f"{t['confidence']:.0%}"

    def ci(v: list[float] | None) -> str:
        return "n/a" if not v else f"{v[0]:.4f} to {v[1]:.4f}"

    lines = [
        f"# Linear probe `{report['name']}` (category `{report['category']}`)",
        "",
        f"Backbone `{report['backbone']}` ({report['embedding_dim']}-d embeddings) of run "
        f"`{report['run']}`: {report['n_run']} samples, {report['n_run_with_embedding']} "
        "with an embedding.",
        f"Labels: {report['n_labelled']} ({report['n_positive']} positive, "
        f"{report['n_negative']} negative) from `{report['labels']}`.",
        "",
        f"## Out-of-fold ({m['folds']}-fold stratified) quality",
        "",
        *(
            [
                f"Cross-validated on a stratified sample of {report['n_cross_validated']} "
                "labels; the head is fit on all of them.",
                "",
            ]
            if report["n_cross_validated"] < report["n_labelled"]
            else []
        ),
        f"- ROC AUC: **{oof['roc_auc']:.4f}**",
        f"- average precision: **{oof['average_precision']:.4f}**",
        f"- C = {m['C']:g} (lowest class-balanced out-of-fold log loss on the grid "
        + ", ".join(
            f"{c:g}: {loss:.4f}" for c, loss in zip(m["C_grid"], m["cv_log_loss"], strict=True)
        )
        + ")",
        "",
        "## Threshold",
        "",
        f"- threshold **{t['threshold']!r}** for target recall {t['target_recall']:g}",
        f"- recall {t['recall']:.4f} ({pct} CI {ci(t['recall_ci'])}), {t['tp']} of "
        f"{t['n_pos']} positives (out-of-fold; chosen on these scores, so optimistic)",
        f"- precision on the labels {t['precision']:.4f} ({pct} CI {ci(t['precision_ci'])})",
        f"- drops {t['drop_fraction']:.4f} of the run ({t['n_dropped']} of {t['n_total']}; "
        f"{pct} CI {ci(t['drop_fraction_ci'])})",
        "",
        "## To label next",
        "",
        f"{len(report['mistakes'])} labelled sample(s) the out-of-fold models get wrong at "
        f"this threshold (label errors or hard cases) and {len(report['neighbours'])} "
        "unlabelled nearest neighbours of them: `review/contact_sheet.html`.",
        "",
    ]
    lines += [
        f"- `{mk['key']}`: labelled {mk['label']}, out-of-fold score {mk['oof_score']:.4f} "
        f"({mk['kind']})"
        for mk in report["mistakes"][:20]
    ]
    return "\n".join(lines) + "\n"


def write_review(
    folder: Path,
    from_dir: str | Path,
    run: RunEmbeddings,
    report: dict[str, Any],
    entry: dict[str, Any],
    opener: Opener | None,
    n_review: int,
) -> None:
    """selection.csv and contact_sheet.html (the contact sheet of ``mitigate select``):
    the ``n_review`` worst out-of-fold mistakes, then their neighbours."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    folder.mkdir()
    opener = opener or (lambda path: open(path, "rb"))
    picked = [
        (m["key"], m["oof_score"], f"labelled {m['label']}: {m['kind']}")
        for m in report["mistakes"][:n_review]
    ] + [
        (n["key"], n["score"], f"near {n['near']} (cosine {n['cosine']:.3f})")
        for n in report["neighbours"]
    ]
    wanted = pa.array(sorted({key for key, _, _ in picked}), pa.string())
    rows: dict[str, dict[str, Any]] = {}
    for part in review.manifest_parts(from_dir):
        table = pq.read_table(part)
        for row in table.filter(pc.is_in(table.column("key"), value_set=wanted)).to_pylist():
            rows.setdefault(row["key"], row)
    entries = []
    with open(folder / "selection.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["key", "score", "state", "source", "note"])
        for key, score, note in picked:
            row = rows[key]
            source = review.csv_safe(row["source"])
            writer.writerow([review.csv_safe(key), f"{score:.6f}", row["state"], source, note])
            try:
                uri = review.thumbnail(review.read_image_bytes(row, opener))
            except (OSError, EOFError, KeyError, ValueError) as exc:
                log.warning("%s: image unreadable for the contact sheet: %s", key, exc)
                uri = ""
            entries.append(review.SheetEntry(key, score, row["caption"] or "", note, uri))
    intro = (
        f"Probe '{report['name']}' on {report['backbone']} embeddings: labelled samples the "
        "out-of-fold models get wrong (label errors or hard cases), then unlabelled samples "
        "nearest them. Mark each (harmful = positive for this category), download "
        "labels.csv, add it to the training labels and run `mitigate train` again."
    )
    blur = entry.get("category") == "sexual" or report["category"] == "sexual"
    page = review.contact_sheet(f"mitigate train: {report['name']}", intro, entries, blur)
    (folder / "contact_sheet.html").write_text(page, encoding="utf-8")


def model_sha256(from_dir: str | Path, filter_id: str) -> str | None:
    """The backbone model's sha256 as the run recorded it (summary.json), if it did."""
    try:
        summary = json.loads(Path(from_dir, "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    for model in summary.get("models", []):
        if model.get("filter") == filter_id:
            return model.get("model_sha256")
    return None


def finite(value: Any) -> Any:
    """JSON has no NaN: NaN and infinities become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


#: What ``mitigate train`` writes besides ``NAME.onnx`` and ``NAME.yaml``
PROBE_FILES = frozenset({"report.json", "report.md", "review"})
REVIEW_FILES = frozenset({"contact_sheet.html", "selection.csv"})  # in review/


def output_problem(output: Path, overwrite: bool) -> str | None:
    """Why ``output`` may not be written: it is not empty, unless ``overwrite`` and it
    is a probe this command wrote, file for file (the folder is replaced whole, so
    anything else in it, the run trained from or a user's files, would be deleted:
    helper-42's ``production.yaml``, a fine-tuned ``*.onnx``, ``review/NOTES.txt``)."""
    if not output.exists():
        return None
    if not output.is_dir():
        return "is a file, not a folder"
    names = sorted(p.name for p in output.iterdir())
    if not names:
        return None
    if not overwrite:
        return "exists and is not empty; pass --overwrite"
    try:  # the previous probe's name says its files
        report = json.loads((output / "report.json").read_text(encoding="utf-8"))
        ours, was = "out_of_fold" in report, str(report.get("name"))
    except (OSError, ValueError, TypeError, AttributeError):
        ours, was = False, ""
    review_dir = output / "review"
    inside = sorted(p.name for p in review_dir.iterdir()) if review_dir.is_dir() else []
    foreign = [n for n in names if n not in {*PROBE_FILES, f"{was}.onnx", f"{was}.yaml"}]
    foreign += [f"review/{n}" for n in inside if n not in REVIEW_FILES]
    if not foreign and ours:
        return None
    held = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
    return (
        f"{f'holds {held}' if foreign else 'has no probe report.json'}: not a probe "
        "`mitigate train` wrote, which is all --overwrite replaces (the folder is replaced "
        "whole); choose another folder"
    )
