r"""Word-level language modelling on the Penn Treebank with truncated BPTT.

:class:`PTBTask` is a *stateful* :class:`~rnnmem.tasks.interface.Task` (see the protocol in
:mod:`rnnmem.tasks.interface`): the training stream is laid out in ``batch_size`` contiguous
columns (:func:`rnnmem.tasks.ptb.batchify`) and cut into windows of ``bptt`` steps
(:func:`rnnmem.tasks.ptb.bptt_chunks`); step :math:`s` trains on window
:math:`s \bmod n_\text{chunks}`, in order, from the recurrent state the previous window left
(detached, so gradients are truncated at the window boundary). Every epoch starts from the
model's initial state.

The loss is the mean cross-entropy (nats per token) over the non-padding targets,

.. math::

    \mathcal L = -\frac{1}{|\Omega|} \sum_{(b,t) \in \Omega}
        \log \operatorname{softmax}(z_{b,t})_{y_{b,t}}, \qquad
    \mathrm{PPL} = \exp \mathcal L ,

and :meth:`PTBTask.evaluate` makes one full pass over a held-out split, carrying the state
across windows, and reports ``loss`` (the token-weighted mean above), ``perplexity``,
``accuracy`` (top-1 next word) and ``tokens``. The validation ``loss`` drives ``best.pt`` and
the plateau learning-rate schedule (``schedule="plateau"``; the decision is the same on
perplexity, which is monotone in the loss, when ``plateau_threshold=0``).

Recipe (DuSell & Chiang 2023, ICLR, code ``bdusell/nondeterministic-stack-rnn``,
``natural_language_modeling/train_on_ptb.bash``): one-layer LSTM with 256 units, input
embedding of the hidden size, batch 32, BPTT 35 for training and evaluation, SGD with the
loss averaged over tokens, learning rate divided by 1.5 after every epoch without a
validation improvement (patience 0), early stopping after 2, at most 100 epochs, uniform
initialisation in :math:`\pm 0.05`, no dropout; learning rate and clipping threshold were
drawn by random search (log-uniform in [1, 100] and [0.0112, 1.12]). The defaults of
:func:`rnnmem.train.lm.ptb_config` follow this recipe with fixed values where they searched (see its
docstring); :class:`rnnmem.models.stack_rnn.StackRNN` keeps torch's default
initialisation.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DatasetError, InvalidParameterError, ShapeError
from . import ptb
from .interface import TEST, TRAIN, VALID, Task
from .ptb import IGNORE_INDEX
from .registry import check_options, register_task

__all__ = ["PTBTask", "lm_loss", "DEFAULT_BPTT"]

DEFAULT_BPTT = 35


def lm_loss(logits: torch.Tensor, targets: torch.Tensor, *, reduction: str = "mean"):
    """Cross-entropy of next-token logits ``(B, T, V)`` against ids ``(B, T)``.

    Targets equal to :data:`rnnmem.tasks.ptb.IGNORE_INDEX` (padding) are skipped. Computed
    in at least float32 (half-precision logits are upcast). ``reduction="sum"`` returns the
    summed negative log-likelihood (for token-weighted averages over batches).
    """
    if logits.dim() != 3 or targets.shape != logits.shape[:2]:
        raise ShapeError(f"logits must be (B, T, V) and targets (B, T); got "
                         f"{tuple(logits.shape)} and {tuple(targets.shape)}")
    z = logits.reshape(-1, logits.shape[-1])  # (B*T, V)
    if z.dtype in (torch.float16, torch.bfloat16):
        z = z.float()
    return F.cross_entropy(z, targets.reshape(-1).long(), ignore_index=IGNORE_INDEX,
                           reduction=reduction)


class PTBTask(Task):
    """Penn Treebank language modelling, truncated BPTT, state carried between windows.

    Parameters
    ----------
    source : ``"treebank"`` or a directory
        See :func:`rnnmem.tasks.ptb.load_ptb`.
    bptt : int
        Truncation length (window) for training and evaluation (35 in the recipe).
    max_tokens : int or dict split -> int, optional
        Keep only the first tokens of the splits (smoke and quick runs).
    max_vocab : int, optional
        Truncate the vocabulary to the most frequent types (quick runs; not comparable to
        published perplexities).
    eval_batch_size : int, optional
        Columns for evaluation (default: the training batch size).
    embedding_dim : int or None
        Input embedding size suggested to the model (``model_kwargs`` override it; the
        recipe uses the hidden size, 256). ``None``: the model's default (one-hot input).
    verify : bool
        Check the MD5 digests of the data.
    eval_splits : sequence of str
        Held-out splits evaluated by the loop (default ``("valid", "test")``); the first
        one's loss selects ``best.pt`` and drives the plateau schedule.
    corpus : rnnmem.tasks.ptb.Corpus, optional
        An already loaded corpus (then ``source``/``max_tokens``/``max_vocab`` are unused).
    """

    name = "ptb"
    stateful = True
    metric = "perplexity"

    def __init__(self, source: str | Path = "treebank", *, bptt: int | None = DEFAULT_BPTT,
                 max_tokens=None, max_vocab: int | None = None,
                 eval_batch_size: int | None = None, embedding_dim: int | None = 256,
                 verify: bool = True, eval_splits=(VALID, TEST), corpus=None):
        super().__init__()
        self._ptb = ptb
        bptt = DEFAULT_BPTT if bptt is None else bptt
        if isinstance(bptt, bool) or not isinstance(bptt, int) or bptt < 1:
            raise InvalidParameterError(f"bptt must be a positive integer, got {bptt!r}")
        for nm, v in (("eval_batch_size", eval_batch_size), ("embedding_dim", embedding_dim)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise InvalidParameterError(f"{nm} must be a positive integer or None, "
                                            f"got {v!r}")
        if isinstance(eval_splits, str):
            eval_splits = (eval_splits,)
        eval_splits = tuple(eval_splits)
        bad = [s for s in eval_splits if s not in (TRAIN, VALID, TEST)]
        if not eval_splits or bad:
            raise InvalidParameterError(f"eval_splits must name some of train, valid, test; "
                                        f"got {eval_splits!r}")
        self.corpus = corpus if corpus is not None else ptb.load_corpus(
            source, verify=verify, max_tokens=max_tokens, max_vocab=max_vocab)
        self.vocab = self.corpus.vocab
        self.input_dim = self.output_dim = len(self.vocab)
        self.bptt, self.eval_batch_size, self.embedding_dim = bptt, eval_batch_size, embedding_dim
        self.eval_splits = eval_splits
        self._train: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._eval_cache: dict[str, list] = {}
        self._configured()

    # ---- data ------------------------------------------------------------------------
    def _chunks(self, split: str, n_batch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        ptb = self._ptb
        if split not in self.corpus.ids:
            raise InvalidParameterError(f"split {split!r} not in task {self.name!r} "
                                        f"(has {', '.join(self.corpus.ids)})")
        x, y = ptb.batchify(self.corpus.ids[split], n_batch, pad_input=self.vocab.eos_id)
        return [(torch.as_tensor(np.ascontiguousarray(a), device=self.device),
                 torch.as_tensor(np.ascontiguousarray(b), device=self.device))
                for a, b in ptb.bptt_chunks(x, y, self.bptt)]  # each (B, <= bptt)

    def _configured(self) -> None:
        self._train = self._chunks(TRAIN, self.batch_size)
        self._eval_cache = {}
        self.steps_per_epoch = len(self._train)

    def _eval_chunks(self, split: str):
        if split not in self._eval_cache:
            self._eval_cache[split] = self._chunks(split, self.eval_batch_size or self.batch_size)
        return self._eval_cache[split]

    @property
    def splits(self) -> tuple[str, ...]:
        """The corpus's splits (``train``, ``valid``, ``test``)."""
        return tuple(self.corpus.ids)

    def model_defaults(self) -> dict[str, Any]:
        d = {**super().model_defaults(), "vocab_size": self.input_dim,
             "output_size": self.output_dim, "mode": "lm"}
        if self.embedding_dim is not None:
            d["embedding_dim"] = self.embedding_dim
        return d

    def batch(self, split: str, step: int, generator: torch.Generator | None = None):
        """Window ``step mod steps_per_epoch`` of the training columns: ``(x, y, None)``.

        ``x`` (B, t) input ids and ``y`` (B, t) target ids (padding marked with
        :data:`rnnmem.tasks.ptb.IGNORE_INDEX`), ``t <= bptt``. The order is fixed (no
        randomness): consecutive steps are consecutive windows, as truncated BPTT needs.
        """
        if split != TRAIN:
            raise InvalidParameterError(f"task {self.name!r} trains on 'train' only; held-out "
                                        "splits are evaluated by evaluate()")
        x, y = self._train[int(step) % self.steps_per_epoch]
        return x, y, None

    def eval_batches(self, split: str):
        for x, y in self._eval_chunks(split):
            yield x, y, None

    # ---- state -------------------------------------------------------------------------
    def forward(self, model, inputs, state=None):
        """``(logits (B, t, V), new_state)`` from ``state`` (``None``: initial state)."""
        out = model(inputs, state, return_state=True)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise InvalidParameterError(
                f"model {type(model).__name__} must return (logits, state) from "
                "model(x, state, return_state=True) to be trained with truncated BPTT")
        return out

    def initial_state(self, model):
        """The state a fresh epoch would carry after its first window (the template)."""
        init = getattr(model, "initial_state", None)
        if init is None:
            return None
        first = self._train[0][0].shape[1]
        try:
            return init(self.batch_size, capacity=first)
        except TypeError:
            return init(self.batch_size)

    # ---- loss and evaluation -----------------------------------------------------------
    def loss(self, outputs, targets, mask=None):
        return lm_loss(outputs, targets)

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, split: str = VALID) -> dict[str, float]:
        """One pass over ``split`` with the state carried across windows.

        Returns ``loss`` (nats per token), ``perplexity`` :math:`= e^{\\text{loss}}`,
        ``accuracy`` (argmax equals the next token) and ``tokens`` (every token of the
        split is counted once).
        """
        was_training = model.training
        model.eval()
        nll, correct, count = 0.0, 0, 0
        state = None
        try:
            for x, y in self._eval_chunks(split):
                logits, state = self.forward(model, x, state)
                nll += float(lm_loss(logits, y, reduction="sum"))
                keep = y != IGNORE_INDEX
                correct += int((logits.argmax(-1).eq(y) & keep).sum())
                count += int(keep.sum())
        finally:
            model.train(was_training)
        if count == 0:
            raise DatasetError(f"task {self.name!r}: split {split!r} is empty")
        loss = nll / count
        return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)),
                "accuracy": correct / count, "tokens": float(count)}


_OPTIONS = {"source", "bptt", "max_tokens", "max_vocab", "eval_batch_size", "embedding_dim",
            "verify", "eval_splits"}


@register_task("ptb")
def _ptb_task(**options) -> PTBTask:
    """``"ptb"``: a :class:`PTBTask` (options: see its docstring; ``bptt`` from the config)."""
    check_options("ptb", options, _OPTIONS)
    if isinstance(options.get("max_tokens"), list):
        raise InvalidParameterError("max_tokens: give an integer or a mapping split -> int")
    return PTBTask(**options)
