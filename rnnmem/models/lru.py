"""The Linear Recurrent Unit (Orvieto et al., *Resurrecting Recurrent Neural Networks for Long
Sequences*, ICML 2023).

.. math::

    h_k = \\operatorname{diag}(\\lambda)\\, h_{k-1} + \\gamma \\odot (B x_k), \\qquad
    y_k = \\operatorname{Re}(C h_k) + D x_k, \\qquad h_{-1} = 0,

    \\lambda_n = e^{-e^{\\nu_n} + i\\theta_n}, \\qquad |\\lambda_n| = \\exp(-e^{\\nu_n}), \\qquad
    \\gamma_n = \\sqrt{1 - |\\lambda_n|^2},

with complex :math:`B \\in \\mathbb{C}^{N\\times d}`, :math:`C \\in \\mathbb{C}^{p\\times N}` and
real :math:`D`. The modulus map :math:`\\nu \\mapsto \\exp(-e^{\\nu})` is
``PARAMETERISATIONS["lru"].torch`` (generated from sympy; not written again here), so
:math:`|\\lambda| \\in (0, 1)` for every real :math:`\\nu`. The recurrence runs through
:func:`~rnnmem.models.recurrence.linear_recurrence` with a complex ``a``.

Initialisation (paper, Sec. 3.3 and Lemma 3.2, "ring" initialisation): :math:`|\\lambda|`
distributed uniformly on the ring :math:`r_\\min \\le |\\lambda| \\le r_\\max` of the complex
plane, :math:`\\nu = \\log(-\\tfrac12\\log(u_1 (r_\\max^2 - r_\\min^2) + r_\\min^2))`,
:math:`\\theta = u_2\\,\\theta_\\max` with :math:`u_1, u_2 \\sim U[0, 1]`;
:math:`B = (\\xi + i\\eta)/\\sqrt{2d}`, :math:`C = (\\xi' + i\\eta')/\\sqrt N` with standard
Gaussian :math:`\\xi, \\eta, \\xi', \\eta'`, and :math:`D \\sim N(0, 1)` entry-wise.
Differences from the paper: the phase :math:`\\theta` is trained directly (the paper
trains :math:`\\log\\theta`), and :math:`\\gamma` is tied to :math:`|\\lambda|` instead of
being a separate trainable parameter initialised to that value. The Curse-of-memory
repository's ``lru.py`` is a real residual variant
(``h + dt * act(a h + sqrt(1 - a^2) x)``, ``a = exp(-exp(w)) - 1``), not followed here.

Memory function (Wang, Li & Li, Def. 3.1; discrete time, :math:`t = k\\Delta t`, the
"sampled" form of :class:`~rnnmem.models.ssm.ExactMemoryMixin`):
:math:`M_o(0) = \\sum_i |(\\operatorname{Re}(C\\,\\mathrm{diag}(\\gamma) B) + D)_{oi}|/\\Delta t`,
:math:`M_o(k\\Delta t) = \\sum_i |\\operatorname{Re}(C\\,\\mathrm{diag}(\\lambda^k\\gamma) B)_{oi}|
/\\Delta t` for :math:`k \\ge 1`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..errors import InvalidParameterError
from ..theory import PARAMETERISATIONS
from .base import RecurrentModel, check_input
from .recurrence import linear_recurrence
from .registry import register_model
from ._common import ExactMemoryMixin, check_positive_int, check_supported_dtype

__all__ = ["LRU"]


def _real(name: str, v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise InvalidParameterError(f"{name} must be a finite number, got {v!r}")
    return float(v)


@register_model("lru")
class LRU(ExactMemoryMixin, RecurrentModel):
    """Linear Recurrent Unit (Orvieto et al. 2023); see the module docstring.

    Parameters
    ----------
    width : int
        :math:`N`, the number of complex modes (formerly ``state_dim``, still accepted,
        deprecated).
    input_dim, output_dim : int
    r_min, r_max : float
        Ring of the initial eigenvalue moduli, :math:`0 \\le r_\\min < r_\\max \\le 1`.
    max_phase : float
        Initial phases uniform on :math:`[0, \\theta_\\max]`, :math:`\\theta_\\max > 0`.
    time : "discrete"
        The LRU is a discrete-time model (accepted for the common interface).
    dt : float
        Time unit of one step.
    dtype : float32 (complex64 state) or float64 (complex128 state)
    device : ``"auto"`` or a torch device
    seed : int, optional
    """

    recurrent_parameter_names = ("nu_log", "theta")

    def __init__(self, width: int, input_dim: int = 1, output_dim: int = 1,
                 r_min: float = 0.0, r_max: float = 1.0, max_phase: float = 2 * math.pi,
                 time: str = "discrete", dt: float = 1.0, dtype="float32", device="auto",
                 seed: int | None = None):
        check_positive_int("width", width)
        state_dim = width
        r_min, r_max = _real("r_min", r_min), _real("r_max", r_max)
        max_phase = _real("max_phase", max_phase)
        if not 0.0 <= r_min < r_max <= 1.0:
            raise InvalidParameterError(
                f"need 0 <= r_min < r_max <= 1, got r_min={r_min}, r_max={r_max}")
        if max_phase <= 0:
            raise InvalidParameterError(f"max_phase must be > 0, got {max_phase}")
        if time != "discrete":
            raise InvalidParameterError(f"the LRU is a discrete-time model, got time={time!r}")
        super().__init__(input_dim=input_dim, output_dim=output_dim, dt=dt, time=time,
                         dtype=dtype, device=device,
                         config=dict(width=width, r_min=r_min, r_max=r_max,
                                     max_phase=max_phase, seed=seed))
        check_supported_dtype(self)
        self.width = self.state_dim = width
        self._modulus = PARAMETERISATIONS["lru"].torch
        fk = self.factory
        rng = np.random.default_rng(seed)
        # ring initialisation; u1 in [eps, 1) keeps nu finite and |lambda| < 1 even at r_max = 1
        u1 = rng.uniform(np.finfo(np.float64).eps, 1.0, state_dim)
        u2 = rng.random(state_dim)
        nu = np.log(-0.5 * np.log(u1 * (r_max**2 - r_min**2) + r_min**2))  # (N,)
        self.nu_log = nn.Parameter(torch.as_tensor(nu, **fk))  # (N,)
        self.theta = nn.Parameter(torch.as_tensor(max_phase * u2, **fk))  # (N,)
        s_b, s_c = 1.0 / math.sqrt(2 * input_dim), 1.0 / math.sqrt(state_dim)
        self.B_re = nn.Parameter(torch.as_tensor(rng.standard_normal((state_dim, input_dim))
                                                 * s_b, **fk))  # (N, d)
        self.B_im = nn.Parameter(torch.as_tensor(rng.standard_normal((state_dim, input_dim))
                                                 * s_b, **fk))  # (N, d)
        self.C_re = nn.Parameter(torch.as_tensor(rng.standard_normal((output_dim, state_dim))
                                                 * s_c, **fk))  # (p, N)
        self.C_im = nn.Parameter(torch.as_tensor(rng.standard_normal((output_dim, state_dim))
                                                 * s_c, **fk))  # (p, N)
        self.D = nn.Parameter(torch.as_tensor(rng.standard_normal((output_dim, input_dim)),
                                              **fk))  # (p, d)

    # ---- parameters as the paper writes them -----------------------------------------
    def modulus(self) -> torch.Tensor:
        """:math:`|\\lambda| = \\exp(-e^{\\nu})`, (N,), from the generated ``lru`` map."""
        return self._modulus(self.nu_log)

    def eigenvalues(self) -> torch.Tensor:
        """:math:`\\lambda = |\\lambda| e^{i\\theta}`, complex (N,); stable iff modulus < 1."""
        return torch.polar(self.modulus(), self.theta)

    def gamma(self) -> torch.Tensor:
        """Normalisation :math:`\\gamma = \\sqrt{1 - |\\lambda|^2}`, (N,)."""
        r = self.modulus()
        return torch.sqrt((1 - r) * (1 + r))

    def input_matrix(self) -> torch.Tensor:
        """:math:`\\operatorname{diag}(\\gamma) B`, complex (N, d)."""
        return torch.complex(self.B_re, self.B_im) * self.gamma()[:, None]

    def output_matrix(self) -> torch.Tensor:
        """:math:`C`, complex (p, N)."""
        return torch.complex(self.C_re, self.C_im)

    # ---- forward ---------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, T, input_dim) -> ``y`` (B, T, output_dim)."""
        x = check_input(x, self.input_dim).to(self.dtype)
        Bg = self.input_matrix()  # (N, d) complex
        u = x.to(Bg.dtype) @ Bg.T  # (B, T, N) complex
        h = linear_recurrence(self.eigenvalues(), u)  # (B, T, N) complex
        return (h @ self.output_matrix().T).real + x @ self.D.T  # (B, T, p)

    def _forward_loop(self, x: torch.Tensor) -> torch.Tensor:
        """Reference: the recurrence written out on real and imaginary parts (slow)."""
        x = check_input(x, self.input_dim).to(self.dtype)
        r, th, g = self.modulus(), self.theta, self.gamma()
        a_re, a_im = r * torch.cos(th), r * torch.sin(th)  # (N,)
        h_re = torch.zeros(x.shape[0], self.state_dim, dtype=x.dtype, device=x.device)
        h_im = torch.zeros_like(h_re)
        ys = []
        for k in range(x.shape[1]):
            bx_re = x[:, k] @ (self.B_re * g[:, None]).T  # (B, N)
            bx_im = x[:, k] @ (self.B_im * g[:, None]).T
            h_re, h_im = a_re * h_re - a_im * h_im + bx_re, a_re * h_im + a_im * h_re + bx_im
            ys.append(h_re @ self.C_re.T - h_im @ self.C_im.T + x[:, k] @ self.D.T)
        return torch.stack(ys, dim=1)  # (B, T, p)

    # ---- kernel and memory -----------------------------------------------------------
    def impulse_response(self, length: int) -> torch.Tensor:
        """:math:`\\rho_0 = \\operatorname{Re}(C\\gamma B) + D`,
        :math:`\\rho_j = \\operatorname{Re}(C\\lambda^j\\gamma B)`; shape (length, p, d)."""
        check_positive_int("length", length)
        lam, Bg, C = self.eigenvalues(), self.input_matrix(), self.output_matrix()
        ones = torch.ones(1, self.state_dim, dtype=lam.dtype, device=lam.device)
        V = torch.cat([ones, torch.cumprod(lam.expand(length - 1, -1), dim=0)])  # (L, N)
        rho = torch.einsum("pn,ln,nd->lpd", C, V, Bg).real  # (L, p, d)
        return torch.cat([rho[:1] + self.D, rho[1:]], dim=0)

    # hooks of ExactMemoryMixin
    is_linear = True

    def _spectra(self, form: str):
        return [(self.eigenvalues(), "discrete")]

    def _spectrum_eigenvalues(self) -> torch.Tensor:
        """:math:`\\lambda = |\\lambda| e^{i\\theta}`, the per-step multipliers."""
        return self.eigenvalues()
