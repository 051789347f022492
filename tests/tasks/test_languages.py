"""Formal languages: oracles against independent references, samplers, tasks, bins."""

from __future__ import annotations

import ast
import itertools
import math
import re
import warnings
from collections import Counter
from functools import lru_cache

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rnnmem.errors import (AlphabetError, InvalidParameterError, NonFiniteError, ShapeError,
                           UnknownNameError)
from rnnmem.numerics import tolerance
from rnnmem.tasks.languages import (CHOMSKY_CLASSES, DEFAULT_TEST_BINS,
                                    DEFAULT_TRAIN_LENGTHS, END, LANGUAGES, LengthBin,
                                    NextSymbolTask, RecognitionTask, accuracy_by_bin,
                                    bin_lengths, get_language, length_bins,
                                    next_symbol_correct, next_symbol_position_correct,
                                    recognition_correct, retained_performance,
                                    train_lengths)

NAMES = sorted(LANGUAGES)
REQUIRED = {"dyck1", "dyck2", "anbn", "anbncn", "marked_reversal", "unmarked_reversal",
            "copy", "stack_manipulation", "modular_arithmetic_brackets"}


# ---------------------------------------------------------------------- references
# Written from the definitions, sharing no code with rnnmem.tasks.
def _ref_dyck(s, pairs):
    prev = None
    while prev != s:  # delete innermost matched pairs until nothing changes
        prev = s
        for p in pairs:
            s = s.replace(p, "")
    return s == ""


def _ref_stack(s):
    m = re.fullmatch(r"([01]*)([abp]*)#([01]*)", s)
    if not m:
        return False
    stack = list(m[1])
    for op in m[2]:
        if op == "p":
            stack = stack[:-1]
        else:
            stack.append({"a": "0", "b": "1"}[op])
    return m[3] == "".join(stack)[::-1]


class _Reject(Exception):
    pass


def _ast_value(node):
    if isinstance(node, ast.Constant) and type(node.value) is int:
        if node.end_col_offset - node.col_offset != 1 or not 0 <= node.value <= 4:
            raise _Reject
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_ast_value(node.operand)
    if isinstance(node, ast.BinOp):
        a, b = _ast_value(node.left), _ast_value(node.right)
        if isinstance(node.op, ast.Add):
            return a + b
        if isinstance(node.op, ast.Sub):
            return a - b
        if isinstance(node.op, ast.Mult):
            return a * b
    raise _Reject


def _ref_mod(s):
    """Python's own expression grammar (same precedence as the language), restricted."""
    m = re.fullmatch(r"([0-4+\-*()]+)=([0-4])", s)
    if not m:
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(m[1], mode="eval")
        return _ast_value(tree.body) % 5 == int(m[2])
    except (SyntaxError, _Reject):
        return False


