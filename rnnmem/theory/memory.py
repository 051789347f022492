"""Memory functions of linear recurrent systems in closed form (sympy only).

Wang, Li & Li (ICLR 2024, Def. 3.1) define the memory function through the Heaviside
response; for a linear system it is the dual norm of the impulse response:

* continuous time, :math:`\\dot h = W h + U x,\\ y = c^\\top h`:

  .. math:: M(t) = \\|c^\\top e^{W t} U\\|_1 = \\sum_i \\Big|\\big(c^\\top e^{Wt} U\\big)_i\\Big|;

* a diagonal state-space model, :math:`W = \\operatorname{diag}(\\lambda)`:

  .. math:: M(t) = \\sum_i \\Big|\\sum_j c_j\\, e^{\\lambda_j t}\\, U_{j i}\\Big|;

* discrete time, :math:`h_{k+1} = A h_k + B x_k,\\ y_k = c^\\top h_k`:

  .. math:: M_k = \\|c^\\top A^k B\\|_1 .

The matrix functions are built from the Jordan form :math:`W = P J P^{-1}`: on a block of
size :math:`m` with eigenvalue :math:`\\lambda`, :math:`e^{Jt}` has entries
:math:`e^{\\lambda t} t^s / s!` on its :math:`s`-th superdiagonal and :math:`J^k` has
:math:`\\binom{k}{s} \\lambda^{k-s}`. This is what :meth:`sympy.Matrix.exp` does internally;
building only the row :math:`(c^\\top P)\\, e^{Jt}\\, (P^{-1} U)` and expanding it into real
exponentials (and sines and cosines for complex pairs) is several times faster and gives
an expression that stays finite when evaluated (no :math:`e^{+t}` factors). The reference
:func:`linear_rnn_memory_reference` uses ``Matrix.exp`` and the two are tested equal.

Inputs are exact: integers, rationals or sympy numbers; Python floats are converted with
:func:`sympy.nsimplify` (so ``0.1`` becomes ``1/10``). The eigenvalues must be expressible
in radicals for :meth:`sympy.Matrix.jordan_form` (e.g. build ``W = P J P^{-1}`` with a
rational ``J``).
"""

from __future__ import annotations

from typing import Callable

import sympy as sp
from sympy.matrices.exceptions import MatrixError

from ..errors import DerivationError, InvalidParameterError, ShapeError
from . import _symbols as S
from .codegen import generate

__all__ = [
    "linear_rnn_memory",
    "linear_rnn_memory_reference",
    "diagonal_ssm_memory",
    "discrete_linear_memory",
    "memory_numpy",
    "exponential_form",
]


def _exact(x, name: str) -> sp.Expr:
    v = sp.sympify(x)
    if v.has(sp.Float):
        v = sp.nsimplify(v, rational=True)
    if v.free_symbols:
        raise InvalidParameterError(f"{name} must be numeric, got symbols {v.free_symbols}")
    return v


def _matrix(M, name: str) -> sp.Matrix:
    try:
        if hasattr(M, "tolist"):  # numpy arrays
            M = M.tolist()
        mat = sp.Matrix(M)
    except (TypeError, ValueError, sp.SympifyError) as exc:
        raise ShapeError(f"{name} cannot be read as a matrix: {exc}") from None
    return mat.applyfunc(lambda v: _exact(v, name))


def _square(W, name: str) -> sp.Matrix:
    W = _matrix(W, name)
    if W.rows != W.cols or W.rows == 0:
        raise ShapeError(f"{name} must be a non-empty square matrix, got shape {W.shape}")
    return W


def _inputs(U, n: int, name: str) -> sp.Matrix:
    U = _matrix(U, name)
    if U.rows != n or U.cols == 0:
        raise ShapeError(f"{name} must have shape ({n}, d), got {U.shape}")
    return U


def _readout(c, n: int, name: str = "c") -> tuple[sp.Matrix, bool]:
    """(p, N) readout and whether it was a vector."""
    C = _matrix(c, name)
    if C.shape == (n, 1) or C.shape == (1, n):
        return C.reshape(1, n), True
    if C.cols != n:
        raise ShapeError(f"{name} must have shape (N,) = ({n},) or (p, {n}), got {C.shape}")
    return C, False


def _is_real_matrix(*mats: sp.Matrix) -> bool:
    return all(v.is_real for M in mats for v in M)


