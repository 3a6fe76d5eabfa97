"""The ``config`` section: the effective config and model provenance."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mitigate import layout
from mitigate.report.common import _esc, _table, _td


def _section_config(summary: Mapping[str, Any], out_dir: Path) -> str:
    parts = ['<section id="config"><h2>Config and provenance</h2>']
    models = summary.get("models") or []
    if models:
        parts.append("<h3>Models</h3>")
        parts.append(
            _table(
                ["filter", "name", "category", "file", "sha256"],
                [
                    [
                        _td(m.get("filter")),
                        _td(m.get("name")),
                        _td(m.get("category", "")),
                        _td(m.get("model_file", "")),
                        f"<td><code>{_esc(m.get('model_sha256', ''))}</code></td>",
                    ]
                    for m in models
                ],
            )
        )
    versions = summary.get("versions") or {}
    if versions:
        parts.append("<h3>Versions</h3>")
        parts.append(
            _table(["package", "version"], [[_td(k), _td(v)] for k, v in sorted(versions.items())])
        )
    config_path = out_dir / layout.CONFIG
    text = config_path.read_text(encoding="utf-8") if config_path.is_file() else "(no config.yaml)"
    parts.append(
        f"<h3>Effective config</h3><p>config sha256 <code>"
        f"{_esc(summary.get('config_sha256', '?'))}</code></p><pre>{_esc(text)}</pre></section>"
    )
    return "".join(parts)
