"""The public hypothesis strategies keep their promises."""

import importlib.util

import numpy as np
import pytest
from hypothesis import Phase, find, given, settings, strategies as st
from scipy.linalg import expm

from rnnmem.errors import InvalidParameterError, UnknownNameError
from rnnmem.numerics import tolerance
from rnnmem.testing import strategies as rst
from rnnmem.theory import PARAMETERISATIONS

TINY = np.finfo(float).tiny


def _well_formed(a):
    a = np.asarray(a)
    assert np.all(np.isfinite(a))
    mags = np.abs(a)
    assert np.all((mags == 0) | (mags >= TINY)), "subnormal entry"


def _eig_error(W, kind):
    """Bound on the numerical error of eigvals(W): u ||W|| kappa for a diagonalisable
    matrix, (u ||W|| kappa(P))^(1/m) for a Jordan block of size m <= n."""
    n = W.shape[0]
    kappa = np.linalg.cond(W)  # inf for a singular draw (e.g. the zero contraction),
    # whose eigenvalue errors do not grow with it: tolerance() refuses an infinite cond
    base = tolerance("float64", n_ops=n, cond=kappa if np.isfinite(kappa) else 1.0).rtol
    scale = max(1.0, np.linalg.norm(W, 2))
    if kind == "jordan":
        return (base * scale) ** (1.0 / n) * scale
    return base * scale * max(1.0, rst.conditioning(W) if np.isfinite(rst.conditioning(W))
                              else 1.0)


@pytest.mark.parametrize("kind", rst.HURWITZ_KINDS)
@settings(max_examples=20)
@given(data=st.data())
def test_hurwitz_matrices(kind, data):
    margin = data.draw(st.sampled_from([0.05, 0.1, 0.5]))
    W = data.draw(rst.hurwitz_matrices(max_n=4, margin=margin, kind=kind))
    _well_formed(W)
    assert W.ndim == 2 and W.shape[0] == W.shape[1] and 1 <= W.shape[0] <= 4
    if kind == "jordan":
        assert W.shape[0] >= 2
    top = np.linalg.eigvals(W).real.max()
    assert top <= -margin + _eig_error(W, kind), (top, margin)
    if kind == "dissipative":  # symmetric part <= -margin: ||e^{Wt}|| <= e^{-margin t}
        sym = np.linalg.eigvalsh((W + W.T) / 2).max()
        assert sym <= -margin + tolerance("float64", n_ops=4, scale=np.abs(W).max()).atol


@pytest.mark.parametrize("kind", rst.SCHUR_KINDS)
@settings(max_examples=20)
@given(data=st.data())
def test_schur_stable_matrices(kind, data):
    margin = data.draw(st.sampled_from([0.05, 0.1, 0.5]))
    A = data.draw(rst.schur_stable_matrices(max_n=4, margin=margin, kind=kind))
    _well_formed(A)
    rho = np.abs(np.linalg.eigvals(A)).max()
    assert rho <= 1 - margin + _eig_error(A, kind)
    if kind == "contraction":
        assert np.linalg.norm(A, 2) <= (1 - margin) * (1 + tolerance("float64", n_ops=4).rtol)


@given(rst.linear_systems(n=3, input_dim=2), rst.linear_systems(max_n=2, time="discrete"))
def test_linear_systems_shapes(cont, disc):
    W, U, c = cont
    assert W.shape == (3, 3) and U.shape == (3, 2) and c.shape == (3,)
    assert np.any(U != 0) and np.any(c != 0)
    assert np.abs(U).max() <= 1 and np.abs(c).max() <= 1
    for a in (W, U, c):
        _well_formed(a)
    A, B, c2 = disc
    assert A.shape[0] == B.shape[0] == c2.shape[0] <= 2
    assert np.abs(np.linalg.eigvals(A)).max() < 1


@given(rst.diagonal_ssms(max_n=5, margin=0.2),
       rst.diagonal_ssms(max_n=5, margin=0.2, time="discrete"),
       rst.diagonal_ssms(n=2, complex_eigenvalues=False))
