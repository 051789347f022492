"""Languages recognised by a counter/stack machine and sampled through completion counts.

Both languages here are sampled *uniformly* among the members of a given length by the
standard recursive-counting method for unambiguous grammars (Flajolet, Zimmermann & Van
Cutsem 1994, "A calculus for the random generation of labelled combinatorial
structures"): a deterministic left-to-right machine reads the string; for each machine
state :math:`q` and number :math:`r` of symbols still to emit, :math:`C(q, r)` counts the
completions, and symbol :math:`\\sigma` is drawn with probability

.. math:: P(\\sigma \\mid q, r) = \\frac{C(\\delta(q, \\sigma), r - 1)}{C(q, r)}.

The counts grow like :math:`c^n`, so they are kept as logarithms (float64, relative error
about :math:`10^{-13}`: "uniform" up to rounding), vectorised over the batch.

Task definitions follow the *names* of Delétang et al. (2023,
google-deepmind/neural_networks_chomsky_hierarchy: ``stack_manipulation``,
``modular_arithmetic_brackets``), recast as recognition languages and defined
independently below.
"""

from __future__ import annotations

import numpy as np

from ._lang_base import Language, sample_categorical

__all__ = ["StackManipulation", "ModularArithmeticBrackets", "evaluate_mod5"]

_NEG_INF = -np.inf
_LOG2, _LOG3, _LOG5 = np.log(2.0), np.log(3.0), np.log(5.0)


def _grow(n: int) -> int:
    return max(64, 1 << int(np.ceil(np.log2(max(n, 1)))))


