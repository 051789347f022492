"""Closed-form memory functions (sympy) against the numerics layer and Matrix.exp."""

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings, strategies as st

from rnnmem.errors import InvalidParameterError, ShapeError
from rnnmem.numerics import (eigenvector_condition, linear_memory, linear_memory_discrete,
                             tolerance)
from rnnmem.theory import k as K, t as T
from rnnmem.theory.memory import (diagonal_ssm_memory, discrete_linear_memory,
                                  exponential_form, linear_rnn_memory,
                                  linear_rnn_memory_reference, memory_numpy)

T_GRID = np.linspace(0.0, 6.0, 13)
K_GRID = np.array([0, 1, 2, 3, 5, 8, 13, 21, 34])

# ---- exact systems with known spectra: W = P J P^{-1}, P unimodular ---------------------
RATES = [sp.Rational(1, 2), sp.Integer(1), sp.Rational(3, 2), sp.Integer(2), sp.Rational(5, 2)]
MODULI = [sp.Integer(0), sp.Rational(1, 3), sp.Rational(1, 2), sp.Rational(2, 3),
          sp.Rational(-1, 2), sp.Rational(-3, 4)]
small_ints = st.integers(-2, 2)


@st.composite
def unimodular(draw, n):
    """Integer matrices with determinant 1 (so the inverse is an integer matrix too)."""
    L, R = sp.eye(n), sp.eye(n)
    for i in range(n):
        for j in range(i):
            L[i, j] = draw(small_ints)
            R[j, i] = draw(small_ints)
    return L * R


@st.composite
def jordan_matrix(draw, n, discrete):
    """Block-diagonal: eigenvalues, a 2x2 rotation block, or a 2x2 Jordan block."""
    J = sp.zeros(n, n)
    i = 0
    while i < n:
        choice = draw(st.sampled_from(["one", "pair", "jordan"] if i + 1 < n else ["one"]))
        if discrete:
            lam = draw(st.sampled_from(MODULI))
        else:
            lam = -draw(st.sampled_from(RATES))
        if choice == "one":
            J[i, i] = lam
            i += 1
        elif choice == "jordan":
            J[i, i] = J[i + 1, i + 1] = lam
            J[i, i + 1] = 1
            i += 2
        else:
            if discrete:  # modulus sqrt(a^2 + b^2) <= 1/sqrt(2)
                a = draw(st.sampled_from([sp.Rational(1, 3), sp.Rational(-1, 2)]))
                b = draw(st.sampled_from([sp.Rational(1, 3), sp.Rational(1, 2)]))
            else:
                a = lam
                b = draw(st.sampled_from([sp.Rational(1, 3), sp.Rational(1, 2), sp.Integer(1)]))
            J[i:i + 2, i:i + 2] = sp.Matrix([[a, -b], [b, a]])
            i += 2
    return J


@st.composite
def exact_systems(draw, max_n=4, discrete=False):
    n = draw(st.integers(1, max_n))
    d = draw(st.integers(1, 2))
    P = draw(unimodular(n))
    W = P * draw(jordan_matrix(n, discrete)) * P.inv()
    U = sp.Matrix(n, d, lambda i, j: draw(small_ints))
    c = sp.Matrix(n, 1, lambda i, j: draw(small_ints))
    if all(v == 0 for v in U) or all(v == 0 for v in c):
        U[0, 0], c[0] = 1, 1
    return W, U, c


def _np(M):
    return np.array(sp.Matrix(M).tolist(), dtype=float)


def _continuous_tol(Wf, Uf, cf, t):
    kappa = eigenvector_condition(Wf)
    cond = max(kappa if kappa <= 1e6 else 1.0, 1 + np.linalg.norm(Wf, 2) * t.max())
    from scipy.linalg import expm

    # largest ||e^{Ws}||_2 on the (uniform) grid t: one expm and its powers
    E, P, growth = expm(Wf * (t[1] - t[0])), np.eye(Wf.shape[0]), 1.0
    for _ in range(len(t) - 1):
        P = P @ E
        growth = max(growth, np.linalg.norm(P, 2))
    scale = np.linalg.norm(cf) * np.linalg.norm(Uf) * growth
    return tolerance("float64", n_ops=Wf.shape[0] * len(t), cond=cond, scale=scale)


