"""The shared verdict rule: blow-up radius at a target-fixed level, its trend with a CI,
and the original's reading (intersections of consecutive widths' curves)."""

import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rnnmem.errors import InvalidParameterError
from rnnmem.numerics import tolerance
from rnnmem.numerics.perturbation import (PerturbationCurve, blowup_radius, blowup_verdict,
                                          curve_intersections, original_betas, parse_betas)

BETAS = original_betas()


def _curve(c, e0=0.0, power=2.0, K=1, noise=0.0, seed=0, scale=1.0, betas=BETAS):
    """E(beta, k) = e0 + c beta^power (times a random factor in [1 - noise, 1])."""
    rng = np.random.default_rng(seed)
    base = e0 + c * betas[:, None] ** power
    fac = 1 - noise * rng.random((betas.size, K))
    return PerturbationCurve.from_samples(betas, base * fac, e0, {"target_scale": scale})


def test_original_betas():
    b = original_betas()
    assert b.size == 21 and b[0] == 1e-3
    assert np.allclose(b / 1e-3, 2.0 ** (np.arange(21) / 2), rtol=1e-15)
    assert np.array_equal(parse_betas("original"), b)
    with pytest.raises(InvalidParameterError, match="n must"):
        original_betas(0)


@given(c=st.floats(1e-2, 1e4), e0=st.floats(0, 0.5), lf=st.floats(0.6, 3.0))
def test_blowup_radius_is_the_level_crossing(c, e0, lf):
    cur = _curve(c, e0=e0)
    cr = blowup_radius(cur, lf)
    exact = math.sqrt((lf - e0) / c)
    if exact <= BETAS[0]:
        assert cr.censored == "left" and cr.beta == BETAS[0]
    elif exact > BETAS[-1]:
        assert cr.censored == "right" and cr.beta == BETAS[-1]
    else:
        i = np.searchsorted(BETAS, exact)
        assert cr.censored == "none"
        assert BETAS[i - 1] <= cr.beta * (1 + 1e-12) and cr.beta <= BETAS[i] * (1 + 1e-12)
        if e0 == 0:  # a pure power law is interpolated exactly in log-log
            assert tolerance(np.float64, n_ops=20).allclose(cr.beta, exact)


def test_blowup_radius_reaches_at_equality():
    cur = PerturbationCurve.from_samples(BETAS[:3], [[0.5], [1.0], [2.0]], 0.1)
    assert math.isclose(blowup_radius(cur, 1.0).beta, BETAS[1], rel_tol=1e-14)  # >=: at beta_1


def _family(exponent, widths=(8, 16, 32, 64), K=5, noise=0.1, e0=0.01):
    """Radii beta_b(m) ~ m^exponent at level 1: c(m) = m^(-2 exponent)."""
    return {m: _curve(float(m) ** (-2 * exponent) * 100, e0=e0 / m, K=K, noise=noise,
                      seed=m) for m in widths}


def test_verdict_unstable_when_radii_shrink_and_stable_when_constant():
    v = blowup_verdict(_family(-1.0), n_boot=300)
    assert v.verdict == "unstable" and v.ci_method == "bootstrap"
    assert -1.1 < v.slope < -0.9 and v.bootstrap_ci[1] < -0.25
    assert v.level == 1.0 and v.target_scale == 1.0
    w = blowup_verdict(_family(0.0), n_boot=300)
    assert w.verdict == "stable" and abs(w.slope) < 0.1
    # the bootstrap interval contains the point estimate and is narrower than "anything"
    for r in (v, w):
        assert r.bootstrap_ci[0] <= r.slope + 1e-9 and r.slope - 1e-9 <= r.bootstrap_ci[1]


def test_level_factor_scales_with_the_target():
    fam = _family(-1.0)
    scaled = {m: PerturbationCurve.from_samples(c.betas, c.samples * 7.0, c.e0 * 7.0,
                                                {"target_scale": 7.0})
              for m, c in fam.items()}
    a, b = blowup_verdict(fam, n_boot=200), blowup_verdict(scaled, n_boot=200)
    assert np.allclose(a.beta0, b.beta0, rtol=1e-12) and a.verdict == b.verdict
    assert b.level == 7.0