# ---------------------------------------------------------------------- stack manipulation
class StackManipulation(Language):
    """Initial stack, push/pop instructions, ``#``, then the resulting stack top-to-bottom.

    Alphabet: ``0``, ``1`` (stack symbols), ``a`` (push 0), ``b`` (push 1), ``p`` (pop),
    ``#`` (separator). A member has the form

    .. math:: w = s\\,o\\,\\#\\,z, \\qquad s \\in \\{0,1\\}^*,\\; o \\in \\{a,b,p\\}^*,\\;
              z \\in \\{0,1\\}^*,

    where :math:`s` is the initial stack written bottom-to-top, :math:`o` the instructions
    executed left to right (``p`` on an empty stack does nothing), and :math:`z` must equal
    the final stack written **top-to-bottom** (the order in which it would be popped).
    Example: ``011pa#010`` (``011`` -> pop -> ``01`` -> push 0 -> ``010``; read from the
    top: ``010``). The split between :math:`s` and :math:`o` is the first instruction
    symbol, so it is unique.

    ``#`` alone is the shortest member; :math:`\\varepsilon` is not a member; every length
    :math:`\\ge 1` has members. Deterministic context-free (a pushdown automaton pushes
    :math:`s`, runs :math:`o`, then pops while matching :math:`z`).

    Sampling is uniform over members of length :math:`n` by completion counts: in the
    instruction phase with stack height :math:`h` and :math:`r` symbols left,

    .. math:: G(h, r) = [r = h + 1] + 2\\,G(h+1, r-1) + G(\\max(h-1, 0), r-1),

    and in the initial-stack phase :math:`F(h, r) = G(h, r) + 2\\,F(h+1, r-1)`; there are
    :math:`F(0, n)` members of length :math:`n`.
    """

    name = "stack_manipulation"
    alphabet = ("0", "1", "a", "b", "p", "#")
    description = ("initial stack over {0,1} (bottom-to-top), instructions a=push 0, "
                   "b=push 1, p=pop, '#', then the final stack top-to-bottom")
    chomsky = "context-free"
    contains_empty = False
    length_rule = "lengths must be >= 1"

    def __init__(self):
        super().__init__()
        self._n_table = -1

    def _has_length(self, n):
        return n >= 1

    def _log_counts(self, n: int):
        """log F and log G, shape (N + 2, N + 1) indexed [h, r], N >= n."""
        if n > self._n_table:
            N = _grow(n)
            lf = np.full((N + 2, N + 1), _NEG_INF)
            lg = np.full((N + 2, N + 1), _NEG_INF)
            h = np.arange(N + 1)
            down = np.maximum(h - 1, 0)
            for r in range(1, N + 1):
                hash_term = np.where(r == h + 1, 0.0, _NEG_INF)
                lg[:N + 1, r] = np.logaddexp(
                    hash_term, np.logaddexp(_LOG2 + lg[1:, r - 1], lg[down, r - 1]))
                lf[:N + 1, r] = np.logaddexp(lg[:N + 1, r], _LOG2 + lf[1:, r - 1])
            self._lf, self._lg, self._n_table = lf, lg, N
        return self._lf, self._lg

    def log_count(self, n: int) -> float:
        """Natural log of the number of members of length ``n`` (``-inf`` if none)."""
        from ._lang_base import check_length

        n = check_length(n)
        return float(self._log_counts(n)[0][0, n]) if n else _NEG_INF

    def _sample_ids(self, rng, batch, length):
        lf, lg = self._log_counts(length)
        out = np.empty((batch, length), dtype=np.int64)  # (B, T)
        stack = np.zeros((batch, length + 1), dtype=np.int64)  # (B, T+1), bottom at 0
        h = np.zeros(batch, dtype=np.int64)  # (B,) stack height
        phase = np.zeros(batch, dtype=np.int64)  # 0 initial stack, 1 instructions, 2 result
        lanes = np.arange(batch)
        for t in range(length):
            r = length - t
            logw = np.empty((batch, 6))  # (B, 6) over 0 1 a b p #
            logw[:, 0] = logw[:, 1] = np.where(phase == 0, lf[h + 1, r - 1], _NEG_INF)
            logw[:, 2] = logw[:, 3] = lg[h + 1, r - 1]
            logw[:, 4] = lg[np.maximum(h - 1, 0), r - 1]
            logw[:, 5] = np.where(r - 1 == h, 0.0, _NEG_INF)
            res = phase == 2
            logw[res] = 0.0  # placeholder rows, overwritten below
            sym = sample_categorical(rng, logw)  # (B,)
            # result phase: emit the top of the stack and pop it
            top = stack[lanes, np.maximum(h - 1, 0)]
            sym = np.where(res, top, sym)
            push = ~res & (sym <= 3)
            bit = np.where(sym <= 1, sym, sym - 2)  # pushed bit for 0/1/a/b
            stack[lanes[push], h[push]] = bit[push]
            h = h + push - ((res | (sym == 4)) & (h > 0))
            phase = np.where(res | (sym == 5), 2, np.where(sym >= 2, 1, phase))
            out[:, t] = sym
        return out

    @staticmethod
    def _split(s: str):
        """(initial stack, final stack top-to-bottom, rest after '#') or None if malformed."""
        i = 0
        n = len(s)
        stack = []
        while i < n and s[i] in "01":
            stack.append(s[i])
            i += 1
        while i < n and s[i] in "abp":
            c = s[i]
            if c == "p":
                if stack:
                    stack.pop()
            else:
                stack.append("0" if c == "a" else "1")
            i += 1
        if i == n:
            return stack, None
        if s[i] != "#":
            return None
        return stack, s[i + 1:]

    def _contains(self, s):
        sp = self._split(s)
        return sp is not None and sp[1] is not None and sp[1] == "".join(reversed(sp[0]))

    def _next_symbols(self, p):
        sp = self._split(p)
        if sp is None:
            return frozenset()
        stack, rest = sp
        if rest is None:
            if p.strip("01"):  # an instruction has been read
                return frozenset({"a", "b", "p", "#"})
            return frozenset({"0", "1", "a", "b", "p", "#"})
        z = "".join(reversed(stack))
        if not z.startswith(rest):
            return frozenset()
        return frozenset({z[len(rest)]}) if len(rest) < len(z) else frozenset({"$"})

    def _next_table(self, s):
        out = np.zeros((len(s) + 1, 7), dtype=bool)
        out[0, :6] = True
        stack, phase = [], 0
        for t, c in enumerate(s, start=1):
            if phase < 2:
                if c in "01" and phase == 0:
                    stack.append(c)
                elif c in "abp":
                    phase = 1
                    if c == "p":
                        if stack:
                            stack.pop()
                    else:
                        stack.append("0" if c == "a" else "1")
                elif c == "#":
                    phase = 2
                else:
                    break
            else:
                if not stack or stack.pop() != c:
                    break
            if phase == 0:
                out[t, :6] = True
            elif phase == 1:
                out[t, 2:6] = True
            else:
                out[t, self._index[stack[-1]] if stack else 6] = True
        return out


# ---------------------------------------------------------------------- modular arithmetic
_DIGITS = "01234"
_MOD = 5


