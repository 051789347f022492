r"""DeepMind's context-sensitive tasks (Delétang et al. 2023; ``tasks/cs/``).

==============================  ============================  ==========  ====================
name                            input tokens                  output len  output
==============================  ============================  ==========  ====================
``duplicate_string``            ``0 1``                       2n          ``x x``
``missing_duplicate_string``    ``0 1``, ``2`` hole,          1           the missing bit
                                ``3`` pad (odd n)
``odds_first``                  ``0 1``                       n           ``x[1::2] x[0::2]``
``binary_addition``             ``0 1``, ``2`` = ``+``        n + 1       sum, ``2`` ends
``binary_multiplication``       ``0 1``, ``2`` = ``*``        n           product, ``2`` ends
``compute_sqrt``                ``0 1`` (big-endian)          ceil(n/2)   floor(sqrt), big-end.
``bucket_sort``                 ``0..4``                      n           sorted
==============================  ============================  ==========  ====================

Facts from DeepMind's code (where it differs from the docstrings, the code is followed):
``odds_first`` outputs the tokens at 0-based *odd* positions first (``x[1::2]`` then
``x[::2]``; the docstring says :math:`s_1 s_3 \dots` first); binary numbers are
little-endian (``compute_sqrt``: big-endian), drawn uniformly among the non-zero numbers
of their width, so they may end in zeros; for ``n <= 2`` ``binary_addition`` and
``binary_multiplication`` have no operator (the input is one number, uniform in
:math:`0..2^n-2`; the sum is that number, the product the fixed ``[0] * (n-1)``).
"""

from __future__ import annotations

import math

import numpy as np

from ...errors import AlphabetError
from ._base import Transduction, from_binary, random_nonzero_bits, to_binary

__all__ = ["DuplicateString", "MissingDuplicateString", "OddsFirst", "BinaryAddition",
           "BinaryMultiplication", "ComputeSqrt", "BucketSort"]


class DuplicateString(Transduction):
    """The binary input twice, :math:`y = x\\,x` (output length ``2n``)."""

    name, level, input_size, output_size = "duplicate_string", "cs", 2, 2

    def output_length(self, n):
        return 2 * n

    def _sample(self, rng, n):
        x = rng.integers(0, 2, size=n)
        return x, np.concatenate([x, x])

    def _solve(self, x):
        return [x[i % len(x)] for i in range(2 * len(x))]


class MissingDuplicateString(Transduction):
    r"""The bit hidden by ``2`` in a duplicated string :math:`ww` (:math:`|w| = \lfloor
    n/2 \rfloor`, one position uniform in :math:`0..2|w|-1` replaced by ``2``, a ``3``
    appended for odd ``n``). For ``n = 1`` DeepMind's input is ``[1]`` and the output 1."""

    name, level, input_size, output_size = "missing_duplicate_string", "cs", 4, 2

    def _sample(self, rng, n):
        if n == 1:
            return [1], [1]
        h = n // 2
        w = rng.integers(0, 2, size=h).tolist()
        d = w + w
        i = int(rng.integers(0, 2 * h))
        y = d[i]
        d[i] = 2
        return d + [3] * (n % 2), [y]

    def _solve(self, x):
        n = len(x)
        if n == 1:
            return [1]
        h = n // 2
        if x.count(2) != 1 or (n % 2 and x[-1] != 3):
            raise AlphabetError(f"{self.name}: {x} needs exactly one hole 2 and, for odd "
                                "length, a final 3")
        i = x.index(2)
        return [x[i + h] if i < h else x[i - h]]


class OddsFirst(Transduction):
    """Tokens at 0-based odd positions, then those at even positions (DeepMind's code:
    ``concatenate([x[:, 1::2], x[:, ::2]])``)."""

    name, level, input_size, output_size = "odds_first", "cs", 2, 2

    def output_length(self, n):
        return n

    def _sample(self, rng, n):
        x = rng.integers(0, 2, size=n)
        return x, np.concatenate([x[1::2], x[0::2]])

    def _solve(self, x):
        odd = [t for i, t in enumerate(x) if i % 2 == 1]
        even = [t for i, t in enumerate(x) if i % 2 == 0]
        return odd + even


def _two_numbers(rng, n):
    """``[a, 2, b]`` little-endian, widths ``w_a`` uniform in ``1..n-2``, ``w_b = n-1-w_a``."""
    wa = int(rng.integers(1, n - 1))
    a, b = random_nonzero_bits(rng, wa), random_nonzero_bits(rng, n - 1 - wa)
    return a + [2] + b, from_binary(a), from_binary(b)


