"""Stable approximation on arrays: perturbation curves, crossing points, a verdict across widths.

Wang, Li & Li (*Inverse approximation theory for nonlinear recurrent neural networks*,
ICLR 2024, Def. 3.4-3.5) measure how robust an approximant :math:`\\hat H(\\cdot;\\theta_m)` of
width :math:`m` is by its *perturbation error*

.. math::

    E_m(\\beta) = \\sup_{\\|\\tilde\\theta - \\theta_m\\| \\le \\beta}
                  \\big\\| H - \\hat H(\\cdot; \\tilde\\theta) \\big\\|,

the worst error over all weights within distance :math:`\\beta` of the trained (or
constructed) ones, and call a target *stably approximated* when the perturbation error is
continuous at :math:`\\beta = 0` uniformly in the width: small weight perturbations cost
little error however large :math:`m` is. Their inverse theorem says that only targets with
exponentially decaying memory can be stably approximated (polynomial memory forces
:math:`E_m(\\beta)` to jump away from :math:`E_m(0)` at radii :math:`\\beta_0(m) \\to 0`).

This module holds the array side (numpy only): a :class:`PerturbationCurve` (samples of
:math:`E_m(\\beta)` on a grid of radii, however obtained: the torch models of
:func:`rnnmem.train.perturb.perturbation_curve` or the closed form of
:func:`rnnmem.numerics.least_squares.linear_perturbation_curve`), its
:func:`crossing_point`, and :func:`stability_verdict`, an operational reading of Def. 3.5 on
a finite family of widths.

Estimating the supremum
-----------------------
For each radius :math:`\\beta_i` the caller draws :math:`K` perturbations and records the
:math:`K` errors (``samples``). Then

* ``sup[i]`` :math:`= \\max_k E(\\beta_i, k)`, a *lower* estimate of :math:`E_m(\\beta_i)`
  (random directions rarely hit the worst one; the estimate grows with :math:`K`);
* ``envelope[i]`` :math:`= \\max(E(0), \\max_{j \\le i} \\text{sup}[j])`, the running maximum
  over radii. :math:`E_m` is non-decreasing in :math:`\\beta` (a larger ball contains the
  smaller one), so the envelope is the better estimate of :math:`E_m(\\beta_i)` from the
  samples at hand; it is what the original experiments plot (``radarFudan/Curse-of-memory``,
  ``src/perturb.py``, keeps a running maximum across radii).

A sample that is NaN (a perturbed model that diverged) is recorded as :math:`+\\infty`: the
error of a blown-up model is unbounded.

Operational criterion (:func:`stability_verdict`) and its limits
----------------------------------------------------------------
Fix one error *level* :math:`\\varepsilon` for the whole family (default: ``threshold``
times the largest unperturbed error :math:`\\max_m E_m(0)`). The *crossing point*
:math:`\\beta_0(m)` is the smallest radius where the envelope exceeds :math:`\\varepsilon`
(interpolated linearly in :math:`\\log\\beta` and :math:`\\log E`). If the approximation is
stable, :math:`E_m(\\beta) \\le E_m(0) + \\omega(\\beta)` with one modulus :math:`\\omega` for all
:math:`m`, so :math:`\\beta_0(m) \\ge \\omega^{-1}(\\varepsilon - \\max_m E_m(0)) > 0`: the crossing
points stay bounded away from zero. If it is unstable, :math:`\\beta_0(m) \\to 0`.
The verdict fits :math:`\\log\\beta_0 = a + b\\log m` by least squares and, with the
Student-t quantile :math:`q` of level ``alpha`` and the slope's standard error :math:`s`:

* ``"unstable"`` if :math:`b + q s < -\\text{slope\\_tol}` (the crossing points shrink at
  least like :math:`m^{-\\text{slope\\_tol}}`, significantly);
* ``"stable"`` if :math:`b - q s \\ge -\\text{slope\\_tol}` (no significant shrinking beyond
  that rate);
* ``"inconclusive"`` otherwise, or with fewer than ``min_widths`` widths, or when every
  crossing is left-censored (the envelope exceeds the level already at the smallest radius:
  the grid starts too high or the level is too low).

Limits, stated plainly: Def. 3.5 is asymptotic in :math:`m` and :math:`\\beta \\to 0`; on a
finite range of widths a family whose :math:`\\beta_0(m)` decreases to a small positive limit
looks "unstable", and one whose decrease starts beyond the largest width looks "stable".
``slope_tol`` is a practical tolerance, not part of the definition. A right-censored
crossing (never crossed on the grid) enters the fit as the largest radius and a
left-censored one as the smallest, both of which make the fitted decrease *smaller* in
magnitude (they can hide instability, never invent it, when the censored widths are the
large ones resp. the small ones). The suprema are random lower estimates; the verdict is
only as good as :math:`K` and the grid of radii.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from ..errors import InvalidParameterError, ShapeError
from ..limits import check_count, check_memory
from . import _validate as V

__all__ = [
    "PerturbationCurve",
    "Crossing",
    "StabilityVerdict",
    "check_betas",
    "parse_betas",
    "crossing_point",
    "crossing_points_across_widths",
    "stability_verdict",
    "VERDICTS",
    "original_betas",
    "blowup_radius",
    "curve_intersections",
    "Intersection",
    "BlowupVerdict",
    "blowup_verdict",
    "BLOWUP_VERDICTS",
]

VERDICTS = ("stable", "unstable", "inconclusive")


# --------------------------------------------------------------------------------------
# the grid of radii
# --------------------------------------------------------------------------------------
def check_betas(betas, name: str = "betas") -> np.ndarray:
    """A finite, positive, strictly increasing 1-D float array (at least one radius)."""
    b = V.as_float_array(betas, name)
    if b.ndim == 0:
        b = b[None]
    if b.ndim != 1 or b.size == 0:
        raise ShapeError(f"{name} must be a non-empty 1-D array of radii, got shape {b.shape}")
    if np.any(b <= 0):
        raise InvalidParameterError(f"{name} must be positive (the radius 0 is E(0), given "
                                    f"separately); got min {float(b.min())!r}")
    if b.size > 1 and np.any(np.diff(b) <= 0):
        raise InvalidParameterError(f"{name} must be strictly increasing")
    return b


def original_betas(n: int = 21, start: float = 1e-3, exponent_step: float = 0.5
                   ) -> np.ndarray:
    """The radii of the original experiments, :math:`\\beta_i = 10^{-3}\\cdot 2^{i/2}`,
    :math:`i = 0, \\dots, 20` (radarFudan/Curse-of-memory, ``src/perturb.py`` with
    ``perturb_range=21``, ``perturbation_interval=0.5``; it also evaluates
    :math:`\\beta = 0`, which is :math:`E(0)` here): ``start * 2**(i * exponent_step)``."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InvalidParameterError(f"n must be a positive integer, got {n!r}")
    for name, v in (("start", start), ("exponent_step", exponent_step)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                or v <= 0:
            raise InvalidParameterError(f"{name} must be a positive number, got {v!r}")
    return check_betas(float(start) * 2.0 ** (np.arange(int(n)) * float(exponent_step)))


def parse_betas(spec: str) -> np.ndarray:
    """``"lo:hi:n"`` -> ``n`` radii log-spaced from ``lo`` to ``hi`` (inclusive);
    ``"a,b,c"`` -> those radii; ``"original"`` -> :func:`original_betas`. Validated by
    :func:`check_betas`."""
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidParameterError(f"betas: expected 'lo:hi:n' or 'a,b,...', got {spec!r}")
    s = spec.strip()
    if s == "original":
        return original_betas()
    bad = InvalidParameterError(
        f"betas: expected 'lo:hi:n' (log-spaced) or 'a,b,...', got {spec!r}")
    if ":" in s:
        parts = s.split(":")
        if len(parts) != 3:
            raise bad
        try:
            lo, hi, n = float(parts[0]), float(parts[1]), int(parts[2])
        except ValueError:
            raise bad from None
        if n < 1:
            raise InvalidParameterError(f"betas {spec!r}: the count must be >= 1")
        check_count(n, f"betas {spec!r}: the count")
        check_memory(8.0 * n, f"betas {spec!r}", "use fewer radii")
        if not (lo > 0 and hi > 0 and math.isfinite(lo) and math.isfinite(hi)):
            raise InvalidParameterError(f"betas {spec!r}: radii must be positive and finite")
        if n > 1 and not hi > lo:
            raise InvalidParameterError(f"betas {spec!r}: need lo < hi")
        b = np.geomspace(lo, hi, n) if n > 1 else np.array([lo])
    else:
        try:
            b = np.array([float(v) for v in s.split(",")])
        except ValueError:
            raise bad from None
    return check_betas(b, "betas")


# --------------------------------------------------------------------------------------
# the curve
# --------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class PerturbationCurve:
    """Samples of the perturbation error :math:`E_m(\\beta)` on a grid of radii.

    Build it with :meth:`from_samples`, which computes ``sup`` and ``envelope``.

    Attributes
    ----------
    betas : (n_beta,) positive, strictly increasing radii
    samples : (n_beta, K) errors of the K perturbations at each radius (NaN -> +inf)
    sup : (n_beta,) :math:`\\max_k` samples (a lower estimate of :math:`E_m(\\beta)`)
    envelope : (n_beta,) running maximum :math:`\\max(E(0), \\max_{j\\le i}\\text{sup}_j)`
    e0 : float
        The unperturbed error :math:`E_m(0)`.
    meta : dict
        How the samples were made (norm, scope, repeats, seed, width, timings, ...).
    """

    betas: np.ndarray
    samples: np.ndarray
    sup: np.ndarray
    envelope: np.ndarray
    e0: float
    meta: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_samples(cls, betas, samples, e0, meta: Mapping[str, Any] | None = None
                     ) -> "PerturbationCurve":
        """Validate the raw samples and derive ``sup`` and ``envelope``.

        Parameters
        ----------
        betas : (n_beta,) radii, positive and strictly increasing
        samples : (n_beta, K) errors >= 0 (+inf allowed; NaN is read as +inf)
        e0 : float >= 0, finite
        meta : mapping, optional
        """
        b = check_betas(betas)
        s = np.array(samples, dtype=float)  # copy: NaN -> inf below
        if s.ndim == 1 and b.size == 1:
            s = s[None]
        if s.ndim != 2 or s.shape[0] != b.size or s.shape[1] == 0:
            raise ShapeError(f"samples must have shape (n_beta, K) = ({b.size}, K >= 1), "
                             f"got {s.shape}")
        s[np.isnan(s)] = np.inf
        if np.any(s < 0):
            raise InvalidParameterError("samples must be non-negative errors")
        try:
            e0f = float(e0)
        except (TypeError, ValueError):
            raise InvalidParameterError(f"e0 must be a number, got {e0!r}") from None
        if not math.isfinite(e0f) or e0f < 0:
            raise InvalidParameterError(f"e0 (the unperturbed error) must be finite and >= 0, "
                                        f"got {e0!r}")
        sup = s.max(axis=1)  # (n_beta,)
        env = np.maximum.accumulate(np.maximum(sup, e0f))  # (n_beta,)
        return cls(b, s, sup, env, e0f, dict(meta or {}))

    @property
    def repeats(self) -> int:
        return int(self.samples.shape[1])

    def to_dict(self) -> dict:
        """JSON-ready dict (``inf`` becomes the string ``"inf"``)."""
        return {"betas": _json_list(self.betas), "e0": self.e0,
                "sup": _json_list(self.sup), "envelope": _json_list(self.envelope),
                "samples": [_json_list(row) for row in self.samples],
                "meta": dict(self.meta)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PerturbationCurve":
        """Inverse of :meth:`to_dict` (``sup``/``envelope`` are recomputed and checked)."""
        try:
            betas, samples, e0 = d["betas"], d["samples"], d["e0"]
        except (KeyError, TypeError):
            raise InvalidParameterError("a perturbation curve needs betas, samples and e0") \
                from None
        parse = np.vectorize(lambda v: float("inf") if v == "inf" else
                             float("nan") if v is None else float(v), otypes=[float])
        return cls.from_samples(parse(np.asarray(betas, dtype=object)),
                                parse(np.asarray(samples, dtype=object)), e0, d.get("meta"))


def _json_list(a) -> list:
    return [("inf" if np.isposinf(v) else None if np.isnan(v) else float(v))
            for v in np.asarray(a, dtype=float).ravel()]


# --------------------------------------------------------------------------------------
# crossing points
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Crossing:
    """Where an envelope first exceeds a level.

    Attributes
    ----------
    beta : float
        The crossing radius :math:`\\beta_0`; for ``censored="left"`` an upper bound (the
        smallest radius), for ``"right"`` a lower bound (the largest radius).
    level : float
        The error level that was crossed.
    censored : {"none", "left", "right"}
        ``"left"``: the envelope exceeds the level already at the smallest radius;
        ``"right"``: it never does on the grid.
    """

    beta: float
    level: float
    censored: str = "none"


def _check_threshold(threshold, relative: bool) -> float:
    try:
        th = float(threshold)
    except (TypeError, ValueError):
        raise InvalidParameterError(f"threshold must be a number, got {threshold!r}") from None
    if not math.isfinite(th) or th <= 0:
        raise InvalidParameterError(f"threshold must be positive and finite, got {threshold!r}")
    if relative and th <= 1:
        raise InvalidParameterError(f"a relative threshold (a multiple of E(0)) must be > 1, "
                                    f"got {threshold!r}: the envelope is never below E(0)")
    return th


def crossing_point(curve: PerturbationCurve, threshold: float = 2.0, *,
                   relative: bool = True) -> Crossing:
    """Smallest radius where the envelope of ``curve`` exceeds a level.

    .. math::

        \\beta_0 = \\min\\{\\beta : \\bar E(\\beta) > \\varepsilon\\}, \\qquad
        \\varepsilon = \\text{threshold}\\cdot E(0) \\ \\text{(relative)} \\ \\text{or}\\
        \\text{threshold} \\ \\text{(absolute)},

    the *crossing point* of the perturbation curve (Wang, Li & Li, ICLR 2024, Sec. 3.3:
    the radius beyond which the perturbed error departs from the unperturbed one). Between
    the grid radii :math:`\\beta_{i-1} < \\beta_0 \\le \\beta_i` it is interpolated linearly in
    :math:`(\\log\\beta, \\log\\bar E)`; when :math:`\\bar E(\\beta_i) = \\infty` (a blow-up) or a
    value is 0, at the geometric midpoint :math:`\\sqrt{\\beta_{i-1}\\beta_i}`.

    Parameters
    ----------
    curve : PerturbationCurve
    threshold : float
        ``relative=True``: a factor > 1 of :math:`E(0)` (e.g. 2 or 10). ``relative=False``:
        the level itself (> 0).
    relative : bool

    Returns
    -------
    Crossing
        Censored ``"left"`` (``beta`` = smallest radius, an upper bound) when the envelope
        already exceeds the level there, ``"right"`` (``beta`` = largest radius, a lower
        bound) when it never does.
    """
    if not isinstance(curve, PerturbationCurve):
        raise InvalidParameterError(f"curve must be a PerturbationCurve, got "
                                    f"{type(curve).__name__}")
    th = _check_threshold(threshold, relative)
    level = th * curve.e0 if relative else th
    return _crossing(curve.betas, curve.envelope, level)


def _crossing(betas: np.ndarray, env: np.ndarray, level: float,
              inclusive: bool = False) -> Crossing:
    above = np.nonzero(env >= level if inclusive else env > level)[0]
    if above.size == 0:
        return Crossing(float(betas[-1]), float(level), "right")
    i = int(above[0])
    if i == 0:
        return Crossing(float(betas[0]), float(level), "left")
    lb0, lb1 = math.log(betas[i - 1]), math.log(betas[i])
    e_lo, e_hi = float(env[i - 1]), float(env[i])
    if math.isfinite(e_hi) and e_lo > 0 and level > 0:
        y0, y1, yl = math.log(e_lo), math.log(e_hi), math.log(level)
        frac = (yl - y0) / (y1 - y0) if y1 > y0 else 1.0
    else:
        frac = 0.5
    frac = min(max(frac, 0.0), 1.0)
    return Crossing(float(math.exp(lb0 + frac * (lb1 - lb0))), float(level), "none")


def _curves(curves_by_m) -> list[tuple[int, PerturbationCurve]]:
    if not isinstance(curves_by_m, Mapping) or not curves_by_m:
        raise InvalidParameterError("curves_by_m must be a non-empty mapping width -> "
                                    "PerturbationCurve")
    out = []
    for m, c in curves_by_m.items():
        if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
            raise InvalidParameterError(f"widths must be positive integers, got {m!r}")
        if not isinstance(c, PerturbationCurve):
            raise InvalidParameterError(f"curve of width {m} is a {type(c).__name__}, not a "
                                        "PerturbationCurve")
        out.append((int(m), c))
    return sorted(out)


def _family_level(items, threshold, level) -> tuple[float, str]:
    if level is not None:
        lv = _check_threshold(level, relative=False)
        return lv, f"absolute level {lv:.6g}"
    th = _check_threshold(threshold, relative=True)
    top = max(c.e0 for _, c in items)
    if top == 0:
        raise InvalidParameterError("every E_m(0) is 0, so a level relative to them is 0; "
                                    "pass an absolute level=")
    return th * top, f"{th:g} x max_m E_m(0) = {th * top:.6g}"


def crossing_points_across_widths(curves_by_m, threshold: float = 10.0, *,
                                  level: float | None = None) -> dict[int, Crossing]:
    """Crossing points :math:`\\beta_0(m)` of a family of curves at one common level.

    The level is ``level`` (absolute) when given, else ``threshold`` times the largest
    unperturbed error :math:`\\max_m E_m(0)` of the family: one level for every width, as
    the uniform-in-:math:`m` reading of Def. 3.5 requires (a level relative to each
    :math:`E_m(0)` would shrink with the approximation error and make the crossing points of
    a stable family shrink too).

    Returns
    -------
    dict width -> Crossing, ordered by width.
    """
    items = _curves(curves_by_m)
    lv, _ = _family_level(items, threshold, level)
    return {m: _crossing(c.betas, c.envelope, lv) for m, c in items}


# --------------------------------------------------------------------------------------
# the verdict
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StabilityVerdict:
    """Result of :func:`stability_verdict`: the verdict and its evidence.

    Attributes
    ----------
    verdict : {"stable", "unstable", "inconclusive"}
    reason : str
        One sentence on why.
    widths : tuple of int
    beta0 : tuple of float
        Crossing point per width (censored ones at their bound).
    censored : tuple of str
        ``"none"``, ``"left"`` or ``"right"`` per width.
    e0 : tuple of float
        :math:`E_m(0)` per width.
    level : float
        The common error level.
    level_rule : str
        How the level was chosen.
    slope, slope_se : float
        Least-squares slope of :math:`\\log\\beta_0` against :math:`\\log m` and its standard
        error (nan/inf when undefined).
    slope_ci : (float, float)
        ``slope -/+ q * slope_se``.
    slope_tol, alpha : float
        The tolerance and the test level used.
    """

    verdict: str
    reason: str
    widths: tuple[int, ...]
    beta0: tuple[float, ...]
    censored: tuple[str, ...]
    e0: tuple[float, ...]
    level: float
    level_rule: str
    slope: float
    slope_se: float
    slope_ci: tuple[float, float]
    slope_tol: float
    alpha: float

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        for k in ("beta0", "e0", "slope_ci", "widths", "censored"):
            d[k] = list(d[k])
        return _finite_or_str(d)


def _finite_or_str(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")  # NaN: null
    if isinstance(obj, dict):
        return {k: _finite_or_str(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite_or_str(v) for v in obj]
    return obj


def _slope(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares slope of y on x and its standard error."""
    xm = x.mean()
    sxx = float(np.sum((x - xm) ** 2))
    if sxx == 0:
        return float("nan"), float("inf")
    b = float(np.sum((x - xm) * (y - y.mean())) / sxx)
    dof = x.size - 2
    if dof <= 0:
        return b, float("inf")
    res = y - (y.mean() + b * (x - xm))
    return b, math.sqrt(float(np.sum(res**2)) / dof / sxx)


def _check_trend_options(slope_tol, alpha, min_widths) -> None:
    """The options of a trend-in-log-m verdict (:func:`stability_verdict`,
    :func:`blowup_verdict`), each refused by name."""
    if not (isinstance(slope_tol, (int, float)) and math.isfinite(slope_tol)
            and slope_tol >= 0):
        raise InvalidParameterError(f"slope_tol must be finite and >= 0, got {slope_tol!r}")
    if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
        raise InvalidParameterError(f"alpha must be in (0, 1), got {alpha!r}")
    if isinstance(min_widths, bool) or not isinstance(min_widths, int) or min_widths < 3:
        raise InvalidParameterError(f"min_widths must be an integer >= 3 (a slope needs a "
                                    f"standard error), got {min_widths!r}")


def stability_verdict(curves_by_m, *, threshold: float = 10.0, level: float | None = None,
                      slope_tol: float = 0.25, alpha: float = 0.05,
                      min_widths: int = 3) -> StabilityVerdict:
    """Judge a family of perturbation curves stable or unstable (Def. 3.5, operationally).

    The criterion (see the module docstring for its derivation and limits): with the
    crossing points :math:`\\beta_0(m)` at one common level (``level``, or ``threshold``
    times :math:`\\max_m E_m(0)`), fit :math:`\\log\\beta_0 = a + b\\log m`; with
    :math:`q` the two-sided Student-t quantile of level ``alpha`` on :math:`n - 2` degrees of
    freedom and :math:`s` the standard error of :math:`b`,

    * *unstable* when :math:`b + qs < -\\text{slope\\_tol}`: the crossing points shrink
      towards 0 as the width grows;
    * *stable* when :math:`b - qs \\ge -\\text{slope\\_tol}`: they stay bounded away from 0;
    * *inconclusive* otherwise.

    Parameters
    ----------
    curves_by_m : mapping width (int >= 1) -> PerturbationCurve
    threshold : float > 1
        Multiple of :math:`\\max_m E_m(0)` giving the level (ignored when ``level`` is given).
    level : float > 0, optional
        An absolute error level.
    slope_tol : float >= 0
        Decrease slower than :math:`m^{-\\text{slope\\_tol}}` counts as bounded.
    alpha : float in (0, 1)
    min_widths : int >= 3

    Returns
    -------
    StabilityVerdict
    """
    from scipy import stats

    items = _curves(curves_by_m)
    _check_trend_options(slope_tol, alpha, min_widths)
    lv, rule = _family_level(items, threshold, level)
    widths = tuple(m for m, _ in items)
    cross = [_crossing(c.betas, c.envelope, lv) for _, c in items]
    beta0 = tuple(c.beta for c in cross)
    cens = tuple(c.censored for c in cross)
    e0 = tuple(c.e0 for _, c in items)
    x, y = np.log(np.array(widths, float)), np.log(np.array(beta0))
    b, se = _slope(x, y) if len(widths) >= 2 else (float("nan"), float("inf"))
    dof = len(widths) - 2
    q = float(stats.t.ppf(1 - alpha / 2, dof)) if dof > 0 else float("inf")
    ci = (b - q * se, b + q * se) if math.isfinite(se) else (float("-inf"), float("inf"))
    common = dict(widths=widths, beta0=beta0, censored=cens, e0=e0, level=lv,
                  level_rule=rule, slope=b, slope_se=se, slope_ci=ci,
                  slope_tol=float(slope_tol), alpha=float(alpha))
    if len(widths) < min_widths:
        return StabilityVerdict("inconclusive", f"{len(widths)} width(s); at least "
                                f"{min_widths} are needed for a slope with an error", **common)
    if all(c == "left" for c in cens):
        return StabilityVerdict("inconclusive", "every envelope exceeds the level at the "
                                "smallest radius (start the grid lower or raise the level)",
                                **common)
    if all(c == "right" for c in cens):
        return StabilityVerdict("stable", f"no envelope reaches the level on the grid: "
                                f"beta0(m) > {beta0[0]:.3g} for every width", **common)
    if ci[1] < -slope_tol:
        return StabilityVerdict(
            "unstable", f"crossing points shrink with the width: slope {b:.3g} "
            f"(CI {ci[0]:.3g}..{ci[1]:.3g}) < -{slope_tol:g}; beta0 from {beta0[0]:.3g} "
            f"(m={widths[0]}) to {beta0[-1]:.3g} (m={widths[-1]})", **common)
    if ci[0] >= -slope_tol:
        return StabilityVerdict(
            "stable", f"crossing points stay bounded away from 0: slope {b:.3g} "
            f"(CI {ci[0]:.3g}..{ci[1]:.3g}) >= -{slope_tol:g}; min beta0 "
            f"{min(beta0):.3g}", **common)
    return StabilityVerdict(
        "inconclusive", f"slope {b:.3g} with CI {ci[0]:.3g}..{ci[1]:.3g} straddles "
        f"-{slope_tol:g}", **common)


# --------------------------------------------------------------------------------------
# the blow-up rule: one level fixed by the target's scale, a CI for the trend in log m
# --------------------------------------------------------------------------------------
BLOWUP_VERDICTS = ("stable", "unstable", "inconclusive", "training_failed")


def blowup_radius(curve: PerturbationCurve, level: float) -> Crossing:
    """The *blow-up radius*: the first :math:`\\beta` where :math:`\\bar E(\\beta) \\ge`
    ``level`` (the envelope, interpolated as :func:`crossing_point`); censored ``"left"``
    when already at the smallest radius, ``"right"`` when never on the grid."""
    if not isinstance(curve, PerturbationCurve):
        raise InvalidParameterError(f"curve must be a PerturbationCurve, got "
                                    f"{type(curve).__name__}")
    lv = _check_threshold(level, relative=False)
    return _crossing(curve.betas, curve.envelope, lv, inclusive=True)


@dataclass(frozen=True)
class Intersection:
    """Where the curve of the wider model of a consecutive pair rises above the narrower.

    ``kind``: ``"crossing"`` (``beta`` interpolated in :math:`\\log\\beta` on
    :math:`\\log\\bar E_{m'} - \\log\\bar E_m`), ``"never_below"`` (the wider curve is not
    below at the smallest radius: no crossing in the original's sense, ``beta`` nan) or
    ``"right"`` (below on the whole grid, ``beta`` = the largest radius, a lower bound).
    """

    narrow: int
    wide: int
    beta: float
    kind: str


def _log_env(env: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(np.asarray(env, dtype=float))


def curve_intersections(curves_by_m) -> list[Intersection]:
    """The original's reading: intersections of consecutive widths' envelopes.

    In the PerturbationError figures of Wang, Li & Li (ICLR 2024) the curve of a wider
    model starts lower (smaller :math:`E_m(0)`) and, for a target that cannot be stably
    approximated, rises above the narrower model's curve at a radius :math:`\\beta^*` that
    moves left as the widths grow. For each consecutive pair :math:`m < m'` (on one grid of
    radii) this returns the first radius where
    :math:`d(\\beta) = \\log\\bar E_{m'}(\\beta) - \\log\\bar E_m(\\beta)` turns from negative
    to :math:`\\ge 0`, interpolated linearly in :math:`\\log\\beta` (at the geometric
    midpoint when a value is infinite).
    """
    items = _curves(curves_by_m)
    out = []
    for (m, a), (mp, c) in zip(items, items[1:]):
        if a.betas.shape != c.betas.shape or not np.allclose(a.betas, c.betas, rtol=1e-12):
            raise InvalidParameterError(f"the curves of widths {m} and {mp} use different "
                                        "radii; intersections need one grid")
        la, lc = _log_env(a.envelope), _log_env(c.envelope)
        with np.errstate(invalid="ignore"):
            d = lc - la  # nan where both are inf: not below
        below = d < 0
        if not below[0]:
            out.append(Intersection(m, mp, float("nan"), "never_below"))
            continue
        up = np.nonzero(~below)[0]
        if up.size == 0:
            out.append(Intersection(m, mp, float(a.betas[-1]), "right"))
            continue
        i = int(up[0])
        lb0, lb1 = math.log(a.betas[i - 1]), math.log(a.betas[i])
        d0, d1 = float(d[i - 1]), float(d[i])
        frac = -d0 / (d1 - d0) if math.isfinite(d1) and d1 > d0 else 0.5
        out.append(Intersection(m, mp, float(math.exp(lb0 + min(max(frac, 0.0), 1.0)
                                                      * (lb1 - lb0))), "crossing"))
    return out


@dataclass(frozen=True)
class BlowupVerdict(StabilityVerdict):
    """Result of :func:`blowup_verdict`: the fields of :class:`StabilityVerdict` (``beta0``
    are the blow-up radii, ``slope_ci`` the interval the verdict used) and

    Attributes
    ----------
    level_factor, target_scale : float
        ``level = level_factor * target_scale`` (unless an absolute level was given).
    ci_method : {"bootstrap", "regression"}
    regression_ci, bootstrap_ci : (float, float)
        The Student-t interval of the least-squares slope, and the percentile interval of
        the slope over bootstrap resamples of the repeats (nan without repeats).
    intersections : tuple of Intersection
        The original's reading, consecutive widths.
    intersections_move_left : bool or None
        Whether the found crossings decrease strictly with the width (None with < 2).
    training : dict width -> str
        ``"ok"`` or why the width's training rule failed.
    """

    level_factor: float = 1.0
    target_scale: float = float("nan")
    ci_method: str = "regression"
    regression_ci: tuple[float, float] = (float("nan"), float("nan"))
    bootstrap_ci: tuple[float, float] = (float("nan"), float("nan"))
    intersections: tuple = ()
    intersections_move_left: bool | None = None
    training: Mapping[int, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        for k in ("beta0", "e0", "slope_ci", "widths", "censored", "regression_ci",
                  "bootstrap_ci"):
            d[k] = list(d[k])
        d["intersections"] = [{"narrow": i.narrow, "wide": i.wide, "beta": i.beta,
                               "kind": i.kind} for i in self.intersections]
        d["training"] = {str(m): v for m, v in dict(self.training).items()}
        return _finite_or_str(d)


def _target_scale(items, target_scale) -> float:
    if target_scale is not None:
        return _check_threshold(target_scale, relative=False)
    scales = [c.meta.get("target_scale") for _, c in items]
    if any(v is None for v in scales):
        raise InvalidParameterError(
            "target_scale: not given and not in every curve's meta (curves made by "
            "rnnmem.train.perturb.perturbation_curve on an EvalSet carry it); pass "
            "target_scale= (e.g. the mean squared target) or level=")
    sc = np.array(scales, dtype=float)
    if not np.all(np.isfinite(sc)) or np.any(sc <= 0):
        raise InvalidParameterError(f"target_scale: the curves carry {scales}, not all "
                                    "positive")
    if np.ptp(sc) > 1e-9 * sc.max():
        raise InvalidParameterError(f"target_scale: the curves were evaluated on different "
                                    f"targets (scales {scales}); one level needs one target")
    return float(sc[0])


def _radii(items, level, sups=None) -> tuple[np.ndarray, list[str]]:
    beta0, cens = [], []
    for j, (_, c) in enumerate(items):
        env = c.envelope if sups is None else \
            np.maximum.accumulate(np.maximum(sups[j], c.e0))
        cr = _crossing(c.betas, env, level, inclusive=True)
        beta0.append(cr.beta)
        cens.append(cr.censored)
    return np.array(beta0), cens


def blowup_verdict(curves_by_m, *, level_factor: float = 1.0,
                   target_scale: float | None = None, level: float | None = None,
                   training: Mapping[int, str] | None = None, slope_tol: float = 0.25,
                   alpha: float = 0.05, n_boot: int = 2000, seed: int = 0,
                   min_widths: int = 3) -> BlowupVerdict:
    """The one verdict rule of ``rnnmem perturb`` and the curse-of-memory claims.

    The *blow-up radius* :math:`\\beta_b(m)` is the first radius where the envelope
    reaches a level fixed by the *target*, not by the models:

    .. math::

        \\varepsilon = \\text{level\\_factor}\\cdot\\|y\\|^2, \\qquad
        \\beta_b(m) = \\min\\{\\beta : \\bar E_m(\\beta) \\ge \\varepsilon\\},

    with :math:`\\|y\\|^2` the loss of the zero output on the evaluation set (the squared
    :math:`L^2` norm of the target in the loss's own weighting; ``meta["target_scale"]``
    of the curves): at level factor 1 a perturbed model is as bad as predicting nothing.
    Unlike levels relative to :math:`\\max_m E_m(0)` (which differ between the families
    compared), this level is the same for every row of the curse-of-memory table on one
    target. Then :math:`\\log\\beta_b = a + b\\log m` is fitted and its slope :math:`b`
    judged as in :func:`stability_verdict` (Wang, Li & Li, ICLR 2024, Def. 3.5: unstable
    when the radii shrink with :math:`m`) with a confidence interval of level ``alpha``:
    the percentile interval over ``n_boot`` bootstrap resamples of the repeats (each
    width's :math:`K` perturbation columns drawn with replacement; the estimation noise of
    the suprema) when every curve has :math:`K \\ge 2`, else the Student-t interval of the
    regression. Both are reported, with the original's own reading
    (:func:`curve_intersections`).

    A width whose training rule failed (``training[m] != "ok"``, e.g. from
    :meth:`rnnmem.train.ensure.EnsureResult.statuses`) turns the verdict into
    ``"training_failed"``: the family is not an approximating sequence, so the
    perturbation test does not apply (the radii are still reported).

    Parameters
    ----------
    curves_by_m : mapping width -> PerturbationCurve
    level_factor : float > 0
    target_scale : float > 0, optional
        Default: the curves' ``meta["target_scale"]``.
    level : float > 0, optional
        An absolute level instead (``level_factor``/``target_scale`` ignored).
    training : mapping width -> str, optional
    slope_tol, alpha, min_widths :
        As :func:`stability_verdict`.
    n_boot : int >= 100
    seed : int
        Seed of the bootstrap.

    Returns
    -------
    BlowupVerdict
    """
    from scipy import stats

    items = _curves(curves_by_m)
    _check_trend_options(slope_tol, alpha, min_widths)
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 100:
        raise InvalidParameterError(f"n_boot must be an integer >= 100, got {n_boot!r}")
    if level is not None:
        lv = _check_threshold(level, relative=False)
        lf, scale, rule = float("nan"), float("nan"), f"absolute level {lv:.6g}"
    else:
        lf = _check_threshold(level_factor, relative=False)
        scale = _target_scale(items, target_scale)
        lv = lf * scale
        rule = f"{lf:g} x target scale |y|^2 = {scale:.6g} -> {lv:.6g}"
    status = {int(m): str(v) for m, v in dict(training or {}).items()}
    widths = tuple(m for m, _ in items)
    beta0, cens = _radii(items, lv)
    e0 = tuple(c.e0 for _, c in items)
    x, y = np.log(np.array(widths, float)), np.log(beta0)
    b, se = _slope(x, y) if len(widths) >= 2 else (float("nan"), float("inf"))
    dof = len(widths) - 2
    q = float(stats.t.ppf(1 - alpha / 2, dof)) if dof > 0 else float("inf")
    reg_ci = (b - q * se, b + q * se) if math.isfinite(se) else (float("-inf"), float("inf"))
    boot_ci = _bootstrap_ci(items, x, lv, alpha, n_boot, seed)
    use_boot = math.isfinite(boot_ci[0])
    ci = boot_ci if use_boot else reg_ci
    inter = tuple(curve_intersections(dict(items))) if len(items) >= 2 else ()
    found = [i.beta for i in inter if i.kind == "crossing"]
    left = None if len(found) < 2 else bool(np.all(np.diff(found) < 0))
    common = dict(widths=widths, beta0=tuple(float(v) for v in beta0), censored=tuple(cens),
                  e0=e0, level=lv, level_rule=rule, slope=b, slope_se=se, slope_ci=ci,
                  slope_tol=float(slope_tol), alpha=float(alpha), level_factor=lf,
                  target_scale=scale, ci_method="bootstrap" if use_boot else "regression",
                  regression_ci=reg_ci, bootstrap_ci=boot_ci, intersections=inter,
                  intersections_move_left=left,
                  training={m: status.get(m, "ok") for m in sorted(set(widths) | set(status))})
    return _judge(common, status, min_widths)


def _bootstrap_ci_loop(items, x, level, alpha, n_boot, seed) -> tuple[float, float]:
    """Percentile interval of the blow-up slope over resamples of each width's repeats
    (nan with fewer than two widths or a curve with one repeat). The reference, one
    resample at a time; :func:`_bootstrap_ci` is the same computation vectorised."""
    if len(items) < 2 or any(c.repeats < 2 for _, c in items):
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    slopes = np.empty(n_boot)
    for r in range(n_boot):
        sups = [c.samples[:, rng.integers(0, c.repeats, c.repeats)].max(axis=1)
                for _, c in items]
        bb, _ = _radii(items, level, sups)
        slopes[r] = _slope(x, np.log(bb))[0]
    return (float(np.quantile(slopes, alpha / 2)), float(np.quantile(slopes, 1 - alpha / 2)))


def _crossings_columns(betas: np.ndarray, env: np.ndarray, level: float) -> np.ndarray:
    """:func:`_crossing` (inclusive) of every column of ``env`` (n_beta, n): the radii."""
    lb = np.log(betas)
    above = env >= level
    anyab = above.any(axis=0)
    i = np.where(anyab, above.argmax(axis=0), 0)
    j = np.maximum(i - 1, 0)
    cols = np.arange(env.shape[1])
    e_lo, e_hi = env[j, cols], env[i, cols]
    ok = np.isfinite(e_hi) & (e_lo > 0) & (level > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        y0 = np.log(np.where(ok, e_lo, 1.0))
        y1 = np.log(np.where(ok, e_hi, 1.0))
        frac = np.where(y1 > y0, (math.log(level) - y0) / (y1 - y0) if level > 0 else 0.5,
                        1.0)
    frac = np.clip(np.where(ok, frac, 0.5), 0.0, 1.0)
    beta = np.exp(lb[j] + frac * (lb[i] - lb[j]))
    beta = np.where(i == 0, betas[0], beta)
    return np.where(anyab, beta, betas[-1])


def _bootstrap_ci(items, x, level, alpha, n_boot, seed) -> tuple[float, float]:
    """:func:`_bootstrap_ci_loop` vectorised over the resamples (the same random draws:
    one block of indices per width and resample, in the loop's order); widths with
    different numbers of repeats take the loop."""
    if len(items) < 2 or any(c.repeats < 2 for _, c in items):
        return (float("nan"), float("nan"))
    ks = {c.repeats for _, c in items}
    if len(ks) != 1 or len({c.betas.size for _, c in items}) != 1:
        return _bootstrap_ci_loop(items, x, level, alpha, n_boot, seed)
    k = ks.pop()
    idx = np.random.default_rng(seed).integers(0, k, (n_boot, len(items), k))
    logb = np.empty((n_boot, len(items)))
    for j, (_, c) in enumerate(items):
        sup = c.samples[:, idx[:, j, :]].max(axis=2)  # (n_beta, n_boot)
        env = np.maximum.accumulate(np.maximum(sup, c.e0), axis=0)
        logb[:, j] = np.log(_crossings_columns(c.betas, env, level))
    xm = x.mean()
    sxx = float(np.sum((x - xm) ** 2))
    if sxx == 0:
        slopes = np.full(n_boot, np.nan)
    else:
        slopes = ((x - xm)[None, :] * (logb - logb.mean(axis=1, keepdims=True))).sum(1) / sxx
    return (float(np.quantile(slopes, alpha / 2)), float(np.quantile(slopes, 1 - alpha / 2)))


def _judge(common: dict, status: Mapping[int, str], min_widths: int) -> BlowupVerdict:
    """The verdict from the measured radii and their interval (see :func:`blowup_verdict`)."""
    widths, beta0, cens, e0 = (common[k] for k in ("widths", "beta0", "censored", "e0"))
    lv, b, ci, slope_tol = (common[k] for k in ("level", "slope", "slope_ci", "slope_tol"))
    use_boot = common["ci_method"] == "bootstrap"
    failed = {m: v for m, v in status.items() if v != "ok"}
    if failed:
        return BlowupVerdict("training_failed", "the training rule failed for width(s) "
                             + "; ".join(f"{m}: {v}" for m, v in sorted(failed.items()))
                             + " -- not an approximating sequence, no verdict", **common)
    if len(widths) < min_widths:
        return BlowupVerdict("inconclusive", f"{len(widths)} width(s); at least "
                             f"{min_widths} are needed", **common)
    high = [m for m, v in zip(widths, e0) if v >= lv]
    if high:
        return BlowupVerdict("inconclusive", f"E_m(0) is already >= the level {lv:.3g} "
                             f"for width(s) {high}: those models do not approximate the "
                             "target at this level", **common)
    if all(c == "left" for c in cens):
        return BlowupVerdict("inconclusive", "every envelope reaches the level at the "
                             "smallest radius (start the grid lower)", **common)
    if all(c == "right" for c in cens):
        return BlowupVerdict("stable", f"no model blows up on the grid: beta_b(m) > "
                             f"{beta0[0]:.3g} for every width", **common)
    how = f"{'bootstrap' if use_boot else 'regression'} CI {ci[0]:.3g}..{ci[1]:.3g}"
    span = (f"beta_b from {beta0[0]:.3g} (m={widths[0]}) to {beta0[-1]:.3g} "
            f"(m={widths[-1]})")
    if ci[1] < -slope_tol:
        return BlowupVerdict("unstable", f"blow-up radii shrink with the width: slope "
                             f"{b:.3g} ({how}) < -{slope_tol:g}; {span}", **common)
    if ci[0] >= -slope_tol:
        return BlowupVerdict("stable", f"blow-up radii stay bounded away from 0: slope "
                             f"{b:.3g} ({how}) >= -{slope_tol:g}; {span}", **common)
    return BlowupVerdict("inconclusive", f"slope {b:.3g} with {how} straddles "
                         f"-{slope_tol:g}; {span}", **common)