@settings(max_examples=12)
@given(exact_systems(max_n=4))
def test_closed_form_equals_numerics(system):
    W, U, c = system
    expr = linear_rnn_memory(W, U, c)
    assert expr.free_symbols <= {T}
    got = memory_numpy(expr)(T_GRID)
    Wf, Uf, cf = _np(W), _np(U), _np(c)[:, 0]
    num = linear_memory(Wf, Uf, cf, T_GRID)
    tol = _continuous_tol(Wf, Uf, cf, T_GRID)
    assert tol.allclose(got, num), tol.max_violation(got, num)
    # M(0) = ||c^T U||_1, exactly
    assert sp.simplify(expr.subs(T, 0) - sum(abs(v) for v in (c.T * U))) == 0


def test_jordan_block_is_t_exp():
    W = sp.Matrix([[-2, 1], [0, -2]])
    expr = linear_rnn_memory(W, [[0], [1]], [1, 0])
    assert sp.simplify(expr - T * sp.exp(-2 * T)) == 0


@pytest.mark.parametrize("W, U, c", [
    (sp.Matrix([[-1, 2], [-3, -1]]), [[1], [0]], [1, 1]),  # complex pair
    (sp.Matrix([[-1, 1, 0], [0, -1, 1], [0, 0, -1]]), [[0, 1], [0, 0], [1, 0]], [1, 0, 2]),
])
def test_jordan_construction_equals_matrix_exp(W, U, c):
    fast = linear_rnn_memory(W, U, c)
    ref = linear_rnn_memory_reference(W, U, c)
    inner_fast = sorted((a.args[0] for a in sp.Add.make_args(fast)), key=sp.default_sort_key)
    inner_ref = sorted((a.args[0] for a in sp.Add.make_args(ref)), key=sp.default_sort_key)
    assert len(inner_fast) == len(inner_ref)
    for a, b in zip(inner_fast, inner_ref):
        # |a| = |b| termwise: a = b or a = -b, symbolically
        assert sp.simplify(a - b) == 0 or sp.simplify(a + b) == 0


@settings(max_examples=10)
@given(st.lists(st.tuples(st.sampled_from(RATES), st.integers(-2, 2)), min_size=1,
                max_size=3),
       st.integers(1, 2), st.data())
def test_diagonal_ssm_closed_form(spec, d, data):
    lam = [-r + sp.I * sp.Rational(b, 2) for r, b in spec]
    n = len(lam)
    U = sp.Matrix(n, d, lambda i, j: data.draw(small_ints))
    c = sp.Matrix(n, 1, lambda i, j: data.draw(small_ints))
    lamf = np.array([complex(v) for v in lam])
    Uf, cf = _np(U), _np(c)[:, 0]
    resp = np.einsum("ln,n,nd->ld", np.exp(np.outer(T_GRID, lamf)), cf, Uf)  # (L, d)
    scale = np.abs(cf) @ np.abs(Uf).sum(1) + 1.0
    tol = tolerance("float64", n_ops=n * d, scale=scale)
    for output, expected in (("complex", np.abs(resp).sum(-1)),
                             ("real", np.abs(resp.real).sum(-1))):
        got = memory_numpy(diagonal_ssm_memory(lam, U, c, output=output))(T_GRID)
        assert np.isrealobj(got)
        assert tol.allclose(got, expected), (output, tol.max_violation(got, expected))
    if all(b == 0 for _, b in spec):  # real spectrum: the numerics linear_memory agrees
        num = linear_memory(np.diag(lamf.real), Uf, cf, T_GRID)
        got = memory_numpy(diagonal_ssm_memory(lam, U, c))(T_GRID)
        assert tol.allclose(got, num)