def test_diagonal_ssms(cont, disc, real):
    lam, U, c = cont
    assert np.iscomplexobj(lam) and lam.real.max() <= -0.2
    assert U.shape[0] == c.shape[0] == lam.shape[0]
    lam_d, _, _ = disc
    assert np.abs(lam_d).max() <= 0.8
    lam_r, U_r, _ = real
    assert not np.iscomplexobj(lam_r) and lam_r.shape == (2,) and lam_r.max() <= -0.1
    for a in (lam.real, lam.imag, lam_d.real, lam_d.imag, U, c, U_r):
        _well_formed(a)


def test_nonnormal_kinds_reach_transient_growth_and_defective_matrices():
    # "nonnormal" can give ||e^{Wt}|| > 1 although every eigenvalue is stable
    quick = settings(max_examples=500, database=None, phases=[Phase.generate])  # no shrinking
    W = find(rst.hurwitz_matrices(n=2, kind="nonnormal"),
             lambda W: np.linalg.norm(expm(W * 0.5), 2) > 1.2, settings=quick)
    assert np.linalg.eigvals(W).real.max() < 0
    # "jordan" gives (numerically) defective matrices
    J = find(rst.hurwitz_matrices(n=3, kind="jordan"), lambda W: rst.conditioning(W) > 1e6,
             settings=quick)
    assert rst.conditioning(J) > 1e6


def test_conditioning_of_normal_matrices_is_one():
    Q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((4, 4)))
    W = Q @ np.diag([-1.0, -2.0, -3.0, -4.0]) @ Q.T
    assert tolerance("float64", n_ops=16).allclose(rst.conditioning(W), 1.0)


@given(rst.parameterisation_names(time="continuous"), rst.parameterisation_names("discrete"),
       rst.parameterisation_names())
def test_parameterisation_names(cont, disc, anyname):
    assert PARAMETERISATIONS[cont].time == "continuous"
    assert PARAMETERISATIONS[disc].time == "discrete"
    assert anyname in PARAMETERISATIONS


@pytest.mark.skipif(importlib.util.find_spec("rnnmem.theory.targets") is None,
                    reason="rnnmem.theory.targets (TARGETS registry) is not available yet")
@settings(max_examples=10)
@given(data=st.data())
def test_target_memory_kernels(data):
    from rnnmem.theory.targets import TARGETS

    target = data.draw(rst.target_memory_kernels())
    assert TARGETS[target.name] is target
    assert target.expr is not None
    vals = np.asarray(target.numpy(np.linspace(0.0, 5.0, 11)))
    assert vals.shape == (11,) and np.all(np.isfinite(vals))
    name = sorted(TARGETS)[0]
    assert data.draw(rst.target_memory_kernels(names=[name])).name == name


def test_bad_arguments_fail_when_the_strategy_is_built():
    with pytest.raises(InvalidParameterError, match="margin"):
        rst.hurwitz_matrices(margin=0.0)
    with pytest.raises(InvalidParameterError, match="margin"):
        rst.schur_stable_matrices(margin=1.0)
    with pytest.raises(InvalidParameterError, match="kind"):
        rst.hurwitz_matrices(kind="circulant")
    with pytest.raises(InvalidParameterError, match="Jordan"):
        rst.hurwitz_matrices(n=1, kind="jordan")
    with pytest.raises(InvalidParameterError, match="max_n"):
        rst.linear_systems(max_n=0)
    with pytest.raises(InvalidParameterError, match="input_dim"):
        rst.diagonal_ssms(input_dim=0)
    with pytest.raises(InvalidParameterError, match="time"):
        rst.linear_systems(time="hybrid")
    with pytest.raises(InvalidParameterError, match="time"):
        rst.parameterisation_names(time="hybrid")
    if importlib.util.find_spec("rnnmem.theory.targets") is not None:
        with pytest.raises(UnknownNameError):
            rst.target_memory_kernels(names=["no-such-target"])
