r"""DeepMind's regular tasks (Delétang et al. 2023, Table 1; ``tasks/regular/``).

All four are classifications (output length 1), every token drawn uniformly.

============================  ===========================  =========  ==========
name                          input tokens                 input n    output
============================  ===========================  =========  ==========
``even_pairs``                ``0 1``                      >= 1       ``0 1``
``parity_check``              ``0 1``                      >= 1       ``0 1``
``cycle_navigation``          ``0`` left ``1`` stay          >= 1       ``0..4``
                              ``2`` right
``modular_arithmetic``        ``0..4``, ``+``=5 ``-``=6    odd        ``0..4``
                              ``*``=7 (``_``=8 unused)
============================  ===========================  =========  ==========
"""

from __future__ import annotations

import numpy as np

from ._base import Transduction

__all__ = ["EvenPairs", "ParityCheck", "CycleNavigation", "ModularArithmetic"]


class EvenPairs(Transduction):
    r"""Whether the number of ``01`` and ``10`` pairs is odd.

    .. math:: y = \Big(\sum_{i=1}^{n-1} [x_i \ne x_{i+1}]\Big) \bmod 2,

    which equals :math:`[x_1 \ne x_n]` (the ground truth computes it that way).
    """

    name, level, input_size, output_size = "even_pairs", "regular", 2, 2

    def _sample(self, rng, n):
        x = rng.integers(0, 2, size=n)
        return x, [int(np.sum(x[:-1] != x[1:]) % 2)]

    def _solve(self, x):
        return [int(x[0] != x[-1])]


class ParityCheck(Transduction):
    r"""Parity of the number of ones, :math:`y = (\sum_i x_i) \bmod 2`."""

    name, level, input_size, output_size = "parity_check", "regular", 2, 2

    def _sample(self, rng, n):
        x = rng.integers(0, 2, size=n)
        return x, [int(x.sum() % 2)]

    def _solve(self, x):
        p = 0
        for t in x:
            p ^= t
        return [p]


class CycleNavigation(Transduction):
    r"""Final position on a cycle of length 5 after the moves :math:`x_i - 1 \in
    \{-1, 0, +1\}` from position 0: :math:`y = \sum_i (x_i - 1) \bmod 5`."""

    name, level, input_size, output_size = "cycle_navigation", "regular", 3, 5

    def _sample(self, rng, n):
        x = rng.integers(0, 3, size=n)
        return x, [int(np.sum(x - 1) % 5)]

    def _solve(self, x):
        pos = 0
        for t in x:
            pos = (pos + {0: 4, 1: 0, 2: 1}[t]) % 5
        return [pos]


_PLUS, _MINUS, _TIMES = 5, 6, 7


class ModularArithmetic(Transduction):
    r"""Value modulo 5 of ``d op d op ... d`` with the usual precedence (``*`` first).

    Odd positions (0-based even) hold digits uniform in ``0..4``; the others operators
    uniform over ``+ * -``. DeepMind replaces an even length ``n`` by ``n - 1`` silently;
    here an even length raises :class:`~rnnmem.errors.TaskLengthError` (the evaluation
    protocol uses the odd lengths only). Token 8 (DeepMind's blank ``_``) never occurs in
    sampled inputs; the input alphabet keeps its size, 9.
    """

    name, level, input_size, output_size = "modular_arithmetic", "regular", 9, 5
    length_rule = "odd lengths only"

    def _has_length(self, n):
        return n % 2 == 1

    def _sample(self, rng, n):
        x = np.empty(n, dtype=np.int64)
        x[0::2] = rng.integers(0, 5, size=n // 2 + 1)
        x[1::2] = np.array([_PLUS, _TIMES, _MINUS])[rng.integers(0, 3, size=n // 2)]
        # sum of signed products of the multiplicative runs
        total, term = 0, int(x[0])
        for op, d in zip(x[1::2].tolist(), x[2::2].tolist()):
            if op == _TIMES:
                term *= d
            else:
                total += term
                term = d if op == _PLUS else -d
        return x, [(total + term) % 5]

    def _solve(self, x):
        # two-stack (shunting-yard) evaluation, a different route to the same value
        prec = {_PLUS: 1, _MINUS: 1, _TIMES: 2}
        vals, ops = [], []

        def reduce_top():
            b, a = vals.pop(), vals.pop()
            op = ops.pop()
            vals.append((a + b) % 5 if op == _PLUS else (a - b) % 5 if op == _MINUS
                        else (a * b) % 5)

        for i, t in enumerate(x):
            if i % 2 == 0:
                if t >= 5:
                    raise_bad(self, i, t, "a digit")
                vals.append(t)
            else:
                if t not in prec:
                    raise_bad(self, i, t, "an operator + - *")
                while ops and prec[ops[-1]] >= prec[t]:
                    reduce_top()
                ops.append(t)
        while ops:
            reduce_top()
        return [vals[0] % 5]


def raise_bad(task, i, t, want):
    from ...errors import AlphabetError

    raise AlphabetError(f"{task.name}: token {t} at position {i} must be {want}")
