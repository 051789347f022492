"""The DuSell & Chiang language-modelling task ``ns:<name>`` (:class:`CFLLanguageModelTask`),
next to its data (:mod:`rnnmem.tasks.dusell`); the ``ns`` evaluation protocol is
:func:`rnnmem.train.evaluate_ns`.

A model reads ``BOS w_1 .. w_n`` as one-hot codes ``(B, n + 1, A + 1)`` and predicts
``w_1 .. w_n EOS``; the loss is the mean next-symbol cross-entropy. Training batches have
one length each, uniform over the valid lengths of the training range (DuSell & Chiang:
40..80).
"""

from __future__ import annotations


import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InvalidParameterError, ShapeError, UnknownNameError
from ._length_sampled import LengthSampledTask, check_family_options
from .registry import register_task_prefix, task_names

__all__ = ["CFLLanguageModelTask", "codes", "lengths_of"]


def _cfl_tasks():
    from .dusell import CFL_TASKS

    return CFL_TASKS


def codes(task, x: np.ndarray, dtype, device) -> torch.Tensor:
    return F.one_hot(torch.as_tensor(x, device=device), task.vocab_size).to(dtype)


def lengths_of(task, spec) -> tuple[int, ...]:
    from ..errors import TaskLengthError

    if isinstance(spec, str):
        lo, _, hi = spec.partition(":")
        try:
            spec = (int(lo), int(hi or lo))
        except ValueError:
            raise InvalidParameterError(f"lengths {spec!r} must look like 'lo:hi'") from None
    if isinstance(spec, tuple) and len(spec) == 2:
        ls = task.valid_lengths(int(spec[0]), int(spec[1]))
    else:
        ls = tuple(int(n) for n in spec if task.has_length(int(n)))
    if not ls:
        raise TaskLengthError(f"task {task.name!r} has no string at the lengths {spec!r}")
    return ls


class CFLLanguageModelTask(LengthSampledTask):
    """A DuSell–Chiang language-modelling task for the training loop (``ns:<name>``).

    Parameters
    ----------
    name : str
        A key of :data:`rnnmem.tasks.dusell.CFL_TASKS`.
    lengths : "lo:hi" or (lo, hi) or ints
        Training lengths (default the task's 40..80), valid ones only.
    valid_size : int
        Validation strings (seeded, over the training lengths); their exact lower bounds
        give the metric ``ce_above_bound``.

    The third element of a batch (the loop's ``mask`` slot) is the per-string lower bound
    :math:`-\\log p(w \\mid n)` (B,), NaN for training batches.
    """

    train_sample_options = {"bound": False}  # training batches need no lower bound

    def __init__(self, name: str, *, lengths=None, valid_size: int = 64):
        super().__init__()
        if name not in _cfl_tasks():
            raise UnknownNameError("task", f"ns:{name}", task_names())
        self.task = _cfl_tasks()[name]
        self._setup(f"ns:{name}", lengths_of(
            self.task, self.task.train_range if lengths is None else lengths), valid_size)
        self.input_dim = self.output_dim = self.task.vocab_size

    def _tensors(self, b):
        x = codes(self.task, b["x"], self.dtype, self.device)  # (B, n+1, A+1)
        y = torch.as_tensor(b["y"], device=self.device)  # (B, n+1)
        return x, y, torch.as_tensor(b["neg_log_p"], dtype=torch.float64)

    def _check(self, outputs, targets):
        if outputs.dim() != 3 or outputs.shape[:2] != targets.shape \
                or outputs.shape[-1] != self.output_dim:
            raise ShapeError(f"task {self.name!r} needs logits {tuple(targets.shape)} + "
                             f"({self.output_dim},), got {tuple(outputs.shape)}")

    def loss(self, outputs, targets, mask=None):
        self._check(outputs, targets)
        return F.cross_entropy(outputs.float().reshape(-1, self.output_dim),
                               targets.reshape(-1).long())

    def metrics(self, outputs, targets, mask):
        self._check(outputs, targets)
        ce = F.cross_entropy(outputs.double().reshape(-1, self.output_dim),
                             targets.reshape(-1).long(), reduction="sum")
        n_tok = float(targets.numel())
        out = {"cross_entropy": (float(ce), n_tok)}
        if mask is not None and torch.isfinite(mask).all():
            out["ce_above_bound"] = (float(ce) - float(mask.sum()), n_tok)
        return out


@register_task_prefix("ns", lambda: list(_cfl_tasks()))
def _ns_task(name: str, **options) -> CFLLanguageModelTask:
    """``"ns:<name>"``: a :class:`CFLLanguageModelTask` (options ``lengths``,
    ``valid_size``)."""
    return CFLLanguageModelTask(name, **check_family_options("ns", name, options))
