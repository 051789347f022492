r"""Freezing model components, and keeping optimizers from moving frozen parameters.

Das & Mali (2024, "Exploring Learnability in Memory-Augmented Recurrent Neural Networks:
Precision, Stability, and Empirical Insights", arXiv:2410.03154) compare memory-augmented
RNNs trained in full with ones whose controller or memory is frozen. This module freezes the
named submodules of a model (``controller``, ``memory``, ``classifier``; see
:class:`rnnmem.models.stack_rnn.StackRNN`) by setting ``requires_grad = False``.

Freezing by ``requires_grad`` alone is **not** enough to keep a parameter fixed:

* decoupled weight decay (AdamW, Loshchilov & Hutter 2019) updates
  :math:`\theta \leftarrow \theta - \eta\lambda\theta` for every parameter that has a
  gradient tensor, even an all-zero one;
* Adam's moment estimates keep moving a parameter after its gradient is zero,
  :math:`\theta \leftarrow \theta - \eta\, \hat m_t / (\sqrt{\hat v_t} + \epsilon)` with
  :math:`m_t = \beta_1 m_{t-1} \ne 0`.

Hence: build the optimizer from :func:`trainable_parameters` after freezing, and when
freezing *late* (an optimizer already holds the parameters) call
:func:`drop_frozen_from_optimizer`, which removes them from the parameter groups, deletes
their optimizer state and their gradients. :class:`FreezeSchedule` does both.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import InvalidParameterError, UnknownNameError

__all__ = ["FREEZE_MODES", "apply_freeze", "frozen_submodules", "trainable_parameters",
           "drop_frozen_from_optimizer", "FreezeSchedule"]

#: freeze modes and what they freeze
FREEZE_MODES = ("none", "memory", "controller", "all_but_classifier")


def _has_parameters(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def frozen_submodules(model: nn.Module, freeze: str) -> list[str]:
    """Names of the top-level submodules that ``freeze`` freezes in ``model``.

    ``"none"``: none; ``"memory"``: ``memory``; ``"controller"``: ``controller`` (its input
    embedding and recurrent cell); ``"all_but_classifier"``: every top-level child except
    ``classifier`` (plus parameters registered directly on the model, reported as ``""``).
    """
    if freeze not in FREEZE_MODES:
        raise UnknownNameError("freeze mode", freeze, FREEZE_MODES)
    children = dict(model.named_children())
    if freeze == "none":
        return []
    if freeze == "all_but_classifier":
        if "classifier" not in children:
            raise InvalidParameterError(
                f"{type(model).__name__} has no 'classifier' submodule to keep trainable")
        names = [n for n in children if n != "classifier"]
        if any(True for _ in model.named_parameters(recurse=False)):
            names.append("")
        return names
    if freeze not in children:
        raise InvalidParameterError(f"cannot freeze {freeze!r}: {type(model).__name__} has no "
                                    f"{freeze!r} submodule (has {sorted(children)})")
    if not _has_parameters(children[freeze]):
        raise InvalidParameterError(f"cannot freeze {freeze!r}: it has no parameters in "
                                    f"{type(model).__name__} (a memory-less model?)")
    return [freeze]


def apply_freeze(model: nn.Module, freeze: str) -> list[str]:
    """Set ``requires_grad = False`` on the parameters of the submodules ``freeze`` names.

    Parameters
    ----------
    model : nn.Module
        With submodules ``controller``, ``memory``, ``classifier`` as needed.
    freeze : {"none", "memory", "controller", "all_but_classifier"}

    Returns
    -------
    names : list of str
        Qualified names of the parameters now frozen.

    Raises
    ------
    UnknownNameError
        For an unknown mode.
    InvalidParameterError
        If the submodule is missing or has no parameters (``"memory"`` on a memory-less
        model).

    Notes
    -----
    Nothing is un-frozen: parameters already frozen elsewhere stay frozen.
    """
    frozen = []
    for sub in frozen_submodules(model, freeze):
        if sub == "":
            params = model.named_parameters(recurse=False)
        else:
            params = ((f"{sub}.{n}", p) for n, p in getattr(model, sub).named_parameters())
        for name, p in params:
            p.requires_grad_(False)
            frozen.append(name)
    return frozen


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters with ``requires_grad``: what an optimizer should be built from."""
    return [p for p in model.parameters() if p.requires_grad]


def drop_frozen_from_optimizer(optimizer: torch.optim.Optimizer,
                               model: nn.Module | None = None) -> int:
    """Remove frozen parameters from ``optimizer`` (groups and state) and clear their grads.

    A parameter is frozen when ``requires_grad`` is False (restricted to ``model``'s
    parameters when given). Removing it from the parameter groups is what stops weight
    decay and momentum from moving it. Returns the number of parameters removed.
    """
    candidates = None if model is None else {id(p) for p in model.parameters()}
    removed = 0
    for group in optimizer.param_groups:
        keep = []
        for p in group["params"]:
            if not p.requires_grad and (candidates is None or id(p) in candidates):
                optimizer.state.pop(p, None)
                p.grad = None
                removed += 1
            else:
                keep.append(p)
        group["params"] = keep
    return removed


class FreezeSchedule:
    """Freeze ``freeze`` once the training step reaches ``after_steps``.

    A training loop calls :meth:`maybe_apply` with the model and the current step (0
    before the first update, at initialisation, *before* building the optimizer when
    ``after_steps == 0``) and passes its optimizer once one exists::

        schedule = FreezeSchedule("memory", after_steps=0)
        schedule.maybe_apply(model, 0)
        opt = torch.optim.AdamW(trainable_parameters(model), weight_decay=0.1)
        for step in range(n):
            schedule.maybe_apply(model, step, opt)
            ...

    The freeze happens on the first call with ``step >= after_steps`` (so a resumed run
    re-freezes on its first call) and is idempotent afterwards.

    Parameters
    ----------
    freeze : {"none", "memory", "controller", "all_but_classifier"}
    after_steps : int
        Optimizer steps to train everything before freezing (0: frozen from the start).
    """

    def __init__(self, freeze: str = "none", after_steps: int = 0):
        if freeze not in FREEZE_MODES:
            raise UnknownNameError("freeze mode", freeze, FREEZE_MODES)
        if isinstance(after_steps, bool) or not isinstance(after_steps, int) or after_steps < 0:
            raise InvalidParameterError(
                f"after_steps must be a non-negative integer, got {after_steps!r}")
        self.freeze, self.after_steps = freeze, after_steps
        self.applied = False

    def maybe_apply(self, model: nn.Module, step: int,
                    optimizer: torch.optim.Optimizer | None = None) -> bool:
        """Freeze if ``step >= after_steps``; returns True on the call that froze.

        With ``optimizer``, frozen parameters are also removed from it (see
        :func:`drop_frozen_from_optimizer`) -- on every call that passes one after the
        freeze, so an optimizer built later from all parameters is cleaned too.
        """
        froze_now = False
        if not self.applied and step >= self.after_steps:
            apply_freeze(model, self.freeze)
            self.applied = froze_now = True
        if self.applied and optimizer is not None and self.freeze != "none":
            drop_frozen_from_optimizer(optimizer, model)
        return froze_now

    def __repr__(self) -> str:
        return (f"FreezeSchedule(freeze={self.freeze!r}, after_steps={self.after_steps}, "
                f"applied={self.applied})")
