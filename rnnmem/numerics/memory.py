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

The checked estimator: :func:`estimate_memory`
----------------------------------------------
:func:`memory_function` is the literal estimator above. :func:`estimate_memory` (and
``rnnmem.memory_function``, which adapts torch modules to it) adds what Def. 3.1 assumes
and what a nonlinear model needs:

Amplitudes
    For a nonlinear system the quotient :math:`|D_j(x)|/|x|_\\infty` depends on the
    amplitude of :math:`x`, not only its direction (a saturating tanh RNN has a different
    decay at amplitude 1 and 0.1), so the supremum is taken over ``amplitudes`` times the
    unit directions: by default :data:`DEFAULT_AMPLITUDES` (thirds of a decade from
    :math:`10^{-2}` to 10), then :data:`DEFAULT_REFINE_ROUNDS` refinement round (one more
    call, two probes per distinct arg-sup): between the arg-sup of each grid time and
    its larger neighbour, at a third and two thirds of the spacing in :math:`\\log|x|`
    (a parabola through the three grid values peaks within half the spacing on that
    side). Measured on nn.RNN/GRU/LSTM and a tanh-readout SSM: within 17% (the SSM's
    narrow peaks) and 3% (the others) of the sup over a 61-point grid, at 1.8-2.7x the CPU
    time of one amplitude at T = 1024 (``benchmarks/bench_amplitude.py``); pass a denser
    ``amplitudes`` for narrow peaks. The probes sent are recorded (``probes``). The result records the
    arg-sup amplitude and direction per time. Probes whose derivative is below their
    rounding floor, :math:`\\mathrm{rtol}\\,\\max|y| / (|x|_\\infty \\Delta t)` with
    ``rtol`` from :func:`rnnmem.numerics.tolerance` for the system's ``dtype``, do not
    take part in the supremum (small amplitudes would otherwise promote rounding noise in
    the tail); a time where no probe is resolved is flagged (``resolved``). For a linear
    system every amplitude gives the same value.
Baseline and drift
    The response to the zero input (one more probe) is subtracted, so that a drift from a
    bias or an initial state, which grows like :math:`1/|x|` in the quotient, is not
    counted as memory; its largest derivative over the window is reported (``drift``).
Warm-up
    A system with a bias or a non-zero initial state is not at rest under zero input; it
    is probed from its zero-input steady state: every probe is prefixed by the zero input
    until the zero-input output stays within the rounding level of its final value (found
    by doubling a window, up to ``max_warmup``; a
    :class:`rnnmem.errors.WarmupWarning` otherwise). The estimate is then Def. 3.1 of the
    time-homogeneous functional the model realises, not of its start-up transient.
Checks
    In the same batched call, on random inputs: prefix causality, time invariance (a
    delayed input gives the delayed output) and batch independence (the same row first
    and last gives the same output); each measured violation (relative to the output
    size) is compared with ``check_rtol`` and a failure raises
    :class:`rnnmem.errors.NonCausalError` or :class:`rnnmem.errors.TimeVaryingError`
    carrying ``violation`` and ``threshold``. ``check=False`` (or a subset of
    :data:`CHECKS`) opts out; skipped checks are recorded in the result.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import BaselineDriftWarning, InvalidParameterError, NonFiniteError, ShapeError
from ..errors import ResourceLimitError
from ..limits import MAX_COUNT, check_count, check_memory
from . import _memory_checks as C
from . import _validate as V
from ._memory_search import (DEFAULT_AMPLITUDES, DEFAULT_REFINE_ROUNDS,  # noqa: F401
                             REFINE_STEPS, _check_amplitudes, _derivatives, _probe_inputs,
                             _Probe, _probe_set, _reduce_outputs, _refine, _refine_rounds,
                             _sup)
from .tolerances import tolerance

__all__ = ["memory_function", "estimate_memory", "MemoryEstimate", "probe_directions",
           "VARIANTS", "MAX_BATCH_ELEMENTS", "DEFAULT_AMPLITUDES", "CHECKS"]

CHECKS = C.CHECKS

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





