"""The residual nonlinear RNN of the curse-of-memory papers, in discrete and continuous time.

Continuous time (Wang, Li & Li, *Inverse Approximation Theory for Nonlinear RNNs*, ICLR 2024,
Sec. 2; Li, Han, E & Li, ICLR 2021):

.. math::

    \\frac{dh}{dt} = \\sigma(W h + U x(t) + b), \\qquad y = C h, \\qquad h(0) = 0,

with the input held at :math:`x_k` on :math:`[k\\Delta t, (k+1)\\Delta t)` (zero-order hold);
it is trained through a fixed-step torch integrator (``"euler"`` or ``"rk4"``, ``substeps``
steps of size :math:`\\Delta t/\\text{substeps}` per sample), and
:meth:`NonlinearRNN.solve_ivp_reference` integrates the same ODE with
:func:`scipy.integrate.solve_ivp` for evaluation.

Discrete time (the residual form of the original code, radarFudan/Curse-of-memory
``simple_rnn.py``: ``h + dt * act(x - P W P h)``):

.. math::

    h_{k+1} = h_k + \\Delta t\\,\\sigma(W h_k + U x_k + b), \\qquad y_k = C h_{k+1},
    \\qquad h_0 = 0,

i.e. one Euler step of the ODE per sample. **Output timing**: :math:`y_k` is read from the
state *after* the update that consumed :math:`x_k` (the original returns ``hidden[1:]``), so
:math:`y_k` depends on :math:`x_0, \\dots, x_k`; in continuous time
:math:`y_k = C h((k+1)\\Delta t)`.

:math:`W`: ``"vanilla"`` a free matrix; ``"diagonal"`` a free diagonal; a continuous-time
parameterisation name :math:`p` (``direct``, ``exp``, ``softplus``, ``best``):
:math:`W = \\mathrm{diag}(f_p(w))` with :math:`f_p` the torch callable generated from
:data:`rnnmem.theory.PARAMETERISATIONS` (:math:`f_p(w) < 0` is the stable region).

Initialisation: :math:`W = Q\\,\\mathrm{diag}(-r)\\,Q^\\top` (vanilla, random orthogonal
:math:`Q`) or :math:`\\mathrm{diag}(-r)` with decay rates :math:`r` log-spaced on
``decay_range`` (default (0.05, 1.0), so that the Euler step at :math:`\\Delta t = 1` stays
stable). The original draws ``relu(randn)`` rates, a trainable orthogonal :math:`P`,
identity input/output maps and ``dt = 1`` in float64; we keep ``dt = 1`` as the default and the
symmetric negative-definite start, with Gaussian :math:`U, C` scaled by
:math:`1/\\sqrt{\\text{fan-in}}` and :math:`b = 0`.

Memory function (Def. 3.1) for :math:`\\sigma` = identity, closed form
(:class:`~rnnmem.models.ssm.ExactMemoryMixin`): ``form="continuous"`` (continuous time),
:math:`M_o(t) = \\sum_i |(C e^{Wt} U)_{oi}|`, the ODE's; ``form="sampled"``,
:math:`M_o(k\\Delta t) = \\sum_i |(C A^k G U)_{oi}|/\\Delta t` with the exact per-sample map
:math:`h_{k+1} = A h_k + G(U x_k + b)` of the integrator (discrete time:
:math:`A = I + \\Delta t W`, :math:`G = \\Delta t I`), equal to what the black-box estimator
measures. Otherwise the black-box estimator of :class:`~rnnmem.models.base.RecurrentModel`.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InvalidParameterError, UnknownNameError
from ..theory import PARAMETERISATIONS
from ._device import step_threads
from .base import RecurrentModel, check_input
from .recurrence import linear_recurrence
from .registry import register_model
from ._common import (
    RECURRENCE_KINDS,
    CompiledStep,
    ExactMemoryMixin,
    check_positive_int,
    check_supported_dtype,
    generator_memory,
    get_activation,
    init_linear_weights,
    initial_eigenvalues,
    power_kernel,
)

__all__ = ["NonlinearRNN", "INTEGRATORS"]

#: Fixed-step integrators and their order.
INTEGRATORS = {"euler": 1, "rk4": 4}


@register_model("rnn")
class NonlinearRNN(ExactMemoryMixin, RecurrentModel):
    """Residual RNN :math:`\\dot h = \\sigma(W h + U x + b)`, :math:`y = C h` (module docstring).

    Parameters
    ----------
    width : int
        Hidden dimension :math:`N` (formerly ``hidden_dim``, still accepted, deprecated).
    input_dim, output_dim : int
    activation : {"linear", "tanh", "hardtanh"}
    recurrence : str
        ``"vanilla"``, ``"diagonal"`` or a continuous-time parameterisation name.
    time : {"discrete", "continuous"}
    dt : float
        Sample spacing (and the residual step in discrete time).
    integrator : {"euler", "rk4"}
        Continuous time only (discrete time is one Euler step by definition).
    substeps : int
        Integrator steps per sample (continuous time only).
    bias : bool
    decay_range : (float, float), optional
        Initial decay rates of :math:`W` (default (0.05, 1.0)).
    dtype : float32 or float64
    device : ``"auto"`` or a torch device
    seed : int, optional
    compile : bool
        Run each sample's integrator steps and read-out of the step-by-step loop (nonlinear
        or vanilla models) through :func:`torch.compile`, falling back to eager execution
        with one warning where compiling fails. Off by default: on CPU it was measured
        slower (``benchmarks``, section c: the curse-of-memory reference step, tanh,
        hidden 64, batch 512, length 100, float64, took 1.2-2.3x the eager time in two
        runs on 2 cores, after 8 s of compilation: the compiled call's guards cost more
        than the few small operations it fuses).
    """

    def __init__(self, width: int, input_dim: int = 1, output_dim: int = 1,
                 activation: str = "linear", recurrence: str = "vanilla",
                 time: str = "discrete", dt: float = 1.0, integrator: str = "euler",
                 substeps: int = 1, bias: bool = True,
                 decay_range: tuple[float, float] | None = None, dtype="float32",
                 device="auto", seed: int | None = None, compile: bool = False):
        check_positive_int("width", width, dense=True)
        hidden_dim = width
        sigma = get_activation(activation)
        if recurrence in RECURRENCE_KINDS:
            p = None
        elif isinstance(recurrence, str) and recurrence in PARAMETERISATIONS:
            p = PARAMETERISATIONS[recurrence]
            if p.time != "continuous":
                raise InvalidParameterError(
                    f"parameterisation {p.name!r} is discrete-time; the residual RNN's W is a "
                    "continuous-time generator (use direct, exp, softplus or best)")
        else:
            raise UnknownNameError("recurrence", recurrence,
                                   list(RECURRENCE_KINDS) + list(PARAMETERISATIONS))
        if integrator not in INTEGRATORS:
            raise UnknownNameError("integrator", integrator, list(INTEGRATORS))
        check_positive_int("substeps", substeps)
        if time == "discrete" and (integrator != "euler" or substeps != 1):
            raise InvalidParameterError(
                "integrator and substeps apply to time='continuous' only (the discrete model "
                "is one Euler step per sample)")
        lam0 = initial_eigenvalues(hidden_dim, "continuous",
                                   (0.05, 1.0) if decay_range is None else decay_range)
        super().__init__(input_dim=input_dim, output_dim=output_dim, dt=dt, time=time,
                         dtype=dtype, device=device,
                         config=dict(width=width, activation=activation,
                                     recurrence=recurrence, integrator=integrator,
                                     substeps=substeps, bias=bool(bias),
                                     decay_range=None if decay_range is None
                                     else [float(v) for v in decay_range], seed=seed,
                                     compile=bool(compile)))
        check_supported_dtype(self)
        self._sigma = sigma
        self.width = self.hidden_dim = width
        self.activation, self.recurrence = activation, recurrence
        self.integrator, self.substeps = integrator, substeps
        self.kind = recurrence if p is None else "param"
        self.parameterisation = p
        self._f = None if p is None else p.torch
        init_linear_weights(self, hidden_dim, lam0, p, bias, np.random.default_rng(seed))
        self._compiled = CompiledStep(self._sample_step, "NonlinearRNN") if compile else None

    # ---- the vector field and the integrator -----------------------------------------
    @property
    def is_linear(self) -> bool:
        return self.activation == "linear"

    @property
    def order(self) -> int:
        """Order of the fixed-step integrator (1 in discrete time: one Euler step)."""
        return INTEGRATORS[self.integrator]

    def recurrence_matrix(self) -> torch.Tensor:
        """:math:`W`: (N, N) (vanilla) or its diagonal (N,)."""
        if self.kind == "vanilla":
            return self.W
        return self.w if self.kind == "diagonal" else self._f(self.w)

    def eigenvalues(self) -> torch.Tensor:
        """Eigenvalues of :math:`W` (the continuous-time generator; stable iff Re < 0)."""
        W = self.recurrence_matrix()
        return torch.linalg.eigvals(W) if W.dim() == 2 else W

    def _field(self, W: torch.Tensor, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """:math:`\\sigma(W h + u)` for h, u (B, N)."""
        # fused multiply-add: one temporary (and one tensor saved for backward) fewer
        pre = torch.addcmul(u, h, W) if W.dim() == 1 else torch.addmm(u, h, W.T)
        return self._sigma(pre)

    def _substep(self, W: torch.Tensor, h: torch.Tensor, u: torch.Tensor,
                 tau: float) -> torch.Tensor:
        """One integrator step of size ``tau`` with input term ``u`` held constant."""
        if self.integrator == "euler":
            return torch.add(h, self._field(W, h, u), alpha=tau)  # h + tau f
        k1 = self._field(W, h, u)
        k2 = self._field(W, torch.add(h, k1, alpha=tau / 2), u)
        k3 = self._field(W, torch.add(h, k2, alpha=tau / 2), u)
        k4 = self._field(W, torch.add(h, k3, alpha=tau), u)
        return h + (tau / 6) * (k1 + 2 * k2 + 2 * k3 + k4)

    def _drive(self, x: torch.Tensor) -> torch.Tensor:
        u = x @ self.U.T  # (B, T, N)
        return u if self.b is None else u + self.b

    def _forward_loop(self, x: torch.Tensor) -> torch.Tensor:
        """Reference: the integrator, sample by sample and substep by substep."""
        x = check_input(x, self.input_dim).to(self.dtype)
        W, UT, CT = self.recurrence_matrix(), self.U.T, self.C.T
        tau = self.dt / self.substeps
        h = x.new_zeros(x.shape[0], self.hidden_dim)  # (B, N)
        ys = []
        # Per step: drive U x_k + b, update, read-out C h. ``unbind`` (not ``x[:, k]``, whose
        # backward zero-fills a whole (B, T, d) gradient per step, quadratic in T), and no
        # (B, T, N) drive or state tensor (nor their gradients) is ever formed.
        step = self._compiled if self._compiled is not None else self._sample_step
        with step_threads(self._loop_work(x.shape[0]), x.device) as loop:
            for x_k in loop.inputs(x).unbind(1):  # (B, d) each
                u_k = x_k @ UT if self.b is None else torch.addmm(self.b, x_k, UT)  # (B, N)
                h, y_k = step(W, h, u_k, tau, CT)
                ys.append(y_k)  # (B, p)
        return loop.outputs(torch.stack(ys, dim=1))  # (B, T, p)

    def _sample_step(self, W, h, u_k, tau: float, CT):
        """One sample: ``substeps`` integrator steps, then the read-out ``(h, C h)``."""
        for _ in range(self.substeps):
            h = self._substep(W, h, u_k, tau)
        return h, h @ CT

    @property
    def compile_failed(self) -> bool:
        """Whether ``compile=True`` fell back to eager execution."""
        return self._compiled is not None and self._compiled.failed

    def sample_map(self) -> tuple[torch.Tensor, torch.Tensor]:
        """For :math:`\\sigma` = identity, the per-sample map is affine,
        :math:`h_{k+1} = A h_k + G (U x_k + b)`; returns :math:`(A, G)`, diagonal (N,) or
        (N, N). Obtained by running :meth:`_substep` itself on unit states/inputs (so it is
        exactly the integrator's map, whatever the integrator)."""
        if not self.is_linear:
            raise InvalidParameterError(f"activation {self.activation!r} is not linear")
        W = self.recurrence_matrix()
        tau = self.dt / self.substeps
        eye = (torch.ones(1, self.hidden_dim, dtype=W.dtype, device=W.device) if W.dim() == 1
               else torch.eye(self.hidden_dim, dtype=W.dtype, device=W.device))
        zero = torch.zeros_like(eye)
        R = self._substep(W, eye, zero, tau)  # rows: R e_i (vanilla: R^T)
        P = self._substep(W, zero, eye, tau)  # rows: tau P e_i
        if W.dim() == 1:
            R, P = R[0], P[0]  # (N,)
            A, G = torch.ones_like(R), torch.zeros_like(P)
            for _ in range(self.substeps):
                A, G = R * A, R * G + P
            return A, G
        R, P = R.T, P.T  # (N, N)
        A = torch.eye(self.hidden_dim, dtype=W.dtype, device=W.device)
        G = torch.zeros_like(A)
        for _ in range(self.substeps):
            A, G = R @ A, R @ G + P
        return A, G

    def step_work(self, batch_size: int) -> int | None:
        """``batch x N x (N + input_dim)`` where :meth:`forward` runs the step loop (a
        nonlinear or vanilla-recurrence model); ``None`` where it runs the parallel
        recurrence."""
        if self.is_linear and self.kind != "vanilla":
            return None
        return self._loop_work(batch_size)

    def _loop_work(self, batch_size: int) -> int:
        return batch_size * self.hidden_dim * (self.hidden_dim + self.input_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, T, input_dim) -> ``y`` (B, T, output_dim).

        A linear diagonal model runs its exact per-sample map through
        :func:`~rnnmem.models.recurrence.linear_recurrence`; every other one runs
        :meth:`_forward_loop`.
        """
        if not (self.is_linear and self.kind != "vanilla"):
            return self._forward_loop(x)
        x = check_input(x, self.input_dim).to(self.dtype)
        A, G = self.sample_map()  # (N,), (N,)
        h = linear_recurrence(A, self._drive(x) * G)  # (B, T, N)
        return h @ self.C.T  # (B, T, p)

    # ---- evaluation reference ---------------------------------------------------------
    def solve_ivp_reference(self, x, *, method: str = "DOP853", rtol: float = 1e-11,
                            atol: float = 1e-13) -> np.ndarray:
        """Integrate :math:`\\dot h = \\sigma(Wh + Ux + b)` with :func:`scipy.integrate.solve_ivp`.

        Same parameters (copied to float64), input held constant on each sample interval
        (one ``solve_ivp`` call per interval, so the solver never steps over a jump).
        Returns ``y`` (B, T, output_dim) as a numpy array, :math:`y_k = C h((k+1)\\Delta t)`.
        For a discrete-time model this is the ODE its Euler step discretises.
        """
        from scipy.integrate import solve_ivp

        x = check_input(torch.as_tensor(np.asarray(x)), self.input_dim).double().cpu()
        with torch.no_grad():
            W = self.recurrence_matrix().detach().double().cpu()
            U, C = self.U.detach().double().cpu(), self.C.detach().double().cpu()
            u = x @ U.T  # (B, T, N)
            if self.b is not None:
                u = u + self.b.detach().double().cpu()
            B, T, N = u.shape
            h = np.zeros(B * N)
            hs = []
            for k in range(T):
                uk = u[:, k]  # (B, N)

                def rhs(_t, hflat, uk=uk):
                    hk = torch.from_numpy(hflat).view(B, N)
                    return self._field(W, hk, uk).reshape(-1).numpy()

                sol = solve_ivp(rhs, (0.0, self.dt), h, method=method, rtol=rtol, atol=atol)
                if not sol.success:  # pragma: no cover - solver failure
                    raise InvalidParameterError(f"solve_ivp failed: {sol.message}")
                h = sol.y[:, -1]
                hs.append(h.reshape(B, N))
            H = torch.from_numpy(np.stack(hs, axis=1))  # (B, T, N)
            return (H @ C.T).numpy()  # (B, T, p)

    # ---- linear part: kernel and memory ----------------------------------------------
    def impulse_response(self, length: int) -> torch.Tensor:
        """Kernel of the sampled linear model (:math:`\\sigma` = identity):
        :math:`\\rho_j = C A^j G U`, shape (length, p, d); :math:`y_k = \\sum_j \\rho_j x_{k-j}`."""
        check_positive_int("length", length)
        A, G = self.sample_map()
        S = G[:, None] * self.U if G.dim() == 1 else G @ self.U  # (N, d)
        return power_kernel(A, S, self.C, length)  # (L, p, d)

    def _spectrum_eigenvalues(self) -> torch.Tensor:
        """The linearisation at the origin (:math:`\\sigma'(0) = 1` for every activation
        here, bias left out): eigenvalues of the generator :math:`W` in continuous time,
        of the Euler step :math:`I + \\Delta t\\,W` in discrete time (for a linear model
        these are exactly :meth:`sample_map`'s)."""
        ev = self.eigenvalues()
        return ev if self.time == "continuous" else 1 + self.dt * ev

    # hooks of ExactMemoryMixin
    def _spectra(self, form: str):
        if form == "continuous":
            return [(self.eigenvalues(), "continuous")]
        A, _ = self.sample_map()
        return [(torch.linalg.eigvals(A) if A.dim() == 2 else A, "discrete")]

    def _continuous_memory(self, t: np.ndarray) -> np.ndarray:
        """:math:`\\sum_i |(C e^{Wt} U)_{oi}|`, (L, p): the ODE's memory function."""
        return generator_memory(self.recurrence_matrix(), self.U, self.C, t)
