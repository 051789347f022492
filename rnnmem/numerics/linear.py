"""Exact memory functions and solutions of linear recurrent systems (numpy + scipy).

Continuous time (Wang, Li & Li, ICLR 2024, Sec. 3; Li, Han, E & Li, ICLR 2021):

.. math::

    \\frac{dh}{dt} = W h + U x, \\qquad y = c^\\top h, \\qquad h(0) = 0.

For a Heaviside input :math:`x(s) = x\\,\\mathbf 1[s \\ge 0]` the output is
:math:`y(t) = c^\\top \\int_0^t e^{Ws}\\,ds\\, U x`, so
:math:`\\frac{d}{dt} y(t) = c^\\top e^{Wt} U x` and the memory function of Def. 3.1,
:math:`\\sup_{x \\ne 0} |\\dot y(t)| / |x|_\\infty`, is the dual norm

.. math::

    M(t) = \\| c^\\top e^{W t} U \\|_1 .

Discrete time, :math:`h_{k+1} = A h_k + B x_k`, :math:`y_k = c^\\top h_k`: with a Heaviside
input :math:`y_{k+1} - y_k = c^\\top A^k B x`, hence :math:`M_k = \\|c^\\top A^k B\\|_1`.

Fast paths and references
-------------------------
:func:`linear_memory` diagonalises :math:`W = V \\Lambda V^{-1}` once and evaluates
:math:`c^\\top V e^{\\Lambda t} V^{-1} U` for every ``t`` at once; its rounding error grows
like :math:`u\\,\\kappa(V)`. When :math:`\\kappa(V)` exceeds ``cond_max`` (defective or strongly
non-normal :math:`W`) it propagates the row vector :math:`c^\\top e^{Wt}` across the sorted
times with one :func:`scipy.linalg.expm` per distinct time increment (one in all for a
uniform grid). :func:`linear_memory_reference` calls ``expm(W t)`` for each ``t``; tests
compare the two. A symmetric :math:`W` (equal to :math:`W^\\top` up to rounding) is
decomposed by ``eigh`` (orthogonal :math:`V`, :math:`\\kappa(V) = 1`, no condition estimate
needed); on a uniform grid :math:`t_l = t_0 + l h` the factors :math:`e^{\\lambda t_l}` are
split as :math:`e^{\\lambda (t_0 + i m h)} e^{\\lambda j h}` (:math:`l = im + j`), so the
evaluation is one matrix product with :math:`O((L/m + m) N)` exponentials instead of
:math:`L N`. :func:`linear_memory_sampled` is the memory of the zero-order-hold sampled
system from the same single decomposition (:func:`linear_memory_sampled_reference`:
:func:`.discretise` and matrix powers). The discrete pair is :func:`linear_memory_discrete` /
:func:`linear_memory_discrete_reference`.

Readouts
--------
``c`` may be a vector (N,) (one output; the result has shape (len(t),)) or a matrix (p, N)
(p outputs; the result has shape (len(t), p), one memory function per output).
"""

from __future__ import annotations

import numpy as np
from scipy import linalg as sla
from scipy.integrate import solve_ivp

from ..errors import InvalidParameterError, NonFiniteError, ShapeError
from . import _validate as V
from .discretise import discretise

__all__ = [
    "linear_memory",
    "linear_memory_reference",
    "linear_memory_discrete",
    "linear_memory_discrete_reference",
    "linear_memory_sampled",
    "linear_memory_sampled_reference",
    "eigenvector_condition",
    "solve_linear",
    "solve_linear_reference",
    "COND_MAX",
]

#: Largest eigenvector condition number :math:`\kappa(V)` for which the eigendecomposition
#: path is used (its relative error is about :math:`u\,\kappa(V) \approx 10^{-10}` there).
COND_MAX = 1e6


def eigenvector_condition(W) -> float:
    """2-norm condition number :math:`\\kappa(V)` of the unit-column eigenvector matrix of W.

    It bounds the amplification of rounding errors in :math:`V e^{\\Lambda t} V^{-1}`;
    ``inf`` for a (numerically) defective matrix. Normal matrices give 1.
    """
    W = V.square_matrix(W)
    _, vecs = np.linalg.eig(W)
    with np.errstate(all="ignore"):
        k = float(np.linalg.cond(vecs))
    return k if np.isfinite(k) else float("inf")


