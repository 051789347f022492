"""Solutions of linear continuous-time systems under zero-order-hold inputs."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from rnnmem.errors import InvalidParameterError, ShapeError
from rnnmem.numerics import solve_linear, solve_linear_reference, tolerance
from rnnmem.testing import strategies as rst


def _inputs(seed, shape):
    return np.random.default_rng(seed).uniform(-1, 1, shape)


@given(rst.linear_systems(max_n=4), st.floats(0.01, 0.5), st.integers(0, 2**16))
def test_exact_matches_variation_of_constants(system, dt, seed):
    W, U, c = system
    T = 12
    x = _inputs(seed, (2, T, U.shape[1]))
    got = solve_linear(W, U, c, x, dt)
    ref = solve_linear_reference(W, U, c, x, dt)
    scale = np.linalg.norm(c) * np.linalg.norm(U) * dt * T
    tol = tolerance("float64", n_ops=T * W.shape[0], cond=1 + np.linalg.norm(W, 2) * dt * T,
                    scale=scale)
    assert got.shape == (2, T, 1)
    assert tol.allclose(got, ref), tol.max_violation(got, ref)


@settings(max_examples=10)
@given(rst.linear_systems(max_n=3), st.sampled_from([1e-5, 1e-7, 1e-9]),
       st.sampled_from(["RK45", "DOP853"]), st.integers(0, 2**16))
def test_ivp_agrees_with_exact_within_solver_tolerance(system, rtol, ivp_method, seed):
    W, U, c = system
    T, dt = 20, 0.2
    x = _inputs(seed, (T, U.shape[1]))
    exact = solve_linear(W, U, c, x, dt)
    scale = np.abs(exact).max() + np.linalg.norm(U) * np.linalg.norm(c) * dt
    # the solver's absolute tolerance in the units of the solution: a fixed one (1e-2 rtol
    # alone) dominates when the states are tiny (U ~ 5e-6: states ~ 1e-6, relative error
    # 6.5e-8 at rtol 1e-9, found by hypothesis)
    h_scale = scale / max(np.linalg.norm(c), 1e-300)
    ivp = solve_linear(W, U, c, x, dt, method="ivp", rtol=rtol,
                       atol=max(rtol * 1e-2 * h_scale, 1e-300), ivp_method=ivp_method)
    # local errors ~ rtol per hold interval, accumulated over at most T intervals
    tol = tolerance("float64", n_ops=T, solver_rtol=rtol, scale=scale)
    assert tol.allclose(ivp, exact), tol.max_violation(ivp, exact)


def test_scalar_step_response_closed_form():
    # dh/dt = -a h + u x, x = 1: y_k = h((k+1) dt) = u (1 - exp(-a (k+1) dt)) / a
    a, u, dt, T = 0.8, 1.5, 0.25, 40
    y = solve_linear([[-a]], [[u]], [1.0], np.ones((T, 1)), dt)
    expected = u * (1 - np.exp(-a * dt * np.arange(1, T + 1))) / a
    assert y.shape == (T, 1)
    tol = tolerance("float64", n_ops=T, scale=u / a)
    assert tol.allclose(y[:, 0], expected), tol.max_violation(y[:, 0], expected)


def test_output_convention_sees_the_current_input():
    # output k has consumed inputs 0..k: an impulse at k = 3 first shows at output 3
    W, U, c = -np.eye(2), np.ones((2, 1)), np.array([1.0, 0.5])
    x = np.zeros((10, 1))
    x[3] = 1.0
    y = solve_linear(W, U, c, x, 0.1)[:, 0]
    assert np.all(y[:3] == 0) and y[3] > 0


def test_matrix_readout_and_batch_shapes():
    rng = np.random.default_rng(0)
    W = -np.eye(3) + 0.2 * rng.standard_normal((3, 3))
    U, C = rng.standard_normal((3, 2)), rng.standard_normal((4, 3))
    x = rng.standard_normal((5, 7, 2))
    y = solve_linear(W, U, C, x, 0.1)
    assert y.shape == (5, 7, 4)
    y1 = solve_linear(W, U, C, x[2], 0.1)
    tol = tolerance("float64", n_ops=7 * 3, scale=np.abs(y).max())
    assert y1.shape == (7, 4) and tol.allclose(y1, y[2])


def test_bad_inputs():
    W, U, c = -np.eye(2), np.ones((2, 1)), np.ones(2)
    with pytest.raises(ShapeError, match="x"):
        solve_linear(W, U, c, np.ones((4, 2)), 0.1)
    with pytest.raises(ShapeError, match="x"):
        solve_linear(W, U, c, np.ones(4), 0.1)
    with pytest.raises(InvalidParameterError, match="dt"):
        solve_linear(W, U, c, np.ones((4, 1)), -0.1)
    with pytest.raises(InvalidParameterError, match="method"):
        solve_linear(W, U, c, np.ones((4, 1)), 0.1, method="rk4")
    with pytest.raises(InvalidParameterError, match="rtol"):
        solve_linear(W, U, c, np.ones((4, 1)), 0.1, method="ivp", rtol=0.0)
