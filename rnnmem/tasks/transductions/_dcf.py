r"""DeepMind's deterministic context-free tasks (Delétang et al. 2023; ``tasks/dcf/``).

=================================  ==================================  ========  =============
name                               input tokens                        input n   output
=================================  ==================================  ========  =============
``reverse_string``                 ``0 1``                             >= 1      reversed, n
``stack_manipulation``             ``0 1`` stack, ``2`` POP,           >= 1      final stack,
                                   ``3`` PUSH 0, ``4`` PUSH 1                    ``2`` ends, n+1
``modular_arithmetic_brackets``    ``0..4``, ``+``=5 ``-``=6 ``*``=7    >= 1      ``0..4``
                                   ``(``=8 ``)``=9 (``x``=10 unused)
``solve_equation``                 ``0..4``, ``+``=5 ``-``=6 ``(``=7    >= 3      ``0..4``
                                   ``)``=8 ``x``=9 ``=``=10
=================================  ==================================  ========  =============

Facts from DeepMind's code (where it differs from the docstrings, the code is followed):
``modular_arithmetic_brackets`` is registered with ``mult=True`` (``experiments/
constants.py``), so ``*`` occurs; ``solve_equation`` builds its expression without ``*``;
``stack_manipulation``'s output is padded with 0 after the termination token ``2`` and the
accuracy mask keeps positions up to and including it.
"""

from __future__ import annotations

import numpy as np

from ...errors import AlphabetError
from ._base import Transduction

__all__ = ["ReverseString", "StackManipulation", "ModularArithmeticBrackets",
           "SolveEquation", "bracket_expression", "evaluate_brackets"]

_MOD = 5


# ---------------------------------------------------------------- bracket expressions
def bracket_expression(rng: np.random.Generator, n: int, mult: bool) -> tuple[str, int]:
    r"""A bracketed expression of exactly ``n`` characters and its value modulo 5.

    DeepMind's ``generate_one_expression_and_result``: ``n = 1`` a digit ``d``, ``2``
    ``-d``, ``3`` ``(d)``, ``4`` ``(-d)``; for ``n >= 5``, ``(L op R)`` with
    :math:`|L|` uniform in :math:`1..n-4`, :math:`|R| = n - 3 - |L|` and ``op`` uniform
    over ``+ -`` (and ``*`` when ``mult``); digits uniform in ``0..4``.
    """
    if n == 1:
        d = int(rng.integers(0, _MOD))
        return str(d), d
    if n in (2, 3, 4):
        d = int(rng.integers(0, _MOD))
        s = {2: f"-{d}", 3: f"({d})", 4: f"(-{d})"}[n]
        return s, (-d if n in (2, 4) else d) % _MOD
    left = int(rng.integers(1, n - 3))
    ls, lv = bracket_expression(rng, left, mult)
    rs, rv = bracket_expression(rng, n - 3 - left, mult)
    op = int(rng.integers(0, 3 if mult else 2))
    val = (lv + rv, lv - rv, lv * rv)[op] % _MOD
    return f"({ls}{'+-*'[op]}{rs})", val


def evaluate_brackets(s: str, what: str = "expression") -> int:
    """Value modulo 5 of a bracketed expression of the grammar of
    :func:`bracket_expression` (a recursive-descent parse; raises AlphabetError)."""

    def atom(i):
        if i >= len(s):
            raise AlphabetError(f"{what} {s!r} ends early")
        c = s[i]
        if c.isdigit():
            return int(c), i + 1
        if c == "-":
            if i + 1 < len(s) and s[i + 1].isdigit():
                return -int(s[i + 1]), i + 2
            raise AlphabetError(f"{what} {s!r}: '-' at {i} is not followed by a digit")
        if c == "(":
            v, j = atom(i + 1)
            if j < len(s) and s[j] == ")":
                return v, j + 1
            if j >= len(s) or s[j] not in "+-*":
                raise AlphabetError(f"{what} {s!r}: expected an operator at {j}")
            w, k = atom(j + 1)
            if k >= len(s) or s[k] != ")":
                raise AlphabetError(f"{what} {s!r}: expected ')' at {k}")
            return {"+": v + w, "-": v - w, "*": v * w}[s[j]], k + 1
        raise AlphabetError(f"{what} {s!r}: unexpected {c!r} at {i}")

    v, end = atom(0)
    if end != len(s):
        raise AlphabetError(f"{what} {s!r}: trailing symbols from position {end}")
    return v % _MOD


# ---------------------------------------------------------------- tasks
class ReverseString(Transduction):
    """Binary string reversed: :math:`y = x_n \\dots x_1` (``reverse_string``)."""

    name, level, input_size, output_size = "reverse_string", "dcf", 2, 2

    def output_length(self, n):
        return n

    def _sample(self, rng, n):
        x = rng.integers(0, 2, size=n)
        return x, x[::-1]

    def _solve(self, x):
        out = []
        for t in x:
            out.insert(0, t)
        return out


_POP, _PUSH0, _PUSH1, _END = 2, 3, 4, 2


