"""One list of reason codes (mitigate.reasons): the README's state table and every code
the code base emits agree with it."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from mitigate import reasons
from mitigate.reasons import Reason

ROOT = Path(__file__).resolve().parent.parent


def _readme_table() -> dict[str, set[str]]:
    """state -> the reason codes its README row lists (parenthesised notes left out)."""
    rows = {}
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        m = re.match(r"\| `(kept|filtered|duplicate|error)` \|[^|]*\|(.*)\|\s*$", line)
        if m:
            codes = re.sub(r"\([^)]*\)", "", m.group(2))
            rows[m.group(1)] = set(re.findall(r"`([a-z_]+)`", codes))
    return rows


def test_readme_state_table_lists_exactly_the_reason_codes():
    table = _readme_table()
    assert set(table) == {"kept", "filtered", "duplicate", "error"}
    assert table["kept"] == set()
    assert table["error"] == Reason.ERRORS
    assert table["duplicate"] == Reason.DUPLICATES
    assert table["filtered"] == Reason.FILTER_DROPS | {reasons.image_above_threshold("nsfw")}


def test_every_reason_constant_belongs_to_one_group():
    constants = {v for k, v in vars(Reason).items() if k.isupper() and isinstance(v, str)}
    groups = [
        Reason.ERRORS,
        Reason.DUPLICATES,
        Reason.FILTER_DROPS,
        Reason.SOURCE_ISSUES,
        frozenset({Reason.NOT_MERGED}),
    ]
    for code in constants:
        assert sum(code in g for g in groups) == 1, code
    assert set().union(*groups) == constants


def test_onnx_filter_reasons_are_built_from_the_filter_id():
    assert reasons.image_above_threshold("nsfw") == "nsfw_image_above_threshold"
    assert reasons.is_known("my_model_image_above_threshold")
    assert not reasons.is_known("_image_above_threshold")
    assert not reasons.is_known("too_blurry")


@pytest.mark.parametrize("name", ["image_quality", "caption_terms", "blocklist"])
def test_rule_filters_drop_only_with_listed_codes(name):
    # Their codes are spelled once, in mitigate.reasons.
    import inspect

    from mitigate.filters import blocklist, caption_terms, image_quality

    modules = {"image_quality": image_quality, "caption_terms": caption_terms}
    module = {**modules, "blocklist": blocklist}[name]
    source = inspect.getsource(module)
    assert not re.search(r"Drop\(\s*\"", source), "a reason spelled as a literal"


def test_golden_sample_reasons_are_all_known():
    with open(ROOT / "data" / "sample" / "expected.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    seen = {r["reason"] for r in rows if r.get("reason")}
    assert seen and all(reasons.is_known(r) for r in seen), seen