@dataclass(frozen=True, eq=False)
class MemoryEstimate:
    """Result of :func:`estimate_memory` (and of ``memory_function(..., full_output=True)``).

    ``np.asarray(est)`` (and indexing, ``len``) give ``values``.

    Attributes
    ----------
    t : (L,) times; values : (L,) or (L, p)
        The estimate :math:`\\hat M(t)` (per output when p > 1 and no ``output_reduce``).
    amplitude, resolved : arrays shaped like ``values``
        The arg-sup amplitude :math:`|x|_\\infty` at each t (nearest grid time), and whether
        the value there is above the rounding floor of its amplitude.
    direction : (L, d) or (L, p, d)
        The arg-sup direction, scaled to :math:`|x|_\\infty = 1`.
    amplitudes : (k,) every amplitude probed (the grid and its refinement), sorted.
    baseline : bool; drift : float
        Whether the zero-input response was subtracted; the largest
        :math:`|\\frac{d}{dt}H_t(0)|` over the probe window (after the warm-up), i.e. what
        would have been counted as memory without the subtraction (nan if not measured).
    warmup_steps, warmup_residual
        Zero samples before every probe, and the largest output increment after them.
    checks : dict name -> measured relative violation (None where skipped);
    checks_skipped : tuple of names the user opted out of; check_rtol : their tolerance.
    n_calls, n_probes : calls of the system and input rows sent (probes, baseline, checks).
    probes : (m, d) every probe vector :math:`x` whose response entered the supremum.
    """

    t: np.ndarray
    values: np.ndarray
    amplitude: np.ndarray
    direction: np.ndarray
    resolved: np.ndarray
    dt: float
    variant: str
    derivative: str
    amplitudes: np.ndarray
    baseline: bool
    drift: float
    warmup_steps: int
    warmup_residual: float
    checks: dict = field(default_factory=dict)
    checks_skipped: tuple = ()
    check_rtol: float = float("nan")
    n_calls: int = 0
    n_probes: int = 0
    probes: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.values, dtype=dtype)

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, i):
        return self.values[i]

    @property
    def shape(self) -> tuple:
        return self.values.shape

    def to_dict(self) -> dict:
        """Plain types (lists, floats), for JSON."""
        out = {}
        for k in self.__dataclass_fields__:
            v = getattr(self, k)
            out[k] = v.tolist() if isinstance(v, np.ndarray) else (
                list(v) if isinstance(v, tuple) else v)
        return out


class _Counter:
    def __init__(self, system, batched):
        self.system, self.batched, self.calls, self.rows = system, batched, 0, 0

    def __call__(self, X):
        self.calls += 1
        self.rows += X.shape[0]
        return _call(self.system, X, self.batched)


def _validate_options(variant, derivative, output_reduce, system):
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


def _rows_len(variant, horizon, n_s, t_max):
    if variant != "reversed":
        return n_s
    L = n_s - 1 if horizon is None else horizon
    if not isinstance(L, (int, np.integer)) or isinstance(L, bool) or L < n_s - 1:
        raise InvalidParameterError(
            f"horizon must be an integer >= {n_s - 1} to cover t up to {t_max}, got {L!r}")
    return int(L)


def _warmup(warmup, call, d, n_s, max_warmup, rtol):
    if isinstance(warmup, str):
        if warmup != "auto":
            raise InvalidParameterError(f"warmup must be 'auto' or an integer >= 0, got "
                                        f"{warmup!r}")
        return C.find_warmup(call, d, n_s, max_warmup, rtol)
    if isinstance(warmup, bool) or not isinstance(warmup, (int, np.integer)) or warmup < 0:
        raise InvalidParameterError(f"warmup must be 'auto' or an integer >= 0, got {warmup!r}")
    return int(warmup), float("nan")


