"""Parameterisations: one sympy expression, every derived object checked against it."""

import math

import numpy as np
import pytest
import sympy as sp
import torch
from hypothesis import assume, given, strategies as st

from rnnmem.errors import InvalidParameterError, UnknownNameError
from rnnmem.numerics.tolerances import tolerance
from rnnmem.theory import PARAMETERISATIONS, beta, get_parameterisation, w
from rnnmem.theory.codegen import stable_form
from rnnmem.theory.parameterisations import decay_rate_integral_identity

NAMES = sorted(PARAMETERISATIONS)


def _interior(p, u: float) -> float:
    """Map u in (0, 1) into the interior of p's domain."""
    D = p.domain
    lo = float(D.inf) if D.inf.is_finite else -12.0
    hi = float(D.sup) if D.sup.is_finite else 12.0
    return lo + (hi - lo) * u


unit = st.floats(0.02, 0.98, allow_nan=False, allow_subnormal=False)


def test_registry_contents_and_times():
    cont = {n for n, p in PARAMETERISATIONS.items() if p.time == "continuous"}
    disc = {n for n, p in PARAMETERISATIONS.items() if p.time == "discrete"}
    assert cont == {"direct", "exp", "softplus", "best"}
    assert disc == {"linear", "lru", "sigmoid", "best_discrete"}
    for p in PARAMETERISATIONS.values():
        assert p.symbol == w and w in p.expr.free_symbols


def test_unknown_name():
    with pytest.raises(UnknownNameError, match="unknown parameterisation 'nope'.*softplus"):
        get_parameterisation("nope")


@pytest.mark.parametrize("time", ["continuous", "discrete"])
def test_integral_identity(time):
    got, expected = decay_rate_integral_identity(time)
    assert sp.simplify(got - expected) == 0


def test_stability_verdicts_follow_stablessm():
    # StableSSM: no reparameterisation (direct / linear) is unstable, the others stable
    verdicts = {n: p.stable for n, p in PARAMETERISATIONS.items()}
    assert verdicts == {"direct": False, "exp": True, "softplus": True, "best": True,
                        "linear": False, "lru": True, "sigmoid": True, "best_discrete": True}


def test_stability_constants():
    assert PARAMETERISATIONS["exp"].stability.lipschitz == 1
    assert PARAMETERISATIONS["softplus"].stability.lipschitz == 1
    # best: sup |d/dw log(a w^2 + b)| = sqrt(a/b) = sqrt(2) at a=1, b=1/2
    assert sp.simplify(PARAMETERISATIONS["best"].stability.lipschitz - sp.sqrt(2)) == 0
    assert PARAMETERISATIONS["direct"].stability.witness_value == 1
    assert PARAMETERISATIONS["linear"].stability.witness_value == 1


@pytest.mark.parametrize("name", NAMES)
def test_derivation_text_prints(name):
    txt = PARAMETERISATIONS[name].stability.text()
    assert name in txt and ("STABLE" in txt)
    assert "\\" in PARAMETERISATIONS[name].stability.text(latex=True)


@pytest.mark.parametrize("name", NAMES)
@given(u=unit)
def test_numpy_torch_sympy_agree(name, u):
    p = PARAMETERISATIONS[name]
    x = _interior(p, u)
    exact = float(sp.N(p.concrete.subs(w, sp.Float(x, 30)), 30))
    a = float(p.numpy(np.float64(x)))
    b = float(p.torch(torch.tensor(x, dtype=torch.float64)))
    # relative condition number |w f'(w) / f(w)| of evaluating f at w (e.g. lru at w = 6:
    # exp(-e^w) amplifies the rounding of e^w by e^w)
    fprime = float(sp.N(sp.diff(p.concrete, w).subs(w, sp.Float(x, 30)), 30))
    cond = max(4.0, abs(x * fprime / exact)) if exact != 0 else 4.0
    tol = tolerance("float64", n_ops=8, cond=cond, scale=abs(exact))
    assert tol.allclose(a, exact) and tol.allclose(b, exact)


@pytest.mark.parametrize("name", NAMES)
@given(u=unit)
def test_gradient_scale_matches_autograd(name, u):
    p = PARAMETERISATIONS[name]
    x = torch.tensor(_interior(p, u), dtype=torch.float64, requires_grad=True)
    lam = p.torch(x)
    (g,) = torch.autograd.grad(lam, x)
    den = lam**2 if p.time == "continuous" else (1 - lam) ** 2
    got = float((g.abs() / den).detach())
    expect = float(p.gradient_scale_numpy(np.float64(x.item())))
    lam = lam.detach()
    lam_v = abs(float(lam))
    cond = 4.0 if p.time == "continuous" else 4.0 * (1 + lam_v / max(1 - float(lam), 1e-300))
    tol = tolerance("float64", n_ops=8, cond=cond, scale=abs(expect))
    assert tol.allclose(got, expect)


