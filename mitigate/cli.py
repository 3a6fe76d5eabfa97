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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mitigate.config import Config

# Start-up: no heavy module (the config models, numpy, Beam, onnxruntime) is imported at
# module level, so `mitigate --help` costs argparse alone; each command imports what it
# needs (tests/test_startup.py checks this).

DEFAULT_CONFIG = "configs/default.yaml"
# Exit status: 0 done; 2 nothing was started (bad config or usage, or an output folder
# that is occupied, locked or not writable); 1 the run started and failed; 130 Ctrl-C.
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
log = logging.getLogger("mitigate")


class RunFailed(Exception):
    """A run that had started failed (exit status 1, whatever the underlying error)."""


@contextlib.contextmanager
def _runtime() -> Iterator[None]:
    """Errors past this point are runtime failures (1), not usage errors (2), even a
    ValueError from deep inside a run; config errors found late (the output folder
    locked by a run that started meanwhile) stay config errors."""
    from mitigate.config import ConfigError

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
        default=default_config,
        help=f"YAML config (default: {default_config}, which runs on the bundled sample data)"
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


def _load(args: argparse.Namespace) -> tuple[Config, dict[str, Any]]:
    overrides = list(args.overrides)
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
    from mitigate.config import load_config

    return load_config(args.config, overrides)


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


def cmd_calibrate(args: argparse.Namespace) -> int:
    from mitigate import calibrate, review

    labels = review.read_labels(args.labels)
    entry = review.run_filter_config(args.scores, args.filter)
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

    entry = review.run_filter_config(args.from_dir, args.filter)
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
            from mitigate.config import ConfigError

            raise ConfigError(
                [
                    "--positives: the neighbours strategy needs known positives "
                    "(a labels CSV key,label)"
                ]
            )
        labels = review.read_labels(args.positives)
        positives = [k for k, v in labels.items() if v]
        embeddings = review.load_embeddings(args.from_dir, args.filter)
        found = select.select_neighbours(keys, embeddings, positives, scores, threshold, args.n)
        picked = [i for i, _, _ in found]
        notes = {i: f"like {keys[j]} (cosine {sim:.3f})" for i, j, sim in found}
    rows = table.to_pylist()
    out = Path(args.output)
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
    from mitigate.pipeline.preflight import preflight

    config, _ = _load(args)
    sources = preflight(config, protected=[args.config] if args.config else [])
    names = ", ".join(f.filter_id for f in config.filters) or "none"
    print(
        f"config OK: {len(sources)} input file(s), filters: {names}, output: {config.output.path}"
    )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from mitigate.pipeline.run import preflight, run

    config, _ = _load(args)
    sources = preflight(config, protected=[args.config] if args.config else [])
    if config.runner.dry_run:
        import json

        print(json.dumps(run(config, sources, args.beam_args), indent=2))
        return 0
    # Beam's local runner reports nothing until a run ends, so the live display is a
    # spinner with elapsed time; counts follow in the summary table.
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as progress:
        progress.add_task(
            f"[bold]mitigate[/] {len(sources)} input file(s) -> {config.output.path} "
            f"({config.runner.name}, {config.runner.direct_num_workers} worker(s))",
            total=None,
        )
        with _runtime():
            summary = run(config, sources, args.beam_args)
    print_summary(summary, Console())
    return 0


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
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
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
        "stay errors. Every filter of the new config needs stored scores in --from.",
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
    sel_p.set_defaults(func=cmd_select)

    val_p = sub.add_parser(
        "validate",
        help="check a config (and that its inputs exist) without running anything",
        description="Validate a config: every field, every filter, and that the input "
        "globs match files. Exit status 0 when valid, 2 with one line per problem otherwise.",
    )
    _config_args(val_p)
    val_p.set_defaults(func=cmd_validate)
    return parser


def _quiet_beam_import_noise(record: logging.LogRecord) -> bool:
    # Beam warns at import that optional GCP client libraries are absent; they are
    # needed only for gs:// paths and say so themselves when used.
    return "apitools not found" not in record.getMessage()


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
    from mitigate.config import ConfigError

    if not args.verbose:
        # A failing bundle makes Beam log its traceback at ERROR; the one line below
        # says what failed, and -v shows Beam's own logging.
        logging.getLogger("apache_beam").setLevel(logging.CRITICAL)
    try:
        return args.func(args)
    except ConfigError as exc:
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
        print(f"mitigate: {exc.args[0] if exc.args else exc}", file=sys.stderr)
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