class _ExprReader:
    """Incremental reader of an expression of :class:`ModularArithmeticBrackets`.

    Keeps the syntactic state (operand expected or operator expected, bracket depth) and
    the value mod 5 with one frame per open bracket: ``acc`` (sum of the finished terms),
    ``sign`` (sign of the current term), ``term`` (product of its finished factors),
    ``mul`` (a ``*`` is pending) and ``neg`` (parity of pending unary minus signs).
    """

    __slots__ = ("operand", "frames", "acc", "sign", "term", "mul", "neg", "ok")

    def __init__(self):
        self.operand = True  # an operand is expected
        self.frames = []
        self.acc, self.sign, self.term, self.mul, self.neg = 0, 1, 0, False, False
        self.ok = True

    def _factor(self, v: int) -> None:
        if self.neg:
            v = -v
        self.neg = False
        self.term = (self.term * v) % _MOD if self.mul else v % _MOD
        self.mul = False
        self.operand = False

    def step(self, c: str) -> bool:
        """Read one symbol (not ``'='``); return False (and stay failed) if ill-formed."""
        if not self.ok:
            return False
        if self.operand:
            if c in _DIGITS:
                self._factor(ord(c) - 48)
            elif c == "-":
                self.neg = not self.neg
            elif c == "(":
                self.frames.append((self.acc, self.sign, self.term, self.mul, self.neg))
                self.acc, self.sign, self.term, self.mul, self.neg = 0, 1, 0, False, False
            else:
                self.ok = False
        else:
            if c == "+" or c == "-":
                self.acc = (self.acc + self.sign * self.term) % _MOD
                self.sign = 1 if c == "+" else -1
                self.operand = True
            elif c == "*":
                self.mul = True
                self.operand = True
            elif c == ")" and self.frames:
                v = (self.acc + self.sign * self.term) % _MOD
                self.acc, self.sign, self.term, self.mul, self.neg = self.frames.pop()
                self._factor(v)
            else:
                self.ok = False
        return self.ok

    @property
    def complete(self) -> bool:
        return self.ok and not self.operand and not self.frames

    def value(self) -> int:
        return (self.acc + self.sign * self.term) % _MOD


def evaluate_mod5(expr: str):
    """Value mod 5 of an expression of :class:`ModularArithmeticBrackets`, or None if it
    is not well formed (``expr`` without the ``=d`` suffix)."""
    reader = _ExprReader()
    for c in expr:
        if not reader.step(c):
            return None
    return reader.value() if reader.complete else None


