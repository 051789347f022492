r"""DuSell & Chiang's protocol ``ns``: language models scored above the exact lower bound.

The training task ``ns:<name>`` (:class:`CFLLanguageModelTask`) and the evaluation
:func:`evaluate_ns`, for the tasks of :mod:`rnnmem.tasks.dusell` (DuSell & Chiang 2020,
CoNLL; 2022, ICLR; bdusell/nondeterministic-stack-rnn ``src/cfl_language_modeling``).

A model reads ``BOS w_1 .. w_n`` as one-hot codes ``(B, n + 1, A + 1)`` and predicts
``w_1 .. w_n EOS`` (logits ``(B, n + 1, A + 1)``); the loss is the mean next-symbol
cross-entropy. Training batches have one length each, uniform over the valid lengths of
the training range (DuSell & Chiang: 40..80; they draw a fixed set of 10,000 strings, here
a fresh batch is drawn at every step). At test length :math:`n`, with :math:`k` strings,

.. math::

    \mathrm{CE}(n) = \frac{\sum_b \sum_{t=1}^{n+1} -\log q(y_{bt} \mid x_{b,\le t})}{k (n+1)},
    \quad
    \mathrm{LB}(n) = \frac{\sum_b -\log p(w_b \mid n)}{k (n+1)}, \quad
    \Delta(n) = \mathrm{CE}(n) - \mathrm{LB}(n),

(their per-length ``compute_cross_entropy_diff`` of the perplexity and the lower-bound
perplexity with one valid length), with a 95% band from the per-string differences.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InvalidParameterError, ShapeError
from ..tasks.cfl_task import CFLLanguageModelTask as CFLLanguageModelTask
from ..tasks.cfl_task import codes as _codes

__all__ = ["CFLLanguageModelTask", "NSReport", "evaluate_ns"]


@dataclass
class NSReport:
    """Result of :func:`evaluate_ns`: per length the model's cross-entropy per symbol, the
    exact lower bound per symbol, their difference and its 95% band; ``score`` is the mean
    difference over the lengths (nats per symbol)."""

    task: str
    lengths: list[int]
    cross_entropy: list[float]
    lower_bound: list[float]
    ce_diff: list[float]
    band_lo: list[float]
    band_hi: list[float]
    k: int
    seed: int
    score: float

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def table(self) -> str:
        out = [f"{self.task} (ns protocol, k={self.k}; nats per symbol)",
               f"{'length':>7} {'model CE':>9} {'lower bd':>9} {'CE diff':>9} {'95% band':>19}"]
        for i, n in enumerate(self.lengths):
            out.append(f"{n:>7d} {self.cross_entropy[i]:>9.4f} {self.lower_bound[i]:>9.4f} "
                       f"{self.ce_diff[i]:>9.4f} [{self.band_lo[i]:.4f}, {self.band_hi[i]:.4f}]")
        out.append(f"score (mean CE diff over {len(self.lengths)} lengths): {self.score:.4f}")
        return "\n".join(out)


@torch.no_grad()
def evaluate_ns(model: torch.nn.Module, task, lengths: Iterable[int] | None = None,
                k: int = 512, seed: int = 0, *, batch_size: int = 256) -> NSReport:
    """Cross-entropy above the exact lower bound, per length (see the module docstring).

    A pure function of its arguments: the strings of length ``n`` come from
    ``numpy.random.default_rng([seed, n])``. ``lengths`` defaults to the valid lengths of
    the task's test range (40..100); a length without strings raises TaskLengthError.
    """
    from ..tasks.dusell import get_cfl_task

    t = get_cfl_task(task)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
        raise InvalidParameterError(f"k (strings per length) must be a positive integer, "
                                    f"got {k!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidParameterError(f"batch_size must be a positive integer, got {batch_size!r}")
    if lengths is None:
        ls = t.valid_lengths(*t.test_range)
    else:
        ls = tuple(int(n) for n in lengths)
        if not ls:
            raise InvalidParameterError("lengths: give at least one test length")
        for n in ls:
            t.require_length(n)
    p = next(model.parameters())
    was = model.training
    model.eval()
    ce, lb, diff, lo, hi = [], [], [], [], []
    try:
        for n in ls:
            b = t.sample_batch(np.random.default_rng([int(seed), n]), int(k), n)
            per = np.empty(int(k))
            for s in range(0, int(k), batch_size):
                x = _codes(t, b["x"][s:s + batch_size], p.dtype, p.device)
                o = model(x)
                o = o[0] if isinstance(o, (tuple, list)) else o
                y = torch.as_tensor(b["y"][s:s + batch_size], device=o.device)
                if o.dim() != 3 or o.shape[:2] != y.shape or o.shape[-1] != t.output_size:
                    raise ShapeError(f"model must return logits {tuple(y.shape)} + "
                                     f"({t.output_size},), got {tuple(o.shape)}")
                tok = F.cross_entropy(o.double().transpose(1, 2), y, reduction="none")
                per[s:s + batch_size] = tok.sum(1).cpu().numpy()
            d = (per - b["neg_log_p"]) / (n + 1)  # (k,) per-string difference per symbol
            half = 1.96 * (d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else 0.0)
            ce.append(float(per.sum() / (len(per) * (n + 1))))
            lb.append(float(b["neg_log_p"].sum() / (len(per) * (n + 1))))
            diff.append(float(d.mean()))
            lo.append(float(d.mean() - half))
            hi.append(float(d.mean() + half))
    finally:
        model.train(was)
    return NSReport(task=t.name, lengths=list(ls), cross_entropy=ce, lower_bound=lb,
                    ce_diff=diff, band_lo=lo, band_hi=hi, k=int(k), seed=int(seed),
                    score=float(np.mean(diff)))
