r"""The :class:`Transduction` base class: an input string, an output string, a mask.

A transduction maps an input string :math:`x \in \{0..V_{in}-1\}^n` to an output string
:math:`y = f(x) \in \{0..V_{out}-1\}^{m(n)}` (a classification task has :math:`m = 1`).
This is the task interface of Delétang et al. (2023), "Neural Networks and the Chomsky
Hierarchy", ICLR (code: google-deepmind/neural_networks_chomsky_hierarchy, ``tasks/``):
their ``sample_batch`` returns one-hot ``input`` (B, n, V_in) and ``output`` (B, m, V_out),
with an ``output_length(n)`` rule and an ``accuracy_mask``. Here the strings are lists of
ints in *their* token encoding (so a sample of their code means the same here), and every
task adds ``solve(input) -> output``, the ground truth computed from the input alone.

How a model sees a transduction (their ``make_model_with_empty_targets``): the input
tokens, then :math:`m(n)` *blank* tokens (id :attr:`Transduction.blank_id` =
``input_size``, so the model's vocabulary is ``input_size + 1``); the model's outputs at
the last :math:`m(n)` positions are the prediction. Accuracy is per token under the
task's mask (positions after a termination token do not count), averaged over the batch.
"""

from __future__ import annotations

import abc
from typing import Sequence

import numpy as np

from ...errors import AlphabetError, TaskLengthError
from .._lang_base import check_batch, check_length, check_rng

__all__ = ["Transduction", "LEVELS", "random_nonzero_bits", "to_binary", "from_binary"]

#: Chomsky levels in DeepMind's naming (``experiments/constants.py`` ``TASK_LEVELS``)
LEVELS = ("regular", "dcf", "cs")


def random_nonzero_bits(rng: np.random.Generator, width: int) -> list[int]:
    """A uniform draw from the :math:`2^w - 1` non-zero ``width``-bit strings (LSB first).

    Equivalent to DeepMind's ``random.randint(1, 2**w - 1)`` written in binary with ``w``
    digits, for any ``w`` (rejection of the all-zero string; no integer overflow).
    """
    while True:
        bits = rng.integers(0, 2, size=width)
        if bits.any():
            return bits.tolist()


def to_binary(value: int, width: int = 0, little_endian: bool = True) -> list[int]:
    """Digits of ``value`` in base 2, zero-filled to ``width`` (``f'{v:b}'.zfill(w)``;
    ``0`` has the one digit ``[0]``), least significant first when ``little_endian``."""
    digits = [int(c) for c in format(int(value), "b").zfill(width)]
    return digits[::-1] if little_endian else digits


def from_binary(digits: Sequence[int], little_endian: bool = True) -> int:
    """Inverse of :func:`to_binary` (an empty list is 0)."""
    v = 0
    for d in (reversed(digits) if little_endian else digits):
        v = 2 * v + int(d)
    return v


