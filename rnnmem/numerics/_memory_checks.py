"""Warm-up and structural checks of a black-box sequence map, for :mod:`.memory`.

Def. 3.1 of Wang, Li & Li (ICLR 2024) is stated for a *causal, time-homogeneous*
functional sequence. A callable that violates either assumption (an ``nn.RNN`` with
``batch_first=False`` fed batch-first inputs, a bidirectional layer, a positional encoding,
a start-up transient from a bias or an initial state) gives a number that is not a memory
function. The checks here measure each assumption on random inputs, in the same batched
call as the probes:

* **prefix causality**: inputs ``r`` and ``r'`` equal up to step ``k`` must give outputs
  equal up to ``k`` (two cut points ``k``);
* **time invariance**: the input delayed by ``s`` steps must give the output delayed by
  ``s`` steps (after the warm-up, i.e. from the zero-input steady state);
* **batch independence**: the same input in the first and the last batch row must give the
  same output (a time-major module fed batch-major inputs fails this).

Each violation is ``max |difference| / max |output|`` and is compared with ``rtol`` from
:func:`rnnmem.numerics.tolerance` for the system's dtype.

Warm-up: the zero input is run until its output settles (within the rounding level of its
final value over at least the second half of the window), doubling the window up to
``max_warmup`` samples; the probes are then prefixed by that many zeros, so they start from
the zero-input steady state.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..errors import (InvalidParameterError, NonCausalError, TimeVaryingError,
                      WarmupWarning)

CHECKS = ("causality", "time_invariance", "batch_independence")
#: condition factor of the default check tolerance (the map is a recurrence of unknown
#: conditioning; rounding differences between equal paths stay far below this)
CHECK_COND = 100.0


def settle_index(y0: np.ndarray, thr: float) -> int:
    """First index from which ``y0`` (T, p) stays within ``thr`` of its final value (a
    distance, not an increment: a slow mode creeps by small increments)."""
    dist = np.max(np.abs(y0 - y0[-1]), axis=1)  # (T,)
    loud = np.nonzero(dist > thr)[0]
    return 0 if loud.size == 0 else int(loud[-1]) + 1


def find_warmup(call, d: int, n_s: int, max_warmup: int, rtol: float) -> tuple[int, float]:
    """(warm-up length, residual increment after it) of the zero input, by doubling."""
    if isinstance(max_warmup, bool) or not isinstance(max_warmup, (int, np.integer)) \
            or max_warmup < 0:
        raise InvalidParameterError(f"max_warmup must be an integer >= 0, got {max_warmup!r}")
    length = max(16, min(n_s + 1, 1024))
    while True:
        y0 = call(np.zeros((1, length, d)))[0]  # (length, p)
        scale = float(np.max(np.abs(y0)))
        if scale == 0.0:
            return 0, 0.0
        thr = rtol * scale
        k = settle_index(y0, thr)
        if 2 * k <= length:
            return k, float(np.max(np.abs(np.diff(y0[k:], axis=0)), initial=0.0))
        if length >= max_warmup:
            tail = np.abs(np.diff(y0[length // 2:], axis=0))
            resid = float(np.max(tail, initial=0.0))
            warnings.warn(WarmupWarning(
                f"the zero-input response did not settle within max_warmup={max_warmup} "
                f"samples (last increment {resid:.3g}, {resid / scale:.3g} of its size, "
                f"rounding level {rtol:.3g}); the probes start from its state at step "
                f"{min(length, max_warmup)}"), stacklevel=4)
            return int(min(length, max_warmup)), resid
        length = int(min(2 * length, max(max_warmup, 16)))


def check_rows(n_s: int, d: int, amplitude: float, rng: np.random.Generator):
    """The check inputs (5, n_s, d) and what they test: r, r cut at k1, r cut at k2, r
    delayed by s, r again (last row). Returns (rows, k1, k2, s)."""
    r = amplitude * np.clip(rng.standard_normal((n_s, d)), -3.0, 3.0) / 3.0
    k1, k2 = max(0, n_s // 3 - 1), max(0, (2 * n_s) // 3 - 1)
    s = max(1, n_s // 4)
    rows = np.empty((5, n_s, d))
    rows[0] = r
    for row, k in ((1, k1), (2, k2)):
        rows[row] = r
        rows[row, k + 1:] = amplitude * np.clip(rng.standard_normal((n_s - k - 1, d)),
                                                -3.0, 3.0) / 3.0
    rows[3] = 0.0
    rows[3, s:] = r[:n_s - s]
    rows[4] = r
    return rows, k1, k2, s


def measure_checks(Y: np.ndarray, k1: int, k2: int, s: int) -> dict:
    """Relative violations from the outputs (5, n_s, p) of :func:`check_rows`."""
    scale = float(np.max(np.abs(Y)))
    scale = scale if scale > 0 else 1.0

    def rel(a, b):
        return float(np.max(np.abs(a - b), initial=0.0)) / scale

    return {"causality": max(rel(Y[1, :k1 + 1], Y[0, :k1 + 1]),
                             rel(Y[2, :k2 + 1], Y[0, :k2 + 1])),
            "time_invariance": rel(Y[3, s:], Y[0, :Y.shape[1] - s]),
            "batch_independence": rel(Y[4], Y[0])}


def enforce(violations: dict, enabled: tuple, rtol: float) -> None:
    """Raise the named error for the first enabled check whose violation exceeds rtol."""
    hints = {
        "batch_independence": (NonCausalError,
                               "the same input in the first and the last batch row gives "
                               "different outputs: the batch rows interact (the wrong "
                               "layout, batch and time axes swapped?)"),
        "causality": (NonCausalError,
                      "outputs before step k change when only inputs after k change: the "
                      "map is not causal (bidirectional? wrong layout?)"),
        "time_invariance": (TimeVaryingError,
                            "a delayed input does not give the delayed output: the map is "
                            "time-varying (positional terms, or a transient not removed by "
                            "the warm-up; raise max_warmup)"),
    }
    for name in ("batch_independence", "causality", "time_invariance"):
        if name in enabled and violations[name] > rtol:
            cls, why = hints[name]
            raise cls(f"{name} check failed: {why}; measured violation "
                      f"{violations[name]:.3g} (relative to the output size) > tolerance "
                      f"{rtol:.3g}; opt out with check=False (recorded in the result)",
                      check=name, violation=violations[name], threshold=rtol)


def enabled_checks(check) -> tuple:
    """``check``: True (all), False/None (none) or an iterable of names from CHECKS."""
    if check is True:
        return CHECKS
    if check is False or check is None:
        return ()
    if isinstance(check, str):
        check = (check,)
    try:
        names = tuple(check)
    except TypeError:
        raise InvalidParameterError(
            f"check must be True, False or names from {CHECKS}, got {check!r}") from None
    bad = [n for n in names if n not in CHECKS]
    if bad:
        raise InvalidParameterError(f"check: unknown check {bad[0]!r}; known: {CHECKS}")
    return names
