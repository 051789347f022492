"""Numerical cross-check of the stable-reparameterisation criterion (StableSSM Def. 3.4).

The symbolic derivation in :mod:`rnnmem.theory.parameterisations` reduces the perturbation
integral to a closed form. This module evaluates the *original* quantity by quadrature,
without that identity,

.. math::

    Q(w, \\tilde w) = |f(w)| \\int_0^\\infty |e^{f(\\tilde w)t} - e^{f(w)t}|\\,dt
    \\quad\\text{(continuous)}, \\qquad
    (1 - f(w)) \\sum_{k \\ge 0} |f(\\tilde w)^k - f(w)^k| \\quad\\text{(discrete)},

and its supremum over a grid of weights and perturbations :math:`|\\tilde w - w| \\le \\beta`,
so that the two can be compared.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import integrate

from ..errors import InvalidParameterError

__all__ = ["perturbation_quantity", "sup_perturbation_quantity"]


def perturbation_quantity(f: Callable, w: float, w_tilde: float, time: str) -> float:
    """:math:`Q(w, \\tilde w)` by adaptive quadrature (continuous) or direct summation."""
    lam, lam_t = float(f(np.float64(w))), float(f(np.float64(w_tilde)))
    if time == "continuous":
        if lam >= 0 or lam_t >= 0:
            return float("inf")
        # substitute s = -lam * t so that the integrand lives on a unit scale
        g = lambda s: abs(np.exp(lam_t / -lam * s) - np.exp(-s))  # noqa: E731
        val, _ = integrate.quad(g, 0, np.inf, limit=400, epsabs=1e-13, epsrel=1e-11)
        return float(val)  # |lam| * int dt = int ds
    if time == "discrete":
        if not (abs(lam) < 1 and abs(lam_t) < 1):
            return float("inf")
        rho = max(abs(lam), abs(lam_t))
        n = int(min(5e6, np.ceil(np.log(1e-18) / np.log(max(rho, 1e-300))) + 2)) if rho > 0 else 2
        k = np.arange(n, dtype=float)
        terms = np.abs(lam_t**k - lam**k)
        return float((1 - lam) * terms.sum())
    raise InvalidParameterError(f"time must be 'continuous' or 'discrete', got {time!r}")


def sup_perturbation_quantity(f: Callable, time: str, beta: float, w_grid: np.ndarray,
                              n_offsets: int = 9) -> tuple[float, float, float]:
    """Max of :math:`Q(w, w + \\delta)` over ``w`` in ``w_grid`` and ``|\\delta| \\le \\beta``.

    Returns ``(sup, w_at_sup, delta_at_sup)``. Offsets are spread over
    :math:`[-\\beta, \\beta]`; grid points whose perturbation leaves the domain (``f``
    non-finite or outside the stable region) are skipped.
    """
    if beta <= 0:
        raise InvalidParameterError(f"beta must be > 0, got {beta}")
    best = (0.0, float("nan"), float("nan"))
    offsets = np.linspace(-beta, beta, n_offsets)
    with np.errstate(all="ignore"):
        for w in np.asarray(w_grid, dtype=float):
            for d in offsets:
                if d == 0:
                    continue
                lam, lam_t = f(np.float64(w)), f(np.float64(w + d))
                if not (np.isfinite(lam) and np.isfinite(lam_t)):
                    continue
                q = perturbation_quantity(f, w, w + d, time)
                if np.isfinite(q) and q > best[0]:
                    best = (q, float(w), float(d))
    return best
