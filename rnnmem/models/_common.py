"""Helpers shared by the linear and nonlinear recurrent models of this package.

Activations, initial spectra, zero-order-hold discretisation, memory-function time
validation, stability checks, the closed-form memory of a diagonal system and
:class:`ExactMemoryMixin` (the closed-form memory function of linear models).
"""

from __future__ import annotations

import math
import warnings
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import exception_text
from ..errors import (
    InvalidParameterError,
    NonFiniteError,
    NotApplicableError,
    ShapeError,
    UnknownNameError,
    UnstableSystemError,
)
from ..numerics import linear_memory
from ..theory import PARAMETERISATIONS
from .base import MEMORY_METHODS, RecurrentModel

#: Element-wise activations by name.
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "linear": lambda z: z,
    "tanh": torch.tanh,
    "hardtanh": F.hardtanh,
}

RECURRENCE_KINDS = ("vanilla", "diagonal")
_SUPPORTED_DTYPES = (torch.float32, torch.float64)


def get_activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The activation called ``name`` (``"linear"``, ``"tanh"``, ``"hardtanh"``)."""
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise UnknownNameError("activation", name, list(ACTIVATIONS)) from None


def check_positive_int(name: str, v, *, dense: bool = False) -> int:
    """A size option: a positive integer whose allocation fits in memory (estimated before
    anything is allocated, :func:`rnnmem.limits.check_memory`): ~64 bytes per unit (a few
    float64 vectors), plus ``32 v**2`` bytes for a ``dense`` (v, v) weight with its gradient
    and optimizer moments."""
    from ..limits import check_count, check_memory

    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise InvalidParameterError(f"{name} must be a positive integer, got {v!r}")
    check_count(v, name)
    check_memory(64 * v + (32 * v * v if dense else 0), f"{name}={v}")
    return v


def check_supported_dtype(model: RecurrentModel) -> None:
    """These models run in float32 or float64 only (complex arithmetic, ``matrix_exp``)."""
    if model.factory["dtype"] not in _SUPPORTED_DTYPES:
        raise InvalidParameterError(
            f"{type(model).__name__} supports float32 and float64, got {model.factory['dtype']}")


def resolve_recurrence(recurrence: str, time: str | None) -> tuple[str, object, str]:
    """``(kind, parameterisation or None, time)`` for a recurrence name.

    ``kind`` is ``"vanilla"``, ``"diagonal"`` or ``"param"``. A parameterisation fixes the
    time (its own); ``time=None`` means "discrete" for vanilla/diagonal.
    """
    if recurrence in RECURRENCE_KINDS:
        return recurrence, None, "discrete" if time is None else time
    if isinstance(recurrence, str) and recurrence in PARAMETERISATIONS:
        p = PARAMETERISATIONS[recurrence]
        if time is not None and time != p.time:
            raise InvalidParameterError(
                f"parameterisation {p.name!r} is {p.time}-time but time={time!r} was asked")
        return "param", p, p.time
    raise UnknownNameError("recurrence", recurrence,
                           list(RECURRENCE_KINDS) + list(PARAMETERISATIONS))


def initial_eigenvalues(n: int, time: str, decay_range) -> np.ndarray:
    """Log-spaced decay rates :math:`r` on ``decay_range``: :math:`-r` or :math:`1 - r`.

    Defaults as :class:`~rnnmem.models.diagonal.DiagonalSSM`: (0.05, 2.0) in continuous
    time, (0.01, 0.5) in discrete time.
    """
    if decay_range is None:
        decay_range = (0.05, 2.0) if time == "continuous" else (0.01, 0.5)
    try:
        lo, hi = (float(v) for v in decay_range)
    except (TypeError, ValueError):
        raise InvalidParameterError(f"decay_range must be two numbers, got {decay_range!r}") \
            from None
    if not (math.isfinite(hi) and 0 < lo <= hi) or (time == "discrete" and hi >= 1):
        raise InvalidParameterError(
            f"decay_range must satisfy 0 < lo <= hi{' < 1' if time == 'discrete' else ''}, "
            f"got {decay_range!r}")
    rates = np.exp(np.linspace(math.log(lo), math.log(hi), n))  # (N,)
    return -rates if time == "continuous" else 1.0 - rates


def random_orthogonal(n: int, rng: np.random.Generator) -> np.ndarray:
    """A Haar-distributed orthogonal (N, N) matrix (QR of a Gaussian, signs fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))[None, :]


