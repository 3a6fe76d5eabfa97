"""Decoding in a pool of worker processes (issue 14: a local run uses every core).

The pool must give exactly what decoding in process gives, lose no sample when a
decoder crashes its worker, never outlive the process that started it, and start only
where it pays (``decode.processes: auto``)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from test_runners import _outputs  # shards, manifest, embeddings of a run folder

from mitigate import decode_pool, stages, workers
from mitigate.config import Config, DecodeConfig, RunnerConfig, load_config
from mitigate.decode_pool import DecodePool, plan_processes, split_evenly
from mitigate.filters import build_filter, scored_at_decode
from mitigate.pipeline.fs import open_read
from mitigate.records import ERROR, Reason, SampleRecord
from mitigate.sources import index_tar

REPO = Path(__file__).resolve().parents[1]
SAMPLE = sorted((REPO / "data" / "sample").glob("shard-*.tar"))
DEFAULT = REPO / "configs" / "default.yaml"


def _records(limit: int = 24) -> list:
    with open(SAMPLE[0], "rb") as f:
        return [r for r in index_tar(f, str(SAMPLE[0]), max_image_bytes=10**8)][:limit]


def _payloads(records: list) -> list:
    return stages.load_payloads(records, open_read, 10**8)


def _pixel_filters(config: Config) -> list:
    return scored_at_decode(build_filter(c) for c in config.filters)


@pytest.fixture(scope="module")
def config() -> Config:
    cfg, _ = load_config(DEFAULT, [])
    return cfg


def _in_process(payloads: list, config: Config) -> list:
    filters = _pixel_filters(config)
    for f in filters:
        f.setup()
    items = stages.compute_signals(payloads, config.decode, filters)
    stages.score_items(items, filters)
    return items


def test_split_evenly_keeps_order_and_balances() -> None:
    parts = split_evenly(list(range(10)), 3)
    assert parts == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert split_evenly([1, 2], 5) == [[1], [2]]
    assert split_evenly([], 2) == []


def test_plan_processes() -> None:
    direct = RunnerConfig()
    cores = workers.usable_cores()
    assert plan_processes(DecodeConfig(processes=3), direct) == (3, 0)
    assert plan_processes(DecodeConfig(), direct) == (
        min(cores, decode_pool.MAX_AUTO_PROCESSES),
        decode_pool.WARMUP_SAMPLES,
    )
    # Beam workers already share the cores, and cloud runners have their own workers
    assert plan_processes(DecodeConfig(), RunnerConfig(direct_num_workers=2)) == (1, 0)
    portable = RunnerConfig(name="portable", job_endpoint="localhost:8099")
    assert plan_processes(DecodeConfig(), portable) == (1, 0)


@pytest.mark.parametrize("workers_in_config", [1, "auto"])
def test_beam_flags_on_the_command_line_reach_the_plan(config: Config, workers_in_config) -> None:
    """``mitigate run ... -- --direct_num_workers=2``: two Beam workers, so no decode
    processes (each Beam worker would start its own: four processes on two cores)."""
    from mitigate.pipeline.run import with_flags_in_force
    from mitigate.runners import pipeline_options

    config = config.model_copy(
        update={"runner": RunnerConfig(direct_num_workers=workers_in_config)}
    )
    flags = ["--direct_num_workers=2", "--direct_running_mode=multi_threading"]
    folded = with_flags_in_force(config, pipeline_options(config.runner, flags))
    assert folded.runner.local_workers() == 2
    assert folded.runner.local_running_mode() == "multi_threading"
    assert plan_processes(folded.decode, folded.runner) == (1, 0)
    # Beam's 0: a worker per CPU
    zero = with_flags_in_force(config, pipeline_options(config.runner, ["--direct_num_workers=0"]))
    assert zero.runner.local_workers() == os.cpu_count()
    if os.cpu_count() > 1:
        assert plan_processes(zero.decode, zero.runner) == (1, 0)
    # without flags (or with one that says what the config says) nothing changes
    for same in ([], ["--direct_num_workers=1"]):
        assert with_flags_in_force(config, pipeline_options(config.runner, same)) is config


@pytest.mark.parametrize("keep_images", [False, True])
def test_pool_gives_what_decoding_in_process_gives(config: Config, keep_images: bool) -> None:
    records = _records()
    payloads = _payloads(records)
    expected = _in_process(payloads, config)
    filters = [f.config for f in _pixel_filters(config)]
    pool = DecodePool(2, config.decode, filters, keep_images=keep_images, opener=open_read)
    try:
        items, decoded = pool.run(records)
    finally:
        pool.close()
    assert [i.record for i in items] == [i.record for i in expected]
    assert decoded == sum(1 for i in expected if i.image is not None) > 0
    assert any(i.record.scores for i in items)  # the pixel filters scored in the workers
    if keep_images:
        assert [i.image.tobytes() if i.image else None for i in items] == [
            i.image.tobytes() if i.image else None for i in expected
        ]
    else:
        assert all(i.image is None for i in items)


def test_a_sample_that_crashes_the_decoder_costs_only_itself(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = _records(12)
    payloads = _payloads(records)
    expected = _in_process(payloads, config)
    victim = [t for t, i in enumerate(expected) if i.image is not None][3]
    data = payloads[victim][1]
    monkeypatch.setenv(decode_pool._CRASH_ENV, hashlib.sha256(data).hexdigest())
    filters = [f.config for f in _pixel_filters(config)]
    pool = DecodePool(2, config.decode, filters, keep_images=False, opener=open_read)
    try:
        items, decoded = pool.run(records)
        assert pool.crashed == 1
        # the pool works on after the crash
        again, _ = pool.run(records[:2])
    finally:
        pool.close()
    assert len(items) == len(payloads)
    bad = items[victim].record
    assert bad.state == ERROR and bad.reason == Reason.DECODE_ERROR
    assert "crashed" in bad.detail and "SIGSEGV" in bad.detail
    assert bad.sha256 == hashlib.sha256(data).hexdigest()
    assert bad.key == payloads[victim][0].key
    for t, item in enumerate(items):
        if t != victim:
            assert item.record == expected[t].record
    assert decoded == sum(1 for i in expected if i.image is not None) - 1
    assert [i.record for i in again] == [i.record for i in expected[:2]]


@pytest.mark.slow
def test_a_run_with_decode_processes_writes_what_one_process_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Also: the pool's workers were booted before the pipeline started (a number of
    processes on the local runner), the near-dup decision's pair scoring borrows them,
    idle by then, and the run ends with none of them left lent or alive."""
    from mitigate.pipeline import process
    from mitigate.pipeline.run import run

    pools: list[DecodePool] = []

    class Recording(DecodePool):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            pools.append(self)

    monkeypatch.setattr(process, "DecodePool", Recording)

    here = process.Decode._here

    def waiting(self, records):  # type: ignore[no-untyped-def]
        """A long decode here: the booting workers are up by its end, so the sample's
        later chunks go to them (without it, a loaded machine may finish the sample's
        few chunks here before they are)."""
        items = here(self, records)
        for w in self._pool._workers if self._pool is not None else []:
            w.ready()
        return items

    monkeypatch.setattr(process.Decode, "_here", waiting)
    borrowed: list = []

    def borrow(n: int) -> list:
        got = real_borrow(n)
        borrowed.extend(got)
        return got

    real_borrow = workers.borrow
    monkeypatch.setattr(workers, "borrow", borrow)
    monkeypatch.setattr(workers, "MIN_WARM_PAIRS", 0)  # the sample's few candidate pairs
    outs = {}
    for procs in (1, 2):
        out = tmp_path / f"p{procs}"
        cfg, _ = load_config(DEFAULT, [f"output.path={out}", f"decode.processes={procs}"])
        run(cfg)
        outs[procs] = _outputs(out)
        assert len(borrowed) == procs - 1  # the scorer's one worker: the pool's
    assert outs[1] and outs[1] == outs[2]
    assert [pool.prestarted for pool in pools] == [True]
    assert decode_pool._prestarted == []
    assert workers.lent_workers() == 0
    assert all(w.proc.wait(timeout=10) is not None for w in borrowed)