@settings(max_examples=12)
@given(exact_systems(max_n=4, discrete=True))
def test_discrete_closed_form_equals_numerics(system):
    A, B, c = system
    expr = discrete_linear_memory(A, B, c)
    assert expr.free_symbols <= {K}
    got = memory_numpy(expr)(K_GRID.astype(float))
    Af, Bf, cf = _np(A), _np(B), _np(c)[:, 0]
    num = linear_memory_discrete(Af, Bf, cf, K_GRID)
    kappa = eigenvector_condition(Af)
    growth = max(np.linalg.norm(np.linalg.matrix_power(Af, int(k)), 2) for k in K_GRID)
    scale = np.linalg.norm(cf) * np.linalg.norm(Bf) * growth
    # a rounding error made at step i of a chain of products is amplified by A^(k-i)
    cond = max(kappa if kappa <= 1e6 else 1.0, np.linalg.norm(Af, 2) * growth)
    tol = tolerance("float64", n_ops=int(K_GRID.max()) * Af.shape[0], cond=cond, scale=scale)
    assert tol.allclose(got, num), tol.max_violation(got, num)


def test_discrete_special_cases():
    # nilpotent: c^T N^k b = [k == 1]
    e = discrete_linear_memory(sp.Matrix([[0, 1], [0, 0]]), [0, 1], [1, 0])
    assert [e.subs(K, v) for v in range(4)] == [0, 1, 0, 0]
    # Jordan block with a negative eigenvalue: |k (-1/2)^(k-1)|
    e = discrete_linear_memory(sp.Matrix([[sp.Rational(-1, 2), 1], [0, sp.Rational(-1, 2)]]),
                               [0, 1], [1, 0])
    expected = [0] + [abs(v * sp.Rational(-1, 2) ** (v - 1)) for v in range(1, 6)]
    assert [e.subs(K, v) for v in range(6)] == expected


def test_generated_callable_stays_finite_for_long_horizons():
    # (2/3)^k as 2**k/3**k would be inf/inf at k = 1000; exponential_form avoids that
    A = sp.Matrix([[sp.Rational(2, 3), 0], [0, sp.Rational(1, 2)]])
    expr = discrete_linear_memory(A, [[1], [1]], [1, 1])
    assert exponential_form(expr, K).has(sp.exp)
    ks = np.array([0.0, 10.0, 1000.0])
    got = memory_numpy(expr)(ks)
    expected = (2 / 3) ** ks + 0.5**ks
    assert np.all(np.isfinite(got))
    assert tolerance("float64", n_ops=1000).allclose(got, expected)


def test_float_inputs_are_read_as_simple_rationals():
    e = linear_rnn_memory([[-0.5]], [[0.25]], [2.0])
    assert e == sp.exp(-T / 2) / 2


def test_matrix_readout_gives_one_expression_per_output():
    W = sp.Matrix([[-1, 0], [0, -2]])
    M = linear_rnn_memory(W, [[1], [1]], sp.Matrix([[1, 0], [0, 1], [1, 1]]))
    assert M.shape == (3, 1)
    assert sp.simplify(M[2] - (sp.exp(-T) + sp.exp(-2 * T))) == 0


def test_bad_inputs():
    with pytest.raises(ShapeError, match="square"):
        linear_rnn_memory([[1, 2, 3], [4, 5, 6]], [[1], [1]], [1, 1])
    with pytest.raises(ShapeError, match="U"):
        linear_rnn_memory([[-1, 0], [0, -1]], [[1], [1], [1]], [1, 1])
    with pytest.raises(ShapeError, match="c"):
        linear_rnn_memory([[-1, 0], [0, -1]], [[1], [1]], [1, 1, 1])
    with pytest.raises(InvalidParameterError, match="numeric"):
        linear_rnn_memory([[sp.Symbol("a")]], [[1]], [1])
    with pytest.raises(InvalidParameterError, match="output"):
        diagonal_ssm_memory([-1], [[1]], [1], output="imag")