def init_linear_weights(model: RecurrentModel, n: int, lam0: np.ndarray, p, bias: bool,
                        rng: np.random.Generator) -> None:
    """The weights of :class:`~rnnmem.models.rnn.NonlinearRNN` and
    :class:`~rnnmem.models.ssm.NonlinearSSM`, registered on ``model`` in this order.

    Recurrence (``model.kind``): ``"vanilla"``, ``W`` (N, N) :math:`= Q\\,
    \\mathrm{diag}(\\lambda_0)\\,Q^\\top` with a random orthogonal :math:`Q`; otherwise ``w``
    (N,) :math:`= \\lambda_0`, or :math:`f_p^{-1}(\\lambda_0)` for a parameterisation ``p``.
    Then ``U`` (N, d), ``b`` (N,) zero (``None`` without ``bias``) and ``C`` (p, N); ``U``
    and ``C`` Gaussian scaled by :math:`1/\\sqrt{\\text{fan-in}}`. :math:`Q`, ``U`` and
    ``C`` are drawn from ``rng`` in that order.
    """
    fk = model.factory
    if model.kind == "vanilla":
        Q = random_orthogonal(n, rng)
        model.W = nn.Parameter(torch.as_tensor((Q * lam0[None, :]) @ Q.T, **fk))  # (N, N)
        model.recurrent_parameter_names = ("W",)
    else:
        w0 = lam0 if p is None else p.inverse_numpy(lam0)
        model.w = nn.Parameter(torch.as_tensor(w0, **fk))  # (N,)
        model.recurrent_parameter_names = ("w",)
    model.U = nn.Parameter(torch.as_tensor(
        rng.standard_normal((n, model.input_dim)) / math.sqrt(model.input_dim), **fk))  # (N, d)
    model.b = nn.Parameter(torch.zeros(n, **fk)) if bias else None  # (N,)
    model.C = nn.Parameter(torch.as_tensor(
        rng.standard_normal((model.output_dim, n)) / math.sqrt(n), **fk))  # (p, N)


def power_kernel(A: torch.Tensor, S: torch.Tensor, C: torch.Tensor,
                 length: int) -> torch.Tensor:
    """:math:`\\rho_j = C A^j S` for :math:`j <` ``length``, shape (length, p, d); ``A``
    diagonal (N,) or (N, N), ``S`` (N, d), ``C`` (p, N)."""
    rho = []
    for _ in range(length):
        rho.append(C @ S)
        S = A[:, None] * S if A.dim() == 1 else A @ S
    return torch.stack(rho, dim=0)  # (L, p, d)


def generator_memory(A: torch.Tensor, U: torch.Tensor, C: torch.Tensor,
                     t: np.ndarray) -> np.ndarray:
    """:math:`\\sum_i |(C e^{At} U)_{oi}|`, (L, p): the memory function of
    :math:`\\dot h = Ah + Ux,\\ y = Ch` with ``A`` diagonal (N,) or (N, N), stability not
    checked (the caller does)."""
    A, U, C = _np(A), _np(U), _np(C)
    if A.ndim == 1:
        return diagonal_memory_function(A, U, C, t, "continuous")
    return linear_memory(A, U, C, t, require_stable=False)  # (L, p)


