"""The task interface: what the training loop, the evaluations and the experiments need
from a task, whatever its data (regression arrays, linear functionals, formal languages,
transductions, language modelling).

A task (:class:`Task`, also called :class:`TrainTask`) has

``splits``
    the names of its splits: ``"train"`` always, ``"valid"`` and ``"test"`` where the data
    have them (and task-specific held-out splits, e.g. ``"test_41:60"`` length bins);
``batch(split, step, generator) -> (inputs, targets, mask)``
    the training batch of ``step`` (a function of ``step``, the configured seed and the loop's
    CPU :class:`torch.Generator` only, so that a resumed run sees the same data);
``sample(rng) -> (inputs, targets, mask)``
    a random training batch drawn from a numpy :class:`~numpy.random.Generator`;
``batches(split)``
    the fixed batches of a held-out split, in order (:meth:`Task.eval_batches` is the same);
``mask``
    the third element of every batch: a ``(B, T)`` boolean tensor of the positions that
    count in the loss and the metrics, or ``None`` when all of them do;
``loss(outputs, targets, mask)``, ``metrics(...)``, ``metric``, ``evaluate(model, split)``
    the training loss, per-batch metric sums, the name of the task's headline metric and
    the average loss and metrics over a split;
``solve(inputs) -> targets``
    for a transduction (a task whose targets are a function of its inputs; ``is_transduction``
    is true): the exact targets of any input batch. Other tasks raise
    :class:`~rnnmem.errors.NotApplicableError`.

The loop-facing protocol in detail:

``task.configure(device=, dtype=, batch_size=, seed=, temporal_weighting=)``
    called once by the loop, before anything else, with the run's settings;
``task.model_defaults() -> dict``
    constructor options the model needs to fit the task (``input_dim``, ``output_dim``);
``task.steps_per_epoch -> int | None``
    number of training batches in one pass, ``None`` for an endless stream;
``task.batch(split, step, generator) -> (inputs, targets, mask or None)``
    torch tensors on the configured device and dtype; the training batch of ``step`` must
    depend only on ``step``, the configured seed and ``generator`` (a CPU
    :class:`torch.Generator` owned and checkpointed by the loop), so that a resumed run sees
    the same data as an uninterrupted one;
``task.loss(outputs, targets, mask) -> scalar tensor``
``task.evaluate(model, split) -> dict[str, float]``
    metrics on a held-out split (always including ``"loss"``);
``task.eval_splits -> tuple[str, ...]``
    the splits the loop evaluates (the first one's ``"loss"`` selects ``best.pt``).

Stateful tasks (truncated back-propagation through time, e.g. language modelling with
:class:`rnnmem.tasks.ptb_task.PTBTask`) set ``task.stateful = True``: consecutive training batches
continue each other, and the loop carries the model's recurrent state from one batch to
the next:

``task.forward(model, inputs, state) -> (outputs, new_state)``
    the forward pass from ``state`` (``None``: the model's initial state);
``task.detach_state(state)``
    the state cut from the autograd graph (applied by the loop after every step);
``task.initial_state(model)``
    a template of the carried state (shapes and structure), used to restore it;
``task.pack_state(state) -> list[tensor]`` / ``task.unpack_state(model, packed)``
    the state as a flat list of tensors for checkpoints (``weights_only``-loadable) and back.

The loop passes ``state=None`` at the first step of every epoch (``step % steps_per_epoch
== 0``, the data start again from the beginning) and stores the carried state in
``last.pt``, so that a resumed run continues bit for bit.

:class:`Task` implements the bookkeeping; subclasses write ``batch``, ``eval_batches`` and
``loss``. Tasks are registered by name in :mod:`rnnmem.tasks.registry`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..errors import (CheckpointError, DatasetError, InvalidParameterError,
                      NotApplicableError, ShapeError)
from ..models.base import map_tensors, model_outputs

__all__ = ["Task", "TrainTask", "TRAIN", "VALID", "TEST", "temporal_weights", "weighted_mse",
           "numpy_rng_from"]

TRAIN, VALID, TEST = "train", "valid", "test"


# ============================================================================ helpers
def temporal_weights(T: int, p: float, *, dtype=torch.float64, device=None) -> torch.Tensor:
    """Temporal weights that emphasise late time steps, normalised to sum to ``T``.

    .. math::

        w_t = T\\,\\frac{((t+1)/(T+1))^{p}}{\\sum_{s=0}^{T-1} ((s+1)/(T+1))^{p}},
        \\qquad t = 0, \\dots, T-1.

    This is the weighting of the temporally weighted error used in the curse-of-memory
    experiments (Wang, Li & Li, ICLR 2024; code radarFudan/Curse-of-memory,
    ``src/utils/temporally_weighted_error.py``): late outputs, which depend on a longer
    input history, count more, so that a model cannot reach a low loss by fitting only the
    short-memory start of each sequence. ``p = 0`` gives ``w = 1`` (the plain MSE). The
    weights are computed in log space (a softmax of :math:`p \\log((t+1)/(T+1))`) so that
    large ``p`` cannot overflow or leave every weight zero.
    """
    if not (isinstance(p, (int, float)) and math.isfinite(p) and p >= 0):
        raise InvalidParameterError(f"temporal_weighting: exponent must be finite and >= 0, "
                                    f"got {p!r}")
    if T < 1:
        raise ShapeError(f"temporal weights need T >= 1, got {T}")
    t = torch.arange(1, T + 1, dtype=torch.float64)  # (T,)
    logw = float(p) * torch.log(t / (T + 1))
    w = T * torch.softmax(logw, dim=0)  # (T,), sums to T
    return w.to(dtype=dtype, device=device)


def weighted_mse(outputs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None,
                 p: float = 0.0) -> torch.Tensor:
    """Temporally weighted mean squared error of ``(B, T, k)`` tensors.

    .. math::

        L = \\frac{1}{|\\Omega|} \\sum_{(b,t,j)\\in\\Omega}
            \\big(w_t\\,(\\hat y_{btj} - y_{btj})\\big)^2,

    with :math:`w_t` from :func:`temporal_weights` (the weight multiplies the error before
    squaring, as in the curse-of-memory code, so the squared error at step ``t`` carries
    :math:`w_t^2`) and :math:`\\Omega` the positions where ``mask`` (B, T) is true (all of
    them without a mask).
    """
    if outputs.shape != targets.shape:
        raise ShapeError(f"outputs {tuple(outputs.shape)} and targets {tuple(targets.shape)} "
                         "differ in shape")
    err = outputs - targets  # (B, T, k)
    if p:
        w = temporal_weights(err.shape[1], p, dtype=err.dtype, device=err.device)  # (T,)
        err = err * w[None, :, None]
    sq = err.square()
    if mask is None:
        return sq.mean()
    m = mask.to(sq.dtype)[..., None].expand_as(sq)  # (B, T, k)
    return (sq * m).sum() / m.sum().clamp_min(1)


def numpy_rng_from(generator: torch.Generator) -> np.random.Generator:
    """A numpy generator seeded by one draw of the loop's torch generator (resumable)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
    return np.random.default_rng(seed)