class StackManipulation(Transduction):
    r"""Run POP / PUSH 0 / PUSH 1 on a given stack; output the final stack top first.

    Input: an initial stack bottom-to-top (``0 1``), then actions (``2`` POP, ``3`` PUSH 0,
    ``4`` PUSH 1; POP on an empty stack does nothing). For ``n >= 2`` the initial stack
    length is uniform in :math:`1..n-1` and the actions uniform over the three; for
    ``n = 1`` the input is one stack bit. Output (length ``n + 1``): the final stack top
    to bottom, the termination token ``2``, then ``0`` padding (masked out).
    Mean (|stack|, |actions|, |final stack|) at ``n = 40``: (20, 20, 20 + 20/3 + small).
    """

    name, level, input_size, output_size = "stack_manipulation", "dcf", 5, 3
    termination = _END

    def output_length(self, n):
        return n + 1

    def _sample(self, rng, n):
        if n == 1:
            x = rng.integers(0, 2, size=1).tolist()
            stack = list(x)
        else:
            k = int(rng.integers(1, n))
            stack = rng.integers(0, 2, size=k).tolist()
            actions = rng.integers(2, 5, size=n - k).tolist()
            x = stack + actions
            stack = list(stack)
            for a in actions:
                if a == _POP:
                    if stack:
                        stack.pop()
                else:
                    stack.append(a - _PUSH0)
        y = stack[::-1] + [_END]
        return x, y + [0] * (n + 1 - len(y))

    def _solve(self, x):
        # the input is a stack prefix over {0, 1} followed by actions over {2, 3, 4}
        k = 0
        while k < len(x) and x[k] in (0, 1):
            k += 1
        if any(t in (0, 1) for t in x[k:]):
            raise AlphabetError(f"{self.name}: stack bits after the first action in {x}")
        depth, cells = k, list(x[:k])
        for a in x[k:]:
            if a == _POP:
                depth = max(depth - 1, 0)
            else:
                if depth < len(cells):
                    cells[depth] = a - _PUSH0
                else:
                    cells.append(a - _PUSH0)
                depth += 1
        out = [cells[i] for i in range(depth - 1, -1, -1)] + [_END]
        return out + [0] * (len(x) + 1 - len(out))


_MAB_CODE = {**{str(d): d for d in range(5)}, "+": 5, "-": 6, "*": 7, "(": 8, ")": 9,
             "x": 10}
_MAB_CHAR = {v: k for k, v in _MAB_CODE.items()}


class ModularArithmeticBrackets(Transduction):
    r"""Value modulo 5 of a bracketed expression (:func:`bracket_expression`).

    ``mult=True`` is DeepMind's registered default (``constants.py``); every length
    :math:`n \ge 1` has expressions. Token 10 (``x``) never occurs; the alphabet keeps
    DeepMind's size 11.
    """

    name, level, input_size, output_size = "modular_arithmetic_brackets", "dcf", 11, 5

    def __init__(self, mult: bool = True):
        self.mult = bool(mult)

    def _sample(self, rng, n):
        s, v = bracket_expression(rng, n, self.mult)
        return [_MAB_CODE[c] for c in s], [v]

    def _solve(self, x):
        if _MAB_CODE["x"] in x:
            raise AlphabetError(f"{self.name}: the unknown 'x' (10) has no value here")
        return [evaluate_brackets("".join(_MAB_CHAR[t] for t in x))]


_EQ_CODE = {**{str(d): d for d in range(5)}, "+": 5, "-": 6, "(": 7, ")": 8, "x": 9,
            "=": 10}
_EQ_CHAR = {v: k for k, v in _EQ_CODE.items()}


class SolveEquation(Transduction):
    r"""The digit :math:`x` that solves ``E(x) = v`` modulo 5.

    DeepMind's ``generate_equation_and_solution``: ``E`` is a bracket expression of length
    ``n - 2`` without ``*`` (so the solution is unique), one of its digits is replaced by
    ``x`` (a position uniform in the expression, moved right, cyclically, to the next
    digit), and ``=v`` is appended. DeepMind returns dummy all-zero strings for ``n < 3``;
    here those lengths raise :class:`~rnnmem.errors.TaskLengthError`.
    """

    name, level, input_size, output_size = "solve_equation", "dcf", 11, 5
    length_rule = "lengths >= 3"

    def _has_length(self, n):
        return n >= 3

    def _sample(self, rng, n):
        expr, val = bracket_expression(rng, n - 2, mult=False)
        idx = int(rng.integers(0, len(expr)))
        while not expr[idx].isdigit():
            idx = (idx + 1) % (n - 2)
        s = f"{expr[:idx]}x{expr[idx + 1:]}={val}"
        return [_EQ_CODE[c] for c in s], [int(expr[idx])]

    def _solve(self, x):
        s = "".join(_EQ_CHAR[t] for t in x)
        lhs, eq, rhs = s.partition("=")
        if not eq or not rhs.isdigit() or len(rhs) != 1 or lhs.count("x") != 1:
            raise AlphabetError(f"{self.name}: {s!r} is not 'E(x)=d' with one x")
        hits = [v for v in range(_MOD)
                if evaluate_brackets(lhs.replace("x", str(v)), "equation") == int(rhs)]
        if len(hits) != 1:
            raise AlphabetError(f"{self.name}: {s!r} has {len(hits)} solutions")
        return hits
