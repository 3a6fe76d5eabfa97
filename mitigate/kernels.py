"""Loading the modules of numba kernels, wherever the package is installed.

The kernels (:mod:`mitigate._sigkernel`, :mod:`mitigate._scorekernel`,
:mod:`mitigate.neardup._kernels`) are compiled once and cached (``cache=True``). numba
keeps that cache next to the module when its folder is writable, else in the user's
cache folder, or in ``NUMBA_CACHE_DIR``; where none of them is writable (a read-only
image run by a user without a writable home), numba refuses the module at import
(``RuntimeError: cannot cache function ...: no locator available``). :func:`load` then
points numba's cache at a folder under the temporary folder and imports again; where
that fails too, or numba is missing, the caller computes the same results in numpy
(each kernel has a numpy reference with the same bits), with a warning.

A small run takes those numpy references on purpose (:func:`set_compiled`): numba's
import and its first load of a cached kernel cost ~0.75 s of a process's time, which
the kernels win back only over a thousand samples or more (BENCHMARKS.md, "Small runs
without numba").
"""

from __future__ import annotations

import importlib
import logging
import os
import tempfile
from pathlib import Path
from types import ModuleType

logger = logging.getLogger(__name__)

_NO_LOCATOR = "no locator available"

#: Runs of fewer input samples take the kernels' numpy references (the same bits)
#: instead of loading numba (:func:`set_compiled`); measured break-even ~1,500 samples
#: of 1024-px JPEGs on one core.
COMPILED_MIN_SAMPLES = 1024

_compiled = True


def set_compiled(on: bool) -> None:
    """Whether this process's kernels run compiled (the default) or as their numpy
    references, which give the same bits. The loaders ask :func:`compiled` at each use,
    so a later run of the process may turn the kernels back on."""
    global _compiled
    _compiled = on


def compiled() -> bool:
    """Whether the kernels are wanted compiled (:func:`set_compiled`)."""
    return _compiled


def fallback_cache_dir() -> Path:
    """The cache folder used where numba finds no writable one of its own."""
    user = os.getuid() if hasattr(os, "getuid") else "user"
    return Path(tempfile.gettempdir()) / f"mitigate-numba-cache-{user}"


def load(name: str, purpose: str) -> ModuleType | None:
    """The kernel module ``name`` (imported), or None where it cannot be: then
    ``purpose`` (e.g. "pair scores") is computed in numpy, and a warning says so."""
    try:
        return importlib.import_module(name)
    except ImportError as err:
        logger.warning("numba unavailable (%s): %s are computed in numpy", err, purpose)
        return None
    except RuntimeError as err:
        if _NO_LOCATOR not in str(err):
            raise
    from numba.core import config

    folder = fallback_cache_dir()
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        config.CACHE_DIR = str(folder)
        module = importlib.import_module(name)
    except (OSError, RuntimeError) as err:
        logger.warning(
            "numba has no writable cache folder (%s): %s are computed in numpy; set "
            "NUMBA_CACHE_DIR to a writable folder for the compiled kernels",
            err,
            purpose,
        )
        return None
    logger.warning(
        "numba found no writable cache folder (the package's, the user's, NUMBA_CACHE_DIR): "
        "its compiled kernels are cached in %s",
        folder,
    )
    return module