def test_auto_starts_the_pool_only_after_the_warm_up_and_only_if_it_can(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from mitigate.pipeline import process
    from mitigate.pipeline.run import run

    started: list[int] = []
    events: list[tuple[str, int]] = []  # ("here", samples decoded in process), "start", "send"

    class Recording(DecodePool):
        def __init__(self, processes, *args, **kwargs) -> None:
            started.append(processes)
            super().__init__(processes, *args, **kwargs)

        def start(self) -> None:
            events.append(("start", 0))
            super().start()

        def send(self, records):  # type: ignore[no-untyped-def]
            events.append(("send", len(records)))
            return super().send(records)

    here = process.Decode._here
    wait_for: list[str] = []  # "ready": a started pool's workers up, "gone": ended

    def counted(self, records):  # type: ignore[no-untyped-def]
        events.append(("here", len(records)))
        items = here(self, records)
        for w in self._pool._workers if self._pool is not None and wait_for else []:
            # a long decode here: the booting workers are up (or gone) by its end
            w.ready() if wait_for == ["ready"] else w.proc.wait(timeout=30)
        return items

    monkeypatch.setattr(process, "DecodePool", Recording)
    monkeypatch.setattr(process.Decode, "_here", counted)
    monkeypatch.setattr(decode_pool, "usable_cores", lambda: 2)
    no_model = ["filters=[{name: image_quality}]", "rebalance.enabled=false"]
    cfg, _ = load_config(DEFAULT, [f"output.path={tmp_path / 'a'}", *no_model])
    assert cfg.decode.processes == "auto"
    run(cfg)  # the bundled sample is smaller than the warm-up: decoded in process
    assert started == []
    monkeypatch.setattr(decode_pool, "WARMUP_SAMPLES", 10)
    caplog.set_level(logging.INFO, logger="mitigate.pipeline.process")
    cfg, _ = load_config(DEFAULT, [f"output.path={tmp_path / 'small'}", *no_model])
    run(cfg)  # past the warm-up, but a run too small for a pool to pay off
    assert started == []
    assert "input samples: decoded in this process (decode.processes: auto" in caplog.text
    monkeypatch.setattr(decode_pool, "AUTO_MIN_SAMPLES", 1)  # from here on, any run
    cfg, _ = load_config(DEFAULT, [f"output.path={tmp_path / 'b'}", *no_model])
    run(cfg)
    assert started == [2]
    assert _outputs(tmp_path / "a") and _outputs(tmp_path / "a") == _outputs(tmp_path / "b")
    # the workers boot from half the warm-up on, while the rest is decoded here
    events.clear()
    wait_for[:] = ["ready"]
    monkeypatch.setattr(decode_pool, "WARMUP_SAMPLES", 24)  # two of the sample's chunks
    cfg, _ = load_config(DEFAULT, [f"output.path={tmp_path / 'w'}", *no_model])
    run(cfg)
    kinds = [kind for kind, _ in events]
    booted, first_send = kinds.index("start"), kinds.index("send")
    here_before = [sum(n for kind, n in events[:at] if kind == "here") for at in range(len(events))]
    assert 12 <= here_before[booted] < 24 <= here_before[first_send], events
    assert kinds.count("start") == 1 and "here" not in kinds[first_send:]
    assert _outputs(tmp_path / "a") == _outputs(tmp_path / "w")
    # workers that cannot start: the run decodes in process, with a warning
    wait_for[:] = ["gone"]
    monkeypatch.setattr(workers, "_BOOT", "import sys; sys.exit(3)")
    cfg, _ = load_config(DEFAULT, [f"output.path={tmp_path / 'c'}", *no_model])
    run(cfg)
    assert "decoding in this process instead of 2" in caplog.text
    assert "exit status 3" in caplog.text
    assert _outputs(tmp_path / "a") == _outputs(tmp_path / "c")


def test_workers_exit_when_the_process_that_started_them_dies(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {str(REPO / "tests")!r})
        from mitigate.config import load_config
        from mitigate.decode_pool import DecodePool
        from mitigate.pipeline.fs import open_read
        from test_decode_pool import _records, _pixel_filters
        cfg, _ = load_config({str(DEFAULT)!r}, [])
        filters = [f.config for f in _pixel_filters(cfg)]
        pool = DecodePool(2, cfg.decode, filters, keep_images=False, opener=open_read)
        pool.run(_records(4))
        print(" ".join(str(w.proc.pid) for w in pool._workers), flush=True)
        os._exit(0)  # no clean-up: as if the job were killed
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    pids = [int(p) for p in proc.stdout.split()]
    assert len(pids) == 2
    deadline = time.monotonic() + 10
    alive = pids
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [p for p in pids if _alive(p)]
    assert alive == []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its new parent) counts as gone
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z"


