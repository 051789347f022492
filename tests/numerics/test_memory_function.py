"""The black-box memory-function estimator (Wang, Li & Li, ICLR 2024, Def. 3.1)."""

import numpy as np
import pytest
from hypothesis import given, settings

from rnnmem.errors import InvalidParameterError, NonFiniteError, ShapeError
from rnnmem.numerics import (eigenvector_condition, linear_memory, memory_function,
                             probe_directions, solve_linear, tolerance)
from rnnmem.testing import strategies as rst

T_EVAL = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0])
DTS = np.array([0.1, 0.05, 0.025, 0.0125])
ORDER = {"forward": 1, "central": 2}
#: accepted deviation of a fitted convergence slope from the theoretical order
SLOPE_SLACK = 0.2


def _system(seed, n=3, d=2, p=None):
    rng = np.random.default_rng(seed)
    W = -np.eye(n) + 0.5 * rng.standard_normal((n, n))
    W -= max(0.0, np.linalg.eigvals(W).real.max() + 0.3) * np.eye(n)  # keep it Hurwitz
    U = rng.standard_normal((n, d))
    c = rng.standard_normal(n) if p is None else rng.standard_normal((p, n))
    return W, U, c


def _slope(dts, errs):
    return np.polyfit(np.log(dts), np.log(errs), 1)[0]


@pytest.mark.parametrize("derivative", ["forward", "central"])
@pytest.mark.parametrize("variant", ["heaviside", "impulse", "reversed"])
@pytest.mark.parametrize("seed", [0, 1])
def test_converges_to_the_closed_form_at_the_expected_order(derivative, variant, seed):
    W, U, c = _system(seed)
    exact = linear_memory(W, U, c, T_EVAL)
    errs = []
    for dt in DTS:
        est = memory_function(lambda x, dt=dt: solve_linear(W, U, c, x, dt), T_EVAL, dt=dt,
                              input_dim=U.shape[1], variant=variant, derivative=derivative)
        errs.append(np.abs(est - exact).max())
    assert abs(_slope(DTS, errs) - ORDER[derivative]) < SLOPE_SLACK, errs


def test_nonlinear_closed_form_converges_at_the_expected_order():
    # y = tanh(z), dz/dt = -a z + u x: |dy/dt| = sech^2(z) |u| e^{-at} with z = u(1-e^{-at})/a
    a, u = 0.7, 1.3
    z = u * (1 - np.exp(-a * T_EVAL)) / a
    exact = np.abs(u) * np.exp(-a * T_EVAL) / np.cosh(z) ** 2
    for derivative, order in ORDER.items():
        errs = []
        for dt in DTS:
            def system(x, dt=dt):
                return np.tanh(solve_linear([[-a]], [[u]], [1.0], x, dt))

            est = memory_function(system, T_EVAL, dt=dt, input_dim=1, derivative=derivative)
            errs.append(np.abs(est - exact).max())
        assert abs(_slope(DTS, errs) - order) < SLOPE_SLACK, (derivative, errs)


@settings(max_examples=15)
@given(rst.linear_systems(max_n=3, max_input_dim=3))
def test_variants_coincide_for_linear_time_invariant_systems(system):
    W, U, c = system
    dt = 0.1
    d = U.shape[1]

    def f(x):
        return solve_linear(W, U, c, x, dt)

    t = dt * np.arange(0, 21, 4)
    heav = memory_function(f, t, dt=dt, input_dim=d)
    scale = np.linalg.norm(c) * np.linalg.norm(U) * max(1.0, np.linalg.norm(W, 2))
    # a difference of two outputs divided by dt: the rounding of one output, amplified 1/dt
    tol = tolerance("float64", n_ops=len(t) * W.shape[0],
                    cond=1 + np.linalg.norm(W, 2) * t.max(), scale=scale / dt)
    for variant in ("impulse", "reversed"):
        other = memory_function(f, t, dt=dt, input_dim=d, variant=variant)
        assert tol.allclose(other, heav), (variant, tol.max_violation(other, heav))


