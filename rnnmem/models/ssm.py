"""State-space models with a layer-wise output nonlinearity: ``NonlinearSSM`` and ``StableSSM``.

.. math::

    h_k = \\bar A h_{k-1} + \\bar G (U x_k + b), \\qquad y_k = C\\,\\sigma(h_k), \\qquad h_{-1} = 0,

the "linear recurrence, nonlinear read-out" model of Wang & Xue (NeurIPS 2023) and of
S. Wang and Q. Li, *StableSSM* (ICML 2024, Sec. 2). Output timing: :math:`y_k` is read from
the state *after* it has absorbed :math:`x_k` (as in the original code, which returns
``hidden[1:]``), so :math:`y_k` depends on :math:`x_0, \\dots, x_k`.

* discrete time: :math:`\\bar A = W` (a matrix, ``recurrence="vanilla"``), ``diag(w)``
  (``"diagonal"``) or ``diag(f(w))`` for a discrete-time parameterisation :math:`f`;
  :math:`\\bar G = I`;
* continuous time: :math:`dh/dt = A h + U x + b` with :math:`A = W`, ``diag(w)`` or
  ``diag(f(w))`` for a continuous-time :math:`f`, discretised by zero-order hold at step
  :math:`\\Delta t` (input held at :math:`x_k` on :math:`((k-1)\\Delta t, k\\Delta t]`):
  :math:`\\bar A = e^{A\\Delta t}`, :math:`\\bar G = \\int_0^{\\Delta t} e^{As}\\,ds`, which for
  a diagonal :math:`A = \\Lambda` is :math:`(e^{\\Lambda\\Delta t} - 1)/\\Lambda`.

Every map :math:`f` is the torch callable generated from the sympy expression in
:data:`rnnmem.theory.PARAMETERISATIONS` (no second copy here). A diagonal recurrence is run by
:func:`rnnmem.models.recurrence.linear_recurrence`.

Initialisation (shared with :class:`~rnnmem.models.diagonal.DiagonalSSM`): decay rates
:math:`r` log-spaced on ``decay_range``; eigenvalues :math:`-r` (continuous) or :math:`1 - r`
(discrete), mapped to weights by the parameterisation's inverse; a vanilla :math:`W` is
:math:`Q\\,\\mathrm{diag}(\\lambda)\\,Q^\\top` with a random orthogonal :math:`Q`. The original
code (radarFudan/Curse-of-memory ``ssm.py``) instead draws ``relu(randn)`` decay rates with
a trainable orthogonal :math:`P` and uses ``dt = 1`` (float64); StableSSM's S4D-style kernel
uses real part -1/2 and log-uniform steps. We keep the orthogonal-congruence idea for the
vanilla matrix and the deterministic log-spaced spectrum of ``DiagonalSSM``.

Memory function (Wang, Li & Li, ICLR 2024, Def. 3.1), closed form for :math:`\\sigma` =
identity (:class:`ExactMemoryMixin`), per output :math:`o`, at times :math:`t` in units of
time:

* ``form="continuous"`` (continuous time, the default there):
  :math:`M_o(t) = \\sum_i |(C e^{A t} U)_{oi}|`, the time derivative of the Heaviside
  response of the ODE;
* ``form="sampled"`` (the only form in discrete time): with the kernel
  :math:`\\rho_k = C\\bar A^k \\bar G U` of the sampled model,
  :math:`M_o(k\\Delta t) = \\sum_i |(\\rho_k)_{oi}| / \\Delta t` (linear interpolation between
  grid times): exactly what the black-box estimator :func:`rnnmem.numerics.memory_function`
  (forward differences) measures on the model, and a first-order approximation of the
  continuous form.

With a bias :math:`b \\ne 0` these are the memory of the input-to-output part
:math:`x \\mapsto H(x) - H(0)` (the estimator's ``baseline=True``).
"""

from __future__ import annotations

import numpy as np
import torch

from ..theory import get_parameterisation
from ._device import step_threads
from .base import RecurrentModel, check_input
from ._common import (
    ACTIVATIONS,
    get_activation,
    check_positive_int,
    check_supported_dtype,
    resolve_recurrence,
    initial_eigenvalues,
    init_linear_weights,
    generator_memory,
    power_kernel,
    zoh_diagonal,
    zoh_matrix,
    ExactMemoryMixin,
)
from .recurrence import linear_recurrence
from .registry import register_model

__all__ = [
    "ACTIVATIONS",
    "NonlinearSSM",
    "StableSSM",
    "get_activation",
    "zoh_diagonal",
    "zoh_matrix",
]

