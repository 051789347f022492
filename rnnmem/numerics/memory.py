"""Black-box estimation of the memory function of a sequence-to-sequence map.

Wang, Li & Li (*Inverse approximation theory for nonlinear recurrent neural networks*,
ICLR 2024, Def. 3.1) define the memory function of a causal, time-homogeneous functional
sequence :math:`\\{H_t\\}` through its response to Heaviside inputs,

.. math::

    \\mathcal M(H)(t) = \\sup_{x \\ne 0}
        \\frac{\\big|\\frac{d}{dt} H_t(x\\,\\mathbf 1_{[0,\\infty)})\\big|}{|x|_\\infty}.

:func:`memory_function` estimates it for any callable ``system`` that maps an input array
(B, T, d) sampled at step ``dt`` to an output array (B, T, p). For a linear system
:math:`\\dot h = Wh + Ux,\\ y = c^\\top h` the supremum equals
:math:`\\|c^\\top e^{Wt}U\\|_1` (:func:`rnnmem.numerics.linear_memory`) and is attained at a
vertex of the cube :math:`|x|_\\infty \\le 1`, i.e. at a sign vector; the estimator is checked
against it, with the error shrinking like :math:`\\Delta t` (forward) or :math:`\\Delta t^2`
(central) (tested by regression slopes).

Sampling convention
-------------------
The system is assumed to follow the convention of the recurrent models and of
:func:`rnnmem.numerics.solve_linear`: output ``k`` has consumed the inputs ``0..k``, each held
for one step ``dt``, so that for a continuous-time system output ``k`` is
:math:`y((k+1)\\Delta t)` from rest at time 0. (For a strictly causal system, whose output
``k`` sees only inputs ``0..k-1``, the estimate is the memory function delayed by ``dt``.)

Every probe starts with one zero input sample, so the output at the instant the step
switches on is observed: the probe for direction :math:`x` is
:math:`(0, x, x, \\dots, x)` and its outputs :math:`S_j = y(j\\Delta t)`, :math:`j = 0, 1, \\dots`
(time measured from the switch-on). For a system at rest under zero input (every linear
system, every RNN without bias) the leading zero changes nothing.

Derivatives on the grid :math:`t_j = j\\Delta t`:

* ``"forward"``: :math:`D_j = (S_{j+1} - S_j)/\\Delta t`, error :math:`O(\\Delta t)`;
* ``"central"``: :math:`D_j = (S_{j+1} - S_{j-1})/(2\\Delta t)` for :math:`j \\ge 1` and the
  one-sided :math:`D_0 = (-3S_0 + 4S_1 - S_2)/(2\\Delta t)` (the response is smooth only on
  :math:`t \\ge 0`), error :math:`O(\\Delta t^2)`.

Then :math:`\\hat M(t_j) = \\max_x |D_j(x)| / |x|_\\infty` over the probe directions. Values
at times ``t`` off the grid are linearly interpolated (an extra :math:`O(\\Delta t^2)`), so
a ``t`` on the grid is read exactly.

Variants
--------
``"heaviside"``
    Def. 3.1 as above.
``"impulse"``
    The probe :math:`(0, x/\\Delta t, 0, 0, \\dots)`; its outputs :math:`I_j` are the impulse
    response and play the role of :math:`(S_j - S_{j-1})/\\Delta t` in the stencils
    (forward: :math:`D_j = I_{j+1}`; central: :math:`D_j = (I_j + I_{j+1})/2`,
    :math:`D_0 = (3I_1 - I_2)/2`). For a linear system this equals the Heaviside estimate
    (superposition), for a nonlinear one it does not.
``"reversed"``
    The memory of the output at a fixed final time to the input at lag :math:`t`: with a
    horizon of :math:`L` samples, the probe for lag index :math:`j` is zero on samples
    :math:`0..L-j-1` and :math:`x` on the last :math:`j` samples, and :math:`S_j` is the
    output at the final sample :math:`L-1`. For a time-invariant system this is the
    Heaviside estimate again; for a time-varying one (positional encodings, transients from
    a bias or a non-zero initial state) :math:`D_j` is the sensitivity of the final output
    to a step switched on :math:`j` samples before the end. The zero-input output is a
    constant here and drops out of every difference.

Directions
----------
For :math:`d \\le 10` all :math:`2^d` sign vectors are used (exact for linear systems); for
larger :math:`d` (or when ``n_directions`` is given) random sign vectors and random Gaussian
directions scaled to :math:`|x|_\\infty = 1`, half each; ``directions`` overrides both. All
probes go through ``system`` in one batched call (split into chunks only beyond
:data:`MAX_BATCH_ELEMENTS` numbers).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from ..errors import InvalidParameterError, NonFiniteError, ShapeError
from ..errors import ResourceLimitError
from ..limits import MAX_COUNT, check_count, check_memory
from . import _validate as V

__all__ = ["memory_function", "probe_directions", "VARIANTS", "MAX_BATCH_ELEMENTS"]

VARIANTS = ("heaviside", "impulse", "reversed")
DERIVATIVES = ("forward", "central")
OUTPUT_REDUCTIONS = (None, "max", "norm")
#: Probes are sent in one call unless batch * length * d exceeds this many numbers.
MAX_BATCH_ELEMENTS = 2**24
#: Above this input dimension the sign vectors are sampled instead of enumerated.
MAX_ENUMERATED_DIM = 10
DEFAULT_N_DIRECTIONS = 256


def _generator(rng) -> np.random.Generator:
    if rng is None:
        return np.random.default_rng(0)
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise InvalidParameterError(f"rng must be None, an int seed or a numpy Generator, got {rng!r}")


def probe_directions(input_dim: int, directions=None, n_directions: int | None = None,
                     rng=None) -> np.ndarray:
    """The probe directions of :func:`memory_function`, shape (n, input_dim).

    ``directions`` (n, d) is validated and returned as is. Otherwise, for
    ``input_dim <= 10`` and ``n_directions is None``, all :math:`2^d` sign vectors; else
    ``n_directions`` (default 256) random directions, the first half random sign vectors
    and the rest Gaussian vectors scaled to :math:`|x|_\\infty = 1`. ``rng`` is None (seed 0,
    reproducible), an int seed or a :class:`numpy.random.Generator`.
    """
    if not isinstance(input_dim, (int, np.integer)) or isinstance(input_dim, bool) \
            or input_dim < 1:
        raise InvalidParameterError(f"input_dim must be a positive integer, got {input_dim!r}")
    d = check_count(int(input_dim), "input_dim", maximum=2**20)
    if directions is not None:
        X = V.as_float_array(directions, "directions")
        if X.ndim == 1 and d == X.shape[0]:
            X = X[None]
        if X.ndim != 2 or X.shape[1] != d or X.shape[0] == 0:
            raise ShapeError(f"directions must have shape (n, {d}) with n >= 1, got {X.shape}")
        if np.any(np.max(np.abs(X), axis=1) == 0):
            raise InvalidParameterError("directions must be non-zero vectors")
        return X
    if n_directions is None and d <= MAX_ENUMERATED_DIM:
        bits = (np.arange(2**d)[:, None] >> np.arange(d)[None, :]) & 1  # (2^d, d)
        return 1.0 - 2.0 * bits
    n = DEFAULT_N_DIRECTIONS if n_directions is None else n_directions
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise InvalidParameterError(f"n_directions must be a positive integer, got {n!r}")
    gen = _generator(rng)
    n_sign = (int(n) + 1) // 2
    signs = gen.choice([-1.0, 1.0], size=(n_sign, d))
    gauss = gen.standard_normal((int(n) - n_sign, d))
    gauss /= np.max(np.abs(gauss), axis=1, keepdims=True)
    return np.concatenate([signs, gauss], axis=0)


def _call(system: Callable, X: np.ndarray, batched: bool) -> np.ndarray:
    """Run ``system`` on (B, T, d) probes; returns (B, T, p) float64."""
    B, T, d = X.shape
    if batched:
        chunk = max(1, MAX_BATCH_ELEMENTS // max(1, T * d))
        parts = [_one_call(system, X[i:i + chunk], batched=True) for i in range(0, B, chunk)]
    else:
        parts = [_one_call(system, X[i], batched=False)[None] for i in range(B)]
    p = {part.shape[-1] for part in parts}
    if len(p) != 1:
        raise ShapeError(f"system returned different output widths {sorted(p)} across calls")
    return np.concatenate(parts, axis=0)


def _one_call(system: Callable, X: np.ndarray, batched: bool) -> np.ndarray:
    Y = system(X)
    if hasattr(Y, "detach"):  # a torch tensor, without importing torch
        Y = Y.detach().cpu().numpy()
    try:
        Y = np.asarray(Y)
    except (ValueError, TypeError) as exc:  # ragged lists, objects numpy cannot stack
        raise ShapeError(f"system returned something that is not an array "
                         f"({type(Y).__name__}: {' '.join(str(exc).split())})") from None
    lead = X.shape[:-1]  # (B, T) or (T,)
    if Y.shape == lead:
        Y = Y[..., None]
    if Y.ndim != len(lead) + 1 or Y.shape[:-1] != lead or Y.shape[-1] == 0:
        want = "(B, T, p)" if batched else "(T, p)"
        raise ShapeError(f"system must map inputs {X.shape} to outputs {want} with the same "
                         f"leading sizes {lead}; got {Y.shape}")
    if not np.issubdtype(Y.dtype, np.number):
        raise ShapeError(f"system returned a non-numeric array (dtype {Y.dtype})")
    if np.iscomplexobj(Y):
        raise InvalidParameterError("system returned complex outputs; the memory function "
                                    "is defined for real outputs")
    Y = Y.astype(np.float64)
    if not np.all(np.isfinite(Y)):
        raise NonFiniteError("system returned NaN or inf for a probe input (the system may "
                             "be unstable at this input scale or length)")
    return Y


def _stencil(S: np.ndarray, dt: float, derivative: str, n_grid: int) -> np.ndarray:
    """Derivative on the grid j = 0..n_grid-1 from S (n, >= n_grid + 1, p), S_j = y(j dt)."""
    if derivative == "forward":
        return (S[:, 1:n_grid + 1] - S[:, :n_grid]) / dt
    D = np.empty((S.shape[0], n_grid, S.shape[2]))
    D[:, 0] = (-3.0 * S[:, 0] + 4.0 * S[:, 1] - S[:, 2]) / (2.0 * dt)
    D[:, 1:] = (S[:, 2:n_grid + 1] - S[:, :n_grid - 1]) / (2.0 * dt)
    return D


def memory_function(system: Callable, t, *, dt: float, input_dim: int,
                    variant: str = "heaviside", directions=None,
                    n_directions: int | None = None, derivative: str = "forward", rng=None,
                    batched: bool = True, output_reduce: str | None = None,
                    baseline: bool = False, horizon: int | None = None) -> np.ndarray:
    """Estimate the memory function (Wang, Li & Li, ICLR 2024, Def. 3.1) of ``system``.

    .. math::

        \\hat M(t_j) = \\max_{x \\in X} \\frac{|D_j(x)|}{|x|_\\infty}, \\qquad
        D_j(x) \\approx \\frac{d}{dt} H_{t}(x \\mathbf 1_{[0, \\infty)})\\Big|_{t = j\\Delta t}

    (see the module docstring for the probes, stencils and variants).

    Parameters
    ----------
    system : callable
        ``x (B, T, d) -> y (B, T, p)`` numpy arrays (``batched=True``), or
        ``x (T, d) -> y (T, p)`` (``batched=False``); a 1-D/2-D output is read as p = 1.
    t : array (L,) of times >= 0 (a scalar is accepted)
    dt : float > 0
        Sampling step of the inputs.
    input_dim : int
    variant : {"heaviside", "impulse", "reversed"}
    directions : (n, d) array, optional
        Probe directions (any scale; the result is divided by :math:`|x|_\\infty`).
    n_directions : int, optional
        Number of random directions (see :func:`probe_directions`).
    derivative : {"forward", "central"}
    rng : None, int or numpy Generator
        For random directions; None means seed 0 (reproducible).
    batched : bool
    output_reduce : {None, "max", "norm"}
        For p > 1: None keeps one memory function per output, shape (L, p); ``"max"`` the
        largest over outputs; ``"norm"`` uses the Euclidean norm of the output derivative
        before the supremum over directions (as in the original code of Wang, Li & Li).
    baseline : bool
        Subtract the response to the zero input (one extra probe) before differencing, so
        that a drift caused by a bias or an initial transient is not counted as memory.
        Off by default (Def. 3.1 literally). Has no effect on ``"reversed"``.
    horizon : int, optional
        For ``"reversed"``: the probe length :math:`L` (default: the smallest that covers
        ``max(t)``); must be at least that.

    Returns
    -------
    (L,) array, or (L, p) when p > 1 and ``output_reduce`` is None.
    """
    t = V.times(t, "t")
    dt = V.positive_step(dt, "dt")
    if variant not in VARIANTS:
        raise InvalidParameterError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if derivative not in DERIVATIVES:
        raise InvalidParameterError(
            f"derivative must be one of {DERIVATIVES}, got {derivative!r}")
    if output_reduce not in OUTPUT_REDUCTIONS:
        raise InvalidParameterError(
            f"output_reduce must be one of {OUTPUT_REDUCTIONS}, got {output_reduce!r}")
    if not callable(system):
        raise InvalidParameterError(f"system must be callable, got {type(system).__name__}")
    X = probe_directions(input_dim, directions, n_directions, rng)  # (n, d)
    n, d = X.shape
    scale = np.max(np.abs(X), axis=1)  # (n,)

    t_max = float(t.max()) if t.size else 0.0
    steps = t_max / dt
    if not steps < MAX_COUNT:
        raise ResourceLimitError(f"t up to {t_max:g} with dt = {dt:g} needs {steps:.3g} "
                                 f"steps, above the limit {MAX_COUNT}")
    n_grid = int(math.ceil(steps)) + 1  # grid t_j = j dt, j = 0..n_grid-1
    n_s = max(n_grid + 1, 3)  # S_0..S_{n_s-1}
    # the probes and the responses (x the reversed variant's horizon), before allocating
    horizon_len = n_s if variant != "reversed" or horizon is None else max(int(horizon), n_s) \
        if isinstance(horizon, (int, np.integer)) and not isinstance(horizon, bool) else n_s
    check_memory(8.0 * (n + 1) * n_s * d * (horizon_len if variant == "reversed" else 1) * 4,
                 f"t up to {t_max:g} / dt = {dt:g} ({n_s} steps) x {n} directions",
                 "use a shorter time range or a larger dt")

    if variant == "reversed":
        L = n_s - 1 if horizon is None else horizon
        if not isinstance(L, (int, np.integer)) or isinstance(L, bool) or L < n_s - 1:
            raise InvalidParameterError(
                f"horizon must be an integer >= {n_s - 1} to cover t up to {t_max}, got {L!r}")
        L = int(L)
        j = np.arange(n_s)  # number of trailing x samples
        on = np.arange(L)[None, :] >= (L - j)[:, None]  # (n_s, L)
        probes = on[None, :, :, None] * X[:, None, None, :]  # (n, n_s, L, d)
        Y = _call(system, probes.reshape(n * n_s, L, d), batched)  # (n n_s, L, p)
        S = Y[:, -1].reshape(n, n_s, -1)  # (n, n_s, p)
        D = _stencil(S, dt, derivative, n_grid)
    else:
        probes = np.zeros((n + int(baseline), n_s, d))
        if variant == "heaviside":
            probes[:n, 1:] = X[:, None, :]
        else:
            probes[:n, 1] = X / dt
        Y = _call(system, probes, batched)  # (n [+1], n_s, p)
        if baseline:
            Y = Y[:n] - Y[n:]
        if variant == "heaviside":
            D = _stencil(Y, dt, derivative, n_grid)
        else:
            I = Y  # impulse response, I_j ~ (S_j - S_{j-1}) / dt
            if derivative == "forward":
                D = I[:, 1:n_grid + 1]
            else:
                D = np.empty((n, n_grid, I.shape[2]))
                D[:, 0] = (3.0 * I[:, 1] - I[:, 2]) / 2.0
                D[:, 1:] = (I[:, 1:n_grid] + I[:, 2:n_grid + 1]) / 2.0
    D = D / scale[:, None, None]  # (n, n_grid, p)
    p = D.shape[2]
    if output_reduce == "norm":
        grid_M = np.linalg.norm(D, axis=2).max(axis=0)[:, None]  # (n_grid, 1)
    else:
        grid_M = np.abs(D).max(axis=0)  # (n_grid, p)
        if output_reduce == "max":
            grid_M = grid_M.max(axis=1, keepdims=True)
    grid = dt * np.arange(n_grid)
    M = np.stack([np.interp(t, grid, grid_M[:, o]) for o in range(grid_M.shape[1])], axis=1)
    return M[:, 0] if (p == 1 or output_reduce is not None) else M
