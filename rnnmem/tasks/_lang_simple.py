"""Counting, bracket, reversal and copy languages (closed-form samplers).

Sources for the task set: Gers & Schmidhuber (2001) (:math:`a^nb^n`, :math:`a^nb^nc^n`),
Suzgun et al. (2019) and Das & Mali (2024, arXiv 2410.03154) (Dyck languages,
next-symbol prediction), Delétang et al. (2023, google-deepmind/
neural_networks_chomsky_hierarchy) and DuSell & Chiang (2020, 2022) (reversal and copy
languages). Definitions and samplers are written here from the mathematical definitions.
"""

from __future__ import annotations

import numpy as np

from ._lang_base import Language

__all__ = ["Dyck1", "Dyck2", "AnBn", "AnBnCn", "MarkedReversal", "UnmarkedReversal",
           "Copy", "Parity"]


def dyck_up_probability(h, r):
    """Exact probability that a uniform Dyck path goes up, at height ``h`` with ``r`` steps left.

    With ``r`` steps left at height ``h``, the number of completions is the ballot number
    :math:`N(r, h) = \\binom{r}{u}\\frac{h+1}{d+1}`, :math:`u = (r-h)/2`, :math:`d=(r+h)/2`
    (reflection principle), so

    .. math:: P(\\uparrow \\mid r, h) = \\frac{N(r-1, h+1)}{N(r, h)}
              = \\frac{u\\,(h+2)}{r\\,(h+1)}.
    """
    h = np.asarray(h)
    u = (r - h) // 2
    return u * (h + 2) / (r * (h + 1.0))


def _dyck_skeleton_step(rng: np.random.Generator, h: np.ndarray, r: int) -> np.ndarray:
    """Which lanes (B,) of a uniform Dyck-path sampler go up (:func:`dyck_up_probability`)."""
    return rng.random(h.shape[0]) < dyck_up_probability(h, r)


class _EvenLengths(Language):
    """Languages with members at every even length and none at odd ones
    (:math:`\\varepsilon` included)."""

    contains_empty = True
    length_rule = "lengths must be even"

    def _has_length(self, n):
        return n % 2 == 0


class Dyck1(_EvenLengths):
    """Balanced strings of one bracket pair, :math:`S \\to \\varepsilon \\mid (S)S`.

    Members: every prefix has at least as many ``(`` as ``)`` and the totals are equal.
    :math:`\\varepsilon` is a member. Lengths: even.

    Sampling is exactly uniform over the :math:`C_{n/2}` (Catalan) members of length
    :math:`n`: a left-to-right random walk whose up-probability is the ratio of ballot
    numbers (:func:`_dyck_skeleton_step`), not the biased "coin flip while legal" walk.
    """

    name = "dyck1"
    alphabet = ("(", ")")
    description = "Dyck-1: balanced strings over one bracket pair ()"
    chomsky = "context-free"

    def _sample_ids(self, rng, batch, length):
        out = np.empty((batch, length), dtype=np.int64)  # (B, T)
        h = np.zeros(batch, dtype=np.int64)  # (B,) current height
        for t in range(length):
            up = _dyck_skeleton_step(rng, h, length - t)
            out[:, t] = np.where(up, 0, 1)
            h += np.where(up, 1, -1)
        return out

    def _contains(self, s):
        h = 0
        for c in s:
            h += 1 if c == "(" else -1
            if h < 0:
                return False
        return h == 0

    def _next_symbols(self, p):
        h = 0
        for c in p:
            h += 1 if c == "(" else -1
            if h < 0:
                return frozenset()
        out = {"("}
        if h > 0:
            out.add(")")
        else:
            out.add("$")
        return frozenset(out)

    def _next_table(self, s):
        ids = self.encode(s)  # (T,)
        h = np.concatenate([[0], np.cumsum(np.where(ids == 0, 1, -1))])  # (T+1,)
        viable = np.minimum.accumulate(h) >= 0  # (T+1,)
        return np.stack([viable, viable & (h > 0), viable & (h == 0)], axis=1)


