"""Checks of a config against the filesystem, done before any work.

Its own module, free of Beam, so that ``mitigate validate`` starts in well under a
second (:mod:`mitigate.pipeline.fs` serves local paths without Beam).
"""

from __future__ import annotations

from collections.abc import Sequence

from mitigate.config import Config, ConfigError
from mitigate.pipeline import fs, outdir
from mitigate.sources import table_format


def preflight(config: Config, protected: Sequence[str] = ()) -> list[str]:
    """Checks that need the filesystem, done before any work. Returns the sorted input
    files; raises :class:`ConfigError` naming the field at fault.

    A Dataflow dry run works offline: remote inputs are taken as given (not listed) and
    the output folder is not inspected. ``protected`` are files the run reads (its
    config file), which the output must not replace.
    """
    errors = []
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
        sources.extend(files)
    if errors:
        raise ConfigError(errors)
    if dry:
        return sorted(set(sources))
    outdir.check_output(config.output.path, config.output.overwrite, protected)
    return sorted(set(sources))
