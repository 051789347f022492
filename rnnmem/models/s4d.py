"""S4D: a diagonal continuous-time SSM with complex eigenvalues, run as a long convolution.

A. Gu, A. Gupta, K. Goel and C. Ré, *On the Parameterization and Initialization of Diagonal
State Space Models* (NeurIPS 2022); stable real parts as in S. Wang and Q. Li, *StableSSM*
(ICML 2024), whose ``STABLESSMKernel`` is this kernel with a named map for the real part.

.. math::

    A_n = f(w_n) + i\\,\\omega_n, \\qquad \\bar A_n = e^{\\Delta_n A_n}, \\qquad
    \\bar B_n = \\frac{e^{\\Delta_n A_n} - 1}{A_n} B_n \\quad\\text{(zero-order hold)},

    K_k = \\operatorname{Re}\\Big(\\sum_n C_n \\bar B_n \\bar A_n^{\\,k}\\Big) \\in
    \\mathbb{R}^{p\\times d}, \\qquad y_k = \\sum_{j=0}^{k} K_j x_{k-j} + D x_k .

:math:`f` is a continuous-time parameterisation from :data:`rnnmem.theory.PARAMETERISATIONS`
(its generated torch callable), so :math:`\\operatorname{Re}A_n < 0` for every weight with a
stable map; :math:`\\omega_n` is free; :math:`\\Delta_n = e^{\\log\\Delta_n}` is a trainable step
per mode (log-uniform on ``[dt_min, dt_max]`` at initialisation). The kernel is built by a
Vandermonde product :math:`\\bar A_n^{\\,k} = e^{k\\Delta_n A_n}` and applied by FFT
convolution (length :math:`2T`, no wrap-around); :meth:`S4D._naive` runs the same model as a
recurrence through :func:`~rnnmem.models.recurrence.linear_recurrence`.

Conventions: ``state_dim`` counts complex modes; the factor 2 of the conjugate-pair form
:math:`2\\operatorname{Re}(\\cdot)` is absorbed into :math:`C`. The model is multi-input
multi-output with one shared state (:math:`B \\in \\mathbb{C}^{N\\times d}`,
:math:`C \\in \\mathbb{C}^{p\\times N}`), so :math:`\\Delta` is per mode, not per channel as in
the single-input S4D layer.

Initialisations (S4D paper, Sec. 4): ``"s4d-lin"``
:math:`A_n = -\\tfrac12 + i\\pi n`; ``"s4d-inv"``
:math:`A_n = -\\tfrac12 + i\\tfrac N\\pi(\\tfrac{N}{2n+1} - 1)`; ``"real"`` (S4D-Real)
:math:`A_n = -(n+1)`; the real part is mapped to :math:`w` by the parameterisation's inverse
(the ``best`` map reaches only :math:`[-2, 0)`, so ``"real"`` with ``best`` and
:math:`N > 2` is refused). :math:`B_n = 1`, :math:`C` standard complex Gaussian, :math:`D`
standard Gaussian (as S4D and StableSSM's kernel, whose defaults are ``dt_min = 1e-3``,
``dt_max = 1e-1``, real part -1/2 and S4D-Lin imaginary parts).

Memory function (Wang, Li & Li, ICLR 2024, Def. 3.1), continuous time. Sampling at the model
step ``dt`` makes the discrete system the zero-order hold of
:math:`\\dot h = \\mu h + \\beta x` with :math:`\\mu_n = A_n\\Delta_n/\\mathrm{dt}` and
:math:`\\beta_n = B_n\\Delta_n/\\mathrm{dt}` (so :math:`e^{\\mu_n \\mathrm{dt}} = \\bar A_n` and
:math:`(e^{\\mu_n\\mathrm{dt}} - 1)\\beta_n/\\mu_n = \\bar B_n`); hence, for :math:`t > 0`,
:math:`M_o(t) = \\sum_i |\\operatorname{Re}(C e^{\\mu t}\\beta)_{oi}|`. The skip term
:math:`D x` adds a jump at :math:`t = 0` (a Dirac mass in the derivative), not included.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..errors import InvalidParameterError, UnknownNameError
from ..theory import get_parameterisation
from .base import RecurrentModel, check_input
from ._common import diagonal_memory_function
from .recurrence import linear_recurrence
from .registry import register_model
from ._common import ExactMemoryMixin, _np, check_positive_int, check_supported_dtype, zoh_diagonal

__all__ = ["S4D", "S4DKernel", "S4D_INITS", "s4d_initial_eigenvalues"]

S4D_INITS = ("s4d-lin", "s4d-inv", "real")


def s4d_initial_eigenvalues(n: int, init: str) -> np.ndarray:
    """The S4D initial eigenvalues :math:`A_n`, complex (N,) (module docstring)."""
    k = np.arange(n, dtype=float)
    if init == "s4d-lin":
        return -0.5 + 1j * math.pi * k
    if init == "s4d-inv":
        return -0.5 + 1j * (n / math.pi) * (n / (2 * k + 1) - 1)
    if init == "real":
        return -(k + 1) + 0j
    raise UnknownNameError("S4D init", init, S4D_INITS)


class S4DKernel(nn.Module):
    """Diagonal SSM parameters and the convolution kernel they generate.

    Parameters
    ----------
    state_dim, input_dim, output_dim : int
    parameterisation : str
        Continuous-time map for :math:`\\operatorname{Re} A`.
    init : {"s4d-lin", "s4d-inv", "real"}
    dt_min, dt_max : float
        Range of the initial steps :math:`\\Delta_n` (log-uniform).
    rng : numpy Generator
    factory : dict
        ``{"dtype": ..., "device": ...}`` of the real parameters.
    """

    def __init__(self, state_dim: int, input_dim: int, output_dim: int, parameterisation: str,
                 init: str, dt_min: float, dt_max: float, rng: np.random.Generator,
                 factory: dict):
        super().__init__()
        p = get_parameterisation(parameterisation)
        if p.time != "continuous":
            raise InvalidParameterError(
                f"S4D needs a continuous-time parameterisation, {p.name!r} is {p.time}-time")
        self.parameterisation, self._f = p, p.torch
        A0 = s4d_initial_eigenvalues(state_dim, init)
        w0 = p.inverse_numpy(A0.real)
        log_dt = rng.uniform(math.log(dt_min), math.log(dt_max), state_dim)
        C0 = (rng.standard_normal((output_dim, state_dim))
              + 1j * rng.standard_normal((output_dim, state_dim))) / math.sqrt(2)
        fk = factory
        self.w = nn.Parameter(torch.as_tensor(w0, **fk))  # (N,)
        self.A_imag = nn.Parameter(torch.as_tensor(A0.imag, **fk))  # (N,)
        self.log_dt = nn.Parameter(torch.as_tensor(log_dt, **fk))  # (N,)
        self.B_re = nn.Parameter(torch.ones(state_dim, input_dim, **fk))  # (N, d)
        self.B_im = nn.Parameter(torch.zeros(state_dim, input_dim, **fk))  # (N, d)
        self.C_re = nn.Parameter(torch.as_tensor(C0.real, **fk))  # (p, N)
        self.C_im = nn.Parameter(torch.as_tensor(C0.imag, **fk))  # (p, N)

    def A(self) -> torch.Tensor:
        """:math:`A = f(w) + i\\omega`, complex (N,), per unit of the mode's own step."""
        return torch.complex(self._f(self.w), self.A_imag)

    def steps(self) -> torch.Tensor:
        """:math:`\\Delta = e^{\\log\\Delta}`, (N,)."""
        return torch.exp(self.log_dt)

    def B(self) -> torch.Tensor:
        return torch.complex(self.B_re, self.B_im)  # (N, d)

    def C(self) -> torch.Tensor:
        return torch.complex(self.C_re, self.C_im)  # (p, N)

    def discrete(self) -> tuple[torch.Tensor, torch.Tensor]:
        """:math:`(\\bar A, \\bar B)`: complex (N,) and (N, d), zero-order hold."""
        Abar, gain = zoh_diagonal(self.A(), self.steps())  # (N,), (N,)
        return Abar, gain[:, None] * self.B()

    def forward(self, length: int) -> torch.Tensor:
        """Kernel :math:`K`, shape (p, d, length), by a Vandermonde product."""
        A, dt = self.A(), self.steps()
        _, Bbar = self.discrete()  # (N, d)
        k = torch.arange(length, device=A.device, dtype=dt.dtype)  # (L,)
        V = torch.exp((A * dt)[:, None] * k[None, :])  # (N, L)
        return torch.einsum("pn,nl,nd->pdl", self.C(), V, Bbar).real  # (p, d, L)


