"""``mitigate``: the command line.

Config problems exit with status 2 before any work starts; a finished run prints a
summary table (counts per state and reason, wall time, throughput).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from mitigate.config import Config, ConfigError, load_config

DEFAULT_CONFIG = "configs/default.yaml"
log = logging.getLogger("mitigate")


def _config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        default=DEFAULT_CONFIG,
        help=f"YAML config (default: {DEFAULT_CONFIG}, which runs on the bundled sample data)",
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
    return load_config(args.config, overrides)


def cmd_validate(args: argparse.Namespace) -> int:
    from mitigate.pipeline.run import preflight

    config, _ = _load(args)
    sources = preflight(config)
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
    sources = preflight(config)
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
    run = summary.get("run", {})
    console.print(
        f"{len(summary['shards'])} shard(s) written; "
        f"{run.get('wall_seconds', 0):.1f} s, {run.get('samples_per_second', 0):.1f} samples/s"
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
        "beam_args",
        nargs=argparse.REMAINDER,
        help="after `--`: extra Apache Beam pipeline options, passed through unchanged",
    )
    run_p.set_defaults(func=cmd_run)

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
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"mitigate: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
