"""File access through Beam's FileSystems, so every path may be local, gs://, s3://, ..."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from typing import IO

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems


def open_read(path: str) -> IO[bytes]:
    """Open for random-access reading; never decompresses (tar offsets are raw bytes)."""
    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def join(base: str, *parts: str) -> str:
    return FileSystems.join(base, *parts)


def match(patterns: list[str]) -> dict[str, list[str]]:
    """Expand each pattern to a sorted list of file paths (empty list if none match)."""
    out: dict[str, list[str]] = {}
    for pattern, result in zip(patterns, FileSystems.match(patterns), strict=True):
        out[pattern] = sorted(m.path for m in result.metadata_list)
    return out


def exists(path: str) -> bool:
    return FileSystems.exists(path)


@contextlib.contextmanager
def atomic_write(path: str) -> Iterator[IO[bytes]]:
    """Write to a hidden temporary name beside ``path``, then rename onto it.

    A worker that dies mid-write leaves only a ``.tmp-`` file, never a partial file
    under the final name; a retried write replaces the final file whole.
    """
    folder, _, name = path.rpartition("/")
    tmp_name = f".{name}.tmp-{uuid.uuid4().hex}"
    tmp = f"{folder}/{tmp_name}" if folder else tmp_name
    handle = FileSystems.create(tmp, compression_type=CompressionTypes.UNCOMPRESSED)
    try:
        yield handle
        handle.close()
    except BaseException:
        handle.close()
        FileSystems.delete([tmp])
        raise
    # rename replaces an existing file (os.rename locally, copy+delete on object stores).
    try:
        FileSystems.rename([tmp], [path])
    except BaseException:
        with contextlib.suppress(Exception):
            FileSystems.delete([tmp])
        raise


def rename(src: str, dst: str) -> None:
    """Move a file or folder to ``dst`` (whose parent is created). Locally one atomic
    ``os.replace``; on object stores each object is copied and deleted."""
    if "://" not in src:
        os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
        os.replace(src, dst)
        return
    files = [m.path for m in FileSystems.match([join(src, "**")])[0].metadata_list]
    if not files:
        FileSystems.rename([src], [dst])
        return
    FileSystems.rename(files, [dst + f[len(src) :] for f in files])


def delete_tree(path: str) -> None:
    """Delete a file or folder if it exists."""
    if FileSystems.exists(path):
        FileSystems.delete([path])


def write_bytes(path: str, data: bytes) -> None:
    with atomic_write(path) as f:
        f.write(data)


def read_bytes(path: str) -> bytes:
    with open_read(path) as f:
        return f.read()
