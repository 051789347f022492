"""Assertion helpers for your own suites: memory functions, decay, stable approximation.

Each raises ``AssertionError`` with a diagnostic message: where the check failed, by how
much, which tolerance was used and how it was derived. Tolerances come from the one
tolerance helper :func:`rnnmem.numerics.tolerance`.

>>> import numpy as np
>>> from rnnmem.testing import assert_memory_close, assert_decays
>>> t = np.arange(30.0)
>>> m = 0.5 * np.exp(-0.2 * t)
>>> assert_memory_close(m, lambda s: 0.5 * np.exp(-0.2 * s), t)
>>> assert_decays(m, kind="exponential", t=t, parameter=(0.19, 0.21)).describe()
'exponential, rate 0.2'
>>> try:
...     assert_memory_close(m * (1 + 1e-6), m, t)
... except AssertionError as e:
...     print(str(e).splitlines()[0])
memory function differs from the expected one at 30 of 30 times
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidParameterError
from ..numerics import Tolerance, classify_decay, tolerance

__all__ = ["assert_memory_close", "assert_decays", "assert_stable_approximation"]

#: at most this many offending points are listed in a failure message
SHOWN = 5


def _values(model_or_values, t, dt, memory_kwargs):
    """(values, description): an array as given, or the memory of a model at t."""
    if isinstance(model_or_values, (np.ndarray, list, tuple)) or hasattr(
            model_or_values, "__array__") and not callable(model_or_values):
        return np.asarray(model_or_values, dtype=float), "given values"
    if t is None:
        raise InvalidParameterError("t: the times are needed to compute a model's memory")
    from ..models.adapt import memory_function

    est = memory_function(model_or_values, t, dt=dt, **memory_kwargs)
    return np.asarray(est.values, dtype=float), (
        f"rnnmem.memory_function({type(model_or_values).__name__}, dt={dt}) "
        f"[warm-up {est.warmup_steps}, amplitudes {est.amplitudes.min():.3g}.."
        f"{est.amplitudes.max():.3g}]")


def assert_memory_close(model_or_values, expected, t=None, *, dt: float = 1.0,
                        tol: Tolerance | None = None, dtype="float64", n_ops: int | None = None,
                        cond: float = 1.0, scale: float | None = None, **memory_kwargs):
    """Assert that a memory function matches ``expected`` within the tolerance.

    Parameters
    ----------
    model_or_values : array, or a model/callable for :func:`rnnmem.memory_function`
    expected : array, or a callable ``expected(t)``
    t : (L,) times (needed for a model or a callable ``expected``)
    tol : Tolerance, optional
        Default ``tolerance(dtype, n_ops=n_ops or L, cond=cond, scale=scale or max|expected|)``.
    **memory_kwargs
        Options of :func:`rnnmem.memory_function` (``amplitudes``, ``layout``, ...).
    """
    actual, source = _values(model_or_values, t, dt, memory_kwargs)
    exp = np.asarray(expected(np.asarray(t, dtype=float)) if callable(expected) else expected,
                     dtype=float)
    if actual.shape != exp.shape:
        raise AssertionError(f"memory function has shape {actual.shape} ({source}), the "
                             f"expected one {exp.shape}")
    how = "given"
    if tol is None:
        n = int(n_ops) if n_ops is not None else max(1, actual.size)
        sc = float(np.max(np.abs(exp), initial=0.0)) if scale is None else float(scale)
        tol = tolerance(dtype, n_ops=n, cond=cond, scale=sc)
        how = f"tolerance({dtype!r}, n_ops={n}, cond={cond:g}, scale={sc:.3g})"
    allowed = tol.atol + tol.rtol * np.abs(exp)
    err = np.abs(actual - exp)
    bad = ~(err <= allowed)
    if not np.any(bad):
        return
    idx = np.flatnonzero(bad.reshape(-1))
    worst = int(np.argmax((err / allowed).reshape(-1)))
    tt = None if t is None else np.asarray(t, dtype=float).reshape(-1)

    def where(i):
        j = np.unravel_index(i, actual.shape)
        at = f"t = {tt[j[0]]:.6g}" if tt is not None and tt.size == actual.shape[0] \
            else f"index {j}"
        return (f"  {at}: got {actual.flat[i]:.6g}, expected {exp.flat[i]:.6g}, |diff| "
                f"{err.flat[i]:.3g} > allowed {allowed.flat[i]:.3g} "
                f"({err.flat[i] / allowed.flat[i]:.3g}x)")

    lines = [f"memory function differs from the expected one at {idx.size} of {actual.size} "
             f"times", f"worst:", where(worst), "first:"] + [where(i) for i in idx[:SHOWN]]
    lines.append(f"tolerance rtol={tol.rtol:.3g}, atol={tol.atol:.3g}: {how}; the values "
                 f"are the {source}")
    raise AssertionError("\n".join(lines))


def assert_decays(model_or_values, kind: str = "exponential", t=None, *, dt: float = 1.0,
                  parameter=None, tail: float = 0.5, envelope: bool = False,
                  **memory_kwargs):
    """Assert that a memory function decays as ``kind`` (:func:`rnnmem.numerics.classify_decay`).

    Parameters
    ----------
    model_or_values : array (with ``t``), or a model/callable (its memory at ``t``; default
        ``t = dt * arange(64)``)
    kind : {"exponential", "polynomial", "none"}
    parameter : (lo, hi), optional
        Bounds on the fitted rate (exponential) or exponent (polynomial).
    """
    if kind not in ("exponential", "polynomial", "none"):
        raise InvalidParameterError(f"kind must be 'exponential', 'polynomial' or 'none', "
                                    f"got {kind!r}")
    if t is None and callable(model_or_values) and not isinstance(model_or_values, np.ndarray):
        t = dt * np.arange(64.0)
    m, source = _values(model_or_values, t, dt, memory_kwargs)
    if t is None:
        raise InvalidParameterError("t: the times of the given values are needed")
    m1 = m if m.ndim == 1 else m.max(axis=1)
    fit = classify_decay(t, m1, tail=tail, envelope=envelope)
    detail = (f"fit: {fit.describe()}; R^2 exponential {fit.r2_exp:.4f}, polynomial "
              f"{fit.r2_pol:.4f}; tail from t = {fit.tail_start:.4g} ({fit.n_points} points); "
              f"values: {source}")
    if fit.kind != kind:
        raise AssertionError(f"memory function decays as {fit.kind!r}, expected {kind!r}\n"
                             f"{detail}")
    if parameter is not None:
        lo, hi = parameter
        if not lo <= fit.parameter <= hi:
            raise AssertionError(f"fitted {fit.parameter_name} {fit.parameter:.4g} is outside "
                                 f"[{lo:.4g}, {hi:.4g}]\n{detail}")
    return fit


def assert_stable_approximation(curves, *, expected: str = "stable", level=None, **kwargs):
    """Assert the stable-approximation verdict (Wang, Li & Li, ICLR 2024, Def. 3.5) of
    perturbation curves across widths.

    Parameters
    ----------
    curves : dict width -> :class:`rnnmem.numerics.PerturbationCurve`
    expected : {"stable", "unstable", "inconclusive"}
    level, **kwargs
        Options of :func:`rnnmem.numerics.stability_verdict`.

    Returns
    -------
    StabilityVerdict
    """
    from ..numerics import stability_verdict

    if expected not in ("stable", "unstable", "inconclusive"):
        raise InvalidParameterError(f"expected must be 'stable', 'unstable' or 'inconclusive', "
                                    f"got {expected!r}")
    v = stability_verdict(curves, level=level, **kwargs)
    if v.verdict != expected:
        beta = ", ".join(f"m={w}: {b:.3g}{'' if c == 'none' else f' ({c}-censored)'}"
                         for w, b, c in zip(v.widths, v.beta0, v.censored))
        raise AssertionError(
            f"stable-approximation verdict is {v.verdict!r}, expected {expected!r}: {v.reason}\n"
            f"crossing points beta0 at level {v.level:.3g} ({v.level_rule}): {beta}\n"
            f"slope of log beta0 vs log m: {v.slope:.3g} +- {v.slope_se:.3g} "
            f"(tolerance {v.slope_tol:.3g}, alpha {v.alpha:.3g})")
    return v
