r"""Length generalisation as the field measures it: DeepMind's ``dm`` protocol.

:func:`evaluate_dm` is Delétang et al. (2023), "Neural Networks and the Chomsky
Hierarchy", ICLR (google-deepmind/neural_networks_chomsky_hierarchy,
``experiments/range_evaluation.py`` and ``example.py``): train on lengths uniform in
1..40, then test **every** length :math:`n` in 41..N with :math:`k` strings each (their
default :math:`k = 512`, :math:`N = 500`), scoring per-token accuracy under the task's mask,

.. math::

    \mathrm{acc}(n) = \frac{\sum_{b} \sum_j M_{bj}\,[\arg\max \hat y_{bj} = y_{bj}]}
                          {\sum_b \sum_j M_{bj}}, \qquad
    \mathrm{score} = \frac{1}{|\mathcal N|} \sum_{n \in \mathcal N} \mathrm{acc}(n),

with a 95% confidence band per length from the delta method for the ratio estimator,
:math:`\mathrm{acc}(n) \pm 1.96\,\sqrt{\widehat{\mathrm{Var}}(c_b - \mathrm{acc}\, m_b)
/ k} / \bar m` (:math:`c_b`, :math:`m_b`: right and counted tokens of string :math:`b`).
DeepMind averages the ratio over sub-batches of 64; with the whole length as one batch the
two agree exactly for tasks without a termination mask.

Stack depth. A superposition or stratification stack's weights do not depend on its
depth, so the same trained model can be run with the depth equal to the sequence length
(``"sequence"``, nothing ever dropped) or fixed (DeepMind's default 30,
:data:`DEEPMIND_STACK_DEPTH`: a push on a full stack drops the bottom cell).
:func:`evaluate_dm_depths` reports both side by side. A fixed depth smaller than the
number of steps of a test string (:math:`n + m(n)`, the most pushes it can take) raises
:class:`~rnnmem.errors.StackCapacityError` unless ``overflow="drop"`` (DeepMind's
behaviour) is asked for explicitly.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Iterable

import numpy as np
import torch

from ..errors import InvalidParameterError, ShapeError, StackCapacityError
from .transduction import tape, transduction_lengths

__all__ = ["DMReport", "evaluate_dm", "evaluate_dm_depths", "dm_test_lengths",
           "model_with_stack_depth", "DEEPMIND_STACK_DEPTH", "DM_TEST_RANGE", "OVERFLOW"]

#: DeepMind's stack size (``StackRNNCore(stack_size=30)``)
DEEPMIND_STACK_DEPTH = 30
#: DeepMind's test range (train 1..40, test 41..500)
DM_TEST_RANGE = (41, 500)
OVERFLOW = ("error", "drop")


def dm_test_lengths(task, lo: int = DM_TEST_RANGE[0], hi: int = DM_TEST_RANGE[1]
                    ) -> tuple[int, ...]:
    """Every length in ``lo..hi`` that ``task`` produces (DeepMind evaluates each)."""
    from ..tasks.transductions import get_transduction

    t = get_transduction(task)
    return transduction_lengths(t, range(int(lo), int(hi) + 1))


@dataclass
class DMReport:
    """Result of :func:`evaluate_dm`.

    Attributes
    ----------
    task : str
    lengths : list of int
    accuracy, band_lo, band_hi : list of float
        Masked per-token accuracy per length and its 95% band.
    string_accuracy : list of float
        Fraction of strings with every masked token right, per length.
    k, seed : int
    score : float
        Mean of ``accuracy`` over the lengths (DeepMind's score).
    stack_depth : str
        ``"sequence"`` (depth = number of steps), ``"<D>"`` for a fixed depth, or
        ``"none"`` for a model without a stack.
    overflow : str
        ``"error"`` or ``"drop"`` (whether test strings may overflow a fixed depth).
    overflowing_lengths : list of int
        Lengths whose strings take more steps than a fixed depth holds.
    nonfinite : int
        Output positions with a non-finite logit (counted wrong).
    """

    task: str
    lengths: list[int]
    accuracy: list[float]
    band_lo: list[float]
    band_hi: list[float]
    string_accuracy: list[float]
    k: int
    seed: int
    score: float
    stack_depth: str
    overflow: str = "error"
    overflowing_lengths: list[int] = field(default_factory=list)
    nonfinite: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def binned(self, bins=None) -> dict[str, float]:
        """Mean per-length accuracy within each length bin (the coarser view of the
        ``bins`` protocol; default bins 41:60, 61:100, 101:200, 201:300, 301:500); bins
        without a tested length are left out."""
        from ..tasks.languages import DEFAULT_TEST_BINS, length_bins

        out = {}
        for b in (DEFAULT_TEST_BINS if bins is None else length_bins(bins)):
            acc = [a for n, a in zip(self.lengths, self.accuracy) if b.lo <= n <= b.hi]
            if acc:
                out[str(b)] = float(np.mean(acc))
        return out

    def table(self, every: int = 1) -> str:
        """Per-length rows (every ``every``-th length) and the score."""
        out = [f"{self.task} (dm protocol, k={self.k}, stack depth {self.stack_depth})",
               f"{'length':>7} {'accuracy':>9} {'95% band':>17} {'strings':>8}"]
        for i, n in enumerate(self.lengths):
            if i % every == 0 or i == len(self.lengths) - 1:
                out.append(f"{n:>7d} {self.accuracy[i]:>9.4f} "
                           f"[{self.band_lo[i]:.4f}, {self.band_hi[i]:.4f}] "
                           f"{self.string_accuracy[i]:>8.4f}")
        out.append(f"score (mean over {len(self.lengths)} lengths "
                   f"{self.lengths[0]}..{self.lengths[-1]}): {self.score:.4f}")
        return "\n".join(out)


def _check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
        raise InvalidParameterError(f"k (strings per length) must be a positive integer, "
                                    f"got {k!r}")
    return int(k)


def _has_stack(model) -> bool:
    return bool(getattr(model, "has_stack", False))


def model_with_stack_depth(model: torch.nn.Module, depth) -> torch.nn.Module:
    """``model`` with its stack depth replaced (``None``: the sequence length), same weights.

    A registered model with a ``stack_depth`` option is rebuilt from its config with the
    new depth and given the same state dict (the stack's parameters do not depend on the
    depth); a model that already has that depth is returned as is.
    """
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int)
                              or depth < 1):
        raise InvalidParameterError(f"stack depth must be a positive integer or None "
                                    f"(the sequence length), got {depth!r}")
    cfg = getattr(model, "config", None)
    if not _has_stack(model) or not isinstance(cfg, dict) or "stack_depth" not in cfg:
        raise InvalidParameterError(f"{type(model).__name__} has no stack depth to set")
    if cfg["stack_depth"] == depth:
        return model
    from ..models.registry import build_model

    p = next(model.parameters())
    new = build_model(model.model_name, **{**cfg, "stack_depth": depth,
                                           "dtype": str(p.dtype).replace("torch.", ""),
                                           "device": str(p.device)})
    new.load_state_dict(model.state_dict())
    return new.train(model.training)


def _forward(model, x):
    out = model(x)
    return out[0] if isinstance(out, (tuple, list)) else out


@torch.no_grad()
def evaluate_dm(model: torch.nn.Module, task, lengths: Iterable[int] | None = None,
                k: int = 512, seed: int = 0, *, batch_size: int = 256,
                overflow: str = "error") -> DMReport:
    """DeepMind's length-generalisation score of ``model`` on a transduction.

    A pure function of its arguments: the strings of length ``n`` are drawn from
    ``numpy.random.default_rng([seed, n])``.

    Parameters
    ----------
    model : module mapping one-hot tapes ``(B, T, V + 1)`` to logits ``(B, T, O)``
    task : str or Transduction
    lengths : iterable of int, optional
        Test lengths (default: :func:`dm_test_lengths`, every valid length in 41..500).
        A length the task cannot produce raises TaskLengthError.
    k : int
        Strings per length (DeepMind: 512).
    seed : int
    batch_size : int
        Strings per forward pass (memory only; the result does not depend on it).
    overflow : {"error", "drop"}
        With a fixed stack depth smaller than a test string's number of steps: raise
        StackCapacityError (default) or let the stack drop its bottom (DeepMind).

    Returns
    -------
    DMReport
    """
    from ..tasks.transductions import get_transduction

    t = get_transduction(task)
    k = _check_k(k)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidParameterError(f"batch_size must be a positive integer, got {batch_size!r}")
    if overflow not in OVERFLOW:
        raise InvalidParameterError(f"overflow must be one of {OVERFLOW}, got {overflow!r}")
    if lengths is None:
        ls = dm_test_lengths(t)
    else:
        ls = tuple(int(n) for n in lengths)
        if not ls:
            raise InvalidParameterError("lengths: give at least one test length")
        for n in ls:
            t.require_length(n)
    depth = getattr(model, "stack_depth", None) if _has_stack(model) else None
    over = [n for n in ls if depth is not None and n + t.output_length(n) > depth]
    if over and overflow == "error":
        raise StackCapacityError(
            f"test length {over[0]} of {t.name!r} takes {over[0] + t.output_length(over[0])} "
            f"steps, more than the fixed stack depth {depth} holds; use a depth >= "
            f"{max(n + t.output_length(n) for n in ls)}, the sequence length "
            "(stack_depth=None), or overflow='drop' (DeepMind's fixed depth)")
    p = next(model.parameters())
    was = model.training
    model.eval()
    acc, lo, hi, sacc, bad = [], [], [], [], 0
    try:
        for n in ls:
            b = t.sample_batch(np.random.default_rng([int(seed), n]), k, n)
            m = t.output_length(n)
            right = np.zeros(k)
            count = b["mask"].sum(1).astype(float)  # (k,)
            whole = np.zeros(k, dtype=bool)
            for s in range(0, k, batch_size):
                x = tape(t, b["x"][s:s + batch_size], dtype=p.dtype, device=p.device)
                o = _forward(model, x)
                if not isinstance(o, torch.Tensor) or o.dim() != 3 or o.shape[1] != n + m \
                        or o.shape[-1] != t.output_size:
                    raise ShapeError(f"model must return logits (B, {n + m}, {t.output_size}), "
                                     f"got {tuple(getattr(o, 'shape', ()))}")
                o = o[:, -m:].double().cpu()
                fin = torch.isfinite(o).all(-1).numpy()  # (B, m)
                pred = o.nan_to_num(0.0).argmax(-1).numpy()
                ok = (pred == b["y"][s:s + batch_size]) & fin
                mk = b["mask"][s:s + batch_size]
                bad += int((~fin & mk).sum())
                right[s:s + batch_size] = (ok & mk).sum(1)
                whole[s:s + batch_size] = (ok | ~mk).all(1)
            a = right.sum() / count.sum()
            var = np.var(right - a * count, ddof=1) if k > 1 else 0.0
            half = 1.96 * math.sqrt(var / k) / count.mean()
            acc.append(float(a))
            lo.append(float(max(a - half, 0.0)))
            hi.append(float(min(a + half, 1.0)))
            sacc.append(float(whole.mean()))
    finally:
        model.train(was)
    label = "none" if not _has_stack(model) else ("sequence" if depth is None else str(depth))
    return DMReport(task=t.name, lengths=list(ls), accuracy=acc, band_lo=lo, band_hi=hi,
                    string_accuracy=sacc, k=k, seed=int(seed), score=float(np.mean(acc)),
                    stack_depth=label, overflow=overflow, overflowing_lengths=over,
                    nonfinite=bad)


def evaluate_dm_depths(model: torch.nn.Module, task, lengths=None, k: int = 512,
                       seed: int = 0, *, depths=(None, DEEPMIND_STACK_DEPTH),
                       batch_size: int = 256, overflow: str = "drop") -> list[DMReport]:
    """:func:`evaluate_dm` of the same weights at each stack depth of ``depths`` (``None``:
    the sequence length), for reporting side by side; a model without a stack gives one
    report. ``overflow`` applies to the fixed depths (default ``"drop"``: DeepMind's)."""
    if not _has_stack(model):
        return [evaluate_dm(model, task, lengths, k, seed, batch_size=batch_size)]
    depths = list(depths)
    if not depths:
        raise InvalidParameterError("depths: give at least one stack depth")
    return [evaluate_dm(model_with_stack_depth(model, d), task, lengths, k, seed,
                        batch_size=batch_size, overflow=overflow) for d in depths]
