"""The page: sections in order, header and navigation; the atomic write and ``main``."""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from mitigate import layout
from mitigate.report.common import _CSP, _CSS, _esc, _Thumbs, blur_of
from mitigate.report.config import _section_config
from mitigate.report.data import (
    _manifest_schema_names,
    filter_specs,
    load_run_config,
    load_summary,
    local_open,
    manifest_columns,
)
from mitigate.report.dedup import _section_dedup
from mitigate.report.errors import _section_errors
from mitigate.report.filters import _section_filters
from mitigate.report.funnel import _section_funnel
from mitigate.report.rebalancing import _section_rebalancing
from mitigate.report.stats import ManifestStats, funnel_data
from mitigate.review import Opener
from mitigate.runtable import RunTable

log = logging.getLogger(__name__)

#: The page's sections, in order; each is a ``<section id=...>``.
SECTION_IDS: tuple[str, ...] = ("funnel", "filters", "dedup", "rebalancing", "errors", "config")


# ---------------------------------------------------------------------------- API


def build_report(
    out_dir: str | Path,
    *,
    opener: Opener | None = None,
    blur_sexual: bool = True,
    max_thumbs: int = 12,
    shown_as: str | None = None,
) -> str:
    """The report of the finished run in ``out_dir`` as one self-contained HTML page.

    ``opener`` reads the samples' source files for thumbnails (default: local files;
    pass ``mitigate.pipeline.fs.open_read`` for remote paths). Thumbnails of
    ``sexual``-category filters, and elsewhere of samples scoring at or above a sexual
    filter's threshold, are blurred in the pixels unless ``blur_sexual`` is False.
    ``max_thumbs`` bounds every thumbnail strip. ``shown_as`` is the folder name the
    page shows (default ``out_dir``; a run writes its report in a staging folder and
    shows the output folder it is swapped into).
    """
    out_dir = Path(out_dir)
    shown = shown_as if shown_as is not None else str(out_dir)
    summary = load_summary(out_dir)
    config = load_run_config(out_dir)
    specs = filter_specs(config, summary)
    # every row's light columns, a batch at a time; the shown rows' columns (run.rows)
    run = RunTable.index(out_dir)
    columns = manifest_columns(_manifest_schema_names(out_dir), specs)
    stats = ManifestStats.of_run(run.parts, columns, specs, max_thumbs)
    log.info("report: %d manifest rows, %d filters", stats.rows, len(specs))
    thumbs = _Thumbs(None, opener or local_open, run.rows, run.key_rows)
    blur = blur_of(thumbs, specs, blur_sexual)
    sections = [
        _section_funnel(summary, funnel_data(summary, stats)),
        _section_filters(stats.filter_data(), thumbs, blur_sexual),
        _section_dedup(summary.get("dedup"), thumbs, blur, max_thumbs),
        _section_rebalancing(summary.get("rebalance"), stats.weight_histogram()),
        _section_errors(summary, stats.error_examples(run.rows)),
        _section_config(summary, out_dir),
    ]
    nav = "".join(f'<a href="#{s}">{s}</a>' for s in SECTION_IDS)
    title = f"mitigate report: {shown}"
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>mitigate run report</h1><div class='muted'>{_esc(shown)} · "
        f"mitigate {_esc(summary.get('versions', {}).get('mitigate', '?'))}</div>"
        f"<nav>{nav}</nav></header><main>{''.join(sections)}</main></body></html>"
    )


def write_report(
    out_dir: str | Path,
    *,
    opener: Opener | None = None,
    blur_sexual: bool = True,
    max_thumbs: int = 12,
    shown_as: str | None = None,
) -> Path:
    """Build the report and write it to ``OUT/report.html`` atomically (a hidden
    temporary file in the same folder, then a rename). Returns the path."""
    page = build_report(
        out_dir, opener=opener, blur_sexual=blur_sexual, max_thumbs=max_thumbs, shown_as=shown_as
    )
    target = Path(out_dir, layout.REPORT)
    fd, tmp = tempfile.mkstemp(prefix=".report.html.tmp-", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(page)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    os.chmod(target, 0o644)
    log.info("report written to %s (%.1f kB)", target, len(page.encode()) / 1024)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mitigate.report OUT``: write ``OUT/report.html`` (local paths)."""
    parser = argparse.ArgumentParser(prog="python -m mitigate.report", description=main.__doc__)
    parser.add_argument("out_dir", help="a finished run's output folder")
    parser.add_argument(
        "--no-blur", action="store_true", help="do not blur sexual-content thumbnails"
    )
    parser.add_argument("--max-thumbs", type=int, default=12, help="thumbnails per strip")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    path = write_report(args.out_dir, blur_sexual=not args.no_blur, max_thumbs=args.max_thumbs)
    log.info("%s", path)
    return 0