class ModularArithmeticBrackets(Language):
    """Arithmetic expressions mod 5 with brackets, followed by ``=`` and their value.

    Alphabet: ``0 1 2 3 4 + - * ( ) =``. A member is :math:`E\\,{=}\\,d` with :math:`E`
    derived from the (unambiguous) grammar

    .. math::

        E &\\to E + T \\mid E - T \\mid T, \\qquad T \\to T * F \\mid F, \\\\
        F &\\to 0 \\mid 1 \\mid 2 \\mid 3 \\mid 4 \\mid (E) \\mid -F

    (usual precedence, left associativity, unary minus, single-digit numbers, redundant
    brackets allowed) and :math:`d` the single digit :math:`[\\![E]\\!] \\bmod 5`
    (Python's ``%``, so ``-1 = 4``). Examples: ``2=2``, ``-(3+4)*2=1``, ``1--2=3``.

    Lengths: every :math:`n \\ge 3` (:math:`\\varepsilon` is not a member). Context-free
    (the value mod 5 is a finite annotation of the nonterminals). The expression language
    is read by a two-state machine (operand / operator expected) with a bracket counter,
    which gives the next-symbol sets: after an operand-expecting prefix
    :math:`\\{0..4, -, (\\}`; after an operator-expecting one :math:`\\{+,-,*\\}` plus ``)``
    inside brackets or ``=`` at depth 0; after ``=`` only the correct digit; after it
    ``$``.

    Sampling is uniform over members of length :math:`n` (equivalently over expressions of
    length :math:`n-2`) by completion counts of that machine: with depth :math:`d`,

    .. math::

        O(d, r) &= O(d, r-1) + 5\\,P(d, r-1) + O(d+1, r-1), \\\\
        P(d, r) &= [d = 0,\\, r = 0] + 3\\,O(d, r-1) + [d > 0]\\,P(d-1, r-1).
    """

    name = "modular_arithmetic_brackets"
    alphabet = ("0", "1", "2", "3", "4", "+", "-", "*", "(", ")", "=")
    description = ("expression over digits 0-4 with + - * and brackets, '=', and its value "
                   "mod 5")
    chomsky = "context-free"
    contains_empty = False
    length_rule = "lengths must be >= 3 (expression, '=', digit)"

    def __init__(self):
        super().__init__()
        self._n_table = -1

    def _has_length(self, n):
        return n >= 3

    def _log_counts(self, n: int):
        """log O and log P, shape (N + 2, N + 1) indexed [d, r], N >= n."""
        if n > self._n_table:
            N = _grow(n)
            lo = np.full((N + 2, N + 1), _NEG_INF)
            lp = np.full((N + 2, N + 1), _NEG_INF)
            lp[0, 0] = 0.0
            for r in range(1, N + 1):
                lo[:N + 1, r] = np.logaddexp(
                    lo[:N + 1, r - 1], np.logaddexp(_LOG5 + lp[:N + 1, r - 1], lo[1:, r - 1]))
                lp[:N + 1, r] = _LOG3 + lo[:N + 1, r - 1]
                lp[1:N + 1, r] = np.logaddexp(lp[1:N + 1, r], lp[:N, r - 1])
            self._lo, self._lp, self._n_table = lo, lp, N
        return self._lo, self._lp

    def log_count(self, n: int) -> float:
        """Natural log of the number of members of length ``n`` (``-inf`` if none)."""
        from ._lang_base import check_length

        n = check_length(n)
        return float(self._log_counts(n)[0][0, n - 2]) if n >= 3 else _NEG_INF

    def _sample_ids(self, rng, batch, length):
        m = length - 2  # expression length
        lo, lp = self._log_counts(m)
        out = np.empty((batch, length), dtype=np.int64)  # (B, T)
        d = np.zeros(batch, dtype=np.int64)  # (B,) bracket depth
        operand = np.ones(batch, dtype=bool)  # (B,) operand expected
        for t in range(m):
            r = m - t
            logw = np.full((batch, 10), _NEG_INF)  # (B, 10) over 0-4 + - * ( )
            o_next = lo[d, r - 1]
            logw[:, :5] = np.where(operand, lp[d, r - 1], _NEG_INF)[:, None]
            logw[:, 5] = logw[:, 7] = np.where(operand, _NEG_INF, o_next)
            logw[:, 6] = o_next  # unary minus (operand) or binary minus (operator)
            logw[:, 8] = np.where(operand, lo[d + 1, r - 1], _NEG_INF)
            logw[:, 9] = np.where(~operand & (d > 0), lp[np.maximum(d - 1, 0), r - 1],
                                  _NEG_INF)
            sym = sample_categorical(rng, logw)  # (B,)
            d = d + (sym == 8) - (sym == 9)
            operand = np.where(operand, sym >= 6, sym <= 7)
            out[:, t] = sym
        out[:, m] = self._index["="]
        for b in range(batch):
            expr = "".join(self.alphabet[i] for i in out[b, :m])
            out[b, m + 1] = evaluate_mod5(expr)
        return out

    def _contains(self, s):
        k = s.find("=")
        if k < 0:
            return False
        v = evaluate_mod5(s[:k])
        return v is not None and s[k + 1:] == _DIGITS[v]

    def _next_symbols(self, p):
        k = p.find("=")
        if k >= 0:
            v = evaluate_mod5(p[:k])
            rest = p[k + 1:]
            if v is None or rest not in ("", _DIGITS[v]):
                return frozenset()
            return frozenset({_DIGITS[v]}) if rest == "" else frozenset({"$"})
        reader = _ExprReader()
        for c in p:
            if not reader.step(c):
                return frozenset()
        if reader.operand:
            return frozenset(set(_DIGITS) | {"-", "("})
        out = {"+", "-", "*"}
        out.add(")" if reader.frames else "=")
        return frozenset(out)

    def _next_table(self, s):
        V = self.n_targets  # 12: 0-4 + - * ( ) = $
        out = np.zeros((len(s) + 1, V), dtype=bool)
        operand_row = np.zeros(V, dtype=bool)
        operand_row[[0, 1, 2, 3, 4, 6, 8]] = True
        reader = _ExprReader()
        out[0] = operand_row
        value = None
        for t, c in enumerate(s, start=1):
            if value is None:  # reading the expression
                if c == "=":
                    if not reader.complete:
                        break
                    value = reader.value()
                    out[t, value] = True
                    continue
                if not reader.step(c):
                    break
                if reader.operand:
                    out[t] = operand_row
                else:
                    out[t, [5, 6, 7]] = True
                    out[t, 9 if reader.frames else 10] = True
            else:  # after '=': exactly the value digit, then the end
                if t - 1 != s.find("=") + 1 or c != _DIGITS[value]:
                    break
                out[t, V - 1] = True
        return out
