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

Exact memory function (Wang, Li & Li, ICLR 2024, Def. 3.1, for a linear model), through
:class:`~rnnmem.models._common.ExactMemoryMixin`, at times ``t`` in units of time:
:math:`M(t) = \\|C e^{\\Lambda t} U\\|_1` (continuous form, the default in continuous time)
and :math:`M(k\\Delta t) = \\|C \\bar A^k \\bar B\\|_1 / \\Delta t` (sampled form, the only
one in discrete time, what the black-box estimator measures), the 1-norm taken over input
directions, separately for each output.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..errors import InvalidParameterError
from ..theory import get_parameterisation
from ._common import (
    ExactMemoryMixin,
    _np,
    check_positive_int,
    diagonal_memory_function,
    geometric_sums,
    initial_eigenvalues,
    zoh_diagonal,
)
from .base import RecurrentModel, check_input
from .recurrence import linear_recurrence
from .registry import register_model

__all__ = ["DiagonalSSM", "diagonal_memory_function"]


@register_model("diagonal_ssm")
class DiagonalSSM(ExactMemoryMixin, RecurrentModel):
    """Linear diagonal SSM with eigenvalues :math:`\\lambda = f(w)` from a parameterisation.

    Parameters
    ----------
    width : int
        State dimension :math:`N` (formerly ``state_dim``, still accepted, deprecated).
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

    def __init__(self, width: int, input_dim: int = 1, output_dim: int = 1,
                 parameterisation: str = "softplus", time: str = "continuous",
                 dt: float = 0.1, decay_range: tuple[float, float] | None = None,
                 dtype="float32", device="auto", seed: int | None = None):
        check_positive_int("width", width)
        state_dim = width
        p = get_parameterisation(parameterisation)
        if p.time != time:
            raise InvalidParameterError(
                f"parameterisation {p.name!r} is {p.time}-time but the model is {time}-time")
        lam0 = initial_eigenvalues(state_dim, time, decay_range)  # (N,)
        super().__init__(input_dim=input_dim, output_dim=output_dim, dt=dt, time=time,
                         dtype=dtype, device=device,
                         config=dict(width=width, parameterisation=p.name,
                                     decay_range=None if decay_range is None
                                     else [float(v) for v in decay_range], seed=seed))
        self.width = self.state_dim = width
        self.parameterisation = p
        self._f = p.torch
        gen = np.random.default_rng(seed)
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
        A, gain = zoh_diagonal(lam, self.dt)
        return A, gain[:, None] * self.U

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, T, input_dim) -> ``y`` (B, T, output_dim)."""
        x = check_input(x, self.input_dim).to(self.dtype)
        A, Bm = self.discretised()  # (N,), (N, d)
        u = x @ Bm.T  # (B, T, N)
        h = linear_recurrence(A, u)  # (B, T, N)
        return h @ self.C.T  # (B, T, p)

    # ---- memory (closed form through ExactMemoryMixin) ------------------------------
    is_linear = True

    def impulse_response(self, length: int) -> torch.Tensor:
        """Kernel :math:`\\rho_j = C \\bar A^j \\bar B`, shape (length, p, d), vectorised."""
        check_positive_int("length", length)
        A, Bm = self.discretised()  # (N,), (N, d)
        p, d = self.output_dim, self.input_dim
        K = (self.C.T[:, :, None] * Bm[:, None, :]).reshape(-1, p * d)  # (N, p d)
        return geometric_sums(A, K, length).reshape(length, p, d)  # blocked powers + GEMM

    def _impulse_response_reference(self, length: int) -> torch.Tensor:
        r"""Reference for :meth:`impulse_response`: every power :math:`\bar A^j`."""
        check_positive_int("length", length)
        A, Bm = self.discretised()  # (N,), (N, d)
        j = torch.arange(length, device=A.device, dtype=A.dtype)
        P = A[None, :] ** j[:, None]  # (L, N)
        return torch.einsum("ln,pn,nd->lpd", P, self.C, Bm)

    def _spectrum_eigenvalues(self) -> torch.Tensor:
        """:math:`\\lambda = f(w)`: generator eigenvalues (continuous time) or per-step
        multipliers (discrete time)."""
        return self.eigenvalues()

    def _spectra(self, form: str):
        if form == "continuous":
            return [(self.eigenvalues(), "continuous")]
        return [(self.discretised()[0], "discrete")]

    def _continuous_memory(self, t: np.ndarray) -> np.ndarray:
        """:math:`\\sum_i |(C e^{\\Lambda t} U)_{oi}|`, (L, p)."""
        return diagonal_memory_function(_np(self.eigenvalues()), _np(self.U), _np(self.C), t,
                                        "continuous")
