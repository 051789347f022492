"""The expm error model (:func:`rnnmem.numerics.expm_error_growth`) against the real
``scipy.linalg.expm`` and 50-digit mpmath exponentials."""

import math

import mpmath as mp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy import linalg as sla

from rnnmem.errors import InvalidParameterError
from rnnmem.numerics import expm_error_growth, tolerance
from rnnmem.numerics.tolerances import THETA_13
from rnnmem.testing import strategies as rst


def _exact_expm(A):
    with mp.workdps(50):
        return np.array(mp.expm(mp.matrix(A.tolist())).tolist(), dtype=float)


@settings(max_examples=60, deadline=None)
@given(st.one_of(*(rst.linear_systems(max_n=4, kind=k)
                   for k in ("normal", "dissipative", "nonnormal"))),
       st.sampled_from([0.5, 2.0, 5.0, 8.0]))
def test_scipy_expm_error_is_within_the_model(system, t):
    """Entry errors of expm(W t) within tolerance(cond=expm_error_growth(W t)), scale 1."""
    W = system[0]
    A = W * t
    tol = tolerance("float64", cond=expm_error_growth(A), scale=1.0)
    assert tol.allclose(sla.expm(A), _exact_expm(A)), tol.max_violation(sla.expm(A),
                                                                        _exact_expm(A))


def test_the_model_is_needed_the_old_one_is_exceeded():
    """A symmetric stable A (entries exact in binary) with ||A||_1 = 4.5, below theta_13
    (no scaling): expm's error is about 90 u, beyond the tolerance of the 1 + ||A||_2
    model (41 u), and within the new one (720 u)."""
    A = np.array([[-2.5, -0.5], [-0.5, -4.0]])
    exact, got = _exact_expm(A), sla.expm(A)
    old = tolerance("float64", cond=1 + np.linalg.norm(A, 2), scale=1.0)
    new = tolerance("float64", cond=expm_error_growth(A), scale=1.0)
    assert not old.allclose(got, exact), old.max_violation(got, exact)
    assert new.allclose(got, exact), new.max_violation(got, exact)


@pytest.mark.parametrize("norm, squarings", [(0.0, 0), (1.0, 0), (THETA_13, 0),
                                             (2 * THETA_13, 1), (5 * THETA_13, 3)])
def test_growth_formula(norm, squarings):
    A = np.diag([-norm, 0.0])
    assert expm_error_growth(A) == pytest.approx(math.exp(min(norm, THETA_13))
                                                 * (1 + squarings))


@pytest.mark.parametrize("A, match", [(np.ones(3), "square"), (np.ones((2, 3)), "square"),
                                      (np.array([[np.nan]]), "NaN"),
                                      ("x", "real matrix")])
def test_growth_refuses_bad_input(A, match):
    with pytest.raises(InvalidParameterError, match=match):
        expm_error_growth(A)
