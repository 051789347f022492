"""The amplitude search of :func:`rnnmem.numerics.estimate_memory` (private).

Probe sets (directions x amplitudes), probe inputs with a warm-up prefix, derivative
stencils, the supremum among resolved probes, and the refinement rounds; see the
"Amplitudes" section of :mod:`rnnmem.numerics.memory` (Wang, Li & Li, ICLR 2024, Def. 3.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import InvalidParameterError
from . import _validate as V


#: Default amplitude grid :math:`|x|_\infty` of :func:`estimate_memory`: thirds of a decade
#: from 1e-2 to 10 (10 values, 1 among them), refined around each arg-sup
#: (:mod:`rnnmem.numerics.memory`, "Amplitudes").
DEFAULT_AMPLITUDES = tuple(float(a) for a in 10.0 ** (np.arange(10) / 3.0 - 2.0))
#: Refinement rounds of the amplitude search (one call each; see _refinement).
DEFAULT_REFINE_ROUNDS = 1
#: Fractions of the local log-spacing probed on the larger side of an arg-sup.
REFINE_STEPS = (1.0 / 3.0, 2.0 / 3.0)


def _stencil(S: np.ndarray, dt: float, derivative: str, n_grid: int) -> np.ndarray:
    """Derivative on the grid j = 0..n_grid-1 from S (n, >= n_grid + 1, p), S_j = y(j dt)."""
    if derivative == "forward":
        return (S[:, 1:n_grid + 1] - S[:, :n_grid]) / dt
    D = np.empty((S.shape[0], n_grid, S.shape[2]))
    D[:, 0] = (-3.0 * S[:, 0] + 4.0 * S[:, 1] - S[:, 2]) / (2.0 * dt)
    D[:, 1:] = (S[:, 2:n_grid + 1] - S[:, :n_grid - 1]) / (2.0 * dt)
    return D


def _check_amplitudes(amplitudes):
    if amplitudes is None:
        return None
    if isinstance(amplitudes, str):
        if amplitudes != "default":
            raise InvalidParameterError(
                f"amplitudes must be 'default', None or positive numbers, got {amplitudes!r}")
        amplitudes = DEFAULT_AMPLITUDES
    A = V.as_float_array(amplitudes, "amplitudes").reshape(-1)
    if A.size == 0 or np.any(A <= 0):
        raise InvalidParameterError(f"amplitudes must be positive numbers, got {A.tolist()}")
    return np.unique(A)


def _probe_set(X, amps):
    """Probe vectors P (m, d), their direction index (m,) and |P|_inf (m,)."""
    n = X.shape[0]
    if amps is None:
        return X, np.arange(n), np.max(np.abs(X), axis=1)
    unit = X / np.max(np.abs(X), axis=1, keepdims=True)
    P = (amps[:, None, None] * unit[None]).reshape(-1, X.shape[1])
    return P, np.tile(np.arange(n), amps.size), np.max(np.abs(P), axis=1)


def _probe_inputs(P, variant, n_s, rows_len, W, dt):
    """Inputs for probes P: (m, W + n_s, d), or (m n_s, W + rows_len, d) for reversed."""
    m, d = P.shape
    if variant == "reversed":
        L = rows_len
        j = np.arange(n_s)  # number of trailing x samples
        on = np.arange(L)[None, :] >= (L - j)[:, None]  # (n_s, L)
        out = np.zeros((m, n_s, W + L, d))
        out[:, :, W:] = on[None, :, :, None] * P[:, None, None, :]
        return out.reshape(m * n_s, W + L, d)
    out = np.zeros((m, W + n_s, d))
    if variant == "heaviside":
        out[:, W + 1:] = P[:, None, :]
    else:
        out[:, W + 1] = P / dt
    return out


def _derivatives(Y, Y0, variant, derivative, dt, n_s, n_grid):
    """D (m, n_grid, p) from the probe outputs after the warm-up (undivided by |x|)."""
    if variant == "reversed":
        S = Y[:, -1].reshape(-1, n_s, Y.shape[-1])  # (m, n_s, p)
        return _stencil(S, dt, derivative, n_grid)
    if Y0 is not None:
        Y = Y - Y0[None]
    if variant == "heaviside":
        return _stencil(Y, dt, derivative, n_grid)
    I = Y  # impulse response, I_j ~ (S_j - S_{j-1}) / dt
    if derivative == "forward":
        return I[:, 1:n_grid + 1]
    D = np.empty((I.shape[0], n_grid, I.shape[2]))
    D[:, 0] = (3.0 * I[:, 1] - I[:, 2]) / 2.0
    D[:, 1:] = (I[:, 1:n_grid] + I[:, 2:n_grid + 1]) / 2.0
    return D


def _reduce_outputs(D, output_reduce):
    """(m, n_grid, q): |D| per output, its max over outputs, or its Euclidean norm."""
    if output_reduce == "norm":
        return np.linalg.norm(D, axis=2, keepdims=True)
    V_ = np.abs(D)
    return V_.max(axis=2, keepdims=True) if output_reduce == "max" else V_


def _sup(V_, floor):
    """Arg-sup over probes (axis 0) among resolved entries (V > floor), else over all."""
    ok = V_ > floor[:, None, None]
    masked = np.where(ok, V_, -np.inf)
    best = np.argmax(masked, axis=0)  # (n_grid, q)
    resolved = np.take_along_axis(ok, best[None], 0)[0]
    best = np.where(resolved, best, np.argmax(V_, axis=0))
    return best, resolved


def _refinement(best, resolved, dir_idx, amp, unit, V_):
    """One refinement round: between each resolved arg-sup amplitude :math:`a_k` and its
    neighbour :math:`a_n` (among the amplitudes already probed in that direction) on the
    side where the neighbour's value is larger (for some grid time where :math:`a_k` is
    the arg-sup), new probes at :math:`a_k (a_n/a_k)^{s}`, :math:`s \\in` :data:`REFINE_STEPS`.
    A parabola through the three values in :math:`\\log a` has its vertex within half the
    spacing on that side, so one round resolves the arg-sup to a quarter of the spacing.
    Returns (P_new (k, d), direction index (k,)) or None."""
    pairs = set()
    for k in np.unique(best[resolved]):
        i = int(dir_idx[k])
        same = np.flatnonzero(dir_idx == i)
        order = same[np.argsort(amp[same], kind="stable")]
        pos = int(np.flatnonzero(order == k)[0])
        where = (best == k) & resolved  # (n_grid, q)
        vals = {nb: V_[order[nb]][where] for nb in (pos - 1, pos + 1)
                if 0 <= nb < order.size}
        for nb, v in vals.items():
            other = vals.get(2 * pos - nb)
            if other is not None and not np.any(v >= other):
                continue  # the other side is larger wherever k is the arg-sup
            for step in REFINE_STEPS:
                new = float(amp[k] * (amp[order[nb]] / amp[k]) ** step)
                if not np.any(np.isclose(amp[same], new, rtol=1e-12, atol=0.0)):
                    pairs.add((i, new))
    if not pairs:
        return None
    pairs = sorted(pairs)
    idx = np.array([p[0] for p in pairs])
    a_new = np.array([p[1] for p in pairs])
    return a_new[:, None] * unit[idx], idx


def _refine_rounds(refine) -> int:
    if refine is True:
        return DEFAULT_REFINE_ROUNDS
    if refine is False or refine is None:
        return 0
    if isinstance(refine, (int, np.integer)) and refine >= 0:
        return int(refine)
    raise InvalidParameterError(f"refine must be a bool or an integer >= 0, got {refine!r}")


@dataclass(frozen=True)
class _Probe:
    """Everything needed to send new probes and read their reduced derivatives."""

    call: Callable
    variant: str
    derivative: str
    n_s: int
    n_grid: int
    rows_len: int
    W: int
    dt: float
    Y0: np.ndarray | None
    output_reduce: str | None

    def __call__(self, P):
        Y = self.call(_probe_inputs(P, self.variant, self.n_s, self.rows_len, self.W,
                                    self.dt))[:, self.W:]
        amp = np.max(np.abs(P), axis=1)
        D = _derivatives(Y, self.Y0, self.variant, self.derivative, self.dt, self.n_s,
                         self.n_grid)
        return amp, _reduce_outputs(D / amp[:, None, None], self.output_reduce)


def _refine(probe, X, P, dir_idx, amp, V_, floor, best, resolved, rounds, noise):
    """``rounds`` refinement rounds of the amplitude search (one call each)."""
    unit = X / np.max(np.abs(X), axis=1, keepdims=True)
    for _ in range(rounds):
        new = _refinement(best, resolved, dir_idx, amp, unit, V_)
        if new is None:
            break
        P2, idx2 = new
        amp2, V2 = probe(P2)
        V_ = np.concatenate([V_, V2])
        P, dir_idx = np.concatenate([P, P2]), np.concatenate([dir_idx, idx2])
        amp = np.concatenate([amp, amp2])
        floor = np.concatenate([floor, noise / (amp2 * probe.dt)])
        best, resolved = _sup(V_, floor)
    return P, dir_idx, amp, V_, floor, best, resolved
