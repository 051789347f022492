"""Tolerances derived from the problem, in one place, per dtype.

Every comparison in rnnmem (tests, claims, fast-vs-reference checks) asks this module for
its tolerance instead of writing a literal. A tolerance is built from

* the unit roundoff :math:`u` of the dtype (``float16``: :math:`2^{-11}`, ``bfloat16``:
  :math:`2^{-8}`, ``float32``: :math:`2^{-24}`, ``float64``: :math:`2^{-53}`),
* the number of sequential floating-point operations the result went through
  (``n_ops``; e.g. the length of a recurrence), entering as :math:`\\sqrt{n}` for a
  random-walk accumulation of rounding errors or :math:`n` for the worst case,
* the condition number of the problem (``cond``, e.g. :math:`\\kappa(V)` of an
  eigenvector matrix, or :math:`1/(1-|a|)` of a recurrence),
* a discretisation or solver error (``solver_rtol``), added, not multiplied.

A result computed through :func:`scipy.linalg.expm` carries that function's own rounding
error, which :func:`expm_error_growth` models (pass it as ``cond``, added to the other
method's, when one side of a comparison is expm-based).

The result is :math:`\\mathrm{rtol} = c\\,u\\,\\kappa\\,g(n) + \\mathrm{solver\\_rtol}` with a
small safety constant :math:`c = 8`, and ``atol = rtol * scale`` for a quantity of typical
magnitude ``scale`` (scipy ``test_ivp`` style: error measured relative to
``atol + rtol * |y|``).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from ..errors import InvalidParameterError

__all__ = ["unit_roundoff", "Tolerance", "tolerance", "dtype_name", "expm_error_growth"]

_UNIT_ROUNDOFF = {
    "float16": 2.0**-11,
    "half": 2.0**-11,
    "bfloat16": 2.0**-8,
    "float32": 2.0**-24,
    "float": 2.0**-24,
    "complex64": 2.0**-24,
    "float64": 2.0**-53,
    "double": 2.0**-53,
    "complex128": 2.0**-53,
}

SAFETY = 8.0

# theta_13 of Higham (2005), Table 2.3: the largest ||A||_1 for which the [13/13] Pade
# approximant of e^A, evaluated without scaling, meets double-precision backward error
THETA_13 = 5.371920351148152


def dtype_name(dtype) -> str:
    """Normalise a numpy/torch dtype (or its name) to a plain name such as ``"float32"``."""
    name = getattr(dtype, "name", None) or str(dtype)
    name = name.replace("torch.", "").replace("numpy.", "")
    if name.startswith("<class"):
        name = name.split("'")[1].split(".")[-1]
    return name


def unit_roundoff(dtype) -> float:
    """Unit roundoff :math:`u = \\epsilon/2` of ``dtype`` (numpy or torch, or a name)."""
    name = dtype_name(dtype)
    try:
        return _UNIT_ROUNDOFF[name]
    except KeyError:
        from ..errors import InvalidParameterError

        raise InvalidParameterError(f"no tolerance known for dtype {name!r}") from None


@dataclass(frozen=True)
class Tolerance:
    rtol: float
    atol: float

    def allclose(self, actual, expected) -> bool:
        import numpy as np

        a, e = np.asarray(actual), np.asarray(expected)
        return bool(np.all(np.abs(a - e) <= self.atol + self.rtol * np.abs(e)))

    def max_violation(self, actual, expected) -> float:
        """max |a - e| / (atol + rtol |e|): <= 1 means within tolerance."""
        import numpy as np

        a, e = np.asarray(actual), np.asarray(expected)
        return float(np.max(np.abs(a - e) / (self.atol + self.rtol * np.abs(e)), initial=0.0))


def _check_finite_nonnegative(**values) -> None:
    from ..errors import InvalidParameterError

    for name, v in values.items():
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise InvalidParameterError(f"tolerance: {name} must be a number, got {v!r}") \
                from None
        if not math.isfinite(f) or f < 0:
            hint = (" (an infinite condition number, e.g. the eigenvector condition of a "
                    "defective matrix, gives no usable tolerance: bound the error another "
                    "way)" if name == "cond" and f == math.inf else "")
            raise InvalidParameterError(
                f"tolerance: {name} must be finite and >= 0, got {v!r}{hint}")


def tolerance(dtype="float64", *, n_ops: int = 1, cond: float = 1.0, scale: float = 1.0,
              solver_rtol: float = 0.0, worst_case: bool = False) -> Tolerance:
    """The tolerance for a result computed in ``dtype``.

    Parameters
    ----------
    dtype : numpy/torch dtype or name
    n_ops : int
        Length of the longest chain of dependent roundings (e.g. sequence length).
    cond : float
        Condition number of the problem (>= 1).
    scale : float
        Typical magnitude of the compared quantity, for ``atol``.
    solver_rtol : float
        Relative error of a discretisation or ODE solver, added.
    worst_case : bool
        Use :math:`n` instead of :math:`\\sqrt n` for the accumulation.

    Raises
    ------
    rnnmem.errors.InvalidParameterError
        When ``n_ops``, ``cond``, ``scale`` or ``solver_rtol`` is negative, NaN or infinite:
        an infinite condition number (a defective matrix's :math:`\\kappa(V)`) would give an
        infinite tolerance, and a comparison with it would pass whatever the values.
    """
    _check_finite_nonnegative(n_ops=n_ops, cond=cond, scale=scale, solver_rtol=solver_rtol)
    u = unit_roundoff(dtype)
    n = max(int(n_ops), 1)
    growth = float(n) if worst_case else math.sqrt(n)
    rtol = SAFETY * u * max(float(cond), 1.0) * growth + float(solver_rtol)
    return Tolerance(rtol=rtol, atol=rtol * float(scale))


def expm_error_growth(A) -> float:
    """Error growth of :func:`scipy.linalg.expm` at ``A``: the ``cond`` to pass to
    :func:`tolerance` for a float64 quantity computed from ``expm(A)``, with ``scale`` the
    sum of the absolute weights that combine its entries (e.g. :math:`\\|c\\|_1 \\|U\\|_1`
    for :math:`c^\\top e^{A} U`).

    .. math::

        g(A) = e^{\\min(\\|A\\|_1,\\ \\theta_{13})}\\,(1 + s), \\qquad
        s = \\max\\bigl(0, \\lceil \\log_2(\\|A\\|_1/\\theta_{13}) \\rceil\\bigr).

    Derivation (scaling and squaring, Higham 2005, SIAM J. Matrix Anal. Appl. 26(4)):
    ``expm`` scales :math:`B = 2^{-s}A` to :math:`\\|B\\|_1 \\le \\theta_{13}`, evaluates the
    [13/13] Pade approximant :math:`q(B)^{-1} p(B)` and squares :math:`s` times. The
    computed :math:`p(B)` carries absolute errors of order :math:`u\\,p(|B|) \\le
    u\\,e^{\\|B\\|/2}` (the absolute sum of its terms, which cancel for a stable
    :math:`A`), and solving with :math:`q(B) \\approx e^{-B/2}` multiplies them by up to
    :math:`\\|q(B)^{-1}\\| \\lesssim e^{\\|B\\|/2}`; each squaring adds an error of the
    same relative size. This is a model of the typical error, not a rigorous bound: the
    squaring phase of a strongly non-normal :math:`A` can lose more (then a comparison
    against an exact value, e.g. a sympy closed form, is the check to use).

    Measured against 50-digit mpmath exponentials (1,800 hypothesis draws of
    :func:`rnnmem.testing.strategies.linear_systems`, kinds normal, dissipative and
    nonnormal, :math:`N \\le 4`, :math:`t \\in \\{0.5, 2, 5, 8\\}`): the largest entry error
    of ``expm(W t)`` was at most :math:`1.6\\,u\\,g(Wt)`, the worst draws at
    :math:`\\|Wt\\|_1` just below :math:`\\theta_{13}` (no scaling, 87-178 :math:`u`);
    :math:`1 + \\|Wt\\|_2`, the model used before, was exceeded up to 35-fold.
    ``tests/numerics/test_tolerances.py`` keeps that check.

    Raises
    ------
    rnnmem.errors.InvalidParameterError
        When ``A`` is not a finite square matrix.
    """
    import numpy as np

    try:
        a = np.asarray(A, dtype=float)
    except (TypeError, ValueError):
        raise InvalidParameterError(
            f"expm_error_growth: A must be a real matrix, got {type(A).__name__}") from None
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise InvalidParameterError(
            f"expm_error_growth: A must be a square matrix, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise InvalidParameterError("expm_error_growth: A has NaN or infinite entries")
    norm = float(np.linalg.norm(a, 1)) if a.size else 0.0
    s = math.ceil(math.log2(norm / THETA_13)) if norm > THETA_13 else 0
    return math.exp(min(norm, THETA_13)) * (1 + s)
