"""How the command line becomes a config: the default config (the checkout's, else the
packaged copy), ``--add-filter`` snippets, ``--set`` overrides (data paths against the
working directory), ``--input`` and ``--output``. Beam-free and light: ``mitigate
--help`` imports it (the config models are imported when a command loads a config)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mitigate.text import yaml_quoted

if TYPE_CHECKING:
    from mitigate.config import Config

DEFAULT_CONFIG = "configs/default.yaml"


def _added_filters(args: argparse.Namespace) -> list[str]:
    """An override setting ``filters`` to the config file's list plus every
    ``--add-filter`` snippet's entries (none without ``--add-filter``)."""
    import json

    import yaml

    from mitigate.config import ConfigError, load_yaml

    if not getattr(args, "add_filter", None):
        return []
    try:
        base = load_yaml(Path(args.config).read_text(encoding="utf-8")) if args.config else {}
    except (OSError, yaml.YAMLError):
        return []  # load_config reports the config file's own problem
    entries = list((base or {}).get("filters") or []) if isinstance(base, dict) else []
    for path in args.add_filter:
        try:
            snippet = load_yaml(Path(path).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError([f"--add-filter {path}: cannot read it: {exc}"]) from None
        if not isinstance(snippet, dict) or not isinstance(snippet.get("filters"), list):
            raise ConfigError(
                [f"--add-filter {path}: expected a `filters:` list (as `mitigate train` writes)"]
            )
        others = sorted(str(k) for k in snippet if k != "filters")
        if others:  # dedup: {k: 3} beside the filters was dropped in silence (helper-36)
            raise ConfigError(
                [
                    f"--add-filter {path}: holds {', '.join(others)} beside `filters`; "
                    "--add-filter adds filters only: give other settings with --set or in "
                    "the --config file"
                ]
            )
        folder = Path(path).expanduser().resolve().parent
        snippet["filters"] = [_rebased(e, folder) for e in snippet["filters"]]
        have = {_filter_id(e): i for i, e in enumerate(entries) if isinstance(e, dict)}
        for entry in snippet["filters"]:
            at = have.get(_filter_id(entry)) if isinstance(entry, dict) else None
            if at is not None and "threshold" in entry:  # calibrate's snippet: a new threshold
                raise ConfigError(
                    [
                        f"--add-filter {path}: {_filter_id(entry)!r} is filters.{at} of the "
                        "config already (a `mitigate calibrate` snippet?): --add-filter adds "
                        f"new filters; give its threshold with --set "
                        f"filters.{at}.threshold={entry['threshold']}"
                    ]
                )
        entries += snippet["filters"]
    return [f"filters={json.dumps(entries)}"]


def _rebased(entry: Any, folder: Path) -> Any:
    """A snippet's filter entry with its relative file paths (``model.path``,
    ``terms_file``, a category's ``terms_file``, a blocklist's ``path``) taken from the
    snippet's folder, as a config file's are from its own: they were taken from the main
    config's, which without ``--config`` is inside the installed package (helper-36)."""
    if not isinstance(entry, dict):
        return entry

    def absolute(value: Any) -> Any:
        if isinstance(value, str) and value and "://" not in value:
            given = Path(value).expanduser()
            return str(given if given.is_absolute() else folder / given)
        return value

    out = dict(entry)
    if isinstance(out.get("model"), dict) and "path" in out["model"]:
        out["model"] = {**out["model"], "path": absolute(out["model"]["path"])}
    for key in ("terms_file", "path"):
        if key in out:
            out[key] = absolute(out[key])
    if isinstance(out.get("categories"), dict):
        out["categories"] = {
            name: {**c, "terms_file": absolute(c["terms_file"])}
            if isinstance(c, dict) and "terms_file" in c
            else c
            for name, c in out["categories"].items()
        }
    return out


def _filter_id(entry: dict) -> object:
    """A filter entry's id as the config names it: ``id``, else its ``name``."""
    return entry.get("id") or entry.get("name")


#: ``--set`` keys whose value is a path (or a list of paths) of the run's data, resolved
#: against the working directory like ``--input``/``--output`` (a path in a config file
#: resolves against the file's folder, which for the packaged default is inside the
#: installed package: ``--set output.path=o`` would have written there).
_WORKING_DIR_PATHS = frozenset({("input", "paths"), ("output", "path"), ("dedup", "against")})


def _from_working_dir(overrides: list[str]) -> list[str]:
    """``overrides`` with the relative local paths of :data:`_WORKING_DIR_PATHS` made
    absolute against the working directory (other overrides unchanged)."""
    from mitigate.config import parse_override

    def absolute(value: Any) -> Any:
        if isinstance(value, list):
            return [absolute(v) for v in value]
        if (
            isinstance(value, str)
            and value
            and "://" not in value
            and not Path(value).is_absolute()
        ):
            return str(Path(value).expanduser().resolve())
        return value

    out = []
    for text in overrides:
        parts, value = parse_override(text)
        field = tuple(parts[:2])
        if field in _WORKING_DIR_PATHS and (len(parts) == 2 or parts[2:3][0].isdigit()):
            if (shown := _yaml_value(absolute(value))) is not None:
                text = f"{'.'.join(parts)}={shown}"
        out.append(text)
    return out


def _yaml_value(value: Any) -> str | None:
    """Text, or a list of texts, as YAML that reads back as it (:func:`_yaml_text`:
    ``json.dumps`` wrote an emoji as two halves of a surrogate pair, which YAML reads
    as two characters that are no text); None for anything else (a date, a number:
    its override stays as written, for the config to name its field, where
    ``json.dumps`` of a date ended the command in a TypeError)."""
    if isinstance(value, list):
        items = [_yaml_value(v) for v in value]
        return None if None in items else "[" + ", ".join(items) + "]"  # type: ignore[arg-type]
    return yaml_quoted(value) if isinstance(value, str) else None


def _utf8_path(field: str, path: str, resolve: bool = False) -> str:
    """``path`` (made absolute with ``resolve``), refused where its name is not UTF-8
    (bytes Python holds as lone surrogates, which no YAML text can carry): the file's
    name is what to change."""
    from mitigate.text import LONE_SURROGATE, escape_surrogates

    if LONE_SURROGATE.search(path):
        from mitigate.config import ConfigError

        raise ConfigError(
            [
                f"{field}: {escape_surrogates(path)}: the name is not UTF-8: rename it "
                "(e.g. convmv -f cp1252 -t utf-8 --notest)"
            ]
        )
    if resolve and "://" not in path and path:
        return str(Path(path).expanduser().resolve())
    return path


def _sets_input(overrides: list[str]) -> bool:
    from mitigate.config import parse_override

    return any(tuple(parse_override(o)[0][:2]) == ("input", "paths") for o in overrides)


def _load(args: argparse.Namespace) -> tuple[Config, dict[str, Any]]:
    # The packaged default (when no --config) first: --add-filter extends its filters.
    packaged = _packaged_default(args) if args.config is None else []
    overrides = packaged + _added_filters(args) + _from_working_dir(list(args.overrides))
    # Command-line paths are relative to the working directory, unlike paths in a file.
    if args.input:
        quoted = ", ".join(
            yaml_quoted(_utf8_path(f"input.paths[{i}]", p, True)) for i, p in enumerate(args.input)
        )
        overrides.append(f"input.paths=[{quoted}]")
    if args.output is not None:  # "" (an unset variable) is refused by the config
        out = args.output
        out = out if "://" in out or not out else str(Path(out).expanduser().resolve())
        overrides.append(f"output.path={yaml_quoted(_utf8_path('output.path', out))}")
    if getattr(args, "overwrite", False):
        overrides.append("output.overwrite=true")
    if getattr(args, "runner", None):
        overrides.append(f"runner.name={args.runner}")
    if getattr(args, "dry_run", False):
        overrides.append("runner.dry_run=true")
    from mitigate.config import load_config

    return load_config(args.config, overrides)


def _packaged_default(args: argparse.Namespace) -> list[str]:
    """Point ``args.config`` at the default config (see :mod:`mitigate.defaults`);
    the packaged copy names no data, so it needs --input and writes to ./out."""
    from mitigate.config import ConfigError
    from mitigate.defaults import resolve_default_config

    path, packaged = resolve_default_config()
    args.config = str(path)
    if not packaged:
        return []
    if not args.input and not _sets_input(args.overrides):
        raise ConfigError(
            [
                f"--input: no --config given and no {DEFAULT_CONFIG} in this folder, so "
                "there is no input: pass --input 'PATH_OR_GLOB', or write a config with "
                "`mitigate init` and pass --config"
            ]
        )
    return (
        []
        if args.output is not None
        else [f"output.path={yaml_quoted(str(Path('out').resolve()))}"]
    )