def test_a_chunk_starts_its_workers_side_by_side(config: Config, gate) -> None:
    """The first chunk hands each worker its share without waiting for any worker to
    start (~0.5 s each: two took 0.83 s one after the other, BENCHMARKS.md). Here each
    worker's start call is replaced by one that blocks on a FIFO until this process
    opens it (the ``gate`` fixture, tests/conftest.py), and ``send`` returns before
    that. (The shares then run without the decode state the real start call sets up,
    so their replies are errors.)"""
    pool = DecodePool(2, config.decode, [], keep_images=False, opener=open_read)
    pool._init = gate.start_call
    try:
        ticket = pool.send(_records(4))
        assert not gate.opened  # both shares sent while both workers were still starting
        gate.open()
        with pytest.raises(workers.WorkerError, match="KeyError"):
            pool.receive(ticket)
    finally:
        pool.close()


def _gated_setup(path: str, *args: object) -> None:
    """A decode worker's start call that first blocks on the test's FIFO (the ``gate``
    fixture): imported by reference in the worker, from this module."""
    os.close(os.open(path, os.O_RDONLY))
    decode_pool._setup(*args)  # type: ignore[arg-type]


def _gated_pool(gate, sends: list[int]) -> type[DecodePool]:  # type: ignore[no-untyped-def]
    """A DecodePool whose workers block in their start on the test's FIFO (the ``gate``
    fixture) and that notes the size of every chunk it is sent in ``sends``."""

    class Gated(DecodePool):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self._init = (_gated_setup, (str(gate.path), *self._init[1]))

        def send(self, records):  # type: ignore[no-untyped-def]
            sends.append(len(records))
            return super().send(records)

    return Gated


