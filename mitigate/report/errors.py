"""The ``errors`` section: counts per reason, example keys, source issues."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mitigate.report.common import _pct, _table, _td
from mitigate.report.data import ERROR_EXAMPLES_PER_REASON, ErrorExample, _share


def _section_errors(
    summary: Mapping[str, Any], examples: Mapping[str, Sequence[ErrorExample]]
) -> str:
    total = int(summary.get("input_count", 0))
    errors = summary.get("counts", {}).get("error", {"total": 0, "reasons": {}})
    parts = ['<section id="errors"><h2>Errors</h2>']
    if not errors.get("total"):
        parts.append('<p class="note">No errors.</p>')
    else:
        reasons = sorted(errors["reasons"].items(), key=lambda x: (-x[1], x[0]))
        parts.append(
            _table(
                ["reason", "samples", "share of input"],
                [
                    [_td(r), _td(f"{n:,}", True), _td(_pct(_share(n, total)), True)]
                    for r, n in reasons
                ],
            )
        )
        rows = [
            [_td(reason), _td(e.key), _td(e.source), _td(e.detail)]
            for reason, _ in reasons
            for e in examples.get(reason, [])
        ]
        parts.append(f"<h3>Examples (up to {ERROR_EXAMPLES_PER_REASON} per reason)</h3>")
        parts.append(_table(["reason", "key", "source", "detail"], rows))
    issues = summary.get("source_issues") or []
    if issues:
        parts.append("<h3>Source issues</h3>")
        parts.append(
            _table(
                ["source", "reason", "detail"],
                [
                    [_td(i.get("source")), _td(i.get("reason")), _td(i.get("detail"))]
                    for i in issues
                ],
            )
        )
    parts.append("</section>")
    return "".join(parts)
