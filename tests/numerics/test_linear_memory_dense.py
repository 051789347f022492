"""Dense closed-form memory (issue 14, part 2): the one-decomposition path (``eigh`` for a
symmetric W, the blocked evaluation on uniform grids) and the sampled memory, against
their references, the black-box estimator, and the fallback for non-normal W."""

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st
from scipy import linalg as sla

from rnnmem.errors import InvalidParameterError, UnstableSystemError
from rnnmem.numerics import (discretise, eigenvector_condition, linear_memory,
                             linear_memory_discrete, linear_memory_discrete_reference,
                             linear_memory_reference, linear_memory_sampled,
                             linear_memory_sampled_reference, memory_function, solve_linear,
                             tolerance)
from rnnmem.numerics import linear as LIN
from rnnmem.testing import strategies as rst


@st.composite
def symmetric_systems(draw, max_n=6, max_d=2):
    """A symmetric Hurwitz W = Q diag(lam) Q^T formed in floating point (so symmetric only up
    to rounding), U (N, d), c (N,)."""
    n = draw(st.integers(1, max_n))
    d = draw(st.integers(1, max_d))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    lam = -draw(st.lists(st.floats(0.05, 3.0), min_size=n, max_size=n).map(np.array))
    W = (q * lam) @ q.T
    U = rng.uniform(-1, 1, (n, d))
    c = rng.uniform(-1, 1, n)
    return W, U, c


def _tol(W, U, c, n_ops):
    scale = np.linalg.norm(c) * np.linalg.norm(U) * max(1.0, np.linalg.norm(W, 2))
    kappa = eigenvector_condition(W)
    return tolerance("float64", n_ops=n_ops, cond=kappa if kappa <= LIN.COND_MAX else 1.0,
                     scale=scale)


# the blocked evaluation needs a uniform grid of >= 64 points
T_UNIFORM = 0.125 * np.arange(100)
K_UNIFORM = np.arange(90)


@settings(max_examples=25)
@given(symmetric_systems())
def test_symmetric_w_takes_the_eigh_path_and_matches_the_reference(system):
    W, U, c = system
    assert LIN._is_symmetric(W)
    fast = linear_memory(W, U, c, T_UNIFORM)
    ref = linear_memory_reference(W, U, c, T_UNIFORM)
    tol = _tol(W, U, c, n_ops=W.shape[0] * 8 * T_UNIFORM.size)
    assert tol.allclose(fast, ref), tol.max_violation(fast, ref)


@settings(max_examples=25)
@given(rst.linear_systems(max_n=4), st.floats(0.01, 0.5))
def test_blocked_uniform_grid_equals_the_direct_evaluation(system, h):
    """Same times, once as a uniform grid (blocked product) and once with one extra time
    off the grid (direct (L, N) evaluation): the common entries agree to rounding."""
    W, U, c = system
    assume(eigenvector_condition(W) <= 1e4)  # the eig path (a defective W falls back)
    t = h * np.arange(80)
    blocked = linear_memory(W, U, c, t, method="eig")
    direct = linear_memory(W, U, c, np.append(t, 0.5 * h), method="eig")[:-1]
    tol = _tol(W, U, c, n_ops=64 * W.shape[0])
    assert tol.allclose(blocked, direct), tol.max_violation(blocked, direct)


@settings(max_examples=25)
@given(rst.linear_systems(max_n=4, time="discrete"))
def test_discrete_uniform_steps_match_the_reference(system):
    A, B, c = system
    got = linear_memory_discrete(A, B, c, K_UNIFORM)
    ref = linear_memory_discrete_reference(A, B, c, K_UNIFORM)
    growth = max(np.linalg.norm(np.linalg.matrix_power(A, int(k)), 2) for k in K_UNIFORM)
    kappa = eigenvector_condition(A)
    tol = tolerance("float64", n_ops=int(K_UNIFORM.max()) * A.shape[0],
                    cond=max(kappa if kappa <= LIN.COND_MAX else 1.0,
                             np.linalg.norm(A, 2) * growth),
                    scale=np.linalg.norm(c) * np.linalg.norm(B) * growth)
    assert tol.allclose(got, ref), tol.max_violation(got, ref)


@settings(max_examples=30)
@given(st.one_of(rst.linear_systems(max_n=4), symmetric_systems(max_n=4)),
       st.floats(0.01, 0.5), st.sampled_from([np.arange(70), np.array([0, 3, 1, 9, 4])]))
def test_sampled_matches_its_reference(system, dt, k):
    W, U, c = system
    got = linear_memory_sampled(W, U, c, k, dt)
    ref = linear_memory_sampled_reference(W, U, c, k, dt)
    A, _ = discretise(W, U, dt)
    growth = max(np.linalg.norm(np.linalg.matrix_power(A, int(j)), 2) for j in k)
    kappa = eigenvector_condition(W)
    tol = tolerance("float64", n_ops=int(k.max() + 1) * W.shape[0],
                    cond=max(kappa if kappa <= LIN.COND_MAX else 1.0, growth),
                    scale=np.linalg.norm(c) * np.linalg.norm(U) * growth)
    assert tol.allclose(got, ref), tol.max_violation(got, ref)


