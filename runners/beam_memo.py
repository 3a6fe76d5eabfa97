"""Memos for two of Beam's repeated introspections: fixed costs of every run.

* ``apache_beam.transforms.userstate.get_dofn_specs`` finds a DoFn's state and timer
  parameters by building an ``inspect.signature`` of *every* method of the DoFn (about
  30 on a ``beam.Map``). Beam calls it six times per ParDo while the graph is built and
  translated (``ParDo.__init__``, ``to_runner_api``, the DirectRunner's checks) and
  twice more per ParDo in every bundle processor a worker builds: 1,636 calls and
  2.1 s of CPU for one run (BENCHMARKS.md, issue 14), whatever the data size. The
  answer depends only on the DoFn's methods, so it is computed once per (class, bound
  methods of the instance) and reused. A DoFn whose answer could depend on anything
  else always takes Beam's path: a class with its own ``__getattr__`` or
  ``__getattribute__``, or an instance whose method signature Beam reads through an
  ``_inspect_<name>`` hook (a ``beam.Map`` of a bound method). Errors (a DoFn with
  duplicate parameters) are never memoised: they are raised again on every call.
* ``PipelineOptions.view_as(cls)`` builds a new view, with a new argparse parser over
  every option of ``cls`` and a parse of the flags, on every call: Beam calls it about
  twice per transform applied (type-check options), 829 calls and 1.0 s of CPU for one
  run. A view holds no state of its own (its reads and writes go to the options'
  shared ``_all_options``), so the view made for one options object and one class is
  reused while the object's flags and option dict are the ones it was made from.

:func:`install` patches the module attribute Beam's callers look up
(``userstate.get_dofn_specs``; ``is_stateful_dofn``/``validate_stateful_dofn`` call it
by global name) and ``PipelineOptions.view_as``; it is idempotent, and
:func:`uninstall` restores Beam's functions. The pipeline graph module installs the
memos on import, so worker processes that unpickle the project's DoFns get them too.
"""

from __future__ import annotations

import threading
import types
import weakref
from typing import Any

from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms import userstate

_ORIGINAL = userstate.get_dofn_specs
_MEMO: dict[tuple[Any, ...], tuple[frozenset, frozenset]] = {}
_LOCK = threading.Lock()
_PLAIN_ATTRS = (object.__getattribute__, None)


def memo_key(dofn: Any) -> tuple[Any, ...] | None:
    """What ``get_dofn_specs(dofn)`` depends on: the DoFn's class and the function
    behind each of its bound methods; ``None`` when that cannot be told cheaply."""
    cls = type(dofn)
    if getattr(cls, "__getattribute__", None) not in _PLAIN_ATTRS or hasattr(cls, "__getattr__"):
        return None
    methods = []
    for name in dir(dofn):
        value = getattr(dofn, name, None)
        if not isinstance(value, types.MethodType):
            continue
        if hasattr(dofn, f"_inspect_{name}"):
            return None  # Beam reads this method's signature from a per-instance hook
        methods.append((name, value.__func__))
    return (cls, tuple(methods))


def get_dofn_specs(dofn: Any) -> tuple[set, set]:
    """``userstate.get_dofn_specs``, memoised by :func:`memo_key` (fresh sets returned)."""
    key = memo_key(dofn)
    if key is None:
        return _ORIGINAL(dofn)
    found = _MEMO.get(key)
    if found is None:
        state, timers = _ORIGINAL(dofn)
        found = (frozenset(state), frozenset(timers))
        with _LOCK:
            _MEMO[key] = found
    return set(found[0]), set(found[1])


_ORIGINAL_VIEW_AS = PipelineOptions.view_as
_VIEWS: weakref.WeakKeyDictionary[PipelineOptions, dict[type, PipelineOptions]] = (
    weakref.WeakKeyDictionary()
)


def view_as(self: PipelineOptions, cls: type) -> Any:
    """``PipelineOptions.view_as``, one view per (options object, class) reused while
    the object's flags and option dict are those the view was made from."""
    with _LOCK:
        views = _VIEWS.setdefault(self, {})
        view = views.get(cls)
    if (
        view is None
        or view.__dict__.get("_all_options") is not self.__dict__.get("_all_options")
        or view.__dict__.get("_flags") != self.__dict__.get("_flags")
    ):
        view = _ORIGINAL_VIEW_AS(self, cls)
        with _LOCK:
            views[cls] = view
    return view


def install() -> None:
    """Route Beam's calls through the memos (idempotent)."""
    userstate.get_dofn_specs = get_dofn_specs
    PipelineOptions.view_as = view_as  # type: ignore[method-assign]


def uninstall() -> None:
    """Beam's own functions again (tests, benchmarks' before/after)."""
    userstate.get_dofn_specs = _ORIGINAL
    PipelineOptions.view_as = _ORIGINAL_VIEW_AS  # type: ignore[method-assign]
    with _LOCK:
        _MEMO.clear()
        _VIEWS.clear()
