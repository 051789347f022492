"""The :class:`Language` base class: alphabet, vocabulary, validation, hard negatives.

A *language* here is a set :math:`L \\subseteq \\Sigma^*` of strings over a finite alphabet
:math:`\\Sigma` of single characters, with

* an exact membership oracle ``contains(w)`` (:math:`w \\in L`),
* a sampler ``sample(rng, n)`` drawing a member of length exactly :math:`n`,
  (near-)uniformly from :math:`L \\cap \\Sigma^n`,
* the next-symbol oracle ``next_symbols(p)``: for a prefix :math:`p`,

  .. math::

     \\operatorname{next}(p) = \\{\\sigma \\in \\Sigma : \\exists v \\in \\Sigma^*,\\;
     p\\,\\sigma\\,v \\in L\\} \\;\\cup\\; \\{\\$ : p \\in L\\},

  the target set of the next-symbol prediction task (Gers & Schmidhuber 2001; Suzgun et
  al. 2019).  A prefix that no member extends (*non-viable*) has the empty set.
* ``hard_negative(rng, w)``: an edit-perturbed string that is *not* in :math:`L`.

Vocabulary (ids used by every task built on a language, see :attr:`Language.vocab`)::

    alphabet[0] .. alphabet[A-1]  ->  0 .. A-1
    END "$"                       ->  A        (end-of-string marker, next-symbol target)
    PAD (no symbol)               ->  A + 1    (padding of ragged batches; ``pad_id``)

so the next-symbol target width is ``A + 1`` (``n_targets``) and an input embedding needs
``A + 2`` rows (``vocab_size``).
"""

from __future__ import annotations

import abc
import numbers

import numpy as np

from ..errors import AlphabetError, InvalidParameterError

__all__ = ["Language", "END", "CHOMSKY_CLASSES", "check_rng", "check_length", "check_batch"]

END = "$"
CHOMSKY_CLASSES = ("regular", "context-free", "context-sensitive")


def check_rng(rng) -> np.random.Generator:
    """Return ``rng`` if it is a :class:`numpy.random.Generator`, else raise."""
    if not isinstance(rng, np.random.Generator):
        raise InvalidParameterError(
            f"rng must be a numpy.random.Generator (e.g. numpy.random.default_rng(seed)), "
            f"got {type(rng).__name__}")
    return rng


def check_length(length, what: str = "length") -> int:
    """Return ``length`` as an ``int`` >= 0; raise on bools, non-integers and negatives."""
    if isinstance(length, (bool, np.bool_)) or not isinstance(length, numbers.Integral):
        raise InvalidParameterError(f"{what} must be an integer, got {length!r}")
    length = int(length)
    if length < 0:
        raise InvalidParameterError(f"{what} must be >= 0, got {length}")
    return length


def check_batch(batch) -> int:
    """Return ``batch`` as an ``int`` >= 1."""
    batch = check_length(batch, "batch size")
    if batch < 1:
        raise InvalidParameterError(f"batch size must be >= 1, got {batch}")
    return batch


def sample_categorical(rng: np.random.Generator, logw: np.ndarray) -> np.ndarray:
    """Draw one index per row of unnormalised log-weights ``logw`` (B, K).

    .. math:: P(k) = e^{\\ell_k} / \\sum_j e^{\\ell_j}

    Every row must have at least one finite entry.
    """
    m = np.max(logw, axis=1, keepdims=True)  # (B, 1)
    w = np.exp(logw - m)  # (B, K), exp(-inf) = 0
    c = np.cumsum(w, axis=1)  # (B, K)
    u = rng.random(logw.shape[0]) * c[:, -1]  # (B,)
    k = np.sum(c <= u[:, None], axis=1)  # first index with c > u
    # guard against u landing exactly on the total (probability ~0) or a trailing zero
    k = np.minimum(k, logw.shape[1] - 1)
    bad = ~np.isfinite(logw[np.arange(logw.shape[0]), k])
    if np.any(bad):  # pragma: no cover - only reachable through rounding at a boundary
        k[bad] = np.argmax(logw[bad], axis=1)
    return k