@pytest.mark.parametrize("kind", ["normal", "nonnormal"])
def test_sampled_is_what_the_black_box_measures(kind):
    """Float64, N = 16, T = 200: the closed form of the sampled system and the Def. 3.1
    estimator on solve_linear agree to rounding (the issue's 1e-10 and the helper's bound)."""
    rng = np.random.default_rng(3)
    n, T, dt = 16, 200, 0.1
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    lam = -np.exp(np.linspace(np.log(0.05), np.log(2.0), n))
    # non-normal: a strictly upper-triangular coupling keeps the eigenvalues lam
    coupling = 0.0 if kind == "normal" else 0.3
    W = q @ (np.diag(lam) + coupling * np.triu(rng.standard_normal((n, n)), 1)) @ q.T
    U = rng.standard_normal((n, 1))
    c = rng.standard_normal(n) / np.sqrt(n)
    k = np.arange(T)
    closed = linear_memory_sampled(W, U, c, k, dt)
    est = memory_function(lambda x: solve_linear(W, U, c, x, dt), dt * k, dt=dt,
                          input_dim=1)
    diff = float(np.max(np.abs(closed - est)))
    tol = tolerance("float64", n_ops=T * n, cond=max(1.0, eigenvector_condition(W)),
                    scale=float(np.max(np.abs(closed))) / dt)
    assert tol.allclose(closed, est), tol.max_violation(closed, est)
    assert diff <= 1e-10


def test_non_normal_w_falls_back_and_agrees():
    """A Jordan block (defective, kappa = inf) takes the discretise + propagate path."""
    W = np.array([[-0.5, 1.0, 0.0], [0.0, -0.5, 1.0], [0.0, 0.0, -0.5]])
    U = np.array([[0.0], [0.0], [1.0]])
    c = np.array([1.0, 0.0, 0.0])
    k = np.arange(80)
    got = linear_memory_sampled(W, U, c, k, 0.1)
    ref = linear_memory_sampled_reference(W, U, c, k, 0.1)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-15)
    # and the continuous closed form t^2/2 e^{-t/2} (Jordan block of size 3)
    t = 0.1 * k
    np.testing.assert_allclose(linear_memory(W, U, c, t), t**2 / 2 * np.exp(-0.5 * t),
                               rtol=1e-12, atol=1e-15)


def test_matrix_readout_rows_are_vector_readouts():
    rng = np.random.default_rng(0)
    n = 8
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    W = (q * -np.linspace(0.1, 2.0, n)) @ q.T
    U, C = rng.standard_normal((n, 2)), rng.standard_normal((3, n))
    k = np.arange(100)
    M = linear_memory_sampled(W, U, C, k, 0.2)
    assert M.shape == (100, 3)
    for i in range(3):
        np.testing.assert_allclose(M[:, i], linear_memory_sampled(W, U, C[i], k, 0.2),
                                   rtol=1e-13, atol=1e-15)


def test_sampled_bad_input():
    W = -np.eye(2)
    with pytest.raises(InvalidParameterError, match="dt"):
        linear_memory_sampled(W, np.ones((2, 1)), np.ones(2), [0, 1], 0.0)
    with pytest.raises(InvalidParameterError, match="k"):
        linear_memory_sampled(W, np.ones((2, 1)), np.ones(2), [0.5], 0.1)
    with pytest.raises(UnstableSystemError):
        linear_memory_sampled(np.eye(2), np.ones((2, 1)), np.ones(2), [0, 1], 0.1)


def test_discrete_symmetric_negative_eigenvalues_on_a_strided_grid():
    """eigh path (real, negative eigenvalues) with the blocked evaluation on k = 0, 3, 6, ...:
    integer exponents throughout (no NaN from a float power of a negative base)."""
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    A = (q * np.array([-0.9, -0.5, 0.3, 0.7, -0.2, 0.95])) @ q.T
    assert LIN._is_symmetric(A)
    B, c = rng.standard_normal((6, 2)), rng.standard_normal(6)
    k = np.arange(0, 300, 3)
    got = linear_memory_discrete(A, B, c, k)
    ref = linear_memory_discrete_reference(A, B, c, k)
    tol = tolerance("float64", n_ops=300 * 6, scale=np.linalg.norm(c) * np.linalg.norm(B))
    assert np.all(np.isfinite(got)) and tol.allclose(got, ref), tol.max_violation(got, ref)


def test_the_symmetric_path_stays_in_numpys_blas(monkeypatch):
    """numpy and scipy each load their own OpenBLAS thread pool; the symmetric path
    decomposes with numpy's LAPACK so that its products and its decomposition share one
    pool (mixing them made the N = 256 closed form 2-3x slower on 2 vCPUs). scipy's eigh
    is not called, and the values are those of the reference."""
    def refuse(*a, **k):
        raise AssertionError("scipy.linalg.eigh called on the symmetric path")

    monkeypatch.setattr(sla, "eigh", refuse)
    monkeypatch.setattr(LIN.sla, "eigh", refuse)
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.standard_normal((12, 12)))
    W = (q * -np.linspace(0.1, 2.0, 12)) @ q.T
    U, c = rng.standard_normal((12, 1)), rng.standard_normal(12)
    assert LIN._is_symmetric(W)
    k = np.arange(80)
    got = linear_memory_sampled(W, U, c, k, 0.1)
    ref = linear_memory_sampled_reference(W, U, c, k, 0.1)
    tol = _tol(W, U, c, n_ops=12 * 8 * k.size)
    assert tol.allclose(got, ref), tol.max_violation(got, ref)
