"""The recurrent models of the original curse-of-memory experiments, as registered models.

Facts read from radarFudan/Curse-of-memory (``src/models/recurrent/simple_diagonalrnn.py``,
``simple_rnn.py``, ``softplusrnn.py`` on ``main``; ``ssm.py``, ``softplusssm.py``,
``lru.py`` on the branches ``LRU_SSM_S4`` and ``SSM_SoftplusSSM_S4``; the encoder/decoder
``src/models/{encoders,decoders}/linear.py`` and ``src/models/lf_module.py``), the code behind
Wang, Li & Li, *Inverse approximation theory for nonlinear recurrent neural networks*
(ICLR 2024) and S. Wang & Q. Li, *StableSSM* (ICML 2024). No code is copied; the forms are
written out here from the formulas.

Every model is *encoder -> residual recurrence on* ``width`` *states -> decoder*, with
affine encoder :math:`u_k = U x_k + b_U` and decoder :math:`y_k = C z_k + c`, float64 in the
original, ``dt = 1`` in its LF experiments. With :math:`h_{-1} = 0`:

``com_diagonal_rnn`` (``SimpleDiagonalRNN``)
    :math:`h_k = h_{k-1} + \\Delta t\\,\\sigma(u_k - r \\odot h_{k-1})`, :math:`z_k = h_k`.
``com_rnn`` (``SimpleRNN``; with ``decay_map="softplus"`` ``SoftplusRNN``)
    :math:`h_k = h_{k-1} + \\Delta t\\,\\sigma(u_k - P^\\top \\operatorname{diag}(r) P h_{k-1})`
    with a trainable :math:`P` initialised orthogonal (QR of a Gaussian matrix).
``com_ssm`` (``SSM``; ``SoftplusSSM``)
    :math:`v_k = g(u_k)`, :math:`h_k = h_{k-1} + \\Delta t (v_k - P^\\top \\operatorname{diag}(r)
    P h_{k-1})`, :math:`z_k = f(h_k)`, where :math:`g, f` are two-layer perceptrons
    :math:`W_2 \\sigma(W_1 \\cdot + b_1) + b_2` on ``width`` units, so the model has biases
    before and after the recurrence (the "output bias"). That is the branches' form; the
    ``main`` branch's ``SimpleSSM`` also applies :math:`\\sigma` inside the recurrence
    (``recurrent_activation=True``).
``com_lru`` (the repository's real residual "LRU")
    :math:`h_k = h_{k-1} + \\Delta t\\,\\sigma(a \\odot h_{k-1} + \\sqrt{1 - a^2} \\odot u_k)`,
    :math:`a = e^{-e^{w}} - 1 \\in (-1, 0)` (``PARAMETERISATIONS["lru"]`` minus one).

The decay rates :math:`r = \\phi(w)` come from weights :math:`w \\sim N(0, 1)` (``randn``):

``decay_map="relu"`` (``diagonalrnn``, ``rnn``, ``ssm``)
    :math:`r = \\max(w, 0)` while training; at evaluation the original builds the model
    with ``training=False``, which uses :math:`r = w` *directly* after setting
    :math:`w \\leftarrow \\max(w, 0)` (``perturb_weight_initialization``). So every mode with
    :math:`w \\le 0` at the end of training is an exact integrator
    (:math:`1 - \\Delta t\\,r = 1`) and a perturbation of :math:`w` by :math:`-\\beta` makes
    it grow. :meth:`CurseModel.evaluation_form` returns that model (``direct=True``).
``decay_map="softplus"`` (``softplusrnn``, ``softplusssm``)
    :math:`r = \\log(1 + e^{w})` = ``-PARAMETERISATIONS["softplus"]``, training and
    evaluation alike.

Linearised at the origin (:math:`\\sigma'(0) = 1` for linear, tanh, hardtanh) the recurrence
is :math:`h_k = A h_{k-1} + \\Delta t\\,G u_k` with :math:`A = I - \\Delta t\\,P^\\top
\\operatorname{diag}(r) P` (or its diagonal), or :math:`A = 1 + \\Delta t\\,a`,
:math:`G = \\sqrt{1 - a^2}` for the LRU; :meth:`spectrum` returns the eigenvalues of
:math:`A`. With ``activation="linear"`` the whole model is linear in :math:`x` up to its
biases, and :meth:`memory_function` has the closed form of
:class:`~rnnmem.models._common.ExactMemoryMixin` (sampled form, Wang, Li & Li, Def. 3.1).

Training penalty (``lf_module.py`` on ``main``): the loss gets
:math:`0.01\\,\\mathrm{relu}(1 - \\mu(\\theta))`, where :math:`\\mu` is
:meth:`stability_margin` (smallest positive :math:`w` for the relu map, :math:`\\phi(\\min w)`
for softplus); see ``TrainConfig.margin_penalty``. The branches disable it.

Initialisation (facts, drawn here from one numpy generator seeded by ``seed``): :math:`w`
standard normal; :math:`P` a random orthogonal matrix; every affine layer uniform on
:math:`\\pm 1/\\sqrt{\\text{fan-in}}` (torch's ``nn.Linear`` default bounds).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidParameterError, UnknownNameError
from ..theory import PARAMETERISATIONS
from ._common import (
    ExactMemoryMixin,
    check_positive_int,
    check_supported_dtype,
    get_activation,
    memory_times,
    power_kernel,
    random_orthogonal,
)
from ._device import step_threads
from .base import RecurrentModel, check_input
from .recurrence import linear_recurrence
from .registry import register_model

__all__ = ["CurseModel", "ComDiagonalRNN", "ComRNN", "ComSSM", "ComLRU", "DECAY_MAPS"]

#: maps from the weights w to the decay rates r of the residual recurrence
DECAY_MAPS = ("relu", "softplus")


class _Affine(nn.Module):
    """:math:`x \\mapsto x W^\\top + b`, initialised uniform on :math:`\\pm 1/\\sqrt{n_{in}}`."""

    def __init__(self, n_in: int, n_out: int, rng: np.random.Generator, fk: dict):
        super().__init__()
        bound = 1.0 / math.sqrt(n_in)
        self.weight = nn.Parameter(torch.as_tensor(
            rng.uniform(-bound, bound, (n_out, n_in)), **fk))  # (out, in)
        self.bias = nn.Parameter(torch.as_tensor(rng.uniform(-bound, bound, n_out), **fk))

    def forward(self, x):
        return x @ self.weight.T + self.bias


class _MLP(nn.Module):
    """:math:`W_2\\,\\sigma(W_1 x + b_1) + b_2` on ``n`` units (the SSM's ``g`` and ``f``)."""

    def __init__(self, n: int, sigma, rng, fk):
        super().__init__()
        self.linear1 = _Affine(n, n, rng, fk)
        self.linear2 = _Affine(n, n, rng, fk)
        self._sigma = sigma

    def forward(self, x):
        return self.linear2(self._sigma(self.linear1(x)))

    def linear_part(self) -> torch.Tensor:
        """:math:`W_2 W_1` (the map when :math:`\\sigma` is the identity), (n, n)."""
        return self.linear2.weight @ self.linear1.weight


class CurseModel(ExactMemoryMixin, RecurrentModel):
    """Base of the original curse-of-memory models (see the module docstring).

    Subclasses fix the structure (``_rotation``, ``_mlp``, ``_lru``); the options are

    Parameters
    ----------
    width : int
        Number of recurrent states :math:`m` (the original's ``rec1_size``).
    input_dim, output_dim : int
    decay_map : {"relu", "softplus"}
        :math:`r = \\phi(w)` (not for the LRU, whose map is fixed).
    activation : {"linear", "tanh", "hardtanh"}
        :math:`\\sigma`.
    direct : bool
        The evaluation form of the relu map: :math:`r = w` (no relu).
    dt : float
        Step of the residual (Euler) update; the original LF runs use 1.
    recurrent_activation : bool, optional
        ``com_ssm`` only: also apply :math:`\\sigma` inside the recurrence (``main``'s
        ``SimpleSSM``); default ``False`` there (the branches' ``SSM``), ``True`` for the
        others (where it is the only place of :math:`\\sigma`).
    time : "discrete"
        Accepted for the common interface.
    dtype, device, seed :
        As every rnnmem model; ``device="auto"`` picks CUDA when present.
    """

    _rotation = False
    _mlp = False
    _lru = False

    def __init__(self, width: int, input_dim: int = 1, output_dim: int = 1, *,
                 decay_map: str = "relu", activation: str = "linear", direct: bool = False,
                 dt: float = 1.0, recurrent_activation: bool | None = None,
                 time: str = "discrete", dtype="float32", device="auto",
                 seed: int | None = None):
        check_positive_int("width", width)
        if time != "discrete":
            raise InvalidParameterError(f"time: the original models are discrete-time "
                                        f"(residual steps of size dt), got {time!r}")
        sigma = get_activation(activation)
        if self._lru:
            if decay_map != "lru":
                raise InvalidParameterError(f"decay_map: the LRU's map is fixed ('lru'), got "
                                            f"{decay_map!r}")
        elif decay_map not in DECAY_MAPS:
            raise UnknownNameError("decay map", decay_map, DECAY_MAPS)
        if not isinstance(direct, bool):
            raise InvalidParameterError(f"direct must be a bool, got {direct!r}")
        if direct and decay_map != "relu":
            raise InvalidParameterError(f"direct=True is the evaluation form of the relu map; "
                                        f"decay_map={decay_map!r} keeps its map at evaluation")
        if recurrent_activation is None:
            recurrent_activation = not self._mlp
        if not isinstance(recurrent_activation, bool):
            raise InvalidParameterError(f"recurrent_activation must be a bool, got "
                                        f"{recurrent_activation!r}")
        cfg = dict(width=width, decay_map=decay_map, activation=activation, direct=direct,
                   seed=seed)
        if self._mlp:
            cfg["recurrent_activation"] = recurrent_activation
        elif not recurrent_activation:
            raise InvalidParameterError("recurrent_activation=False needs the SSM form "
                                        "(com_ssm): without g and f there is no other place "
                                        "for the activation")
        super().__init__(input_dim=input_dim, output_dim=output_dim, dt=dt, time="discrete",
                         dtype=dtype, device=device, config=cfg)
        check_supported_dtype(self)
        self.width, self.state_dim = width, width
        self.decay_map, self.activation, self.direct = decay_map, activation, direct
        self.recurrent_activation = recurrent_activation
        self._sigma = sigma
        rng = np.random.default_rng(seed)
        fk = self.factory
        self.w = nn.Parameter(torch.as_tensor(rng.standard_normal(width), **fk))  # (m,)
        names = ["w"]
        if self._rotation:
            self.P = nn.Parameter(torch.as_tensor(random_orthogonal(width, rng), **fk))  # (m,m)
            names.append("P")
        self.recurrent_parameter_names = tuple(names)
        self.encoder = _Affine(input_dim, width, rng, fk)
        if self._mlp:
            self.g = _MLP(width, sigma, rng, fk)
            self.f = _MLP(width, sigma, rng, fk)
        self.decoder = _Affine(width, output_dim, rng, fk)

    # ---- the recurrence --------------------------------------------------------------
    @property
    def is_linear(self) -> bool:
        return self.activation == "linear"

    def decay_rates(self) -> torch.Tensor:
        """:math:`r = \\phi(w)` (relu/softplus maps) or :math:`-a = 1 - e^{-e^w}` (LRU), (m,)."""
        if self._lru:
            return 1 - PARAMETERISATIONS["lru"].torch(self.w)
        if self.decay_map == "softplus":
            return -PARAMETERISATIONS["softplus"].torch(self.w)
        return self.w if self.direct else F.relu(self.w)

    def _decay_matrix(self) -> torch.Tensor:
        """:math:`M = P^\\top \\operatorname{diag}(r) P` (m, m), or the diagonal r (m,)."""
        r = self.decay_rates()
        if not self._rotation:
            return r
        return self.P.T @ (r[:, None] * self.P)

    def transition(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Linearisation :math:`(A, G)`: :math:`h_k = A h_{k-1} + \\Delta t\\,G u_k` with
        :math:`A` (m,) or (m, m) and the input gain :math:`G` (m,)."""
        M = self._decay_matrix()
        if self._lru:
            a = -M  # (m,), in (-1, 0)
            return 1 + self.dt * a, torch.sqrt((1 - a) * (1 + a))
        eye = torch.ones_like(M) if M.dim() == 1 else torch.eye(
            self.width, dtype=M.dtype, device=M.device)
        return eye - self.dt * M, torch.ones(self.width, dtype=M.dtype, device=M.device)

    def _drive(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`u_k` (or :math:`g(u_k)` for the SSM), (B, T, m)."""
        u = self.encoder(x)
        return self.g(u) if self._mlp else u

    def _read(self, h: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.f(h) if self._mlp else h)

    def states(self, x: torch.Tensor) -> torch.Tensor:
        """Hidden states :math:`h_k`, (B, T, m)."""
        x = check_input(x, self.input_dim).to(self.dtype)
        u = self._drive(x)  # (B, T, m)
        A, G = self.transition()
        nonlinear = self.recurrent_activation and not self.is_linear
        if not nonlinear and A.dim() == 1:
            return linear_recurrence(A, self.dt * G * u)  # (B, T, m)
        return self._states_loop(u)

    def _states_loop(self, u: torch.Tensor) -> torch.Tensor:
        """The residual update step by step (any activation, matrix or diagonal)."""
        sigma = self._sigma if self.recurrent_activation else (lambda z: z)
        h = torch.zeros_like(u[:, 0])  # (B, m)
        out = []
        with step_threads(self._loop_work(u.shape[0]), u.device) as loop:
            u = loop.inputs(u)
            if self._lru:
                a = -self.decay_rates()
                gain = torch.sqrt((1 - a) * (1 + a))
                for u_k in u.unbind(1):
                    h = h + self.dt * sigma(a * h + gain * u_k)
                    out.append(h)
            else:
                M = self._decay_matrix()
                for u_k in u.unbind(1):
                    Mh = M * h if M.dim() == 1 else h @ M.T
                    h = h + self.dt * sigma(u_k - Mh)
                    out.append(h)
        return loop.outputs(torch.stack(out, dim=1))  # (B, T, m)

    def _dense(self) -> bool:
        """Whether the decay is a full matrix (a rotation, not the LRU's diagonal)."""
        return bool(self._rotation) and not self._lru

    def _loop_work(self, batch_size: int) -> int:
        return batch_size * self.width * (self.width if self._dense() else 1)

    def step_work(self, batch_size: int) -> int | None:
        """Per step ``batch x m x m`` (a full decay matrix) or ``batch x m`` (a diagonal
        one) where :meth:`states` runs the step loop (a recurrent activation, or a full
        matrix); ``None`` where it runs the parallel recurrence."""
        nonlinear = self.recurrent_activation and not self.is_linear
        if not (nonlinear or self._dense()):
            return None
        return self._loop_work(batch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, T, input_dim) -> ``y`` (B, T, output_dim)."""
        return self._read(self.states(x))

    def _forward_loop(self, x: torch.Tensor) -> torch.Tensor:
        """Reference: the residual update step by step, whatever the activation."""
        x = check_input(x, self.input_dim).to(self.dtype)
        return self._read(self._states_loop(self._drive(x)))

    # ---- the original's stability margin and evaluation form -------------------------
    def stability_margin(self) -> torch.Tensor:
        """The original's margin :math:`\\mu(\\theta)` (differentiable scalar): the smallest
        positive :math:`w` (relu map; 0 when none is positive), :math:`\\min w` (direct
        form), :math:`\\phi(\\min w)` (softplus), :math:`-\\max\\{w \\le 0\\}` (LRU; 0 when
        none). The training penalty is :math:`c\\,\\mathrm{relu}(\\mu^* - \\mu)`."""
        w = self.w
        if self.decay_map == "softplus":
            return -PARAMETERISATIONS["softplus"].torch(w.min())
        if self.direct:
            return w.min()
        mask = (w <= 0) if self._lru else (w > 0)
        if not bool(mask.any()):
            return w.sum() * 0
        return -w[mask].max() if self._lru else w[mask].min()

    def evaluation_form(self) -> "CurseModel":
        """The model the original perturbs: for the relu map a copy with ``direct=True``
        and :math:`w \\leftarrow \\max(w, 0)` (the same function, now with :math:`r = w`);
        other maps are their own evaluation form (``self``)."""
        if self.decay_map != "relu" or self.direct:
            return self
        new = copy.deepcopy(self)
        new.direct = True
        new._config["direct"] = True
        with torch.no_grad():
            new.w.copy_(F.relu(new.w))
        return new

    # ---- the model contract -------------------------------------------------------------
    def _spectrum_eigenvalues(self) -> torch.Tensor:
        """Eigenvalues of the per-step linearised transition :math:`A` (the contract's
        ``spectrum()``): real for the diagonal forms, those of the symmetric
        :math:`I - \\Delta t P^\\top \\operatorname{diag}(r) P` for the rotated ones."""
        A, _ = self.transition()
        return torch.linalg.eigvals(A) if A.dim() == 2 else A

    def memory_function(self, t, method: str | None = None, *, exact: bool | None = None,
                        require_stable: bool = False, **kwargs) -> np.ndarray:
        """Memory function (Wang, Li & Li, Def. 3.1) at times ``t``, ``method`` as the
        contract (``"auto"``, ``"closed_form"``, ``"estimator"``). Two defaults differ from
        the other models: the estimator subtracts the response to the zero input
        (``baseline=True``: these models have biases before and after the recurrence), and
        the closed form does not insist on decay (``require_stable=False``): the relu map
        gives exact integrators, whose memory is finite but constant."""
        est = method == "estimator" or exact is False or (
            method in (None, "auto") and exact is None and not self.is_linear)
        if est:
            kwargs.setdefault("baseline", True)
        return super().memory_function(memory_times(t), method, exact=exact,
                                       require_stable=require_stable, **kwargs)

    # hooks of ExactMemoryMixin
    def impulse_response(self, length: int) -> torch.Tensor:
        """Kernel :math:`\\rho_j = C_e A^j \\Delta t\\,G B_e`, (length, p, d), of the linear
        part (:math:`B_e = U` or :math:`W_2^g W_1^g U`, :math:`C_e = C` or
        :math:`C W_2^f W_1^f`)."""
        check_positive_int("length", length)
        A, G = self.transition()
        B = self.encoder.weight  # (m, d)
        C = self.decoder.weight  # (p, m)
        if self._mlp:
            B = self.g.linear_part() @ B
            C = C @ self.f.linear_part()
        return power_kernel(A, self.dt * G[:, None] * B, C, length)

    def _spectra(self, form: str):
        A, _ = self.transition()
        return [(torch.linalg.eigvals(A) if A.dim() == 2 else A, "discrete")]


@register_model("com_diagonal_rnn")
class ComDiagonalRNN(CurseModel):
    """The original's residual diagonal RNN (``SimpleDiagonalRNN``), relu or softplus map.

    See :class:`CurseModel` and the module docstring."""


@register_model("com_rnn")
class ComRNN(CurseModel):
    """The original's :math:`P`-rotated residual RNN (``SimpleRNN``, ``SoftplusRNN``)."""

    _rotation = True


@register_model("com_ssm")
class ComSSM(CurseModel):
    """The original's SSM (``SSM``, ``SoftplusSSM``): perceptrons g, f with output bias.

    ``recurrent_activation=True`` is ``main``'s ``SimpleSSM``."""

    _rotation = True
    _mlp = True


@register_model("com_lru")
class ComLRU(CurseModel):
    """The original's real residual "LRU", :math:`a = e^{-e^w} - 1`."""

    _lru = True

    def __init__(self, width: int, input_dim: int = 1, output_dim: int = 1, *,
                 decay_map: str = "lru", **kwargs):
        super().__init__(width, input_dim, output_dim, decay_map=decay_map, **kwargs)