def test_chunks_are_decoded_here_while_the_workers_boot(
    config: Config, gate, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The workers boot from half the warm-up on; chunks after the warm-up are decoded
    in process until they are up (not waited for), then go to them, with the same
    items either way."""
    from mitigate.pipeline import process

    sends: list[int] = []
    Gated = _gated_pool(gate, sends)

    monkeypatch.setattr(process, "DecodePool", Gated)
    filters = [f.config for f in _pixel_filters(config)]
    fn = process.Decode(filters, config.decode, processes=(2, 8))
    fn.setup()
    records = _records(24)
    chunks = [records[k : k + 4] for k in range(0, 24, 4)]
    try:
        got = [item.record for item in fn.process((0, chunks[0]))]  # 0 seen: here
        assert fn._pool is None
        got += [item.record for item in fn.process((1, chunks[1]))]  # 4 seen: boot
        assert fn._pool is not None and fn._pool.booting() and sends == []
        for k in (2, 3):  # 8, 12 seen: past the warm-up, the workers still blocked
            got += [item.record for item in fn.process((k, chunks[k]))]
        assert sends == [] and fn._pool.booting() and not gate.opened
        gate.open()
        for w in fn._pool._workers:
            w.ready()
        for k in (4, 5):
            got += [item.record for item in fn.process((k, chunks[k]))]
        got += [wv.value.record for wv in fn.finish_bundle()]  # the last chunk, held
        assert sends == [4, 4]
    finally:
        fn.teardown()
    assert got == [item.record for item in _in_process(_payloads(records), config)]


def test_an_isolated_decode_sends_every_chunk_also_while_its_worker_boots(
    config: Config, gate, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``decode.isolate`` with one process: no chunk is decoded in the Beam worker, not
    even while the decode worker is still blocked in its start (the chunk waits in its
    pipe); the items are those of the in-process decode."""
    from mitigate.pipeline import process

    sends: list[int] = []
    Gated = _gated_pool(gate, sends)

    def not_here(self, records):  # type: ignore[no-untyped-def]
        raise AssertionError("a chunk was decoded in the Beam worker")

    monkeypatch.setattr(process, "DecodePool", Gated)
    monkeypatch.setattr(process.Decode, "_here", not_here)
    filters = [f.config for f in _pixel_filters(config)]
    fn = process.Decode(filters, config.decode, processes=(1, 0), isolate=True)
    fn.setup()
    records = _records(12)
    try:
        got = [item.record for item in fn.process((0, records[:4]))]
        assert sends == [4] and fn._pool.booting() and not gate.opened and got == []
        gate.open()
        got += [item.record for item in fn.process((1, records[4:8]))]
        got += [item.record for item in fn.process((2, records[8:]))]
        got += [wv.value.record for wv in fn.finish_bundle()]
        assert sends == [4, 4, 4]
    finally:
        fn.teardown()
    assert got == [item.record for item in _in_process(_payloads(records), config)]


def _loaded(names: list[str]) -> list[str]:
    """Which of ``names`` a worker has imported (called in the worker, by reference)."""
    return [name for name in names if name in sys.modules]


def test_a_worker_is_up_with_the_decode_kernels_loaded(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker's start call decodes two small images, so numba and the compiled
    kernels load while it boots (the Beam worker decodes meanwhile), not in its first
    chunk; a warm-up that fails leaves the start to succeed and the chunks to report."""
    pool = DecodePool(1, config.decode, [], keep_images=False, opener=open_read)
    try:
        pool.start()
        (worker,) = pool._workers
        worker.ready()
        kernels = ["numba", "mitigate._sigkernel"]
        assert worker.call(_loaded, kernels) == kernels
    finally:
        pool.close()
    called: list[str] = []
    monkeypatch.setattr(
        "mitigate.decode.decode_images", lambda *a, **k: called.append("x") or 1 / 0
    )
    decode_pool._setup(config.decode, [], False, open_read)  # no exception
    assert called == ["x"]


@pytest.mark.parametrize(
    ("processes", "total", "pool"),
    [
        ((2, 4), decode_pool.AUTO_MIN_SAMPLES - 1, False),  # auto, one sample short
        ((2, 4), decode_pool.AUTO_MIN_SAMPLES, True),
        ((2, 4), None, True),  # the run's size unknown (no side input): as before
        ((2, 0), 8, True),  # a number: the pool whatever the size
    ],
)
def test_auto_starts_a_pool_only_for_a_run_large_enough(
    config: Config, processes: tuple[int, int], total: int | None, pool: bool
) -> None:
    """``decode.processes: auto`` decodes a run of fewer than AUTO_MIN_SAMPLES input
    samples in the Beam worker alone (a pool's start and pipes cost small runs more than
    it gains, BENCHMARKS.md); a number of processes always starts them."""
    from mitigate.pipeline import process

    filters = [f.config for f in _pixel_filters(config)]
    records = _records(12)
    fn = process.Decode(filters, config.decode, processes=processes)
    fn.setup()
    try:
        got = []
        for k in range(3):
            got += [item.record for item in fn.process((k, records[4 * k : 4 * k + 4]), total)]
        got += [wv.value.record for wv in fn.finish_bundle()]
        assert (fn._pool is not None) == pool
    finally:
        fn.teardown()
    assert got == [item.record for item in _in_process(_payloads(records), config)]


# --------------------------------------------------------------------------------------
# Workers booted before the pipeline (prestart_for), chunks queued behind a chunk in flight
# --------------------------------------------------------------------------------------


@pytest.fixture
def no_prestarted():
    """Leaves no booted worker behind for the next test, whatever this one did."""
    yield
    decode_pool.close_prestarted()


def _pids(workers_: list) -> list[int]:
    return [w.proc.pid for w in workers_]


def test_prestart_for_boots_workers_only_where_a_local_run_will_start_a_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_prestarted
) -> None:
    monkeypatch.setattr(decode_pool, "usable_cores", lambda: 2)
    sources = [str(p) for p in SAMPLE]
    two, _ = load_config(DEFAULT, ["decode.processes=2"])
    assert decode_pool.prestart_for(two, sources, extra_beam_args=True) == 0  # flags may change it
    assert decode_pool.prestart_for(two, sources) == 2  # a number: whatever the input
    assert decode_pool.prestart_for(two, sources) == 2  # once: the same workers
    assert len(decode_pool._prestarted) == 1
    assert decode_pool.close_prestarted() == 2 and decode_pool._prestarted == []
    one, _ = load_config(DEFAULT, ["decode.processes=1"])
    assert decode_pool.prestart_for(one, sources) == 0
    auto, _ = load_config(DEFAULT, ["filters=[{name: image_quality}]", "rebalance.enabled=false"])
    assert auto.decode.processes == "auto"
    assert sum(map(os.path.getsize, sources)) < decode_pool.PRESTART_MIN_BYTES
    assert decode_pool.prestart_for(auto, sources) == 0  # the bundled sample: too small
    monkeypatch.setattr(decode_pool, "PRESTART_MIN_BYTES", 1)
    table = tmp_path / "rows.parquet"
    table.write_bytes(b"x" * 10)
    assert decode_pool.prestart_for(auto, [*sources, str(table)]) == 0  # a table's samples
    assert decode_pool.prestart_for(auto, [*sources, "gs://b/s.tar"]) == 0  # remote
    upper = tmp_path / "SHARD.TAR"  # a shard by its extension, whatever its case
    upper.write_bytes(b"x" * 10)
    assert decode_pool.prestart_for(auto, [*sources, str(upper)]) == 2
    assert decode_pool.close_prestarted() == 2
    several, _ = load_config(DEFAULT, ["runner.direct_num_workers=2"])
    assert decode_pool.prestart_for(several, sources) == 0  # several Beam workers
    models, _ = load_config(DEFAULT, [])
    assert any(f.name == "nsfw" for f in models.filters)
    assert decode_pool.prestart_for(models, sources) == 0  # inference takes the cores
    assert decode_pool.prestart_for(auto, sources) == 2
    ((args, booted),) = decode_pool._prestarted
    assert args == (*decode_pool.pool_args(auto.decode, auto.filters), open_read)
    assert decode_pool.close_prestarted() == 2
    assert all(w.proc.wait(timeout=10) is not None for w in booted)


def test_a_pool_takes_the_workers_booted_for_its_arguments_and_no_others(
    config: Config, no_prestarted
) -> None:
    filters = [f.config for f in _pixel_filters(config)]
    assert decode_pool.prestart(2, config.decode, filters, keep_images=False, opener=open_read)
    ((_, booted),) = decode_pool._prestarted
    other = DecodePool(2, config.decode, filters, keep_images=True, opener=open_read)
    assert not other.prestarted and other._workers == [None, None]
    other.close()
    assert decode_pool.has_prestarted(config.decode, filters, False, open_read)
    pool = DecodePool(2, config.decode, filters, keep_images=False, opener=open_read)
    try:
        assert pool.prestarted and _pids(pool._workers) == _pids(booted)
        assert not decode_pool.has_prestarted(config.decode, filters, False, open_read)
        records = _records()
        items, _ = pool.run(records)
        assert _pids(pool._workers) == _pids(booted)  # no worker started besides
    finally:
        pool.close()
    assert [i.record for i in items] == [i.record for i in _in_process(_payloads(records), config)]
    assert decode_pool.close_prestarted() == 0  # the pool took them all


def _ready_pool(decode: DecodeConfig, config: Config) -> tuple[DecodePool, list[workers.Worker]]:
    """A two-worker pool with the config's pixel filters, its workers up (a test hook's
    variable must be set before: the workers inherit the environment at their start)."""
    filters = [f.config for f in _pixel_filters(config)]
    pool = DecodePool(2, decode, filters, keep_images=False, opener=open_read)
    pool.start()
    workers = [w for w in pool._workers if w is not None]
    for worker in workers:
        worker.ready()
    return pool, workers


def test_a_chunk_queued_behind_another_comes_back_in_order_and_a_crash_costs_one_sample(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two tickets in flight: each worker holds a share of the first and one of the
    second queued in its pipe. The first worker dies on a sample of the first ticket:
    that sample becomes a decode_error, and its share of the second, lost with it, is
    decoded again on the worker that replaced it."""
    records = _records(12)
    payloads = _payloads(records)
    expected = _in_process(payloads, config)
    victim = next(t for t in range(3) if expected[t].image is not None)  # first share
    monkeypatch.setenv(decode_pool._CRASH_ENV, hashlib.sha256(payloads[victim][1]).hexdigest())
    pool, first_workers = _ready_pool(config.decode, config)
    try:
        assert pool.fits_ahead(records[6:])
        first = pool.send(records[:6])
        second = pool.send(records[6:])  # before the first is received
        assert first.sent == second.sent == first_workers
        items = pool.receive(first)[0] + pool.receive(second)[0]
        assert pool.crashed == 1
        assert pool._workers[0] is not first_workers[0] and pool._workers[1] is first_workers[1]
    finally:
        pool.close()
    bad = items[victim].record
    assert bad.state == ERROR and "SIGSEGV" in bad.detail
    assert [i.record for t, i in enumerate(items) if t != victim] == [
        i.record for t, i in enumerate(expected) if t != victim
    ]


def test_a_sample_whose_decode_hangs_is_stopped_at_the_time_limit_and_costs_itself_only(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``decode.timeout``: a worker that does not reply within the limit (here, the test
    hook's minute-long sleep on one image, as a decoder spinning on a hostile image would)
    is killed; its share, and the share of the next chunk queued behind it, are decoded
    again one sample at a time, and the image it hung on becomes a decode_error that
    names the limit. Every other sample is what the in-process decode gives."""
    records = _records(12)
    payloads = _payloads(records)
    expected = _in_process(payloads, config)
    victim = next(t for t in range(3, 6) if expected[t].image is not None)  # first ticket
    monkeypatch.setenv(decode_pool._HANG_ENV, hashlib.sha256(payloads[victim][1]).hexdigest())
    pool, first_workers = _ready_pool(config.decode.model_copy(update={"timeout": 1.5}), config)
    try:
        started = time.perf_counter()
        first = pool.send(records[:6])
        second = pool.send(records[6:])
        items = pool.receive(first)[0] + pool.receive(second)[0]
        took = time.perf_counter() - started
        assert pool.crashed == 1
        assert pool._workers[1] is not first_workers[1] and pool._workers[0] is first_workers[0]
        assert first_workers[1].stopped_after == 1.5 and first_workers[1].proc.returncode < 0
    finally:
        pool.close()
    assert took < 30  # two limits and a worker's boot, not the hook's minute
    bad = items[victim].record
    assert bad.state == ERROR and bad.reason == Reason.DECODE_ERROR
    assert "took more than decode.timeout (1.5 s)" in bad.detail
    assert bad.sha256 == hashlib.sha256(payloads[victim][1]).hexdigest()
    assert [i.record for t, i in enumerate(items) if t != victim] == [
        i.record for t, i in enumerate(expected) if t != victim
    ]


def test_a_chunk_waits_for_the_one_in_flight_where_its_request_would_not_fit_the_pipe(
    config: Config,
) -> None:
    """A request queued in a worker's pipe behind a call in flight must fit the pipe: the
    worker does not read while it writes a reply, and a caller blocked writing would
    never read that reply."""
    pool = DecodePool(2, config.decode, [], keep_images=False, opener=open_read)
    try:
        pool.start()
        records = _records(8)
        assert all(w.pipe_size >= 65536 and w.room() == w.pipe_size // 4 for w in pool._workers)
        request = len(pool._requests(records)[1])
        assert pool.fits_ahead(records)
        pool._workers[1].pipe_size = 4 * request  # room for it exactly
        assert pool.fits_ahead(records)
        pool._workers[1].pipe_size = 4 * (request - 1)  # one byte short, for one worker
        assert not pool.fits_ahead(records)
    finally:
        pool.close()


def test_the_decode_step_keeps_one_chunk_in_flight_and_emits_every_item_in_order(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Decode`` hands chunk k+1 to the pool before it receives chunk k (where the
    request fits), and ``finish_bundle`` emits the last chunk; without room, each chunk
    is received before the next is sent. The items are the same either way."""
    from mitigate.pipeline import process

    filters = [f.config for f in _pixel_filters(config)]
    records = _records(16)
    expected = [i.record for i in _in_process(_payloads(records), config)]
    here = process.Decode._here

    def waiting(self, records):  # type: ignore[no-untyped-def]
        items = here(self, records)  # the first chunk: the workers are up by its end
        for w in self._pool._workers if self._pool is not None else []:
            w.ready()
        return items

    monkeypatch.setattr(process.Decode, "_here", waiting)
    in_flight: list[int] = []  # tickets sent and not received, after each send
    send, receive = DecodePool.send, DecodePool.receive

    def counted_send(self, records):  # type: ignore[no-untyped-def]
        ticket = send(self, records)
        in_flight.append(in_flight[-1] + 1 if in_flight else 1)
        return ticket

    def counted_receive(self, ticket):  # type: ignore[no-untyped-def]
        in_flight.append(in_flight[-1] - 1)
        return receive(self, ticket)

    monkeypatch.setattr(DecodePool, "send", counted_send)
    monkeypatch.setattr(DecodePool, "receive", counted_receive)
    for room in (True, False):
        in_flight.clear()
        monkeypatch.setattr(DecodePool, "fits_ahead", lambda self, r, room=room: room)
        fn = process.Decode(filters, config.decode, processes=(2, 0))
        fn.setup()
        try:
            got = []
            for k in range(4):
                got += [i.record for i in fn.process((k, records[4 * k : 4 * k + 4]))]
            got += [wv.value.record for wv in fn.finish_bundle()]
        finally:
            fn.teardown()
        assert got == expected
        assert fn._tickets == []
        # the first chunk is decoded here while the workers boot; the next three go to
        # the pool, the last received in finish_bundle
        assert in_flight == ([1, 2, 1, 2, 1, 0] if room else [1, 0, 1, 0, 1, 0])


@pytest.mark.slow
def test_the_cli_boots_a_local_runs_decode_workers_before_it_imports_beam(tmp_path: Path) -> None:
    probe = textwrap.dedent(
        f"""
        import json, sys
        from mitigate import decode_pool
        calls = []
        real = decode_pool.prestart_for
        def recording(*args, **kwargs):
            started = real(*args, **kwargs)
            calls.append([started, "apache_beam" in sys.modules])
            return started
        decode_pool.prestart_for = recording
        from mitigate.cli import main
        code = main(["run", "--config", "configs/default.yaml", "--output", {str(tmp_path / "o")!r},
                     "--set", "decode.processes=2", "--set", "rebalance.enabled=false",
                     "--set", "filters=[{{name: image_quality}}]"])
        print(json.dumps([code, calls]))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    code, calls = json.loads(proc.stdout.strip().splitlines()[-1])
    # the CLI's, before Beam; run()'s finds them booted
    assert code == 0 and calls == [[2, False], [2, True]]


def test_isolation_is_on_wherever_a_crash_would_take_a_cloud_worker_down() -> None:
    from mitigate.config import DecodeConfig, RunnerConfig

    runners = {
        "direct": RunnerConfig(),
        "dataflow": RunnerConfig(
            name="dataflow", project="p", region="r", temp_location="gs://b/t"
        ),
        "portable": RunnerConfig(name="portable", job_endpoint="localhost:8099"),
    }
    auto = {name: decode_pool.plan_isolation(DecodeConfig(), r) for name, r in runners.items()}
    assert auto == {"direct": False, "dataflow": True, "portable": True}
    for value in (True, False):
        decode = DecodeConfig(isolate=value)
        assert {decode_pool.plan_isolation(decode, r) for r in runners.values()} == {value}


@pytest.mark.slow
@pytest.mark.parametrize(
    "settings",
    [["decode.processes=2"], ["decode.processes=1", "decode.isolate=true"]],
    ids=["two-processes", "isolated-one-process"],
)
def test_a_sample_that_crashes_its_decode_worker_in_a_run_is_one_decode_error_and_the_run_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: list[str]
) -> None:
    """A whole run with two decode processes, booted before the pipeline, chunks queued
    behind each other, or with one isolated decode process (``decode.isolate``: no
    chunk decoded in the Beam worker, whose crash would end the run): the sample whose
    decoding kills its worker becomes one decode_error in the manifest, every other
    input sample has its one row, and the summary's conservation check holds."""
    import pyarrow.dataset as ds

    from mitigate.pipeline.run import run

    def booting(self) -> bool:  # every chunk to the pool: wait for its workers once
        for worker in self._workers:
            if worker is not None:
                worker.ready()
        return False

    monkeypatch.setattr(DecodePool, "booting", booting)
    records = [r for path in SAMPLE for r in _records_of(path)]
    payloads = _payloads(records)
    shas = [hashlib.sha256(d).hexdigest() if d is not None else None for _, d in payloads]
    victim, data = next(
        (r, d)
        for (r, d), sha in list(zip(payloads, shas, strict=True))[len(payloads) // 2 :]
        if d is not None and shas.count(sha) == 1  # no exact copy of it crashes too
    )

    def manifest(crash: bool) -> tuple[dict, list[dict]]:
        if crash:
            monkeypatch.setenv(decode_pool._CRASH_ENV, hashlib.sha256(data).hexdigest())
        out = tmp_path / f"crash-{crash}"
        cfg, _ = load_config(DEFAULT, [f"output.path={out}", *settings])
        summary = run(cfg)
        return summary, ds.dataset(out / "manifest", format="parquet").to_table().to_pylist()

    _, clean = manifest(crash=False)
    summary, rows = manifest(crash=True)
    assert sorted(r["key"] for r in rows) == sorted(r.key for r in records)  # one row each
    (bad,) = [r for r in rows if r["key"] == victim.key]
    assert (bad["state"], bad["reason"]) == (ERROR, Reason.DECODE_ERROR)
    assert "crashed" in bad["detail"] and "SIGSEGV" in bad["detail"]
    assert bad["sha256"] == hashlib.sha256(data).hexdigest()
    (was,) = [r for r in clean if r["key"] == victim.key]
    assert was["state"] != ERROR  # decoded in the run without the crash
    decode_errors = {r["key"] for r in clean if r["reason"] == Reason.DECODE_ERROR}
    assert {r["key"] for r in rows if r["reason"] == Reason.DECODE_ERROR} == {
        *decode_errors,
        victim.key,
    }
    assert summary["input_count"] == len(records) == summary["manifest_rows"]


def _records_of(path: Path) -> list:
    """The samples of a shard (its source issues left out)."""
    with open(path, "rb") as f:
        found = index_tar(f, str(path), max_image_bytes=10**8)
        return [r for r in found if isinstance(r, SampleRecord)]