def _split(task, x):
    if x.count(2) > 1:
        raise AlphabetError(f"{task.name}: more than one operator 2 in {x}")
    if 2 not in x:
        return None
    i = x.index(2)
    return x[:i], x[i + 1:]


class BinaryAddition(Transduction):
    r"""Sum of two little-endian binary numbers ``a 2 b``; output the sum's binary digits
    (no trailing zeros), the termination token ``2``, ``0`` padding to length ``n + 1``."""

    name, level, input_size, output_size = "binary_addition", "cs", 3, 3
    termination = 2

    def output_length(self, n):
        return n + 1

    def _sample(self, rng, n):
        if n <= 2:
            v = int(rng.integers(0, 2 ** n - 1))
            x, total = to_binary(v, n), v
        else:
            x, a, b = _two_numbers(rng, n)
            total = a + b
        res = to_binary(total)
        return x, res + [2] + [0] * (n - len(res))

    def _solve(self, x):
        parts = _split(self, x)
        a, b = (x, []) if parts is None else parts
        # schoolbook addition, digit by digit
        out, carry = [], 0
        for i in range(max(len(a), len(b))):
            s = (a[i] if i < len(a) else 0) + (b[i] if i < len(b) else 0) + carry
            out.append(s % 2)
            carry = s // 2
        if carry:
            out.append(1)
        while len(out) > 1 and out[-1] == 0:
            out.pop()
        out = out or [0]
        return out + [2] + [0] * (len(x) - len(out))


class BinaryMultiplication(Transduction):
    r"""Product of two little-endian binary numbers ``a 2 b``; output the product's digits,
    ``2``, ``0`` padding to length ``n``. For ``n <= 2`` (no operator) the output is
    DeepMind's fixed ``[0] * (n - 1) + [2]``."""

    name, level, input_size, output_size = "binary_multiplication", "cs", 3, 3
    termination = 2

    def output_length(self, n):
        return n

    def _sample(self, rng, n):
        if n <= 2:
            v = int(rng.integers(0, 2 ** n - 1))
            return to_binary(v, n), [0] * (n - 1) + [2]
        x, a, b = _two_numbers(rng, n)
        res = to_binary(a * b)
        return x, res + [2] + [0] * (n - 1 - len(res))

    def _solve(self, x):
        n = len(x)
        parts = _split(self, x)
        if parts is None:
            if n > 2:
                raise AlphabetError(f"{self.name}: no operator 2 in {x}")
            return [0] * (n - 1) + [2]
        a, b = parts
        # shift-and-add on digit lists
        acc = [0] * (len(a) + len(b))
        for i, bi in enumerate(b):
            if bi:
                carry = 0
                for j in range(len(acc) - i):
                    s = acc[i + j] + (a[j] if j < len(a) else 0) + carry
                    acc[i + j], carry = s % 2, s // 2
        while len(acc) > 1 and acc[-1] == 0:
            acc.pop()
        acc = acc or [0]
        return acc + [2] + [0] * (n - 1 - len(acc))


class ComputeSqrt(Transduction):
    r""":math:`\lfloor\sqrt{v}\rfloor` of a big-endian ``n``-bit number :math:`v` (uniform in
    :math:`1..2^n-1`), big-endian with :math:`\lceil n/2 \rceil` digits."""

    name, level, input_size, output_size = "compute_sqrt", "cs", 2, 2

    def output_length(self, n):
        return math.ceil(n / 2)

    def _sample(self, rng, n):
        bits = random_nonzero_bits(rng, n)  # little-endian draw
        v = from_binary(bits)
        return bits[::-1], to_binary(math.isqrt(v), self.output_length(n), little_endian=False)

    def _solve(self, x):
        v = from_binary(x, little_endian=False)
        # digit-by-digit: the largest r with r^2 <= v, one bit at a time from the top
        m = self.output_length(len(x))
        r = 0
        for k in range(m - 1, -1, -1):
            if (r | (1 << k)) ** 2 <= v:
                r |= 1 << k
        return to_binary(r, m, little_endian=False)


class BucketSort(Transduction):
    """The input tokens (``0..4``) in increasing order."""

    name, level, input_size, output_size = "bucket_sort", "cs", 5, 5

    def output_length(self, n):
        return n

    def _sample(self, rng, n):
        x = rng.integers(0, 5, size=n)
        return x, np.sort(x)

    def _solve(self, x):
        counts = [0] * 5
        for t in x:
            counts[t] += 1
        return [v for v in range(5) for _ in range(counts[v])]