class Transduction(abc.ABC):
    """A DeepMind length-generalisation task as a transduction (see the module docstring).

    Attributes
    ----------
    name : str
        DeepMind's task name (``experiments/constants.py``).
    level : {"regular", "dcf", "cs"}
    input_size, output_size : int
        Token counts of the input and output alphabets (DeepMind's ``input_size`` /
        ``output_size``).
    length_rule : str
        Which input lengths the task produces, in words (for error messages).
    termination : int or None
        Output token that ends the meaningful output (masked accuracy counts positions up
        to and including its first occurrence); ``None``: every output position counts.
    """

    name: str = ""
    level: str = ""
    input_size: int = 0
    output_size: int = 0
    length_rule: str = "every length >= 1"
    termination: int | None = None

    # ------------------------------------------------------------------ lengths
    def _has_length(self, n: int) -> bool:
        return n >= 1

    def has_length(self, n) -> bool:
        """Whether the task produces inputs of length ``n``."""
        return self._has_length(check_length(n))

    def require_length(self, n) -> int:
        """``n`` as an int, or :class:`~rnnmem.errors.TaskLengthError`."""
        n = check_length(n)
        if not self._has_length(n):
            raise TaskLengthError(f"task {self.name!r} has no input of length {n} "
                                  f"({self.length_rule})")
        return n

    def valid_lengths(self, lo: int, hi: int) -> tuple[int, ...]:
        """The lengths in ``lo..hi`` (inclusive) that the task produces."""
        lo, hi = check_length(lo, "lo"), check_length(hi, "hi")
        return tuple(n for n in range(lo, hi + 1) if self._has_length(n))

    def output_length(self, n: int) -> int:
        """Length :math:`m(n)` of the output for inputs of length ``n`` (default 1)."""
        return 1

    @property
    def blank_id(self) -> int:
        """The token the model reads while it writes the output (``input_size``)."""
        return self.input_size

    @property
    def vocab_size(self) -> int:
        """Tokens a model reads: the input alphabet and the blank."""
        return self.input_size + 1

    @property
    def is_classification(self) -> bool:
        return self.output_length(10) == 1 and self.output_length(41) == 1

    # ------------------------------------------------------------------ sampling
    @abc.abstractmethod
    def _sample(self, rng: np.random.Generator, n: int) -> tuple[list[int], list[int]]:
        """One (input, output) pair of a valid length ``n``, drawn as DeepMind draws it."""

    def sample(self, rng, length) -> tuple[list[int], list[int]]:
        """One ``(input, output)`` pair, ``len(input) == length``.

        The output is computed by the sampler from its own draw (as in DeepMind's code),
        independently of :meth:`solve`; the tests check that the two agree.
        """
        rng, n = check_rng(rng), self.require_length(length)
        x, y = self._sample(rng, n)
        return [int(v) for v in x], [int(v) for v in y]

    def sample_batch(self, rng, batch, length) -> dict[str, np.ndarray]:
        """``batch`` pairs of one length.

        Returns
        -------
        dict with ``x`` (B, n) int64 input tokens, ``y`` (B, m) int64 output tokens,
        ``mask`` (B, m) bool (the accuracy mask), ``length`` int.
        """
        rng, batch, n = check_rng(rng), check_batch(batch), self.require_length(length)
        m = self.output_length(n)
        x = np.empty((batch, n), dtype=np.int64)
        y = np.empty((batch, m), dtype=np.int64)
        for b in range(batch):
            xi, yi = self._sample(rng, n)
            x[b], y[b] = xi, yi
        return {"x": x, "y": y, "mask": self.mask_array(y), "length": n}

    # ------------------------------------------------------------------ truth
    def check_input(self, tokens) -> list[int]:
        """``tokens`` as a list of ints in ``0..input_size-1`` of a valid length."""
        try:
            x = [int(t) for t in tokens]
        except (TypeError, ValueError):
            raise AlphabetError(f"input of task {self.name!r} must be a sequence of ints, "
                                f"got {tokens!r}") from None
        for i, t in enumerate(x):
            if not 0 <= t < self.input_size:
                raise AlphabetError(f"token {t} at position {i} is outside the input "
                                    f"alphabet 0..{self.input_size - 1} of {self.name!r}")
        self.require_length(len(x))
        return x

    @abc.abstractmethod
    def _solve(self, x: list[int]) -> list[int]:
        """The output of a validated input."""

    def solve(self, tokens) -> list[int]:
        """The correct output for the input ``tokens`` (a list of ints; a classification
        returns a one-element list), of length :meth:`output_length`."""
        x = self.check_input(tokens)
        y = [int(v) for v in self._solve(x)]
        if len(y) != self.output_length(len(x)):  # pragma: no cover - internal invariant
            raise AssertionError(f"{self.name}: solve gave {len(y)} tokens")
        return y

    # ------------------------------------------------------------------ mask
    def mask(self, output) -> list[bool]:
        """Which output positions count for accuracy (DeepMind's ``accuracy_mask``):
        all of them, or up to and including the first :attr:`termination` token."""
        y = [int(v) for v in output]
        if self.termination is None or self.termination not in y:
            return [True] * len(y)
        stop = y.index(self.termination)
        return [i <= stop for i in range(len(y))]

    def mask_array(self, y: np.ndarray) -> np.ndarray:
        """:meth:`mask` of every row of ``y`` (B, m), vectorised: (B, m) bool."""
        y = np.asarray(y)
        if self.termination is None:
            return np.ones(y.shape, dtype=bool)
        hit = y == self.termination
        stop = np.where(hit.any(axis=1), hit.argmax(axis=1), y.shape[1] - 1)  # (B,)
        return np.arange(y.shape[1])[None, :] <= stop[:, None]

    def __repr__(self) -> str:
        return (f"<Transduction {self.name!r} ({self.level}): {self.input_size} input, "
                f"{self.output_size} output tokens>")