# ============================================================================ the interface
class Task:
    """Base class of tasks (see the module docstring for the interface)."""

    name: str = "task"
    #: name of the headline metric among those :meth:`evaluate` returns
    metric: str = "loss"
    #: whether :meth:`solve` gives the targets of any input (a transduction)
    is_transduction: bool = False
    input_dim: int = 1
    output_dim: int = 1
    steps_per_epoch: int | None = None
    eval_splits: tuple[str, ...] = (VALID,)
    supports_temporal_weighting: bool = False
    #: consecutive training batches continue each other (see the module docstring)
    stateful: bool = False

    def __init__(self):
        self.device = torch.device("cpu")
        self.dtype = torch.get_default_dtype()
        self.batch_size = 32
        self.seed = 0
        self.temporal_weighting = 0.0

    def configure(self, *, device=None, dtype=None, batch_size: int | None = None,
                  seed: int | None = None, temporal_weighting: float = 0.0) -> "Task":
        """Receive the run's settings (called once by the loop before training)."""
        if device is not None:
            self.device = torch.device(device)
        if dtype is not None:
            self.dtype = dtype
        if batch_size is not None:
            self.batch_size = int(batch_size)
        if seed is not None:
            self.seed = int(seed)
        if temporal_weighting and not self.supports_temporal_weighting:
            raise InvalidParameterError(
                f"temporal_weighting: task {self.name!r} has no temporally weighted loss")
        self.temporal_weighting = float(temporal_weighting)
        self._configured()
        return self

    def _configured(self) -> None:
        """Hook: move data to ``self.device``/``self.dtype``."""

    def model_defaults(self) -> dict[str, Any]:
        return {"input_dim": int(self.input_dim), "output_dim": int(self.output_dim)}

    @property
    def splits(self) -> tuple[str, ...]:
        """The split names: ``"train"`` and the held-out ones (module docstring)."""
        return (TRAIN,) + tuple(s for s in self.eval_splits if s != TRAIN)

    def batch(self, split: str, step: int, generator: torch.Generator):
        raise NotImplementedError

    def sample(self, rng: np.random.Generator):
        """A random training batch ``(inputs, targets, mask)`` drawn with ``rng``: the
        training batch of a random step under a generator seeded from ``rng``."""
        g = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
        return self.batch(TRAIN, int(rng.integers(0, 2**31)), g)

    def batches(self, split: str):
        """The fixed batches ``(inputs, targets, mask)`` of ``split``, in order."""
        yield from self.eval_batches(split)

    def solve(self, inputs):
        """The exact targets of ``inputs`` (a transduction); other tasks raise."""
        raise NotApplicableError(f"task {self.name!r} is not a transduction: its targets "
                                 "are data, not a function of the inputs it can compute")

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor,
             mask: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def metrics(self, outputs, targets, mask) -> dict[str, tuple[float, float]]:
        """Per-batch sums ``{name: (sum, count)}`` aggregated by :meth:`evaluate`."""
        return {}

    def eval_batches(self, split: str):
        """Yield the batches of a held-out ``split`` (fixed, no randomness)."""
        raise NotImplementedError

    # ---- stateful tasks (truncated BPTT); the defaults describe a stateless task ----------
    def forward(self, model: torch.nn.Module, inputs, state=None):
        """``(outputs, new_state)`` of ``model`` on ``inputs`` from ``state``.

        Stateless default: the model's outputs from its initial state, and ``None``.
        """
        return model_outputs(model, inputs), None

    def detach_state(self, state):
        """``state`` with every tensor detached from the autograd graph."""
        return _tree_map(torch.Tensor.detach, state)

    def initial_state(self, model: torch.nn.Module):
        """A template of the carried state (``None`` for a stateless task)."""
        return None

    def pack_state(self, state) -> list[torch.Tensor]:
        """The tensors of ``state`` in a fixed order (``[]`` for ``None``), for checkpoints."""
        return _tree_leaves(state)

    def unpack_state(self, model: torch.nn.Module, packed):
        """The inverse of :meth:`pack_state`: ``packed`` tensors in the structure of
        :meth:`initial_state` (``None`` when nothing was packed)."""
        if not packed:
            return None
        template = self.initial_state(model)
        if template is None:
            raise CheckpointError(f"task {self.name!r} carries no recurrent state but the "
                                  f"checkpoint stores {len(packed)} state tensors")
        return _tree_rebuild(template, list(packed))

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, split: str = VALID) -> dict[str, float]:
        """Average loss and metrics of ``model`` over ``split``."""
        was_training = model.training
        model.eval()
        try:
            sums: dict[str, list[float]] = {}
            for x, y, mask in self.eval_batches(split):
                out = model_outputs(model, x)
                n = float(x.shape[0])
                acc = {"loss": (float(self.loss(out, y, mask)) * n, n)}
                acc.update(self.metrics(out, y, mask))
                for k, (s, c) in acc.items():
                    cur = sums.setdefault(k, [0.0, 0.0])
                    cur[0] += s
                    cur[1] += c
        finally:
            model.train(was_training)
        if not sums:
            raise DatasetError(f"task {self.name!r}: split {split!r} is empty")
        return {k: s / c if c else float("nan") for k, (s, c) in sums.items()}