# --------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------
@register_model("ssm")
class NonlinearSSM(ExactMemoryMixin, RecurrentModel):
    """Linear recurrence with a nonlinear read-out, :math:`y_k = C\\sigma(h_k)`.

    Parameters
    ----------
    width : int
        State dimension :math:`N` (formerly ``state_dim``, still accepted, deprecated).
    input_dim, output_dim : int
    activation : {"linear", "tanh", "hardtanh"}
        :math:`\\sigma`, applied element-wise to the state before the read-out.
    recurrence : str
        ``"vanilla"`` (free :math:`N\\times N` matrix ``W``), ``"diagonal"`` (free diagonal
        ``w``) or the name of a parameterisation in :data:`rnnmem.theory.PARAMETERISATIONS`
        (diagonal :math:`f(w)`; its time, continuous or discrete, becomes the model's).
    time : {"discrete", "continuous"} or None
        ``None``: the parameterisation's time, or ``"discrete"`` for vanilla/diagonal.
    dt : float
        Zero-order-hold step (continuous time) and time unit.
    bias : bool
        Add a trainable :math:`b` to the input term.
    decay_range : (float, float), optional
        Range of initial decay rates (see the module docstring).
    dtype : float32 or float64
    device : ``"auto"`` (CUDA if present) or a torch device
    seed : int, optional
        Seed of the initialisation (numpy ``default_rng``).
    """

    def __init__(self, width: int, input_dim: int = 1, output_dim: int = 1,
                 activation: str = "linear", recurrence: str = "vanilla",
                 time: str | None = None, dt: float = 1.0, bias: bool = True,
                 decay_range: tuple[float, float] | None = None, dtype="float32",
                 device="auto", seed: int | None = None):
        check_positive_int("width", width, dense=True)
        state_dim = width
        sigma = get_activation(activation)
        kind, p, time = resolve_recurrence(recurrence, time)
        lam0 = initial_eigenvalues(state_dim, time, decay_range)
        super().__init__(input_dim=input_dim, output_dim=output_dim, dt=dt, time=time,
                         dtype=dtype, device=device,
                         config=dict(width=width, activation=activation,
                                     recurrence=recurrence, bias=bool(bias),
                                     decay_range=None if decay_range is None
                                     else [float(v) for v in decay_range], seed=seed))
        check_supported_dtype(self)
        self._sigma = sigma
        self.width = self.state_dim = width
        self.activation, self.kind = activation, kind
        self.parameterisation = p
        self._f = p.torch if p is not None else None
        init_linear_weights(self, state_dim, lam0, p, bias, np.random.default_rng(seed))

    # ---- the recurrence --------------------------------------------------------------
    @property
    def is_linear(self) -> bool:
        return self.activation == "linear"

    @property
    def is_diagonal(self) -> bool:
        return self.kind != "vanilla"

    def recurrence_matrix(self) -> torch.Tensor:
        """:math:`A` (continuous) or :math:`\\bar A` (discrete): (N, N) or its diagonal (N,)."""
        if self.kind == "vanilla":
            return self.W
        return self.w if self.kind == "diagonal" else self._f(self.w)

    def eigenvalues(self) -> torch.Tensor:
        """Eigenvalues of :meth:`recurrence_matrix` (continuous: stable iff real part < 0;
        discrete: stable iff modulus < 1). Real (N,) for diagonal, complex for vanilla."""
        A = self.recurrence_matrix()
        return torch.linalg.eigvals(A) if A.dim() == 2 else A

    def transition(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:math:`(\\bar A, \\bar G)`: (N,) and (N,) for a diagonal recurrence, (N, N) for a
        vanilla one; :math:`\\bar G` is ``None`` (identity) in discrete time."""
        A = self.recurrence_matrix()
        if self.time == "discrete":
            return A, None
        return zoh_matrix(A, self.dt) if A.dim() == 2 else zoh_diagonal(A, self.dt)

    def _drive(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`\\bar G (U x_k + b)`, (B, T, N)."""
        u = x @ self.U.T  # (B, T, N)
        if self.b is not None:
            u = u + self.b
        _, G = self.transition()
        if G is None:
            return u
        return u * G if G.dim() == 1 else u @ G.T

    def states(self, x: torch.Tensor) -> torch.Tensor:
        """Hidden states :math:`h_k`, (B, T, N)."""
        x = check_input(x, self.input_dim).to(self.dtype)
        A, _ = self.transition()
        v = self._drive(x)  # (B, T, N)
        if A.dim() == 1:
            return linear_recurrence(A, v)  # (B, T, N)
        h = torch.zeros_like(v[:, 0])  # (B, N)
        out = []
        AT = A.T
        with step_threads(self.step_work(v.shape[0]), v.device) as loop:
            for v_k in loop.inputs(v).unbind(1):  # unbind: no per-step zero-filled grads
                h = torch.addmm(v_k, h, AT)  # h A^T + v_k
                out.append(h)
        return loop.outputs(torch.stack(out, dim=1))  # (B, T, N)

    def step_work(self, batch_size: int) -> int | None:
        """``batch x N x N`` for a vanilla (dense) recurrence, whose states :meth:`states`
        computes step by step; ``None`` for a diagonal one (the parallel recurrence)."""
        if self.kind != "vanilla":
            return None
        return batch_size * self.state_dim * self.state_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, T, input_dim) -> ``y`` (B, T, output_dim)."""
        return self._sigma(self.states(x)) @ self.C.T  # (B, T, p)

    def _forward_loop(self, x: torch.Tensor) -> torch.Tensor:
        """Reference: the recurrence step by step with a full matrix (slow; for tests)."""
        x = check_input(x, self.input_dim).to(self.dtype)
        A, G = self.transition()
        if A.dim() == 1:
            A = torch.diag(A)
            G = None if G is None else torch.diag(G)
        h = torch.zeros(x.shape[0], self.state_dim, dtype=x.dtype, device=x.device)  # (B, N)
        ys = []
        for x_k in x.unbind(1):
            u = x_k @ self.U.T + (0 if self.b is None else self.b)  # (B, N)
            h = h @ A.T + (u if G is None else u @ G.T)
            ys.append(self._sigma(h) @ self.C.T)
        return torch.stack(ys, dim=1)  # (B, T, p)

    # ---- linear part: kernel and memory ----------------------------------------------
    def impulse_response(self, length: int) -> torch.Tensor:
        """Kernel :math:`\\rho_j = C\\bar A^j \\bar G U`, shape (length, p, d), of the
        input-to-state-to-output linear part (the whole model when :math:`\\sigma` is linear):
        :math:`y_k = \\sum_j \\rho_j x_{k-j}` (+ bias response)."""
        check_positive_int("length", length)
        A, G = self.transition()
        BU = self.U if G is None else (G[:, None] * self.U if G.dim() == 1 else G @ self.U)
        return power_kernel(A, BU, self.C, length)  # (L, p, d)

    def _spectrum_eigenvalues(self) -> torch.Tensor:
        """Eigenvalues of :meth:`recurrence_matrix`: the generator :math:`A` (continuous
        time) or :math:`\\bar A` (discrete time); the read-out nonlinearity does not enter."""
        return self.eigenvalues()

    # hooks of ExactMemoryMixin
    def _spectra(self, form: str):
        if form == "continuous":
            return [(self.eigenvalues(), "continuous")]
        A, _ = self.transition()
        return [(torch.linalg.eigvals(A) if A.dim() == 2 else A, "discrete")]

    def _continuous_memory(self, t: np.ndarray) -> np.ndarray:
        """:math:`\\sum_i |(C e^{At} U)_{oi}|`, (L, p)."""
        return generator_memory(self.recurrence_matrix(), self.U, self.C, t)


@register_model("stable_ssm")
class StableSSM(NonlinearSSM):
    """:class:`NonlinearSSM` with a diagonal :math:`\\Lambda = f(w)` from a parameterisation.

    S. Wang and Q. Li, *StableSSM* (ICML 2024): continuous-time maps (``direct``, ``exp``,
    ``softplus``, ``best``) give :math:`\\lambda = f(w) < 0`, discretised by zero-order hold,
    :math:`\\bar\\Lambda = e^{f(w)\\Delta t}`, :math:`\\bar B = (\\bar\\Lambda - 1)/f(w)\\,U`;
    discrete-time maps (``linear``, ``lru``, ``sigmoid``, ``best_discrete``) are used directly,
    :math:`\\bar\\Lambda = f(w)`, :math:`\\bar B = U`. Read-out :math:`y_k = C\\sigma(h_k)`.

    Parameters are those of :class:`NonlinearSSM` with ``parameterisation`` in place of
    ``recurrence``. Note: the StableSSM repository's "best" is :math:`-1/(w^2 + 0.1)`; the
    registry's default (paper) constants are :math:`a = 1, b = 1/2`.
    """

    def __init__(self, width: int, input_dim: int = 1, output_dim: int = 1,
                 parameterisation: str = "exp", activation: str = "linear",
                 time: str | None = None, dt: float = 1.0, bias: bool = True,
                 decay_range: tuple[float, float] | None = None, dtype="float32",
                 device="auto", seed: int | None = None):
        p = get_parameterisation(parameterisation)
        super().__init__(width, input_dim, output_dim, activation=activation,
                         recurrence=p.name, time=time, dt=dt, bias=bias,
                         decay_range=decay_range, dtype=dtype, device=device, seed=seed)
        del self._config["recurrence"]
        self._config["parameterisation"] = p.name
