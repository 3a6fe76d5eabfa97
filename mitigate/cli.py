"""``mitigate``: the command line.

Config problems exit with status 2 before any work starts; a run that fails exits
with 1 and one line saying why (``-v`` for the traceback); a finished run prints a
summary table (counts per state and reason, wall time, throughput).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mitigate.config import Config, ConfigError, load_config

DEFAULT_CONFIG = "configs/default.yaml"
# Exit status: 0 done; 2 nothing was started (bad config or usage, or an output folder
# that is occupied, locked or not writable); 1 the run started and failed; 130 Ctrl-C.
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
log = logging.getLogger("mitigate")


class UsageError(Exception):
    """A helper command was asked for something it cannot do (status 2, one line)."""


class RunFailed(Exception):
    """A run that had started failed (exit status 1, whatever the underlying error)."""


@contextlib.contextmanager
def _runtime() -> Iterator[None]:
    """Errors past this point are runtime failures (1), not usage errors (2), even a
    ValueError from deep inside a run; config errors found late (the output folder
    locked by a run that started meanwhile) stay config errors."""
    try:
        yield
    except (ConfigError, KeyboardInterrupt):
        raise
    except Exception as exc:
        raise RunFailed(f"{type(exc).__name__}: {exc}") from exc


def _config_args(
    parser: argparse.ArgumentParser, default_config: str | None = DEFAULT_CONFIG
) -> None:
    parser.add_argument(
        "--config",
        default=None,
        help=f"YAML config (default: {default_config} of the working directory, which runs "
        "on the bundled sample data in a checkout; elsewhere the default config shipped in "
        "the package, which needs --input)"
        if default_config
        else "YAML config (default: the config.yaml of the --from run)",
    )
    parser.add_argument(
        "--input",
        action="append",
        metavar="PATH_OR_GLOB",
        help="input shards or tables, replacing input.paths (repeatable; quote globs)",
    )
    parser.add_argument("--output", metavar="DIR", help="output folder, replacing output.path")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config field, VALUE parsed as YAML, e.g. --set dedup.exact=false "
        "or --set 'filters=[{name: caption_terms, terms_file: t.txt}]' (repeatable)",
    )
    parser.add_argument(
        "--add-filter",
        dest="add_filter",
        action="append",
        metavar="YAML",
        help="append the `filters:` entries of a YAML snippet (e.g. NAME.yaml from "
        "`mitigate train`) to the config's filters (repeatable; before any --set)",
    )


def _added_filters(args: argparse.Namespace) -> list[str]:
    """An override setting ``filters`` to the config file's list plus every
    ``--add-filter`` snippet's entries (none without ``--add-filter``)."""
    import json

    import yaml

    if not getattr(args, "add_filter", None):
        return []
    try:
        base = yaml.safe_load(Path(args.config).read_text(encoding="utf-8")) if args.config else {}
    except (OSError, yaml.YAMLError):
        return []  # load_config reports the config file's own problem
    entries = list((base or {}).get("filters") or []) if isinstance(base, dict) else []
    for path in args.add_filter:
        try:
            snippet = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError([f"--add-filter {path}: cannot read it: {exc}"]) from None
        if not isinstance(snippet, dict) or not isinstance(snippet.get("filters"), list):
            raise ConfigError(
                [f"--add-filter {path}: expected a `filters:` list (as `mitigate train` writes)"]
            )
        entries += snippet["filters"]
    return [f"filters={json.dumps(entries)}"]


