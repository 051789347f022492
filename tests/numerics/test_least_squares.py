"""Least-squares exponential sums (polynomials in s = e^{-t/tau}) and their perturbation error.

Facts used as oracles:

* exactness: a target that *is* a polynomial in s without constant term is reproduced;
* optimality: the least-squares residual on the grid is no larger than that of any other
  exponential sum with the same eigenvalues, e.g. a truncated Taylor series in s, and it is
  non-increasing in the width (nested spaces);
* first order: by the triangle inequality, the sup error of an eigenvalue perturbation
  with max|delta| = beta exceeds E(0) by at most beta * sum_i |c_i| max_t t e^{-it/tau} (1 +
  O(beta)) = beta * sensitivity * (1 + O(beta)).
"""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rnnmem.errors import (InvalidParameterError, NonFiniteError, ShapeError,
                           UnknownNameError)
from rnnmem.numerics import tolerance
from rnnmem.numerics.least_squares import (ExponentialSumFit, draw_perturbations,
                                           fit_exponential_sum, linear_perturbation_curve,
                                           perturbed_errors, perturbed_errors_reference)
from rnnmem.numerics.perturbation import PerturbationCurve, stability_verdict

N = 401  # grid points (small: fast tests)


def two_exp(t):
    return np.exp(-t) + 0.5 * np.exp(-2 * t)


def analytic(t):
    """rho = s / (2 - s) = sum_k (s/2)^k: exponential memory, g analytic on [0, 1]."""
    s = np.exp(-t)
    return s / (2 - s)


def _l2_grid(r):
    return float(np.sqrt(np.sum(np.asarray(r) ** 2)))


# ----------------------------------------------------------------------------- the fit
@pytest.mark.parametrize("m", [2, 3, 6])
def test_fit_is_exact_for_polynomials_in_s(m):
    fit = fit_exponential_sum(two_exp, m, n_points=N)
    assert isinstance(fit, ExponentialSumFit) and fit.width == m and fit.rank == m
    expected = np.zeros(m)
    expected[:2] = [1.0, 0.5]
    tol = tolerance("float64", n_ops=N, cond=fit.cond)
    assert tol.allclose(fit.coefficients, expected)
    assert tol.allclose(fit.eigenvalues, -np.arange(1, m + 1))
    assert fit.error_sup <= tol.atol * 10 and fit.error_l2 <= tol.atol * 10
    t = np.linspace(0, 7, 13)
    assert tol.allclose(fit(t), two_exp(t))


def test_time_scale_variant():
    # e^{-t/2} + e^{-t} = s + s^2 in s = e^{-t/2}; not a polynomial in e^{-t}
    rho = lambda t: np.exp(-t / 2) + np.exp(-t)  # noqa: E731
    fit = fit_exponential_sum(rho, 3, tau=2.0, n_points=N)
    tol = tolerance("float64", n_ops=N, cond=fit.cond)
    assert tol.allclose(fit.coefficients, [1.0, 1.0, 0.0])
    assert tol.allclose(fit.eigenvalues, [-0.5, -1.0, -1.5])
    assert fit_exponential_sum(rho, 3, tau=1.0, n_points=N).error_sup > 1e3 * fit.error_sup


def test_registered_exponential_target_is_exact():
    fit = fit_exponential_sum("exponential", 8, n_points=N)  # rho = e^{-t} = s
    tol = tolerance("float64", n_ops=N, cond=fit.cond)
    assert tol.allclose(fit.coefficients, np.eye(8)[0])
    assert fit.name == "exponential"


def test_analytic_target_converges_geometrically():
    """LS error <= error of the truncated Taylor series sum_{k<=m} (s/2)^k, whose remainder
    is (s/2)^{m+1} / (1 - s/2) <= 2^-m: at least geometric convergence, ratio 1/2."""
    ms = np.arange(2, 13)
    errs = []
    for m in ms:
        fit = fit_exponential_sum(analytic, m, n_points=N)
        s = np.exp(-fit.t)
        taylor_rem = (s / 2) ** (m + 1) / (1 - s / 2)
        assert _l2_grid(fit.residual) <= _l2_grid(taylor_rem) * (1 + 1e-9)
        errs.append(_l2_grid(fit.residual))
        assert np.max(np.abs(fit.coefficients)) < 2  # bounded coefficients
    slope = np.polyfit(ms, np.log(errs), 1)[0]
    assert slope < math.log(0.5)  # faster than the Taylor bound's 2^-m