def _tree_map(fn, obj):
    """Apply ``fn`` to every tensor of nested tuples/lists/NamedTuples (``None`` kept)."""
    return map_tensors(fn, obj, lambda o: InvalidParameterError(
        f"a recurrent state holds tensors, tuples and None, got {type(o).__name__}"))


def _tree_leaves(obj) -> list[torch.Tensor]:
    """The tensors of a nested state, depth first (``None`` skipped)."""
    out: list[torch.Tensor] = []
    _tree_map(out.append, obj)
    return out


def _tree_rebuild(template, leaves: list):
    """``template``'s structure with its tensors replaced, in order, by ``leaves``."""
    it = iter(leaves)
    n_used = 0

    def take(t: torch.Tensor):
        nonlocal n_used
        try:
            new = next(it)
        except StopIteration:
            raise CheckpointError(f"stored recurrent state has {len(leaves)} tensors; the "
                                  "model's state has more") from None
        if not isinstance(new, torch.Tensor) or tuple(new.shape) != tuple(t.shape):
            raise CheckpointError(f"stored recurrent state tensor {n_used} has shape "
                                  f"{tuple(getattr(new, 'shape', ()))}, the model's "
                                  f"{tuple(t.shape)}")
        n_used += 1
        return new.to(device=t.device, dtype=t.dtype)

    out = _tree_map(take, template)
    if n_used != len(leaves):
        raise CheckpointError(f"stored recurrent state has {len(leaves)} tensors; the "
                              f"model's state has {n_used}")
    return out


#: the name the training loop has always used
TrainTask = Task