def _finish(M: np.ndarray, vector: bool) -> np.ndarray:
    """(L, p) -> (L,) for a vector readout."""
    return M[:, 0] if vector else M


def _l1(resp: np.ndarray) -> np.ndarray:
    """(L, p, d) response (real part if complex) -> (L, p) sum of absolute values."""
    if np.iscomplexobj(resp):
        resp = resp.real
    return np.abs(resp).sum(axis=-1)


def _system(W, U, c, names: tuple[str, str]):
    """Validated ``(W (N, N), U (N, d), C (p, N), vector)``; ``names`` of W and U."""
    W = V.square_matrix(W, names[0])
    n = W.shape[0]
    U = V.input_matrix(U, n, names[1])
    C, vector = V.output_matrix(c, n, "c")
    return W, U, C, vector


def _check_method(method) -> None:
    if not isinstance(method, str) or method not in ("auto", "eig", "propagate"):
        raise InvalidParameterError(
            f"method must be 'auto', 'eig' or 'propagate', got {method!r}")


def _eig_method(W, method: str, cond_max: float, check_stable, name: str):
    """``(lam, vecs, method)``: the eigendecomposition of W, checked with ``check_stable``
    (None: not checked), and ``method`` with ``"auto"`` resolved to ``"eig"`` when
    :math:`\\kappa(V) \\le` ``cond_max``, else ``"propagate"``."""
    _check_method(method)
    lam, vecs = np.linalg.eig(W)
    if check_stable is not None:
        check_stable(lam, name)
    if method == "auto":
        with np.errstate(all="ignore"):
            kappa = np.linalg.cond(vecs)
        method = "eig" if np.isfinite(kappa) and kappa <= cond_max else "propagate"
    return lam, vecs, method


def _is_symmetric(W: np.ndarray) -> bool:
    """:math:`\\max|W - W^\\top| \\le 16\\,u \\max|W|`: symmetric up to the rounding of
    forming it (e.g. :math:`Q \\Lambda Q^\\top`); such a W is normal with orthogonal
    eigenvectors, and symmetrising it moves it by at most :math:`8u\\max|W|`."""
    scale = float(np.max(np.abs(W))) if W.size else 0.0
    return bool(np.max(np.abs(W - W.T), initial=0.0) <= 16 * np.finfo(W.dtype).eps * scale)


def _modal(W, C, U, method: str, cond_max: float, check_stable, name: str):
    """``(lam (N,), a = C V (p, N), b = V^{-1} U (N, d), method)`` from ONE decomposition:
    ``eigh`` of a symmetric W (real, orthogonal V: ``b = V^T U``), else ``eig`` with the
    :math:`\\kappa(V)` test of :func:`_eig_method` (``a``, ``b`` are None for
    ``"propagate"``)."""
    _check_method(method)
    if method in ("auto", "eig") and _is_symmetric(W):
        # numpy's LAPACK (syevd, as scipy's driver="evd"), not scipy's: numpy and scipy
        # each load their own OpenBLAS with its own thread pool, and the products below
        # run in numpy's; mixing the two left one pool's threads spinning while the other
        # worked (N = 256, 1e4 steps, 2 vCPUs: 16-24 ms mixed, 6.5 ms in numpy's alone)
        lam, vecs = np.linalg.eigh(0.5 * (W + W.T))
        if check_stable is not None:
            check_stable(lam, name)
        return lam, C @ vecs, vecs.T @ U, "eig"
    lam, vecs, method = _eig_method(W, method, cond_max, check_stable, name)
    if method != "eig":
        return lam, None, None, method
    return lam, C @ vecs, np.linalg.solve(vecs, U.astype(vecs.dtype)), method


def _uniform_step(x: np.ndarray) -> float | int | None:
    """The step of a sorted, unique, uniform grid (floats up to rounding; integers exactly,
    returned as an int so that powers keep integer exponents), else None."""
    if x.size < 3:
        return None
    if x.dtype.kind in "iu":
        d = np.diff(x)
        return int(d[0]) if np.all(d == d[0]) else None
    return _arithmetic_step(x)


