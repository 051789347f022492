r"""DuSell & Chiang's context-free language-modelling tasks, with exact lower bounds.

DuSell & Chiang (2020, "Learning Context-Free Languages with Nondeterministic Stack RNNs",
CoNLL; 2022, "Learning Hierarchical Structures with Differentiable Nondeterministic
Stacks", ICLR; code bdusell/nondeterministic-stack-rnn, ``src/cfl_language_modeling``)
train stack RNNs as *language models* on strings of five context-free languages, each
defined by a probabilistic context-free grammar (PCFG) :math:`G`, and sample strings of a
*given length* :math:`n` from :math:`G` conditioned on that length:

.. math::

    p(w \mid n) = \frac{p_G(w)}{Z_G(n)}, \qquad
    Z_G(n) = \sum_{|w'| = n} p_G(w') = I_S(n),

where :math:`I_X(n)` is the inside probability of nonterminal :math:`X` over all strings of
length :math:`n`, computed by dynamic programming over lengths (:meth:`PCFG.inside`);
sampling then picks each rule and each split of the length with probability proportional
to rule probability times the inside values of the parts (:meth:`PCFG.sample`).

A model reads ``BOS w_1 .. w_n`` and predicts ``w_1 .. w_n EOS``; its score at length
:math:`n` is the cross-entropy per predicted symbol above the lower bound (their
``compute_cross_entropy_diff`` with one length, ``parts_to_perplexity(parts, 1)``):

.. math::

    \Delta(n) = \frac{1}{k (n + 1)} \sum_{b=1}^{k} \Big(
        -\sum_{t=1}^{n+1} \log q(w_{b,t} \mid w_{b,<t})
        - \big(-\log p(w_b \mid n)\big)\Big) \;\ge\; 0 \text{ in expectation},

with :math:`-\log p(w \mid n)` exact: the log-probability of the sampled derivation for an
unambiguous grammar, else the string's inside probability from a chart parse
(:meth:`PCFG.string_log_prob`).

Grammars and defaults (``task_util.py`` / ``grammars/``; rule weights are normalised per
left-hand side, as their ``Grammar`` does; :math:`c(\mu) = 1 - 1/(\mu + 1)`):

* ``marked_reversal``   :math:`S \to a S a \mid b S b \mid \#`, continue :math:`c(60)`;
* ``unmarked_reversal`` :math:`S \to a S a \mid b S b \mid \varepsilon`, continue :math:`c(60)`;
* ``padded_reversal``   :math:`S \to a S a \mid b S b \mid T_a \mid T_b`,
  :math:`T_x \to x T_x \mid \varepsilon` (content :math:`c(60)`, padding :math:`c(30)`);
  ambiguous;
* ``dyck``              two bracket pairs, :math:`S \to S T \mid T`, :math:`T \to (S) \mid
  () \mid [S] \mid []` (splits :math:`c(1)`, nesting :math:`c(40 - 1)`);
* ``hardest_cfl``       Greibach's hardest CFL in DuSell & Chiang's grammar (commas 0.5,
  short filler 0.5, long filler 2, semicolon probability 0.25, splits 1, nesting 40);
  ambiguous.

What the peer's code samples differs for two grammars. Before sampling it removes
epsilon and unary rules (``lib/formal_models/pcfg_tools.py``), and the removal of the
unary rules at the start symbol drops them instead of replacing them: after it, Dyck's
``S -> S T | T`` is ``S -> S T | T T`` and padded reversal's ``S -> T_a`` is gone at the
root (measured by running their ``LengthSampler``: at length 4 their Dyck strings are only
``()()``, ``()[]``, ``[]()``, ``[][]``, each 1/4; the mean maximum depth at length 80 is
19.9 there, 22.0 under the grammar). Their law is the grammar's conditioned on the root
rule, which ``dyck_peer`` (at least two top-level pairs, :math:`S_0 \to S T`) and
``padded_reversal_peer`` (at least one content symbol, :math:`S_0 \to a S a`) reproduce,
for comparison with their published numbers. (Their lower bound parses with the same
transformed grammar, so it is consistent with what they sample.)

Training lengths default to 40..80 (their ``--train-length-range``), test lengths to
their 40..100.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import AlphabetError, InvalidParameterError, TaskLengthError, UnknownNameError
from ._lang_base import check_batch, check_length, check_rng

__all__ = ["Rule", "PCFG", "CFLTask", "CFL_TASKS", "get_cfl_task", "continue_prob"]

_NEG = -np.inf


def continue_prob(mean: float) -> float:
    r""":math:`1 - 1/(\mu + 1)`: the continue probability of :math:`X \to a X \mid
    \varepsilon` whose length has mean :math:`\mu` (their ``mean_to_continue_prob``)."""
    return 1.0 - 1.0 / (mean + 1.0)


def _lse(a: np.ndarray, axis=None):
    """log(sum(exp(a))) along ``axis``, -inf for empty or all -inf."""
    a = np.asarray(a, dtype=np.float64)
    if a.size == 0:
        return _NEG if axis is None else np.full(np.delete(a.shape, axis), _NEG)
    m = np.max(a, axis=axis, keepdims=True)
    m_safe = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        out = np.log(np.sum(np.exp(a - m_safe), axis=axis, keepdims=True)) + m_safe
    return out.item() if axis is None else np.squeeze(out, axis=axis)


@dataclass(frozen=True)
class Rule:
    """``lhs -> rhs`` with weight ``prob``; an ``int`` in ``rhs`` is a terminal (token id),
    a ``str`` a nonterminal."""

    lhs: str
    rhs: tuple
    prob: float = 1.0


class PCFG:
    """A probabilistic context-free grammar over integer terminals, with length-conditioned
    inside tables, sampling and string probabilities (see the module docstring).

    Parameters
    ----------
    start : str
    rules : sequence of Rule
        Weights are normalised per left-hand side. Derivations of the same length must not
        form a cycle (no :math:`X \\Rightarrow^+ X` without consuming a symbol); one raises
        InvalidParameterError.
    unambiguous : bool
        Whether every string has one derivation (then :meth:`sample` returns the exact
        :math:`\\log p_G(w)`; otherwise the chart parse is used).
    """

    def __init__(self, start: str, rules: Sequence[Rule], *, unambiguous: bool):
        self.start, self.unambiguous = start, bool(unambiguous)
        total: dict[str, float] = {}
        for r in rules:
            if r.prob < 0:
                raise InvalidParameterError(f"rule {r} has a negative weight")
            total[r.lhs] = total.get(r.lhs, 0.0) + r.prob
        self.rules = tuple(Rule(r.lhs, tuple(r.rhs), r.prob / total[r.lhs]) for r in rules)
        self.nonterminals = tuple(total)
        for r in self.rules:
            for s in r.rhs:
                if isinstance(s, str) and s not in total:
                    raise InvalidParameterError(f"nonterminal {s!r} has no rule")
        self.by_lhs = {X: [r for r in self.rules if r.lhs == X] for X in self.nonterminals}
        self.terminals = tuple(sorted({s for r in self.rules for s in r.rhs
                                       if not isinstance(s, str)}))
        self._order = self._same_length_order()
        self._N = -1
        self._I: dict = {}
        self._P: dict = {}

    def _same_length_order(self) -> tuple[str, ...]:
        """Nonterminals ordered so that whatever one derives *at the same length* (through
        a rule whose other symbols are nullable) comes before it: one pass per length then
        fills the tables exactly. Raises on a same-length cycle."""
        nullable: set[str] = set()
        grew = True
        while grew:
            grew = False
            for r in self.rules:
                if r.lhs not in nullable and r.prob > 0 and all(
                        isinstance(s, str) and s in nullable for s in r.rhs):
                    nullable.add(r.lhs)
                    grew = True
        deps = {X: set() for X in self.nonterminals}
        for r in self.rules:
            for j, s in enumerate(r.rhs):
                others = r.rhs[:j] + r.rhs[j + 1:]
                if isinstance(s, str) and all(isinstance(o, str) and o in nullable
                                              for o in others):
                    deps[r.lhs].add(s)
        order: list[str] = []
        state: dict[str, int] = {}

        def visit(X, path):
            if state.get(X) == 2:
                return
            if state.get(X) == 1:
                raise InvalidParameterError(
                    f"grammar has a same-length derivation cycle through {' -> '.join(path)}")
            state[X] = 1
            for Y in sorted(deps[X]):
                visit(Y, path + [Y])
            state[X] = 2
            order.append(X)

        for X in self.nonterminals:
            visit(X, [X])
        return tuple(order)

    # ------------------------------------------------------------------ inside
    def _inside_vec(self, sym, N):
        if isinstance(sym, str):
            return self._I[sym]
        v = np.full(N + 1, _NEG)
        if N >= 1:
            v[1] = 0.0
        return v

    def inside(self, N: int) -> dict[str, np.ndarray]:
        r"""Log inside probabilities :math:`\log I_X(n)`, ``n = 0..N``, per nonterminal.

        Filled by increasing length; within one length, in an order where every
        nonterminal comes after those it derives at the same length (through nullable
        symbols), so that one pass is exact.
        Alongside, the prefix tables :math:`\log I_{Y_1 \dots Y_j}(n)` of every rule
        (the convolutions used to sample the split of a length).
        """
        N = check_length(N, "N")
        if N <= self._N:
            return self._I
        N = max(N, 2 * self._N, 16)
        I = {X: np.full(N + 1, _NEG) for X in self.nonterminals}
        self._I = I
        P = {r: [np.full(N + 1, _NEG) for _ in range(len(r.rhs) + 1)] for r in self.rules}
        for r in self.rules:
            P[r][0][0] = 0.0
        term = np.full(N + 1, _NEG)
        term[1] = 0.0
        vec = {X: I[X] for X in self.nonterminals}
        for n in range(N + 1):
            for X in self._order:  # same-length dependencies first
                for r in self.by_lhs[X]:
                    for j, sym in enumerate(r.rhs, start=1):
                        right = vec[sym] if isinstance(sym, str) else term
                        P[r][j][n] = _lse(P[r][j - 1][n::-1] + right[:n + 1])
                I[X][n] = _lse(np.array([math.log(r.prob) + P[r][-1][n]
                                         for r in self.by_lhs[X] if r.prob > 0]))
            # the prefixes of a rule may hold symbols processed after its left-hand side
            # (values that cannot reach I at this length, but are needed at longer ones)
            for r in self.rules:
                for j, sym in enumerate(r.rhs[:-1], start=1):
                    right = vec[sym] if isinstance(sym, str) else term
                    P[r][j][n] = _lse(P[r][j - 1][n::-1] + right[:n + 1])
        self._N, self._P = N, P
        return I

    def log_z(self, n: int) -> float:
        r""":math:`\log Z_G(n) = \log I_S(n)` (``-inf``: no string of length ``n``)."""
        n = check_length(n)
        return float(self.inside(n)[self.start][n])

    def has_length(self, n: int) -> bool:
        return self.log_z(n) > _NEG

    # ------------------------------------------------------------------ sampling
    def sample(self, rng: np.random.Generator, n: int) -> tuple[list[int], float]:
        r"""A string of length ``n`` drawn from :math:`p(w \mid n)` and the log-probability
        :math:`\log p_G(d)` of its derivation :math:`d`."""
        rng = check_rng(rng)
        if not self.has_length(n):
            raise TaskLengthError(f"the grammar generates no string of length {n}")
        I, P = self._I, self._P
        out: list[int] = []
        logp = 0.0
        todo = [(self.start, n)]
        while todo:
            sym, m = todo.pop()
            if not isinstance(sym, str):
                out.append(sym)
                continue
            rules = [r for r in self.by_lhs[sym] if r.prob > 0]
            w = np.array([math.log(r.prob) + P[r][-1][m] for r in rules])
            r = rules[_choose(rng, w)]
            logp += math.log(r.prob)
            parts, rest = [], m
            for j in range(len(r.rhs), 0, -1):  # split the length, last symbol first
                sym_j = r.rhs[j - 1]
                right = I[sym_j][:rest + 1] if isinstance(sym_j, str) else \
                    np.where(np.arange(rest + 1) == 1, 0.0, _NEG)
                left = P[r][j - 1][rest::-1]  # left[l] = prefix table at rest - l
                l = _choose(rng, left + right)
                parts.append((sym_j, l))
                rest -= l
            todo.extend(parts)  # parts are last-first: popping gives left-to-right
        return out, logp

    # ------------------------------------------------------------------ parsing
    def string_log_prob(self, strings) -> np.ndarray:
        r""":math:`\log p_G(w)` summed over all derivations, for equal-length strings
        (B, n), by a chart (inside) parse vectorised over strings and span starts.

        Cost :math:`O(n^3)` per rule symbol: meant for ambiguous grammars and for checks.
        """
        W = np.asarray(strings, dtype=np.int64)
        if W.ndim == 1:
            W = W[None]
        B, n = W.shape
        n_charts = len(self.nonterminals) + len(self.terminals) + sum(
            len(r.rhs) + 1 for r in self.rules)
        chunk = max(1, int(4e6 // (n_charts * (n + 1) ** 2)))  # about 32 MB per chunk
        if B > chunk:
            return np.concatenate([self._chart(W[s:s + chunk]) for s in range(0, B, chunk)])
        return self._chart(W)

    def _chart(self, W: np.ndarray) -> np.ndarray:
        B, n = W.shape
        # C[X][b, i, k]: log inside of X over w[i:k]; D[r][j][b, i, k]: of r.rhs[:j]
        C = {X: np.full((B, n + 1, n + 1), _NEG) for X in self.nonterminals}
        D = {r: [np.full((B, n + 1, n + 1), _NEG) for _ in range(len(r.rhs) + 1)]
             for r in self.rules}
        T = {}
        for a in self.terminals:
            t = np.full((B, n + 1, n + 1), _NEG)
            idx = np.arange(n)
            t[:, idx, idx + 1] = np.where(W == a, 0.0, _NEG)
            T[a] = t
        diag = np.arange(n + 1)
        for r in self.rules:
            D[r][0][:, diag, diag] = 0.0
        for L in range(n + 1):
            i = np.arange(n - L + 1)  # span starts
            m = np.arange(L + 1)  # split offsets
            ii, mm = i[:, None], i[:, None] + m[None, :]  # (S, L+1)
            for X in self._order:  # same-span dependencies first
                for r in self.by_lhs[X]:
                    for j, sym in enumerate(r.rhs, start=1):
                        right = C[sym] if isinstance(sym, str) else T[sym]
                        v = D[r][j - 1][:, ii, mm] + right[:, mm, ii + L]  # (B, S, L+1)
                        D[r][j][:, i, i + L] = _lse(v, axis=2)
                parts = [math.log(r.prob) + D[r][-1][:, i, i + L]
                         for r in self.by_lhs[X] if r.prob > 0]
                C[X][:, i, i + L] = _lse(np.stack(parts), axis=0)
            for r in self.rules:  # prefixes, now that every symbol has this span (as above)
                for j, sym in enumerate(r.rhs[:-1], start=1):
                    right = C[sym] if isinstance(sym, str) else T[sym]
                    v = D[r][j - 1][:, ii, mm] + right[:, mm, ii + L]
                    D[r][j][:, i, i + L] = _lse(v, axis=2)
        return C[self.start][:, 0, n]


def _choose(rng, logw: np.ndarray) -> int:
    w = np.exp(logw - np.max(logw))
    c = np.cumsum(w)
    return int(min(np.searchsorted(c, rng.random() * c[-1], side="right"), len(w) - 1))


# ---------------------------------------------------------------------- the five tasks
def _reversal(marked: bool, k: int = 2, mean_length: float = 60.0) -> PCFG:
    c = continue_prob(mean_length)
    rules = [Rule("S", (a, "S", a), c / k) for a in range(k)]
    rules.append(Rule("S", (k,) if marked else (), 1 - c))
    return PCFG("S", rules, unambiguous=True)


def _padded_reversal(k: int = 2, mean_content: float = 60.0, mean_padding: float = 30.0,
                     as_peer_samples: bool = False):
    c, g = continue_prob(mean_content), continue_prob(mean_padding)
    # as sampled by the peer: at least one symbol of content (see the module docstring)
    rules = [Rule("S0", (a, "S", a)) for a in range(k)] if as_peer_samples else []
    for a in range(k):
        rules += [Rule("S", (a, "S", a), c / k), Rule("S", (f"T{a}",), (1 - c) / k),
                  Rule(f"T{a}", (a, f"T{a}"), g), Rule(f"T{a}", (), 1 - g)]
    return PCFG("S0" if as_peer_samples else "S", rules, unambiguous=False)


def _dyck(k: int = 2, mean_splits: float = 1.0, mean_depth: float = 40.0,
          as_peer_samples: bool = False) -> PCFG:
    s, t = continue_prob(mean_splits), continue_prob(mean_depth - 1)
    rules = [Rule("S", ("S", "T"), s), Rule("S", ("T",), 1 - s)]
    if as_peer_samples:  # at least two top-level pairs (see the module docstring)
        rules.insert(0, Rule("S0", ("S", "T")))
    for i in range(k):
        rules += [Rule("T", (2 * i, "S", 2 * i + 1), t), Rule("T", (2 * i, 2 * i + 1), 1 - t)]
    return PCFG("S0" if as_peer_samples else "S", rules, unambiguous=True)


def _hardest_cfl(mean_commas=0.5, mean_short=0.5, mean_long=2.0, semicolon=0.25,
                 mean_splits=1.0, mean_depth=40.0) -> PCFG:
    lp, rp, ls, rs, comma, semi, dollar = range(7)  # ( ) [ ] , ; $
    c, u = continue_prob(mean_commas), continue_prob(mean_short)
    v, s = continue_prob(mean_long - 1), continue_prob(mean_splits)
    t, q = continue_prob(mean_depth), semicolon
    rules = [Rule("S'", ("R", dollar, "Q", "S", "L", semi)),
             Rule("L", ("L'", comma, "U")),
             Rule("L'", (comma, "V", "L'"), c), Rule("L'", (), 1 - c),
             Rule("R", ("U", comma, "R'")),
             Rule("R'", ("R'", "V", comma), c), Rule("R'", (), 1 - c),
             Rule("U", ("W", "U"), u), Rule("U", (), 1 - u),
             Rule("V", ("W", "V"), v), Rule("V", ("W",), 1 - v)]
    rules += [Rule("W", (a,)) for a in (lp, rp, ls, rs, dollar)]
    rules += [Rule("Q", ("L", semi, "R"), q), Rule("Q", (), 1 - q),
              Rule("S", ("S", "Q", "T"), s), Rule("S", ("T",), 1 - s)]
    for a, b in ((lp, rp), (ls, rs)):
        rules += [Rule("T", (a, "Q", "S", "Q", b), t / 2), Rule("T", (a, "Q", b), (1 - t) / 2)]
    return PCFG("S'", rules, unambiguous=False)


class CFLTask:
    """One DuSell–Chiang language-modelling task: a grammar, its symbols, its lengths.

    Vocabulary: symbols ``0..A-1`` (``alphabet`` gives their characters), then ``BOS`` =
    ``A`` (input only) and ``EOS`` = ``A`` (output only): a model reads ``A + 1`` input ids
    and writes ``A + 1`` logits.
    """

    def __init__(self, name: str, grammar: PCFG, alphabet: str,
                 train_lengths=(40, 80), test_lengths=(40, 100)):
        self.name, self.grammar, self.alphabet = name, grammar, alphabet
        self.n_symbols = len(alphabet)
        self.bos = self.eos = self.n_symbols
        self.vocab_size = self.output_size = self.n_symbols + 1
        self.train_range, self.test_range = tuple(train_lengths), tuple(test_lengths)

    def has_length(self, n) -> bool:
        return self.grammar.has_length(check_length(n))

    def valid_lengths(self, lo: int, hi: int) -> tuple[int, ...]:
        self.grammar.inside(hi)
        return tuple(n for n in range(lo, hi + 1) if self.grammar.has_length(n))

    def require_length(self, n) -> int:
        n = check_length(n)
        if not self.grammar.has_length(n):
            raise TaskLengthError(f"task {self.name!r} has no string of length {n}")
        return n

    def sample(self, rng, n) -> list[int]:
        """One string of length ``n`` from :math:`p(w \\mid n)`."""
        return self.grammar.sample(check_rng(rng), self.require_length(n))[0]

    def log_prob_given_length(self, strings, derivation_logp=None) -> np.ndarray:
        r""":math:`\log p(w \mid n)` of equal-length strings (B, n): the derivation's log
        probability (unambiguous grammars, when given) or the chart parse, minus
        :math:`\log Z_G(n)`."""
        W = np.asarray(strings, dtype=np.int64)
        if W.ndim == 1:
            W = W[None]
        if W.size and (W.min() < 0 or W.max() >= self.n_symbols):
            raise AlphabetError(f"{self.name}: symbols must lie in 0..{self.n_symbols - 1}")
        n = W.shape[1]
        if self.grammar.unambiguous and derivation_logp is not None:
            lp = np.asarray(derivation_logp, dtype=np.float64)
        else:
            lp = self.grammar.string_log_prob(W)
        return lp - self.grammar.log_z(n)

    def sample_batch(self, rng, batch, n, *, bound: bool = True) -> dict[str, np.ndarray]:
        """``x`` (B, n+1) = BOS w, ``y`` (B, n+1) = w EOS, ``neg_log_p`` (B,) =
        :math:`-\\log p(w \\mid n)` (the exact lower bound of each string; NaN when
        ``bound=False``, which skips the chart parse of ambiguous grammars), ``length``."""
        rng, batch, n = check_rng(rng), check_batch(batch), self.require_length(n)
        ws, lps = zip(*(self.grammar.sample(rng, n) for _ in range(batch)))
        W = np.array(ws, dtype=np.int64).reshape(batch, n)
        nlp = -self.log_prob_given_length(W, lps) if bound else np.full(batch, np.nan)
        col = np.full((batch, 1), self.bos, dtype=np.int64)
        return {"x": np.concatenate([col, W], 1), "y": np.concatenate([W, col], 1),
                "neg_log_p": nlp, "length": n}

    def __repr__(self) -> str:
        return f"<CFLTask {self.name!r} over {self.alphabet!r}>"


def _tasks() -> dict[str, CFLTask]:
    return {t.name: t for t in (
        CFLTask("marked_reversal", _reversal(True), "01#"),
        CFLTask("unmarked_reversal", _reversal(False), "01"),
        CFLTask("padded_reversal", _padded_reversal(), "01"),
        CFLTask("dyck", _dyck(), "()[]"),
        CFLTask("hardest_cfl", _hardest_cfl(), "()[],;$"),
        CFLTask("dyck_peer", _dyck(as_peer_samples=True), "()[]"),
        CFLTask("padded_reversal_peer", _padded_reversal(as_peer_samples=True), "01"))}


#: the five tasks with DuSell & Chiang's default grammar parameters
CFL_TASKS: dict[str, CFLTask] = _tasks()


def get_cfl_task(name) -> CFLTask:
    """The registered task ``name`` (a CFLTask is returned as is)."""
    if isinstance(name, CFLTask):
        return name
    try:
        return CFL_TASKS[name]
    except (KeyError, TypeError):
        raise UnknownNameError("DuSell-Chiang task", name, list(CFL_TASKS)) from None
