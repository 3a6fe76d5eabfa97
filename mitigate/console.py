"""What a run shows in the terminal: live progress while it goes, one line on Ctrl-C,
and the summary tables at the end (``mitigate.cli`` uses these for run and redecide)."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from mitigate.text import terminal_text

if TYPE_CHECKING:
    from mitigate.config import Config

# Exit status for Ctrl-C (the others are in mitigate.cli).
EXIT_INTERRUPTED = 130

#: Temporary folders this process's Beam pipelines made (``Pipeline.local_tempdir``,
#: which only ``Pipeline.run`` removes, at its end): removed on Ctrl-C too, which ends
#: the process before that (:func:`interruptible`).
TEMP_DIRS: list[str] = []


#: The folders this process's run made for its output (the output folder and the
#: parents that were not there), innermost first: an interrupted run removes those
#: left empty, as a failed one does (``pipeline.run._staged``).
MADE_DIRS: list[str] = []


def own_temp_dir(path: str) -> None:
    """Note a temporary folder of this process's pipeline for :func:`interruptible`."""
    TEMP_DIRS.append(path)


#: A signal that came during :func:`uninterrupted` (acted on at its end), and whether
#: one is in progress.
_DEFERRED: dict[str, Any] = {"active": False, "signal": None}


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """The swap of a finished run's output into its folder: a Ctrl-C or SIGTERM that
    comes meanwhile takes effect after it (the folder then holds the new result whole;
    stopped halfway, it held parts of two runs: found by helper-32)."""
    _DEFERRED["active"] = True
    try:
        yield
    finally:
        _DEFERRED["active"] = False
        deferred, _DEFERRED["signal"] = _DEFERRED["signal"], None
        if deferred is not None:
            _DEFERRED["swapped"] = True
            deferred()


@contextlib.contextmanager
def interruptible(out: str) -> Iterator[None]:
    """Ctrl-C (or SIGTERM: ``kill``, ``docker stop``, a CI timeout) during a run: one
    line, exit 130 (143), at once. Beam's runner threads and
    worker processes do not unwind on KeyboardInterrupt (the main thread can sit in a
    wait that never sees it, and each thread prints its own traceback), so the handler
    removes this run's staging folder and lock (what a later run would otherwise clean
    up as a crashed run's) and Beam's temporary folders (:data:`TEMP_DIRS`), and ends
    the process. Nothing under a final name is touched:
    the output folder keeps the previous result, if any (during the final swap the
    signal waits for it: :func:`uninterrupted`)."""
    import shutil
    import signal

    def stop(signum: int, frame: Any) -> None:
        if _DEFERRED["active"]:
            _DEFERRED["signal"] = lambda: stop(signum, frame)
            return
        what = b"terminated" if signum == signal.SIGTERM else b"interrupted"
        if _DEFERRED.pop("swapped", False):
            what += b" after the run's complete output was swapped into " + os.fsencode(out)
        with contextlib.suppress(Exception):
            os.write(2, b"mitigate: " + what + b"\n")
        with contextlib.suppress(Exception):  # Beam's worker processes wrote on into the
            _kill_children()  # staging folder after it was removed (helper-42)
        with contextlib.suppress(Exception):
            _remove_own_staging(out)
        with contextlib.suppress(Exception):
            os.unlink(os.environ["MITIGATE_PROGRESS_FILE"])
        for path in TEMP_DIRS:
            with contextlib.suppress(Exception):
                shutil.rmtree(path)
        for folder in MADE_DIRS:  # empty once its staging and lock are gone
            with contextlib.suppress(Exception):
                os.rmdir(folder)
        os._exit(EXIT_INTERRUPTED if signum == signal.SIGINT else 128 + signum)

    try:
        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread (an embedding caller): leave it alone
        yield
        return
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        TEMP_DIRS.clear()  # the run's own: Pipeline.run has removed them by now