class Dyck2(_EvenLengths):
    """Balanced strings of two bracket pairs, :math:`S \\to \\varepsilon \\mid (S)S \\mid [S]S`.

    :math:`\\varepsilon` is a member. Lengths: even.

    Sampling is exactly uniform: a Dyck-2 word of length :math:`2m` is a Dyck-1 skeleton
    (uniform, as in :class:`Dyck1`) together with an independent type for each of its
    :math:`m` matched pairs, a bijection onto :math:`C_m 2^m` words.
    """

    name = "dyck2"
    alphabet = ("(", ")", "[", "]")
    description = "Dyck-2: balanced strings over two bracket pairs () and []"
    chomsky = "context-free"
    _close = {"(": ")", "[": "]"}

    def _sample_ids(self, rng, batch, length):
        out = np.empty((batch, length), dtype=np.int64)  # (B, T)
        h = np.zeros(batch, dtype=np.int64)  # (B,)
        open_type = np.zeros((batch, length // 2 + 2), dtype=np.int64)  # (B, depth)
        lanes = np.arange(batch)
        for t in range(length):
            up = _dyck_skeleton_step(rng, h, length - t)
            new_type = rng.integers(0, 2, size=batch)  # (B,)
            open_type[lanes[up], h[up] + 1] = new_type[up]
            typ = np.where(up, new_type, open_type[lanes, h])
            out[:, t] = 2 * typ + np.where(up, 0, 1)  # "(" 0, ")" 1, "[" 2, "]" 3
            h += np.where(up, 1, -1)
        return out

    def _stack(self, s):
        """Stack of open brackets after ``s``, or None if ``s`` is not viable."""
        stack = []
        for c in s:
            if c in self._close:
                stack.append(c)
            elif not stack or self._close[stack.pop()] != c:
                return None
        return stack

    def _contains(self, s):
        st = self._stack(s)
        return st is not None and not st

    def _next_symbols(self, p):
        st = self._stack(p)
        if st is None:
            return frozenset()
        return frozenset({"(", "[", self._close[st[-1]] if st else "$"})

    def _next_table(self, s):
        out = np.zeros((len(s) + 1, 5), dtype=bool)
        stack = []
        out[0] = (True, False, True, False, True)
        for t, c in enumerate(s, start=1):
            if c in self._close:
                stack.append(c)
            elif not stack or self._close[stack.pop()] != c:
                break  # this and every later prefix is non-viable: rows stay False
            out[t, 0] = out[t, 2] = True
            if stack:
                out[t, 1 if stack[-1] == "(" else 3] = True
            else:
                out[t, 4] = True
        return out


class _Blocks(Language):
    """:math:`\\{a_1^n a_2^n \\cdots a_m^n : n \\ge 0\\}` for the alphabet
    :math:`(a_1, \\dots, a_m)`: :math:`\\varepsilon` is a member, lengths are the multiples
    of :math:`m`, one member per length (so sampling is trivially uniform)."""

    contains_empty = True

    def _has_length(self, n):
        return n % len(self.alphabet) == 0

    def _sample_ids(self, rng, batch, length):
        m = len(self.alphabet)
        row = np.repeat(np.arange(m), length // m)  # (T,)
        return np.broadcast_to(row, (batch, length)).copy()

    def _contains(self, s):
        m = len(self.alphabet)
        k = len(s) // m
        return len(s) % m == 0 and s == "".join(c * k for c in self.alphabet)


class AnBn(_Blocks):
    """:math:`\\{a^n b^n : n \\ge 0\\}`; :math:`\\varepsilon` is a member. Lengths: even.

    One member per length, so sampling is trivially uniform.
    """

    name = "anbn"
    alphabet = ("a", "b")
    description = "a^n b^n, n >= 0"
    chomsky = "context-free"
    length_rule = "lengths must be even"

    def _next_symbols(self, p):
        i = len(p) - len(p.lstrip("a"))
        j = len(p) - i
        if p[i:] != "b" * j or j > i:
            return frozenset()
        out = set()
        if j == 0:
            out.add("a")
        if j < i:
            out.add("b")
        if j == i:
            out.add("$")
        return frozenset(out)

    def _next_table(self, s):
        ids = self.encode(s)  # (T,)
        na = np.concatenate([[0], np.cumsum(ids == 0)])  # (T+1,)
        nb = np.concatenate([[0], np.cumsum(ids == 1)])  # (T+1,)
        order_bad = np.concatenate([[False], (ids == 0) & (nb[:-1] > 0)])  # a after a b
        viable = (np.cumsum(order_bad) == 0) & (nb <= na)
        return np.stack([viable & (nb == 0), viable & (nb < na), viable & (nb == na)], axis=1)


class AnBnCn(_Blocks):
    """:math:`\\{a^n b^n c^n : n \\ge 0\\}`; :math:`\\varepsilon` is a member.

    Lengths: multiples of 3. Not context-free (pumping lemma). One member per length.
    """

    name = "anbncn"
    alphabet = ("a", "b", "c")
    description = "a^n b^n c^n, n >= 0"
    chomsky = "context-sensitive"
    length_rule = "lengths must be multiples of 3"

    def _next_symbols(self, p):
        i = len(p) - len(p.lstrip("a"))
        rest = p[i:]
        j = len(rest) - len(rest.lstrip("b"))
        k = len(rest) - j
        if rest[j:] != "c" * k:
            return frozenset()
        if not ((k == 0 and j <= i) or (k > 0 and j == i and k <= i)):
            return frozenset()
        out = set()
        if j == 0 and k == 0:
            out.add("a")
        if k == 0 and j < i:
            out.add("b")
        if j == i and k < i:
            out.add("c")
        if i == j == k:
            out.add("$")
        return frozenset(out)

    def _next_table(self, s):
        ids = self.encode(s)  # (T,)
        na, nb, nc = (np.concatenate([[0], np.cumsum(ids == k)]) for k in range(3))
        order_bad = np.concatenate([[False, False], ids[1:] < ids[:-1]])[:len(s) + 1]
        viable = (np.cumsum(order_bad) == 0) & (
            ((nc == 0) & (nb <= na)) | ((nc > 0) & (nb == na) & (nc <= na)))
        return np.stack([viable & (nb == 0) & (nc == 0), viable & (nc == 0) & (nb < na),
                         viable & (nb == na) & (nc < na),
                         viable & (na == nb) & (nb == nc)], axis=1)


class MarkedReversal(Language):
    """:math:`\\{w\\#w^R : w \\in \\{a,b\\}^*\\}`; shortest member ``'#'``, so
    :math:`\\varepsilon` is not a member. Lengths: odd.

    Deterministic context-free. Sampling: :math:`w` uniform on :math:`\\{a,b\\}^{(n-1)/2}`,
    which is uniform over members since :math:`w` determines the member.
    """

    name = "marked_reversal"
    alphabet = ("a", "b", "#")
    description = "w # reverse(w), w over {a, b}"
    chomsky = "context-free"
    contains_empty = False
    length_rule = "lengths must be odd"

    def _has_length(self, n):
        return n % 2 == 1

    def _sample_ids(self, rng, batch, length):
        w = rng.integers(0, 2, size=(batch, length // 2))  # (B, m)
        return np.concatenate([w, np.full((batch, 1), 2), w[:, ::-1]], axis=1)

    def _contains(self, s):
        if s.count("#") != 1:
            return False
        w, r = s.split("#")
        return r == w[::-1]

    def _next_symbols(self, p):
        if "#" not in p:
            return frozenset({"a", "b", "#"})
        w, r = p.split("#", 1)
        target = w[::-1]
        if "#" in r or not target.startswith(r):
            return frozenset()
        return frozenset({target[len(r)]}) if len(r) < len(target) else frozenset({"$"})

    def _next_table(self, s):
        out = np.zeros((len(s) + 1, 4), dtype=bool)
        m = s.find("#")
        if m < 0:
            out[:, :3] = True
            return out
        out[:m + 1, :3] = True
        w = s[:m][::-1]
        for t in range(m + 1, len(s) + 1):  # prefix s[:t] has r = s[m+1:t]
            k = t - m - 1
            if k > 0 and (k > len(w) or s[t - 1] != w[k - 1]):
                break
            if k < len(w):
                out[t, self._index[w[k]]] = True
            else:
                out[t, 3] = True
        return out


class _AlwaysViable(Language):
    """Languages over {a, b} in which every prefix is viable and both symbols always
    continue it: ``next(p) = {a, b} | {$ if p in L}``."""

    alphabet = ("a", "b")

    def _next_symbols(self, p):
        return frozenset({"a", "b", "$"}) if self._contains(p) else frozenset({"a", "b"})

    def _next_table(self, s):
        out = np.ones((len(s) + 1, 3), dtype=bool)
        out[:, 2] = [self._contains(s[:t]) for t in range(len(s) + 1)]
        return out


class UnmarkedReversal(_EvenLengths, _AlwaysViable):
    """Even-length palindromes :math:`\\{w w^R : w \\in \\{a,b\\}^*\\}`;
    :math:`\\varepsilon` is a member. Lengths: even.

    Context-free but not deterministic (the middle must be guessed). Every prefix
    :math:`p` is viable (:math:`p\\,p^R \\in L`), so
    :math:`\\operatorname{next}(p) = \\{a, b\\} \\cup \\{\\$ : p \\in L\\}`.
    Sampling: :math:`w` uniform, a bijection onto the members.
    """

    name = "unmarked_reversal"
    description = "w reverse(w), w over {a, b} (even palindromes)"
    chomsky = "context-free"

    def _sample_ids(self, rng, batch, length):
        w = rng.integers(0, 2, size=(batch, length // 2))  # (B, m)
        return np.concatenate([w, w[:, ::-1]], axis=1)

    def _contains(self, s):
        return len(s) % 2 == 0 and s == s[::-1]


class Copy(_EvenLengths, _AlwaysViable):
    """:math:`\\{w w : w \\in \\{a,b\\}^*\\}`; :math:`\\varepsilon` is a member. Lengths: even.

    Not context-free (it is context-sensitive). Every prefix :math:`p` is viable
    (:math:`pp \\in L`). Sampling: :math:`w` uniform, a bijection onto the members.
    """

    name = "copy"
    description = "w w, w over {a, b} (the copy language)"
    chomsky = "context-sensitive"

    def _sample_ids(self, rng, batch, length):
        w = rng.integers(0, 2, size=(batch, length // 2))  # (B, m)
        return np.concatenate([w, w], axis=1)

    def _contains(self, s):
        m = len(s) // 2
        return len(s) % 2 == 0 and s[:m] == s[m:]


class Parity(_AlwaysViable):
    """Strings over {a, b} with an even number of ``b`` (a regular baseline).

    :math:`\\varepsilon` is a member; every length has members. Sampling: the first
    :math:`n-1` symbols uniform, the last one fixing the parity (uniform over members).
    """

    name = "parity"
    description = "strings over {a, b} with an even number of b"
    chomsky = "regular"
    contains_empty = True
    length_rule = "every length >= 0 has members"

    def _has_length(self, n):
        return True

    def _sample_ids(self, rng, batch, length):
        out = rng.integers(0, 2, size=(batch, length))  # (B, T)
        if length:
            out[:, -1] = out[:, :-1].sum(axis=1) % 2
        return out

    def _contains(self, s):
        return s.count("b") % 2 == 0

    def _next_table(self, s):
        out = np.ones((len(s) + 1, 3), dtype=bool)
        out[:, 2] = np.concatenate([[0], np.cumsum(self.encode(s) == 1)]) % 2 == 0
        return out