def _load(args: argparse.Namespace) -> tuple[Config, dict[str, Any]]:
    # The packaged default (when no --config) first: --add-filter extends its filters.
    packaged = _packaged_default(args) if args.config is None else []
    overrides = packaged + _added_filters(args) + list(args.overrides)
    # Command-line paths are relative to the working directory, unlike paths in a file.
    if args.input:
        quoted = ", ".join(
            repr(str(Path(p).resolve()) if "://" not in p else p) for p in args.input
        )
        overrides.append(f"input.paths=[{quoted}]")
    if args.output:
        out = args.output if "://" in args.output else str(Path(args.output).resolve())
        overrides.append(f"output.path={out!r}")
    if getattr(args, "overwrite", False):
        overrides.append("output.overwrite=true")
    if getattr(args, "runner", None):
        overrides.append(f"runner.name={args.runner}")
    if getattr(args, "dry_run", False):
        overrides.append("runner.dry_run=true")
    return load_config(args.config, overrides)


def _packaged_default(args: argparse.Namespace) -> list[str]:
    """Point ``args.config`` at the default config (see :mod:`mitigate.defaults`);
    the packaged copy names no data, so it needs --input and writes to ./out."""
    from mitigate.defaults import resolve_default_config

    path, packaged = resolve_default_config()
    args.config = str(path)
    if not packaged:
        return []
    if not args.input:
        raise ConfigError(
            [
                f"--input: no --config given and no {DEFAULT_CONFIG} in this folder, so "
                "there is no input: pass --input 'PATH_OR_GLOB', or write a config with "
                "`mitigate init` and pass --config"
            ]
        )
    return [] if args.output else [f"output.path={str(Path('out').resolve())!r}"]


def cmd_redecide(args: argparse.Namespace) -> int:
    from rich.console import Console

    from mitigate.pipeline.run import redecide

    if args.config is None:
        args.config = str(Path(args.from_dir) / "config.yaml")
    config, _ = _load(args)
    with _runtime():
        summary = redecide(config, str(Path(args.from_dir).resolve()), args.beam_args)
    print_summary(summary, Console())
    return 0


def _scored_filter(out_dir: str, filter_id: str, flag: str) -> dict[str, Any]:
    """The run's config entry of a filter that has a score and a threshold; a rule
    filter (image_quality) or an unknown id is a usage error naming the scored ones."""
    import yaml

    from mitigate import review

    try:
        entry = review.run_filter_config(out_dir, filter_id)
    except FileNotFoundError as exc:
        raise UsageError(f"{flag}: {exc.args[0]}") from None
    if entry.get("threshold") is None:
        raw = yaml.safe_load(Path(out_dir, "config.yaml").read_text(encoding="utf-8"))
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
    labels = review.read_labels(args.labels)
    scored, truth, every, missing = review.calibration_data(args.scores, args.filter, labels)
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
        f"filter {args.filter}: threshold {result.threshold:.6f} for target recall "
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

    from mitigate import review, select
    from mitigate.pipeline import fs

    entry = _scored_filter(args.from_dir, args.filter, "--from")
    if args.positives:
        _need_labels("--positives", args.positives)
    out = Path(args.output)
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
    table = review.load_manifest(args.from_dir)
    keys = table.column("key").to_pylist()
    scores = table.column(column).to_numpy(zero_copy_only=False).astype(np.float64)
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
        embeddings = review.load_embeddings(args.from_dir, args.filter)
        found = select.select_neighbours(keys, embeddings, positives, scores, threshold, args.n)
        picked = [i for i, _, _ in found]
        notes = {i: f"like {keys[j]} (cosine {sim:.3f})" for i, j, sim in found}
    rows = table.to_pylist()
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "selection.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["key", "score", "state", "source", "note"])
        for i in picked:
            writer.writerow(
                [keys[i], f"{scores[i]:.6f}", rows[i]["state"], rows[i]["source"], notes.get(i, "")]
            )
    blur = entry.get("category") == "sexual" and not args.no_blur
    entries = []
    for i in picked:
        try:
            uri = review.thumbnail(review.read_image_bytes(rows[i], fs.open_read))
        except (OSError, EOFError, KeyError) as exc:
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


def cmd_train(args: argparse.Namespace) -> int:
    from mitigate import train
    from mitigate.pipeline import fs

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
        f"  threshold {t['threshold']:.6f} for recall >= {t['target_recall']:g}: recall "
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


