"""Records, hash items and decisions pickled as before ``compact_pickling``: pickle's
default for a dataclass (the class and a dict of field names and values).

``bench_pipeline.py --compare-pickling`` and ``bench_memory.py --old=pickling`` install
it in the benchmark's Beam worker process; decode worker processes
(``decode.processes`` > 1) are not touched, so compare one-process runs.
"""

from __future__ import annotations

from mitigate.near import Decision, HashItem
from mitigate.records import Member, SampleRecord

CLASSES = (SampleRecord, Member, HashItem, Decision)
_NOW = {cls: cls.__dict__["__reduce__"] for cls in CLASSES}


def install() -> None:
    """Back to pickle's default for the four classes."""
    for cls in CLASSES:
        if "__reduce__" in cls.__dict__:
            delattr(cls, "__reduce__")


def uninstall() -> None:
    """Back to the code of the tree."""
    for cls, reduce in _NOW.items():
        cls.__reduce__ = reduce  # type: ignore[method-assign]
