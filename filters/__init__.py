"""Filter registry: YAML names filters by short registered names.

Every module in this package that defines a :class:`~mitigate.filters.base.Filter`
subclass decorated with :func:`register` is discovered automatically, so adding a
filter means adding one module (no central if/elif). Third-party packages can add
filters through the ``mitigate.filters`` entry-point group.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import Iterable
from importlib.metadata import entry_points
from typing import TypeVar

from mitigate.filters.base import Drop, Filter, FilterConfig, ModelFilter, Score, ScoringItem

__all__ = [
    "Drop",
    "Filter",
    "FilterConfig",
    "ModelFilter",
    "Score",
    "ScoringItem",
    "build_filter",
    "get",
    "names",
    "register",
    "scored_at_decode",
]

log = logging.getLogger(__name__)
_REGISTRY: dict[str, type[Filter]] = {}
_loaded = False
F = TypeVar("F", bound=type[Filter])


def register(cls: F) -> F:
    """Class decorator: make a filter available to YAML under ``cls.name``."""
    existing = _REGISTRY.get(cls.name)
    if existing is not None and existing is not cls:
        raise ValueError(f"filter name {cls.name!r} registered twice: {existing} and {cls}")
    _REGISTRY[cls.name] = cls
    return cls


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    for module in pkgutil.iter_modules(__path__):
        if module.name != "base":
            importlib.import_module(f"{__name__}.{module.name}")
    for ep in entry_points(group="mitigate.filters"):
        try:
            ep.load()
        except Exception:  # a broken plugin must not hide the built-in filters
            log.exception("could not load filter plugin %s", ep.value)
    _loaded = True


def names() -> list[str]:
    """Sorted list of registered filter names."""
    _load_all()
    return sorted(_REGISTRY)


def get(name: str) -> type[Filter]:
    """The filter class registered as ``name``; KeyError lists the valid names."""
    _load_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown filter {name!r}; valid names: {', '.join(names())}") from None


def build_filter(config: FilterConfig) -> Filter:
    """Instantiate the filter for a validated config (stores the config only)."""
    return get(config.name)(config)


def scored_at_decode(filters: Iterable[Filter]) -> list[Filter]:
    """The filters the decode step scores itself (in the Beam worker or its decode
    processes): all but the model filters (scored in RunInference) and the trained
    heads (scored from a model's embedding in ``Decide``)."""
    from mitigate.filters.probe import is_head  # (probe imports this package)

    return [f for f in filters if not isinstance(f, ModelFilter) and not is_head(f)]
