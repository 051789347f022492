"""Classify the decay of a memory function: exponential, polynomial, or none.

The curse-of-memory results (Li, Han, E & Li, ICLR 2021; Wang, Li & Li, ICLR 2024,
Thm. 3.6) separate memory functions that decay exponentially,
:math:`M(t) \\approx a\\,e^{-\\beta t}`, which stably approximable RNNs produce, from those
that decay polynomially, :math:`M(t) \\approx a\\,(1+t)^{-p}`. On the tail of the samples
two least-squares lines are fitted,

.. math::

    \\log m = \\log a - \\beta\\, t \\quad\\text{(exponential)}, \\qquad
    \\log m = \\log a - p \\log(1 + t) \\quad\\text{(polynomial)},

and the one with the larger coefficient of determination :math:`R^2` (equivalently, the
smaller residual, since both explain the same :math:`\\log m`) is chosen.

Zeros and values in the rounding-error floor (below
:math:`10^{3}\\,\\varepsilon \\max m`) are excluded before the tail is taken, so a fast
exponential that underflows is fitted on the samples where it is still resolved.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..errors import InvalidParameterError, ShapeError
from . import _validate as V

__all__ = ["DecayFit", "classify_decay", "FLOOR", "T_STAT"]

#: Relative floor: samples with m <= FLOOR * max(m) are treated as zero (rounding noise).
FLOOR = 1e3 * np.finfo(float).eps
#: The fitted slope must be negative by at least this many standard errors to count as decay.
T_STAT = 3.0
MIN_POINTS = 3


@dataclass(frozen=True)
class DecayFit:
    """Result of :func:`classify_decay`.

    Attributes
    ----------
    kind : {"exponential", "polynomial", "none"}
    parameter : float
        The fitted decay parameter of ``kind``: the exponential rate :math:`\\beta` or the
        polynomial exponent :math:`p` (0.0 for ``"none"``); :attr:`parameter_name` says which.
        Read it by name: :attr:`rate` (exponential; nan for ``"none"``) or :attr:`exponent`
        (polynomial; nan otherwise). ``rate`` of a polynomial fit still returns its
        exponent, with a :class:`DeprecationWarning` (it was misread as a rate).
    r2_exp, r2_pol : float
        :math:`R^2` of the two fits on the tail (nan when there are too few points).
    exp_fit : (log_amp, rate)
        :math:`\\log m \\approx \\text{log\\_amp} - \\text{rate}\\cdot t`.
    pol_fit : (log_amp, power)
        :math:`\\log m \\approx \\text{log\\_amp} - \\text{power}\\cdot\\log(1+t)`.
    tail_start : float
        First time used in the fits.
    n_points : int
        Number of samples in the fits.
    """

    kind: Literal["exponential", "polynomial", "none"]
    parameter: float
    r2_exp: float
    r2_pol: float
    exp_fit: tuple[float, float]
    pol_fit: tuple[float, float]
    tail_start: float
    n_points: int = 0

    @property
    def parameter_name(self) -> str | None:
        """``"rate"`` (exponential), ``"exponent"`` (polynomial) or None."""
        return {"exponential": "rate", "polynomial": "exponent"}.get(self.kind)

    @property
    def rate(self) -> float:
        """The exponential rate :math:`\\beta` of :math:`a e^{-\\beta t}` (``"exponential"``);
        0.0 for ``"none"``. For a polynomial fit: its exponent, deprecated (use
        :attr:`exponent`)."""
        if self.kind == "polynomial":
            warnings.warn("DecayFit.rate of a polynomial fit is its exponent p of "
                          "(1+t)^-p, not a rate; read DecayFit.exponent (or .parameter)",
                          DeprecationWarning, stacklevel=2)
        return self.parameter

    @property
    def exponent(self) -> float:
        """The exponent :math:`p` of :math:`a (1+t)^{-p}` for ``"polynomial"``, else nan."""
        return self.parameter if self.kind == "polynomial" else float("nan")

    def describe(self) -> str:
        """One line naming the parameter by kind, e.g. ``exponential, rate 0.16``."""
        if self.kind == "none":
            return "no decay detected"
        return f"{self.kind}, {self.parameter_name} {self.parameter:.4g}"


def _line(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    """Least squares y = a + b x: returns (a, b, R^2, standard error of b)."""
    xm, ym = x.mean(), y.mean()
    sxx = float(np.sum((x - xm) ** 2))
    if sxx == 0:
        return float(ym), 0.0, float("nan"), float("inf")
    b = float(np.sum((x - xm) * (y - ym)) / sxx)
    a = float(ym - b * xm)
    res = y - (a + b * x)
    ss_res = float(np.sum(res**2))
    ss_tot = float(np.sum((y - ym) ** 2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res == 0 else 0.0)
    dof = x.size - 2
    se = math.sqrt(ss_res / dof / sxx) if dof > 0 else float("inf")
    return a, b, r2, se


def classify_decay(t, m, *, tail: float = 0.5, envelope: bool = False) -> DecayFit:
    """Decide whether ``m(t)`` decays exponentially, polynomially, or not at all.

    Parameters
    ----------
    t : (L,) array of times >= 0, strictly increasing, L >= 1 (a reversed or shuffled grid is
        refused: sort ``t`` and ``m`` together first)
    m : (L,) array of non-negative values (e.g. a memory function)
    tail : float in (0, 1]
        Fraction of the time range (of the resolved samples) used for the fits: the samples
        with :math:`t \\ge t_0 + (1 - \\text{tail})(t_1 - t_0)`.
    envelope : bool
        Fit the running tail supremum :math:`\\sup_{s \\ge t} m(s)` instead of ``m`` (for
        oscillating memory functions with zeros). Do not use it on noisy data: the tail
        supremum of noise decreases.

    Returns
    -------
    DecayFit
        ``kind="none"`` when ``m`` is (numerically) zero, has fewer than 3 resolved tail
        samples, or its better fit has a slope that is not negative by at least
        :data:`T_STAT` standard errors.
    """
    t = V.times(t, "t")
    m = V.as_float_array(m, "m")
    if m.shape != t.shape:
        raise ShapeError(f"t and m must have the same shape, got {t.shape} and {m.shape}")
    if t.size == 0:
        raise ShapeError("t and m are empty: nothing to classify")
    if t.size > 1 and not np.all(np.diff(t) > 0):
        i = int(np.argmin(np.diff(t) > 0))
        raise InvalidParameterError(
            f"t must be strictly increasing, but t[{i}] = {t[i]:g} >= t[{i + 1}] = "
            f"{t[i + 1]:g}; sort t and m together (order = np.argsort(t))")
    if np.any(m < 0):
        raise InvalidParameterError("m must be non-negative (a memory function)")
    if not (isinstance(tail, (int, float)) and 0 < tail <= 1):
        raise InvalidParameterError(f"tail must be in (0, 1], got {tail!r}")
    if envelope:
        m = np.maximum.accumulate(m[::-1])[::-1]
    nan = float("nan")
    top = float(m.max()) if m.size else 0.0
    keep = m > FLOOR * top if top > 0 else np.zeros(m.shape, bool)
    tk, mk = t[keep], m[keep]
    if tk.size < MIN_POINTS:
        return DecayFit("none", 0.0, nan, nan, (nan, nan), (nan, nan),
                        float(tk[0]) if tk.size else nan, int(tk.size))
    start = tk[0] + (1.0 - tail) * (tk[-1] - tk[0])
    sel = tk >= start
    if sel.sum() < MIN_POINTS:  # keep at least the last MIN_POINTS resolved samples
        sel = np.zeros_like(sel)
        sel[-MIN_POINTS:] = True
    tt, y = tk[sel], np.log(mk[sel])
    a_e, b_e, r2_e, se_e = _line(tt, y)
    a_p, b_p, r2_p, se_p = _line(np.log1p(tt), y)
    exp_fit, pol_fit = (a_e, -b_e), (a_p, -b_p)
    tail_start = float(tt[0])
    if not (np.isfinite(r2_e) or np.isfinite(r2_p)):
        return DecayFit("none", 0.0, r2_e, r2_p, exp_fit, pol_fit, tail_start, int(tt.size))
    use_exp = (np.nan_to_num(r2_e, nan=-np.inf) >= np.nan_to_num(r2_p, nan=-np.inf))
    slope, se = (b_e, se_e) if use_exp else (b_p, se_p)
    decays = slope < 0 and (se == 0 or -slope > T_STAT * se)
    if not decays:
        return DecayFit("none", 0.0, r2_e, r2_p, exp_fit, pol_fit, tail_start, int(tt.size))
    kind = "exponential" if use_exp else "polynomial"
    return DecayFit(kind, -slope, r2_e, r2_p, exp_fit, pol_fit, tail_start, int(tt.size))
