r"""Training on DeepMind's transductions: the task family ``dm:<name>``.

A model reads the input tokens, then :math:`m(n)` blank tokens, and writes the output on
the blanks (DeepMind's ``make_model_with_empty_targets``, google-deepmind/
neural_networks_chomsky_hierarchy ``experiments/utils.py``):

.. math::

    \text{input tape} = x_1 \dots x_n\, \underbrace{\varnothing \dots \varnothing}_{m(n)},
    \qquad \hat y_j = \text{logits at position } n + j, \; j = 1..m(n).

Inputs reach the model as one-hot codes ``(B, n + m, V + 1)`` (the blank is token ``V``,
:attr:`~rnnmem.tasks.transductions.Transduction.blank_id`). Each training batch has one
length, drawn uniformly from the training lengths (DeepMind's ``UniformCurriculum`` over
1..40; lengths the task cannot produce are left out, e.g. even ones for
``modular_arithmetic``). The loss is DeepMind's: the cross-entropy at every output position
(padding after a termination token included), averaged over positions and strings.
Metrics: ``accuracy`` = per-token accuracy under the task's mask (DeepMind's
``accuracy_fn``), ``string_accuracy`` = every masked token right.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InvalidParameterError, ShapeError, UnknownNameError
from .interface import TRAIN, VALID, TrainTask, numpy_rng_from
from .registry import register_task_prefix, task_names

__all__ = ["TransductionTask", "tape", "DEFAULT_TRAIN_LENGTHS", "transduction_lengths"]

#: DeepMind's training lengths (``UniformCurriculum(range(1, 41))``)
DEFAULT_TRAIN_LENGTHS = tuple(range(1, 41))


def _transductions():
    from .transductions import TRANSDUCTIONS

    return TRANSDUCTIONS


def transduction_lengths(task, lengths) -> tuple[int, ...]:
    """The lengths of ``lengths`` (ints, or ``"lo:hi"``) that ``task`` produces; raises
    TaskLengthError when none is left."""
    from ..errors import TaskLengthError

    if isinstance(lengths, str):
        lo, sep, hi = lengths.partition(":")
        try:
            lengths = range(int(lo), int(hi if sep else lo) + 1)
        except ValueError:
            raise InvalidParameterError(f"lengths {lengths!r} must look like 'lo:hi'") from None
    out = tuple(sorted({int(n) for n in lengths if task.has_length(n)}))
    if not out:
        raise TaskLengthError(f"task {task.name!r} has no input at any of the lengths given "
                              f"({task.length_rule})")
    return out


def tape(task, x: np.ndarray, *, dtype=torch.float32, device=None) -> torch.Tensor:
    """One-hot tape ``(B, n + m(n), V + 1)``: the inputs ``x`` (B, n), then blanks."""
    x = np.asarray(x)
    B, n = x.shape
    m = task.output_length(n)
    ids = np.concatenate([x, np.full((B, m), task.blank_id, dtype=np.int64)], axis=1)
    t = torch.as_tensor(ids, device=device)
    return F.one_hot(t, task.vocab_size).to(dtype)  # (B, n + m, V + 1)


class TransductionTask(TrainTask):
    """A DeepMind transduction for the training loop (see the module docstring).

    Parameters
    ----------
    name : str
        A key of :data:`rnnmem.tasks.TRANSDUCTIONS`.
    lengths : ints or "lo:hi"
        Training lengths (default 1..40), filtered to those the task produces.
    valid_size : int
        Validation strings, drawn once (seeded) over the training lengths.
    """

    def __init__(self, name: str, *, lengths=DEFAULT_TRAIN_LENGTHS, valid_size: int = 256):
        super().__init__()
        known = _transductions()
        if name not in known:
            raise UnknownNameError("task", f"dm:{name}", task_names())
        self.task = known[name]
        self.name = f"dm:{name}"
        self.lengths = transduction_lengths(self.task, lengths)
        if isinstance(valid_size, bool) or not isinstance(valid_size, int) or valid_size < 1:
            raise InvalidParameterError(f"valid_size must be a positive integer, "
                                        f"got {valid_size!r}")
        self.valid_size = valid_size
        self.input_dim = self.task.vocab_size
        self.output_dim = self.task.output_size
        self.eval_splits = (VALID,)
        self._valid: list = []

    def model_defaults(self) -> dict[str, Any]:
        return {**super().model_defaults(), "vocab_size": self.input_dim,
                "output_size": self.output_dim, "mode": "next_symbol"}

    def _tensors(self, b: dict):
        inputs = tape(self.task, b["x"], dtype=self.dtype, device=self.device)
        y = torch.as_tensor(b["y"], device=self.device)  # (B, m)
        mask = torch.as_tensor(b["mask"], device=self.device)  # (B, m)
        return inputs, y, mask

    def _configured(self) -> None:
        rng = np.random.default_rng([self.seed, 1])
        ls = self.lengths
        self._valid = []
        for i, n in enumerate(ls):  # valid_size strings spread over the lengths
            share = self.valid_size // len(ls) + (i < self.valid_size % len(ls))
            if share:
                self._valid.append(self._tensors(self.task.sample_batch(rng, share, n)))

    def batch(self, split, step, generator):
        if split != TRAIN:
            raise InvalidParameterError(f"task {self.name!r} samples only the train split")
        rng = numpy_rng_from(generator)
        n = self.lengths[int(rng.integers(len(self.lengths)))]
        return self._tensors(self.task.sample_batch(rng, self.batch_size, n))

    def eval_batches(self, split):
        if split != VALID:
            raise InvalidParameterError(f"split {split!r} not in task {self.name!r} "
                                        "(has valid)")
        yield from self._valid

    def _out(self, outputs, targets):
        m = targets.shape[1]
        if outputs.dim() != 3 or outputs.shape[-1] != self.output_dim or outputs.shape[1] < m:
            raise ShapeError(f"task {self.name!r} needs logits (B, T >= {m}, "
                             f"{self.output_dim}), got {tuple(outputs.shape)}")
        return outputs[:, -m:]  # (B, m, O)

    def loss(self, outputs, targets, mask):
        o = self._out(outputs, targets)
        return F.cross_entropy(o.float().reshape(-1, o.shape[-1]), targets.reshape(-1).long())

    def metrics(self, outputs, targets, mask):
        o = self._out(outputs, targets)
        ok = (o.argmax(-1) == targets) & torch.isfinite(o).all(-1)  # (B, m)
        m = mask.bool()
        whole = (ok | ~m).all(1)
        return {"accuracy": (float((ok & m).sum()), float(m.sum())),
                "string_accuracy": (float(whole.sum()), float(whole.numel()))}


@register_task_prefix("dm", lambda: list(_transductions()))
def _dm_task(name: str, **options) -> TransductionTask:
    """``"dm:<name>"``: a :class:`TransductionTask` (options ``lengths``, ``valid_size``)."""
    options.pop("bptt", None)
    extra = sorted(set(options) - {"lengths", "valid_size"})
    if extra:
        raise InvalidParameterError(f"task 'dm:{name}': unknown option {extra[0]!r}; "
                                    "allowed: lengths, valid_size")
    return TransductionTask(name, **options)