def test_regression_ci_without_repeats():
    v = blowup_verdict(_family(-1.0, K=1, noise=0.0))
    assert v.ci_method == "regression" and math.isnan(v.bootstrap_ci[0])
    assert v.slope_ci == v.regression_ci


def test_failed_training_rule_is_reported_not_judged():
    v = blowup_verdict(_family(-1.0), training={8: "ok", 16: "rule failed: 0.3 >= 0.2"},
                       n_boot=200)
    assert v.verdict == "training_failed" and "16" in v.reason
    assert v.training[16].startswith("rule failed") and v.training[32] == "ok"
    assert len(v.beta0) == 4  # the radii are still reported


def test_inconclusive_when_a_model_does_not_approximate():
    fam = _family(-1.0)
    fam[64] = _curve(1.0, e0=1.5, K=5, noise=0.1)
    v = blowup_verdict(fam, n_boot=200)
    assert v.verdict == "inconclusive" and "64" in v.reason


def test_never_blowing_up_is_stable():
    fam = {m: _curve(1e-8, K=3, noise=0.1, seed=m) for m in (2, 3, 4)}
    v = blowup_verdict(fam, n_boot=200)
    assert v.verdict == "stable" and set(v.censored) == {"right"}


def test_intersections_of_consecutive_curves():
    """Wider curves start lower and rise faster: E_m = e0/m + c m beta^2 cross at
    beta* = sqrt((e0/m - e0/m') / (c m' - c m)), moving left as m grows."""
    e0, c = 1.0, 1.0
    widths = (2, 4, 8, 16)
    fam = {m: _curve(c * m, e0=e0 / m) for m in widths}
    inter = curve_intersections(fam)
    assert [(i.narrow, i.wide, i.kind) for i in inter] == [(2, 4, "crossing"),
                                                            (4, 8, "crossing"),
                                                            (8, 16, "crossing")]
    for i in inter:
        exact = math.sqrt((e0 / i.narrow - e0 / i.wide) / (c * i.wide - c * i.narrow))
        k = np.searchsorted(BETAS, exact)
        assert BETAS[k - 1] <= i.beta <= BETAS[k]  # bracketed by the grid
        assert abs(math.log(i.beta / exact)) < 0.5 * math.log(2) / 2 + 1e-12
    v = blowup_verdict(fam, training=None, n_boot=100)
    assert v.intersections_move_left is True
    # a wider curve that is never below: no crossing; one below everywhere: right-censored
    fam2 = {2: _curve(1.0, e0=0.1), 4: _curve(2.0, e0=0.2), 8: _curve(1e-9, e0=0.01)}
    kinds = [i.kind for i in curve_intersections(fam2)]
    assert kinds == ["never_below", "right"]


def test_intersections_need_one_grid():
    with pytest.raises(InvalidParameterError, match="different radii"):
        curve_intersections({2: _curve(1.0), 3: _curve(1.0, betas=BETAS[:10])})


def test_target_scale_validation():
    fam = _family(-1.0)
    fam[64] = PerturbationCurve.from_samples(BETAS, fam[64].samples, fam[64].e0,
                                             {"target_scale": 2.0})
    with pytest.raises(InvalidParameterError, match="different targets"):
        blowup_verdict(fam)
    bare = {m: PerturbationCurve.from_samples(c.betas, c.samples, c.e0)
            for m, c in _family(-1.0).items()}
    with pytest.raises(InvalidParameterError, match="target_scale"):
        blowup_verdict(bare)
    assert blowup_verdict(bare, target_scale=1.0, n_boot=100).level == 1.0
    assert blowup_verdict(bare, level=0.5, n_boot=100).level == 0.5
    with pytest.raises(InvalidParameterError, match="n_boot"):
        blowup_verdict(_family(-1.0), n_boot=5)


def test_to_dict_is_json():
    v = blowup_verdict(_family(-1.0), n_boot=100, training={8: "ok"})
    d = json.loads(json.dumps(v.to_dict()))
    assert d["verdict"] == "unstable" and len(d["intersections"]) == 3
    assert d["training"]["8"] == "ok"