def test_sign_vectors_make_the_supremum_exact_for_linear_systems():
    # On the zoh-exact system the forward estimate is ||c^T A^j B||_1 / dt exactly
    W, U, c = _system(3, n=3, d=4)
    dt = 0.05
    from rnnmem.numerics import discretise, linear_memory_discrete

    A, B = discretise(W, U, dt, "zoh")
    k = np.arange(0, 30, 3)
    expected = linear_memory_discrete(A, B, c, k) / dt
    est = memory_function(lambda x: solve_linear(W, U, c, x, dt), dt * k, dt=dt, input_dim=4)
    tol = tolerance("float64", n_ops=30 * 3, cond=eigenvector_condition(W),
                    scale=np.abs(c) @ np.abs(U).sum(1) / dt)
    assert tol.allclose(est, expected), tol.max_violation(est, expected)
    assert probe_directions(4).shape == (16, 4)


def test_random_directions_bound_the_supremum_from_below():
    W, U, c = _system(4, n=2, d=12)
    dt = 0.05
    k = np.array([0, 10, 20])
    f = lambda x: solve_linear(W, U, c, x, dt)  # noqa: E731
    est = memory_function(f, dt * k, dt=dt, input_dim=12, n_directions=64, rng=1)
    # the supremum over the whole cube of the forward estimate is ||c^T A^k B||_1 / dt
    from rnnmem.numerics import discretise, linear_memory_discrete

    A, B = discretise(W, U, dt, "zoh")
    sup = linear_memory_discrete(A, B, c, k) / dt
    tol = tolerance("float64", n_ops=20 * 12, cond=eigenvector_condition(W), scale=sup.max())
    assert np.all(est <= sup + tol.atol)
    assert np.all(est > 0)
    again = memory_function(f, dt * k, dt=dt, input_dim=12, n_directions=64, rng=1)
    np.testing.assert_array_equal(est, again)  # reproducible with a seed
    dirs = probe_directions(12, n_directions=64, rng=1)
    assert dirs.shape == (64, 12)
    np.testing.assert_array_equal(np.abs(dirs).max(axis=1), np.ones(64))


def test_reversed_reads_the_kernel_row_at_the_final_time():
    # a linear time-varying system y_k = sum_{m <= k} K[k, m] x_m
    rng = np.random.default_rng(5)
    L, dt = 20, 0.1
    K = np.tril(rng.standard_normal((L, L)))

    def system(x):  # (B, T, 1) -> (B, T, 1), T <= L
        T = x.shape[1]
        return np.einsum("km,bmd->bkd", K[:T, :T], x)

    t = dt * np.arange(6)
    est = memory_function(system, t, dt=dt, input_dim=1, variant="reversed", horizon=L)
    expected = np.abs(K[L - 1, L - 1 - np.arange(6)]) / dt
    tol = tolerance("float64", n_ops=L, scale=np.abs(K).max() / dt)
    assert tol.allclose(est, expected), tol.max_violation(est, expected)
    heav = memory_function(system, t, dt=dt, input_dim=1)
    assert not tol.allclose(heav, expected)  # the Heaviside variant reads other entries


def test_baseline_removes_an_input_independent_drift():
    W, U, c = _system(6, n=2, d=1)
    dt = 0.05
    t = np.array([0.0, 0.4, 1.2])

    def biased(x):  # output + a transient that does not depend on the input
        k = np.arange(x.shape[1])
        return solve_linear(W, U, c, x, dt) + 3.0 * np.exp(-dt * (k + 1))[None, :, None]

    plain = lambda x: solve_linear(W, U, c, x, dt)  # noqa: E731
    ref = memory_function(plain, t, dt=dt, input_dim=1)
    with_base = memory_function(biased, t, dt=dt, input_dim=1, baseline=True)
    without = memory_function(biased, t, dt=dt, input_dim=1)
    tol = tolerance("float64", n_ops=len(t), scale=3.0 / dt)
    assert tol.allclose(with_base, ref), tol.max_violation(with_base, ref)
    assert not tol.allclose(without, ref)