def test_best_gradient_scale_is_2a_abs_w():
    a = sp.Symbol("a", positive=True)
    for name in ("best", "best_discrete"):
        assert sp.simplify(PARAMETERISATIONS[name].gradient_scale - 2 * a * sp.Abs(w)) == 0


@pytest.mark.parametrize("name", NAMES)
@given(u=unit)
def test_inverse_round_trip(name, u):
    p = PARAMETERISATIONS[name]
    x = _interior(p, u)
    if name in ("best", "best_discrete"):
        x = abs(x)  # the inverse picks the w >= 0 branch
    lam = p.numpy(np.float64(x))
    # an eigenvalue that rounded onto the edge of the image (lru: exp(-e^9) == 0.0) carries
    # no information about w; the inverse rightly refuses it (tested below)
    assume(abs(float(lam)) > np.finfo(float).tiny and abs(float(lam)) != 1.0)
    back = float(p.inverse_numpy(lam))
    # conditioning of the inverse: |f/(x f')| relative amplification
    h = 1e-6 * max(1.0, abs(x))
    fprime = (p.numpy(np.float64(x + h)) - p.numpy(np.float64(x - h))) / (2 * h)
    cond = abs(float(lam)) / max(abs(float(fprime)) * max(abs(x), 1e-3), 1e-300)
    if p.time == "discrete":
        cond = max(cond, 1.0) / max(1 - float(lam), 1e-12)
    tol = tolerance("float64", n_ops=8, cond=max(cond, 1.0), scale=max(abs(x), 1.0))
    assert tol.allclose(back, x)


@pytest.mark.parametrize("name,bad", [("exp", 0.5), ("best", -3.0), ("lru", 1.5),
                                      ("sigmoid", 0.0), ("softplus", float("nan"))])
def test_inverse_rejects_unreachable(name, bad):
    with pytest.raises(InvalidParameterError, match="cannot reach"):
        PARAMETERISATIONS[name].inverse_numpy(np.array([bad]))


def test_stable_codegen_no_overflow():
    sp_ = PARAMETERISATIONS["softplus"]
    assert float(sp_.numpy(np.float64(1000.0))) == -1000.0
    assert float(sp_.torch(torch.tensor(200.0, dtype=torch.float32))) == pytest.approx(-200.0)
    sig = PARAMETERISATIONS["sigmoid"]
    with np.errstate(over="raise"):
        assert float(sig.numpy(np.float64(-1000.0))) == 0.0


@pytest.mark.parametrize("name", NAMES)
def test_stable_form_is_an_identity(name):
    e = PARAMETERISATIONS[name].concrete
    assert sp.simplify(stable_form(e).rewrite(sp.exp) - e) == 0


def test_with_params():
    best = PARAMETERISATIONS["best"]
    b01 = best.with_params(b=0.1)  # the original code's value
    assert float(b01.numpy(np.float64(0.0))) == pytest.approx(-10.0)
    assert float(best.numpy(np.float64(0.0))) == pytest.approx(-2.0)
    with pytest.raises(InvalidParameterError, match="no constant 'c'"):
        best.with_params(c=1.0)
    with pytest.raises(InvalidParameterError, match="positive"):
        best.with_params(a=-1.0)


@pytest.mark.parametrize("name", ["exp", "best", "sigmoid"])
def test_bound_dominates_sampled_quantity(name):
    """The derived g(beta) bounds the quadrature value of StableSSM's quantity."""
    from rnnmem.numerics.reparam import sup_perturbation_quantity

    p = PARAMETERISATIONS[name]
    for b in (0.2, 0.02):
        sup, _, _ = sup_perturbation_quantity(p.numpy, p.time, b, np.linspace(-4, 4, 17), 5)
        g = float(p.stability.bound.subs(beta, b))
        assert 0 < sup <= g * (1 + 1e-8)
        assert sup >= 0.5 * g  # and it is not a loose bound on this grid


def test_direct_is_unstable_numerically():
    from rnnmem.numerics.reparam import perturbation_quantity

    f = PARAMETERISATIONS["direct"].numpy
    for b in (1e-1, 1e-3, 1e-5):  # the witness pair (-2b, -b): Q = 1 for every b
        assert perturbation_quantity(f, -2 * b, -b, "continuous") == pytest.approx(1.0, rel=1e-8)


@pytest.mark.parametrize("x", [1e-6, 1e-4, 0.0276])
def test_generated_best_discrete_keeps_relative_accuracy_near_zero(x):
    """``1 - 1/(w^2 + 1)`` as written loses relative accuracy u/w^2 near w = 0 (1e-4 at
    w = 1e-6); the generated code evaluates it over one denominator, ``w^2/(w^2 + 1)``."""
    p = PARAMETERISATIONS["best_discrete"]
    exact = float(sp.N(p.concrete.subs(w, sp.Float(x, 40)), 40))
    tol = tolerance("float64", n_ops=4, cond=4.0, scale=exact)
    assert tol.allclose(float(p.numpy(np.float64(x))), exact)
    assert tol.allclose(float(p.torch(torch.tensor(x, dtype=torch.float64))), exact)