@register_model("s4d")
class S4D(ExactMemoryMixin, RecurrentModel):
    """S4D layer :math:`y = K * x + D x` (module docstring).

    Parameters
    ----------
    width : int
        Number of complex modes :math:`N` (formerly ``state_dim``, still accepted,
        deprecated).
    input_dim, output_dim : int
    parameterisation : str
        Continuous-time map for the real parts (``exp`` as in S4D's ``log_A_real``).
    init : {"s4d-lin", "s4d-inv", "real"}
    dt_min, dt_max : float
        Initial steps :math:`\\Delta_n`, log-uniform; ``0 < dt_min <= dt_max``.
    time : "continuous"
        Accepted for the common interface; S4D is a continuous-time model.
    dt : float
        Physical time between samples (the memory function's time axis).
    dtype : float32 or float64
    device : ``"auto"`` or a torch device
    seed : int, optional
    """

    recurrent_parameter_names = ("kernel.w", "kernel.A_imag", "kernel.log_dt")

    def __init__(self, width: int, input_dim: int = 1, output_dim: int = 1,
                 parameterisation: str = "exp", init: str = "s4d-lin", dt_min: float = 1e-3,
                 dt_max: float = 1e-1, time: str = "continuous", dt: float = 1.0,
                 dtype="float32", device="auto", seed: int | None = None):
        check_positive_int("width", width)
        state_dim = width
        if init not in S4D_INITS:
            raise UnknownNameError("S4D init", init, S4D_INITS)
        for nm, v in (("dt_min", dt_min), ("dt_max", dt_max)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not \
                    (math.isfinite(v) and v > 0):
                raise InvalidParameterError(f"{nm} must be a positive finite number, got {v!r}")
        if dt_min > dt_max:
            raise InvalidParameterError(f"need dt_min <= dt_max, got {dt_min} > {dt_max}")
        if time != "continuous":
            raise InvalidParameterError(f"S4D is a continuous-time model, got time={time!r}")
        p = get_parameterisation(parameterisation)
        super().__init__(input_dim=input_dim, output_dim=output_dim, dt=dt, time=time,
                         dtype=dtype, device=device,
                         config=dict(width=width, parameterisation=p.name, init=init,
                                     dt_min=float(dt_min), dt_max=float(dt_max), seed=seed))
        check_supported_dtype(self)
        self.width = self.state_dim = width
        rng = np.random.default_rng(seed)
        self.kernel = S4DKernel(state_dim, input_dim, output_dim, p.name, init, float(dt_min),
                                float(dt_max), rng, self.factory)
        self.D = nn.Parameter(torch.as_tensor(rng.standard_normal((output_dim, input_dim)),
                                              **self.factory))  # (p, d)

    def eigenvalues(self) -> torch.Tensor:
        """Continuous-time eigenvalues per unit of physical time,
        :math:`\\mu = A\\Delta/\\mathrm{dt}`, complex (N,); stable iff real part < 0."""
        return self.kernel.A() * self.kernel.steps() / self.dt

    def discrete_eigenvalues(self) -> torch.Tensor:
        """:math:`\\bar A = e^{\\Delta A}`, complex (N,)."""
        return self.kernel.discrete()[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, T, input_dim) -> ``y`` (B, T, output_dim), by FFT convolution."""
        x = check_input(x, self.input_dim).to(self.dtype)
        T = x.shape[1]
        K = self.kernel(T)  # (p, d, T)
        n = 2 * T
        xf = torch.fft.rfft(x.transpose(1, 2), n=n)  # (B, d, n//2+1)
        kf = torch.fft.rfft(K, n=n)  # (p, d, n//2+1)
        y = torch.fft.irfft(torch.einsum("bdf,pdf->bpf", xf, kf), n=n)[..., :T]  # (B, p, T)
        return y.transpose(1, 2) + x @ self.D.T  # (B, T, p)

    def _naive(self, x: torch.Tensor) -> torch.Tensor:
        """Reference: the recurrence :math:`h_k = \\bar A h_{k-1} + \\bar B x_k`,
        :math:`y_k = \\operatorname{Re}(C h_k) + D x_k`, via ``linear_recurrence``."""
        x = check_input(x, self.input_dim).to(self.dtype)
        Abar, Bbar = self.kernel.discrete()  # (N,), (N, d)
        h = linear_recurrence(Abar, x.to(Bbar.dtype) @ Bbar.T)  # (B, T, N) complex
        return (h @ self.kernel.C().T).real + x @ self.D.T  # (B, T, p)

    def impulse_response(self, length: int) -> torch.Tensor:
        """:math:`\\rho_0 = K_0 + D`, :math:`\\rho_j = K_j`; shape (length, p, d)."""
        check_positive_int("length", length)
        rho = self.kernel(length).permute(2, 0, 1)  # (L, p, d)
        return torch.cat([rho[:1] + self.D, rho[1:]], dim=0)

    # hooks of ExactMemoryMixin
    is_linear = True

    def _spectra(self, form: str):
        if form == "continuous":
            return [(self.eigenvalues(), "continuous")]
        return [(self.discrete_eigenvalues(), "discrete")]

    def _spectrum_eigenvalues(self) -> torch.Tensor:
        """:math:`\\mu = A\\Delta/\\mathrm{dt}`, per unit of physical time."""
        return self.eigenvalues()

    def _continuous_memory(self, t: np.ndarray) -> np.ndarray:
        """:math:`\\sum_i |\\operatorname{Re}(C e^{\\mu t}\\beta)_{oi}|`, (L, p)."""
        mu = _np(self.eigenvalues())
        beta = _np(self.kernel.B() * (self.kernel.steps() / self.dt)[:, None])  # (N, d)
        return diagonal_memory_function(mu, beta, _np(self.kernel.C()), t, "continuous")