def test_polynomial_target_converges_slowly_and_coefficients_grow():
    """Observed trend, checked on the computed numbers: the discrete l2 residual is
    non-increasing in m (nested spaces, a theorem), but from m = 2 to m = 16 it shrinks by
    less than a factor 10 (it shrinks by ~1.5; g(s) = (1 + log 1/s)^-1.1 is not Hölder at
    s = 0), while for the analytic target it shrinks by more than 10^6 (Taylor bound); the
    coefficient sums grow geometrically."""
    widths = [2, 4, 8, 16]
    pol = [fit_exponential_sum("polynomial", m, n_points=N) for m in widths]
    ana = [fit_exponential_sum(analytic, m, n_points=N) for m in widths]
    r_pol = [_l2_grid(f.residual) for f in pol]
    r_ana = [_l2_grid(f.residual) for f in ana]
    assert all(a >= b * (1 - 1e-12) for a, b in zip(r_pol, r_pol[1:]))
    assert r_pol[-1] / r_pol[0] > 0.1
    assert r_ana[-1] / r_ana[0] < 1e-6
    sens = [f.sensitivity for f in pol]
    assert all(b > 2 * a for a, b in zip(sens, sens[1:]))
    assert max(f.sensitivity for f in ana) < 1


def test_ill_conditioning_is_reported():
    fit = fit_exponential_sum("polynomial", 32, n_points=N)
    assert fit.cond > 1e14 and fit.rank < 32


def test_fit_validation():
    with pytest.raises(InvalidParameterError):
        fit_exponential_sum(two_exp, 0)
    with pytest.raises(InvalidParameterError):
        fit_exponential_sum(two_exp, 2, tau=0.0)
    with pytest.raises(InvalidParameterError):
        fit_exponential_sum(two_exp, 2, t=[0.0, 1.0, 0.5])
    with pytest.raises(InvalidParameterError):
        fit_exponential_sum(two_exp, 2, t=[-1.0, 1.0])
    with pytest.raises(UnknownNameError):
        fit_exponential_sum("no-such-target", 2)
    with pytest.raises(NonFiniteError):
        fit_exponential_sum(lambda t: np.full_like(t, np.nan), 2, n_points=11)
    with pytest.raises(ShapeError):
        fit_exponential_sum(lambda t: np.ones(3), 2, n_points=11)


# ----------------------------------------------------------------------------- perturbations
def test_draw_perturbations_have_norm_beta():
    rng = np.random.default_rng(0)
    for dist in ("rademacher", "gaussian"):
        d = draw_perturbations(rng, 0.3, (50, 7), "spectral", dist)
        assert tolerance(n_ops=7).allclose(np.max(np.abs(d), axis=1), 0.3)
        d = draw_perturbations(rng, 0.3, (50, 7), "frobenius", dist)
        assert tolerance(n_ops=7).allclose(np.linalg.norm(d, axis=1), 0.3)
    d = draw_perturbations(rng, 0.3, (50, 7), "max", "rademacher")
    assert np.all(np.abs(d) == 0.3)  # vertices of the max-norm ball
    with pytest.raises(UnknownNameError):
        draw_perturbations(rng, 0.3, (2, 2), "nuclear")
    with pytest.raises(UnknownNameError):
        draw_perturbations(rng, 0.3, (2, 2), "max", "uniform")


@pytest.mark.parametrize("norm", ["sup", "l2"])
@pytest.mark.parametrize("target, m", [("polynomial", 6), (two_exp, 3)])
def test_vectorised_errors_match_the_reference(norm, target, m):
    fit = fit_exponential_sum(target, m, n_points=N)
    rng = np.random.default_rng(1)
    dl = draw_perturbations(rng, 0.05, (40, m), "max", "gaussian")
    dc = draw_perturbations(rng, 0.05, (40, m), "max", "gaussian")
    fast = perturbed_errors(fit, dl, dc, norm=norm, chunk=7)
    ref = perturbed_errors_reference(fit, dl, dc, norm=norm)
    scale = float(np.sum(np.abs(fit.coefficients)) + 1)  # cancellation in sum c_i s^i
    tol = tolerance("float64", n_ops=N * m, cond=scale)
    assert tol.allclose(fast, ref)
    assert tol.allclose(perturbed_errors(fit, np.zeros(m), norm=norm), fit.error(norm))


