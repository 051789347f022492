"""The "ensure approximation" rule of the curse-of-memory experiments.

Def. 3.5 of Wang, Li & Li (ICLR 2024) is about an *approximating sequence*: models whose
error decreases as the width :math:`m` grows. The original scripts
(radarFudan/Curse-of-memory, ``scripts/lf_all.sh`` with ``src/train.py``) make it so by
training the widths 8, 16, 32, 64 in turn, each with Lightning's early-stopping
``stopping_threshold`` set to ``0.5`` times the best validation loss of the previous width
(the first width gets 100, so it stops after ``min_epochs = 2``), for at most
``max_epochs = 1000`` epochs, and keeping the best-validation checkpoint.

:func:`train_until_below` is that rule as a function:

.. math::

    \\tau_1 = \\tau_{\\text{init}}, \\qquad
    \\tau_{j+1} = \\text{factor}\\cdot \\min_{\\text{steps}} L_{\\text{valid}}(\\theta_{m_j}),

each width :math:`m_j` trained (``stop_below`` :math:`=\\tau_j`, ``restore_best``) until its
validation loss is below :math:`\\tau_j` or its step cap is reached. The outcome is
recorded per width: the rule *holds* for a width when its best validation loss is below its
threshold; a width where it fails is reported as such (its successors still get
``factor`` times its best loss, as in the original scripts).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ..errors import ConflictingOptionsError, InvalidParameterError
from .config import TrainConfig

__all__ = ["WidthOutcome", "EnsureResult", "train_until_below"]


@dataclass
class WidthOutcome:
    """The rule's outcome for one width.

    Attributes
    ----------
    width : int
    threshold : float or None
        :math:`\\tau_j` (``None``: no threshold, the first width without
        ``initial_threshold``).
    best_valid_loss : float
        The best validation loss reached (the weights the model holds).
    reached : bool
        ``best_valid_loss < threshold`` (``True`` without a threshold).
    steps : int
        Optimiser steps taken.
    stopped : str
        How training ended (``"stop_below"``, ``"completed"`` = step cap, ...).
    result : TrainResult or None
        The training result (its ``model`` holds the best-validation weights).
    """

    width: int
    threshold: float | None
    best_valid_loss: float
    reached: bool
    steps: int
    stopped: str
    result: Any = field(default=None, repr=False)

    @property
    def status(self) -> str:
        """``"ok"`` or ``"rule failed: ..."`` (what a verdict reads)."""
        if self.reached:
            return "ok"
        return (f"rule failed: best validation loss {self.best_valid_loss:.4g} not below "
                f"{self.threshold:.4g} within {self.steps} steps")

    def to_dict(self) -> dict:
        return {"width": self.width, "threshold": self.threshold,
                "best_valid_loss": self.best_valid_loss, "reached": self.reached,
                "steps": self.steps, "stopped": self.stopped, "status": self.status}


@dataclass
class EnsureResult:
    """Outcomes of :func:`train_until_below`, by width (ascending)."""

    outcomes: dict[int, WidthOutcome]
    factor: float

    @property
    def models(self) -> dict:
        return {m: o.result.model for m, o in self.outcomes.items()}

    @property
    def all_reached(self) -> bool:
        return all(o.reached for o in self.outcomes.values())

    def statuses(self) -> dict[int, str]:
        """Width -> ``"ok"`` or the failure, for the verdict of
        :func:`rnnmem.numerics.perturbation.blowup_verdict`."""
        return {m: o.status for m, o in self.outcomes.items()}

    def to_dict(self) -> dict:
        return {"factor": self.factor,
                "outcomes": {str(m): o.to_dict() for m, o in self.outcomes.items()}}


def _positive(name, v, optional=False):
    if v is None and optional:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
            or v <= 0:
        raise InvalidParameterError(f"{name} must be a positive number, got {v!r}")
    return float(v)


def train_until_below(configs_by_width: Mapping[int, TrainConfig], *, factor: float = 0.5,
                      max_steps: int | None = None, initial_threshold: float | None = None,
                      task_factory: Callable[[int], Any] | None = None,
                      progress: bool = False) -> EnsureResult:
    """Train each width until its validation loss is below ``factor`` x the previous one's.

    Parameters
    ----------
    configs_by_width : mapping width -> TrainConfig
        One configuration per width (trained in ascending order of width). Each needs
        evaluations (``eval_every > 0``) on a task with a validation split; its
        ``steps``/``epochs`` is the step cap, ``stop_below``/``restore_best`` are set here.
    factor : float in (0, 1]
        The original scripts use 0.5.
    max_steps : int, optional
        Overrides every configuration's step cap.
    initial_threshold : float, optional
        :math:`\\tau_1` for the smallest width (the original: 100, which with
        ``min_epochs = 2`` stops it after two epochs; ``stop_below_after`` expresses that).
    task_factory : callable ``width -> TrainTask``, optional
        Build the task (e.g. to share one data set in memory); default: from the config.
    progress : bool

    Returns
    -------
    EnsureResult
    """
    from .loop import train

    if not isinstance(configs_by_width, Mapping) or not configs_by_width:
        raise InvalidParameterError("configs_by_width must be a non-empty mapping width -> "
                                    "TrainConfig")
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) \
            or not 0 < factor <= 1:
        raise InvalidParameterError(f"factor must be in (0, 1], got {factor!r}")
    _positive("initial_threshold", initial_threshold, optional=True)
    if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, int)
                                  or max_steps < 1):
        raise InvalidParameterError(f"max_steps must be a positive integer, got {max_steps!r}")
    items = []
    for m, cfg in configs_by_width.items():
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise InvalidParameterError(f"widths must be positive integers, got {m!r}")
        if not isinstance(cfg, TrainConfig):
            raise InvalidParameterError(f"the configuration of width {m} is a "
                                        f"{type(cfg).__name__}, not a TrainConfig")
        if cfg.eval_every == 0:  # refused before any width is trained
            raise ConflictingOptionsError("the ensure-approximation rule", f"width {m}: "
                                          "eval_every=0", "the rule reads the validation "
                                          "loss; set eval_every > 0")
        items.append((m, cfg))
    items.sort(key=lambda mc: mc[0])
    # every task is checked for a validation split before the first width trains
    tasks = {}
    if task_factory is not None:
        from .tasks import VALID

        for m, cfg in items:
            tasks[m] = task_factory(m)
            if VALID not in tuple(tasks[m].eval_splits):
                raise ConflictingOptionsError(
                    "the ensure-approximation rule", f"task {tasks[m].name!r}",
                    "the task has no validation split")
    outcomes: dict[int, WidthOutcome] = {}
    threshold = initial_threshold
    for m, cfg in items:
        changes: dict[str, Any] = {"stop_below": threshold, "restore_best": True}
        if max_steps is not None:
            changes.update(steps=max_steps, epochs=None)
        res = train(cfg.replace(**changes), task=tasks.get(m), progress=progress)
        best = float("inf") if res.best_loss is None else float(res.best_loss)
        reached = threshold is None or best < threshold
        outcomes[m] = WidthOutcome(m, threshold, best, reached, res.steps, res.stopped, res)
        threshold = factor * best if math.isfinite(best) else threshold
    return EnsureResult(outcomes, float(factor))
