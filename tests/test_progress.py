"""The live progress display: counter stream, renderer on a fake clock, both modes."""

from __future__ import annotations

import io
import multiprocessing
import os

import pytest

from mitigate import progress
from mitigate.progress import CounterStream, Counts, LiveProgress, ProgressRenderer


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def counts(**values: int) -> Counts:
    return Counts({k.replace("__", "/"): v for k, v in values.items()})


def test_emit_writes_to_the_stream_and_polling_reads_only_new_lines(tmp_path, monkeypatch):
    path = tmp_path / "p.txt"
    monkeypatch.setenv(progress.ENV, str(path))
    stream = CounterStream(str(path))
    assert stream.poll().values == {}
    progress.emit("indexed", 16)
    progress.emit("processed", 5)
    progress.emit("processed", 0)  # nothing to say: nothing written
    assert stream.poll().values == {"indexed": 16, "processed": 5}
    progress.emit("processed", 3)
    progress.emit("state/kept", 2)
    assert stream.poll().values == {"indexed": 16, "processed": 8, "state/kept": 2}
    # a line still being written waits for its end
    with open(path, "ab") as f:
        f.write(b"processed 1")
    assert stream.poll().get("processed") == 8
    with open(path, "ab") as f:
        f.write(b"0\n")
    assert stream.poll().get("processed") == 18


