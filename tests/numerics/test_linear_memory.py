"""Exact memory functions of linear systems: fast paths against references and closed forms."""

import numpy as np
import pytest
from hypothesis import given, strategies as st
from scipy import linalg as sla

from rnnmem.errors import (InvalidParameterError, NonFiniteError, ShapeError,
                           UnstableSystemError)
from rnnmem.numerics import (eigenvector_condition, expm_error_growth, linear_memory,
                             linear_memory_discrete,
                             linear_memory_discrete_reference, linear_memory_reference,
                             tolerance)
from rnnmem.testing import strategies as rst

T_GRID = np.linspace(0.0, 6.0, 7)


def _scale(W, U, c, t, h=0.25):
    """Typical magnitude of c^T e^{Wt} U over [0, max t], for atol: ||c|| ||U|| times the
    largest ||e^{Wt}||_2 on a grid of step h (one expm and its powers)."""
    E, P, growth = sla.expm(W * h), np.eye(W.shape[0]), 1.0
    for _ in range(int(np.ceil(np.max(t) / h))):
        P = P @ E
        growth = max(growth, np.linalg.norm(P, 2))
    return np.linalg.norm(c) * np.linalg.norm(U) * growth


def _tol(W, U, c, t, method_cond):
    # the method's error (kappa(V), or the chained products of propagation, growing with
    # |W| t) plus the error of the expm that the reference calls
    cond = (max(method_cond, 1.0 + np.linalg.norm(W, 2) * float(np.max(t)))
            + expm_error_growth(W * float(np.max(t))))
    return tolerance("float64", n_ops=W.shape[0] * len(t), cond=cond, scale=_scale(W, U, c, t))


@given(rst.linear_systems(max_n=4), st.lists(st.floats(0, 8), min_size=1, max_size=4))
def test_fast_matches_reference(system, extra):
    W, U, c = system
    t = np.concatenate([T_GRID, extra])
    kappa = eigenvector_condition(W)
    fast = linear_memory(W, U, c, t)
    ref = linear_memory_reference(W, U, c, t)
    used_cond = kappa if kappa <= 1e6 else 1.0  # the fallback does not depend on kappa
    tol = _tol(W, U, c, t, used_cond)
    assert tol.allclose(fast, ref), tol.max_violation(fast, ref)


@given(rst.linear_systems(max_n=4), st.lists(st.floats(0, 8), min_size=1, max_size=6))
def test_propagation_fallback_matches_reference(system, t):
    W, U, c = system
    t = np.array(t)
    got = linear_memory(W, U, c, t, method="propagate")
    ref = linear_memory_reference(W, U, c, t)
    tol = _tol(W, U, c, t, 1.0)
    assert tol.allclose(got, ref), tol.max_violation(got, ref)


@given(rst.linear_systems(max_n=3, kind="jordan"))
def test_defective_matrices_use_the_fallback_and_agree(system):
    W, U, c = system
    got = linear_memory(W, U, c, T_GRID)
    ref = linear_memory_reference(W, U, c, T_GRID)
    tol = _tol(W, U, c, T_GRID, 1.0)
    assert tol.allclose(got, ref), tol.max_violation(got, ref)


@pytest.mark.parametrize("a", [0.3, 1.0, 2.5])
def test_jordan_block_closed_form(a):
    # W = [[-a, 1], [0, -a]]: c^T e^{Wt} U = t e^{-at} for c = e1, U = e2
    W = np.array([[-a, 1.0], [0.0, -a]])
    t = np.linspace(0, 10, 41)
    expected = t * np.exp(-a * t)
    got = linear_memory(W, np.array([[0.0], [1.0]]), np.array([1.0, 0.0]), t)
    assert eigenvector_condition(W) > 1e6  # the eig path is refused
    tol = tolerance("float64", n_ops=len(t), cond=1 + np.linalg.norm(W, 2) * t.max())
    assert tol.allclose(got, expected), tol.max_violation(got, expected)


@given(rst.diagonal_ssms(max_n=4, complex_eigenvalues=False))
def test_diagonal_closed_form(ssm):
    lam, U, c = ssm
    t = T_GRID
    expected = np.abs(np.einsum("ln,n,nd->ld", np.exp(np.outer(t, lam)), c, U)).sum(-1)
    got = linear_memory(np.diag(lam), U, c, t)
    tol = tolerance("float64", n_ops=len(lam), scale=np.abs(c) @ np.abs(U).sum(1))
    assert tol.allclose(got, expected), tol.max_violation(got, expected)


def test_matrix_readout_is_stacked_vector_readouts():
    rng = np.random.default_rng(1)
    W = -np.eye(3) + 0.3 * rng.standard_normal((3, 3))
    U, C = rng.standard_normal((3, 2)), rng.standard_normal((4, 3))
    M = linear_memory(W, U, C, T_GRID)
    assert M.shape == (len(T_GRID), 4)
    tol = tolerance("float64", n_ops=3, cond=eigenvector_condition(W), scale=M.max())
    for i in range(4):
        assert tol.allclose(M[:, i], linear_memory(W, U, C[i], T_GRID))


