"""The helper commands of the labelling loop: ``calibrate``, ``select`` and ``train``
(``mitigate.cli`` parses their arguments; every heavy import happens inside them)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("mitigate")


class UsageError(Exception):
    """A helper command was asked for something it cannot do (status 2, one line)."""


def _scored_filter(out_dir: str, filter_id: str, flag: str) -> dict[str, Any]:
    """The run's config entry of a filter that has a score and a threshold; a rule
    filter (image_quality) or an unknown id is a usage error naming the scored ones."""

    from mitigate import review

    try:
        entry = review.run_filter_config(out_dir, filter_id)
    except FileNotFoundError as exc:
        raise UsageError(f"{flag}: {exc.args[0]}") from None
    if entry.get("threshold") is None:
        raw = review.run_config(out_dir)
        scored = [
            e.get("id") or e["name"]
            for e in raw.get("filters", [])
            if e.get("threshold") is not None
        ]
        raise UsageError(
            f"--filter {filter_id}: a rule filter with no score and threshold to work "
            f"on; choose a scored filter of that run: {', '.join(scored) or 'none'}"
        )
    return entry


def _need_labels(flag: str, path: str) -> None:
    if not Path(path).is_file():
        raise UsageError(
            f"{flag}: no such file: {path} (a key,label CSV, e.g. the labels.csv that "
            "`mitigate select`'s contact sheet downloads)"
        )


def cmd_calibrate(args: argparse.Namespace) -> int:
    from mitigate import calibrate, review

    entry = _scored_filter(args.scores, args.filter, "--scores")
    _need_labels("--labels", args.labels)
    if args.write and Path(args.write).is_dir():
        raise UsageError(f"--write: {args.write} is a folder; name the YAML file to write")
    if args.write and Path(args.write).exists() and not args.force:
        raise UsageError(
            f"--write: {args.write} exists (a config?); the snippet replaces all of it: "
            "pass --force to replace it, or name a new file and merge the snippet yourself"
        )
    labels = review.read_labels(args.labels)
    scored, truth, every, missing = review.calibration_data(args.scores, args.filter, labels)
    if labels and len(missing) == len(labels):  # "no labelled positives among 0" said nothing
        spaced = " (keys are matched as written: this file's have spaces around them)"
        raise UsageError(
            f"--labels: none of the {len(labels)} labelled key(s) has a {args.filter} score "
            f"in {args.scores} (e.g. {missing[0]!r}): labels of another run?"
            + (spaced if any(k != k.strip() for k in missing) else "")
        )
    if missing:
        log.warning(
            "%d labelled key(s) have no %s score in %s (e.g. %s); ignored",
            len(missing),
            args.filter,
            args.scores,
            ", ".join(missing[:3]),
        )
    result = calibrate.calibrate(
        scored, truth, every, args.target_recall, confidence=args.confidence
    )
    ci = f"{args.confidence:.0%} CI"
    print(
        # in full (shortest round trip): a rounded-up value, typed into --set, missed
        # the target recall (0.000574 for 0.00057389: 0.896 < 0.9; helper-40)
        f"filter {args.filter}: threshold {float(result.threshold)!r} for target recall "
        f"{args.target_recall} ({result.n_pos} positive, {result.n_neg} negative labels)"
    )
    for name, value, interval in (
        ("recall", result.recall, result.recall_ci),
        ("precision", result.precision, result.precision_ci),
        ("drop fraction", result.drop_fraction, result.drop_fraction_ci),
    ):
        print(f"  {name:<14} {value:.4f}  ({ci} {interval[0]:.4f} to {interval[1]:.4f})")
    print(f"  (current threshold in that run: {entry.get('threshold')})")
    snippet = calibrate.threshold_snippet(args.filter, result.threshold, result, name=entry["name"])
    if args.write:
        Path(args.write).write_text(snippet, encoding="utf-8")
        print(f"config snippet written to {args.write}")
    else:
        print(snippet)
    return 0


def cmd_select(args: argparse.Namespace) -> int:
    import csv

    import numpy as np

    from mitigate import review, runtable, select
    from mitigate.pipeline import fs

    entry = _scored_filter(args.from_dir, args.filter, "--from")
    if args.positives:
        _need_labels("--positives", args.positives)
    labelled: list[str] = []
    for path in args.exclude:
        _need_labels("--exclude", path)
        labelled += review.read_labels(path)
    out = Path(args.output)
    _not_in_an_input_folder(out, args.from_dir)
    if out.is_file() or (out.is_dir() and any(out.iterdir()) and not args.overwrite):
        raise UsageError(
            f"--output: {out} is a file"
            if out.is_file()
            else f"--output: {out} is not empty (an earlier selection?); pass "
            "--overwrite to replace its selection.csv and contact_sheet.html, or choose "
            "another folder"
        )
    threshold = args.threshold if args.threshold is not None else float(entry["threshold"])
    column = f"score_{args.filter}"
    # the key and score columns only, no Python object a row (mitigate/runtable.py)
    run = runtable.RunTable(args.from_dir, ["key", column, "state", "sha256"], encoded=["state"])
    keys = run.keys()
    # an error row is no sample to label: a duplicate_key copy (scored, then refused) has
    # the key of the sample the run holds, and another image (helper-34)
    scores = np.where(run.is_state("error"), np.nan, run.numbers(column))
    # nor a duplicate: its label is its kept copy's, and one image with 100 copies
    # filled a selection of 10 with them (helper-40)
    scores = np.where(run.is_state("duplicate"), np.nan, scores)
    labelled_rows = review.rows_of_labels(keys, labelled)
    scores[labelled_rows] = np.nan  # --exclude: labelled before
    positive_keys: list[str] = []
    if args.strategy == "neighbours" and args.positives:
        positive_keys = [k for k, v in review.read_labels(args.positives).items() if v]
    # nor a byte copy of another candidate or of a labelled sample: copies a filter
    # dropped are not deduplicated (each is its own filtered row), have its score, and
    # take its label; three of four `positives` were one image (helper-48)
    known = np.union1d(labelled_rows, review.rows_of_labels(keys, positive_keys))
    scores[run.byte_copies(~np.isnan(scores), known)] = np.nan
    notes: dict[int, str] = {}
    if args.strategy == "uncertain":
        picked = select.select_uncertain(keys, scores, threshold, args.n)
    elif args.strategy == "positives":
        picked = select.select_positives(keys, scores, threshold, args.n)
    else:
        if not args.positives:
            raise UsageError(
                "--positives: the neighbours strategy needs known positives "
                "(a labels CSV key,label)"
            )
        labels = review.read_labels(args.positives)
        positives = [k for k, v in labels.items() if v]
        if not positives:  # 0 samples, exit 0 and no word before
            raise UsageError(f"--positives: {args.positives} labels no sample harmful")
        # a linear probe's embeddings are its backbone's (it stores none of its own:
        # "no embeddings for 'animal'" refused the README's search for its misses;
        # helper-40)
        embeddings = runtable.PartedEmbeddings(run, entry.get("backbone") or args.filter)
        found = select.select_neighbours(
            keys,
            embeddings,
            positives,
            scores,
            threshold,
            args.n,
            positive_rows=review.rows_of_labels(keys, positives),
        )
        picked = [i for i, _, _ in found]
        notes = {i: f"like {keys[j]} (cosine {sim:.3f})" for i, j, sim in found}
    rows = dict(zip(picked, run.rows(picked), strict=True))  # the picked rows alone
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # under a file, read-only: a usage error, named
        raise UsageError(f"--output: cannot create {out}: {exc.strerror or exc}") from None
    with open(out / "selection.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["key", "score", "state", "source", "note"])
        for i in picked:
            writer.writerow(
                [
                    review.csv_safe(keys[i]),
                    f"{scores[i]:.6f}",
                    rows[i]["state"],
                    review.csv_safe(rows[i]["source"]),
                    notes.get(i, ""),
                ]
            )
    blur = entry.get("category") == "sexual" and not args.no_blur
    entries = []
    for i in picked:
        try:
            uri = review.thumbnail(review.read_image_bytes(rows[i], fs.open_read))
        except (OSError, EOFError, KeyError, ValueError) as exc:
            log.warning("%s: image unreadable for the contact sheet: %s", keys[i], exc)
            uri = ""
        entries.append(
            review.SheetEntry(
                keys[i], float(scores[i]), rows[i]["caption"] or "", notes.get(i, ""), uri
            )
        )
    intro = (
        f"{len(picked)} samples of {args.from_dir}, strategy '{args.strategy}', filter "
        f"{args.filter}, threshold {threshold}. Mark each, then download labels.csv for "
        "`mitigate calibrate --labels`."
    )
    page = review.contact_sheet(f"mitigate select: {args.filter}", intro, entries, blur)
    (out / "contact_sheet.html").write_text(page, encoding="utf-8")
    print(f"{len(picked)} samples -> {out / 'selection.csv'}, {out / 'contact_sheet.html'}")
    return 0


def _not_in_an_input_folder(out: Path, run_dir: str) -> None:
    """UsageError where ``out`` lies in a folder the run read as its input."""
    from mitigate import review

    folder = review.inside_input_folder(out, review.run_inputs(run_dir))
    if folder is not None:
        raise UsageError(
            f"--output: {out} lies in the input folder {folder} of the run in {run_dir}: "
            "its next run would read what is written there as samples; choose another folder"
        )


def cmd_train(args: argparse.Namespace) -> int:
    from mitigate import train
    from mitigate.pipeline import fs

    _not_in_an_input_folder(Path(args.output), args.from_dir)

    result = train.train(
        args.from_dir,
        args.embeddings,
        args.labels,
        args.name,
        args.output,
        category=args.category,
        target_recall=args.target_recall,
        confidence=args.confidence,
        folds=args.folds,
        n_review=args.n,
        overwrite=args.overwrite,
        opener=fs.open_read,
    )
    r = result.report
    t = r["threshold"]
    print(
        f"probe {r['name']} on {r['backbone']} ({r['embedding_dim']}-d): {r['n_positive']} "
        f"positive, {r['n_negative']} negative labels; C {r['model']['C']:g}"
    )
    print(
        f"  out-of-fold ({r['model']['folds']}-fold) ROC AUC {r['out_of_fold']['roc_auc']:.4f}, "
        f"average precision {r['out_of_fold']['average_precision']:.4f}"
    )
    print(
        f"  threshold {float(t['threshold'])!r} for recall >= {t['target_recall']:g}: recall "
        f"{t['recall']:.4f} ({t['recall_ci'][0]:.4f} to {t['recall_ci'][1]:.4f}), drops "
        f"{t['drop_fraction']:.2%} of the run"
    )
    print(
        f"  {len(r['mistakes'])} out-of-fold mistake(s) and {len(r['neighbours'])} neighbour(s) "
        f"to label: {result.output / 'review' / 'contact_sheet.html'}"
    )
    print(
        f"head, config entry and report -> {result.output}; add the filter with "
        f"`--add-filter {result.output / (r['name'] + '.yaml')}` (redecide or run)"
    )
    return 0