def _jordan_blocks(J: sp.Matrix) -> list[tuple[int, int, sp.Expr]]:
    """(start, size, eigenvalue) of each Jordan block of J."""
    blocks, i, n = [], 0, J.rows
    while i < n:
        j = i
        while j + 1 < n and J[j, j + 1] == 1:
            j += 1
        blocks.append((i, j - i + 1, J[i, i]))
        i = j + 1
    return blocks


def _jordan(W: sp.Matrix, name: str) -> tuple[sp.Matrix, sp.Matrix]:
    try:
        return W.jordan_form()
    except (NotImplementedError, ValueError, MatrixError) as exc:  # pragma: no cover
        raise DerivationError(f"sympy could not compute the Jordan form of {name}: {exc}") \
            from None


def _real_form(e: sp.Expr) -> sp.Expr:
    """Real part of an expression known to be real (imaginary part cancels exactly)."""
    e = sp.expand(sp.expand_complex(sp.expand(e)))
    re, _ = e.as_real_imag()
    return sp.expand(re)


def _l1(row: sp.Matrix, real: bool, take_real: bool) -> sp.Expr:
    """:math:`\\sum_i |v_i|`; a complex entry's modulus is written
    :math:`\\sqrt{\\operatorname{Re}^2 + \\operatorname{Im}^2}` of its real and imaginary parts."""
    terms = []
    for v in row:
        if real or take_real:
            terms.append(sp.Abs(_real_form(v)))
        else:
            re, im = sp.expand(sp.expand_complex(sp.expand(v))).as_real_imag()
            terms.append(sp.sqrt(sp.expand(re) ** 2 + sp.expand(im) ** 2))
    return sp.Add(*terms)


def _assemble(C: sp.Matrix, vector: bool, make_row: Callable, real: bool,
              take_real: bool = False):
    outs = [_l1(make_row(C[r, :]), real, take_real) for r in range(C.rows)]
    return outs[0] if vector else sp.Matrix(outs)


def _system(W, U, c, names: tuple[str, str]):
    """Exact ``(W (N, N), U (N, d), C (p, N), vector)``; ``names`` of W and U."""
    W = _square(W, names[0])
    n = W.rows
    U = _inputs(U, n, names[1])
    C, vector = _readout(c, n)
    return W, U, C, vector


def _jordan_memory(W: sp.Matrix, U: sp.Matrix, C: sp.Matrix, vector: bool, name: str,
                   entry: Callable):
    """:math:`\\|c^\\top f(W) U\\|_1` through :math:`f(W) = P f(J) P^{-1}`, where
    ``entry(lam, q)`` is the :math:`q`-th superdiagonal of :math:`f` on a Jordan block with
    eigenvalue ``lam``."""
    P, J = _jordan(W, name)
    n = W.rows
    F = sp.zeros(n, n)
    for start, size, lam in _jordan_blocks(J):
        for r in range(size):
            for s in range(r, size):
                F[start + r, start + s] = entry(lam, s - r)
    right = P.inv() * U  # (N, d)
    real = _is_real_matrix(W, U, C)
    return _assemble(C, vector, lambda row: (row * P) * F * right, real)


def linear_rnn_memory(W, U, c):
    """:math:`M(t) = \\|c^\\top e^{Wt} U\\|_1` as a sympy expression in :data:`rnnmem.theory.t`.

    Parameters
    ----------
    W : (N, N) exact matrix (sympy Matrix, nested lists, or an integer/rational array)
    U : (N, d) exact matrix
    c : (N,) vector, or a (p, N) matrix (then a p x 1 Matrix of expressions is returned)

    Returns
    -------
    sympy expression (or Matrix) in ``t``; real inputs give a real expression written with
    :math:`e^{\\operatorname{Re}\\lambda\\, t}`, :math:`\\cos`, :math:`\\sin` and powers of t.
    """
    W, U, C, vector = _system(W, U, c, ("W", "U"))
    t = S.t
    return _jordan_memory(W, U, C, vector, "W",
                          lambda lam, q: sp.exp(lam * t) * t ** q / sp.factorial(q))


def linear_rnn_memory_reference(W, U, c):
    """Reference for :func:`linear_rnn_memory` through :meth:`sympy.Matrix.exp` (slow)."""
    W, U, C, vector = _system(W, U, c, ("W", "U"))
    expWt = (W * S.t).exp()
    real = _is_real_matrix(W, U, C)
    return _assemble(C, vector, lambda row: row * expWt * U, real)