def _modal_memory(lam, a, b, x, factor) -> np.ndarray:
    """:math:`\\|\\sum_n F(x_l, \\lambda_n) a_{pn} b_{nd}\\|_1` -> (L, p), with
    ``factor(x, lam)`` (L, N) the modal factor (:math:`e^{\\lambda t}` or :math:`\\lambda^k`).

    On a uniform grid :math:`x_l = x_0 + l h` with :math:`l = i m + j`
    (:math:`m \\approx \\sqrt{L}`), :math:`F(x_l) = F(x_0 + i m h)\\,F(j h)` (both factors
    are exponentials/powers), so the sum is ONE product of a (L/m, N) by a (N, m p d)
    matrix; elsewhere it is (L, N) @ (N, p d).
    """
    p, n, d = a.shape[0], a.shape[1], b.shape[1]
    wts = (a.T[:, :, None] * b[:, None, :]).reshape(n, p * d)  # (N, p d)
    uniq, inverse = np.unique(x, return_inverse=True)
    h = _uniform_step(uniq)
    L = uniq.size
    m = int(np.ceil(np.sqrt(L)))
    if h is not None and L >= 64 and m * p * d <= 4096:
        nb = -(-L // m)
        x0 = uniq[0]
        outer = factor(x0 + (m * h) * np.arange(nb, dtype=uniq.dtype), lam)  # (nb, N)
        inner = factor(h * np.arange(m, dtype=uniq.dtype), lam)  # (m, N)
        q = (inner.T[:, :, None] * wts[:, None, :]).reshape(n, m * p * d)  # (N, m p d)
        resp = (outer @ q).reshape(nb * m, p, d)[:L]  # (L, p, d)
    else:
        resp = (factor(uniq, lam) @ wts).reshape(L, p, d)  # (L, p, d)
    return _l1(resp)[inverse.reshape(-1)]


def _exp_factor(t, lam):
    return np.exp(np.multiply.outer(t, lam))  # (L, N)


def _pow_factor(k, lam):
    return np.power(lam[None, :], np.asarray(k)[:, None])  # (L, N)


def _propagate_rows(C, uniq, power, cast) -> np.ndarray:
    """Rows :math:`r_i = r_{i-1} P(u_i - u_{i-1})` from :math:`r = C` at 0 over the sorted
    unique times/steps ``uniq`` (zero increments skip the product), with each distinct
    increment's ``power`` (``cast`` to float or int) computed once -> (L', p, N)."""
    R = np.empty((uniq.size,) + C.shape)  # (L', p, N)
    cache: dict = {}
    row, prev = C, 0
    for i, ui in enumerate(uniq):
        inc = cast(ui - prev)
        if inc > 0:
            if inc not in cache:
                cache[inc] = power(inc)
            row = row @ cache[inc]
        R[i], prev = row, ui
    return R


# --------------------------------------------------------------------------------------
# continuous time
# --------------------------------------------------------------------------------------
def _arithmetic_step(ts: np.ndarray) -> float | None:
    """The step h if ``ts`` (sorted, unique, length >= 3) is t0 + i h up to rounding."""
    if ts.size < 3:
        return None
    h = (ts[-1] - ts[0]) / (ts.size - 1)
    ideal = ts[0] + h * np.arange(ts.size)
    if np.all(np.abs(ideal - ts) <= 8 * np.finfo(float).eps * max(abs(ts[-1]), h)):
        return float(h)
    return None


def _propagate_continuous(W, C, U, t) -> np.ndarray:
    """Row propagation :math:`r_i = r_{i-1} e^{W (t_i - t_{i-1})}`, :math:`r = C e^{Wt}`."""
    uniq, inverse = np.unique(t, return_inverse=True)
    h = _arithmetic_step(uniq)
    if h is None:
        R = _propagate_rows(C, uniq, lambda inc: sla.expm(W * inc), float)  # (L', p, N)
    else:
        R = np.empty((uniq.size,) + C.shape)  # (L', p, N)
        R[0] = C @ sla.expm(W * uniq[0])
        step = sla.expm(W * h)
        for i in range(1, uniq.size):
            R[i] = R[i - 1] @ step
    resp = R @ U  # (L', p, d)
    return _l1(resp)[inverse.reshape(-1)]


def linear_memory(W, U, c, t, *, require_stable: bool = True, method: str = "auto",
                  cond_max: float = COND_MAX) -> np.ndarray:
    """Memory function of :math:`\\dot h = Wh + Ux,\\ y = c^\\top h` at times ``t``.

    .. math::

        M(t) = \\|c^\\top e^{W t} U\\|_1 = \\sum_{i=1}^{d} \\Big|\\sum_{j}
        (c^\\top e^{W t})_j U_{j i}\\Big|

    (Wang, Li & Li, ICLR 2024, Def. 3.1 evaluated for a linear RNN).

    Parameters
    ----------
    W : (N, N) array
    U : (N, d) array (a 1-D (N,) array means d = 1)
    c : (N,) or (p, N) array
    t : (L,) array of times >= 0 (a scalar is accepted)
    require_stable : bool
        Raise :class:`~rnnmem.errors.UnstableSystemError` when
        :math:`\\max \\operatorname{Re} \\lambda(W) \\ge 0`.
    method : {"auto", "eig", "propagate"}
        ``"eig"``: one eigendecomposition, vectorised over ``t``; ``"propagate"``: the
        expm-based fallback; ``"auto"``: ``"eig"`` when :math:`\\kappa(V) \\le` ``cond_max``.
    cond_max : float

    Returns
    -------
    (L,) array for a vector ``c``, (L, p) for a matrix ``c``.
    """
    W, U, C, vector = _system(W, U, c, ("W", "U"))
    t = V.times(t, "t")
    M = _memory_by_method(W, C, U, t, "t", method, cond_max,
                          V.check_continuous_stable if require_stable else None, "W",
                          _exp_factor, _propagate_continuous)
    return _finish(M, vector)


def _memory_by_method(W, C, U, x, xname: str, method: str, cond_max: float, check_stable,
                      name: str, factor, propagate) -> np.ndarray:
    """The memory (L, p) at ``x`` by ``method`` (``"auto"`` resolved by :func:`_modal`): the
    modal form with ``factor`` (:math:`e^{\\lambda t}` or :math:`\\lambda^k`) or
    ``propagate(W, C, U, x)``; non-finite values handled by :func:`_finite_or_fallback`."""
    requested = method
    lam, a, b, method = _modal(W, C, U, method, cond_max, check_stable, name)

    def by(m):
        with np.errstate(all="ignore"):
            if m == "eig":  # the modal form (decomposed here if "auto" chose propagation)
                la, aa, bb, _ = (lam, a, b, m) if a is not None else _modal(
                    W, C, U, "eig", cond_max, None, name)
                return _modal_memory(la, aa, bb, x, factor)
            return propagate(W, C, U, x)

    M = by(method)
    if not np.all(np.isfinite(M)):
        M = _finite_or_fallback(M, by, method, requested, x, xname)
    return M


def _finite_or_fallback(M, by, method: str, requested: str, t, tname: str) -> np.ndarray:
    """A memory with NaN/inf entries (expm of a huge W t, exp overflow times 0): the other
    method's values where they are finite (``"auto"`` only); still non-finite: a named
    :class:`~rnnmem.errors.NonFiniteError` (never a NaN returned for finite input)."""
    if requested == "auto":
        other = by("eig" if method == "propagate" else "propagate")
        M = np.where(np.isfinite(M), M, other)
    bad = ~np.all(np.isfinite(M), axis=tuple(range(1, M.ndim)))
    if np.any(bad):
        i = int(np.argmax(bad))
        raise NonFiniteError(
            f"the memory function overflows float64 at {tname} = {np.asarray(t)[i]:g} "
            f"(method {method!r}{'' if requested != 'auto' else ' and its fallback'}): the "
            "entries of W, U, c or t are too large; rescale them")
    return M


def linear_memory_reference(W, U, c, t, *, require_stable: bool = True) -> np.ndarray:
    """Slow reference for :func:`linear_memory`: one :func:`scipy.linalg.expm` per time."""
    W, U, C, vector = _system(W, U, c, ("W", "U"))
    t = V.times(t, "t")
    if require_stable:
        V.check_continuous_stable(np.linalg.eigvals(W), "W")
    resp = np.stack([C @ sla.expm(W * ti) @ U for ti in t]) if t.size else \
        np.zeros((0,) + (C.shape[0], U.shape[1]))
    return _finish(_l1(resp), vector)


# --------------------------------------------------------------------------------------
# discrete time
# --------------------------------------------------------------------------------------
def _propagate_discrete(A, C, B, k) -> np.ndarray:
    uniq, inverse = np.unique(k, return_inverse=True)
    R = _propagate_rows(C, uniq, lambda inc: np.linalg.matrix_power(A, inc), int)
    return _l1(R @ B)[inverse.reshape(-1)]


def linear_memory_discrete(A, B, c, k, *, require_stable: bool = True, method: str = "auto",
                           cond_max: float = COND_MAX) -> np.ndarray:
    """Memory function of :math:`h_{k+1} = A h_k + B x_k,\\ y_k = c^\\top h_k` at steps ``k``.

    .. math::

        M_k = \\|c^\\top A^k B\\|_1, \\qquad y_{k+1} - y_k = c^\\top A^k B x

    for the Heaviside input :math:`x_k = x` (:math:`k \\ge 0`) from :math:`h_0 = 0`.

    Parameters
    ----------
    A : (N, N) array
    B : (N, d) array
    c : (N,) or (p, N) array
    k : (L,) array of non-negative integers
    require_stable : bool
        Raise :class:`~rnnmem.errors.UnstableSystemError` when :math:`\\rho(A) \\ge 1`.
    method : {"auto", "eig", "propagate"}
        ``"eig"``: :math:`c^\\top V \\Lambda^k V^{-1} B` vectorised over ``k``;
        ``"propagate"``: matrix powers of the increments between sorted steps.
    cond_max : float

    Returns
    -------
    (L,) array for a vector ``c``, (L, p) for a matrix ``c``.
    """
    A, B, C, vector = _system(A, B, c, ("A", "B"))
    k = V.steps(k, "k")
    M = _memory_by_method(A, C, B, k, "k", method, cond_max,
                          V.check_discrete_stable if require_stable else None, "A",
                          _pow_factor, _propagate_discrete)
    return _finish(M, vector)


def linear_memory_discrete_reference(A, B, c, k, *, require_stable: bool = True) -> np.ndarray:
    """Slow reference for :func:`linear_memory_discrete`: one matrix power per step."""
    A, B, C, vector = _system(A, B, c, ("A", "B"))
    k = V.steps(k, "k")
    if require_stable:
        V.check_discrete_stable(np.linalg.eigvals(A), "A")
    resp = np.stack([C @ np.linalg.matrix_power(A, int(ki)) @ B for ki in k]) if k.size else \
        np.zeros((0, C.shape[0], B.shape[1]))
    return _finish(_l1(resp), vector)


# --------------------------------------------------------------------------------------
# the sampled (zero-order-hold) system, from one decomposition of W
# --------------------------------------------------------------------------------------
def linear_memory_sampled(W, U, c, k, dt, *, require_stable: bool = True,
                          method: str = "auto", cond_max: float = COND_MAX) -> np.ndarray:
    """Memory of the zero-order-hold sampling of :math:`\\dot h = Wh + Ux` at steps ``k``.

    With the zoh pair :math:`\\bar A = e^{W\\Delta t}`,
    :math:`\\bar B = \\int_0^{\\Delta t} e^{Ws}\\,ds\\,U` (:func:`.discretise`),

    .. math::

        M_k = \\frac{1}{\\Delta t}\\|c^\\top \\bar A^k \\bar B\\|_1
            = \\frac{1}{\\Delta t}\\Big\\|\\sum_n (c^\\top v_n)\\, e^{\\lambda_n k \\Delta t}\\,
              \\varphi(\\lambda_n)\\, (V^{-1}U)_{n\\cdot}\\Big\\|_1,
        \\qquad \\varphi(\\lambda) = \\frac{e^{\\lambda\\Delta t} - 1}{\\lambda},

    the memory function (Wang, Li & Li, ICLR 2024, Def. 3.1) that the black-box estimator
    measures on :func:`solve_linear` (a Heaviside input held from step 0, first differences
    of the output over :math:`\\Delta t`). One decomposition of :math:`W` gives
    :math:`\\bar A` and :math:`\\bar B` together (no ``expm``); a non-normal W with
    :math:`\\kappa(V) >` ``cond_max`` falls back to :func:`.discretise` and
    ``linear_memory_discrete(method="propagate")``.

    Parameters
    ----------
    W : (N, N), U : (N, d), c : (N,) or (p, N)
    k : (L,) array of non-negative integer steps
    dt : float > 0
    require_stable, method, cond_max : as in :func:`linear_memory`

    Returns
    -------
    (L,) array for a vector ``c``, (L, p) for a matrix ``c``.
    """
    W, U, C, vector = _system(W, U, c, ("W", "U"))
    k = V.steps(k, "k")
    dt = V.positive_step(dt, "dt")
    lam, a, b, method = _modal(
        W, C, U, method, cond_max, V.check_continuous_stable if require_stable else None, "W")
    if method != "eig":
        A, Bd = discretise(W, U, dt, method="zoh")
        M = _propagate_discrete(A, C, Bd, k) / dt
        return _finish(M, vector)
    z = lam * dt
    small = np.abs(z) < 1e-300
    phi = np.where(small, 1.0, np.expm1(z) / np.where(small, 1.0, z))  # phi(lam) / dt
    M = _modal_memory(lam, a, phi[:, None] * b, k * dt, _exp_factor)
    return _finish(M, vector)


def linear_memory_sampled_reference(W, U, c, k, dt, *,
                                    require_stable: bool = True) -> np.ndarray:
    """Slow reference for :func:`linear_memory_sampled`: :func:`.discretise` (block-matrix
    ``expm``) and one matrix power of :math:`\\bar A` per step."""
    W, U, C, _ = _system(W, U, c, ("W", "U"))
    dt = V.positive_step(dt, "dt")
    if require_stable:
        V.check_continuous_stable(np.linalg.eigvals(W), "W")
    A, Bd = discretise(W, U, dt, method="zoh")
    return linear_memory_discrete_reference(A, Bd, c, k, require_stable=False) / dt


# --------------------------------------------------------------------------------------
# solutions under zero-order-hold inputs
# --------------------------------------------------------------------------------------
def _system_and_input(W, U, c, x, dt):
    W, U, C, _ = _system(W, U, c, ("W", "U"))
    dt = V.positive_step(dt, "dt")
    x = V.as_float_array(x, "x")
    unbatched = x.ndim == 2
    if unbatched:
        x = x[None]
    if x.ndim != 3 or x.shape[-1] != U.shape[1]:
        raise ShapeError(f"x must have shape (T, d) or (B, T, d) with d = {U.shape[1]}, "
                         f"got {x.shape}")
    return W, U, C, x, dt, unbatched


def solve_linear(W, U, c, x, dt, *, method: str = "exact", rtol: float = 1e-8,
                 atol: float = 1e-10, ivp_method: str = "DOP853") -> np.ndarray:
    """Outputs of :math:`\\dot h = Wh + Ux,\\ y = c^\\top h` under a zero-order-hold input.

    Convention: :math:`h(0) = 0`; the sample :math:`x_k` is held on
    :math:`[k\\,\\Delta t, (k+1)\\Delta t)`; the returned output is read at the end of that
    interval,

    .. math::

        y_k = c^\\top h\\big((k+1)\\Delta t\\big), \\qquad
        h\\big((k+1)\\Delta t\\big) = \\bar A h(k\\Delta t) + \\bar B x_k,

    with the zero-order-hold pair :math:`\\bar A = e^{W\\Delta t}`,
    :math:`\\bar B = \\int_0^{\\Delta t} e^{Ws} ds\\,U`. So output ``k`` has seen the inputs
    ``0..k``, as in the recurrent models (:math:`h_k = \\bar A h_{k-1} + \\bar B x_k`,
    :math:`y_k = c^\\top h_k`).

    Parameters
    ----------
    W : (N, N), U : (N, d), c : (N,) or (p, N)
    x : (T, d) or (B, T, d) array
    dt : float > 0
    method : {"exact", "ivp"}
        ``"exact"``: the zoh recurrence (block-matrix expm, :func:`.discretise`);
        ``"ivp"``: :func:`scipy.integrate.solve_ivp` on each hold interval.
    rtol, atol : float
        Solver tolerances for ``"ivp"``.
    ivp_method : str
        ``solve_ivp`` method for ``"ivp"``.

    Returns
    -------
    y : (T, p) or (B, T, p) array (p = 1 for a vector ``c``).
    """
    W, U, C, x, dt, unbatched = _system_and_input(W, U, c, x, dt)
    Bsz, T, _ = x.shape
    n = W.shape[0]
    if method == "exact":
        A, Bd = discretise(W, U, dt, method="zoh")
        u = x @ Bd.T  # (B, T, N)
        h = np.zeros((Bsz, n))
        hs = np.empty((Bsz, T, n))
        for k in range(T):
            h = h @ A.T + u[:, k]
            hs[:, k] = h
    elif method == "ivp":
        for nm, v in (("rtol", rtol), ("atol", atol)):
            if not (np.isfinite(v) and v > 0):
                raise InvalidParameterError(f"{nm} must be a positive number, got {v!r}")
        u = x @ U.T  # (B, T, N)
        h = np.zeros(Bsz * n)
        hs = np.empty((Bsz, T, n))
        for k in range(T):
            uk = u[:, k]  # (B, N)

            def rhs(_s, hv, uk=uk):
                return (hv.reshape(Bsz, n) @ W.T + uk).ravel()

            sol = solve_ivp(rhs, (0.0, dt), h, method=ivp_method, rtol=rtol, atol=atol)
            if not sol.success:  # pragma: no cover - solver failure
                raise InvalidParameterError(f"solve_ivp failed on interval {k}: {sol.message}")
            h = sol.y[:, -1]
            hs[:, k] = h.reshape(Bsz, n)
    else:
        raise InvalidParameterError(f"method must be 'exact' or 'ivp', got {method!r}")
    y = hs @ C.T  # (B, T, p)
    return y[0] if unbatched else y


def solve_linear_reference(W, U, c, x, dt) -> np.ndarray:
    """Slow reference for ``solve_linear(method="exact")``.

    Uses the variation-of-constants formula as a convolution,
    :math:`h((k+1)\\Delta t) = \\sum_{j \\le k} e^{W (k-j)\\Delta t}
    \\int_0^{\\Delta t} e^{Ws}ds\\,U x_j`, with the kernel built from
    :math:`e^{W\\Delta t}` (:func:`scipy.linalg.expm`) and its matrix powers, and
    :math:`\\int_0^{\\Delta t} e^{Ws}ds` read off the exponential of
    :math:`\\big(\\begin{smallmatrix} W & I \\\\ 0 & 0\\end{smallmatrix}\\big)\\Delta t`
    (not the input-augmented matrix of :func:`.discretise`), so it shares no code with the
    recurrence.
    """
    W, U, C, x, dt, unbatched = _system_and_input(W, U, c, x, dt)
    Bsz, T, _ = x.shape
    n = W.shape[0]
    # G = int_0^dt e^{Ws} ds from the augmented exponential [[W, I], [0, 0]]
    aug = np.zeros((2 * n, 2 * n))
    aug[:n, :n], aug[:n, n:] = W, np.eye(n)
    G = sla.expm(aug * dt)[:n, n:]
    E = sla.expm(W * dt)
    kernels = np.stack([C @ np.linalg.matrix_power(E, m) @ G @ U for m in range(T)])  # (T, p, d)
    y = np.zeros((Bsz, T, C.shape[0]))
    for k in range(T):
        for j in range(k + 1):
            y[:, k] += x[:, j] @ kernels[k - j].T
    return y[0] if unbatched else y
