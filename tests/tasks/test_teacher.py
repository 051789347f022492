"""Teacher RNN targets: construction, exactness of the linear teacher, RK4 order, limits."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate

from rnnmem.errors import InvalidParameterError, NonFiniteError, ShapeError
from rnnmem.numerics.tolerances import tolerance
from rnnmem.tasks import (causal_convolve_fft, make_teacher, make_teacher_dataset,
                          random_hurwitz)


def _order(xs, errs):
    return float(np.polyfit(np.log(xs), np.log(errs), 1)[0])


@settings(max_examples=20)
@given(seed=st.integers(0, 2**31), hidden=st.integers(1, 12),
       abscissa=st.floats(-3.0, -0.01), memory=st.sampled_from(["exponential", "multiscale"]))
def test_random_hurwitz_abscissa_and_normality(seed, hidden, abscissa, memory):
    W = random_hurwitz(np.random.default_rng(seed), hidden, abscissa=abscissa, memory=memory,
                       decades=2.0)
    lam = np.linalg.eigvals(W)
    scale = float(np.linalg.norm(W, 2))
    tol = tolerance(n_ops=hidden, scale=scale)  # normal W: eigenvalues are well conditioned
    assert abs(np.max(lam.real) - abscissa) <= tol.atol
    tol2 = tolerance(n_ops=hidden, scale=scale**2)  # entries of W W^T are O(||W||^2)
    assert tol2.allclose(W @ W.T, W.T @ W)  # normal
    # symmetric part negative definite with largest eigenvalue = abscissa
    assert np.max(np.linalg.eigvalsh((W + W.T) / 2)) <= abscissa + tol.atol
    top = -abscissa * (2.0 if memory == "exponential" else 100.0)
    assert np.min(lam.real) >= -top - tol.atol


def test_linear_teacher_is_a_linear_functional():
    """The ZOH recurrence output equals the causal convolution with the weights
    w_j = int_{j dt}^{(j+1) dt} c^T e^{Ws} U ds, checked against quadrature of kernel()."""
    te = make_teacher("linear", hidden=6, dt=0.4, seed=3, input_dim=2)
    T = 50
    x = np.random.default_rng(0).standard_normal((3, T, 2))
    y = te.run(x)
    w = te.kernel_weights(T)  # (T, d)
    conv = sum(causal_convolve_fft(w[:, i], x[..., i]) for i in range(2))
    tol = tolerance(n_ops=T, scale=float(np.sum(np.abs(w)) * np.max(np.abs(x))))
    assert tol.allclose(y[..., 0], conv), tol.max_violation(y[..., 0], conv)
    for j in (0, 1, 7, 30):
        ref, err = integrate.quad_vec(te.kernel, j * 0.4, (j + 1) * 0.4, epsabs=1e-14,
                                      epsrel=1e-12)
        assert np.all(np.abs(w[j] - ref[0]) <= err + tolerance(n_ops=j + 1, scale=0.4).atol)
    ds = make_teacher_dataset("linear", n_samples=2, length=T, dt=0.4, seed=3, hidden=6,
                              input_dim=2)
    assert ds.info["teacher"].W.shape == (6, 6) and np.array_equal(ds.info["teacher"].W, te.W)
    assert ds.error_bound <= tolerance(n_ops=T, scale=float(np.sum(np.abs(w)))
                                       * float(np.max(np.abs(ds.inputs)))).atol


def test_linear_memory_is_l1_norm_of_kernel():
    te = make_teacher("linear", hidden=5, dt=1.0, seed=1, input_dim=3, memory="multiscale")
    s = np.linspace(0.0, 30.0, 31)
    M = te.memory(s)
    K = te.kernel(s)
    assert K.shape == (31, 3)
    tol = tolerance(n_ops=5, scale=float(np.max(M)))
    assert tol.allclose(M, np.abs(K).sum(axis=1))
    # the slowest rate is pinned to the default abscissa -0.1
    assert te.spectral_abscissa == pytest.approx(-0.1, abs=tolerance(scale=1.0).atol)


def test_tanh_rk4_converges_at_order_four():
    te = make_teacher("tanh", hidden=6, dt=0.5, seed=2)
    x = np.random.default_rng(1).standard_normal((2, 12, 1))
    ref = te.run(x, substeps=128)
    subs = np.array([2, 4, 8, 16])
    errs = [np.max(np.abs(te.run(x, substeps=int(s)) - ref)) for s in subs]
    slope = _order(1.0 / subs, errs)
    assert abs(slope - 4.0) < 0.3, slope
    # the attached (doubled) Richardson estimate bounds the actual error, without being
    # loose: asymptotically it is 2x the error
    ds = make_teacher_dataset("tanh", n_samples=2, length=12, dt=0.5, seed=2, hidden=6,
                              substeps=4)
    actual = np.max(np.abs(ds.outputs - te.run(ds.inputs, substeps=128)))
    assert actual <= ds.error_bound <= 3 * actual


def test_tanh_teacher_linearises_to_linear_teacher():
    """tanh(z) = z - z^3/3 + ...: y_tanh(eps x)/eps - y_lin(x) = O(eps^2)."""
    kw = dict(hidden=5, dt=0.2, seed=4)
    th, lin = make_teacher("tanh", substeps=8, **kw), make_teacher("linear", **kw)
    assert np.array_equal(th.W, lin.W)
    x = np.random.default_rng(2).standard_normal((2, 20, 1))
    y_lin = lin.run(x)
    eps = np.array([0.2, 0.1, 0.05, 0.025])
    errs = [np.max(np.abs(th.run(e * x) / e - y_lin)) for e in eps]
    assert abs(_order(eps, errs) - 2.0) < 0.2
    assert th.linearised_memory([0.0, 1.0]).shape == (2,)
    with pytest.raises(InvalidParameterError, match="no closed form"):
        th.memory([1.0])


def test_seeds_and_teacher_independent_of_sample_count():
    a = make_teacher_dataset("linear", n_samples=3, length=20, dt=1.0, seed=5, hidden=4)
    b = make_teacher_dataset("linear", n_samples=5, length=20, dt=1.0, seed=5, hidden=4)
    c = make_teacher_dataset("linear", n_samples=3, length=20, dt=1.0, seed=6, hidden=4)
    assert np.array_equal(a.info["teacher"].W, b.info["teacher"].W)
    assert np.array_equal(a.inputs, b.inputs[:3]) and np.array_equal(a.outputs, b.outputs[:3])
    assert not np.array_equal(a.info["teacher"].W, c.info["teacher"].W)
    assert a.outputs.shape == (3, 20, 1)


@pytest.mark.parametrize("kwargs, exc", [
    (dict(kind="gru"), InvalidParameterError),
    (dict(abscissa=0.0), InvalidParameterError),
    (dict(abscissa=float("nan")), NonFiniteError),
    (dict(hidden=0), InvalidParameterError),
    (dict(memory="power"), InvalidParameterError),
    (dict(dt=-0.1), InvalidParameterError),
    (dict(substeps=0), InvalidParameterError),
    (dict(max_frequency=-1.0), InvalidParameterError),
    (dict(input="brown"), InvalidParameterError),
])
def test_bad_arguments_raise(kwargs, exc):
    args = dict(kind="linear", n_samples=2, length=4, dt=0.5, seed=0, hidden=3)
    args.update(kwargs)
    kind = args.pop("kind")
    with pytest.raises(exc):
        make_teacher_dataset(kind, **args)


def test_bad_inputs_raise():
    te = make_teacher("linear", hidden=3, input_dim=2)
    with pytest.raises(ShapeError):
        te.run(np.zeros((2, 5, 1)))
    with pytest.raises(NonFiniteError):
        te.run(np.full((1, 5, 2), np.nan))
    with pytest.raises(InvalidParameterError):
        te.kernel([-1.0])
