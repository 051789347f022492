"""DuSell-Chiang grammars: normalisation of p(w|n), the sampler's law, exact lower bounds."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from rnnmem.errors import AlphabetError, TaskLengthError, UnknownNameError
from rnnmem.numerics import tolerance
from rnnmem.tasks.dusell import CFL_TASKS, PCFG, Rule, continue_prob, get_cfl_task

FAST = ["marked_reversal", "unmarked_reversal", "padded_reversal", "dyck"]


@pytest.mark.parametrize("name,n", [("marked_reversal", 7), ("unmarked_reversal", 8),
                                    ("padded_reversal", 6), ("dyck", 6), ("dyck_peer", 6),
                                    ("padded_reversal_peer", 6)])
def test_conditional_law_sums_to_one(name, n):
    t = CFL_TASKS[name]
    W = np.array(list(itertools.product(range(t.n_symbols), repeat=n)))
    p = np.exp(t.log_prob_given_length(W))
    assert tolerance("float64", n_ops=W.size).allclose(p.sum(), 1.0)


def test_hardest_cfl_law_sums_to_one_over_its_support():
    # every member ends with ";" and holds "$" and "," before it: enumerate those only
    t, n = CFL_TASKS["hardest_cfl"], 6
    W = np.array([w + (5,) for w in itertools.product(range(7), repeat=n - 1)
                  if 6 in w and 4 in w])
    p = np.exp(t.log_prob_given_length(W))
    assert tolerance("float64", n_ops=W.size).allclose(p.sum(), 1.0)
    assert t.valid_lengths(1, 8) == (6, 7, 8)


@pytest.mark.parametrize("name,n", [("dyck", 6), ("padded_reversal", 5)])
def test_sampler_follows_the_conditional_law(name, n):
    t = CFL_TASKS[name]
    rng = np.random.default_rng(0)
    N = 3000
    seen = {}
    for _ in range(N):
        w = tuple(t.sample(rng, n))
        seen[w] = seen.get(w, 0) + 1
    W = np.array(sorted(seen))
    p = np.exp(t.log_prob_given_length(W))
    f = np.array([seen[tuple(w)] for w in W]) / N
    assert np.all(np.abs(f - p) < 4.5 * np.sqrt(p * (1 - p) / N) + 1e-3)
    assert p.sum() > 0.99  # nothing of weight was missed


@pytest.mark.parametrize("name", ["marked_reversal", "dyck"])
def test_derivation_probability_equals_chart_for_unambiguous(name):
    t = CFL_TASKS[name]
    b = t.sample_batch(np.random.default_rng(1), 6, t.valid_lengths(30, 31)[0])
    W = b["x"][:, 1:]
    tol = tolerance("float64", n_ops=W.shape[1] ** 2)
    assert tol.allclose(-t.log_prob_given_length(W), b["neg_log_p"])


def test_reversal_lower_bound_is_closed_form():
    # marked: p(w | n) = 2^-m with n = 2m + 1 (every u equally likely)
    t = CFL_TASKS["marked_reversal"]
    b = t.sample_batch(np.random.default_rng(2), 4, 41)
    assert tolerance("float64", n_ops=41).allclose(b["neg_log_p"], 20 * math.log(2))
    assert (b["x"][:, 0] == t.bos).all() and (b["y"][:, -1] == t.eos).all()
    w = b["x"][0, 1:]
    assert list(w[:20]) == list(w[21:][::-1]) and w[20] == 2


def test_padded_reversal_partition_function_closed_form():
    # Z(n) = sum_m c^m (1-c) g^(n-2m) (1-g)   (content m pairs, padding n - 2m)
    g = CFL_TASKS["padded_reversal"].grammar
    c, q = continue_prob(60), continue_prob(30)
    for n in (0, 1, 7, 20):
        z = sum(c ** m * (1 - c) * q ** (n - 2 * m) * (1 - q) for m in range(n // 2 + 1))
        assert tolerance("float64", n_ops=(n + 1) ** 2, scale=1.0).allclose(g.log_z(n),
                                                                             math.log(z))


def test_dyck_strings_are_balanced_and_deep():
    t = CFL_TASKS["dyck"]
    rng = np.random.default_rng(0)
    depths = []
    for _ in range(100):
        w = np.array(t.sample(rng, 80))
        d = np.cumsum(np.where(w % 2 == 0, 1, -1))
        assert d[-1] == 0 and d.min() >= 0
        stack = []
        for s in w:  # matching bracket types
            if s % 2 == 0:
                stack.append(s)
            else:
                assert stack.pop() == s - 1
        depths.append(d.max())
    assert np.mean(depths) > 15  # length-conditioned nesting, far above uniform's ~10


def test_small_grammar_inside_by_hand():
    # S -> a S | eps (p = 0.3, 0.7): I_S(n) = 0.3^n 0.7
    g = PCFG("S", [Rule("S", (0, "S"), 3.0), Rule("S", (), 7.0)], unambiguous=True)
    for n in range(6):
        want = n * math.log(0.3) + math.log(0.7)
        assert tolerance("float64", n_ops=4 * (n + 1), scale=1.0).allclose(g.log_z(n), want)


def test_bad_input():
    with pytest.raises(TaskLengthError, match="length 40"):
        CFL_TASKS["marked_reversal"].sample(np.random.default_rng(0), 40)
    with pytest.raises(UnknownNameError):
        get_cfl_task("dyck3")
    with pytest.raises(AlphabetError):
        CFL_TASKS["dyck"].log_prob_given_length([[0, 5]])


def test_ambiguous_grammar_chart_covers_the_sampled_derivation():
    # p_G(w) sums every derivation, so it is at least the sampled one's probability
    t = CFL_TASKS["hardest_cfl"]
    rng = np.random.default_rng(4)
    assert t.valid_lengths(1, 30) == tuple(range(6, 31))
    for n in (6, 11, 17):
        ws, lps = zip(*(t.grammar.sample(rng, n) for _ in range(3)))
        chart = t.grammar.string_log_prob(np.array(ws))
        assert np.all(chart >= np.array(lps) - tolerance("float64", n_ops=n ** 2).rtol * n)
        assert np.all(np.isfinite(chart))


def test_same_length_cycle_is_refused():
    from rnnmem.errors import InvalidParameterError

    with pytest.raises(InvalidParameterError, match="cycle"):
        PCFG("S", [Rule("S", ("A",)), Rule("A", ("S",)), Rule("A", (0,))], unambiguous=True)


def test_peer_variants_match_what_the_peer_samples():
    # running bdusell's LengthSampler: at length 4 only two top-level pairs, each 1/4
    t = CFL_TASKS["dyck_peer"]
    W = np.array(list(itertools.product(range(4), repeat=4)))
    p = np.exp(t.log_prob_given_length(W))
    tol = tolerance("float64", n_ops=W.size)
    top = {tuple(w) for w, q in zip(W, p) if q > 0}
    assert top == {(0, 1, 0, 1), (0, 1, 2, 3), (2, 3, 0, 1), (2, 3, 2, 3)}
    assert tol.allclose(p[p > 0], 0.25)
    # padded: no all-padding derivation, so a^n (also content a, padding a^(n-2)) loses
    # that derivation's weight but keeps a finite probability
    w = [[0, 0, 0, 0, 0]]
    peer = CFL_TASKS["padded_reversal_peer"].log_prob_given_length(w)
    full = CFL_TASKS["padded_reversal"].log_prob_given_length(w)
    assert np.isfinite(peer).all() and not tol.allclose(peer, full)