def test_scalar_time_and_memory_at_zero():
    # M(0) = ||c^T U||_1 exactly
    W = np.array([[-1.0, 0.5], [0.0, -2.0]])
    U = np.array([[1.0, -2.0], [0.5, 3.0]])
    c = np.array([2.0, -1.0])
    got = linear_memory(W, U, c, 0.0)
    assert got.shape == (1,)
    expected = np.abs(c @ U).sum()
    assert tolerance("float64", cond=eigenvector_condition(W), scale=expected).allclose(
        got[0], expected)


# ---- discrete time -------------------------------------------------------------------
K_GRID = np.array([0, 1, 2, 3, 5, 8, 13, 21, 40])


@given(rst.linear_systems(max_n=4, time="discrete"))
def test_discrete_fast_matches_reference(system):
    A, B, c = system
    kappa = eigenvector_condition(A)
    got = linear_memory_discrete(A, B, c, K_GRID)
    ref = linear_memory_discrete_reference(A, B, c, K_GRID)
    growth = max(np.linalg.norm(np.linalg.matrix_power(A, int(k)), 2) for k in K_GRID)
    scale = np.linalg.norm(c) * np.linalg.norm(B) * growth
    # a rounding error made at step i of a chain of products is amplified by A^(k-i)
    cond = max(kappa if kappa <= 1e6 else 1.0, np.linalg.norm(A, 2) * growth)
    tol = tolerance("float64", n_ops=int(K_GRID.max()) * A.shape[0], cond=cond, scale=scale)
    assert tol.allclose(got, ref), tol.max_violation(got, ref)
    got_p = linear_memory_discrete(A, B, c, K_GRID[::-1], method="propagate")[::-1]
    assert tol.allclose(got_p, ref), tol.max_violation(got_p, ref)


def test_discrete_jordan_closed_form():
    a = 0.8
    A = np.array([[a, 1.0], [0.0, a]])
    k = np.arange(0, 60)
    expected = k * a ** np.maximum(k - 1, 0)  # c^T A^k B = k a^{k-1}
    got = linear_memory_discrete(A, np.array([0.0, 1.0]), np.array([1.0, 0.0]), k)
    tol = tolerance("float64", n_ops=int(k.max()), worst_case=True, scale=expected.max())
    assert tol.allclose(got, expected), tol.max_violation(got, expected)


def test_discrete_is_the_heaviside_increment():
    # y_{k+1} - y_k = c^T A^k B x for h_{k+1} = A h_k + B x, h_0 = 0, y_k = c^T h_k
    rng = np.random.default_rng(2)
    A = 0.5 * rng.standard_normal((3, 3))
    A *= 0.9 / max(abs(np.linalg.eigvals(A)))
    B, c = rng.standard_normal((3, 1)), rng.standard_normal(3)
    h, ys = np.zeros(3), [0.0]
    for _ in range(20):
        h = A @ h + B[:, 0]
        ys.append(c @ h)
    inc = np.abs(np.diff(ys))
    got = linear_memory_discrete(A, B, c, np.arange(20))
    tol = tolerance("float64", n_ops=20, cond=eigenvector_condition(A), scale=np.max(inc))
    assert tol.allclose(got, inc), tol.max_violation(got, inc)


# ---- validation ----------------------------------------------------------------------
def test_bad_inputs_raise():
    W, U, c = -np.eye(2), np.ones((2, 1)), np.ones(2)
    with pytest.raises(ShapeError, match="square"):
        linear_memory(np.ones((2, 3)), U, c, [0.0])
    with pytest.raises(ShapeError, match="U"):
        linear_memory(W, np.ones((3, 1)), c, [0.0])
    with pytest.raises(ShapeError, match="c"):
        linear_memory(W, U, np.ones(3), [0.0])
    with pytest.raises(NonFiniteError, match="W"):
        linear_memory(np.array([[np.nan, 0], [0, -1.0]]), U, c, [0.0])
    with pytest.raises(NonFiniteError, match="t"):
        linear_memory(W, U, c, [np.inf])
    with pytest.raises(InvalidParameterError, match="t"):
        linear_memory(W, U, c, [-1.0])
    with pytest.raises(InvalidParameterError, match="method"):
        linear_memory(W, U, c, [0.0], method="magic")
    with pytest.raises(InvalidParameterError, match="integers"):
        linear_memory_discrete(0.5 * W, U, c, [0.5])
    with pytest.raises(ShapeError):
        linear_memory_discrete(0.5 * W, np.ones((3, 1)), c, [1])


def test_unstable_systems_raise_with_the_max_real_part():
    W = np.array([[0.25, 0.0], [0.0, -1.0]])
    U, c = np.ones((2, 1)), np.ones(2)
    with pytest.raises(UnstableSystemError, match="0.25"):
        linear_memory(W, U, c, [0.0, 1.0])
    with pytest.raises(UnstableSystemError, match="0.25"):
        linear_memory_reference(W, U, c, [0.0, 1.0])
    got = linear_memory(W, U, c, [0.0, 1.0], require_stable=False)
    expected = np.exp(0.25 * np.array([0.0, 1.0])) + np.exp(-np.array([0.0, 1.0]))
    assert tolerance("float64", scale=expected.max()).allclose(got, expected)
    with pytest.raises(UnstableSystemError, match="1.5"):
        linear_memory_discrete(np.diag([1.5, 0.1]), U, c, [1])