def _kill_children() -> None:
    """SIGKILL this process's child processes (Beam's SDK workers, decode workers),
    found in ``/proc`` (nothing elsewhere: they end with their connection)."""
    import signal

    me = str(os.getpid())
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError):
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read().decode("ascii", "replace")
            # pid (comm) state ppid ...: comm may hold spaces and parentheses
            if stat[stat.rindex(")") + 2 :].split()[1] == me:
                os.kill(int(entry), signal.SIGKILL)


def _remove_own_staging(out: str) -> None:
    """Delete the staging folders and the lock of the run this process holds in a
    local ``out`` (no other run can have staging there while we hold the lock)."""
    import json
    import shutil

    from mitigate.pipeline import outdir

    if "://" in out:
        return
    lock = Path(out) / outdir.LOCK
    try:
        holder = json.loads(lock.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if not isinstance(holder, dict) or holder.get("pid") != os.getpid():
        return
    for child in Path(out).iterdir():
        if child.name.startswith(outdir.STAGING_PREFIX):
            shutil.rmtree(child, ignore_errors=True)
    lock.unlink(missing_ok=True)


def _stderr_width() -> int:
    """The terminal's width as stderr sees it (stdout may be piped), resized live."""
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns
    except (OSError, ValueError):
        return 80


@contextlib.contextmanager
def live_progress(config: Config, sources: list[str]) -> Iterator[None]:
    """Samples done/total, rate, ETA and per-state counts on stderr while a run goes
    (see :mod:`mitigate.progress`): one redrawn line in a terminal, plain lines
    otherwise. Remote runners' workers cannot reach the file; they get a note."""
    import tempfile

    from mitigate.progress import LiveProgress, ProgressRenderer

    terminal = sys.stderr.isatty()
    renderer = ProgressRenderer(
        sys.stderr,
        terminal=terminal,
        sources=len(sources),
        where=f"-> {config.output.path}",
        width=_stderr_width,
    )
    # Dask's workers were started before this run set the variable: remote, here.
    if config.runner.name != "direct" and not (
        config.runner.name == "portable" and config.runner.environment_type == "LOOPBACK"
    ):
        from mitigate import progress

        if config.runner.name != "dataflow":
            print(
                f"mitigate: {config.runner.name} runner: live counts need workers on this "
                "machine; the summary follows at the end",
                file=sys.stderr,
            )
        with progress.listening(lambda text: print(f"mitigate: {text}", file=sys.stderr)):
            yield
        return
    fd, path = tempfile.mkstemp(prefix="mitigate-progress-", suffix=".txt")
    os.close(fd)
    with LiveProgress(renderer, path):
        yield


def stdout_console() -> Any:
    """A rich console on stdout whose reader going away (``mitigate run | head``) raises
    BrokenPipeError, which :func:`mitigate.cli.main` takes as no error: rich's own
    handling raised ``SystemExit(1)``, a finished run exiting 1 with no word."""
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            raise BrokenPipeError

    return _Console()


class TerminalText(logging.Filter):
    """Log lines with a terminal's escapes shown as their codes (an input file named
    with ESC ] 0 set the terminal's title from a warning: helper-44)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        shown = terminal_text(message)
        if shown != message:
            record.msg, record.args = shown, None
        return True


def print_summary(summary: dict[str, Any], console: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    total = summary["input_count"]
    table = Table(title=f"mitigate: {total} input samples", title_justify="left")
    table.add_column("state")
    table.add_column("reason")
    table.add_column("count", justify="right")
    table.add_column("share", justify="right")
    for state, entry in summary["counts"].items():
        share = f"{entry['total'] / total:.1%}" if total else "-"
        table.add_row(f"[bold]{state}[/]", "", str(entry["total"]), share)
        for reason, n in entry["reasons"].items():
            table.add_row("", reason, str(n), f"{n / total:.1%}" if total else "-")
    console.print(table)
    for issue in summary.get("source_issues", []):  # names from the data: shown, not acted on
        where = escape(terminal_text(f"{issue['source']}: {issue['reason']}: {issue['detail']}"))
        console.print(f"[yellow]source issue[/] {where}")
    if "rebalance" in summary:
        print_bias_table(summary["rebalance"], console)
    run = summary.get("run", {})
    console.print(
        f"{len(summary['shards'])} shard(s) written; "
        f"{run.get('wall_seconds', 0):.1f} s, {run.get('samples_per_second', 0):.1f} samples/s"
    )


def print_bias_table(report: dict[str, Any], console: Any) -> None:
    """Probe-term frequencies: unfiltered / kept / kept and reweighted (the DALL·E 2 table)."""
    from rich.table import Table

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value:.2%}"

    def change(value: float | None) -> str:
        return "" if value is None else f" ({value:+.1%})"

    table = Table(title="rebalancing: probe-term frequency", title_justify="left")
    for col in ("probe", "unfiltered", "kept", "kept, reweighted"):
        table.add_column(col, justify="left" if col == "probe" else "right")
    # calibrated groups first (their reweighted share is imposed), then the held-out
    # probes (whose reweighted share shows whether the correction generalises)
    rows = sorted(report["probes"].items(), key=lambda kv: not kv[1].get("calibrated"))
    for group, row in rows:
        table.add_row(
            group + (" (calibrated)" if row.get("calibrated") else ""),
            pct(row["unfiltered"]),
            pct(row["filtered"]) + change(row["change_filtered"]),
            pct(row["reweighted"]) + change(row["change_reweighted"]),
        )
    console.print(table)
    cal = report.get("calibration")
    if cal:
        if cal.get("error"):
            console.print(f"[yellow]calibration not applied: {cal['error']}[/yellow]")
        else:
            console.print(
                f"calibrated to unfiltered shares: {', '.join(cal['groups'])} (max error "
                f"{cal['max_abs_share_error']:.1e}); held-out probes: "
                f"{', '.join(cal['held_out_probes']) or 'none'}"
            )
    for text in report.get("warnings", []):
        console.print(f"[yellow]warning: {text}[/yellow]")
    w = report["weights"]
    if w["n"]:
        console.print(
            f"weights: {w['n']} kept, mean {w['mean']:.3f}, range {w['min']:.3f}..{w['max']:.3f}, "
            f"effective sample size {w['effective_sample_size']:.0f} "
            f"({w['ess_fraction']:.1%}); mode {report['mode']}"
        )


def exit_now(code: int) -> NoReturn:
    """End the process as the interpreter's exit would, less its teardown: other
    threads that are not daemons finish, exit handlers run, stdout and stderr are
    flushed, then ``os._exit`` (:func:`mitigate.cli.entry`)."""
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a reader gone (`| head`)
            stream.flush()
    os._exit(code)


class RunFailed(Exception):
    """A run that had started failed (exit status 1, whatever the underlying error)."""


@contextlib.contextmanager
def runtime() -> Iterator[None]:
    """Errors past this point are runtime failures (1), not usage errors (2), even a
    ValueError from deep inside a run; config errors found late (the output folder
    locked by a run that started meanwhile) stay config errors."""
    from mitigate.config import ConfigError

    try:
        yield
    except (ConfigError, KeyboardInterrupt):
        raise
    except Exception as exc:
        raise RunFailed(f"{type(exc).__name__}: {_cause(str(exc))}") from exc


_CAUSE_LINE = re.compile(r"[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b.*")


def _cause(message: str) -> str:
    """A failure's message; where it is a worker's traceback as text (Beam's error from
    a second worker: "Traceback (most recent call last): ..."), its last error line
    (``OSError: [Errno 28] No space left on device [while running 'WriteShards']``)."""
    if not message.lstrip().startswith("Traceback"):
        return message
    causes = [line.strip() for line in message.splitlines() if _CAUSE_LINE.fullmatch(line.strip())]
    return causes[-1] if causes else message


def one_line(exc: BaseException) -> str:
    """The message of an error, never a bare errno (``FileNotFoundError(2, ...)``)."""
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    if isinstance(exc, UnicodeError):  # its first argument is the codec's name alone
        return str(exc)
    if exc.args and isinstance(exc.args[0], str):
        return exc.args[0]
    return str(exc) or type(exc).__name__
