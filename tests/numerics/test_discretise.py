"""Discretisations: equal to scipy.signal.cont2discrete, and converging at the right order."""

import numpy as np
import pytest
from hypothesis import given, strategies as st
from scipy import linalg as sla
from scipy.signal import cont2discrete

from rnnmem.errors import InvalidParameterError, NonFiniteError, UnknownNameError
from rnnmem.numerics import DISCRETISATIONS, discretise, discretise_ss, tolerance
from rnnmem.testing import strategies as rst

SCIPY_NAME = {"zoh": "zoh", "euler": "euler", "bilinear": "bilinear",
              "backward_euler": "backward_diff"}
# global order at a fixed horizon (one-step order minus one)
ORDER = {"euler": 1, "bilinear": 2, "backward_euler": 1}
#: accepted deviation of a fitted convergence slope from the theoretical order
SLOPE_SLACK = 0.2


@given(rst.linear_systems(max_n=4, max_input_dim=3), st.floats(1e-3, 0.5),
       st.sampled_from(sorted(DISCRETISATIONS)))
def test_matches_cont2discrete(system, dt, method):
    W, U, c = system
    A, B, Cd, Dd = discretise_ss(W, U, c, dt, method)
    A2, B2, C2, D2, _ = cont2discrete((W, U, c[None, :], np.zeros((1, U.shape[1]))), dt,
                                      method=SCIPY_NAME[method])
    n = W.shape[0]
    cond = np.linalg.cond(np.eye(n) - 0.5 * dt * W) * (1 + np.linalg.norm(W, 2) * dt)
    tol = tolerance("float64", n_ops=n, cond=cond)
    for mine, theirs in ((A, A2), (B, B2), (Cd, C2), (Dd, D2)):
        scaled = tolerance("float64", n_ops=n, cond=cond,
                           scale=max(np.abs(theirs).max(), np.abs(mine).max(), 1e-300))
        assert mine.shape == theirs.shape
        assert scaled.allclose(mine, theirs), scaled.max_violation(mine, theirs)
    A3, B3 = discretise(W, U, dt, method)
    assert tol.allclose(A3, A) and tol.allclose(B3, B)


def test_aliases_are_the_same_method():
    W, U = np.array([[-1.0, 2.0], [0.0, -0.5]]), np.array([[1.0], [0.3]])
    for alias, name in (("tustin", "bilinear"), ("forward_diff", "euler"),
                        ("backward_diff", "backward_euler")):
        for a, b in zip(discretise(W, U, 0.1, alias), discretise(W, U, 0.1, name)):
            np.testing.assert_array_equal(a, b)


def _slope(dts, errs):
    return np.polyfit(np.log(dts), np.log(errs), 1)[0]


@pytest.mark.parametrize("method", sorted(ORDER))
@pytest.mark.parametrize("seed", [0, 1])
def test_convergence_order_against_zoh(method, seed):
    """Fixed horizon T = n dt: the propagator A^n and the step response converge to the
    exact (zoh) ones at the global order; one step is one order higher."""
    rng = np.random.default_rng(seed)
    W = -np.eye(3) + 0.5 * rng.standard_normal((3, 3))
    U, c = rng.standard_normal((3, 2)), rng.standard_normal(3)
    T = 2.0
    ns = np.array([16, 32, 64, 128, 256])
    exact_prop = sla.expm(W * T)
    e_prop, e_step, e_one = [], [], []
    for n in ns:
        dt = T / n
        A, B = discretise(W, U, dt, method)
        Az, Bz = discretise(W, U, dt, "zoh")
        e_prop.append(np.linalg.norm(np.linalg.matrix_power(A, n) - exact_prop))
        S, Sz, P, Pz = np.zeros_like(B), np.zeros_like(B), np.eye(3), np.eye(3)
        for _ in range(n):  # step response sum_k A^k B
            S, Sz, P, Pz = S + P @ B, Sz + Pz @ Bz, P @ A, Pz @ Az
        e_step.append(np.linalg.norm(c @ (S - Sz)))
        e_one.append(np.linalg.norm(A - Az) + np.linalg.norm(B - Bz))
    dts = T / ns
    p = ORDER[method]
    assert abs(_slope(dts, e_prop) - p) < SLOPE_SLACK
    assert abs(_slope(dts, e_step) - p) < SLOPE_SLACK
    assert abs(_slope(dts, e_one) - (p + 1)) < SLOPE_SLACK


def test_zoh_is_exact_for_the_scalar_case():
    a, u, dt = -0.7, 2.0, 0.3
    A, B = discretise([[a]], [[u]], dt, "zoh")
    tol = tolerance("float64", n_ops=4)
    assert tol.allclose(A[0, 0], np.exp(a * dt))
    assert tol.allclose(B[0, 0], (np.exp(a * dt) - 1) / a * u)


def test_bad_inputs():
    W, U = -np.eye(2), np.ones((2, 1))
    with pytest.raises(UnknownNameError, match="rk4"):
        discretise(W, U, 0.1, "rk4")
    with pytest.raises(InvalidParameterError, match="dt"):
        discretise(W, U, 0.0, "zoh")
    with pytest.raises(NonFiniteError, match="dt"):
        discretise(W, U, float("nan"), "zoh")
    with pytest.raises(NonFiniteError, match="U"):
        discretise(W, np.array([[np.inf], [0.0]]), 0.1, "zoh")
    with pytest.raises(InvalidParameterError, match="singular"):
        discretise([[2.0]], [[1.0]], 1.0, "bilinear")  # I - dt W / 2 = 0
