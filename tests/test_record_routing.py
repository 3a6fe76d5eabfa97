"""Records are not split off and rejoined between Decode and the writers: on the local
runner a Flatten writes and reads every record it carries once more, and a CoGroupByKey
is a Flatten and a GroupByKey (BENCHMARKS.md, "Fewer record encodes (session 10,
stream 14f)"). Outputs are unchanged: the run comparisons in test_pipeline,
test_near_pipeline, test_near_partitioned, test_rebalance_pipeline and test_runners."""

from __future__ import annotations

import json
from pathlib import Path

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from mitigate.config import RebalanceConfig, load_config
from mitigate.near import NOT_MERGED, Decision
from mitigate.pipeline import build
from mitigate.pipeline.near import _apply, apply_joined, decisions_by_key
from mitigate.pipeline.rebalance import Rebalance
from mitigate.records import DUPLICATE, ERROR, KEPT, PENDING, Reason, SampleRecord

REPO = Path(__file__).resolve().parent.parent
FILTERS = (
    "filters=[{name: image_quality}, {name: caption_terms, category: violence, "
    "terms_file: terms/violence.txt}]"
)
FLATTEN = "beam:transform:flatten:v1"


def _flattens(tmp_path: Path, *overrides: str) -> set[str]:
    """Unique names of the Flatten transforms in the run's graph (built, not run)."""
    config, _ = load_config(
        REPO / "configs" / "default.yaml",
        [
            f"input.paths={json.dumps([str(tmp_path / 'a.tar'), str(tmp_path / 'b.tar')])}",
            f"output.path={tmp_path / 'out'}",
            FILTERS,
            "rebalance.embedding_filter=null",
            *overrides,
        ],
    )
    pipeline = beam.Pipeline()
    build.build(pipeline, config, [str(tmp_path / "a.tar"), str(tmp_path / "b.tar")], {})
    proto = pipeline.to_runner_api()
    return {
        t.unique_name
        for t in proto.components.transforms.values()
        if t.spec.urn == FLATTEN and not t.subtransforms
    }


def test_only_the_group_by_source_flattens_records(tmp_path):
    # exact dedup, one-worker near dedup (verification, medoid rule) and rebalancing
    # on: the one Flatten of records is the group by source's (records, signatures,
    # markers); the other two carry hash items (Gather's seed) and probe inputs.
    # Before stream 14f: also Rejoin, NearDedup/Join's CoGroupByKey, NearDedup/Rejoin
    # and Rebalance/Rejoin.
    assert _flattens(tmp_path, "dedup.near=true", "dedup.partition=none") == {
        "WithEmptySources",
        "NearDedup/AllHashes/WithSeed",
        "Rebalance/ProbeInputs",
    }
    # without exact and near dedup nothing else appears (no empty split and rejoin)
    assert _flattens(tmp_path, "dedup.exact=false", "dedup.near=false") == {
        "WithEmptySources",
        "Rebalance/ProbeInputs",
    }


def _record(key: str, index: int, **kw) -> SampleRecord:
    return SampleRecord(**{"key": key, "source": "s.tar", "index": index, **kw})


def test_exact_dedup_groups_pending_records_by_sha256_and_settled_ones_alone():
    pending = [_record("a", 0, sha256="x", width=10, height=10), _record("b", 1, sha256="x")]
    # settled records with the same bytes are not exact duplicates of anything
    settled = [
        _record("c", 2, sha256="x", state=ERROR, reason=Reason.DUPLICATE_KEY),
        _record("d", 3, sha256="x", state=ERROR, reason=Reason.DUPLICATE_KEY),
    ]
    keys = [build.exact_key(r) for r in pending + settled]
    assert keys == [
        ("sha256", "x"),
        ("sha256", "x"),
        ("settled", "s.tar", 2),
        ("settled", "s.tar", 3),
    ]
    assert build.resolve_exact((keys[2], [settled[0]])) == [settled[0]]
    best, dup = build.resolve_exact((keys[0], pending))
    assert best == pending[0]
    assert (dup.key, dup.state, dup.reason, dup.duplicate_of) == (
        "b",
        DUPLICATE,
        Reason.EXACT_DUPLICATE,
        "a",
    )
    with TestPipeline() as p:
        out = build._exact_dedup(p | beam.Create(pending + settled), True)
        assert_that(
            out | beam.Map(lambda r: (r.key, r.state)),
            equal_to([("a", PENDING), ("b", DUPLICATE), ("c", ERROR), ("d", ERROR)]),
        )


def test_near_dup_decisions_apply_to_pending_records_only():
    decisions = decisions_by_key(
        (
            [
                Decision("b", Reason.NEAR_DUPLICATE, "a", 3, 0.1),
                Decision("c", NOT_MERGED, "a", 5, 0.7),
            ],
            {"items": 3},
        )
    )
    assert decisions[1] == {"items": 3}
    decisions = decisions[0]
    a = _record("a", 0, signature=b"s")
    b = _record("b", 1, signature=b"s")
    c = _record("c", 2)
    # a later occurrence of key "b": settled, so it keeps its state and reason
    b_again = _record("b", 3, state=ERROR, reason=Reason.DUPLICATE_KEY, signature=b"s")
    assert _apply(a, decisions, False) is a
    assert _apply(a, decisions, True) == _record("a", 0)  # light: no signature
    dup = _apply(b, decisions, True)
    assert (dup.state, dup.reason, dup.duplicate_of, dup.distance, dup.signature) == (
        DUPLICATE,
        Reason.NEAR_DUPLICATE,
        "a",
        3,
        None,
    )
    assert dup.detail == "pHash or centre view within 3 bits of a kept sample, 'a', " + (
        "verification score 0.100"
    )
    refused = _apply(c, decisions, False)
    assert (refused.state, refused.verify_score) == (PENDING, 0.7)
    assert refused.detail.startswith("not merged: within 5 bits of 'a'")
    assert _apply(b_again, decisions, True) == _record(
        "b", 3, state=ERROR, reason=Reason.DUPLICATE_KEY
    )
    # the partitioned graph's joined form gives the same records
    joined = list(apply_joined(("b", {"record": [b], "decision": [decisions["b"]]})))
    assert joined == [_apply(b, decisions, False)]
    assert list(apply_joined(("a", {"record": [a], "decision": []}))) == [a]


def test_rebalance_can_hand_out_its_two_parts_unflattened():
    cfg = RebalanceConfig(enabled=True, embedding_filter=None, C=1.0)
    records = [_record(f"k{i}", i, state=KEPT, caption=f"a photo {i}") for i in range(6)]
    records += [_record("e", 9, state=ERROR, reason=Reason.DECODE_ERROR)]

    def weighted(r: SampleRecord) -> tuple:
        return (r.key, r.state, r.weight)

    with TestPipeline() as p:
        final = p | beam.Create(records)
        (kept, others), _ = final | "Parts" >> Rebalance(cfg, [], rejoin=False)
        joined, _ = final | "Joined" >> Rebalance(cfg, [])
        # nothing to learn (no filtered sample): every kept weight is 1
        expected = [(f"k{i}", KEPT, 1.0) for i in range(6)]
        assert_that(kept | "K" >> beam.Map(weighted), equal_to(expected), label="kept")
        assert_that(
            others | "O" >> beam.Map(weighted), equal_to([("e", ERROR, None)]), label="others"
        )
        assert_that(
            joined | "J" >> beam.Map(weighted),
            equal_to([*expected, ("e", ERROR, None)]),
            label="joined",
        )
