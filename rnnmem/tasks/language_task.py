"""``"lang:<language>"``: the training adapter of the formal languages
(:mod:`rnnmem.tasks.languages`), :class:`LanguageTask`."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InvalidParameterError, ShapeError, UnknownNameError
from . import languages as L
from .interface import TRAIN, VALID, Task, numpy_rng_from
from .languages import LANGUAGES
from .registry import register_task_prefix, task_names

__all__ = ["LanguageTask"]


def _language_names() -> list[str]:
    return list(LANGUAGES)


class LanguageTask(Task):
    """A formal-language task from :mod:`rnnmem.tasks.languages` for the loop.

    Inputs are one-hot symbols ``(B, T, |alphabet|)``; the model reads a string left to
    right.

    ``mode="recognition"`` (:class:`~rnnmem.tasks.languages.RecognitionTask`)
        Read at the last symbol: one logit, loss binary cross-entropy
        :math:`-[y\\log\\sigma(\\ell) + (1-y)\\log(1-\\sigma(\\ell))]`, or two logits
        (a model built with ``output_size=2``), loss cross-entropy; metric ``accuracy``
        (:func:`~rnnmem.tasks.languages.recognition_correct`; for two logits the score is
        :math:`\\ell_1 - \\ell_0`).
    ``mode="next_symbol"`` (:class:`~rnnmem.tasks.languages.NextSymbolTask`)
        ``|alphabet| + 1`` logits per position (END included); loss: multi-label binary
        cross-entropy averaged over the unmasked positions and targets; metrics
        ``accuracy`` (whole strings right, :func:`~rnnmem.tasks.languages.next_symbol_correct`)
        and ``position_accuracy``.

    Parameters
    ----------
    language : str
    mode : {"next_symbol", "recognition"}
    lengths : training lengths (ints or a bin spec such as ``"1:40"``), default 1..40
    neg_ratio : float, recognition only
    valid_size : int
        Number of validation strings, drawn once (seeded) from the training lengths.
    test_bins : bin spec, optional
        Extra evaluation splits ``test_<lo>:<hi>`` (e.g. ``"41:60,61:100"``), each
        ``test_size`` strings at lengths spread over the bin (length generalisation,
        Delétang et al. 2023).
    test_size : int
    """

    def __init__(self, language: str, *, mode: str = "next_symbol", lengths=None,
                 neg_ratio: float = 0.5, valid_size: int = 256, test_bins=None,
                 test_size: int = 64):
        super().__init__()
        self._L = L
        modes = {"recognition": L.RecognitionTask, "next_symbol": L.NextSymbolTask}
        if mode not in modes:
            raise InvalidParameterError(f"mode must be one of {', '.join(modes)}, got {mode!r}")
        kw = {"neg_ratio": neg_ratio} if mode == "recognition" else {}
        self.task = modes[mode](language, lengths=lengths, **kw)
        self.language, self.mode = self.task.language, mode
        self.name = f"lang:{self.language.name}"
        for nm, v in (("valid_size", valid_size), ("test_size", test_size)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise InvalidParameterError(f"{nm} must be a positive integer, got {v!r}")
        self.valid_size, self.test_size = valid_size, test_size
        self.bins = L.bin_lengths(self.language, test_bins, per_bin=test_size) \
            if test_bins is not None else {}
        self.eval_splits = (VALID,) + tuple(f"test_{b}" for b in self.bins)
        self.input_dim = len(self.language.alphabet)
        self.output_dim = 1 if mode == "recognition" else self.language.n_targets
        self._eval: dict[str, list] = {}

    def model_defaults(self) -> dict[str, Any]:
        # symbol-level models (rnnmem.models.stack_rnn) name the sizes vocab_size/output_size
        return {**super().model_defaults(), "vocab_size": self.input_dim,
                "output_size": self.output_dim, "mode": self.mode}

    def _tensors(self, b: dict):
        x = torch.as_tensor(b["x"], device=self.device)  # (B, T) ids
        inputs = F.one_hot(x, self.input_dim).to(self.dtype)  # (B, T, A)
        y = torch.as_tensor(b["y"], device=self.device).to(self.dtype)  # (B,) or (B, T, V)
        mask = torch.as_tensor(b["mask"], device=self.device)  # (B, T) bool
        return inputs, y, mask

    def _configured(self) -> None:
        # fixed evaluation sets, drawn once from a seed derived from the run's seed
        self._eval = {}
        rng = np.random.default_rng([self.seed, 1])
        n, bs = self.valid_size, self.batch_size
        self._eval[VALID] = [self._tensors(self.task.sample_batch(rng, min(bs, n - i)))
                             for i in range(0, n, bs)]
        for b, lengths in self.bins.items():
            batches = []
            for k, length in enumerate(lengths):
                share = self.test_size // len(lengths) + (k < self.test_size % len(lengths))
                for i in range(0, share, bs):
                    batches.append(self._tensors(
                        self.task.sample_batch(rng, min(bs, share - i), length)))
            self._eval[f"test_{b}"] = batches

    def batch(self, split, step, generator):
        if split != TRAIN:
            raise InvalidParameterError(f"task {self.name!r} samples only the train split; "
                                        f"held-out splits are {', '.join(self._eval)}")
        return self._tensors(self.task.sample_batch(numpy_rng_from(generator),
                                                    self.batch_size))

    def eval_batches(self, split):
        if split not in self._eval:
            raise InvalidParameterError(f"split {split!r} not in task {self.name!r} "
                                        f"(has {', '.join(self._eval)})")
        yield from self._eval[split]

    metric = "accuracy"

    def _check_width(self, outputs):
        width = outputs.shape[-1]
        ok = (1, 2) if self.mode == "recognition" else (self.output_dim,)
        if outputs.dim() != 3 or width not in ok:
            raise ShapeError(f"task {self.name!r} ({self.mode}) needs model outputs "
                             f"(B, T, {' or '.join(map(str, ok))}), got {tuple(outputs.shape)}")

    def loss(self, outputs, targets, mask):
        self._check_width(outputs)
        if self.mode == "recognition":
            last = outputs[:, -1].float()  # (B, 1) or (B, 2): logits after the whole string
            if last.shape[-1] == 2:  # two classes: cross-entropy
                return F.cross_entropy(last, targets.long())
            return F.binary_cross_entropy_with_logits(last[:, 0], targets.float())
        bce = F.binary_cross_entropy_with_logits(outputs.float(), targets.float(),
                                                 reduction="none")  # (B, T, V)
        m = mask.to(bce.dtype)[..., None].expand_as(bce)
        return (bce * m).sum() / m.sum().clamp_min(1)

    def metrics(self, outputs, targets, mask):
        L = self._L
        o = outputs.detach().float().cpu().numpy()
        y = targets.detach().float().cpu().numpy()  # numpy has no bfloat16
        if self.mode == "recognition":
            last = o[:, -1]  # (B, 1) or (B, 2)
            score = last[:, 0] if last.shape[-1] == 1 else last[:, 1] - last[:, 0]
            ok = L.recognition_correct(score, y.astype(bool))
            return {"accuracy": (float(ok.sum()), float(ok.size))}
        m = mask.cpu().numpy()
        pos = L.next_symbol_position_correct(o, y.astype(bool))  # (B, T)
        ok = L.next_symbol_correct(o, y.astype(bool), m)  # (B,)
        return {"accuracy": (float(ok.sum()), float(ok.size)),
                "position_accuracy": (float(pos[m].sum()), float(m.sum()))}


@register_task_prefix("lang", _language_names)
def _language_task(language: str, **options) -> LanguageTask:
    """``"lang:<language>"``: a :class:`LanguageTask` (options: see its docstring)."""
    if language not in _language_names():
        raise UnknownNameError("task", f"lang:{language}", task_names())
    options.pop("bptt", None)
    return LanguageTask(language, **options)
