"""The least-squares linear-RNN approximant of a target memory, and its perturbation error.

A width-:math:`m` linear RNN with diagonal recurrence :math:`\\Lambda = \\operatorname{diag}
(\\lambda_1, \\dots, \\lambda_m)` has the kernel (memory) :math:`\\hat\\rho(t) = c^\\top
e^{\\Lambda t}U = \\sum_i c_i e^{\\lambda_i t}` (absorbing :math:`U` into :math:`c`). Li, Han, E
& Li (ICLR 2021, Jackson-type theorem and its proof) and Wang, Li & Li (ICLR 2024, the linear
illustrations of stable approximation) build approximants of a target kernel :math:`\\rho`
with the *fixed* eigenvalues :math:`\\lambda_i = -i/\\tau` through the change of variable

.. math::

    s = e^{-t/\\tau} \\in (0, 1], \\qquad \\rho(t) = g(s), \\qquad
    \\hat\\rho(t) = \\sum_{i=1}^{m} c_i\\, e^{-i t/\\tau} = \\sum_{i=1}^{m} c_i s^i ,

so approximating :math:`\\rho` by exponential sums is approximating :math:`g` by polynomials in
:math:`s` *without constant term* (a constant would be the eigenvalue 0, a non-decaying
mode). :math:`\\tau = 1` is the construction of the papers; another :math:`\\tau` rescales
time (the variant :math:`s = e^{-t/\\tau}`).

Construction (:func:`fit_exponential_sum`)
------------------------------------------
Discrete least squares on a grid :math:`t_1 < \\dots < t_n` (default 1001 points on
:math:`[0, 50]`): :math:`c = \\arg\\min \\sum_j (\\rho(t_j) - \\sum_i c_i s_j^i)^2`, i.e. the
:math:`L^2(dt)` error on the grid, which is a polynomial least-squares problem in :math:`s`
with the weight :math:`ds / s`. The Vandermonde matrix :math:`V_{ji} = s_j^i` is
column-equilibrated and solved by :func:`numpy.linalg.lstsq` (SVD, relative cut-off
``rcond``). Its condition number grows geometrically with :math:`m` (about
:math:`10^{16}` at :math:`m \\approx 20` on the default grid), so beyond that width the
float64 solution is the minimum-norm one among the numerically equivalent coefficient
vectors (reported: ``rank``, ``cond``); this is what a float64 model can hold.

What the construction shows. If :math:`g` is a polynomial of degree :math:`\\le m` with
:math:`g(0) = 0` (e.g. :math:`\\rho = e^{-t} + \\tfrac12 e^{-2t}`) the fit is exact. If
:math:`g` is analytic on a neighbourhood of :math:`[0, 1]` (e.g. :math:`\\rho = e^{-t}/(2 -
e^{-t})`), the error decays geometrically, like :math:`r^{-m}` with :math:`r` the Bernstein
ellipse parameter of :math:`g`'s nearest singularity, and the coefficients stay bounded.
For a polynomially decaying :math:`\\rho = (1+t)^{-p}`, :math:`g(s) = (1 + \\log(1/s))^{-p}`
is not even Hölder at :math:`s = 0`: the error decays only logarithmically in :math:`m` and
:math:`\\|c\\|` grows geometrically; note that an exponential :math:`e^{-a t}` with
:math:`a\\tau` not an integer (:math:`g = s^{a\\tau}`) also has a singular :math:`g`, algebraic
convergence and growing coefficients *for this fixed-eigenvalue construction*.

Perturbation error (:func:`perturbed_errors`, :func:`linear_perturbation_curve`)
-------------------------------------------------------------------------------
Perturbing the eigenvalues by :math:`\\delta` and (``scope="all"``) the coefficients by
:math:`\\gamma` gives, in closed form,

.. math::

    \\rho(t) - \\tilde\\rho(t) = r(t) - \\sum_i c_i e^{\\lambda_i t}\\,
        \\operatorname{expm1}(\\delta_i t) - \\sum_i \\gamma_i e^{(\\lambda_i + \\delta_i)t},
    \\qquad r = \\rho - \\hat\\rho ,

(``expm1`` keeps the small-:math:`\\delta` terms accurate), measured as
:math:`\\sup_t` or :math:`(\\int |\\cdot|^2 dt)^{1/2}` on the grid. When a perturbed eigenvalue
reaches :math:`\\ge 0` with a non-zero coefficient the perturbed kernel does not decay and
the error over :math:`t \\in [0, \\infty)` is :math:`+\\infty` (a blow-up), whatever the grid.
To first order the sup error grows like :math:`\\beta\\sum_i |c_i| \\max_t t e^{-it/\\tau} =
\\beta\\,\\tau e^{-1}\\sum_i |c_i|/i`: bounded coefficients give a perturbation error that is
continuous at :math:`\\beta = 0` uniformly in :math:`m` (stable approximation), growing
coefficients crossing points :math:`\\beta_0(m) \\to 0`
(:func:`rnnmem.numerics.perturbation.stability_verdict`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import InvalidParameterError, NonFiniteError, ShapeError, UnknownNameError
from . import _validate as V
from .perturbation import PerturbationCurve, check_betas

__all__ = [
    "ExponentialSumFit",
    "fit_exponential_sum",
    "perturbed_errors",
    "perturbed_errors_reference",
    "linear_perturbation_curve",
    "draw_perturbations",
    "ERROR_NORMS",
    "LINEAR_SCOPES",
    "VECTOR_NORMS",
    "DISTRIBUTIONS",
]

#: how the error of a kernel is measured on the grid
ERROR_NORMS = ("sup", "l2")
#: which parameters of the linear approximant are perturbed
LINEAR_SCOPES = ("eigenvalues", "all")
#: norms of a perturbation vector; "spectral" is the spectral norm of diag(v), i.e. max|v|
VECTOR_NORMS = ("spectral", "frobenius", "max")
#: distributions of the random perturbation directions
DISTRIBUTIONS = ("rademacher", "gaussian")


def _target_callable(rho) -> tuple[Callable, str]:
    """``rho`` as a numpy callable t -> rho(t), and a name for it."""
    if isinstance(rho, str) or type(rho).__name__ == "TargetMemory":
        from ..theory.targets import get_target

        tgt = get_target(rho)
        return tgt.numpy, tgt.name
    if callable(rho):
        return rho, getattr(rho, "__name__", "rho")
    raise UnknownNameError("target", rho)


def _positive_int(v, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise InvalidParameterError(f"{name} must be a positive integer, got {v!r}")
    return int(v)


def _grid(t, t_max, n_points) -> np.ndarray:
    if t is None:
        t_max = V.positive_step(t_max, "t_max")
        n = _positive_int(n_points, "n_points")
        if n < 2:
            raise InvalidParameterError(f"n_points must be >= 2, got {n}")
        return np.linspace(0.0, t_max, n)
    t = V.times(t, "t")
    if t.size < 2 or np.any(np.diff(t) <= 0):
        raise InvalidParameterError("t must hold at least 2 strictly increasing times")
    return t


@dataclass(frozen=True, eq=False)
class ExponentialSumFit:
    """A width-:math:`m` exponential sum :math:`\\hat\\rho(t) = \\sum_i c_i e^{\\lambda_i t}`
    fitted to a target kernel on a grid (see :func:`fit_exponential_sum`).

    Attributes
    ----------
    eigenvalues : (m,) :math:`\\lambda_i = -i/\\tau`
    coefficients : (m,) :math:`c_i`
    tau : float
    t : (n,) the grid
    target : (n,) :math:`\\rho(t_j)`
    residual : (n,) :math:`\\rho(t_j) - \\hat\\rho(t_j)`
    rank : int
        Numerical rank of the equilibrated Vandermonde matrix (``< m`` when truncated).
    cond : float
        Its condition number (ratio of extreme singular values).
    name : str
    """

    eigenvalues: np.ndarray
    coefficients: np.ndarray
    tau: float
    t: np.ndarray
    target: np.ndarray
    residual: np.ndarray
    rank: int
    cond: float
    name: str = "rho"

    @property
    def width(self) -> int:
        return int(self.eigenvalues.size)

    @property
    def error_sup(self) -> float:
        """:math:`\\max_j |\\rho(t_j) - \\hat\\rho(t_j)|`."""
        return float(np.max(np.abs(self.residual)))

    @property
    def error_l2(self) -> float:
        """:math:`(\\int |\\rho - \\hat\\rho|^2 dt)^{1/2}` by the trapezoidal rule on the grid."""
        return float(math.sqrt(np.trapezoid(self.residual**2, self.t)))

    def error(self, norm: str = "sup") -> float:
        _check_choice(norm, ERROR_NORMS, "error norm")
        return self.error_sup if norm == "sup" else self.error_l2

    @property
    def sensitivity(self) -> float:
        """Bound on the first-order growth rate of the sup error under eigenvalue
        perturbations of max-norm :math:`\\beta`: :math:`\\tau e^{-1}\\sum_i |c_i|/i`
        (from :math:`\\max_t t e^{-it/\\tau} = \\tau/(ie)`)."""
        i = np.arange(1, self.width + 1)
        return float(self.tau / math.e * np.sum(np.abs(self.coefficients) / i))

    def __call__(self, t) -> np.ndarray:
        """:math:`\\hat\\rho(t) = \\sum_i c_i e^{\\lambda_i t}`, shape of ``t``."""
        t = np.asarray(t, dtype=float)
        return np.exp(np.multiply.outer(t, self.eigenvalues)) @ self.coefficients

    def memory(self, t) -> np.ndarray:
        """Memory function :math:`|\\hat\\rho(t)|` (Wang, Li & Li, ICLR 2024, Def. 3.1)."""
        return np.abs(self(t))


def _check_choice(v, allowed, what):
    if v not in allowed:
        raise UnknownNameError(what, v, list(allowed))
    return v


def fit_exponential_sum(rho, width: int, *, tau: float = 1.0, t=None, t_max: float = 50.0,
                        n_points: int = 1001, rcond: float | None = None) -> ExponentialSumFit:
    """Least-squares exponential sum with eigenvalues :math:`-i/\\tau`, :math:`i = 1..m`.

    .. math::

        c = \\arg\\min_{c \\in \\mathbb R^m} \\sum_j \\Big(\\rho(t_j) - \\sum_{i=1}^m c_i
            e^{-i t_j/\\tau}\\Big)^2 ,

    the degree-:math:`m` polynomial fit (no constant term) of :math:`g(s) = \\rho(-\\tau\\log s)`
    in :math:`s = e^{-t/\\tau}` (Li, Han, E & Li, ICLR 2021; Wang, Li & Li, ICLR 2024); see
    the module docstring.

    Parameters
    ----------
    rho : str, TargetMemory or callable
        A name in :data:`rnnmem.theory.TARGETS`, a target, or a numpy callable
        ``t -> rho(t)``.
    width : int >= 1
        :math:`m`.
    tau : float > 0
        Time scale of the eigenvalues.
    t : array, optional
        The grid (>= 2 strictly increasing times >= 0); default ``linspace(0, t_max,
        n_points)``.
    rcond : float, optional
        Relative singular-value cut-off of :func:`numpy.linalg.lstsq` (default: numpy's,
        machine epsilon times the larger dimension).

    Returns
    -------
    ExponentialSumFit
    """
    f, name = _target_callable(rho)
    m = _positive_int(width, "width")
    tau = V.positive_step(tau, "tau")
    t = _grid(t, t_max, n_points)
    y = np.asarray(f(t), dtype=float)
    if y.shape != t.shape:
        raise ShapeError(f"rho(t) must have the shape of t {t.shape}, got {y.shape}")
    if not np.all(np.isfinite(y)):
        raise NonFiniteError(f"rho {name!r} is not finite on the grid")
    lam = -np.arange(1, m + 1) / tau  # (m,)
    Vm = np.exp(np.multiply.outer(t, lam))  # (n, m), s_j^i
    scale = np.linalg.norm(Vm, axis=0)  # (m,) column equilibration
    scale[scale == 0] = 1.0
    c_scaled, _, rank, sv = np.linalg.lstsq(Vm / scale, y, rcond=rcond)
    c = c_scaled / scale
    cond = float(sv[0] / sv[-1]) if sv[-1] > 0 else float("inf")
    return ExponentialSumFit(lam, c, tau, t, y, y - Vm @ c, int(rank), cond, name)


# --------------------------------------------------------------------------------------
# perturbations
# --------------------------------------------------------------------------------------
def _vector_norm(v: np.ndarray, norm: str) -> np.ndarray:
    """Norm of each row of v (..., m): spectral of diag = max |v|, frobenius = 2-norm."""
    if norm == "frobenius":
        return np.linalg.norm(v, axis=-1)
    return np.max(np.abs(v), axis=-1)


def draw_perturbations(rng: np.random.Generator, beta: float, shape: tuple[int, ...],
                       norm: str = "spectral", distribution: str = "rademacher") -> np.ndarray:
    """Random directions of shape ``shape = (..., m)`` scaled so that each row has norm
    exactly ``beta`` in ``norm`` (``"spectral"``/``"max"``: :math:`\\max_i|v_i|`, the spectral
    norm of :math:`\\operatorname{diag}(v)`; ``"frobenius"``: the Euclidean norm).

    ``distribution="rademacher"``: independent random signs, i.e. a uniformly random
    *vertex* of the max-norm ball (``spectral``/``max``); ``"gaussian"``: standard normal
    entries. For the exponential sum each eigenvalue enters the error monotonically at every
    :math:`t`, so the supremum over the max-norm ball is attained at a vertex: random
    vertices estimate it far better than Gaussian directions, whose entries are mostly much
    smaller than the largest one when :math:`m` is large.
    """
    _check_choice(norm, VECTOR_NORMS, "norm")
    _check_choice(distribution, DISTRIBUTIONS, "distribution")
    if distribution == "rademacher":
        d = rng.choice(np.array([-1.0, 1.0]), size=shape)
    else:
        d = rng.standard_normal(shape)
    n = _vector_norm(d, norm)[..., None]
    n[n == 0] = 1.0
    return d * (beta / n)


def _as_2d(a, m: int, name: str) -> np.ndarray:
    a = V.as_float_array(a, name)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2 or a.shape[1] != m:
        raise ShapeError(f"{name} must have shape (S, {m}) or ({m},), got {a.shape}")
    return a


def perturbed_errors(fit: ExponentialSumFit, d_eigenvalues, d_coefficients=None, *,
                     norm: str = "sup", chunk: int = 256) -> np.ndarray:
    """Errors :math:`\\|\\rho - \\tilde\\rho\\|` of perturbed approximants, vectorised.

    .. math::

        \\rho - \\tilde\\rho = r - \\sum_i c_i e^{\\lambda_i t}\\operatorname{expm1}(\\delta_i t)
            - \\sum_i \\gamma_i e^{(\\lambda_i+\\delta_i) t}

    (module docstring), with ``+inf`` for a sample whose perturbed eigenvalue
    :math:`\\lambda_i + \\delta_i \\ge 0` carries a non-zero coefficient.

    Parameters
    ----------
    fit : ExponentialSumFit
    d_eigenvalues : (S, m) or (m,) eigenvalue perturbations :math:`\\delta`
    d_coefficients : (S, m) or (m,), optional, coefficient perturbations :math:`\\gamma`
    norm : {"sup", "l2"}
    chunk : int
        Samples per vectorised block (memory ~ chunk * m * n floats).

    Returns
    -------
    (S,) errors.
    """
    _check_choice(norm, ERROR_NORMS, "error norm")
    m = fit.width
    dl = _as_2d(d_eigenvalues, m, "d_eigenvalues")  # (S, m)
    dc = np.zeros_like(dl) if d_coefficients is None else _as_2d(d_coefficients, m,
                                                                  "d_coefficients")
    if dc.shape != dl.shape:
        raise ShapeError(f"d_coefficients {dc.shape} and d_eigenvalues {dl.shape} differ")
    chunk = _positive_int(chunk, "chunk")
    t, lam, c, r = fit.t, fit.eigenvalues, fit.coefficients, fit.residual
    out = np.empty(dl.shape[0])
    base = np.exp(np.multiply.outer(t, lam))  # (n, m)
    base_c = base * c  # (n, m)
    for a in range(0, dl.shape[0], chunk):
        d, g = dl[a:a + chunk], dc[a:a + chunk]  # (P, m)
        dt = d[:, None, :] * t[None, :, None]  # (P, n, m)
        with np.errstate(over="ignore", invalid="ignore"):
            x = np.expm1(dt)  # (P, n, m)
            e = r[None, :] - np.einsum("pnm,nm->pn", x, base_c)  # (P, n)
            if np.any(g):
                x += 1.0  # exp(dt)
                e -= np.einsum("pnm,nm,pm->pn", x, base, g, optimize=True)
        out[a:a + chunk] = _norm_rows(e, t, norm)
    out[_blows_up(fit, dl, dc)] = np.inf
    return out


def _norm_rows(e: np.ndarray, t: np.ndarray, norm: str) -> np.ndarray:
    e = np.where(np.isfinite(e), e, np.inf)
    if norm == "sup":
        return np.max(np.abs(e), axis=-1)
    with np.errstate(over="ignore", invalid="ignore"):
        return np.sqrt(np.trapezoid(e**2, t, axis=-1))


def _blows_up(fit, dl, dc) -> np.ndarray:
    """(S,) True where a perturbed eigenvalue >= 0 carries a non-zero coefficient."""
    return np.any((fit.eigenvalues[None, :] + dl >= 0)
                  & (fit.coefficients[None, :] + dc != 0), axis=1)


def perturbed_errors_reference(fit: ExponentialSumFit, d_eigenvalues, d_coefficients=None, *,
                               norm: str = "sup", chunk: int = 256) -> np.ndarray:
    """Reference for :func:`perturbed_errors`: one sample at a time, the perturbed kernel
    :math:`\\tilde\\rho = \\sum_i (c_i+\\gamma_i)e^{(\\lambda_i+\\delta_i)t}` built from scratch
    and subtracted from :math:`\\rho` (no ``expm1`` splitting). Same signature."""
    _check_choice(norm, ERROR_NORMS, "error norm")
    m = fit.width
    dl = _as_2d(d_eigenvalues, m, "d_eigenvalues")
    dc = np.zeros_like(dl) if d_coefficients is None else _as_2d(d_coefficients, m,
                                                                  "d_coefficients")
    out = np.empty(dl.shape[0])
    for k in range(dl.shape[0]):
        lam, c = fit.eigenvalues + dl[k], fit.coefficients + dc[k]
        if np.any((lam >= 0) & (c != 0)):
            out[k] = np.inf
            continue
        rt = np.exp(np.multiply.outer(fit.t, lam)) @ c
        out[k] = _norm_rows((fit.target - rt)[None], fit.t, norm)[0]
    return out


def linear_perturbation_curve(fit: ExponentialSumFit, betas, *, repeats: int = 30,
                              scope: str = "eigenvalues", norm: str = "spectral",
                              error: str = "sup", seed: int = 0,
                              distribution: str = "rademacher") -> PerturbationCurve:
    """Perturbation curve :math:`E_m(\\beta)` of a least-squares exponential sum.

    For each radius :math:`\\beta` (positive, increasing), ``repeats`` random directions
    (random sign vectors by default, see :func:`draw_perturbations` for why) scaled to norm
    exactly :math:`\\beta` perturb the eigenvalues
    (``scope="eigenvalues"``, the recurrent weights of Wang, Li & Li, Def. 3.4) or the
    eigenvalues and the coefficients, each vector of norm :math:`\\beta` (``"all"``); the
    errors come from :func:`perturbed_errors`. Random numbers: one
    ``numpy.random.default_rng(seed)`` drawn radius by radius.

    Returns
    -------
    PerturbationCurve
        ``e0`` is the unperturbed error in the same norm; ``meta`` records the settings,
        the width, ``tau``, the fit's ``rank``/``cond`` and its ``sensitivity``.
    """
    if not isinstance(fit, ExponentialSumFit):
        raise InvalidParameterError(f"fit must be an ExponentialSumFit, got {type(fit).__name__}")
    b = check_betas(betas)
    K = _positive_int(repeats, "repeats")
    _check_choice(scope, LINEAR_SCOPES, "scope")
    _check_choice(norm, VECTOR_NORMS, "norm")
    _check_choice(error, ERROR_NORMS, "error norm")
    _check_choice(distribution, DISTRIBUTIONS, "distribution")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise InvalidParameterError(f"seed must be an integer, got {seed!r}")
    rng = np.random.default_rng(int(seed))
    m = fit.width
    samples = np.empty((b.size, K))
    for i, beta in enumerate(b):
        dl = draw_perturbations(rng, float(beta), (K, m), norm, distribution)
        dc = draw_perturbations(rng, float(beta), (K, m), norm, distribution) \
            if scope == "all" else None
        samples[i] = perturbed_errors(fit, dl, dc, norm=error)
    meta = {"source": "least-squares exponential sum", "target": fit.name, "width": m,
            "tau": fit.tau, "scope": scope, "norm": norm, "error": error, "repeats": K,
            "distribution": distribution,
            "seed": int(seed), "rank": fit.rank, "cond": fit.cond,
            "sensitivity": fit.sensitivity}
    return PerturbationCurve.from_samples(b, samples, fit.error(error), meta)