def cmd_report(args: argparse.Namespace) -> int:
    from mitigate.pipeline import fs
    from mitigate.report import write_report

    path = write_report(
        args.out_dir,
        opener=fs.open_read,
        blur_sexual=not args.no_blur,
        max_thumbs=args.max_thumbs,
    )
    print(f"report written to {path}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from mitigate.pipeline.run import preflight

    config, _ = _load(args)
    sources = preflight(config, protected=[args.config] if args.config else [])
    names = ", ".join(f.filter_id for f in config.filters) or "none"
    print(
        f"config OK: {len(sources)} input file(s), filters: {names}, output: {config.output.path}"
    )
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from mitigate.defaults import InitRefused, write_starter

    try:
        written = write_starter(Path(args.path), force=args.force)
    except InitRefused as exc:
        raise UsageError(f"init: {exc}") from None
    print(
        f"wrote {written[0]} and {written[1]}; edit input.paths, then "
        f"`mitigate validate --config {written[0]}`"
    )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from mitigate.pipeline.run import preflight, run

    config, _ = _load(args)
    sources = preflight(config, protected=[args.config] if args.config else [])
    if config.runner.dry_run:
        import json

        print(json.dumps(run(config, sources, args.beam_args), indent=2))
        return 0
    with _live_progress(config, sources), _interruptible(config.output.path):
        with _runtime():
            summary = run(config, sources, args.beam_args)
    print_summary(summary, Console())
    return 0


@contextlib.contextmanager
def _interruptible(out: str) -> Iterator[None]:
    """Ctrl-C during a run: one line, exit 130, at once. Beam's runner threads and
    worker processes do not unwind on KeyboardInterrupt (the main thread can sit in a
    wait that never sees it, and each thread prints its own traceback), so the handler
    removes this run's staging folder and lock (what a later run would otherwise clean
    up as a crashed run's) and ends the process. Nothing under a final name is touched:
    the output folder keeps the previous result, if any."""
    import signal

    def stop(signum: int, frame: Any) -> None:
        with contextlib.suppress(Exception):
            os.write(2, b"mitigate: interrupted\n")
        with contextlib.suppress(Exception):
            _remove_own_staging(out)
        with contextlib.suppress(Exception):
            os.unlink(os.environ["MITIGATE_PROGRESS_FILE"])
        os._exit(EXIT_INTERRUPTED)

    try:
        previous = signal.signal(signal.SIGINT, stop)
    except ValueError:  # not the main thread (an embedding caller): leave it alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _remove_own_staging(out: str) -> None:
    """Delete the staging folders and the lock of the run this process holds in a
    local ``out`` (no other run can have staging there while we hold the lock)."""
    import json
    import shutil

    from mitigate.pipeline import outdir

    if "://" in out:
        return
    lock = Path(out) / outdir.LOCK
    try:
        holder = json.loads(lock.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if not isinstance(holder, dict) or holder.get("pid") != os.getpid():
        return
    for child in Path(out).iterdir():
        if child.name.startswith(outdir.STAGING_PREFIX):
            shutil.rmtree(child, ignore_errors=True)
    lock.unlink(missing_ok=True)


def _stderr_width() -> int:
    """The terminal's width as stderr sees it (stdout may be piped), resized live."""
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns
    except (OSError, ValueError):
        return 80


@contextlib.contextmanager
def _live_progress(config: Config, sources: list[str]) -> Iterator[None]:
    """Samples done/total, rate, ETA and per-state counts on stderr while a run goes
    (see :mod:`mitigate.progress`): one redrawn line in a terminal, plain lines
    otherwise. Remote runners' workers cannot reach the file; they get a note."""
    import tempfile

    from mitigate.progress import LiveProgress, ProgressRenderer

    terminal = sys.stderr.isatty()
    renderer = ProgressRenderer(
        sys.stderr,
        terminal=terminal,
        sources=len(sources),
        where=f"-> {config.output.path}",
        width=_stderr_width,
    )
    # Dask's workers were started before this run set the variable: remote, here.
    if config.runner.name != "direct" and not (
        config.runner.name == "portable" and config.runner.environment_type == "LOOPBACK"
    ):
        from mitigate import progress

        if config.runner.name != "dataflow":
            print(
                f"mitigate: {config.runner.name} runner: live counts need workers on this "
                "machine; the summary follows at the end",
                file=sys.stderr,
            )
        with progress.listening(lambda text: print(f"mitigate: {text}", file=sys.stderr)):
            yield
        return
    fd, path = tempfile.mkstemp(prefix="mitigate-progress-", suffix=".txt")
    os.close(fd)
    with LiveProgress(renderer, path):
        yield


def print_summary(summary: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    total = summary["input_count"]
    table = Table(title=f"mitigate: {total} input samples", title_justify="left")
    table.add_column("state")
    table.add_column("reason")
    table.add_column("count", justify="right")
    table.add_column("share", justify="right")
    for state, entry in summary["counts"].items():
        share = f"{entry['total'] / total:.1%}" if total else "-"
        table.add_row(f"[bold]{state}[/]", "", str(entry["total"]), share)
        for reason, n in entry["reasons"].items():
            table.add_row("", reason, str(n), f"{n / total:.1%}" if total else "-")
    console.print(table)
    for issue in summary.get("source_issues", []):
        console.print(
            f"[yellow]source issue[/] {issue['source']}: {issue['reason']}: {issue['detail']}"
        )
    if "rebalance" in summary:
        print_bias_table(summary["rebalance"], console)
    run = summary.get("run", {})
    console.print(
        f"{len(summary['shards'])} shard(s) written; "
        f"{run.get('wall_seconds', 0):.1f} s, {run.get('samples_per_second', 0):.1f} samples/s"
    )


def print_bias_table(report: dict[str, Any], console: Any) -> None:
    """Probe-term frequencies: unfiltered / filtered / reweighted (the DALL·E 2 table)."""
    from rich.table import Table

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value:.2%}"

    def change(value: float | None) -> str:
        return "" if value is None else f" ({value:+.1%})"

    table = Table(title="rebalancing: probe-term frequency", title_justify="left")
    for col in ("probe", "unfiltered", "filtered", "reweighted"):
        table.add_column(col, justify="left" if col == "probe" else "right")
    # calibrated groups first (their reweighted share is imposed), then the held-out
    # probes (whose reweighted share shows whether the correction generalises)
    rows = sorted(report["probes"].items(), key=lambda kv: not kv[1].get("calibrated"))
    for group, row in rows:
        table.add_row(
            group + (" (calibrated)" if row.get("calibrated") else ""),
            pct(row["unfiltered"]),
            pct(row["filtered"]) + change(row["change_filtered"]),
            pct(row["reweighted"]) + change(row["change_reweighted"]),
        )
    console.print(table)
    cal = report.get("calibration")
    if cal:
        if cal.get("error"):
            console.print(f"[yellow]calibration not applied: {cal['error']}[/yellow]")
        else:
            console.print(
                f"calibrated to unfiltered shares: {', '.join(cal['groups'])} (max error "
                f"{cal['max_abs_share_error']:.1e}); held-out probes: "
                f"{', '.join(cal['held_out_probes']) or 'none'}"
            )
    for text in report.get("warnings", []):
        console.print(f"[yellow]warning: {text}[/yellow]")
    w = report["weights"]
    if w["n"]:
        console.print(
            f"weights: {w['n']} kept, mean {w['mean']:.3f}, range {w['min']:.3f}..{w['max']:.3f}, "
            f"effective sample size {w['effective_sample_size']:.0f} "
            f"({w['ess_fraction']:.1%}); mode {report['mode']}"
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mitigate",
        description="Clean an image-text dataset before generative-model training: "
        "filter harmful content, deduplicate, and write cleaned WebDataset shards with a "
        "manifest of every input sample.",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="-v: log progress details and show tracebacks; -vv: Apache Beam's own logging too",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run_p = sub.add_parser(
        "run",
        help="run the pipeline",
        description="Run the pipeline. Writes OUTPUT/shards/*.tar (kept samples), "
        "OUTPUT/manifest/*.parquet (every input sample with its state and signals), "
        "OUTPUT/summary.json and OUTPUT/config.yaml (the effective config).",
    )
    _config_args(run_p)
    run_p.add_argument(
        "--overwrite", action="store_true", help="replace a previous run's results in OUTPUT"
    )
    run_p.add_argument(
        "--runner",
        choices=["direct", "portable", "dataflow", "flink", "spark", "dask"],
        help="Beam runner (replaces runner.name; set its options with --set runner.KEY=V)",
    )
    run_p.add_argument(
        "--dry-run",
        action="store_true",
        help="Dataflow: build the job offline and report what would be submitted",
    )
    run_p.add_argument(
        "beam_args",
        nargs=argparse.REMAINDER,
        help="after `--`: extra Apache Beam pipeline options, passed through unchanged",
    )
    run_p.set_defaults(func=cmd_run)

    red_p = sub.add_parser(
        "redecide",
        help="apply new thresholds to a finished run's stored scores (no model runs)",
        description="Re-decide a finished run: every sample's stored scores are judged "
        "again with the filters and thresholds of --config (default: the run's own "
        "config.yaml, changed with --set), then exact duplicates are resolved again and a "
        "complete new output is written. No image is decoded and no model runs; the input "
        "shards must still be readable, since kept samples are copied from them. Errors "
        "stay errors. Every filter of the new config needs stored scores in --from, "
        "except linear_probe heads, scored from their backbone's stored embeddings.",
    )
    red_p.add_argument(
        "--from",
        dest="from_dir",
        required=True,
        metavar="DIR",
        help="output folder of a finished run",
    )
    _config_args(red_p, default_config=None)
    red_p.add_argument(
        "--overwrite", action="store_true", help="replace a previous run's results in OUTPUT"
    )
    red_p.add_argument("beam_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    red_p.set_defaults(func=cmd_redecide)

    rep_p = sub.add_parser(
        "report",
        help="rebuild OUT/report.html from a finished run (no re-run)",
        description="Write OUT/report.html: one self-contained page (plots and thumbnails "
        "inline, opens offline) with the funnel, each filter's score histogram and "
        "threshold with example thumbnails, duplicate clusters, the rebalancing weights and "
        "bias table, errors with examples, and the effective config with model provenance. "
        "`mitigate run` writes it at the end of every run.",
    )
    rep_p.add_argument("out_dir", metavar="OUT", help="output folder of a finished run")
    rep_p.add_argument(
        "--no-blur",
        action="store_true",
        help="show thumbnails of 'sexual'-category filters unblurred",
    )
    rep_p.add_argument(
        "--max-thumbs", type=int, default=12, help="thumbnails per strip (default 12)"
    )
    rep_p.set_defaults(func=cmd_report)

    cal_p = sub.add_parser(
        "calibrate",
        help="choose a filter threshold that reaches a target recall on labelled samples",
        description="Pick the highest threshold whose recall on the labelled positives "
        "reaches --target-recall, and print recall and precision on the labels and the "
        "fraction of the whole run it would drop, each with a confidence interval "
        "(Clopper-Pearson). Writes the threshold as a config snippet. Recall measured on "
        "the labels the threshold was chosen on is optimistic: check it on held-out labels.",
    )
    cal_p.add_argument("--scores", required=True, metavar="DIR", help="output folder of a run")
    cal_p.add_argument(
        "--labels",
        required=True,
        metavar="CSV",
        help="key,label CSV (label 1 = harmful, 0 = benign)",
    )
    cal_p.add_argument("--filter", required=True, help="filter id whose scores to calibrate")
    cal_p.add_argument(
        "--target-recall",
        type=float,
        default=0.99,
        help="fraction of labelled positives to drop (default 0.99)",
    )
    cal_p.add_argument(
        "--confidence",
        type=float,
        default=0.95,
        help="confidence level of the intervals (default 0.95)",
    )
    cal_p.add_argument("--write", metavar="YAML", help="write the config snippet here")
    cal_p.set_defaults(func=cmd_calibrate)

    sel_p = sub.add_parser(
        "select",
        help="export the samples an active-learning round should label next",
        description="Choose samples to label: 'uncertain' (scores nearest the threshold), "
        "'positives' (a spread sample of predicted positives, for false-positive review at "
        "a near-100%%-recall --threshold), or 'neighbours' (samples scored below threshold "
        "whose stored embeddings are nearest known positives: likely misses). Writes "
        "selection.csv and a self-contained contact_sheet.html whose buttons export "
        "labels.csv for `mitigate calibrate`.",
    )
    sel_p.add_argument(
        "--from", dest="from_dir", required=True, metavar="DIR", help="output folder of a run"
    )
    sel_p.add_argument("--filter", required=True, help="filter id whose scores to use")
    sel_p.add_argument("--n", type=int, default=500, help="how many samples (default 500)")
    sel_p.add_argument(
        "--strategy", choices=["uncertain", "positives", "neighbours"], default="uncertain"
    )
    sel_p.add_argument(
        "--threshold", type=float, help="threshold to select around (default: the run's)"
    )
    sel_p.add_argument(
        "--positives", metavar="CSV", help="labels CSV whose positives seed the neighbours strategy"
    )
    sel_p.add_argument(
        "--output",
        default="selection",
        metavar="DIR",
        help="where to write selection.csv and contact_sheet.html",
    )
    sel_p.add_argument(
        "--no-blur", action="store_true", help="show images of 'sexual'-category filters unblurred"
    )
    sel_p.add_argument(
        "--overwrite",
        "--force",
        dest="overwrite",
        action="store_true",
        help="write into a non-empty --output folder (replacing an earlier selection)",
    )
    sel_p.set_defaults(func=cmd_select)

    tr_p = sub.add_parser(
        "train",
        help="train a filter from labels: a linear probe on a run's stored embeddings",
        description="Fit a linear probe (class-balanced logistic regression, C chosen by "
        "cross-validated log loss) on the embeddings a filter stored in a finished run "
        "(store_embeddings: true), and write to --output: NAME.onnx (the head alone), "
        "NAME.yaml (a linear_probe filter entry with the threshold for --target-recall), "
        "report.json/report.md (out-of-fold ROC AUC, precision-recall, the threshold with "
        "its interval) and review/contact_sheet.html (labelled samples the out-of-fold "
        "models get wrong and their nearest unlabelled neighbours, to label next).",
    )
    tr_p.add_argument(
        "--from", dest="from_dir", required=True, metavar="DIR", help="output folder of a run"
    )
    tr_p.add_argument(
        "--embeddings",
        required=True,
        metavar="FILTER",
        help="id of the filter whose stored embeddings to train on (e.g. nsfw)",
    )
    tr_p.add_argument(
        "--labels", required=True, metavar="CSV", help="key,label CSV (1 = in the category)"
    )
    tr_p.add_argument(
        "--name", required=True, help="id of the new filter (score column score_NAME)"
    )
    tr_p.add_argument("--output", required=True, metavar="DIR", help="where to write")
    tr_p.add_argument("--category", help="category the filter protects against (default NAME)")
    tr_p.add_argument(
        "--target-recall",
        type=float,
        default=0.95,
        help="fraction of labelled positives the threshold drops (default 0.95)",
    )
    tr_p.add_argument(
        "--confidence", type=float, default=0.95, help="interval confidence (default 0.95)"
    )
    tr_p.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5)")
    tr_p.add_argument(
        "--n", type=int, default=50, help="mistakes and neighbours to show (default 50 each)"
    )
    tr_p.add_argument("--overwrite", action="store_true", help="replace a previous --output")
    tr_p.set_defaults(func=cmd_train)

    val_p = sub.add_parser(
        "validate",
        help="check a config (and that its inputs exist) without running anything",
        description="Validate a config: every field, every filter, and that the input "
        "globs match files. Exit status 0 when valid, 2 with one line per problem otherwise.",
    )
    _config_args(val_p)
    val_p.set_defaults(func=cmd_validate)

    init_p = sub.add_parser(
        "init",
        help="write a commented starter config (and the terms list it names)",
        description="Write a commented starter config to PATH (default mitigate.yaml; a "
        "folder gets mitigate.yaml inside it) and the violence terms list it names to "
        "terms/violence.txt beside it. Refuses to overwrite either without --force.",
    )
    init_p.add_argument("path", nargs="?", default="mitigate.yaml", metavar="PATH")
    init_p.add_argument("--force", action="store_true", help="overwrite existing files")
    init_p.set_defaults(func=cmd_init)
    return parser


_BEAM_NOISE = (
    # Beam warns at import that optional GCP client libraries are absent; they are
    # needed only for gs:// paths and say so themselves when used.
    "apitools not found",
    # The worker's memory monitor needs the Unix-only `resource` module's peers; it
    # says so once per worker, which tells a user nothing they can act on.
    "Resource module is not available",
)


def _quiet_beam_import_noise(record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return not any(noise in message for noise in _BEAM_NOISE)


def _one_line(exc: BaseException) -> str:
    """The message of an error, never a bare errno (``FileNotFoundError(2, ...)``)."""
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    if exc.args and isinstance(exc.args[0], str):
        return exc.args[0]
    return str(exc) or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "beam_args", None) and args.beam_args[0] == "--":
        args.beam_args = args.beam_args[1:]
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(_quiet_beam_import_noise)
    if not args.verbose:
        # A failing bundle makes Beam log its traceback at ERROR; the one line below
        # says what failed, and -v shows Beam's own logging.
        logging.getLogger("apache_beam").setLevel(logging.CRITICAL)
    elif args.verbose == 1:
        # Beam's INFO lines (type-hint conversions, stage fusion) drown ours: -vv.
        logging.getLogger("apache_beam").setLevel(logging.WARNING)
        # Worker processes' own log lines, relayed by the local job service (dozens per
        # multi-process run, none actionable): -vv.
        logging.getLogger("apache_beam.runners.portability.local_job_service").setLevel(
            logging.ERROR
        )
    try:
        code = args.func(args)
        # Flushed here, so that a reader that went away (`| head`) is caught below
        # rather than reported by the interpreter at exit.
        sys.stdout.flush()
        return code
    except ConfigError as exc:
        print(f"mitigate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except UsageError as exc:
        print(f"mitigate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RunFailed as exc:
        if args.verbose:
            log.error("run failed", exc_info=exc.__cause__)
        message = str(exc).strip().splitlines()[0]
        hint = "" if args.verbose else " (run with -v for the traceback)"
        print(f"mitigate: failed: {message}{hint}", file=sys.stderr)
        return EXIT_FAILED
    except (FileNotFoundError, KeyError, ValueError) as exc:
        print(f"mitigate: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("mitigate: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # stdout went away (`mitigate calibrate ... | head`): not an error of ours.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:
        if args.verbose:
            log.exception("run failed")
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(
            f"mitigate: failed: {type(exc).__name__}: {message}"
            + ("" if args.verbose else " (run with -v for the traceback)"),
            file=sys.stderr,
        )
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