REF = {
    "parity": lambda s: s.count("b") % 2 == 0,
    "dyck1": lambda s: _ref_dyck(s, ["()"]),
    "dyck2": lambda s: _ref_dyck(s, ["()", "[]"]),
    "anbn": lambda s: s == "".join(sorted(s)) and s.count("a") == s.count("b"),
    "anbncn": lambda s: s == "".join(sorted(s)) and s.count("a") == s.count("b")
    == s.count("c"),
    "marked_reversal": lambda s: s.count("#") == 1 and s[len(s) // 2] == "#"
    and s == s[::-1],
    "unmarked_reversal": lambda s: len(s) % 2 == 0 and s == s[::-1],
    "copy": lambda s: len(s) % 2 == 0 and s[:len(s) // 2] * 2 == s,
    "stack_manipulation": _ref_stack,
    "modular_arithmetic_brackets": _ref_mod,
}


def _all_strings(alphabet, max_len):
    for n in range(max_len + 1):
        for t in itertools.product(alphabet, repeat=n):
            yield "".join(t)


@lru_cache(maxsize=None)
def _mod_expressions(n):
    """dict expression -> value of all expressions of length n, from the E/T/F grammar."""

    @lru_cache(maxsize=None)
    def f(n):
        out = {}
        if n == 1:
            out.update({str(d): d for d in range(5)})
        if n >= 3:
            out.update({f"({e})": v for e, v in e_(n - 2).items()})
        if n >= 2:
            out.update({f"-{x}": -v for x, v in f(n - 1).items()})
        return out

    @lru_cache(maxsize=None)
    def t(n):
        out = dict(f(n))
        for k in range(1, n - 1):
            for a, va in t(k).items():
                for b, vb in f(n - 1 - k).items():
                    out[f"{a}*{b}"] = va * vb
        return out

    @lru_cache(maxsize=None)
    def e_(n):
        out = dict(t(n))
        for k in range(1, n - 1):
            for a, va in e_(k).items():
                for b, vb in t(n - 1 - k).items():
                    out[f"{a}+{b}"] = va + vb
                    out[f"{a}-{b}"] = va - vb
        return out

    return e_(n)


@lru_cache(maxsize=None)
def _ref_members(name, max_len):
    """All members of length <= max_len, generated from the definitions."""
    if name == "modular_arithmetic_brackets":
        return frozenset(f"{e}={v % 5}" for m in range(1, max_len - 1)
                         for e, v in _mod_expressions(m).items())
    if name == "stack_manipulation":
        out = set()
        for k in range(max_len):
            for init in itertools.product("01", repeat=k):
                for m in range(max_len - k):
                    for ops in itertools.product("abp", repeat=m):
                        stack = list(init)
                        for op in ops:
                            stack = stack[:-1] if op == "p" else stack + [
                                "0" if op == "a" else "1"]
                        w = "".join(init) + "".join(ops) + "#" + "".join(stack[::-1])
                        if len(w) <= max_len:
                            out.add(w)
        return frozenset(out)
    if name in ("anbn", "anbncn"):
        r = 2 if name == "anbn" else 3
        return frozenset("".join(c * k for c in "abc"[:r]) for k in range(max_len // r + 1))
    if name in ("marked_reversal", "unmarked_reversal", "copy"):
        out = set()
        for w in _all_strings("ab", max_len // 2):
            out.add({"marked_reversal": w + "#" + w[::-1], "unmarked_reversal": w + w[::-1],
                     "copy": w + w}[name])
        return frozenset(x for x in out if len(x) <= max_len)
    lang = LANGUAGES[name]
    return frozenset(s for s in _all_strings(lang.alphabet, max_len) if REF[name](s))


# exhaustive lengths for contains(); prefix length k and member length N for next_symbols
# (N >= k + 1 + longest shortest completion of a viable prefix of length k + 1)
EXHAUSTIVE = {"parity": 9, "dyck1": 12, "dyck2": 7, "anbn": 10, "anbncn": 8,
              "marked_reversal": 8, "unmarked_reversal": 10, "copy": 10,
              "stack_manipulation": 5, "modular_arithmetic_brackets": 4}
NEXT_KN = {"parity": (6, 8), "dyck1": (5, 12), "dyck2": (3, 8), "anbn": (5, 12),
           "anbncn": (4, 15), "marked_reversal": (4, 11), "unmarked_reversal": (5, 12),
           "copy": (5, 12), "stack_manipulation": (3, 9),
           "modular_arithmetic_brackets": (2, 9)}


def _some_string(lang, rng, n):
    """A member when one exists (half the time), else a random string over the alphabet."""
    if lang.has_length(n) and rng.random() < 0.5:
        return lang.sample(rng, n)
    return "".join(lang.alphabet[i] for i in rng.integers(len(lang.alphabet), size=n))


# ---------------------------------------------------------------------- registry
def test_registry_and_attributes():
    assert REQUIRED <= set(LANGUAGES)
    for name, lang in LANGUAGES.items():
        assert lang.name == name and get_language(name) is lang
        assert lang.chomsky in CHOMSKY_CLASSES and lang.description
        assert all(isinstance(c, str) and len(c) == 1 for c in lang.alphabet)
        assert END not in lang.alphabet
        v = lang.vocab
        assert [v[c] for c in lang.alphabet] == list(range(len(lang.alphabet)))
        assert v[END] == lang.end_id == len(lang.alphabet) == lang.n_targets - 1
        assert lang.pad_id == lang.vocab_size - 1 == len(lang.alphabet) + 1
        assert lang.contains("") == lang.contains_empty == REF[name]("")
    assert {LANGUAGES[n].chomsky for n in ("anbncn", "copy")} == {"context-sensitive"}
    assert LANGUAGES["parity"].chomsky == "regular"


def test_unknown_language():
    with pytest.raises(UnknownNameError, match="dyck1") as e:
        get_language("dyck3")
    assert isinstance(e.value, LookupError) and "dyck3" in str(e.value)
    with pytest.raises(UnknownNameError):
        get_language(["dyck1"])


# ---------------------------------------------------------------------- membership
@pytest.mark.parametrize("name", NAMES)
def test_contains_matches_reference_exhaustively(name):
    lang = LANGUAGES[name]
    strings = list(_all_strings(lang.alphabet, EXHAUSTIVE[name]))
    got = [lang.contains(s) for s in strings]
    assert got == [REF[name](s) for s in strings]
    assert any(got) and not all(got)


@pytest.mark.parametrize("name", ["stack_manipulation", "modular_arithmetic_brackets"])
def test_contains_on_members_and_their_neighbours(name):
    lang, rng = LANGUAGES[name], np.random.default_rng(7)
    members = sorted(_ref_members(name, 9))
    assert all(lang.contains(m) for m in members)
    for i in rng.choice(len(members), size=150, replace=False):
        m = members[i]
        for j, c in itertools.product(range(len(m)), lang.alphabet):
            s = m[:j] + c + m[j + 1:]
            assert lang.contains(s) == REF[name](s), s
        for j in range(len(m)):
            s = m[:j] + m[j + 1:]
            assert lang.contains(s) == REF[name](s), s


def test_mod_arith_examples():
    lang = LANGUAGES["modular_arithmetic_brackets"]
    for s in ("2=2", "-(3+4)*2=1", "1--2=3", "2*-3=4", "((4))=4", "1+2*3=2", "(1+2)*3=4"):
        assert lang.contains(s) and _ref_mod(s), s
    for s in ("2=3", "(2=2", "2+=2", "12=2", "=", "2==2", "2=22", "+2=2", "2*(3)4=1", "2=2=2"):
        assert not lang.contains(s) and not _ref_mod(s), s


def test_stack_example():
    lang = LANGUAGES["stack_manipulation"]
    assert lang.contains("011pa#010") and lang.contains("#") and lang.contains("ppp#")
    assert not lang.contains("011pa#010#") and not lang.contains("01a1#101")


# ---------------------------------------------------------------------- sampling
@given(name=st.sampled_from(NAMES), n=st.integers(0, 60), seed=st.integers(0, 2**32 - 1))
def test_samples_have_length_and_are_members(name, n, seed):
    lang = LANGUAGES[name]
    rng = np.random.default_rng(seed)
    if not lang.has_length(n):
        with pytest.raises(InvalidParameterError, match=f"length {n}"):
            lang.sample(rng, n)
        return
    for s in lang.sample_many(rng, 3, n):
        assert len(s) == n and lang.contains(s) and REF[name](s)


@pytest.mark.parametrize("name", NAMES)
def test_long_samples(name):
    lang, rng = LANGUAGES[name], np.random.default_rng(3)
    n = 500 if lang.has_length(500) else 501
    x = lang.sample_ids(rng, 2, n)
    assert x.shape == (2, n) and x.dtype == np.int64
    for s in lang.decode(x):
        assert len(s) == n and lang.contains(s)
        if name != "modular_arithmetic_brackets":  # Python's parser caps nesting at 200
            assert REF[name](s)


# length with several members for the uniformity check
UNIFORM_N = {"parity": 5, "dyck1": 8, "dyck2": 6, "anbn": 6, "anbncn": 6,
             "marked_reversal": 7, "unmarked_reversal": 8, "copy": 8,
             "stack_manipulation": 4, "modular_arithmetic_brackets": 5}


@pytest.mark.parametrize("name", NAMES)
def test_sampling_is_uniform(name):
    lang, n, draws = LANGUAGES[name], UNIFORM_N[name], 6000
    members = {m for m in _ref_members(name, n) if len(m) == n}
    counts = Counter(lang.sample_many(np.random.default_rng(11), draws, n))
    assert set(counts) == members  # only members, and every member is drawn
    p = 1.0 / len(members)
    sd = math.sqrt(draws * p * (1 - p))
    # five standard deviations of a binomial count: fails for a biased sampler (e.g. the
    # coin-flip Dyck walk gives "()()()()" probability 1/16 instead of 1/14)
    assert max(abs(c - draws * p) for c in counts.values()) <= 5 * sd + 1e-9


def test_biased_walk_would_fail_the_uniformity_bound():
    """The uniformity check above can fail: the naive legal-coin-flip Dyck-1 walk."""
    rng, n, draws = np.random.default_rng(0), 8, 6000
    counts = Counter()
    for _ in range(draws):
        s, h = "", 0
        for t in range(n):
            r = n - t
            up = h == 0 or (h < r and rng.random() < 0.5)
            s, h = s + ("(" if up else ")"), h + (1 if up else -1)
        counts[s] += 1
    p = 1 / 14
    assert max(abs(c - draws * p) for c in counts.values()) > 5 * math.sqrt(draws * p * (1 - p))


@pytest.mark.parametrize("name", ["stack_manipulation", "modular_arithmetic_brackets"])
def test_log_count_matches_enumeration(name):
    lang = LANGUAGES[name]
    members = _ref_members(name, 9)
    for n in range(0, 10):
        exact = sum(len(m) == n for m in members)
        got = lang.log_count(n)
        if exact == 0:
            assert got == -math.inf
        else:
            assert tolerance("float64", n_ops=4 * n).allclose(got, math.log(exact))


def test_dyck_up_probability_matches_ballot_numbers():
    from rnnmem.tasks._lang_simple import dyck_up_probability

    @lru_cache(maxsize=None)
    def paths(r, h):  # completions of length r from height h (brute recursion)
        if h < 0 or h > r:
            return 0
        if r == 0:
            return 1
        return paths(r - 1, h + 1) + paths(r - 1, h - 1)

    for r in range(1, 40):
        hs = np.arange(r % 2, r + 1, 2)
        exact = [paths(r - 1, h + 1) / paths(r, h) for h in hs]
        assert tolerance("float64", n_ops=4).allclose(dyck_up_probability(hs, r), exact)


@pytest.mark.parametrize("name", NAMES)
def test_sampling_is_reproducible(name):
    lang = LANGUAGES[name]
    n = 41 if lang.has_length(41) else 42
    a = lang.sample_ids(np.random.default_rng(5), 8, n)
    b = lang.sample_ids(np.random.default_rng(5), 8, n)
    np.testing.assert_array_equal(a, b)
    if name not in ("anbn", "anbncn"):  # one member per length
        assert not np.array_equal(a, lang.sample_ids(np.random.default_rng(6), 8, n))


# ---------------------------------------------------------------------- next symbols
@pytest.mark.parametrize("name", NAMES)
def test_next_symbols_match_enumeration(name):
    lang = LANGUAGES[name]
    k, N = NEXT_KN[name]
    expected = {}
    for m in _ref_members(name, N):
        for t in range(len(m)):
            expected.setdefault(m[:t], set()).add(m[t])
        expected.setdefault(m, set()).add(END)
    for p in _all_strings(lang.alphabet, k):
        assert lang.next_symbols(p) == frozenset(expected.get(p, ())), p
        assert (END in lang.next_symbols(p)) == lang.contains(p)


@given(name=st.sampled_from(NAMES), n=st.integers(0, 40), seed=st.integers(0, 2**32 - 1))
def test_next_symbol_table_matches_reference(name, n, seed):
    lang, rng = LANGUAGES[name], np.random.default_rng(seed)
    s = _some_string(lang, rng, n)
    if lang.has_length(n) and n and rng.random() < 0.5:
        s = lang.hard_negative(rng, lang.sample(rng, n))
    table = lang.next_symbol_table(s)
    assert table.shape == (n + 1, lang.n_targets) and table.dtype == bool
    order = lang.alphabet + (END,)
    for t in range(n + 1):
        assert {order[i] for i in np.flatnonzero(table[t])} == lang.next_symbols(s[:t])


@pytest.mark.parametrize("name", NAMES)
def test_next_symbols_along_long_members(name):
    lang, rng = LANGUAGES[name], np.random.default_rng(1)
    n = 150 if lang.has_length(150) else 151
    s = lang.sample(rng, n)
    table = lang.next_symbol_table(s)
    v = lang.vocab
    assert all(table[t, v[s[t]]] for t in range(n))  # the actual next symbol is valid
    assert table[n, lang.end_id]
    for t in range(0, n + 1, 10):  # '$' exactly at member prefixes; reference agrees
        assert table[t, lang.end_id] == lang.contains(s[:t])
        order = lang.alphabet + (END,)
        assert {order[i] for i in np.flatnonzero(table[t])} == lang.next_symbols(s[:t])


# ---------------------------------------------------------------------- negatives
@given(name=st.sampled_from(NAMES), n=st.integers(1, 40), seed=st.integers(0, 2**32 - 1))
def test_hard_negatives_are_same_length_non_members(name, n, seed):
    lang, rng = LANGUAGES[name], np.random.default_rng(seed)
    if not lang.has_length(n):
        return
    s = lang.sample(rng, n)
    neg = lang.hard_negative(rng, s)
    assert len(neg) == n and neg != s and not lang.contains(neg) and not REF[name](neg)
    free = lang.hard_negative(rng, s, same_length=False)
    assert not lang.contains(free) and abs(len(free) - n) <= 64


@pytest.mark.parametrize("name", NAMES)
def test_hard_negative_of_empty_string(name):
    lang = LANGUAGES[name]
    neg = lang.hard_negative(np.random.default_rng(0), "")
    assert not lang.contains(neg) and len(neg) == 1  # one symbol inserted


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize("name", NAMES)
def test_bad_strings_raise_alphabet_error(name):
    lang = LANGUAGES[name]
    ok = lang.alphabet[0]
    for method in (lang.contains, lang.next_symbols, lang.next_symbol_table, lang.encode):
        with pytest.raises(AlphabetError, match=r"'\?'.*position 1"):
            method(ok + "?" + ok)
        with pytest.raises(AlphabetError, match=r"'\$'"):
            method(END)
        for bad in (3, None, b"ab", 2.5):
            with pytest.raises(AlphabetError, match="str"):
                method(bad)
    with pytest.raises(AlphabetError):
        lang.hard_negative(np.random.default_rng(0), ok + "?")
    with pytest.raises(AlphabetError):
        lang.encode([ok, ok + "Z"])
    with pytest.raises(AlphabetError):
        lang.decode(np.array([0, lang.pad_id + 1]))
    with pytest.raises(AlphabetError):
        lang.decode(np.array([-1]))
    with pytest.raises(AlphabetError):
        lang.decode(np.array([0.0]))


@pytest.mark.parametrize("name,n", [("dyck1", 7), ("dyck2", 3), ("anbn", 5), ("anbncn", 4),
                                    ("marked_reversal", 6), ("unmarked_reversal", 1),
                                    ("copy", 9), ("stack_manipulation", 0),
                                    ("modular_arithmetic_brackets", 2)])
def test_impossible_lengths_raise(name, n):
    lang = LANGUAGES[name]
    assert not lang.has_length(n) and n not in lang.valid_lengths(10, 0)
    with pytest.raises(InvalidParameterError, match=f"no member of length {n}"):
        lang.sample(np.random.default_rng(0), n)
    for task in (RecognitionTask(lang), NextSymbolTask(lang)):
        with pytest.raises(InvalidParameterError):
            task.sample_batch(np.random.default_rng(0), 2, n)


def test_bad_lengths_batches_and_rngs():
    lang, rng = LANGUAGES["dyck1"], np.random.default_rng(0)
    for bad in (-2, 2.0, True, "4", None):
        with pytest.raises(InvalidParameterError):
            lang.sample(rng, bad)
        with pytest.raises(InvalidParameterError):
            lang.has_length(bad)
    with pytest.raises(InvalidParameterError, match="Generator"):
        lang.sample(0, 4)
    with pytest.raises(InvalidParameterError, match="Generator"):
        lang.hard_negative(np.random.RandomState(0), "()")
    with pytest.raises(InvalidParameterError, match="batch"):
        lang.sample_ids(rng, 0, 4)
    with pytest.raises(InvalidParameterError, match="length >= 1"):
        RecognitionTask(lang).sample_batch(rng, 2, 0)
    for ratio in (-0.1, 1.5, "half", float("nan")):
        with pytest.raises(InvalidParameterError, match="neg_ratio"):
            RecognitionTask(lang, neg_ratio=ratio)
    with pytest.raises(InvalidParameterError, match="no member"):
        RecognitionTask("anbncn", lengths=[1, 2, 4])
    with pytest.raises(UnknownNameError):
        NextSymbolTask("nope")


# ---------------------------------------------------------------------- encoding
@given(name=st.sampled_from(NAMES), data=st.data())
def test_encode_decode_roundtrip(name, data):
    lang = LANGUAGES[name]
    strings = data.draw(st.lists(st.text(alphabet=lang.alphabet, max_size=12), max_size=5))
    ids = lang.encode(strings)
    assert ids.shape == (len(strings), max(map(len, strings), default=0))
    assert lang.decode(ids) == strings
    for s, row in zip(strings, ids):
        assert list(row[:len(s)]) == [lang.vocab[c] for c in s]
        assert np.all(row[len(s):] == lang.pad_id)
        assert lang.decode(np.append(lang.encode(s), [lang.end_id, 0])) == s  # END stops


# ---------------------------------------------------------------------- tasks
@pytest.mark.parametrize("name", NAMES)
def test_recognition_batch(name):
    lang, rng = LANGUAGES[name], np.random.default_rng(2)
    task = RecognitionTask(lang, neg_ratio=0.5)
    n = 45 if lang.has_length(45) else 44
    batch = task.sample_batch(rng, 16, n)
    assert batch["x"].shape == (16, n) and batch["x"].dtype == np.int64
    assert batch["y"].shape == (16,) and batch["y"].sum() == 8
    assert batch["mask"].all() and np.all(batch["lengths"] == n)
    for s, y in zip(lang.decode(batch["x"]), batch["y"]):
        assert len(s) == n and lang.contains(s) == bool(y)
    b2 = task.sample_batch(np.random.default_rng(2), 16, n)
    assert all(np.array_equal(batch[k], b2[k]) for k in batch)
    drawn = task.sample_batch(rng, 3)  # length drawn from the training lengths
    assert drawn["x"].shape[1] in task.lengths and max(task.lengths) <= 40


def test_recognition_neg_ratio_expectation():
    task, rng = RecognitionTask("dyck2", neg_ratio=0.25), np.random.default_rng(4)
    labels = np.concatenate([task.sample_batch(rng, 2, 4)["y"] for _ in range(400)])
    p, n = 0.25, labels.size  # negatives per batch of 2: 0 or 1, mean 0.5
    assert abs((1 - labels).mean() - p) <= 5 * math.sqrt(p * (1 - p) / n)
    assert RecognitionTask("dyck2", neg_ratio=0.0).sample_batch(rng, 5, 4)["y"].all()
    assert not RecognitionTask("dyck2", neg_ratio=1.0).sample_batch(rng, 5, 4)["y"].any()


@pytest.mark.parametrize("name", NAMES)
def test_next_symbol_batch(name):
    lang, rng = LANGUAGES[name], np.random.default_rng(8)
    task = NextSymbolTask(lang)
    n = 43 if lang.has_length(43) else 42
    batch = task.sample_batch(rng, 4, n)
    x, y = batch["x"], batch["y"]
    assert x.shape == (4, n) and y.shape == (4, n, lang.n_targets) and y.dtype == bool
    assert batch["mask"].shape == (4, n) and batch["mask"].all()
    for b, s in enumerate(lang.decode(x)):
        assert lang.contains(s)
        np.testing.assert_array_equal(y[b], lang.next_symbol_table(s)[1:])
        assert all(y[b, t, x[b, t + 1]] for t in range(n - 1))
    assert y[:, -1, lang.end_id].all()
    assert np.array_equal(task.sample_batch(np.random.default_rng(8), 4, n)["y"], y)


# ---------------------------------------------------------------------- evaluation
def test_next_symbol_accuracy():
    lang, rng = LANGUAGES["dyck2"], np.random.default_rng(0)
    batch = NextSymbolTask(lang).sample_batch(rng, 5, 10)
    y, mask = batch["y"], batch["mask"]
    logits = np.where(y, 2.0, -2.0)
    assert next_symbol_correct(logits, y, mask).all()
    assert next_symbol_correct(np.where(y, 0.9, 0.1), y, mask, from_probs=True).all()
    logits[2, 4, 0] = -logits[2, 4, 0]  # one wrong symbol at one position
    pos = next_symbol_position_correct(logits, y)
    assert pos.sum() == pos.size - 1 and not pos[2, 4]
    assert next_symbol_correct(logits, y, mask).tolist() == [True, True, False, True, True]
    mask[2, 4] = False
    assert next_symbol_correct(logits, y, mask).all()
    with pytest.raises(ShapeError):
        next_symbol_correct(logits[:, :-1], y)
    with pytest.raises(ShapeError):
        next_symbol_correct(logits, y, mask[:, :-1])
    logits[0, 0, 0] = np.nan
    with pytest.raises(NonFiniteError):
        next_symbol_correct(logits, y)


def test_recognition_accuracy():
    y = np.array([1, 0, 1, 0])
    assert recognition_correct(np.array([3.0, -1.0, -0.5, 0.2]), y).tolist() == [
        True, True, False, False]
    assert recognition_correct(np.array([0.7, 0.2, 0.4, 0.6]), y, from_probs=True).tolist() == [
        True, True, False, False]
    with pytest.raises(ShapeError):
        recognition_correct(np.zeros(3), y)
    with pytest.raises(NonFiniteError):
        recognition_correct(np.array([np.inf, 0, 0, 0]), y)


@given(lengths=st.lists(st.integers(1, 520), min_size=1, max_size=50), seed=st.integers(0, 99))
def test_accuracy_by_bin_and_retained(lengths, seed):
    correct = np.random.default_rng(seed).random(len(lengths)) < 0.7
    lengths = np.array(lengths)
    acc = accuracy_by_bin(correct, lengths)
    for b in DEFAULT_TEST_BINS:
        sel = [c for c, n in zip(correct, lengths) if b.lo <= n <= b.hi]
        assert (b in acc) == bool(sel)
        if sel:
            assert acc[b] == pytest.approx(sum(sel) / len(sel), abs=tolerance(
                "float64", n_ops=len(sel)).rtol)
    ret = retained_performance(acc, 0.8)
    assert set(ret) == set(acc)
    for b in acc:
        assert tolerance("float64", n_ops=2).allclose(ret[b] * 0.8, acc[b])


def test_retained_performance_bad_input():
    assert retained_performance(0.45, 0.9) == pytest.approx(0.5)
    with pytest.raises(InvalidParameterError, match="train_acc"):
        retained_performance({LengthBin(41, 60): 0.5}, 0.0)
    with pytest.raises(InvalidParameterError):
        retained_performance(0.5, 1.5)
    with pytest.raises(NonFiniteError):
        retained_performance(float("nan"), 0.5)
    with pytest.raises(InvalidParameterError):
        retained_performance({LengthBin(41, 60): "x"}, 0.5)
    with pytest.raises(ShapeError):
        accuracy_by_bin(np.ones(3, bool), np.ones(4, int))


# ---------------------------------------------------------------------- length bins
def test_default_lengths():
    assert list(DEFAULT_TRAIN_LENGTHS) == list(range(1, 41))
    covered = [n for b in DEFAULT_TEST_BINS for n in range(b.lo, b.hi + 1)]
    assert covered == list(range(41, 501))  # contiguous, disjoint, 41..500
    assert train_lengths("dyck1") == tuple(range(2, 41, 2))
    assert train_lengths("anbncn") == tuple(range(3, 40, 3))
    assert train_lengths("modular_arithmetic_brackets") == tuple(range(3, 41))
    assert train_lengths("dyck1", "1:5,10") == (2, 4, 10)


def test_length_bins_parsing():
    assert length_bins("41:500") == (LengthBin(41, 500),)
    assert length_bins(" 61:100, 41:60 ") == (LengthBin(41, 60), LengthBin(61, 100))
    assert length_bins("50") == (LengthBin(50, 50),)
    assert length_bins([(1, 2), 5]) == (LengthBin(1, 2), LengthBin(5, 5))
    assert length_bins(",".join(map(str, DEFAULT_TEST_BINS))) == DEFAULT_TEST_BINS
    for bad in ("41-60", "60:41", "a:b", "", "41:60,", "41:60,50:70", "0:5", "1:2:3", 7,
                [(1, 2, 3)], [], ["1:2"]):
        with pytest.raises(InvalidParameterError):
            length_bins(bad)


def test_bin_lengths():
    got = bin_lengths("dyck1", "41:60,61:61,101:200", per_bin=5)
    assert list(got) == [LengthBin(41, 60), LengthBin(101, 200)]  # 61:61 has no even length
    assert got[LengthBin(41, 60)][0] == 42 and got[LengthBin(41, 60)][-1] == 60
    assert all(len(v) <= 5 and all(n % 2 == 0 for n in v) for v in got.values())
    full = bin_lengths("anbncn", DEFAULT_TEST_BINS)
    assert full[LengthBin(301, 500)] == tuple(range(303, 499, 3))