def test_blow_up_when_an_eigenvalue_reaches_zero():
    fit = fit_exponential_sum(two_exp, 2, n_points=N)
    d = np.array([[1.0, 0.0], [0.999, 0.0], [0.0, 2.0]])
    fast, ref = perturbed_errors(fit, d), perturbed_errors_reference(fit, d)
    assert np.isposinf(fast[0]) and np.isposinf(fast[2]) and np.isfinite(fast[1])
    assert np.array_equal(np.isinf(fast), np.isinf(ref))


@given(st.floats(1e-6, 1e-2), st.integers(0, 2**31))
def test_first_order_bound(beta, seed):
    fit = fit_exponential_sum("polynomial", 5, n_points=N)
    d = draw_perturbations(np.random.default_rng(seed), beta, (8, 5), "max", "gaussian")
    e = perturbed_errors(fit, d)
    # |e^{dt} - 1| <= |d| t e^{|d| t}, so term i is at most |c_i| beta t e^{-(i - beta) t}
    # <= beta |c_i| / ((i - beta) e) <= beta |c_i| / (i e) / (1 - beta), and 1/(1 - beta)
    # <= 1 + 2 beta for beta <= 1/2
    rounding = tolerance("float64", n_ops=N * 5, cond=np.sum(np.abs(fit.coefficients))).atol
    bound = fit.error_sup + beta * fit.sensitivity * (1 + 2 * beta) + rounding
    assert np.all(e <= bound)


def test_curve_reproducible_and_validated():
    fit = fit_exponential_sum("polynomial", 4, n_points=N)
    betas = np.geomspace(1e-4, 1.0, 9)
    a = linear_perturbation_curve(fit, betas, repeats=5, seed=3)
    b = linear_perturbation_curve(fit, betas, repeats=5, seed=3)
    assert isinstance(a, PerturbationCurve) and np.array_equal(a.samples, b.samples)
    assert a.samples.shape == (9, 5) and a.e0 == fit.error_sup
    assert a.meta["width"] == 4 and a.meta["scope"] == "eigenvalues"
    c = linear_perturbation_curve(fit, betas, repeats=5, scope="all", error="l2")
    assert c.e0 == fit.error_l2 and np.all(c.envelope >= c.e0)
    for kw, err in (({"repeats": 0}, InvalidParameterError),
                    ({"scope": "recurrent"}, UnknownNameError),
                    ({"norm": "nuclear"}, UnknownNameError),
                    ({"error": "l1"}, UnknownNameError),
                    ({"seed": 1.5}, InvalidParameterError)):
        with pytest.raises(err):
            linear_perturbation_curve(fit, betas, **kw)
    for bad in ([0.0, 1.0], [1.0, 0.1]):
        with pytest.raises(InvalidParameterError):
            linear_perturbation_curve(fit, bad)


# ----------------------------------------------------------------------------- the verdicts
WIDTHS = (2, 4, 8, 16, 32)
BETAS = np.geomspace(1e-12, 1.0, 25)
LEVEL = 0.5  # half of rho(0) = 1: above every E_m(0) of both targets


def _family(target):
    return {m: linear_perturbation_curve(fit_exponential_sum(target, m, n_points=N), BETAS,
                                         repeats=8, seed=m)
            for m in WIDTHS}


@pytest.mark.parametrize("target", ["exponential", analytic])
def test_exponential_memory_is_stably_approximated(target):
    v = stability_verdict(_family(target), level=LEVEL)
    assert v.verdict == "stable", v.reason
    assert min(v.beta0) > 0.1


def test_polynomial_memory_is_not():
    v = stability_verdict(_family("polynomial"), level=LEVEL)
    assert v.verdict == "unstable", v.reason
    assert v.beta0[-1] < 1e-6 * v.beta0[0]


def test_exponential_memory_off_the_eigenvalue_lattice_is_unstable_for_this_construction():
    """rho = e^{-1.5 t} decays exponentially, but g(s) = s^{1.5} is singular at s = 0 and
    the fixed eigenvalues -1, -2, ... need growing coefficients: the *least-squares
    construction* is unstable, although a width-1 RNN with eigenvalue -1.5 is exact.
    (The inverse theorem says unstable approximation is forced for polynomial memory; it
    does not make every construction for exponential memory stable.)"""
    v = stability_verdict(_family(lambda t: np.exp(-1.5 * t)), level=LEVEL)
    assert v.verdict == "unstable", v.reason
