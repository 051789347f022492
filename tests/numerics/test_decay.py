"""Decay classification: exponential vs polynomial vs none.

Bounds on fitted rates come from one fact: a least-squares slope is a positively weighted
average of the difference quotients, so it lies between the smallest and the largest
local slope of the fitted curve on the tail.
"""

import numpy as np
import pytest

from rnnmem.errors import InvalidParameterError, NonFiniteError, ShapeError
from rnnmem.numerics import DecayFit, classify_decay, tolerance

#: standard errors allowed between a noisy fitted rate and the true one
N_SE = 5.0


def _exact_tol(t, m):
    """Rounding tolerance of a slope fitted to log m (relative error u |log m| per point)."""
    return tolerance("float64", n_ops=len(t), cond=1 + np.abs(np.log(m)).max())


@pytest.mark.parametrize("tau", [0.5, 2.0, 10.0])
def test_pure_exponential(tau):
    t = np.linspace(0, 10 * tau, 200)
    m = np.exp(-t / tau)
    fit = classify_decay(t, m)
    assert isinstance(fit, DecayFit)
    assert fit.kind == "exponential"
    assert fit.r2_exp > fit.r2_pol
    assert _exact_tol(t, m).allclose(fit.rate, 1 / tau)
    assert fit.exp_fit[1] == fit.rate == fit.parameter
    assert fit.parameter_name == "rate" and np.isnan(fit.exponent)
    assert fit.tail_start >= t[0] + 0.5 * (t[-1] - t[0]) - (t[1] - t[0])


@pytest.mark.parametrize("p", [0.5, 1.1, 2.0, 3.0])
def test_pure_polynomial(p):
    t = np.linspace(0, 100, 300)
    m = (1 + t) ** -p
    fit = classify_decay(t, m)
    assert fit.kind == "polynomial"
    assert fit.r2_pol > fit.r2_exp
    assert _exact_tol(t, m).allclose(fit.exponent, p)
    assert fit.pol_fit[1] == fit.exponent == fit.parameter
    assert fit.parameter_name == "exponent" and "exponent" in fit.describe()
    with pytest.warns(DeprecationWarning, match="exponent"):
        assert fit.rate == fit.exponent  # kept, deprecated: it is not a rate


def test_underflowing_exponential_is_fitted_where_resolved():
    t = np.linspace(0, 1000, 2001)
    m = np.exp(-t)  # below the floor (and then 0) after t ~ 30
    fit = classify_decay(t, m)
    assert fit.kind == "exponential"
    assert fit.tail_start < 40
    keep = m > 1e3 * np.finfo(float).eps
    assert _exact_tol(t[keep], m[keep]).allclose(fit.rate, 1.0)


def test_sum_of_exponentials_reports_the_slowest_rate():
    # m = e^{-t} + 0.5 e^{-t/5}: log m = -t/5 + log(0.5) + log(1 + 2 e^{-0.8 t})
    t = np.linspace(0, 60, 300)
    m = np.exp(-t) + 0.5 * np.exp(-t / 5)
    fit = classify_decay(t, m)
    assert fit.kind == "exponential"
    # local slope of log(1 + 2e^{-0.8t}) is bounded by 1.6 e^{-0.8 t}
    bound = 1.6 * np.exp(-0.8 * fit.tail_start)
    assert abs(fit.rate - 0.2) <= bound + _exact_tol(t, m).rtol


def test_sum_of_powers_reports_the_slowest_power():
    # m = (1+t)^-1 + (1+t)^-2: d log m / d log(1+t) = -1 - a/(1+a), a = (1+t)^-1
    t = np.linspace(0, 200, 400)
    m = (1 + t) ** -1.0 + (1 + t) ** -2.0
    fit = classify_decay(t, m)
    assert fit.kind == "polynomial"
    a = 1 / (1 + fit.tail_start)
    assert 1.0 <= fit.exponent <= 1.0 + a / (1 + a) + _exact_tol(t, m).rtol


