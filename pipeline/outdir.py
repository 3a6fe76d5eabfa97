"""The output folder's life cycle: a lock, a staging folder, and a swap at the end.

A run never writes under a final name until it has finished. It writes everything into
a hidden staging folder inside the output folder, and only when the run is complete
moves the previous run's entries aside and the new ones in (``summary.json`` last,
since its presence marks a complete run), then deletes the old ones. So:

* a run that is killed or fails leaves the previous complete result untouched, plus a
  hidden staging folder that the next run in that folder removes;
* ``--overwrite`` deletes only what the previous run's ``summary.json`` lists as its
  outputs, never a file the pipeline did not create (a user's own ``config.yaml``);
* two runs into one folder cannot interleave: a lock file (pid, host, start time)
  refuses the second while the first is alive, and a lock left by a dead process on
  this host is taken over.

Locking needs a local folder; object stores (gs://, s3://) have no atomic create, so a
run there is not locked (a warning says so) but still staged and swapped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from mitigate import layout
from mitigate.config import ConfigError, OutputInUse
from mitigate.pipeline import fs

log = logging.getLogger(__name__)

# Every top-level entry a run may write, summary.json last (it marks completeness).
OUTPUT_NAMES = layout.OUTPUT_NAMES
SUMMARY = layout.SUMMARY
LOCK = ".mitigate.lock"
STAGING_PREFIX = ".mitigate-staging-"
OLD_PREFIX = ".mitigate-old-"


def _local(path: str) -> bool:
    return "://" not in path


def previous_outputs(out: str) -> list[str] | None:
    """Names a previous complete run in ``out`` wrote (from its summary), or None."""
    summary = fs.join(out, SUMMARY)
    if not fs.exists(summary):
        return None
    try:
        loaded = json.loads(fs.read_bytes(summary))
    except (OSError, ValueError):
        return None  # not a summary a run wrote: its folder is not a run's
    if not isinstance(loaded, dict) or not _RUN_SUMMARY_KEYS <= loaded.keys():
        return None  # another tool's summary.json (e.g. {"accuracy": 0.91})
    listed = loaded.get("outputs")
    if not isinstance(listed, list):  # written before summaries listed their outputs
        listed = [*OUTPUT_NAMES, SUMMARY]
    return [n for n in listed if n in (*OUTPUT_NAMES, SUMMARY)]


#: Keys every run's summary.json has: a folder whose summary.json lacks one is no run's.
_RUN_SUMMARY_KEYS = frozenset({"input_count", "counts", "conservation"})

#: The files a run writes inside its folders (path below the folder): --overwrite
#: replaces those folders whole, so any other file in one stops it.
_RUN_FILES = {
    layout.SHARDS: re.compile(r"shard-[0-9_-]+\.tar"),
    layout.MANIFEST: re.compile(r"part-[0-9_]+\.parquet"),
    layout.EMBEDDINGS: re.compile(r"[^/]+/part-[0-9_]+\.npy"),
    layout.QUARANTINE: re.compile(r"[a-z0-9_]+/shard-[0-9_-]+\.tar"),
}


def foreign_files(out: str, names: list[str]) -> list[str]:
    """Files inside the run folders ``names`` of a local ``out`` that no run writes
    (a user's README.md in shards/), as paths below ``out``."""
    found = []
    for name in names:
        pattern = _RUN_FILES.get(name)
        top = os.path.join(out, name)
        if pattern is None or not _local(out) or not os.path.isdir(top):
            continue
        for folder, _, files in os.walk(top):
            for file in files:
                below = os.path.relpath(os.path.join(folder, file), top).replace(os.sep, "/")
                if not pattern.fullmatch(below):
                    found.append(f"{name}/{below}")
    return sorted(found)


def _read_only(path: str) -> bool:
    """Whether ``path`` lies on a file system mounted read-only."""
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def check_output(out: str, overwrite: bool, protected: list[str] = ()) -> None:
    """Refuse, before any work, an output folder the run must not write into.

    ``protected`` are files the run reads (the --config file, its inputs): never
    replaced, nor any file inside a folder the run replaces (an input shard that is
    the previous run's output shard).
    """
    if _local(out):
        if os.path.exists(out) and not os.path.isdir(out):
            raise ConfigError([f"output.path: {out} is a file, not a folder"])
        probe = out
        while not os.path.exists(probe):
            probe = os.path.dirname(probe) or "."
        if not os.path.isdir(probe):  # out/sub where out is a file
            raise ConfigError([f"output.path: {out} lies under {probe}, which is a file"])
        if not os.access(probe, os.W_OK | os.X_OK):
            why = "a read-only file system" if _read_only(probe) else "no write permission"
            raise ConfigError([f"output.path: {out} is not writable ({why} on {probe})"])
        _creatable(out, probe)
    for path in protected:
        for name in (*OUTPUT_NAMES, SUMMARY):
            target = os.path.abspath(os.path.join(out, name))
            read = os.path.abspath(path)
            if (
                _local(out)
                and _local(path)
                and (read == target or read.startswith(target + os.sep))
            ):
                raise ConfigError(
                    [
                        f"output.path: the run would replace {path}, which it reads; "
                        "choose another folder"
                    ]
                )
    previous = previous_outputs(out)
    ours = set(previous or [])
    foreign = [n for n in (*OUTPUT_NAMES, SUMMARY) if n not in ours and fs.exists(fs.join(out, n))]
    if foreign:
        raise ConfigError(
            [
                f"output.path: {out} already holds {', '.join(foreign)}, not written by a "
                "mitigate run (no run's summary.json lists it); choose an empty folder or move it"
            ]
        )
    if previous and not overwrite:
        raise ConfigError(
            [
                f"output.path: {out} holds a previous run ({fs.join(out, SUMMARY)}); "
                "choose another folder or pass --overwrite"
            ]
        )
    stray = foreign_files(out, previous or [])
    if stray:
        shown = ", ".join(stray[:3]) + (f" and {len(stray) - 3} more" if len(stray) > 3 else "")
        raise ConfigError(
            [
                f"output.path: {out} holds {shown} inside a previous run's folders, which no "
                "run writes: --overwrite replaces those folders whole; move them first"
            ]
        )


def _creatable(out: str, parent: str) -> None:
    """Whether ``out`` can be made below its nearest existing folder ``parent``, without
    making it (``validate`` leaves nothing behind): a folder made and removed there
    (refused in /proc, /sys, a read-only mount), each missing name within the file
    system's name length. Found here, not after the work."""
    import tempfile

    try:
        os.rmdir(tempfile.mkdtemp(prefix=".mitigate-probe-", dir=parent))
        longest = os.pathconf(parent, "PC_NAME_MAX")
    except OSError as exc:
        raise ConfigError([f"output.path: cannot create {out}: {exc.strerror}"]) from None
    missing = os.path.relpath(os.path.abspath(out), os.path.abspath(parent)).split(os.sep)
    too_long = [n for n in missing if n != "." and len(os.fsencode(n)) > longest]
    if too_long:
        raise ConfigError(
            [
                f"output.path: cannot create {out}: the name {too_long[0][:40]!r}... is over "
                f"{longest} bytes"
            ]
        )


@dataclass(frozen=True)
class LockInfo:
    pid: int
    host: str
    started: float

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"pid {self.pid} on {self.host}, since {when}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _holds(holder: LockInfo) -> bool:
    """Whether the lock's process is alive and is the one that wrote it: a process now
    under its pid that started after the lock was written is another (the pid reused:
    a container restarted on the same volume runs this command as pid 1 again, and
    refused forever; found by helper-32)."""
    if not _alive(holder.pid):
        return False
    started = _process_start(holder.pid)
    return started is None or started <= holder.started + 2.0  # ticks and btime: ~1 s


def _process_start(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), where /proc tells."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            ticks = int(f.read().rpartition(")")[2].split()[19])  # field 22: starttime
        with open("/proc/stat", encoding="ascii") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _read_lock(path: str) -> LockInfo | None:
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
        return LockInfo(int(raw["pid"]), str(raw["host"]), float(raw["started"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def holder_of(out: str) -> LockInfo | None:
    """The live run that holds ``out``'s lock, if one does (``validate`` says so)."""
    if not _local(out):
        return None
    holder = _read_lock(os.path.join(out, LOCK))
    return holder if holder is not None and _in_use(holder) else None


def _in_use(holder: LockInfo) -> bool:
    """Whether a lock is a live run's: one on another host (its process cannot be
    seen from here), or this host's process that wrote it (:func:`_holds`)."""
    return holder.host != socket.gethostname() or _holds(holder)


@contextlib.contextmanager
def locked(out: str) -> Iterator[None]:
    """Hold ``out``'s lock for the block; refuse (ConfigError) while another live run
    holds it, and take over a lock whose process is gone (same host), or whose pid a
    process started since holds (:func:`_holds`)."""
    if not _local(out):
        log.warning("%s is not a local folder: the run is not locked against others", out)
        yield
        return
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, LOCK)
    me = LockInfo(os.getpid(), socket.gethostname(), time.time())
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read_lock(path)
            if holder is None:
                # Being written this instant, or garbage: give it a moment.
                time.sleep(0.2)
                holder = _read_lock(path)
            if holder is not None and _in_use(holder):
                raise OutputInUse(
                    [
                        f"output.path: {out} is in use by another run ({holder.describe()}); "
                        f"wait for it, or remove {path} if that run is gone"
                    ]
                ) from None
            log.warning("taking over a stale lock in %s (%s)", out, holder and holder.describe())
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"pid": me.pid, "host": me.host, "started": me.started}, f)
        break
    else:
        raise ConfigError([f"output.path: could not lock {out}"])
    try:
        yield
    except BaseException:
        # the block's error is the one to tell: a folder gone read-only mid-run failed
        # here too, and that named the lock, not the write that failed (helper-42)
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _entries(folder: str) -> list[str]:
    """Top-level output entries present in ``folder``."""
    return [n for n in (*OUTPUT_NAMES, SUMMARY) if fs.exists(fs.join(folder, n))]