def diagonal_ssm_memory(lambdas, U, c, *, output: str = "complex"):
    """Memory function of a diagonal SSM, :math:`\\dot h = \\operatorname{diag}(\\lambda) h + Ux`.

    .. math::

        M(t) = \\sum_i \\Big| \\sum_j c_j\\, e^{\\lambda_j t}\\, U_{j i} \\Big|

    Parameters
    ----------
    lambdas : (N,) exact numbers (complex allowed)
    U : (N, d), c : (N,) or (p, N)
    output : {"complex", "real"}
        ``"complex"``: the modulus of the complex impulse response (the formula above);
        ``"real"``: of its real part, for models whose output is
        :math:`\\operatorname{Re}(c^\\top h)` (S4D, LRU). Equal when the spectrum and the
        weights are real, or come in conjugate pairs.
    """
    lam = _matrix(lambdas, "lambdas")
    if 1 not in lam.shape:
        raise ShapeError(f"lambdas must be a vector, got shape {lam.shape}")
    lam = list(lam)
    n = len(lam)
    U = _inputs(U, n, "U")
    C, vector = _readout(c, n)
    if not isinstance(output, str) or output not in ("complex", "real"):
        raise InvalidParameterError(f"output must be 'complex' or 'real', got {output!r}")
    E = sp.diag(*[sp.exp(v * S.t) for v in lam])
    real = all(v.is_real for v in lam) and _is_real_matrix(U, C)
    return _assemble(C, vector, lambda row: row * E * U, real, take_real=output == "real")


def _power(lam: sp.Expr, e: sp.Expr) -> sp.Expr:
    """:math:`\\lambda^{e}` for integer :math:`e \\ge 0` in real/polar form."""
    if lam == 0:
        return sp.Piecewise((1, sp.Eq(e, 0)), (0, True))
    if lam.is_real:
        return lam**e
    r, theta = sp.Abs(lam), sp.arg(lam)
    return r**e * (sp.cos(e * theta) + sp.I * sp.sin(e * theta))


def discrete_linear_memory(A, B, c):
    """:math:`M_k = \\|c^\\top A^k B\\|_1` as a sympy expression in :data:`rnnmem.theory.k`.

    On a Jordan block :math:`J = \\lambda I + N` of size :math:`m`,
    :math:`J^k = \\sum_{s<m} \\binom{k}{s} \\lambda^{k-s} N^s` (with :math:`0^0 = 1`, written as
    a Piecewise for :math:`\\lambda = 0`); complex eigenvalues are written in polar form
    :math:`|\\lambda|^k(\\cos k\\theta + i \\sin k\\theta)` so that the result is real.
    """
    A, B, C, vector = _system(A, B, c, ("A", "B"))
    k = S.k

    def entry(lam, q):
        if lam == 0:
            return sp.Piecewise((1, sp.Eq(k, q)), (0, True))
        return sp.expand_func(sp.binomial(k, q)) * _power(lam, k - q)

    return _jordan_memory(A, B, C, vector, "A", entry)


def exponential_form(expr: sp.Expr, var: sp.Symbol) -> sp.Expr:
    """Rewrite :math:`b^{e(\\text{var})}` (numeric :math:`b > 0`) as :math:`e^{e \\log b}` and
    merge the exponentials of each product.

    An exact identity that keeps generated code finite: sympy writes
    :math:`(2/3)^k` as ``2**k / 3**k``, which overflows to ``inf/inf`` for
    :math:`k \\gtrsim 650`; the rewritten ``exp(k*log(2) - k*log(3))`` does not.
    """
    def to_exp(p):
        return sp.exp(p.exp * sp.log(p.base))

    out = sp.sympify(expr).replace(
        lambda x: x.is_Pow and x.base.is_number and x.base.is_positive is True
        and x.exp.has(var), to_exp)
    return sp.powsimp(out, deep=True, combine="exp")


def memory_numpy(expr, var: sp.Symbol | None = None) -> Callable:
    """A numpy callable for a memory expression, generated by
    :func:`rnnmem.theory.codegen.generate` after :func:`exponential_form` (``var`` defaults
    to ``t``, or to ``k`` when the expression contains ``k`` and not ``t``)."""
    expr = sp.sympify(expr)
    if var is None:
        var = S.k if (S.k in expr.free_symbols and S.t not in expr.free_symbols) else S.t
    return generate(exponential_form(expr, var), [var], "numpy")
