"""DeepMind's transduction tasks: ground truth, encodings, sampling laws, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from rnnmem.errors import AlphabetError, TaskLengthError, UnknownNameError
from rnnmem.tasks import TRANSDUCTIONS, get_transduction
from rnnmem.tasks.transductions import (bracket_expression, evaluate_brackets, from_binary,
                                        to_binary)

NAMES = list(TRANSDUCTIONS)

# DeepMind's sizes (``input_size``/``output_size`` properties of their task classes)
SIZES = {"even_pairs": (2, 2), "modular_arithmetic": (9, 5), "parity_check": (2, 2),
         "cycle_navigation": (3, 5), "stack_manipulation": (5, 3), "reverse_string": (2, 2),
         "modular_arithmetic_brackets": (11, 5), "solve_equation": (11, 5),
         "duplicate_string": (2, 2), "missing_duplicate_string": (4, 2),
         "odds_first": (2, 2), "binary_addition": (3, 3), "binary_multiplication": (3, 3),
         "compute_sqrt": (2, 2), "bucket_sort": (5, 5)}


def test_registry_has_deepmind_tasks_and_sizes():
    assert set(TRANSDUCTIONS) == set(SIZES)
    for name, (i, o) in SIZES.items():
        t = TRANSDUCTIONS[name]
        assert (t.input_size, t.output_size) == (i, o)
        assert t.vocab_size == i + 1 and t.blank_id == i
    levels = [TRANSDUCTIONS[n].level for n in NAMES]
    assert levels == ["regular"] * 4 + ["dcf"] * 4 + ["cs"] * 7


@pytest.mark.parametrize("name", NAMES)
def test_solve_is_ground_truth_on_samples(name):
    t = TRANSDUCTIONS[name]
    rng = np.random.default_rng(1)
    for n in t.valid_lengths(1, 45):
        for _ in range(6):
            x, y = t.sample(rng, n)
            assert len(x) == n and len(y) == t.output_length(n)
            assert all(0 <= v < t.input_size for v in x)
            assert all(0 <= v < t.output_size for v in y)
            assert t.solve(x) == y, (name, x)


@pytest.mark.parametrize("name", NAMES)
def test_sample_batch_shapes_and_mask(name):
    t = TRANSDUCTIONS[name]
    n = t.valid_lengths(7, 9)[0]
    b = t.sample_batch(np.random.default_rng(0), 5, n)
    m = t.output_length(n)
    assert b["x"].shape == (5, n) and b["y"].shape == (5, m) and b["mask"].shape == (5, m)
    for row_y, row_m in zip(b["y"], b["mask"]):
        assert row_m.tolist() == t.mask(row_y)


def test_examples_from_deepmind_docstrings_and_code():
    T = TRANSDUCTIONS
    assert T["even_pairs"].solve([0, 0, 1, 1, 1, 0]) == [0]
    assert T["even_pairs"].solve([0, 1, 0, 1, 0, 0, 1]) == [1]
    assert T["parity_check"].solve([1, 0, 1, 0, 1, 0, 0]) == [1]
    # 1 -1 0 -1 -1 -> -2 = class 3, with tokens action + 1
    assert T["cycle_navigation"].solve([2, 0, 1, 0, 0]) == [3]
    # 1 + 2 * 3 = 2 ; 1 - 1 - 1 = 4 ; 0 * 1 + 4 * 3 - 2 = 0   (+5 -6 *7)
    assert T["modular_arithmetic"].solve([1, 5, 2, 7, 3]) == [2]
    assert T["modular_arithmetic"].solve([1, 6, 1, 6, 1]) == [4]
    assert T["modular_arithmetic"].solve([0, 7, 1, 5, 4, 7, 3, 6, 2]) == [0]
    # 0 1 1 0 PUSH1 POP POP -> 1 1 0 2 0 0 0 0
    assert T["stack_manipulation"].solve([0, 1, 1, 0, 4, 2, 2]) == [1, 1, 0, 2, 0, 0, 0, 0]
    assert T["stack_manipulation"].solve([1, 1, 0, 2, 2, 2]) == [2, 0, 0, 0, 0, 0, 0]
    # 001 + 01101 = 010112000 (4 + 22 = 26)
    assert T["binary_addition"].solve([0, 0, 1, 2, 0, 1, 1, 0, 1]) == [0, 1, 0, 1, 1, 2, 0, 0,
                                                                       0, 0]
    # 001 * 01101 = 000110120 (4 * 22 = 88)
    assert T["binary_multiplication"].solve([0, 0, 1, 2, 0, 1, 1, 0, 1]) == [
        0, 0, 0, 1, 1, 0, 1, 2, 0]
    assert T["compute_sqrt"].solve([1, 0, 0, 1, 0, 1]) == [1, 1, 0]  # 37 -> 6
    assert T["compute_sqrt"].solve([1, 1, 1]) == [1, 0]  # 7 -> 2
    assert T["bucket_sort"].solve([1, 0, 2, 0, 4, 1, 1, 2]) == [0, 0, 1, 1, 1, 2, 2, 4]
    assert T["missing_duplicate_string"].solve([0, 1, 1, 0, 0, 2, 1, 0]) == [1]
    assert T["missing_duplicate_string"].solve([1, 0, 1, 1, 2, 1, 3]) == [0]
    # DeepMind's code, not its docstring: 0-based odd positions first
    assert T["odds_first"].solve([0, 0, 1, 1, 0, 1, 0, 1]) == [0, 1, 1, 1, 0, 1, 0, 0]
    assert T["reverse_string"].solve([0, 1, 1, 0, 1, 0]) == [0, 1, 0, 1, 1, 0]
    assert T["duplicate_string"].solve([1, 0, 1]) == [1, 0, 1, 1, 0, 1]
    # ((1+2)*(-3)) = -9 = 1 mod 5: ( 8, ) 9, + 5, - 6, * 7
    assert T["modular_arithmetic_brackets"].solve(
        [8, 8, 1, 5, 2, 9, 7, 8, 6, 3, 9, 9]) == [1]
    # (x+3)=1 -> x = 3: ( 7, ) 8, x 9, = 10
    assert T["solve_equation"].solve([7, 9, 5, 3, 8, 10, 1]) == [3]


def test_masks_stop_after_termination():
    t = TRANSDUCTIONS["stack_manipulation"]
    assert t.mask([1, 0, 2, 0, 0]) == [True, True, True, False, False]
    assert TRANSDUCTIONS["reverse_string"].mask([0, 1, 1]) == [True] * 3
    y = np.array([[2, 0, 0], [0, 1, 2], [1, 2, 0]])
    assert t.mask_array(y).tolist() == [t.mask(r) for r in y]


def test_short_lengths_follow_deepmind():
    rng = np.random.default_rng(3)
    T = TRANSDUCTIONS
    for _ in range(20):
        assert T["binary_addition"].sample(rng, 1) == ([0], [0, 2])
        x, y = T["binary_multiplication"].sample(rng, 2)
        assert y == [0, 2] and from_binary(x) <= 2
        assert T["missing_duplicate_string"].sample(rng, 1) == ([1], [1])


def _exact_final_stack_mean(n: int) -> float:
    """E|final stack| of stack_manipulation at length n, by exact dynamic programming."""
    total = 0.0
    for k in range(1, n):  # initial stack length, uniform in 1..n-1
        p = np.zeros(n + 1)
        p[k] = 1.0
        for _ in range(n - k):  # POP (reflected at 0), PUSH 0, PUSH 1, each 1/3
            q = np.zeros_like(p)
            q[1:] += 2 / 3 * p[:-1]
            q[:-1] += 1 / 3 * p[1:]
            q[0] += 1 / 3 * p[0]
            p = q
        total += float(p @ np.arange(n + 1))
    return total / (n - 1)


def test_stack_manipulation_sampling_statistics_at_length_40():
    t = TRANSDUCTIONS["stack_manipulation"]
    rng = np.random.default_rng(0)
    N = 4000
    stack, ops, rest = np.empty(N), np.empty(N), np.empty(N)
    for i in range(N):
        x, y = t.sample(rng, 40)
        k = next(j for j, v in enumerate(x + [9]) if v not in (0, 1))
        stack[i], ops[i], rest[i] = k, 40 - k, y.index(2)
    # exact means: |stack| uniform in 1..39 -> 20; |ops| = 40 - |stack| -> 20
    for a, mu in ((stack, 20.0), (ops, 20.0), (rest, _exact_final_stack_mean(40))):
        se = a.std(ddof=1) / math.sqrt(N)
        assert abs(a.mean() - mu) < 4 * se, (a.mean(), mu)
    assert 26.0 < _exact_final_stack_mean(40) < 27.5  # DeepMind's ~26 (issue 11)


def test_bracket_density_and_depth_grow_with_length():
    rng = np.random.default_rng(0)
    s = [bracket_expression(rng, 40, True)[0] for _ in range(300)]
    density = np.mean([x.count("(") / 40 for x in s])
    # every internal node of length >= 5 adds "(", ")" and an operator around its parts
    assert 0.15 < density < 0.3
    for x in s:
        depth = max(np.cumsum([{"(": 1, ")": -1}.get(c, 0) for c in x]))
        assert depth >= 1


@given(st.integers(0, 2 ** 80), st.integers(0, 90))
@settings(max_examples=50, deadline=None)
def test_binary_round_trip(v, w):
    for le in (True, False):
        d = to_binary(v, w, le)
        assert from_binary(d, le) == v and len(d) >= max(w, 1)


@given(st.data())
@settings(max_examples=40, deadline=None)
def test_bracket_evaluation_matches_generator(data):
    seed = data.draw(st.integers(0, 2 ** 32 - 1))
    n = data.draw(st.integers(1, 60))
    s, v = bracket_expression(np.random.default_rng(seed), n, True)
    assert len(s) == n and evaluate_brackets(s) == v


def test_bad_input_is_named():
    T = TRANSDUCTIONS
    rng = np.random.default_rng(0)
    with pytest.raises(TaskLengthError, match="modular_arithmetic.*length 4"):
        T["modular_arithmetic"].sample(rng, 4)
    with pytest.raises(TaskLengthError, match="solve_equation"):
        T["solve_equation"].sample(rng, 2)
    with pytest.raises(TaskLengthError):
        T["reverse_string"].sample(rng, 0)
    with pytest.raises(AlphabetError, match="position 1"):
        T["reverse_string"].solve([0, 2])
    with pytest.raises(AlphabetError):
        T["modular_arithmetic_brackets"].solve([8, 1])
    with pytest.raises(UnknownNameError, match="known"):
        get_transduction("reverse_strings")


@given(st.sampled_from(NAMES), st.integers(1, 300), st.integers(0, 2 ** 32 - 1))
@settings(max_examples=60, deadline=None)
def test_solve_is_ground_truth_at_long_lengths(name, n, seed):
    t = TRANSDUCTIONS[name]
    n = t.valid_lengths(n, n + 2)[0]  # the next length the task produces
    x, y = t.sample(np.random.default_rng(seed), n)
    assert t.solve(x) == y and t.mask(y) == t.mask_array(np.array([y]))[0].tolist()


def test_package_exports():
    import rnnmem

    assert rnnmem.TRANSDUCTIONS is TRANSDUCTIONS
    assert set(rnnmem.tasks.CFL_TASKS) == {"marked_reversal", "unmarked_reversal",
                                           "padded_reversal", "dyck", "hardest_cfl",
                                           "dyck_peer", "padded_reversal_peer"}
