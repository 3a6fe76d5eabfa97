"""Small WebDataset tars for the tests: distinct JPEGs under keys, with the members given."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from PIL import Image


def jpeg(seed: int) -> bytes:
    """An 80 x 60 JPEG of one colour, distinct for each ``seed`` below 256."""
    buf = io.BytesIO()
    Image.new("RGB", (80, 60), (seed * 37 % 256, seed * 91 % 256, 120)).save(buf, "JPEG")
    return buf.getvalue()


def write_tar(path: Path, samples: dict[str, dict[str, bytes]]) -> Path:
    """A tar of ``samples`` (key -> extension -> bytes), each with ``KEY.jpg`` first."""
    with tarfile.open(path, "w") as tar:
        for n, (key, members) in enumerate(samples.items()):
            for ext, data in {"jpg": jpeg(n), **members}.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path