def test_multiple_outputs_and_reductions():
    W, U, C = _system(7, n=3, d=2, p=3)
    dt = 0.05
    f = lambda x: solve_linear(W, U, C, x, dt)  # noqa: E731
    t = np.array([0.0, 0.5, 1.0])
    per = memory_function(f, t, dt=dt, input_dim=2)
    assert per.shape == (3, 3)
    tol = tolerance("float64", n_ops=60, scale=np.abs(per).max())
    for o in range(3):
        single = memory_function(lambda x, o=o: f(x)[..., o:o + 1], t, dt=dt, input_dim=2)
        assert tol.allclose(per[:, o], single)
    mx = memory_function(f, t, dt=dt, input_dim=2, output_reduce="max")
    assert mx.shape == (3,) and tol.allclose(mx, per.max(axis=1))
    nrm = memory_function(f, t, dt=dt, input_dim=2, output_reduce="norm")
    # sup_x ||D(x)||_2 lies between the largest component sup and the norm of the sups
    assert np.all(nrm >= per.max(axis=1) - tol.atol)
    assert np.all(nrm <= np.linalg.norm(per, axis=1) + tol.atol)


def test_one_batched_call_and_unbatched_equivalence():
    W, U, c = _system(8, n=2, d=3)
    dt = 0.1
    calls = []

    def batched(x):
        calls.append(x.shape)
        return solve_linear(W, U, c, x, dt)

    t = np.array([0.0, 0.3, 0.7])
    a = memory_function(batched, t, dt=dt, input_dim=3)
    assert len(calls) == 1 and calls[0][0] == 8  # all 2^3 sign vectors at once
    b = memory_function(lambda x: solve_linear(W, U, c, x, dt), t, dt=dt, input_dim=3,
                        batched=False)
    tol = tolerance("float64", n_ops=10, scale=np.abs(a).max())
    assert tol.allclose(a, b)


def test_off_grid_times_are_interpolated():
    W, U, c = _system(9, n=2, d=1)
    dt = 0.1
    f = lambda x: solve_linear(W, U, c, x, dt)  # noqa: E731
    on = memory_function(f, [0.0, 0.1, 0.2], dt=dt, input_dim=1)
    off = memory_function(f, [0.05, 0.15], dt=dt, input_dim=1)
    tol = tolerance("float64", n_ops=4, scale=on.max())
    assert tol.allclose(off, (on[:-1] + on[1:]) / 2)


def test_bad_inputs():
    f = lambda x: x  # noqa: E731
    with pytest.raises(InvalidParameterError, match="variant"):
        memory_function(f, [0.0], dt=0.1, input_dim=1, variant="echo")
    with pytest.raises(InvalidParameterError, match="derivative"):
        memory_function(f, [0.0], dt=0.1, input_dim=1, derivative="backward")
    with pytest.raises(InvalidParameterError, match="dt"):
        memory_function(f, [0.0], dt=0.0, input_dim=1)
    with pytest.raises(InvalidParameterError, match="t"):
        memory_function(f, [-1.0], dt=0.1, input_dim=1)
    with pytest.raises(InvalidParameterError, match="input_dim"):
        memory_function(f, [0.0], dt=0.1, input_dim=0)
    with pytest.raises(InvalidParameterError, match="output_reduce"):
        memory_function(f, [0.0], dt=0.1, input_dim=1, output_reduce="mean")
    with pytest.raises(ShapeError, match="directions"):
        memory_function(f, [0.0], dt=0.1, input_dim=2, directions=np.ones((3, 3)))
    with pytest.raises(InvalidParameterError, match="non-zero"):
        memory_function(f, [0.0], dt=0.1, input_dim=2, directions=np.zeros((1, 2)))
    with pytest.raises(ShapeError, match="outputs"):
        memory_function(lambda x: x[:, :-1], [0.0], dt=0.1, input_dim=1)
    with pytest.raises(NonFiniteError, match="NaN"):
        memory_function(lambda x: x * np.nan, [0.0], dt=0.1, input_dim=1)
    with pytest.raises(InvalidParameterError, match="horizon"):
        memory_function(f, [0.0, 1.0], dt=0.1, input_dim=1, variant="reversed", horizon=3)
    with pytest.raises(InvalidParameterError, match="rng"):
        memory_function(f, [0.0], dt=0.1, input_dim=1, n_directions=4, rng="seed")
