"""The training side shared by the length-sampled task families (``dm:`` transductions,
``ns:`` DuSell-Chiang language models): every training batch has one length, drawn
uniformly from the task's training lengths; ``valid_size`` validation strings are drawn
once (seeded) and spread over those lengths. A subclass sets ``self.task`` (the data: its
``sample_batch(rng, n_strings, length, **options)``) and turns a sampled batch into tensors
(:meth:`LengthSampledTask._tensors`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InvalidParameterError
from .interface import TRAIN, VALID, TrainTask, numpy_rng_from

__all__ = ["LengthSampledTask", "check_family_options"]


class LengthSampledTask(TrainTask):
    """Base class: ``name`` (``prefix:key``), ``lengths`` (the training lengths) and
    ``valid_size`` are set by :meth:`_setup`; ``train_sample_options`` are passed to the
    data's ``sample_batch`` for training batches only."""

    train_sample_options: dict[str, Any] = {}

    def _setup(self, name: str, lengths: tuple[int, ...], valid_size: int) -> None:
        if isinstance(valid_size, bool) or not isinstance(valid_size, int) or valid_size < 1:
            raise InvalidParameterError(f"valid_size must be a positive integer, "
                                        f"got {valid_size!r}")
        self.name, self.lengths, self.valid_size = name, lengths, valid_size
        self.eval_splits = (VALID,)
        self._valid: list = []

    def model_defaults(self) -> dict[str, Any]:
        return {**super().model_defaults(), "vocab_size": self.input_dim,
                "output_size": self.output_dim, "mode": "next_symbol"}

    def _tensors(self, b: dict):  # pragma: no cover - every subclass defines it
        raise NotImplementedError

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
        return self._tensors(self.task.sample_batch(rng, self.batch_size, n,
                                                    **self.train_sample_options))

    def eval_batches(self, split):
        if split != VALID:
            raise InvalidParameterError(f"split {split!r} not in task {self.name!r} "
                                        "(has valid)")
        yield from self._valid


def check_family_options(prefix: str, name: str, options: dict) -> dict:
    """The options of ``prefix:name`` (``lengths``, ``valid_size``; the loop's ``bptt`` is
    dropped), an unknown one refused by name."""
    options = dict(options)
    options.pop("bptt", None)
    extra = sorted(set(options) - {"lengths", "valid_size"})
    if extra:
        raise InvalidParameterError(f"task '{prefix}:{name}': unknown option {extra[0]!r}; "
                                    "allowed: lengths, valid_size")
    return options
