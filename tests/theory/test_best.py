import sympy as sp
import pytest

from rnnmem.errors import InvalidParameterError
from rnnmem.theory import PARAMETERISATIONS, a, b, best_parameterisation, w
from rnnmem.theory import best_parameterisation_derivation


def test_continuous_best_is_published():
    assert sp.simplify(best_parameterisation("continuous") - (-1 / (a * w**2 + b))) == 0
    assert sp.simplify(best_parameterisation("continuous") - PARAMETERISATIONS["best"].expr) == 0


def test_discrete_best_and_conditions():
    d = best_parameterisation_derivation("discrete")
    assert sp.simplify(d.result - (1 - 1 / (a * w**2 + b))) == 0
    conds = dict(d.conditions)
    (unit_disc,) = [v for k, v in conds.items() if "|f(w)| < 1" in k]
    (nonneg,) = [v for k, v in conds.items() if ">= 0" in k]
    assert unit_disc == sp.Interval.open(sp.Rational(1, 2), sp.oo)
    assert nonneg == sp.Interval(1, sp.oo)
    # the registry's default b lies in the admissible set
    assert nonneg.contains(PARAMETERISATIONS["best_discrete"].params[b])


def test_continuous_condition_is_b_positive():
    d = best_parameterisation_derivation("continuous")
    assert d.conditions[0][1] == sp.Interval.open(0, sp.oo)


def test_solution_solves_the_ode():
    for time in ("continuous", "discrete"):
        f = best_parameterisation(time)
        den = f**2 if time == "continuous" else (1 - f) ** 2
        assert sp.simplify(sp.diff(f, w) / den - 2 * a * w) == 0


def test_bad_time():
    with pytest.raises(InvalidParameterError):
        best_parameterisation("sideways")