def _estimate(system, t, *, dt, input_dim, variant, directions, n_directions, derivative,
              rng, batched, output_reduce, baseline, horizon, amplitudes, refine, warmup,
              max_warmup, check, check_rtol, dtype, measure_drift) -> MemoryEstimate:
    t = V.times(t, "t")
    dt = V.positive_step(dt, "dt")
    _validate_options(variant, derivative, output_reduce, system)
    enabled = C.enabled_checks(check)
    amps = _check_amplitudes(amplitudes)
    X = probe_directions(input_dim, directions, n_directions, rng)  # (n, d)
    d = X.shape[1]
    t_max = float(t.max()) if t.size else 0.0
    if not t_max / dt < MAX_COUNT:
        raise ResourceLimitError(f"t up to {t_max:g} with dt = {dt:g} needs {t_max / dt:.3g} "
                                 f"steps, above the limit {MAX_COUNT}")
    n_grid = int(math.ceil(t_max / dt)) + 1  # grid t_j = j dt, j = 0..n_grid-1
    n_s = max(n_grid + 1, 3)  # S_0..S_{n_s-1}
    rows_len = _rows_len(variant, horizon, n_s, t_max)
    n_amp = 1 if amps is None else len(amps)
    # the probes and their responses (x4: inputs, outputs, derivatives), before allocating
    check_memory(8.0 * (X.shape[0] * n_amp + 6) * rows_len * d * 4,
                 f"t up to {t_max:g} / dt = {dt:g} ({n_s} steps) x {X.shape[0]} directions "
                 f"x {n_amp} amplitudes", "use a shorter time range or a larger dt")
    call = _Counter(system, batched)
    rtol_round = tolerance(dtype, n_ops=rows_len).rtol
    if check_rtol is None:
        check_rtol = tolerance(dtype, n_ops=rows_len, cond=C.CHECK_COND).rtol
    W, resid = _warmup(warmup, call, d, n_s, max_warmup, tolerance(dtype, cond=10.0).rtol)
    P, dir_idx, amp = _probe_set(X, amps)
    parts = [_probe_inputs(P, variant, n_s, rows_len, W, dt)]
    want_base = baseline or measure_drift
    if want_base:
        parts.append(np.zeros((1, W + rows_len, d)))
    if enabled:
        a_chk = float(np.median(amps)) if amps is not None else float(np.median(amp))
        rows, k1, k2, s = C.check_rows(rows_len, d, a_chk, _generator(12345))
        parts.append(np.concatenate([np.zeros((5, W, d)), rows], axis=1))
    Y = call(np.concatenate(parts, axis=0))[:, W:]  # (rows, rows_len, p)
    n_p = parts[0].shape[0]
    Y0 = Y[n_p] if want_base else None
    violations = {name: None for name in C.CHECKS}
    if enabled:
        violations.update(C.measure_checks(Y[-5:], k1, k2, s))
        C.enforce(violations, enabled, check_rtol)
    drift = float(np.max(np.abs(np.diff(Y0, axis=0)))) / dt if Y0 is not None else float("nan")
    y_scale = float(np.max(np.abs(Y[:n_p + int(want_base)])))
    if not baseline and Y0 is not None and drift > rtol_round * y_scale / dt:
        warnings.warn(BaselineDriftWarning(
            f"the zero-input response drifts (max |dH_t(0)/dt| = {drift:.3g} over the probe "
            f"window) and, without baseline=True, the drift is counted as memory (divided by "
            f"the amplitude)"), stacklevel=3)
    D = _derivatives(Y[:n_p], Y0 if baseline else None, variant, derivative, dt, n_s, n_grid)
    V_ = _reduce_outputs(D / amp[:, None, None], output_reduce)
    multi = amps is not None and amps.size > 1
    floor = (rtol_round * y_scale / (amp * dt)) if multi else np.full(amp.shape, -np.inf)
    best, resolved = _sup(V_, floor)
    if multi:
        probe = _Probe(call, variant, derivative, n_s, n_grid, rows_len, W, dt,
                       Y0 if baseline else None, output_reduce)
        P, dir_idx, amp, V_, floor, best, resolved = _refine(
            probe, X, P, dir_idx, amp, V_, floor, best, resolved, _refine_rounds(refine),
            rtol_round * y_scale)
    grid_M = np.take_along_axis(V_, best[None], 0)[0]  # (n_grid, q)
    grid = dt * np.arange(n_grid)
    M = np.stack([np.interp(t, grid, grid_M[:, o]) for o in range(grid_M.shape[1])], axis=1)
    near = np.clip(np.rint(t / dt).astype(int), 0, n_grid - 1)
    b = best[near]  # (L, q)
    direction = P[b] / amp[b][..., None]  # (L, q, d)
    A, R = amp[b], resolved[near]
    if M.shape[1] == 1:
        M, A, R, direction = M[:, 0], A[:, 0], R[:, 0], direction[:, 0]
    return MemoryEstimate(
        t=t, values=M, amplitude=A, direction=direction, resolved=R, dt=dt, variant=variant,
        derivative=derivative, amplitudes=np.unique(amp), baseline=bool(baseline),
        drift=drift, warmup_steps=W, warmup_residual=resid, checks=violations,
        checks_skipped=tuple(c for c in C.CHECKS if c not in enabled),
        check_rtol=float(check_rtol) if enabled else float("nan"), n_calls=call.calls,
        n_probes=call.rows, probes=P)


