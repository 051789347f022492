"""One registry of tasks, by name.

``build_task(name, **options)`` builds any registered task; ``task_names()`` lists them.
Each adapter module registers its tasks next to its data (imported on first use through
:mod:`rnnmem.tasks._all`):

``"npz"`` (:mod:`rnnmem.tasks.arrays`)
    an :class:`~rnnmem.tasks.arrays.ArrayRegressionTask` from a ``.npz`` file with arrays
    ``inputs`` (N, T, d) and ``targets`` (N, T, k) (optionally ``valid_*``/``test_*``).
``"lf:<name>"`` (:mod:`rnnmem.tasks.lf`)
    linear-functional regression :math:`y_t = \\int_0^\\infty \\rho(s)\\, x_{t-s}\\,ds`
    (and the teacher-RNN data sets), with train/valid/test splits; ``<name>`` one of
    :data:`rnnmem.tasks.datasets.FUNCTIONAL_TASKS`.
``"lang:<language>"`` (:mod:`rnnmem.tasks.language_task`)
    a formal-language task, ``mode`` ``"recognition"`` or ``"next_symbol"``.
``"ptb"`` (:mod:`rnnmem.tasks.ptb_task`)
    Penn Treebank language modelling with truncated BPTT.

New families register with :func:`register_task` (exact names) or
:func:`register_task_prefix` (``"prefix:<rest>"`` names) from their own module, and add
the module to :data:`rnnmem.tasks._all.MODULES` (a missing module is skipped).

Importing this module is cheap (no torch); the first :func:`build_task` or
:func:`task_names` imports the adapters (and torch).
"""

from __future__ import annotations

from typing import Callable

from ..errors import InvalidParameterError, UnknownNameError

__all__ = ["TASK_BUILDERS", "TASK_PREFIXES", "register_task", "register_task_prefix",
           "build_task", "task_names", "check_options"]

TASK_BUILDERS: dict[str, Callable[..., "Task"]] = {}
TASK_PREFIXES: dict[str, Callable[..., "Task"]] = {}
#: per prefix, a callable listing the names it accepts (for error messages)
_PREFIX_LISTERS: dict[str, Callable[[], list[str]]] = {}


def _ensure_tasks_loaded() -> None:
    from . import _all  # noqa: F401  (imports every adapter module, registering its tasks)


def register_task(name: str):
    """Decorator: ``@register_task("npz")`` on a builder ``f(**options) -> TrainTask``."""

    def deco(fn):
        if name in TASK_BUILDERS and TASK_BUILDERS[name] is not fn:
            raise ValueError(f"task {name!r} registered twice")
        TASK_BUILDERS[name] = fn
        return fn

    return deco


def register_task_prefix(prefix: str, lister: Callable[[], list[str]] | None = None):
    """Decorator for a builder ``f(rest, **options)`` of the names ``"<prefix>:<rest>"``."""

    def deco(fn):
        TASK_PREFIXES[prefix] = fn
        if lister is not None:
            _PREFIX_LISTERS[prefix] = lister
        return fn

    return deco


def task_names() -> list[str]:
    """Every task name currently buildable (prefixed families expanded when known)."""
    _ensure_tasks_loaded()
    names = list(TASK_BUILDERS)
    for prefix in TASK_PREFIXES:
        try:
            rest = _PREFIX_LISTERS[prefix]() if prefix in _PREFIX_LISTERS else []
        except ImportError:
            rest = []
        names += [f"{prefix}:{r}" for r in rest] or [f"{prefix}:<name>"]
    return sorted(names)


def build_task(name: str, **options) -> "Task":
    """Build a registered task by name with its options (see the module docstring)."""
    _ensure_tasks_loaded()
    if not isinstance(name, str):
        raise UnknownNameError("task", name, task_names())
    if name in TASK_BUILDERS:
        return TASK_BUILDERS[name](**options)
    prefix, sep, rest = name.partition(":")
    if sep and prefix in TASK_PREFIXES and rest:
        return TASK_PREFIXES[prefix](rest, **options)
    raise UnknownNameError("task", name, task_names())


def check_options(task: str, options: dict, allowed: set[str]) -> None:
    """Raise :class:`~rnnmem.errors.InvalidParameterError` naming the first option of
    ``options`` that is not in ``allowed``."""
    extra = sorted(set(options) - allowed)
    if extra:
        raise InvalidParameterError(f"task {task!r}: unknown option {extra[0]!r}; "
                                    f"allowed: {', '.join(sorted(allowed))}")
