"""Formal languages with membership oracles, the two task modes built on them, length bins.

Languages (:data:`LANGUAGES`, :func:`get_language`)
---------------------------------------------------
================================  =====================  =================  =====================
name                              alphabet               Chomsky class      lengths (is eps in L?)
================================  =====================  =================  =====================
``parity``                        ``a b``                regular            all (yes)
``dyck1``                         ``( )``                context-free       even (yes)
``dyck2``                         ``( ) [ ]``            context-free       even (yes)
``anbn``                          ``a b``                context-free       even (yes)
``marked_reversal``               ``a b #``              context-free       odd (no)
``unmarked_reversal``             ``a b``                context-free       even (yes)
``stack_manipulation``            ``0 1 a b p #``        context-free       >= 1 (no)
``modular_arithmetic_brackets``   ``0-4 + - * ( ) =``    context-free       >= 3 (no)
``anbncn``                        ``a b c``              context-sensitive  multiples of 3 (yes)
``copy``                          ``a b``                context-sensitive  even (yes)
================================  =====================  =================  =====================

Each is a :class:`~rnnmem.tasks._lang_base.Language` (exact ``contains``, uniform
``sample`` of an exact length, ``next_symbols``, ``hard_negative``, ``encode``/``decode``);
the precise definitions are in the class docstrings.

Task modes (numpy only, in the style of Delétang et al. 2023,
google-deepmind/neural_networks_chomsky_hierarchy: ``sample_batch(rng, batch, length)``)
--------------------------------------------------------------------------------------------
* :class:`RecognitionTask`: binary classification of members against hard negatives of
  the same length.
* :class:`NextSymbolTask`: at every position predict the *set* of symbols that may come
  next (multi-hot, END ``'$'`` included) — the task of Gers & Schmidhuber (2001) and
  Suzgun et al. (2019) used for Dyck languages by Das & Mali (2024, arXiv 2410.03154).

Length generalisation
---------------------
Train on lengths :data:`DEFAULT_TRAIN_LENGTHS` (1..40, the valid ones per language) and
test on the bins :data:`DEFAULT_TEST_BINS` covering 41..500 (Delétang et al. 2023).
:func:`retained_performance` divides the accuracy of each long bin by the accuracy on
training lengths.

Accuracy definitions (model-agnostic, on logits):

* recognition: a string is correct iff :math:`[\\ell > 0] = y` (sigmoid > 0.5);
* next symbol: a position is correct iff the predicted set
  :math:`\\{v : \\sigma(\\ell_v) > 0.5\\}` equals the valid set exactly; a string is
  correct iff all of its (unmasked) positions are.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import NamedTuple

import numpy as np

from ..errors import (InvalidParameterError, NameRegistry, NonFiniteError, ShapeError,
                      UnknownNameError)
from ._lang_base import (CHOMSKY_CLASSES, END, Language, check_batch, check_length,
                         check_rng)
from ._lang_machines import ModularArithmeticBrackets, StackManipulation, evaluate_mod5
from ._lang_simple import (AnBn, AnBnCn, Copy, Dyck1, Dyck2, MarkedReversal, Parity,
                           UnmarkedReversal)

__all__ = [
    "Language", "LANGUAGES", "get_language", "END", "CHOMSKY_CLASSES",
    "Dyck1", "Dyck2", "AnBn", "AnBnCn", "MarkedReversal", "UnmarkedReversal", "Copy",
    "Parity", "StackManipulation", "ModularArithmeticBrackets", "evaluate_mod5",
    "RecognitionTask", "NextSymbolTask",
    "LengthBin", "DEFAULT_TRAIN_LENGTHS", "DEFAULT_TEST_BINS", "length_bins",
    "train_lengths", "bin_lengths",
    "recognition_correct", "next_symbol_position_correct", "next_symbol_correct",
    "accuracy_by_bin", "retained_performance",
]

LANGUAGES: dict[str, Language] = NameRegistry("language", {
    lang.name: lang for lang in (
        Parity(), Dyck1(), Dyck2(), AnBn(), AnBnCn(), MarkedReversal(), UnmarkedReversal(),
        Copy(), StackManipulation(), ModularArithmeticBrackets())
})


def get_language(name) -> Language:
    """The registered language called ``name`` (a Language is returned as is).

    Raises UnknownNameError, whose message lists the known names.
    """
    if isinstance(name, Language):
        return name
    try:
        return LANGUAGES[name]
    except (KeyError, TypeError):
        raise UnknownNameError("language", name, list(LANGUAGES)) from None


# ---------------------------------------------------------------------- length bins
class LengthBin(NamedTuple):
    """Inclusive range of string lengths ``lo..hi``; ``str()`` gives ``"lo:hi"``."""

    lo: int
    hi: int

    def __str__(self) -> str:
        return f"{self.lo}:{self.hi}"

    def __contains__(self, n) -> bool:  # type: ignore[override]
        return self.lo <= n <= self.hi

    def valid(self, language) -> tuple[int, ...]:
        """Lengths in this bin at which ``language`` has members."""
        return get_language(language).valid_lengths(self.hi, self.lo)


DEFAULT_TRAIN_LENGTHS = range(1, 41)
DEFAULT_TEST_BINS = (LengthBin(41, 60), LengthBin(61, 100), LengthBin(101, 200),
                     LengthBin(201, 300), LengthBin(301, 500))


def _make_bin(lo, hi, spec) -> LengthBin:
    lo, hi = check_length(lo, "bin start"), check_length(hi, "bin end")
    if lo < 1 or hi < lo:
        raise InvalidParameterError(f"bad length bin {spec!r}: need 1 <= lo <= hi")
    return LengthBin(lo, hi)


def length_bins(spec) -> tuple[LengthBin, ...]:
    """Parse length bins.

    ``spec`` is a string ``"41:60,61:100"`` (comma-separated inclusive ranges ``lo:hi``;
    a lone ``"50"`` is ``50:50``), or an iterable of ``(lo, hi)`` pairs / ints / LengthBin.
    Bins are returned sorted; overlapping bins raise InvalidParameterError.
    """
    bins = []
    if isinstance(spec, str):
        parts = [p.strip() for p in spec.split(",")]
        if not spec.strip() or any(not p for p in parts):
            raise InvalidParameterError(f"empty length bin in {spec!r}")
        for part in parts:
            fields = part.split(":")
            if len(fields) not in (1, 2):
                raise InvalidParameterError(f"length bin {part!r} must be 'lo:hi' or 'n'")
            try:
                nums = [int(f) for f in fields]
            except ValueError:
                raise InvalidParameterError(
                    f"length bin {part!r} must hold integers, as in '41:60'") from None
            bins.append(_make_bin(nums[0], nums[-1], part))
    elif isinstance(spec, Iterable):
        for item in spec:
            if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
                bins.append(_make_bin(item, item, item))
            elif isinstance(item, (tuple, list)) and len(item) == 2:
                bins.append(_make_bin(item[0], item[1], item))
            else:
                raise InvalidParameterError(f"length bin {item!r} must be (lo, hi) or an int")
    else:
        raise InvalidParameterError(f"length bins must be a string or a sequence, got {spec!r}")
    if not bins:
        raise InvalidParameterError("no length bins given")
    bins.sort()
    for a, b in zip(bins, bins[1:]):
        if b.lo <= a.hi:
            raise InvalidParameterError(f"length bins {a} and {b} overlap")
    return tuple(bins)


def train_lengths(language, lengths=DEFAULT_TRAIN_LENGTHS) -> tuple[int, ...]:
    """The lengths in ``lengths`` (ints or a bin spec string) at which ``language`` has members."""
    lang = get_language(language)
    if isinstance(lengths, str):
        lengths = [n for b in length_bins(lengths) for n in range(b.lo, b.hi + 1)]
    out = tuple(sorted({check_length(n) for n in lengths if lang.has_length(n)}))
    if not out:
        raise InvalidParameterError(
            f"language {lang.name!r} has no member at any of the lengths given "
            f"({lang.length_rule})")
    return out


def bin_lengths(language, bins=DEFAULT_TEST_BINS, per_bin=None) -> dict[LengthBin, tuple]:
    """Valid lengths of each bin; with ``per_bin``, at most that many, evenly spaced
    (ends included). Bins without any valid length are left out."""
    lang = get_language(language)
    bins = length_bins(bins)
    if per_bin is not None:
        per_bin = check_batch(per_bin)
    out = {}
    for b in bins:
        ls = b.valid(lang)
        if per_bin is not None and len(ls) > per_bin:
            idx = np.unique(np.round(np.linspace(0, len(ls) - 1, per_bin)).astype(int))
            ls = tuple(ls[i] for i in idx)
        if ls:
            out[b] = ls
    return out


# ---------------------------------------------------------------------- task modes
class _LanguageTask:
    def __init__(self, language, lengths):
        self.language = get_language(language)
        ls = train_lengths(self.language, DEFAULT_TRAIN_LENGTHS if lengths is None else lengths)
        # length 0 has a single string, so it cannot have both classes: never drawn
        self.lengths = tuple(n for n in ls if n >= 1)
        if not self.lengths:
            raise InvalidParameterError("task lengths must include a valid length >= 1")

    def _length(self, rng, length):
        if length is None:
            return self.lengths[int(rng.integers(len(self.lengths)))]
        length = self.language.require_length(length)
        if length < 1:
            raise InvalidParameterError("task strings must have length >= 1, got 0")
        return length

    def __repr__(self):
        return f"{type(self).__name__}({self.language.name!r})"


class RecognitionTask(_LanguageTask):
    """Members against hard negatives of the same length (binary classification).

    Parameters
    ----------
    language : str or Language
    lengths : iterable of int or str, optional
        Training lengths (default :data:`DEFAULT_TRAIN_LENGTHS`), filtered to those with
        members; ``sample_batch(rng, batch)`` without a length draws one uniformly.
    neg_ratio : float in [0, 1]
        Expected fraction of negatives: ``floor(r B)`` plus one more with probability
        ``frac(r B)``, at random positions of the batch.

    Negatives are :meth:`Language.hard_negative` edits of fresh members (substitution,
    swap, move), so they have exactly the same length and are close to the language.
    """

    def __init__(self, language, *, lengths=None, neg_ratio: float = 0.5):
        super().__init__(language, lengths)
        try:
            ok = 0.0 <= float(neg_ratio) <= 1.0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise InvalidParameterError(f"neg_ratio must be in [0, 1], got {neg_ratio!r}")
        self.neg_ratio = float(neg_ratio)

    def sample_batch(self, rng, batch, length=None) -> dict[str, np.ndarray]:
        """A batch of one length.

        Returns
        -------
        dict with ``x`` (B, T) int64 symbol ids, ``y`` (B,) int64 labels (1 = member),
        ``mask`` (B, T) bool (all True: no padding), ``lengths`` (B,) int64 (all T).
        """
        rng, batch = check_rng(rng), check_batch(batch)
        length = self._length(rng, length)
        lang = self.language
        x = lang.sample_ids(rng, batch, length)  # (B, T)
        r = self.neg_ratio * batch
        n_neg = int(math.floor(r)) + int(rng.random() < r - math.floor(r))
        neg = rng.permutation(batch)[:n_neg]
        y = np.ones(batch, dtype=np.int64)  # (B,)
        y[neg] = 0
        for b in neg.tolist():
            s = lang.hard_negative(rng, lang.decode(x[b]), same_length=True)
            if len(s) != length:  # pragma: no cover - guaranteed for length >= 1
                raise InvalidParameterError(
                    f"no non-member of length {length} near a member of {lang.name!r}")
            x[b] = lang.encode(s)
        return {"x": x, "y": y, "mask": np.ones((batch, length), dtype=bool),
                "lengths": np.full(batch, length, dtype=np.int64)}


class NextSymbolTask(_LanguageTask):
    """Next-symbol prediction: after reading ``x[:, :t+1]`` predict the valid next set.

    ``y[b, t, v]`` is True iff symbol ``v`` (vocabulary order: alphabet, then END ``'$'``)
    belongs to :meth:`Language.next_symbols` of ``x[b, :t+1]``; at the last position the
    set contains ``'$'`` (the string is a member). Targets are bool (cast to float for a
    BCE loss); the width is ``language.n_targets``.
    """

    def __init__(self, language, *, lengths=None):
        super().__init__(language, lengths)

    def sample_batch(self, rng, batch, length=None) -> dict[str, np.ndarray]:
        """Returns ``x`` (B, T) int64, ``y`` (B, T, A+1) bool, ``mask`` (B, T) bool,
        ``lengths`` (B,) int64."""
        rng, batch = check_rng(rng), check_batch(batch)
        length = self._length(rng, length)
        lang = self.language
        x = lang.sample_ids(rng, batch, length)  # (B, T)
        y = np.stack([lang.next_symbol_table(s)[1:] for s in lang.decode(x)])  # (B, T, V)
        return {"x": x, "y": y, "mask": np.ones((batch, length), dtype=bool),
                "lengths": np.full(batch, length, dtype=np.int64)}


# ---------------------------------------------------------------------- evaluation
def _finite(a, name):
    a = np.asarray(a)
    if a.dtype.kind not in "biuf":
        raise InvalidParameterError(f"{name} must be numeric, got dtype {a.dtype}")
    if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
        raise NonFiniteError(f"{name} contains NaN or infinity")
    return a


def _decide(scores, from_probs):
    return scores > 0.5 if from_probs else scores > 0


def recognition_correct(logits, y, *, from_probs: bool = False) -> np.ndarray:
    """(B,) bool: ``[logit > 0] == y`` (or ``[p > 0.5] == y`` with ``from_probs``)."""
    s, y = _finite(logits, "logits"), np.asarray(y)
    if s.shape != y.shape or s.ndim != 1:
        raise ShapeError(f"logits {s.shape} and labels {y.shape} must both be (B,)")
    return _decide(s, from_probs) == y.astype(bool)


def next_symbol_position_correct(logits, y, *, from_probs: bool = False) -> np.ndarray:
    """(B, T) bool: the predicted set :math:`\\{v : \\sigma(\\ell_v) > 0.5\\}` equals the
    target set ``y`` (B, T, V) exactly."""
    s, y = _finite(logits, "logits"), np.asarray(y)
    if s.shape != y.shape or s.ndim != 3:
        raise ShapeError(f"logits {s.shape} and targets {y.shape} must both be (B, T, V)")
    return np.all(_decide(s, from_probs) == y.astype(bool), axis=-1)


def next_symbol_correct(logits, y, mask=None, *, from_probs: bool = False) -> np.ndarray:
    """(B,) bool: every unmasked position of the string is correct
    (:func:`next_symbol_position_correct`)."""
    pos = next_symbol_position_correct(logits, y, from_probs=from_probs)  # (B, T)
    if mask is None:
        return np.all(pos, axis=1)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != pos.shape:
        raise ShapeError(f"mask {mask.shape} must be (B, T) = {pos.shape}")
    return np.all(pos | ~mask, axis=1)


def accuracy_by_bin(correct, lengths, bins=DEFAULT_TEST_BINS) -> dict[LengthBin, float]:
    """Mean of ``correct`` (N,) over the strings whose ``lengths`` (N,) fall in each bin.

    Bins holding no string are left out of the result.
    """
    c, n = np.asarray(correct, dtype=float), np.asarray(lengths)
    if c.ndim != 1 or c.shape != n.shape:
        raise ShapeError(f"correct {c.shape} and lengths {n.shape} must both be (N,)")
    out = {}
    for b in length_bins(bins):
        sel = (n >= b.lo) & (n <= b.hi)
        if np.any(sel):
            out[b] = float(np.mean(c[sel]))
    return out


def _accuracy(a, name):
    try:
        a = float(a)
    except (TypeError, ValueError):
        raise InvalidParameterError(f"{name} must be a number, got {a!r}") from None
    if not math.isfinite(a):
        raise NonFiniteError(f"{name} is not finite")
    if not 0.0 <= a <= 1.0:
        raise InvalidParameterError(f"{name} must be in [0, 1], got {a}")
    return a


def retained_performance(acc_by_bin, train_acc):
    """Accuracy on long lengths relative to accuracy on training lengths.

    .. math:: \\rho(\\text{bin}) = \\frac{\\mathrm{acc}(\\text{bin})}{\\mathrm{acc}_{\\text{train}}}

    ``acc_by_bin`` is a mapping bin -> accuracy (result: the same keys) or one accuracy
    (result: a float). ``train_acc`` must be in (0, 1].
    """
    t = _accuracy(train_acc, "train_acc")
    if t == 0.0:
        raise InvalidParameterError("train_acc is 0: retained performance is undefined")
    if isinstance(acc_by_bin, Mapping):
        return {k: _accuracy(v, f"accuracy of bin {k}") / t for k, v in acc_by_bin.items()}
    return _accuracy(acc_by_bin, "accuracy") / t
