"""The Penn Treebank recipe as a :class:`~rnnmem.train.TrainConfig`: :func:`ptb_config`.

The task itself (truncated BPTT, the state carried across windows, perplexity) is
:class:`rnnmem.tasks.ptb_task.PTBTask`, re-exported here with :func:`lm_loss` and
:data:`DEFAULT_BPTT` for the callers that import them from this module.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from ..tasks import ptb
from ..tasks.interface import TRAIN
from ..tasks.ptb_task import DEFAULT_BPTT, PTBTask, lm_loss
from .config import TrainConfig

__all__ = ["PTBTask", "lm_loss", "ptb_config", "DEFAULT_BPTT"]


def ptb_config(model: str = "stack_rnn", *, model_kwargs: Mapping[str, Any] | None = None,
               task_kwargs: Mapping[str, Any] | None = None, **changes) -> TrainConfig:
    """A :class:`TrainConfig` for the PTB with the recipe's settings.

    Defaults: ``task="ptb"``, ``bptt=35``, ``batch_size=32``, SGD at ``lr=20`` (inside
    DuSell & Chiang's search range [1, 100]), gradient-norm clipping at ``0.25`` (inside
    their [0.0112, 1.12]), ``schedule="plateau"`` with ``plateau_factor=1/1.5``,
    ``plateau_patience=0`` and ``plateau_threshold=0`` (the rate is divided by 1.5 after
    every evaluation without a validation improvement), one evaluation and one checkpoint
    per epoch (``eval_every = checkpoint_every =`` the number of BPTT windows of the
    training split, computed from the data), ``epochs=100``, float32. The model is a
    one-layer LSTM with 256 units and embedding size 256: ``model_kwargs`` are merged over
    ``{"controller": "lstm", "width": 256, "embedding_dim": 256}``. Any
    :class:`TrainConfig` field can be changed through ``changes``.
    """
    mk = {"controller": "lstm", "width": 256, "embedding_dim": 256}
    mk.update(dict(model_kwargs or {}))
    tk = dict(task_kwargs or {})
    base = dict(model=model, task="ptb", model_kwargs=mk, task_kwargs=tk,
                bptt=DEFAULT_BPTT, batch_size=32, optimizer="sgd", lr=20.0, grad_clip=0.25,
                schedule="plateau", plateau_factor=1 / 1.5, plateau_patience=0,
                plateau_threshold=0.0, epochs=100, dtype="float32")
    base.update(changes)
    if "eval_every" not in changes or "checkpoint_every" not in changes:
        corpus_opts = {k: tk[k] for k in ("source", "verify", "max_tokens", "max_vocab")
                       if k in tk}
        n = ptb.load_corpus(**corpus_opts).n_tokens(TRAIN)
        per_epoch = ptb.n_chunks(math.ceil(n / base["batch_size"]), base["bptt"])
        base.setdefault("eval_every", per_epoch)
        base.setdefault("checkpoint_every", per_epoch)
    return TrainConfig(**base)