class Language(abc.ABC):
    """A formal language with a membership oracle, a sampler and a next-symbol oracle.

    Subclasses set the class attributes and implement the underscore hooks; the public
    methods validate their input and raise :class:`~rnnmem.errors.AlphabetError` (a symbol
    outside :attr:`alphabet`, or a non-string) or
    :class:`~rnnmem.errors.InvalidParameterError` (a length with no member, a negative
    length, a bad ``rng``).

    Attributes
    ----------
    name : str
        Registry name.
    alphabet : tuple of str
        Single-character symbols, markers such as ``'#'`` included. Never contains ``'$'``.
    description : str
        One-line definition.
    chomsky : str
        ``"regular"``, ``"context-free"`` or ``"context-sensitive"`` (the lowest class of
        the Chomsky hierarchy containing the language).
    contains_empty : bool
        Whether the empty string is a member.
    length_rule : str
        Which lengths have members, in words (used in error messages).
    """

    name: str = ""
    alphabet: tuple[str, ...] = ()
    description: str = ""
    chomsky: str = ""
    contains_empty: bool = False
    length_rule: str = ""

    def __init__(self) -> None:
        alph = tuple(self.alphabet)
        if not alph or any(not isinstance(c, str) or len(c) != 1 for c in alph):
            raise InvalidParameterError(f"alphabet of {self.name!r} must be single characters")
        if len(set(alph)) != len(alph) or END in alph:
            raise InvalidParameterError(
                f"alphabet of {self.name!r} must be distinct symbols without {END!r}")
        if self.chomsky not in CHOMSKY_CLASSES:
            raise InvalidParameterError(f"chomsky class of {self.name!r} must be one of "
                                        f"{CHOMSKY_CLASSES}, got {self.chomsky!r}")
        self.alphabet = alph
        self._index = {c: i for i, c in enumerate(alph)}
        self._symbol_set = frozenset(alph)
        self._id_to_symbol = np.array(list(alph) + [END], dtype="<U1")
        # translation table for the fast str -> ids path
        self._trans = {ord(c): chr(i) for i, c in enumerate(alph)}

    # ------------------------------------------------------------------ vocabulary
    @property
    def vocab(self) -> dict[str, int]:
        """Symbol -> id: the alphabet in order, then ``'$'`` -> ``len(alphabet)``."""
        v = dict(self._index)
        v[END] = len(self.alphabet)
        return v

    @property
    def end_id(self) -> int:
        """Id of the end-of-string marker ``'$'`` (also the last next-symbol target)."""
        return len(self.alphabet)

    @property
    def pad_id(self) -> int:
        """Id used to pad ragged batches in :meth:`encode` (no symbol)."""
        return len(self.alphabet) + 1

    @property
    def vocab_size(self) -> int:
        """Number of input ids: alphabet, END and PAD."""
        return len(self.alphabet) + 2

    @property
    def n_targets(self) -> int:
        """Width of a next-symbol target vector: alphabet and END."""
        return len(self.alphabet) + 1

    def check_string(self, string, what: str = "string") -> str:
        """Return ``string`` if it is a ``str`` over :attr:`alphabet`, else raise AlphabetError."""
        if not isinstance(string, str):
            raise AlphabetError(f"{what} for language {self.name!r} must be a str, "
                                f"got {type(string).__name__}")
        if not self._symbol_set.issuperset(string):
            for i, c in enumerate(string):
                if c not in self._symbol_set:
                    raise AlphabetError(
                        f"symbol {c!r} at position {i} is not in the alphabet of language "
                        f"{self.name!r} {self.alphabet}")
        return string

    def encode(self, strings) -> np.ndarray:
        """Map a string to ids (T,) or a list of strings to ids (B, T_max), PAD-padded.

        Raises AlphabetError on a non-string or a symbol outside the alphabet (``'$'``
        included: it is a target, never an input symbol).
        """
        if isinstance(strings, str):
            s = self.check_string(strings)
            return np.frombuffer(s.translate(self._trans).encode("latin-1"),
                                 dtype=np.uint8).astype(np.int64)
        if isinstance(strings, (bytes, bytearray)) or not hasattr(strings, "__iter__"):
            raise AlphabetError(f"encode expects a str or a sequence of str, "
                                f"got {type(strings).__name__}")
        rows = [self.encode(self.check_string(s, "each string")) for s in strings]
        t_max = max((len(r) for r in rows), default=0)
        out = np.full((len(rows), t_max), self.pad_id, dtype=np.int64)  # (B, T)
        for b, r in enumerate(rows):
            out[b, :len(r)] = r
        return out

    def decode(self, ids):
        """Inverse of :meth:`encode`: (T,) -> str, (B, T) -> list of str.

        PAD ids are dropped, END ends the string; any other id out of range raises
        AlphabetError.
        """
        a = np.asarray(ids)
        if a.dtype.kind not in "iu" or a.ndim not in (1, 2):
            raise AlphabetError(f"decode expects a 1-D or 2-D integer array, "
                                f"got dtype {a.dtype} with shape {a.shape}")
        if a.ndim == 2:
            return [self.decode(row) for row in a]
        bad = (a < 0) | (a > self.pad_id)
        if np.any(bad):
            raise AlphabetError(f"id {int(a[bad][0])} is not in the vocabulary of language "
                                f"{self.name!r} (0..{self.pad_id})")
        stop = np.flatnonzero(a == self.end_id)
        if stop.size:
            a = a[:stop[0]]
        a = a[a != self.pad_id]
        return "".join(self._id_to_symbol[a].tolist())

    # ------------------------------------------------------------------ lengths
    @abc.abstractmethod
    def _has_length(self, n: int) -> bool:
        """Whether some member has length ``n`` (``n >= 0``)."""

    def has_length(self, n) -> bool:
        """Whether some member has length exactly ``n``."""
        return self._has_length(check_length(n))

    def valid_lengths(self, max_len, min_len=1) -> tuple[int, ...]:
        """All ``n`` with ``min_len <= n <= max_len`` that have a member."""
        lo, hi = check_length(min_len, "min_len"), check_length(max_len, "max_len")
        return tuple(n for n in range(lo, hi + 1) if self._has_length(n))

    def require_length(self, n) -> int:
        """Return ``n`` if a member of that length exists, else raise InvalidParameterError."""
        n = check_length(n)
        if not self._has_length(n):
            raise InvalidParameterError(
                f"language {self.name!r} has no member of length {n} ({self.length_rule})")
        return n

    # ------------------------------------------------------------------ sampling
    @abc.abstractmethod
    def _sample_ids(self, rng: np.random.Generator, batch: int, length: int) -> np.ndarray:
        """``batch`` members of length ``length`` (already validated) as ids (B, T)."""

    def sample_ids(self, rng, batch, length) -> np.ndarray:
        """``batch`` independent members of length exactly ``length``, as int64 ids (B, T)."""
        rng, batch, length = check_rng(rng), check_batch(batch), self.require_length(length)
        out = np.asarray(self._sample_ids(rng, batch, length), dtype=np.int64)
        if out.shape != (batch, length):  # pragma: no cover - internal invariant
            raise AssertionError(f"{self.name}: sampler returned shape {out.shape}")
        return out

    def sample(self, rng, length) -> str:
        """One member of length exactly ``length`` (see the class docstring for the law)."""
        return self.decode(self.sample_ids(rng, 1, length)[0])

    def sample_many(self, rng, batch, length) -> list[str]:
        """``batch`` independent members of length ``length``, as strings."""
        return self.decode(self.sample_ids(rng, batch, length))

    # ------------------------------------------------------------------ membership
    @abc.abstractmethod
    def _contains(self, s: str) -> bool:
        """Membership of a validated string."""

    def contains(self, string) -> bool:
        """Exact membership oracle :math:`w \\in L`."""
        return bool(self._contains(self.check_string(string)))

    def __contains__(self, string) -> bool:
        return self.contains(string)

    # ------------------------------------------------------------------ next symbols
    @abc.abstractmethod
    def _next_symbols(self, p: str) -> frozenset:
        """Reference next-symbol set of a validated prefix (direct characterisation)."""

    def next_symbols(self, prefix) -> frozenset:
        """Symbols that can follow ``prefix`` in some member, plus ``'$'`` if it is a member.

        Empty for a prefix that no member extends.
        """
        return frozenset(self._next_symbols(self.check_string(prefix, "prefix")))

    def _next_table(self, s: str) -> np.ndarray:
        """Fast path of :meth:`next_symbol_table`; default: the reference, prefix by prefix."""
        out = np.zeros((len(s) + 1, self.n_targets), dtype=bool)
        v = self.vocab
        for t in range(len(s) + 1):
            for c in self._next_symbols(s[:t]):
                out[t, v[c]] = True
        return out

    def next_symbol_table(self, string) -> np.ndarray:
        """Multi-hot next-symbol sets of every prefix, (T+1, A+1) bool.

        Row ``t`` is :meth:`next_symbols` of ``string[:t]`` (row 0: the empty prefix), in
        vocabulary order (alphabet, then ``'$'``). Computed in one pass per language; the
        prefix-by-prefix :meth:`next_symbols` is its reference.
        """
        s = self.check_string(string)
        out = np.asarray(self._next_table(s), dtype=bool)
        if out.shape != (len(s) + 1, self.n_targets):  # pragma: no cover - invariant
            raise AssertionError(f"{self.name}: next table has shape {out.shape}")
        return out

    # ------------------------------------------------------------------ negatives
    def _edit(self, rng: np.random.Generator, s: str, kind: str) -> str:
        a, n = self.alphabet, len(s)
        if kind == "substitute" and n:
            i = int(rng.integers(n))
            others = [c for c in a if c != s[i]]
            return s[:i] + others[int(rng.integers(len(others)))] + s[i + 1:]
        if kind == "swap" and n >= 2:
            i, j = sorted(rng.choice(n, size=2, replace=False).tolist())
            return s[:i] + s[j] + s[i + 1:j] + s[i] + s[j + 1:]
        if kind == "move" and n:  # delete one symbol, insert a random one elsewhere
            i = int(rng.integers(n))
            t = s[:i] + s[i + 1:]
            j = int(rng.integers(n))
            return t[:j] + a[int(rng.integers(len(a)))] + t[j:]
        if kind == "insert":
            j = int(rng.integers(n + 1))
            return s[:j] + a[int(rng.integers(len(a)))] + s[j:]
        if kind == "delete" and n:
            i = int(rng.integers(n))
            return s[:i] + s[i + 1:]
        return s

    def hard_negative(self, rng, string, *, same_length: bool = True,
                      max_tries: int = 256) -> str:
        """A non-member obtained from ``string`` (usually a member) by a few edits.

        Each try applies ``k`` random edits, ``k = 1`` for the first 64 tries then growing,
        each edit drawn uniformly from *substitute* one symbol, *swap* two positions,
        *move* (delete one symbol and insert a random one elsewhere) and, when
        ``same_length`` is false, *insert* and *delete*; the first edited string with
        ``contains() == False`` is returned. If random tries fail, every single
        substitution is scanned, then random strings of the same length. Length is
        preserved whenever ``same_length`` (the default) and ``len(string) >= 1``; for the
        empty string one symbol is inserted.

        Raises
        ------
        InvalidParameterError
            If no non-member was found (cannot happen for the registered languages at
            lengths >= 1).
        """
        rng, s = check_rng(rng), self.check_string(string)
        max_tries = check_length(max_tries, "max_tries")
        if len(s) == 0:
            same_length = False
        kinds = ("substitute", "swap", "move") if same_length else (
            "substitute", "swap", "move", "insert", "delete")
        for attempt in range(max_tries):
            k = 1 + attempt // 64
            t = s
            for _ in range(k):
                t = self._edit(rng, t, kinds[int(rng.integers(len(kinds)))])
            if t != s and not self._contains(t):
                return t
        n = len(s)
        if n:
            for i in rng.permutation(n).tolist():
                for c in self.alphabet:
                    t = s[:i] + c + s[i + 1:]
                    if c != s[i] and not self._contains(t):
                        return t
            ids = rng.integers(len(self.alphabet), size=(max(max_tries, 1), n))
            for row in ids:
                t = "".join(self.alphabet[j] for j in row)
                if not self._contains(t):
                    return t
        else:
            for c in self.alphabet:
                if not self._contains(c):
                    return c
        raise InvalidParameterError(
            f"no non-member of language {self.name!r} found near {s!r} "
            f"(length {n}, same_length={same_length})")

    # ------------------------------------------------------------------ misc
    def __repr__(self) -> str:
        return f"<Language {self.name!r} ({self.chomsky}) over {''.join(self.alphabet)!r}>"