def test_polynomial_plus_exponential_is_polynomial():
    # m = (1+t)^-2 (1 + r), r = e^{-t} (1+t)^2; |(1+t) r'| <= (1+t)^3 e^{-t}
    t = np.linspace(0, 100, 400)
    m = (1 + t) ** -2.0 + np.exp(-t)
    fit = classify_decay(t, m)
    assert fit.kind == "polynomial"
    bound = (1 + fit.tail_start) ** 3 * np.exp(-fit.tail_start)
    assert abs(fit.exponent - 2.0) <= bound + _exact_tol(t, m).rtol


def _slope_se(x, sigma):
    return sigma / np.sqrt(np.sum((x - x.mean()) ** 2))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_noisy_exponential_and_polynomial(seed):
    rng = np.random.default_rng(seed)
    sigma = 0.05  # multiplicative log-normal noise
    t = np.linspace(0, 200, 801)
    noise = np.exp(sigma * rng.standard_normal((2, t.size)))
    fe = classify_decay(t, np.exp(-0.1 * t) * noise[0])
    assert fe.kind == "exponential"
    tail = t[t >= fe.tail_start]
    assert abs(fe.rate - 0.1) <= N_SE * _slope_se(tail, sigma)
    fp = classify_decay(t, (1 + t) ** -2.0 * noise[1])
    assert fp.kind == "polynomial"
    tail = t[t >= fp.tail_start]
    assert abs(fp.exponent - 2.0) <= N_SE * _slope_se(np.log1p(tail), sigma)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_non_decaying_is_none(seed):
    t = np.linspace(0, 50, 200)
    rng = np.random.default_rng(seed)
    for m in (np.ones_like(t), 0.1 + 0.01 * t, np.exp(0.05 * rng.standard_normal(t.size)),
              np.zeros_like(t), np.full_like(t, 1e-300)):
        fit = classify_decay(t, m)
        assert fit.kind == "none" and fit.rate == 0.0, m[:3]


def test_oscillating_memory_with_envelope():
    # |e^{-t} cos 3t| has zeros; its tail supremum lies in [e^{-(t + pi/3)}, e^{-t}]
    t = np.linspace(0, 20, 2000)
    m = np.abs(np.exp(-t) * np.cos(3 * t))
    fit = classify_decay(t, m, envelope=True)
    assert fit.kind == "exponential"
    x = t[t >= fit.tail_start]
    # log env = -t + delta(t), delta in [-pi/3, 0]: slope error <= pi/3 sum|x - xm| / Sxx
    bound = (np.pi / 3) * np.sum(np.abs(x - x.mean())) / np.sum((x - x.mean()) ** 2)
    assert abs(fit.rate - 1.0) <= bound


def test_tail_fraction_does_not_matter_for_exact_data_and_order_is_checked():
    t = np.linspace(0, 30, 150)
    m = np.exp(-0.4 * t)
    perm = np.random.default_rng(0).permutation(t.size)
    for bad_t, bad_m in ((t[perm], m[perm]), (t[::-1], m[::-1]), (np.r_[t[:2], t[1:]],
                                                                  np.r_[m[:2], m[1:]])):
        with pytest.raises(InvalidParameterError, match="strictly increasing"):
            classify_decay(bad_t, bad_m)
    with pytest.raises(ShapeError, match="empty"):
        classify_decay([], [])
    a = classify_decay(t, m, tail=0.3)
    b = classify_decay(t, m, tail=1.0)
    tol = _exact_tol(t, m)
    assert a.kind == b.kind == "exponential"
    assert tol.allclose(a.rate, 0.4) and tol.allclose(b.rate, 0.4)
    assert a.tail_start > b.tail_start


def test_bad_inputs():
    t = np.linspace(0, 1, 5)
    with pytest.raises(ShapeError):
        classify_decay(t, np.ones(4))
    with pytest.raises(InvalidParameterError, match="non-negative"):
        classify_decay(t, -np.ones(5))
    with pytest.raises(NonFiniteError):
        classify_decay(t, np.array([1, np.nan, 1, 1, 1.0]))
    with pytest.raises(InvalidParameterError, match="tail"):
        classify_decay(t, np.ones(5), tail=0.0)