def zoh_diagonal(lam: torch.Tensor, dt: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-order hold of :math:`\\dot h = \\lambda h + v`: :math:`(e^{\\lambda\\Delta t},
    (e^{\\lambda \\Delta t} - 1)/\\lambda)`, with the limit :math:`\\Delta t` at
    :math:`\\lambda = 0`. Real or complex ``lam`` (any shape); both outputs have its shape."""
    z = lam * dt
    small = z.abs() < torch.finfo(z.real.dtype).eps ** 0.5  # 2-term Taylor exact to eps
    safe = torch.where(small, torch.ones_like(lam), lam)
    gain = torch.where(small, dt * (1 + z / 2), torch.expm1(z) / safe)
    return torch.exp(z), gain


def zoh_matrix(A: torch.Tensor, dt: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-order hold of :math:`\\dot h = A h + v`: :math:`(e^{A\\Delta t},
    \\int_0^{\\Delta t} e^{As}ds)`, from one exponential of the block matrix
    :math:`\\begin{pmatrix} A & I \\\\ 0 & 0 \\end{pmatrix}\\Delta t` (Van Loan)."""
    n = A.shape[-1]
    eye = torch.eye(n, dtype=A.dtype, device=A.device)
    top = torch.cat([A, eye], dim=1)  # (N, 2N)
    M = torch.cat([top, torch.zeros_like(top)], dim=0) * dt  # (2N, 2N)
    E = torch.linalg.matrix_exp(M)
    return E[:n, :n], E[:n, n:]


def memory_times(t) -> np.ndarray:
    """Validate memory-function times: 1-D (a scalar becomes (1,)), finite, >= 0."""
    t = np.asarray(t, dtype=float)
    if t.ndim == 0:
        t = t[None]
    if t.ndim != 1:
        raise ShapeError(f"t must be 1-D, got shape {t.shape}")
    if not np.all(np.isfinite(t)):
        raise NonFiniteError("t contains NaN or inf")
    if np.any(t < 0):
        raise InvalidParameterError("memory function times must be >= 0")
    return t


def squeeze_outputs(M: np.ndarray) -> np.ndarray:
    return M[:, 0] if M.ndim == 2 and M.shape[1] == 1 else M


def check_stable(lam: np.ndarray, time: str) -> None:
    """Raise :class:`UnstableSystemError` unless every eigenvalue is strictly stable."""
    bad = lam.real >= 0 if time == "continuous" else np.abs(lam) >= 1
    if np.any(bad):
        raise UnstableSystemError(
            f"{int(bad.sum())} eigenvalue(s) outside the stable region "
            f"(e.g. {complex(lam[bad].ravel()[0]):.4g}); the memory function does not decay")


def _np(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
    return (t.to(torch.complex128) if t.is_complex() else t.double()).numpy()


class ExactMemoryMixin:
    """Closed-form memory function for models that are linear (in some configuration).

    Two forms (Wang, Li & Li, ICLR 2024, Def. 3.1; :math:`\\rho` the kernel,
    :math:`y_k = \\sum_j \\rho_j x_{k-j}`, per output :math:`o`):

    ``"sampled"``
        The memory of the sampled model as the black-box estimator
        (:func:`rnnmem.numerics.memory_function`, forward differences) measures it:
        :math:`M_o(k\\Delta t) = \\sum_i |(\\rho_k)_{oi}| / \\Delta t`, linearly interpolated
        between grid times. This is the only form in discrete time.
    ``"continuous"``
        For a continuous-time model, the derivative of the Heaviside response of the
        underlying ODE, :math:`M_o(t) = \\sum_i |(C e^{At}U)_{oi}|`; the sampled form
        converges to it as :math:`\\Delta t \\to 0` (first order).

    A host class provides ``is_linear``, ``impulse_response(length)``,
    ``_continuous_memory(t) -> (L, p)`` (continuous time) and
    ``_spectra(form) -> [(eigenvalues, "continuous" | "discrete"), ...]``.
    """

    def memory_function(self, t, method: str | None = None, *, exact: bool | None = None,
                        form: str | None = None, require_stable: bool = True,
                        **kwargs) -> np.ndarray:
        """Memory function at times ``t`` (in units of time; ``t = k dt`` is step ``k``).

        Parameters
        ----------
        t : array (L,) of times >= 0
        method : {"auto", "closed_form", "estimator"} or None
            The contract's name for ``exact`` (:mod:`rnnmem.models.base`): ``"auto"``
            (``exact=None``), ``"closed_form"`` (``exact=True``; a nonlinear configuration
            raises :class:`~rnnmem.errors.NotApplicableError`), ``"estimator"``
            (``exact=False``). Give one of ``method`` and ``exact``.
        exact : bool or None
            ``None``: the closed form when the model is linear, else the black-box
            estimator; ``True`` insists on the closed form; ``False`` uses the estimator
            (``kwargs`` are passed to it).
        form : {"continuous", "sampled"} or None
            ``None``: ``"continuous"`` for a continuous-time model, else ``"sampled"``.
        require_stable : bool
            Raise :class:`~rnnmem.errors.UnstableSystemError` if an eigenvalue is outside
            the stable region.

        Returns
        -------
        (L,) for one output, else (L, output_dim).
        """
        t = memory_times(t)
        if method is not None:
            if method not in MEMORY_METHODS:
                raise InvalidParameterError(f"method must be one of "
                                            f"{', '.join(MEMORY_METHODS)}, got {method!r}")
            if exact is not None:
                raise InvalidParameterError("give method or exact, not both")
            exact = {"auto": None, "closed_form": True, "estimator": False}[method]
            if exact and not self.is_linear:
                raise NotApplicableError(
                    f"no closed-form memory function for this nonlinear "
                    f"{type(self).__name__}; use method='estimator'")
        if exact is None:
            exact = self.is_linear
        if not exact:
            if form is not None:
                raise InvalidParameterError("form applies to the closed form (exact=True) only")
            return super().memory_function(t, **kwargs)
        if kwargs:
            raise InvalidParameterError(
                f"unexpected options for the closed form: {sorted(kwargs)}")
        if not self.is_linear:
            raise InvalidParameterError(
                f"no closed-form memory function for this nonlinear "
                f"{type(self).__name__}; use exact=False (black-box estimator)")
        if form is None:
            form = "continuous" if self.time == "continuous" else "sampled"
        if not isinstance(form, str) or form not in ("continuous", "sampled"):
            raise UnknownNameError("memory form", form, ["continuous", "sampled"])
        if form == "continuous" and self.time != "continuous":
            raise InvalidParameterError("form='continuous' needs a continuous-time model")
        with torch.no_grad():
            if require_stable:
                for lam, time in self._spectra(form):
                    check_stable(_np(lam), time)
            p = self.output_dim
            if t.size == 0:
                return np.zeros((0,) if p == 1 else (0, p))
            if form == "continuous":
                return squeeze_outputs(self._continuous_memory(t))
            n_grid = int(np.ceil(t.max() / self.dt)) + 1
            rho = _np(self.impulse_response(n_grid))  # (n_grid, p, d)
            grid_M = np.abs(rho).sum(-1) / self.dt  # (n_grid, p)
            grid = self.dt * np.arange(n_grid)
            if t.size <= n_grid and np.array_equal(t, grid[:t.size]):
                return squeeze_outputs(grid_M[:t.size])  # on the grid: nothing to interpolate
            M = np.stack([np.interp(t, grid, grid_M[:, o]) for o in range(p)], axis=1)
            return squeeze_outputs(M)



def _blocks(length: int) -> tuple[int, int]:
    """Block size ``b`` ~ sqrt(length) and number of blocks ``J`` with ``b J >= length``."""
    b = max(1, math.isqrt(max(1, length)))
    return b, -(-length // b)


def geometric_sums(z: torch.Tensor, K: torch.Tensor, length: int) -> torch.Tensor:
    r""":math:`S_k = \sum_n z_n^k K_{n,:}` for :math:`k = 0, \dots, \text{length} - 1`.

    The kernel of a diagonal linear recurrence (:math:`z` its eigenvalues, :math:`K` the
    products of read-out and input weights), with :math:`O(\sqrt{L} N)` powers and one
    matrix product instead of :math:`L N` powers: writing :math:`k = jb + r` with
    :math:`b \approx \sqrt L`,

    .. math::

        S_{jb + r} = \sum_n z_n^{r}\, \big(z_n^{jb} K_{n,:}\big),

    i.e. the product of the ``(b, N)`` matrix :math:`z^r` with the ``(N, J X)`` matrix
    :math:`z^{jb} K`. Every power is formed directly (never as a power of a rounded power),
    so each term has two roundings more than :math:`z_n^k K_n` and the result the accuracy
    of the reference :func:`geometric_sums_reference` (positive real :math:`z` use
    :math:`e^{k \log z}`, whose relative error :math:`\sim u |k \log z|` is the
    conditioning of the power itself). Differentiable; real or complex.

    Parameters
    ----------
    z : (N,) tensor
    K : (N, X) tensor
    length : int >= 0

    Returns
    -------
    (length, X) tensor
    """
    N, X = K.shape
    b, J = _blocks(length)
    dt = torch.promote_types(z.dtype, K.dtype)
    z, K = z.to(dt), K.to(dt)
    rdt = z.real.dtype
    r = torch.arange(b, device=z.device, dtype=rdt)  # (b,)
    jb = torch.arange(J, device=z.device, dtype=rdt) * b  # (J,)
    if not z.is_complex() and bool((z > 0).all()):
        # positive reals (every stable zoh/exp map): exp(k log z), vectorised, ~4x cheaper
        # than pow; relative error ~ u |k log z| like pow's conditioning
        lz = torch.log(z)
        R, Q = torch.exp(r[:, None] * lz[None, :]), torch.exp(jb[:, None] * lz[None, :])
    else:
        R = z[None, :] ** r[:, None]  # (b, N): z^r
        Q = z[None, :] ** jb[:, None]  # (J, N): z^{jb}
    Z = (Q.T[:, :, None] * K[:, None, :]).reshape(N, J * X)  # (N, J X)
    S = (R @ Z).reshape(b, J, X).transpose(0, 1).reshape(J * b, X)  # (J b, X), row jb + r
    return S[:length]


def geometric_sums_reference(z: torch.Tensor, K: torch.Tensor, length: int) -> torch.Tensor:
    """Reference for :func:`geometric_sums`: all :math:`L N` powers, then a contraction."""
    dt = torch.promote_types(z.dtype, K.dtype)
    z, K = z.to(dt), K.to(dt)
    k = torch.arange(length, device=z.device, dtype=z.real.dtype)
    return (z[None, :] ** k[:, None]) @ K  # (L, X)


def _uniform_step(t: np.ndarray) -> float | None:
    """``h`` if ``t`` (length >= 3) is ``t[0] + k h`` up to rounding, else ``None``."""
    if t.size < 3:
        return None
    h = (t[-1] - t[0]) / (t.size - 1)
    if not h > 0:
        return None
    ideal = t[0] + h * np.arange(t.size)
    tol = 8 * np.finfo(float).eps * max(abs(t[-1]), abs(t[0]), h)
    return float(h) if np.all(np.abs(ideal - t) <= tol) else None


def _exp_sums_uniform(lam: np.ndarray, K: np.ndarray, t0: float, h: float, L: int,
                      time: str) -> np.ndarray:
    r""":math:`\sum_n e^{\lambda_n (t_0 + kh)} K_n` (continuous) or
    :math:`\sum_n \lambda_n^{t_0 + kh} K_n` (discrete), k < L, blocked as in
    :func:`geometric_sums` (every exponential/power formed directly)."""
    N, X = K.shape
    b, J = _blocks(L)
    r, jb = np.arange(b) * h, t0 + np.arange(J) * (b * h)  # (b,), (J,)
    if time == "continuous":
        R, Q = np.exp(np.multiply.outer(r, lam)), np.exp(np.multiply.outer(jb, lam))
    else:
        lz = lam.astype(complex) if np.iscomplexobj(lam) else lam
        R, Q = np.power.outer(lz, r).T, np.power.outer(lz, jb).T  # (b, N), (J, N)
    Z = (Q.T[:, :, None] * K[:, None, :]).reshape(N, J * X)  # (N, J X)
    return (R @ Z).reshape(b, J, X).transpose(1, 0, 2).reshape(J * b, X)[:L]


def diagonal_memory_function(lam: np.ndarray, U: np.ndarray, C: np.ndarray, t: np.ndarray,
                             time: str = "continuous") -> np.ndarray:
    r"""Closed-form memory function of a diagonal linear system, vectorised over ``t``.

    Parameters
    ----------
    lam : (N,) eigenvalues (real or complex)
    U : (N, d) input matrix
    C : (p, N) output matrix
    t : (L,) times (continuous) or non-negative integer steps (discrete)

    Returns
    -------
    (L, p) array, :math:`M_o(t) = \sum_i |\sum_j C_{oj} e^{\lambda_j t} U_{ji}|` (continuous)
    or with :math:`\lambda_j^t` (discrete).

    On a uniform grid :math:`t_k = t_0 + kh` the :math:`L \times N` exponentials are
    replaced by :math:`O(\sqrt L N)` of them and one matrix product
    (:math:`e^{\lambda t_k} = e^{\lambda (t_0 + jbh)} e^{\lambda r h}` with
    :math:`k = jb + r`, as in :func:`geometric_sums`);
    :func:`diagonal_memory_function_reference` is the direct evaluation.
    """
    t = np.asarray(t, dtype=float)
    p, d = C.shape[0], U.shape[1]
    h = _uniform_step(t) if t.ndim == 1 else None
    if h is None:
        return diagonal_memory_function_reference(lam, U, C, t, time)
    K = (C.T[:, :, None] * U[:, None, :]).reshape(-1, p * d)  # (N, p d)
    resp = _exp_sums_uniform(lam, K, float(t[0]), h, t.size, time).reshape(-1, p, d)
    if np.iscomplexobj(resp):
        resp = resp.real
    return np.abs(resp).sum(-1)  # (L, p)


def diagonal_memory_function_reference(lam: np.ndarray, U: np.ndarray, C: np.ndarray,
                                       t: np.ndarray, time: str = "continuous") -> np.ndarray:
    """Reference for :func:`diagonal_memory_function`: one exponential (or power) per
    time and eigenvalue."""
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


class CompiledStep:
    """A step function run through :func:`torch.compile` (``dynamic=False``), falling back
    to the eager function, with one :class:`RuntimeWarning`, if compiling or running the
    compiled graph fails (no C++ compiler, an unsupported operation, ...).

    The compiled graph is built on the first call and never pickled (``__getstate__``), so
    a model holding one still deep-copies, pickles and forks. ``failed`` tells whether the
    fallback was taken.
    """

    def __init__(self, fn: Callable, owner: str):
        self.fn, self.owner = fn, owner
        self.compiled = None
        self.failed = False

    def __call__(self, *args):
        if self.failed:
            return self.fn(*args)
        if self.compiled is None:
            self.compiled = torch.compile(self.fn, dynamic=False)
        try:
            return self.compiled(*args)
        except Exception as exc:  # compiler missing, unsupported op, ...
            self.failed = True
            msg = exception_text(exc)
            warnings.warn(f"torch.compile failed for the {self.owner} step "
                          f"({type(exc).__name__}: {msg}); running eagerly", RuntimeWarning,
                          stacklevel=3)
            return self.fn(*args)

    def __getstate__(self):
        d = dict(self.__dict__)
        d["compiled"] = None
        return d
