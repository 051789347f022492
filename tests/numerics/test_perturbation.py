"""Perturbation curves on arrays: sup/envelope, crossing points, the stability verdict."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rnnmem.errors import InvalidParameterError, NonFiniteError, ShapeError
from rnnmem.numerics import tolerance
from rnnmem.numerics.perturbation import (PerturbationCurve, StabilityVerdict, check_betas,
                                          crossing_point, crossing_points_across_widths,
                                          parse_betas, stability_verdict)

BETAS = np.geomspace(1e-4, 1.0, 17)


def _curve(values, e0, betas=BETAS, K=1):
    s = np.repeat(np.asarray(values, float)[:, None], K, axis=1)
    return PerturbationCurve.from_samples(betas, s, e0)


# ----------------------------------------------------------------------------- the curve
def _envelope_reference(samples, e0):
    env, cur = [], e0
    for row in samples:
        for v in row:
            cur = v if v > cur else cur
        env.append(cur)
    return np.array(env)


@given(st.integers(1, 8), st.integers(1, 5),
       st.lists(st.floats(0, 1e6, allow_subnormal=False) | st.just(math.inf), min_size=40,
                max_size=40),
       st.floats(0, 1e6, allow_subnormal=False))
def test_sup_and_envelope_against_a_loop(n, K, flat, e0):
    samples = np.array(flat[:n * K]).reshape(n, K)
    c = PerturbationCurve.from_samples(np.geomspace(1e-3, 1, n), samples, e0)
    assert np.array_equal(c.sup, samples.max(axis=1))
    assert np.array_equal(c.envelope, _envelope_reference(samples, e0))
    assert np.all(c.envelope[1:] >= c.envelope[:-1]) and np.all(c.envelope >= e0)
    assert np.all(c.envelope >= c.sup)
    assert c.repeats == K and c.samples.shape == (n, K)


def test_nan_samples_count_as_blow_ups():
    c = PerturbationCurve.from_samples([0.1, 1.0], [[1.0, np.nan], [2.0, 3.0]], 0.5)
    assert np.isposinf(c.samples[0, 1]) and np.isposinf(c.sup[0])
    assert np.all(np.isposinf(c.envelope))


def test_round_trip_through_dict_keeps_infinities():
    import json

    c = PerturbationCurve.from_samples([0.1, 1.0], [[1.0, 2.0], [np.inf, 3.0]], 0.5,
                                       {"norm": "spectral"})
    d = json.loads(json.dumps(c.to_dict()))
    back = PerturbationCurve.from_dict(d)
    assert np.array_equal(back.samples, c.samples) and back.e0 == c.e0
    assert np.array_equal(back.envelope, c.envelope) and back.meta == {"norm": "spectral"}


@pytest.mark.parametrize("betas, err", [
    ([0.1, 0.0, 1.0], InvalidParameterError),
    ([-1.0, 1.0], InvalidParameterError),
    ([0.1, 0.1], InvalidParameterError),
    ([1.0, 0.5], InvalidParameterError),
    ([0.1, np.nan], NonFiniteError),
    ([], ShapeError),
    ([[0.1, 1.0]], ShapeError),
])
def test_bad_betas(betas, err):
    with pytest.raises(err):
        check_betas(betas)


def test_bad_samples_and_e0():
    with pytest.raises(ShapeError):
        PerturbationCurve.from_samples([0.1, 1.0], np.ones((3, 2)), 0.0)
    with pytest.raises(InvalidParameterError):
        PerturbationCurve.from_samples([0.1, 1.0], -np.ones((2, 2)), 0.0)
    for e0 in (-1.0, np.inf, "x"):
        with pytest.raises(InvalidParameterError):
            PerturbationCurve.from_samples([0.1, 1.0], np.ones((2, 2)), e0)


def test_parse_betas():
    b = parse_betas("1e-3:1e0:21")
    assert b.size == 21 and b[0] == pytest.approx(1e-3) and b[-1] == pytest.approx(1.0)
    ratios = b[1:] / b[:-1]
    assert tolerance(n_ops=21).allclose(ratios, ratios[0])  # log-spaced
    assert np.array_equal(parse_betas("0.1, 0.5,2"), [0.1, 0.5, 2.0])
    for bad in ("1:0.1:5", "0:1:5", "1e-3:1:0", "a:b:c", "1:2", "0.5,0.1", "", "1:2:3:4"):
        with pytest.raises(InvalidParameterError):
            parse_betas(bad)


# ----------------------------------------------------------------------------- crossings
@given(st.floats(0.1, 100), st.floats(0.5, 3), st.floats(1e-3, 0.5))  # no subnormals here
def test_crossing_is_exact_for_power_laws(A, q, frac):
    # log-log interpolation is exact for E = A beta^q
    env = A * BETAS**q
    level = float(np.exp(np.log(env[0]) + frac * (np.log(env[-1]) - np.log(env[0]))))
    c = crossing_point(_curve(env, 0.0), level, relative=False)
    exact = (level / A) ** (1 / q)
    assert c.censored == "none" and c.level == level
    assert tolerance(n_ops=8, cond=abs(np.log(exact)) + 1).allclose(c.beta, exact)


def test_relative_threshold_uses_e0():
    env = 1.0 + 10 * BETAS
    c2 = crossing_point(_curve(env, 1.0), 2.0)
    c10 = crossing_point(_curve(env, 1.0), 10.0)
    assert c2.level == 2.0 and c10.level == 10.0
    assert 0.05 < c2.beta < 0.15 < 0.5 < c10.beta < 1.0  # E = 2 at 0.1, E = 10 at 0.9
    assert c2.beta < c10.beta


def test_censoring_and_blow_up():
    c = crossing_point(_curve(np.full(BETAS.size, 5.0), 1.0), 2.0)
    assert c.censored == "left" and c.beta == BETAS[0]
    c = crossing_point(_curve(np.full(BETAS.size, 1.5), 1.0), 2.0)
    assert c.censored == "right" and c.beta == BETAS[-1]
    vals = np.ones(BETAS.size)
    vals[9:] = np.inf
    c = crossing_point(_curve(vals, 1.0), 2.0)
    assert c.censored == "none" and c.beta == pytest.approx(math.sqrt(BETAS[8] * BETAS[9]))


def test_crossing_validation():
    c = _curve(np.ones(BETAS.size), 1.0)
    for th in (1.0, 0.5, -2, np.inf, "x"):
        with pytest.raises(InvalidParameterError):
            crossing_point(c, th)
    with pytest.raises(InvalidParameterError):
        crossing_point(c, 0.0, relative=False)
    with pytest.raises(InvalidParameterError):
        crossing_point("curve", 2.0)


def test_across_widths_uses_one_level():
    curves = {m: _curve(e0 + m * BETAS, e0) for m, e0 in ((2, 0.1), (8, 0.01), (4, 0.05))}
    cr = crossing_points_across_widths(curves, 10.0)
    assert list(cr) == [2, 4, 8]
    assert {c.level for c in cr.values()} == {1.0}  # 10 x max E_m(0)
    assert cr[2].beta > cr[4].beta > cr[8].beta
    cr = crossing_points_across_widths(curves, level=0.5)
    assert {c.level for c in cr.values()} == {0.5}


# ----------------------------------------------------------------------------- the verdict
WIDTHS = (2, 4, 8, 16, 32)


#: wide enough that 2^-32-small crossings are not left-censored
WIDE = np.geomspace(1e-14, 1.0, 29)


def _family(K_of_m, e0=1e-3, noise=0.0, seed=0, betas=WIDE):
    rng = np.random.default_rng(seed)
    out = {}
    for m in WIDTHS:
        K = K_of_m(m) * (1 + noise * rng.uniform(-1, 1))
        out[m] = _curve(e0 + K * betas, e0, betas)
    return out


def test_verdict_stable_when_sensitivity_is_bounded():
    v = stability_verdict(_family(lambda m: 3.0 + 1.0 / m, noise=0.1), threshold=10.0)
    assert isinstance(v, StabilityVerdict)
    assert v.verdict == "stable", v.reason
    assert v.widths == WIDTHS and len(v.beta0) == 5 and v.level == pytest.approx(1e-2)
    assert v.slope_ci[0] <= v.slope <= v.slope_ci[1]


def test_verdict_unstable_when_crossings_shrink():
    v = stability_verdict(_family(lambda m: 2.0**m), threshold=10.0)
    assert v.verdict == "unstable", v.reason
    assert v.slope < -1 and v.slope_ci[1] < -v.slope_tol
    assert all(a > b for a, b in zip(v.beta0, v.beta0[1:]))


def test_verdict_power_law_slope_is_recovered():
    # E_m = e0 + m beta: beta0 = (level - e0)/m up to the interpolation, slope -1
    v = stability_verdict(_family(lambda m: float(m)), level=0.1)
    assert v.verdict == "unstable"
    assert v.slope == pytest.approx(-1.0, abs=0.05)


def test_verdict_inconclusive_cases():
    fam = _family(lambda m: 1.0)
    v = stability_verdict({m: fam[m] for m in (2, 4)})
    assert v.verdict == "inconclusive" and "width" in v.reason
    v = stability_verdict(fam, level=1e-9)  # below every E_m(0): all left-censored
    assert v.verdict == "inconclusive" and set(v.censored) == {"left"}
    v = stability_verdict(fam, level=1e6)  # never crossed: bounded below by the grid
    assert v.verdict == "stable" and set(v.censored) == {"right"}
    # a slope whose interval straddles -slope_tol
    noisy = {m: _curve(1e-3 + m**0.25 * f * BETAS, 1e-3)  # slope -0.25 plus noise
             for m, f in zip(WIDTHS, (1.0, 3.0, 0.5, 4.0, 1.0))}
    assert stability_verdict(noisy, level=0.05).verdict == "inconclusive"


def test_verdict_validation():
    fam = _family(lambda m: 1.0)
    for kw in ({"slope_tol": -1}, {"alpha": 0}, {"alpha": 1.5}, {"min_widths": 2},
               {"threshold": 1.0}, {"level": -1.0}):
        with pytest.raises(InvalidParameterError):
            stability_verdict(fam, **kw)
    with pytest.raises(InvalidParameterError):
        stability_verdict({})
    with pytest.raises(InvalidParameterError):
        stability_verdict({0: fam[2]})
    with pytest.raises(InvalidParameterError):
        stability_verdict({2: "x"})
    zero = {m: _curve(m * BETAS, 0.0) for m in WIDTHS}
    with pytest.raises(InvalidParameterError, match="absolute level"):
        stability_verdict(zero)


def test_verdict_to_dict_is_json():
    import json

    v = stability_verdict(_family(lambda m: 2.0**m))
    d = json.loads(json.dumps(v.to_dict()))
    assert d["verdict"] == "unstable" and len(d["beta0"]) == 5
