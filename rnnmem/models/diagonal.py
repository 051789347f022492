"""The linear diagonal state-space model, with eigenvalues from a named parameterisation.

.. math::

    \\frac{dh}{dt} = \\Lambda h + U x, \\quad y = C h, \\quad
    \\Lambda = \\operatorname{diag}(f(w_1), \\dots, f(w_N))

(continuous time), discretised by zero-order hold at step :math:`\\Delta t`:

.. math::

    h_k = \\bar A h_{k-1} + \\bar B x_k, \\quad
    \\bar A = e^{\\Lambda \\Delta t}, \\quad
    \\bar B = \\Lambda^{-1}(e^{\\Lambda \\Delta t} - I) U, \\quad y_k = C h_k,

so that :math:`y_k = y(k\\Delta t)` when :math:`x` is held at :math:`x_k` on
:math:`((k-1)\\Delta t, k\\Delta t]`. In discrete time :math:`\\bar A = \\operatorname{diag}(f(w))`
and :math:`\\bar B = U`. The map :math:`f` is the torch callable generated from the sympy
expression in :data:`rnnmem.theory.PARAMETERISATIONS`; there is no second copy of it here.

Exact memory function (Wang, Li & Li, ICLR 2024, Def. 3.1, for a linear model):
:math:`M(t) = \\|C e^{\\Lambda t} U\\|_1` (continuous) and
:math:`M_k = \\|C \\bar A^k \\bar B\\|_1` (discrete, per step), the 1-norm taken over input
directions, separately for each output.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..errors import InvalidParameterError, NonFiniteError, ShapeError, UnstableSystemError
from ..theory import get_parameterisation
from .base import RecurrentModel, check_input
from .recurrence import linear_recurrence
from .registry import register_model

__all__ = ["DiagonalSSM", "diagonal_memory_function"]


def diagonal_memory_function(lam: np.ndarray, U: np.ndarray, C: np.ndarray, t: np.ndarray,
                             time: str = "continuous") -> np.ndarray:
    """Closed-form memory function of a diagonal linear system, vectorised over ``t``.

    Parameters
    ----------
    lam : (N,) eigenvalues (real or complex)
    U : (N, d) input matrix
    C : (p, N) output matrix
    t : (L,) times (continuous) or non-negative integer steps (discrete)

    Returns
    -------
    (L, p) array, :math:`M_o(t) = \\sum_i |\\sum_j C_{oj} e^{\\lambda_j t} U_{ji}|` (continuous)
    or with :math:`\\lambda_j^t` (discrete).
    """
    t = np.asarray(t, dtype=float)
    if time == "continuous":
        E = np.exp(np.multiply.outer(t, lam))  # (L, N)
    else:
        E = np.power.outer(lam.astype(complex) if np.iscomplexobj(lam) else lam, t).T  # (L, N)
    K = C[:, :, None] * U[None, :, :]  # (p, N, d)
    resp = np.einsum("ln,pnd->lpd", E, K)  # (L, p, d)
    if np.iscomplexobj(resp):
        resp = resp.real
    return np.abs(resp).sum(-1)  # (L, p)


@register_model("diagonal_ssm")
class DiagonalSSM(RecurrentModel):
    """Linear diagonal SSM with eigenvalues :math:`\\lambda = f(w)` from a parameterisation.

    Parameters
    ----------
    state_dim : int
    input_dim, output_dim : int
    parameterisation : str
        A name in :data:`rnnmem.theory.PARAMETERISATIONS` whose ``time`` matches ``time``.
    time : {"continuous", "discrete"}
    dt : float
        Step of the zero-order-hold discretisation (continuous time) and of the time axis.
    decay_range : (float, float)
        Initial decay rates :math:`-\\lambda` (continuous) or :math:`1-\\lambda` (discrete),
        spaced log-uniformly; mapped to weights through the parameterisation's inverse.
        Default (0.05, 2.0) in continuous time, (0.01, 0.5) in discrete time.
    dtype, device :
        ``device="auto"`` picks CUDA when present.
    seed : int, optional
        Seed for the initialisation.
    """

    recurrent_parameter_names = ("w",)

    def __init__(self, state_dim: int, input_dim: int = 1, output_dim: int = 1,
                 parameterisation: str = "softplus", time: str = "continuous",
                 dt: float = 0.1, decay_range: tuple[float, float] | None = None,
                 dtype="float32", device="auto", seed: int | None = None):
        if not isinstance(state_dim, int) or state_dim < 1:
            raise InvalidParameterError(f"state_dim must be a positive integer, got {state_dim!r}")
        p = get_parameterisation(parameterisation)
        if p.time != time:
            raise InvalidParameterError(
                f"parameterisation {p.name!r} is {p.time}-time but the model is {time}-time")
        if decay_range is None:
            decay_range = (0.05, 2.0) if time == "continuous" else (0.01, 0.5)
        lo, hi = (float(v) for v in decay_range)
        if not (0 < lo <= hi) or (time == "discrete" and hi >= 1):
            raise InvalidParameterError(
                f"decay_range must satisfy 0 < lo <= hi{' < 1' if time == 'discrete' else ''}, "
                f"got {decay_range!r}")
        super().__init__(input_dim=input_dim, output_dim=output_dim, dt=dt, time=time,
                         dtype=dtype, device=device,
                         config=dict(state_dim=state_dim, parameterisation=p.name,
                                     decay_range=[lo, hi], seed=seed))
        self.state_dim = state_dim
        self.parameterisation = p
        self._f = p.torch
        gen = np.random.default_rng(seed)
        rates = np.exp(np.linspace(math.log(lo), math.log(hi), state_dim))  # (N,)
        lam0 = -rates if time == "continuous" else 1.0 - rates
        w0 = p.inverse_numpy(lam0)
        fk = self.factory
        self.w = nn.Parameter(torch.as_tensor(w0, **fk))  # (N,)
        self.U = nn.Parameter(torch.as_tensor(gen.standard_normal((state_dim, input_dim))
                                              / math.sqrt(input_dim), **fk))  # (N, d)
        self.C = nn.Parameter(torch.as_tensor(gen.standard_normal((output_dim, state_dim))
                                              / math.sqrt(state_dim), **fk))  # (p, N)

    # ---- the recurrence --------------------------------------------------------------
    def eigenvalues(self) -> torch.Tensor:
        """:math:`\\lambda = f(w)`, shape (N,)."""
        return self._f(self.w)

    def discretised(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(:math:`\\bar A` (N,), :math:`\\bar B` (N, d))."""
        lam = self.eigenvalues()
        if self.time == "discrete":
            return lam, self.U
        z = lam * self.dt
        # (e^{z} - 1)/lambda, with its limit dt at lambda = 0
        small = z.abs() < 1e-8
        safe = torch.where(small, torch.ones_like(lam), lam)
        gain = torch.where(small, torch.full_like(lam, self.dt) * (1 + z / 2),
                           torch.expm1(z) / safe)
        return torch.exp(z), gain[:, None] * self.U

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, T, input_dim) -> ``y`` (B, T, output_dim)."""
        x = check_input(x, self.input_dim).to(self.dtype)
        A, Bm = self.discretised()  # (N,), (N, d)
        u = x @ Bm.T  # (B, T, N)
        h = linear_recurrence(A, u)  # (B, T, N)
        return h @ self.C.T  # (B, T, p)

    # ---- memory ----------------------------------------------------------------------
    def memory_function(self, t, *, exact: bool = True, require_stable: bool = True,
                        **kwargs) -> np.ndarray:
        """Memory function at times ``t`` (continuous) or steps ``t`` (discrete).

        ``exact=True`` uses the closed form (float64, one vectorised evaluation);
        ``exact=False`` the black-box estimator of :class:`RecurrentModel`.
        Returns shape (len(t),) for one output, else (len(t), output_dim).
        """
        t = np.asarray(t, dtype=float)
        if t.ndim != 1:
            raise ShapeError(f"t must be 1-D, got shape {t.shape}")
        if not np.all(np.isfinite(t)):
            raise NonFiniteError("t contains NaN or inf")
        if np.any(t < 0):
            raise InvalidParameterError("memory function times must be >= 0")
        if not exact:
            return super().memory_function(t, **kwargs)
        with torch.no_grad():
            lam = self.eigenvalues().detach().cpu().double().numpy()
            U = self.U.detach().cpu().double().numpy()
            C = self.C.detach().cpu().double().numpy()
        if require_stable:
            bad = lam >= 0 if self.time == "continuous" else np.abs(lam) >= 1
            if bad.any():
                raise UnstableSystemError(
                    f"{int(bad.sum())} eigenvalue(s) outside the stable region "
                    f"(e.g. {lam[bad][0]:.4g}); the memory function does not decay")
        if self.time == "discrete":
            if np.any(t != np.round(t)):
                raise InvalidParameterError("discrete-time memory needs integer steps t")
        M = diagonal_memory_function(lam, U, C, t, self.time)
        return M[:, 0] if self.output_dim == 1 else M
