"""Runners whose client libraries come in an optional extra: checked before any work,
so that a missing one is one line naming the extra, not an ImportError from deep
inside Beam halfway through building the job."""

from __future__ import annotations

import importlib

# runner name -> (extra, modules the runner imports when it starts)
EXTRAS: dict[str, tuple[str, tuple[str, ...]]] = {
    "dataflow": ("dataflow", ("google.cloud.dataflow", "google.cloud.storage")),
    "dask": ("dask", ("dask", "distributed")),
}


def missing_extra(runner: str) -> str | None:
    """A config error line when ``runner`` needs an extra that is not installed."""
    if runner not in EXTRAS:
        return None
    extra, modules = EXTRAS[runner]
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            return (
                f"runner.name: the {runner} runner needs the [{extra}] extra ({exc.name or module} "
                f"is not installed): pip install 'mitigate-pipeline[{extra}]' (in a checkout: "
                f"pip install -e '.[{extra}]')"
            )
    return None