def memory_function(system: Callable, t, *, dt: float, input_dim: int,
                    variant: str = "heaviside", directions=None,
                    n_directions: int | None = None, derivative: str = "forward", rng=None,
                    batched: bool = True, output_reduce: str | None = None,
                    baseline: bool = False, horizon: int | None = None, amplitudes=None,
                    refine: bool = True, warmup=0, max_warmup: int = 4096, check=False,
                    check_rtol: float | None = None, dtype="float64",
                    full_output: bool = False):
    """Estimate the memory function (Wang, Li & Li, ICLR 2024, Def. 3.1) of ``system``.

    .. math::

        \\hat M(t_j) = \\max_{x \\in X} \\frac{|D_j(x)|}{|x|_\\infty}, \\qquad
        D_j(x) \\approx \\frac{d}{dt} H_{t}(x \\mathbf 1_{[0, \\infty)})\\Big|_{t = j\\Delta t}

    (see the module docstring for the probes, stencils and variants). This is the literal
    estimator: the probe directions as given (sign vectors, amplitude 1), no warm-up, no
    checks, no baseline, unless asked. :func:`estimate_memory` has the checked defaults
    (amplitude search, baseline, warm-up, causality and time-invariance checks).

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
        Off by default here (Def. 3.1 literally). Has no effect on ``"reversed"``.
    horizon : int, optional
        For ``"reversed"``: the probe length :math:`L` (default: the smallest that covers
        ``max(t)``); must be at least that.
    amplitudes : None, "default" or positive numbers
        None: the directions as given. Otherwise the sup is also taken over these
        amplitudes :math:`|x|_\\infty` (module docstring, "Amplitudes").
    refine : bool
        With several amplitudes: one more call at the geometric midpoints next to each
        arg-sup amplitude.
    warmup : int or "auto"
        Zero samples before every probe ("auto": until the zero-input output settles).
    max_warmup : int
        Upper bound of the automatic warm-up.
    check : bool or names from :data:`CHECKS`
        Run these structural checks (module docstring, "Checks"); a failure raises
        :class:`rnnmem.errors.NonCausalError` or :class:`rnnmem.errors.TimeVaryingError`.
    check_rtol : float, optional
        Tolerance of the checks (default from :func:`rnnmem.numerics.tolerance` for
        ``dtype``, ``n_ops`` the probe length and ``cond`` = 100).
    dtype : dtype or name
        The precision the system computes in (for the rounding floors and check tolerances).
    full_output : bool
        Return the :class:`MemoryEstimate` instead of its values.

    Returns
    -------
    (L,) array, or (L, p) when p > 1 and ``output_reduce`` is None; or a
    :class:`MemoryEstimate`.
    """
    est = _estimate(system, t, dt=dt, input_dim=input_dim, variant=variant,
                    directions=directions, n_directions=n_directions, derivative=derivative,
                    rng=rng, batched=batched, output_reduce=output_reduce, baseline=baseline,
                    horizon=horizon, amplitudes=amplitudes, refine=refine, warmup=warmup,
                    max_warmup=max_warmup, check=check, check_rtol=check_rtol, dtype=dtype,
                    measure_drift=False)
    return est if full_output else est.values


def estimate_memory(system: Callable, t, *, dt: float, input_dim: int,
                    amplitudes="default", refine: bool = True, baseline: bool = True,
                    warmup="auto", max_warmup: int = 4096, check=True,
                    check_rtol: float | None = None, dtype="float64",
                    variant: str = "heaviside", directions=None,
                    n_directions: int | None = None, derivative: str = "forward", rng=None,
                    batched: bool = True, output_reduce: str | None = None,
                    horizon: int | None = None) -> MemoryEstimate:
    """Def. 3.1 of Wang, Li & Li (ICLR 2024) for a black-box map, checked and searched.

    .. math::

        \\mathcal M(H)(t) = \\sup_{x \\ne 0}
            \\frac{|\\frac{d}{dt} H_t(x\\mathbf 1_{[0,\\infty)}) - \\frac{d}{dt}H_t(0)|}
                 {|x|_\\infty},

    the supremum taken over the probe directions *and* the ``amplitudes`` (default
    :data:`DEFAULT_AMPLITUDES`, refined), from the zero-input steady state (``warmup``),
    with the zero-input response subtracted (``baseline``), after the causality,
    time-invariance and batch-independence checks (``check``). The arguments are those of
    :func:`memory_function`, with these defaults. The drift of the zero-input response is
    measured and reported (``drift``); with ``baseline=False`` a drift above rounding
    raises a :class:`rnnmem.errors.BaselineDriftWarning`.

    Returns
    -------
    MemoryEstimate
        Values, the arg-sup amplitude and direction per t, the checks' measured
        violations, the warm-up length and the drift.
    """
    return _estimate(system, t, dt=dt, input_dim=input_dim, variant=variant,
                     directions=directions, n_directions=n_directions, derivative=derivative,
                     rng=rng, batched=batched, output_reduce=output_reduce, baseline=baseline,
                     horizon=horizon, amplitudes=amplitudes, refine=refine, warmup=warmup,
                     max_warmup=max_warmup, check=check, check_rtol=check_rtol, dtype=dtype,
                     measure_drift=True)
