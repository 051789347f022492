"""Linear-functional data sets: white-noise inputs, outputs :math:`y = \\rho * x`.

The target (Li, Han, E & Li, ICLR 2021, Sec. 3; Wang, Li & Li, ICLR 2024, Sec. 4) is

.. math::

    y(t) = \\int_0^t \\rho(s)\\, c^\\top x(t - s)\\, ds ,

with a kernel :math:`\\rho` from :data:`rnnmem.theory.targets.TARGETS` and input weights
:math:`c \\in \\mathbb R^d` (default :math:`c_i = 1/d`, so :math:`\\|c\\|_1 = 1` and the memory
function of Wang, Li & Li Def. 3.1 is exactly :math:`|\\rho(t)|` for every input dimension).

Time convention (the same as :func:`rnnmem.numerics.solve_linear` and the ZOH models):
the sample :math:`x_k` is held on :math:`[k\\Delta t, (k+1)\\Delta t)`, and
:math:`y_k = y((k+1)\\Delta t)`. For such a piecewise-constant input the integral is a finite
sum, *exactly*:

.. math::

    y_k = \\sum_{j=0}^{k} w_j\\, z_{k-j}, \\qquad z = x c, \\qquad
    w_j = \\int_{j\\Delta t}^{(j+1)\\Delta t} \\rho(s)\\, ds .

Methods
-------
``"quadrature"`` (default)
    The exact weights :math:`w_j`, from sympy's antiderivative :math:`R` of :math:`\\rho`
    (:math:`w_j = R((j+1)\\Delta t) - R(j\\Delta t)`) when it has one, else by adaptive
    quadrature (:func:`scipy.integrate.quad_vec`, split at the kernel's breakpoints). The
    result is exact up to rounding and quadrature error.
``"fft"``
    The rectangle rule :math:`w_j \\approx \\Delta t\\,\\rho(j\\Delta t)` (the discrete sum of
    ``radarFudan/Curse-of-memory``'s ``fft_convolve``; with :math:`\\Delta t = 1` it is that
    code's sum). Its error against the exact output is
    :math:`\\le \\|z\\|_\\infty \\sum_j |w_j - \\Delta t\\,\\rho(j\\Delta t)| = O(\\Delta t)`
    over a fixed horizon for a kernel of bounded variation (first order; tested by a
    regression slope).
``"direct"``
    The rectangle weights with the :math:`O(T^2)` causal sum instead of the FFT: the slow
    reference of ``"fft"`` (same signature, same result up to rounding; tested).

Both convolutions are public (:func:`causal_convolve_fft`, :func:`causal_convolve_direct`).

Error estimate
--------------
Every data set carries ``error_bound``: a bound on
:math:`\\max_{n,k} |y^{\\text{computed}}_{n,k} - y^{\\text{exact}}_{n,k}|`, where the exact output
is that of the piecewise-constant input, computed as

.. math::

    \\|z\\|_\\infty \\Big(\\sum_j |w^{\\text{used}}_j - w_j| + \\sum_j e_j\\Big)
      + \\text{(FFT rounding, } 8u\\sqrt{T}\\,\\|w\\|_1 \\|z\\|_\\infty)

with :math:`e_j` the error estimate of the exact weight (quadrature estimate, or the
rounding of :math:`R(b) - R(a)`).

Inputs
------
``"white"``: i.i.d. :math:`x_{k,i} \\sim N(0, \\sigma^2)`, one value per hold interval.
``"gaussian_process"``: a Wiener process sampled at the grid,
:math:`x_k = \\sigma\\sqrt{\\Delta t}\\sum_{i \\le k} \\xi_i` (the original code's
``Gaussian_input`` is the cumulative sum of its inputs, which are :math:`\\Delta t\\,\\xi`).
Both are drawn from ``numpy.random.default_rng(seed)``.

Defaults of the data-set registry (:data:`rnnmem.tasks.datasets.FUNCTIONAL_TASKS`) follow
the original experiments
(``radarFudan/Curse-of-memory``: ``configs/data/lf.yaml`` has ``seq_length: 100``,
``input_dim: 1`` and a 128000/12800/12800 split; ``src/data/lf_datamodule.py`` has
``dt = 1.0``): length 100, dt 1.0, input_dim 1; the sample count defaults to a laptop-sized
1024 (pass ``n_samples=153_600`` for the original total).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import numpy as np

from ..errors import (
    InvalidParameterError,
    NonFiniteError,
    ShapeError,
)
from ..limits import check_memory
from ..numerics.tolerances import tolerance, unit_roundoff
from ..theory.targets import TargetMemory, get_target

__all__ = [
    "INPUT_KINDS",
    "METHODS",
    "KernelWeights",
    "SequenceDataset",
    "LinearFunctionalTask",
    "kernel_weights",
    "causal_convolve_fft",
    "causal_convolve_direct",
    "sample_inputs",
    "apply_linear_functional",
    "make_linear_functional_dataset",
]

INPUT_KINDS = ("white", "gaussian_process")
METHODS = ("fft", "quadrature", "direct")


# --------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------
def _positive_int(v, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
        raise InvalidParameterError(f"{name} must be an integer >= 1, got {v!r}")
    return int(v)


def _positive_float(v, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise InvalidParameterError(f"{name} must be a real number, got {v!r}")
    if not math.isfinite(v):
        raise NonFiniteError(f"{name} must be finite, got {v!r}")
    if v <= 0:
        raise InvalidParameterError(f"{name} must be > 0, got {v!r}")
    return float(v)


def _seed(v) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
        raise InvalidParameterError(f"seed must be a non-negative integer, got {v!r}")
    return int(v)


def _choice(v, allowed, name: str) -> str:
    if v not in allowed:
        raise InvalidParameterError(f"{name} must be one of {list(allowed)}, got {v!r}")
    return v


def _input_weights(c, d: int) -> np.ndarray:
    if c is None:
        return np.full(d, 1.0 / d)
    c = np.asarray(c, dtype=float)
    if c.shape != (d,):
        raise ShapeError(f"input_weights must have shape ({d},), got {c.shape}")
    if not np.all(np.isfinite(c)):
        raise NonFiniteError("input_weights contain NaN or inf")
    return c


# --------------------------------------------------------------------------------------
# kernel weights and causal convolutions
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KernelWeights:
    """Per-interval kernel weights :math:`w_j`, :math:`j = 0..T-1`.

    Attributes
    ----------
    weights : (T,) array
    error : (T,) array
        Absolute error estimate of each weight against
        :math:`\\int_{j\\Delta t}^{(j+1)\\Delta t}\\rho` (for ``rule="rectangle"`` this *is*
        the rectangle-rule error, measured against the exact weights).
    rule : {"exact", "rectangle"}
    via : {"antiderivative", "quad_vec", "rectangle"}
    """

    weights: np.ndarray
    error: np.ndarray
    rule: str
    via: str


def kernel_weights(target, length: int, dt: float, *, rule: str = "exact",
                   via: str = "auto") -> KernelWeights:
    """:math:`w_j = \\int_{j\\Delta t}^{(j+1)\\Delta t} \\rho(s)\\,ds` (``rule="exact"``) or
    :math:`\\Delta t\\,\\rho(j\\Delta t)` (``rule="rectangle"``), :math:`j = 0, \\dots, T-1`.

    Parameters
    ----------
    target : str or TargetMemory
    length : int >= 1
    dt : float > 0
    rule : {"exact", "rectangle"}
    via : {"auto", "antiderivative", "quad_vec"}
        How exact weights are computed: ``"antiderivative"`` uses sympy's
        :math:`R = \\int\\rho` (error: rounding of :math:`R(b) - R(a)`); ``"quad_vec"`` uses
        :func:`scipy.integrate.quad_vec` over all intervals at once, split at the kernel's
        breakpoints (error: its own estimate); ``"auto"`` prefers the antiderivative.
    """
    target = get_target(target)
    T = _positive_int(length, "length")
    dt = _positive_float(dt, "dt")
    _choice(rule, ("exact", "rectangle"), "rule")
    _choice(via, ("auto", "antiderivative", "quad_vec"), "via")
    edges = dt * np.arange(T + 1)  # (T + 1,)
    if rule == "rectangle":
        w = dt * target.numpy(edges[:-1])
        exact = kernel_weights(target, T, dt, rule="exact", via=via)
        return KernelWeights(w, np.abs(w - exact.weights) + exact.error, "rectangle",
                             "rectangle")
    R = target.antiderivative_numpy if via in ("auto", "antiderivative") else None
    if via == "antiderivative" and R is None:
        raise InvalidParameterError(f"target {target.name!r} has no closed-form antiderivative")
    if R is not None:
        Rv = R(edges)
        w = np.diff(Rv)
        err = tolerance("float64", scale=1.0).rtol * (np.abs(Rv[1:]) + np.abs(Rv[:-1]))
        return KernelWeights(w, err, "exact", "antiderivative")
    from scipy.integrate import quad_vec

    j = np.arange(T)
    rho = target.numpy
    # breakpoints of rho as fractions of the interval that contains them
    fr = sorted({b / dt - math.floor(b / dt) for b in target.breakpoints} - {0.0})
    u = unit_roundoff("float64")
    val, err = quad_vec(lambda s: dt * rho((j + s) * dt), 0.0, 1.0, epsabs=64 * u,
                        epsrel=64 * u, norm="max", points=fr or None, limit=200)
    return KernelWeights(np.asarray(val, dtype=float), np.full(T, float(err)), "exact",
                         "quad_vec")


def _conv_args(weights, z) -> tuple[np.ndarray, np.ndarray]:
    w = np.asarray(weights, dtype=float)
    z = np.asarray(z, dtype=float)
    if w.ndim != 1 or z.ndim < 1 or z.shape[-1] != w.shape[0]:
        raise ShapeError(f"weights must be (T,) and z (..., T) with the same T, got "
                         f"{w.shape} and {z.shape}")
    if not (np.all(np.isfinite(w)) and np.all(np.isfinite(z))):
        raise NonFiniteError("weights or z contain NaN or inf")
    return w, z


def causal_convolve_fft(weights, z) -> np.ndarray:
    """:math:`y_k = \\sum_{j \\le k} w_j z_{k-j}` along the last axis, by zero-padded real FFT.

    ``weights`` (T,), ``z`` (..., T) -> (..., T). :math:`O(T \\log T)`.
    """
    from scipy import fft as sfft

    w, z = _conv_args(weights, z)
    T = w.shape[0]
    n = sfft.next_fast_len(2 * T - 1, real=True)
    out = sfft.irfft(sfft.rfft(z, n, axis=-1) * sfft.rfft(w, n), n, axis=-1)
    return out[..., :T]


def causal_convolve_direct(weights, z) -> np.ndarray:
    """Slow reference for :func:`causal_convolve_fft`: the :math:`O(T^2)` lag sum."""
    w, z = _conv_args(weights, z)
    T = w.shape[0]
    y = np.zeros_like(z)
    for j in range(T):  # lag j contributes w_j z_{k-j} to every k >= j
        y[..., j:] += w[j] * z[..., : T - j]
    return y


# --------------------------------------------------------------------------------------
# inputs and outputs
# --------------------------------------------------------------------------------------
def sample_inputs(rng: np.random.Generator, n_samples: int, length: int, input_dim: int,
                  dt: float, kind: str = "white", std: float = 1.0) -> np.ndarray:
    """Random inputs of shape (n_samples, length, input_dim) (see the module docstring)."""
    N, T = _positive_int(n_samples, "n_samples"), _positive_int(length, "length")
    d = _positive_int(input_dim, "input_dim")
    dt, std = _positive_float(dt, "dt"), _positive_float(std, "input_std")
    _choice(kind, INPUT_KINDS, "input")
    # inputs, their noise and the targets in float64, several copies (estimated first)
    check_memory(8.0 * N * T * d * 4, f"n_samples={N} x length={T} x input_dim={d}",
                 "use fewer samples or shorter sequences")
    xi = rng.standard_normal((N, T, d))  # (N, T, d)
    if kind == "white":
        return std * xi
    return std * math.sqrt(dt) * np.cumsum(xi, axis=1)


@dataclass(frozen=True)
class FunctionalOutput:
    outputs: np.ndarray  # (N, T, 1)
    error_bound: float
    weights: KernelWeights


def apply_linear_functional(target, inputs, dt: float, *, method: str = "quadrature",
                            input_weights=None) -> FunctionalOutput:
    """Outputs of the linear functional on given inputs (N, T, d) -> (N, T, 1).

    See the module docstring for the sum, the methods and the error bound.
    """
    target = get_target(target)
    dt = _positive_float(dt, "dt")
    _choice(method, METHODS, "method")
    x = np.asarray(inputs, dtype=float)
    if x.ndim != 3 or x.shape[1] < 1 or x.shape[2] < 1:
        raise ShapeError(f"inputs must have shape (N, T, d) with T, d >= 1, got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise NonFiniteError("inputs contain NaN or inf")
    T = x.shape[1]
    c = _input_weights(input_weights, x.shape[2])
    z = x @ c  # (N, T)
    exact = kernel_weights(target, T, dt, rule="exact")
    if method == "quadrature":
        used = exact
        y = causal_convolve_fft(used.weights, z)
    else:
        w = dt * target.numpy(dt * np.arange(T))  # rectangle rule, (T,)
        used = KernelWeights(w, np.abs(w - exact.weights) + exact.error, "rectangle",
                             "rectangle")
        conv = causal_convolve_fft if method == "fft" else causal_convolve_direct
        y = conv(used.weights, z)
    zmax = float(np.max(np.abs(z), initial=0.0))
    w1 = float(np.sum(np.abs(used.weights)))
    rounding = tolerance("float64", n_ops=T, scale=w1 * zmax).atol
    bound = zmax * float(np.sum(used.error)) + rounding
    return FunctionalOutput(y[..., None], bound, used)


# --------------------------------------------------------------------------------------
# data set container
# --------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class SequenceDataset:
    """Inputs (N, T, d) and targets (N, T, p) on the grid :math:`t_k = (k+1)\\Delta t`.

    Attributes
    ----------
    inputs, outputs : float64 arrays
    dt : float
    name : str
    error_bound : float
        Bound (or estimate, for ODE teachers) of the largest absolute error of ``outputs``.
    info : mapping
        Everything needed to regenerate the set (target, method, seed, ...).
    """

    inputs: np.ndarray
    outputs: np.ndarray
    dt: float
    name: str
    error_bound: float
    info: Mapping[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def times(self) -> np.ndarray:
        """(T,) output times :math:`(k+1)\\Delta t`."""
        return self.dt * np.arange(1, self.inputs.shape[1] + 1)

    def split(self, *sizes: int) -> tuple["SequenceDataset", ...]:
        """Consecutive pieces of the given sizes (e.g. ``split(128, 16, 16)``)."""
        for s in sizes:
            _positive_int(s, "split size")
        if sum(sizes) > len(self):
            raise InvalidParameterError(f"split sizes {sizes} exceed the {len(self)} samples")
        out, start = [], 0
        for s in sizes:
            out.append(replace(self, inputs=self.inputs[start:start + s],
                               outputs=self.outputs[start:start + s]))
            start += s
        return tuple(out)

    def as_tensors(self, dtype=None, device="cpu"):
        """``(inputs, outputs)`` as torch tensors (default dtype: torch's default)."""
        import torch

        from ..models._device import resolve_device, resolve_dtype

        dt_ = torch.get_default_dtype() if dtype is None else resolve_dtype(dtype)
        dev = resolve_device(device)
        return (torch.as_tensor(self.inputs, dtype=dt_, device=dev),
                torch.as_tensor(self.outputs, dtype=dt_, device=dev))

    def torch_dataset(self, dtype=None, device="cpu"):
        """A :class:`torch.utils.data.TensorDataset` of :meth:`as_tensors`."""
        from torch.utils.data import TensorDataset

        return TensorDataset(*self.as_tensors(dtype, device))


# --------------------------------------------------------------------------------------
# the task
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LinearFunctionalTask:
    """A linear-functional target with its input distribution.

    Parameters
    ----------
    target : str or TargetMemory
    dt : float > 0
    input_dim : int >= 1
    input : {"white", "gaussian_process"}
    method : {"quadrature", "fft", "direct"}
    input_std : float > 0
    input_weights : (input_dim,) array or None (default :math:`1/d` each)
    """

    target: Any
    dt: float = 1.0
    input_dim: int = 1
    input: str = "white"
    method: str = "quadrature"
    input_std: float = 1.0
    input_weights: Any = None

    def __post_init__(self):
        object.__setattr__(self, "target", get_target(self.target))
        object.__setattr__(self, "dt", _positive_float(self.dt, "dt"))
        object.__setattr__(self, "input_dim", _positive_int(self.input_dim, "input_dim"))
        _choice(self.input, INPUT_KINDS, "input")
        _choice(self.method, METHODS, "method")
        object.__setattr__(self, "input_std", _positive_float(self.input_std, "input_std"))
        c = _input_weights(self.input_weights, self.input_dim)
        object.__setattr__(self, "input_weights", tuple(float(v) for v in c))

    def memory(self, times) -> np.ndarray:
        """:math:`M(t) = \\|c\\|_1 |\\rho(t)|` (Wang, Li & Li Def. 3.1)."""
        return float(np.sum(np.abs(self.input_weights))) * self.target.memory(times)

    def sample_batch(self, rng: np.random.Generator, batch: int, length: int) -> dict:
        """``{"inputs": (B, T, d), "outputs": (B, T, 1), "error_bound": float}``."""
        x = sample_inputs(rng, batch, length, self.input_dim, self.dt, self.input,
                          self.input_std)
        out = apply_linear_functional(self.target, x, self.dt, method=self.method,
                                      input_weights=self.input_weights)
        return {"inputs": x, "outputs": out.outputs, "error_bound": out.error_bound}

    def dataset(self, n_samples: int, length: int, seed: int) -> SequenceDataset:
        """A reproducible data set: inputs from ``numpy.random.default_rng(seed)``."""
        rng = np.random.default_rng(_seed(seed))
        b = self.sample_batch(rng, n_samples, length)
        info = {"kind": "linear_functional", "target": self.target.name,
                "params": self.target.param_values, "method": self.method,
                "input": self.input, "input_std": self.input_std,
                "input_weights": self.input_weights, "seed": int(seed)}
        return SequenceDataset(b["inputs"], b["outputs"], self.dt,
                               f"lf_{self.target.name}", b["error_bound"], info)


def make_linear_functional_dataset(target, *, n_samples: int, length: int, dt: float,
                                   seed: int, input_dim: int = 1, input: str = "white",
                                   method: str = "quadrature", input_std: float = 1.0,
                                   input_weights=None) -> SequenceDataset:
    """White-noise (or Wiener-process) inputs and the linear functional's outputs.

    .. math::

        y_k = \\int_0^{(k+1)\\Delta t} \\rho(s)\\, c^\\top x((k+1)\\Delta t - s)\\, ds

    Returns a :class:`SequenceDataset` with inputs (N, T, d), outputs (N, T, 1) and
    ``error_bound`` (see the module docstring).
    """
    task = LinearFunctionalTask(target, dt=dt, input_dim=input_dim, input=input,
                                method=method, input_std=input_std,
                                input_weights=input_weights)
    return task.dataset(n_samples, length, seed)
