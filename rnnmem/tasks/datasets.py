"""Named data sets of sequences: the linear functionals and the teacher RNNs.

:data:`FUNCTIONAL_TASKS` maps a name to a :class:`TaskSpec` (a builder with documented
default options): one linear-functional data set per target memory of
:data:`rnnmem.theory.targets.TARGETS` (:mod:`rnnmem.tasks.functional`) and the teacher
data sets ``teacher_linear``/``teacher_tanh`` (:mod:`rnnmem.tasks.teacher`). The training
adapter of these names (``"lf:<name>"``) is :mod:`rnnmem.tasks.lf`.

This registry lives in its own module, above both data modules, so that neither of them
imports the other's user (the teacher module builds on the functional one's input
sampling; nothing points back).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping

from ..errors import InvalidParameterError, UnknownNameError
from ..theory.targets import TARGETS, get_target
from .functional import LinearFunctionalTask, SequenceDataset
from .teacher import make_teacher_dataset

__all__ = ["FUNCTIONAL_TASKS", "TaskSpec", "get_task", "linear_functional"]

_LF_DEFAULTS = {"n_samples": 1024, "length": 100, "dt": 1.0, "input_dim": 1, "seed": 0,
                "input": "white", "method": "quadrature", "input_std": 1.0}
_TEACHER_DEFAULTS = {"n_samples": 1024, "length": 100, "dt": 1.0, "input_dim": 1, "seed": 0,
                     "input": "white", "input_std": 1.0, "hidden": 16,
                     "memory": "exponential", "abscissa": -0.1, "decades": 2.0,
                     "max_frequency": 1.0, "substeps": 8}


_SAMPLE_OPTIONS = ("n_samples", "length", "seed")


def linear_functional(name: str, **opts) -> LinearFunctionalTask:
    """The :class:`~rnnmem.tasks.functional.LinearFunctionalTask` of the data set ``name``
    (a target of :data:`rnnmem.theory.targets.TARGETS`) with options as in
    :data:`FUNCTIONAL_TASKS` (its parameters, ``dt``, ``input_dim``, ...); the sample
    options ``n_samples``, ``length`` and ``seed`` are ignored."""
    target = get_target(name)
    tparams = {k: opts.pop(k) for k in list(opts) if k in target.param_values}
    if tparams:
        target = target.with_params(**tparams)
    for k in _SAMPLE_OPTIONS:
        opts.pop(k, None)
    return LinearFunctionalTask(target, **opts)


def _build_lf(name: str, **opts) -> SequenceDataset:
    sample = {k: opts.pop(k) for k in _SAMPLE_OPTIONS}
    return linear_functional(name, **opts).dataset(sample["n_samples"], sample["length"],
                                                   sample["seed"])


def _build_teacher(kind: str, **opts) -> SequenceDataset:
    return make_teacher_dataset(kind, **opts)


@dataclass(frozen=True)
class TaskSpec:
    """A named data-set builder with its default options.

    ``get_task("polynomial", p=1.5).build(n_samples=256)`` builds a data set; options not
    given take :attr:`options` (documented defaults, see the module docstring).
    """

    name: str
    builder: Callable[..., SequenceDataset]
    options: Mapping[str, Any]
    description: str = ""
    #: ``"linear_functional"`` (outputs a function of the inputs) or ``"teacher"``
    kind: str = "linear_functional"

    def with_options(self, **options) -> "TaskSpec":
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise InvalidParameterError(
                f"task {self.name!r} has no option(s) {unknown}; it has {sorted(self.options)}")
        return replace(self, options={**self.options, **options})

    def build(self, **options) -> SequenceDataset:
        return self.builder(**dict(self.with_options(**options).options))


def _lf_spec(name: str) -> TaskSpec:
    tgt = TARGETS[name]
    opts = {**_LF_DEFAULTS, **tgt.param_values}
    return TaskSpec(name, lambda **o: _build_lf(name, **o), opts,
                    f"linear functional with rho(t) = {tgt.concrete} ({tgt.source})")


FUNCTIONAL_TASKS: dict[str, TaskSpec] = {name: _lf_spec(name) for name in TARGETS}
FUNCTIONAL_TASKS["teacher_linear"] = TaskSpec(
    "teacher_linear", lambda **o: _build_teacher("linear", **o), dict(_TEACHER_DEFAULTS),
    "random stable linear continuous-time RNN teacher (exact ZOH outputs)", "teacher")
FUNCTIONAL_TASKS["teacher_tanh"] = TaskSpec(
    "teacher_tanh", lambda **o: _build_teacher("tanh", **o), dict(_TEACHER_DEFAULTS),
    "random tanh continuous-time RNN teacher (RK4 outputs)", "teacher")


def get_task(name: str, **options) -> TaskSpec:
    """The :class:`TaskSpec` registered as ``name`` with ``options`` overriding defaults."""
    try:
        spec = FUNCTIONAL_TASKS[name]
    except (KeyError, TypeError):
        raise UnknownNameError("task", name, list(FUNCTIONAL_TASKS)) from None
    return spec.with_options(**options)
