"""Input validation shared by the numerics modules (numpy only).

Every check raises an :mod:`rnnmem.errors` exception whose message names the argument and
what is wrong with it.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import InvalidParameterError, NonFiniteError, ShapeError, UnstableSystemError

__all__ = [
    "as_float_array",
    "square_matrix",
    "input_matrix",
    "output_matrix",
    "times",
    "steps",
    "positive_step",
    "check_continuous_stable",
    "check_discrete_stable",
]


def as_float_array(x, name: str, *, allow_complex: bool = False) -> np.ndarray:
    """``x`` as a float64 (or complex128) array, refusing NaN/inf and non-numeric input."""
    try:
        arr = np.asarray(x)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise ShapeError(f"{name} cannot be converted to an array: {exc}") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number)
                                   or arr.dtype == np.bool_):
        raise ShapeError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    if np.iscomplexobj(arr):
        if not allow_complex:
            raise InvalidParameterError(f"{name} must be real, got a complex array")
        arr = arr.astype(np.complex128)
    else:
        arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise NonFiniteError(f"{name} contains NaN or inf")
    return arr


def square_matrix(W, name: str = "W") -> np.ndarray:
    """A finite real (N, N) matrix with N >= 1."""
    W = as_float_array(W, name)
    if W.ndim != 2 or W.shape[0] != W.shape[1] or W.shape[0] == 0:
        raise ShapeError(f"{name} must be a non-empty square (N, N) matrix, got shape {W.shape}")
    return W


def input_matrix(U, n: int, name: str = "U") -> np.ndarray:
    """A finite real (N, d) input matrix; a 1-D (N,) array is read as d = 1."""
    U = as_float_array(U, name)
    if U.ndim == 1:
        U = U[:, None]
    if U.ndim != 2 or U.shape[0] != n or U.shape[1] == 0:
        raise ShapeError(f"{name} must have shape (N, d) = ({n}, d) with d >= 1, "
                         f"got shape {U.shape}")
    return U


def output_matrix(c, n: int, name: str = "c") -> tuple[np.ndarray, bool]:
    """A finite real readout: (N,) vector or (p, N) matrix.

    Returns ``(C, vector)`` with ``C`` of shape (p, N) and ``vector`` true when ``c`` was 1-D.
    """
    c = as_float_array(c, name)
    if c.ndim == 1:
        if c.shape[0] != n:
            raise ShapeError(f"{name} must have shape (N,) = ({n},) or (p, {n}), got {c.shape}")
        return c[None, :], True
    if c.ndim != 2 or c.shape[1] != n or c.shape[0] == 0:
        raise ShapeError(f"{name} must have shape (N,) = ({n},) or (p, {n}), got {c.shape}")
    return c, False


def _vector(x, name: str, what: str) -> np.ndarray:
    """A finite real 1-D array of ``what`` (a scalar becomes shape (1,))."""
    arr = as_float_array(x, name)
    if arr.ndim == 0:
        arr = arr[None]
    if arr.ndim != 1:
        raise ShapeError(f"{name} must be a 1-D array of {what}, got shape {arr.shape}")
    return arr


def times(t, name: str = "t") -> np.ndarray:
    """A finite, non-negative 1-D array of times (a scalar becomes shape (1,))."""
    t = _vector(t, name, "times")
    if np.any(t < 0):
        raise InvalidParameterError(f"{name} must be >= 0, got min {float(t.min())!r}")
    return t


def steps(k, name: str = "k") -> np.ndarray:
    """A 1-D array of non-negative integer steps (as int64)."""
    arr = _vector(k, name, "steps")
    if np.any(arr < 0) or np.any(arr != np.round(arr)):
        raise InvalidParameterError(f"{name} must hold non-negative integers")
    if arr.size and arr.max() > 2**62:
        raise InvalidParameterError(f"{name} is too large for int64")
    return arr.astype(np.int64)


def positive_step(dt, name: str = "dt") -> float:
    """A positive finite float."""
    try:
        val = float(dt)
    except (TypeError, ValueError):
        raise InvalidParameterError(f"{name} must be a positive number, got {dt!r}") from None
    if not math.isfinite(val):
        raise NonFiniteError(f"{name} must be finite, got {dt!r}")
    if val <= 0:
        raise InvalidParameterError(f"{name} must be > 0, got {dt!r}")
    return val


def check_continuous_stable(eigvals: np.ndarray, name: str = "W") -> None:
    """Raise :class:`UnstableSystemError` unless every eigenvalue has negative real part."""
    top = float(np.max(eigvals.real))
    if top >= 0:
        raise UnstableSystemError(
            f"{name} is not Hurwitz: the largest real part of its eigenvalues is {top:.6g} "
            f">= 0, so the memory does not decay (pass require_stable=False to compute anyway)")


def check_discrete_stable(eigvals: np.ndarray, name: str = "A") -> None:
    """Raise :class:`UnstableSystemError` unless the spectral radius is below one."""
    rho = float(np.max(np.abs(eigvals)))
    if rho >= 1:
        raise UnstableSystemError(
            f"{name} is not Schur stable: its spectral radius is {rho:.6g} >= 1, so the memory "
            f"does not decay (pass require_stable=False to compute anyway)")
