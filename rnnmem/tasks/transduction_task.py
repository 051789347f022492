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


import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InvalidParameterError, ShapeError, UnknownNameError
from ._length_sampled import LengthSampledTask, check_family_options
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


class TransductionTask(LengthSampledTask):
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
        self._setup(f"dm:{name}", transduction_lengths(self.task, lengths), valid_size)
        self.input_dim = self.task.vocab_size
        self.output_dim = self.task.output_size

    def _tensors(self, b: dict):
        inputs = tape(self.task, b["x"], dtype=self.dtype, device=self.device)
        y = torch.as_tensor(b["y"], device=self.device)  # (B, m)
        mask = torch.as_tensor(b["mask"], device=self.device)  # (B, m)
        return inputs, y, mask

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
    return TransductionTask(name, **check_family_options("dm", name, options))