def _hidden(out: str, prefix: str) -> list[str]:
    if not _local(out) or not os.path.isdir(out):
        return []
    return sorted(os.path.join(out, n) for n in os.listdir(out) if n.startswith(prefix))


def recover(out: str) -> None:
    """Clean up after a run that died (called with the lock held): put back a previous
    result that a swap had moved aside, and delete dead staging folders."""
    for old in _hidden(out, OLD_PREFIX):
        if not fs.exists(fs.join(out, SUMMARY)) and fs.exists(fs.join(old, SUMMARY)):
            log.warning("restoring the previous result that an interrupted run moved to %s", old)
            _restore(out, old)
        fs.delete_tree(old)
    for staging in _hidden(out, STAGING_PREFIX):
        log.info("removing the staging folder of an interrupted run: %s", staging)
        fs.delete_tree(staging)


def _restore(out: str, old: str) -> None:
    """Put the entries a swap moved to ``old`` back in ``out``. Its ``summary.json``
    goes aside first (:func:`swap_in`), so a swap stopped at any step leaves in ``out``
    the previous run's entries not moved yet (kept) and the new run's moved in: those
    named as one moved aside, or that the previous run did not write (deleted)."""
    moved = set(_entries(old))
    listed = set(previous_outputs(old) or moved)
    for name in _entries(out):
        if name in moved or name not in listed:
            fs.delete_tree(fs.join(out, name))
    for name in sorted(moved, key=lambda n: n == SUMMARY):  # summary.json last
        fs.rename(fs.join(old, name), fs.join(out, name))


def new_staging(out: str) -> str:
    return fs.join(out, f"{STAGING_PREFIX}{uuid.uuid4().hex[:12]}")


def swap_in(out: str, staging: str) -> list[str]:
    """Replace the previous run's outputs in ``out`` by the staged ones; returns the
    names now in place. The previous entries are moved aside first (``summary.json``
    first of them) and deleted last; the staged ones moved in ``summary.json`` last. A
    swap stopped at any step is undone by the next run's :func:`recover`, and a Ctrl-C
    or SIGTERM waits for it to end (:func:`mitigate.console.uninterrupted`)."""
    old = fs.join(out, f"{OLD_PREFIX}{uuid.uuid4().hex[:12]}")
    previous = previous_outputs(out) or []
    # summary.json first: while out has one, what it holds is one run's whole result
    for name in sorted(previous, key=lambda n: n != SUMMARY):
        if fs.exists(fs.join(out, name)):
            fs.rename(fs.join(out, name), fs.join(old, name))
    staged = _entries(staging)
    for name in sorted(staged, key=lambda n: n == SUMMARY):  # summary.json last
        fs.rename(fs.join(staging, name), fs.join(out, name))
    fs.delete_tree(old)
    fs.delete_tree(staging)
    return staged
