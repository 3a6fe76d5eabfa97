"""Checks of a config against the filesystem, done before any work.

Its own module, free of Beam, so that ``mitigate validate`` starts in well under a
second (:mod:`mitigate.pipeline.fs` serves local paths without Beam).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from mitigate.config import Config, ConfigError
from mitigate.pipeline import fs, outdir
from mitigate.tables import table_format, table_problems

log = logging.getLogger(__name__)


def preflight(config: Config, protected: Sequence[str] = ()) -> list[str]:
    """Checks that need the filesystem, done before any work. Returns the sorted input
    files; raises :class:`ConfigError` naming the field at fault.

    A Dataflow dry run works offline: remote inputs are taken as given (not listed) and
    the output folder is not inspected. ``protected`` are files the run reads (its
    config file), which the output must not replace; nor may it replace an input.
    """
    from mitigate.runners.extras import missing_extra

    missing = missing_extra(config.runner.name)
    errors = [missing] if missing else []
    dry = config.runner.dry_run
    local = [p for p in config.input.paths if not (dry and "://" in p)]
    matched = fs.match(local) if local else {}
    sources: list[str] = [p for p in config.input.paths if p not in matched]
    for i, pattern in enumerate(config.input.paths):
        if pattern not in matched:
            continue
        files = matched[pattern]
        if not files:
            errors.append(f"input.paths[{i}]: no file matches {pattern!r}")
        for path in files:
            try:
                table_format(path, config.input.format)
            except ValueError as exc:
                errors.append(f"input.paths[{i}]: {exc}")
                continue
            errors.extend(f"input.paths[{i}]: {path}: {p}" for p in _table_problems(config, path))
        sources.extend(files)
    if errors:
        raise ConfigError(errors)
    if dry:
        return sorted(set(sources))
    outdir.check_output(config.output.path, config.output.overwrite, [*protected, *sources])
    return sorted(set(sources))


def _table_problems(config: Config, path: str) -> list[str]:
    """A table's missing key/image/caption columns, found from its schema or header
    before any work; a common name used in place of a default one is logged."""
    fmt = table_format(path, config.input.format)
    if fmt == "webdataset":
        return []
    cfg = config.input
    configured = {
        "key_column": cfg.key_column,
        "image_column": cfg.image_column,
        "caption_column": cfg.caption_column,
    }
    try:
        with fs.open_read(path) as f:
            used, problems = table_problems(f, fmt, configured)
    except OSError as exc:
        return [f"cannot open: {exc}"]
    for field, column in used.items():
        if column != configured[field] and not problems:
            log.warning(
                "%s: no column %r, using %r (set input.%s to choose)",
                path,
                configured[field],
                column,
                field,
            )
    return problems