def test_emit_without_a_progress_file_does_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv(progress.ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    progress.emit("processed", 5)
    assert list(tmp_path.iterdir()) == []


def _worker(path: str, n: int) -> None:
    os.environ[progress.ENV] = path
    for _ in range(n):
        progress.emit("processed", 1)


def test_worker_processes_append_without_losing_a_count(tmp_path):
    path = str(tmp_path / "p.txt")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(path, 300)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert CounterStream(path).poll().values == {"processed": 900}


def test_terminal_line_shows_counts_rate_eta_and_states():
    clock, out = FakeClock(), io.StringIO()
    r = ProgressRenderer(
        out, terminal=True, sources=2, where="-> /data/out", clock=clock, width=lambda: 120
    )
    clock.now += 1
    r.update(counts(indexed=100, sources=1, processed=0))
    assert "0/100+ samples" in out.getvalue() and "-/s" in out.getvalue()
    clock.now += 10
    r.update(counts(indexed=400, sources=2, processed=100, state__kept=60, state__error=2))
    last = out.getvalue().split("\r")[-1]
    # 100 samples in the 10 s since the first update: 10/s, 300 to go: 30 s
    assert last == (
        "mitigate 100/400 (25%) samples · 10.0/s · ETA 0:30 · kept 60 · error 2 · "
        "-> /data/out\x1b[K"
    )
    r.close()
    assert out.getvalue().endswith("\r\x1b[K")


@pytest.mark.parametrize("width", [80, 60, 40])
def test_terminal_line_fits_the_width_by_shortening_the_path_not_the_counts(width):
    clock, out = FakeClock(), io.StringIO()
    where = "-> /very/long/output/path/" + "x" * 80 + "/final"
    r = ProgressRenderer(
        out, terminal=True, sources=1, where=where, clock=clock, width=lambda: width
    )
    r.update(counts(indexed=400, sources=1, processed=0))
    clock.now += 4
    r.update(counts(indexed=400, sources=1, processed=40, state__kept=7))
    line = out.getvalue().split("\r")[-1].removesuffix("\x1b[K")
    assert len(line) <= width - 1
    if width >= 60:  # the counts are whole
        assert line.startswith("mitigate 40/400 (10%) samples · 10.0/s · ETA 0:36 · kept 7")
    if width == 80:  # and the path keeps its end
        assert line.endswith("/final") and "…" in line


def test_plain_mode_writes_whole_lines_at_most_every_interval():
    clock, out = FakeClock(), io.StringIO()
    r = ProgressRenderer(
        out, terminal=False, sources=1, where="-> out", clock=clock, plain_every=10
    )
    r.update(counts(indexed=50, sources=1, processed=0))
    for step in range(1, 25):
        clock.now += 1
        r.update(counts(indexed=50, sources=1, processed=step * 2))
    r.update(
        counts(indexed=50, sources=1, processed=50, state__kept=45, state__filtered=5), final=True
    )
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()
    assert len(lines) == 4  # at 0 s, 10 s, 20 s, and the last one
    assert lines[1].startswith("mitigate 20/50 (40%) samples · 2.0/s · ETA 0:15")
    assert lines[-1].startswith("mitigate 50/50 (100%) samples")
    assert "kept 45 · filtered 5" in lines[-1]


def test_live_progress_sets_and_restores_the_variable_and_removes_the_file(tmp_path):
    out = io.StringIO()
    path = tmp_path / "p.txt"
    path.touch()
    r = ProgressRenderer(out, terminal=False, sources=1)
    assert progress.ENV not in os.environ
    with LiveProgress(r, str(path), interval=0.01):
        assert os.environ[progress.ENV] == str(path)
        progress.emit("indexed", 3)
        progress.emit("sources", 1)
        progress.emit("processed", 3)
    assert progress.ENV not in os.environ and not path.exists()
    assert out.getvalue().splitlines()[-1].startswith("mitigate 3/3 (100%) samples")


def test_dataflow_link_is_announced_to_a_listener():
    from mitigate.config import load_config
    from mitigate.pipeline.run import _announce_job

    class Result:
        def job_id(self) -> str:
            return "2026-01-01_00_00_00-123"

    config, _ = load_config(
        None,
        [
            "input.paths=['gs://my-bucket/shards/*.tar']",
            "output.path=gs://my-bucket/out",
            "runner.name=dataflow",
            "runner.project=my-project",
            "runner.region=europe-west4",
            "runner.temp_location=gs://my-bucket/tmp",
        ],
    )
    heard: list[str] = []
    with progress.listening(heard.append):
        _announce_job(config, Result())
    assert heard == [
        "Dataflow job 2026-01-01_00_00_00-123: https://console.cloud.google.com/dataflow/"
        "jobs/europe-west4/2026-01-01_00_00_00-123?project=my-project"
    ]


def test_a_log_line_clears_the_terminal_line_first(tmp_path):
    import logging

    out = io.StringIO()
    r = ProgressRenderer(out, terminal=True, sources=1, width=lambda: 80)
    handler = logging.StreamHandler(out)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        # a long interval: only this test's own update draws
        with LiveProgress(r, str(tmp_path / "p.txt"), interval=60):
            r.update(counts(indexed=5, sources=1, processed=1))
            logging.getLogger("progress_test").warning("a warning")
    finally:
        root.removeHandler(handler)
    assert out.getvalue().startswith("\rmitigate 1/5 (20%) samples")
    assert "elapsed\x1b[K\r\x1b[Ka warning\n" in out.getvalue()


def test_the_line_shows_the_c_grid_while_it_is_chosen_and_not_once_it_settled():
    clock, out = FakeClock(), io.StringIO()
    r = ProgressRenderer(out, terminal=True, sources=1, where="", clock=clock, width=lambda: 200)
    clock.now += 1
    r.update(counts(indexed=100, sources=1, processed=50))
    clock.now += 10
    done = {"indexed": 100, "sources": 1, "processed": 100}
    r.update(counts(**done, c_grid_size=15, c_grid=4))
    assert "100/100 (100%) samples" in out.getvalue().split("\r")[-1]
    assert "· choosing C: 4/15 fits" in out.getvalue().split("\r")[-1]
    clock.now += 60  # a minute of fits: no sample processed, no rate, still the grid
    r.update(counts(**done, c_grid_size=15, c_grid=9))
    assert "-/s · choosing C: 9/15 fits" in out.getvalue().split("\r")[-1]
    clock.now += 10
    r.update(counts(**done, c_grid_size=15, c_grid=15))
    last = out.getvalue().split("\r")[-1]
    assert "choosing C" not in last and "elapsed" in last  # the grid settled: as before
    r.close()


def test_the_c_grid_reports_each_fit_and_settles_what_the_early_stop_left_out(
    tmp_path, monkeypatch
):
    from fit_samples import noise_fit_sample

    from mitigate import rebalance_select as rs

    path = tmp_path / "p.txt"
    monkeypatch.setenv(progress.ENV, str(path))
    s = noise_fit_sample()
    chosen = rs.select_C(s.features, s.kept, s.folds, feature_config=s.config)
    assert chosen.not_tried  # the early stop left some out (noise: a weak C wins)
    got = CounterStream(str(path)).poll()
    assert got.get("c_grid_size") == 15 and got.get("c_grid") == 15
    lines = path.read_text().splitlines()
    fits = [line for line in lines if line == "c_grid 1"]
    assert len(fits) == 3 * len(chosen.log_loss)  # one line a fit, as it ends
