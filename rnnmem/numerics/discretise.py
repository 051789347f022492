"""Discretisation of :math:`\\dot h = W h + U x` at step :math:`\\Delta t`.

All methods give :math:`h_{k+1} = A h_k + B x_k` and agree with
:func:`scipy.signal.cont2discrete` (tested):

* ``"zoh"`` (zero-order hold, exact for piecewise-constant input):
  :math:`A = e^{W\\Delta t}`, :math:`B = \\int_0^{\\Delta t} e^{Ws}ds\\,U`, both read off the
  block exponential :math:`\\exp\\big(\\begin{smallmatrix} W & U \\\\ 0 & 0\\end{smallmatrix}
  \\Delta t\\big) = \\big(\\begin{smallmatrix} A & B \\\\ 0 & I\\end{smallmatrix}\\big)`
  (Van Loan, 1978).
* the generalised bilinear transform with parameter :math:`\\alpha`,
  :math:`A = (I - \\alpha\\Delta t W)^{-1}(I + (1-\\alpha)\\Delta t W)`,
  :math:`B = (I - \\alpha\\Delta t W)^{-1}\\Delta t\\,U`: ``"euler"`` (forward difference,
  :math:`\\alpha = 0`), ``"bilinear"`` (Tustin, :math:`\\alpha = 1/2`), ``"backward_euler"``
  (:math:`\\alpha = 1`).

Convergence to the exact (zoh) propagator at a fixed horizon :math:`T = n\\Delta t`:
:math:`\\|A^n - e^{WT}\\| = O(\\Delta t)` for the two Euler methods and
:math:`O(\\Delta t^2)` for the bilinear transform (one-step errors
:math:`O(\\Delta t^2)` and :math:`O(\\Delta t^3)`); tested by regression slopes.

For the bilinear transform ``cont2discrete`` also changes the readout
(:math:`C_d = C(I - \\alpha\\Delta t W)^{-1}`, :math:`D_d = D + \\alpha C B`);
:func:`discretise_ss` returns all four matrices.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import linalg as sla

from ..errors import InvalidParameterError, UnknownNameError
from . import _validate as V

__all__ = ["discretise", "discretise_ss", "DISCRETISATIONS"]

#: method name -> alpha of the generalised bilinear transform (None: zero-order hold)
DISCRETISATIONS: dict[str, float | None] = {
    "zoh": None,
    "euler": 0.0,
    "bilinear": 0.5,
    "backward_euler": 1.0,
}
_ALIASES = {"tustin": "bilinear", "forward_diff": "euler", "backward_diff": "backward_euler"}


def _method(method: str) -> str:
    name = _ALIASES.get(method, method)
    if name not in DISCRETISATIONS:
        raise UnknownNameError("discretisation", method,
                               list(DISCRETISATIONS) + list(_ALIASES))
    return name


def _discretise(W, U, dt, method):
    W = V.square_matrix(W, "W")
    n = W.shape[0]
    U = V.input_matrix(U, n, "U")
    dt = V.positive_step(dt, "dt")
    name = _method(method)
    alpha = DISCRETISATIONS[name]
    if alpha is None:
        d = U.shape[1]
        M = np.zeros((n + d, n + d))
        M[:n, :n], M[:n, n:] = W, U
        E = sla.expm(M * dt)
        return W, U, E[:n, :n], E[:n, n:], None, name
    I = np.eye(n)
    ima = I - alpha * dt * W
    if alpha == 0.0:
        return W, U, I + dt * W, dt * U, ima, name
    with warnings.catch_warnings():  # singularity is reported below, as an error
        warnings.simplefilter("ignore", sla.LinAlgWarning)
        lu = sla.lu_factor(ima, check_finite=False)
    if np.any(np.abs(np.diag(lu[0])) <= np.finfo(float).eps * np.abs(ima).max()):
        raise InvalidParameterError(
            f"I - {alpha}*dt*W is singular (dt = {dt} puts 1/({alpha} dt) on the spectrum "
            f"of W); choose another dt")
    A = sla.lu_solve(lu, I + (1.0 - alpha) * dt * W)
    B = sla.lu_solve(lu, dt * U)
    return W, U, A, B, ima, name


def discretise(W, U, dt, method: str = "zoh") -> tuple[np.ndarray, np.ndarray]:
    """Discretise :math:`\\dot h = Wh + Ux` at step ``dt``: returns ``(A, B)``.

    Parameters
    ----------
    W : (N, N) array
    U : (N, d) array (1-D means d = 1)
    dt : float > 0
    method : {"zoh", "bilinear", "euler", "backward_euler"}
        Aliases as in :func:`scipy.signal.cont2discrete`: ``"tustin"``, ``"forward_diff"``,
        ``"backward_diff"``.

    Returns
    -------
    A : (N, N) array, B : (N, d) array, with :math:`h_{k+1} = A h_k + B x_k`.
    """
    _, _, A, B, _, _ = _discretise(W, U, dt, method)
    return A, B


def discretise_ss(W, U, c, dt, method: str = "zoh"):
    """Discretise the full state space :math:`(W, U, C = c^\\top, D = 0)`.

    Returns ``(A, B, C_d, D_d)`` as :func:`scipy.signal.cont2discrete` does: for the
    transform with parameter :math:`\\alpha`, :math:`C_d = C (I - \\alpha\\Delta t W)^{-1}` and
    :math:`D_d = \\alpha\\, C B` (with the discrete ``B``); for ``"zoh"`` and ``"euler"``
    the readout is unchanged. ``c`` is (N,) or (p, N); ``C_d`` has shape (p, N) and ``D_d``
    (p, d).
    """
    W, U, A, B, ima, name = _discretise(W, U, dt, method)
    C, _ = V.output_matrix(c, W.shape[0], "c")
    alpha = DISCRETISATIONS[name]
    if alpha is None or alpha == 0.0:
        return A, B, C.copy(), np.zeros((C.shape[0], B.shape[1]))
    Cd = np.linalg.solve(ima.T, C.T).T
    Dd = alpha * (C @ B)
    return A, B, Cd, Dd
