"""``mitigate``: the command line.

Config problems exit with status 2 before any work starts; a run that fails exits
with 1 and one line saying why (``-v`` for the traceback); a finished run prints a
summary table (counts per state and reason, wall time, throughput).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from mitigate.cli_config import DEFAULT_CONFIG, _load
from mitigate.commands import UsageError, cmd_calibrate, cmd_select, cmd_train
from mitigate.console import (
    EXIT_INTERRUPTED,
    RunFailed,
    TerminalText,
    exit_now,
    print_summary,
    stdout_console,
)
from mitigate.console import interruptible as _interruptible
from mitigate.console import live_progress as _live_progress
from mitigate.console import one_line as _one_line
from mitigate.console import runtime as _runtime

if TYPE_CHECKING:
    pass

# Start-up: no heavy module (the config models, numpy, Beam, onnxruntime) is imported at
# module level, so `mitigate --help` costs argparse alone; each command imports what it
# needs (tests/test_startup.py checks this).

# Exit status: 0 done; 2 nothing was started (bad config or usage, or an output folder
# that is occupied, locked or not writable); 1 the run started and failed; 130 Ctrl-C.
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2  # and EXIT_INTERRUPTED (130), console.py
log = logging.getLogger("mitigate")


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
        help="input shards or tables, replacing input.paths (repeatable; quote globs and "
        "brace sets: 'shard-{000000..000099}.tar')"
        if default_config
        else argparse.SUPPRESS,  # redecide reads its run's inputs: refused, with why
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


def cmd_redecide(args: argparse.Namespace) -> int:

    from mitigate.pipeline.run import redecide

    if args.input:
        raise UsageError(
            "--input: redecide reads the inputs the run in --from read (its manifest names "
            "them, and kept samples are copied from them); it takes no other"
        )
    if args.config is None:
        args.config = str(Path(args.from_dir) / "config.yaml")
        # a run's --overwrite is no setting to pass on (runs before f010950 recorded
        # it: a redecide replaced an existing run in its --output unasked, helper-44)
        args.overrides = ["output.overwrite=false", *(args.overrides or [])]
    config, _ = _load(args)
    with _runtime():
        summary = redecide(config, str(Path(args.from_dir).resolve()), args.beam_args)
    print_summary(summary, stdout_console())
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from mitigate.pipeline import fs
    from mitigate.report import write_report

    summary = Path(args.out_dir, "summary.json")
    if "://" not in args.out_dir:  # a local folder is checked; a remote one is read
        if not Path(args.out_dir).is_dir():
            raise UsageError(f"{args.out_dir}: not a folder (give a run's output folder)")
        if not summary.is_file():
            raise UsageError(
                f"{args.out_dir}: not a finished run (no summary.json: a run writes it last, "
                "so a run that was stopped has none)"
            )
        try:
            json.loads(summary.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise UsageError(f"{summary}: not a run's summary (not JSON: {exc})") from None
    from mitigate.pipeline.outdir import locked

    # the output's lock, as a run holds it: a `run --overwrite` into the folder meanwhile
    # would have the page describe the run it replaced (helper-34), and one under way
    # refuses this until it ends
    with locked(args.out_dir) if "://" not in args.out_dir else contextlib.nullcontext():
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
    sources = preflight(config, protected=[args.config] if args.config else [], strict=True)
    names = ", ".join(f.filter_id for f in config.filters) or "none"
    print(
        f"config OK: {len(sources)} input file(s), filters: {names}, output: {config.output.path}"
    )
    from mitigate.pipeline.outdir import holder_of

    holder = holder_of(config.output.path)
    if holder is not None:  # a run now would be refused until that one ends
        print(
            f"mitigate: note: {config.output.path} is in use by another run "
            f"({holder.describe()}): `run` is refused until it ends",
            file=sys.stderr,
        )
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from mitigate.defaults import TERMS_NAME as TERMS_KEPT
    from mitigate.defaults import InitRefused, write_starter

    try:
        written = write_starter(Path(args.path), force=args.force)
    except InitRefused as exc:
        raise UsageError(f"init: {exc}") from None
    kept = "" if len(written) > 1 else f" (its terms list, {TERMS_KEPT}, kept as it is)"
    print(
        f"wrote {' and '.join(map(str, written))}{kept}; edit input.paths, then "
        f"`mitigate validate --config {written[0]}`"
    )
    return 0


def cmd_run(args: argparse.Namespace) -> int:

    from mitigate.decode_pool import prestart_for
    from mitigate.pipeline.preflight import preflight

    config, _ = _load(args)
    sources = preflight(config, protected=[args.config] if args.config else [])
    # a local run's decode workers boot while this process imports Beam
    prestart_for(config, sources, extra_beam_args=bool(args.beam_args))
    from mitigate.pipeline.run import run

    if config.runner.dry_run:
        import json

        print(json.dumps(run(config, sources, args.beam_args), indent=2))
        return 0
    with _live_progress(config, sources), _interruptible(config.output.path):
        with _runtime():
            summary = run(config, sources, args.beam_args)
    print_summary(summary, stdout_console())
    return 0


def _count(text: str) -> int:
    """An argument that counts something: a whole number, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is below 0")
    return value


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
        "--max-thumbs",
        type=_count,
        default=12,
        help="thumbnails per strip (default 12; 0: none)",
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
    cal_p.add_argument("--write", metavar="YAML", help="write the config snippet to this new file")
    cal_p.add_argument(
        "--force", action="store_true", help="with --write: replace an existing file"
    )
    cal_p.set_defaults(func=cmd_calibrate)

    sel_p = sub.add_parser(
        "select",
        help="export the samples an active-learning round should label next",
        description="Choose samples to label: 'uncertain' (scores nearest the threshold), "
        "'positives' (a spread sample of predicted positives, for false-positive review at "
        "a near-100%-recall --threshold), or 'neighbours' (samples scored below threshold "
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
        "--strategy",
        choices=["uncertain", "positives", "neighbours"],
        default="uncertain",
        help="default uncertain",
    )
    sel_p.add_argument(
        "--threshold", type=float, help="threshold to select around (default: the run's)"
    )
    sel_p.add_argument(
        "--positives", metavar="CSV", help="labels CSV whose positives seed the neighbours strategy"
    )
    sel_p.add_argument(
        "--exclude",
        metavar="CSV",
        action="append",
        default=[],
        help="labels CSV whose keys are labelled already: not offered (repeatable; e.g. "
        "every earlier round's labels.csv)",
    )
    sel_p.add_argument(
        "--output",
        default="selection",
        metavar="DIR",
        help="where to write selection.csv and contact_sheet.html (default selection/)",
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
    for command in sub.choices.values():  # -v after the command too: `mitigate run -v`
        command.add_argument(
            "-v",
            "--verbose",
            dest="verbose_after",
            action="count",
            default=0,
            help="as `mitigate -v`: progress details and tracebacks; -vv: Beam's logging too",
        )
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    args.verbose += getattr(args, "verbose_after", 0)
    extra = getattr(args, "beam_args", None)
    if unknown and unknown[0].startswith("-"):  # an option no command has
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra and extra[0] == "--" and not unknown:
        args.beam_args = extra[1:]
    elif extra or unknown:  # an unquoted glob: the shell gave the second file and the rest
        shown = " ".join([*(unknown or []), *(extra or [])])
        parser.error(
            f"unexpected arguments: {shown[:200]}{'...' if len(shown) > 200 else ''}; a "
            "glob or brace set the shell expanded? quote it (--input 'data/*.tar', "
            "'shard-{000000..000099}.tar'); Beam options go after `--`"
        )
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(_quiet_beam_import_noise)
        handler.addFilter(TerminalText())
    from mitigate.config import ConfigError

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
        # a path given empty (an unset shell variable) is no folder, not the working one
        # (`select --output ""` wrote there; run's paths are refused by the config)
        for name in ("output", "from_dir", "scores", "out_dir", "labels", "positives"):
            if getattr(args, name, None) == "":
                flag = {"from_dir": "--from", "out_dir": "OUT"}.get(name, f"--{name}")
                raise UsageError(f"{flag}: an empty path (an unset variable?)")
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


def entry() -> NoReturn:
    """The ``mitigate`` command: :func:`main`, then the process ends without the
    interpreter's teardown. What that exit does that matters is done first: other
    threads that are not daemons finish, exit handlers run (logging flushes; Beam stops
    the job services it started), stdout and stderr are flushed. What is skipped is
    freeing every module and object one by one: ~0.8-1 s after a run of 1,600 samples,
    on top of the run itself (BENCHMARKS.md, "How processes end"). In-process callers
    use :func:`main`, which returns."""
    try:
        code = main()
    except SystemExit as exc:  # argparse: --help, or a usage error
        if not isinstance(exc.code, int | None):
            raise
        code = exc.code or 0
    except KeyboardInterrupt:  # before a command's own handling: while modules import
        print("mitigate: interrupted", file=sys.stderr)
        code = EXIT_INTERRUPTED
    exit_now(code)


if __name__ == "__main__":
    entry()
