"""Teacher-model targets: a random causal continuous-time RNN labels white-noise inputs.

Two teachers (numpy only), both continuous in time with a zero-order-hold input (the
convention of :mod:`rnnmem.tasks.functional` and :func:`rnnmem.numerics.solve_linear`:
:math:`x_k` held on :math:`[k\\Delta t, (k+1)\\Delta t)`, :math:`y_k = y((k+1)\\Delta t)`):

``"linear"``
    :math:`\\dot h = W h + U x,\\ y = c^\\top h,\\ h(0) = 0`. Outputs are exact up to
    rounding (:func:`rnnmem.numerics.solve_linear`, ZOH recurrence). It *is* a linear
    functional with kernel :math:`\\rho(t) = c^\\top e^{Wt} U` and memory function
    (Wang, Li & Li, ICLR 2024, Def. 3.1) :math:`M(t) = \\|c^\\top e^{Wt}U\\|_1`, given by
    :func:`rnnmem.numerics.linear_memory`.
``"tanh"``
    :math:`\\dot h = \\tanh(W h + U x),\\ y = c^\\top h` (the continuous-time RNN of Li, Han,
    E & Li, ICLR 2021, with :math:`\\sigma = \\tanh` and no bias, so that :math:`h = 0` is an
    equilibrium and the linearisation at 0 is the linear teacher with the same
    :math:`W, U, c`). Integrated by classical RK4 with ``substeps`` steps per hold interval;
    the attached error is a Richardson estimate (``substeps`` vs ``2 * substeps`` on up to 32
    samples, times 16/15), doubled for safety.

The recurrent matrix
--------------------
:math:`W = Q B Q^\\top` with :math:`Q` a random orthogonal matrix and :math:`B` block
diagonal with blocks :math:`\\begin{pmatrix}-r_i & \\omega_i\\\\ -\\omega_i & -r_i\\end{pmatrix}`
(eigenvalues :math:`-r_i \\pm i\\omega_i`; one :math:`1\\times1` block :math:`-r` when the
hidden size is odd). :math:`W` is normal, so its eigenvector matrix is unitary
(:math:`\\kappa = 1`), and its symmetric part :math:`-Q\\,\\mathrm{diag}(r)Q^\\top` is negative
definite, so for the tanh teacher every Jacobian :math:`D W` (:math:`D` diagonal, entries
in :math:`(0, 1]`) is similar to a matrix with negative-definite symmetric part: the
linearisation is stable everywhere. The *spectral abscissa*
:math:`\\max\\operatorname{Re}\\lambda(W) = -\\min_i r_i` equals ``abscissa`` exactly (one rate
is pinned to it):

* ``memory="exponential"``: :math:`r_i \\in [|a|, 2|a|)` uniformly: one time scale,
  :math:`M(t) \\approx e^{-|a| t}`;
* ``memory="multiscale"``: :math:`r_i = |a|\\,10^{\\text{decades}\\,u_i}`, log-uniform over
  ``decades`` decades: a mixture of exponentials that imitates a power law on
  :math:`1/r_{\\max} \\lesssim t \\lesssim 1/|a|` (still exponential for
  :math:`t \\to \\infty`, as every finite-dimensional linear system).

Frequencies :math:`\\omega_i` are uniform in :math:`[-\\omega_{\\max}, \\omega_{\\max}]`;
:math:`U \\sim N(0, 1/d)`, :math:`c \\sim N(0, 1/m)` entrywise. Teacher parameters and inputs
come from two independent streams spawned from ``numpy.random.SeedSequence(seed)``, so the
teacher does not change with ``n_samples`` or ``length``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..errors import InvalidParameterError, NonFiniteError, ShapeError
from ..numerics import linear_memory, solve_linear
from ..numerics.discretise import discretise
from ..numerics.tolerances import tolerance
from .functional import (
    INPUT_KINDS,
    SequenceDataset,
    _choice,
    _positive_float,
    _positive_int,
    _seed,
    sample_inputs,
)

__all__ = [
    "TEACHER_KINDS",
    "TEACHER_MEMORIES",
    "TeacherRNN",
    "random_hurwitz",
    "make_teacher",
    "make_teacher_dataset",
]

TEACHER_KINDS = ("linear", "tanh")
TEACHER_MEMORIES = ("exponential", "multiscale")
_RICHARDSON_SAMPLES = 32


def random_hurwitz(rng: np.random.Generator, hidden: int, *, abscissa: float = -0.1,
                   memory: str = "exponential", decades: float = 2.0,
                   max_frequency: float = 1.0) -> np.ndarray:
    """A random normal (hidden, hidden) matrix with spectral abscissa exactly ``abscissa``.

    See the module docstring for the construction.
    """
    m = _positive_int(hidden, "hidden")
    if isinstance(abscissa, bool) or not isinstance(abscissa, (int, float)):
        raise InvalidParameterError(f"abscissa must be a real number, got {abscissa!r}")
    if not math.isfinite(abscissa):
        raise NonFiniteError(f"abscissa must be finite, got {abscissa!r}")
    if abscissa >= 0:
        raise InvalidParameterError(
            f"abscissa must be < 0 for a stable (Hurwitz) teacher, got {abscissa!r}")
    _choice(memory, TEACHER_MEMORIES, "memory")
    decades = _positive_float(decades, "decades")
    if isinstance(max_frequency, bool) or not isinstance(max_frequency, (int, float)) \
            or not math.isfinite(max_frequency) or max_frequency < 0:
        raise InvalidParameterError(f"max_frequency must be finite and >= 0, got "
                                    f"{max_frequency!r}")
    nb = (m + 1) // 2  # number of blocks
    a = -float(abscissa)
    u = rng.uniform(0.0, 1.0, nb)
    rates = a * (1.0 + u) if memory == "exponential" else a * 10.0 ** (decades * u)
    rates[0] = a  # pin the slowest rate: abscissa exactly
    omegas = max_frequency * rng.uniform(-1.0, 1.0, nb)
    B = np.zeros((m, m))
    for i in range(nb):
        j = 2 * i
        if j + 1 < m:
            B[j:j + 2, j:j + 2] = [[-rates[i], omegas[i]], [-omegas[i], -rates[i]]]
        else:
            B[j, j] = -rates[i]
    Q, R = np.linalg.qr(rng.standard_normal((m, m)))
    Q = Q * np.sign(np.diag(R))  # Haar-distributed orthogonal matrix
    return Q @ B @ Q.T


@dataclass(frozen=True, eq=False)
class TeacherRNN:
    """A continuous-time RNN teacher (see the module docstring).

    Attributes
    ----------
    kind : {"linear", "tanh"}
    W : (m, m), U : (m, d), c : (m,)
    dt : float
    substeps : int
        RK4 steps per hold interval (tanh only).
    """

    kind: str
    W: np.ndarray
    U: np.ndarray
    c: np.ndarray
    dt: float
    substeps: int = 8

    @property
    def hidden(self) -> int:
        return int(self.W.shape[0])

    @property
    def input_dim(self) -> int:
        return int(self.U.shape[1])

    @cached_property
    def spectral_abscissa(self) -> float:
        """:math:`\\max \\operatorname{Re} \\lambda(W)`."""
        return float(np.max(np.linalg.eigvals(self.W).real))

    @cached_property
    def _zoh(self) -> tuple[np.ndarray, np.ndarray]:
        return discretise(self.W, self.U, self.dt, "zoh")

    def kernel(self, times) -> np.ndarray:
        """:math:`\\rho(t) = c^\\top e^{Wt} U`, shape (L, d); for ``tanh`` the kernel of the
        linearisation at :math:`h = 0`."""
        from scipy.linalg import expm

        t = np.atleast_1d(np.asarray(times, dtype=float))
        if t.ndim != 1 or not np.all(np.isfinite(t)) or np.any(t < 0):
            raise InvalidParameterError("times must be a finite 1-D array of values >= 0")
        E = expm(t[:, None, None] * self.W)  # (L, m, m)
        return np.einsum("m,lmn,nd->ld", self.c, E, self.U)

    def linearised_memory(self, times) -> np.ndarray:
        """:math:`\\|c^\\top e^{Wt} U\\|_1` (:func:`rnnmem.numerics.linear_memory`), (L,)."""
        return linear_memory(self.W, self.U, self.c, times)

    def memory(self, times) -> np.ndarray:
        """Exact memory function (Wang, Li & Li Def. 3.1) of the linear teacher, (L,).

        The tanh teacher has no closed form; use :meth:`linearised_memory` (its small-input
        limit) or the black-box estimators of :mod:`rnnmem.numerics`.
        """
        if self.kind != "linear":
            raise InvalidParameterError(
                "the tanh teacher's memory function has no closed form; use "
                "linearised_memory() or rnnmem.numerics.memory_function")
        return self.linearised_memory(times)

    def kernel_weights(self, length: int) -> np.ndarray:
        """Exact ZOH weights :math:`w_j = c^\\top e^{W j\\Delta t}\\int_0^{\\Delta t}e^{Ws}ds\\,U`,
        (T, d): the linear teacher's output is :math:`y_k = \\sum_{j \\le k} w_j x_{k-j}`."""
        T = _positive_int(length, "length")
        A, B = self._zoh
        rows = np.empty((T, self.hidden))
        r = self.c.copy()
        for j in range(T):
            rows[j] = r
            r = r @ A
        return rows @ B  # (T, d)

    def _check(self, inputs) -> np.ndarray:
        x = np.asarray(inputs, dtype=float)
        if x.ndim != 3 or x.shape[2] != self.input_dim or x.shape[1] < 1:
            raise ShapeError(f"inputs must have shape (N, T, {self.input_dim}), got {x.shape}")
        if not np.all(np.isfinite(x)):
            raise NonFiniteError("inputs contain NaN or inf")
        return x

    def run(self, inputs, *, substeps: int | None = None) -> np.ndarray:
        """Teacher outputs (N, T, 1) on inputs (N, T, d)."""
        x = self._check(inputs)
        if self.kind == "linear":
            return solve_linear(self.W, self.U, self.c, x, self.dt)
        s = _positive_int(self.substeps if substeps is None else substeps, "substeps")
        h_step = self.dt / s
        N, T, _ = x.shape
        Wt = self.W.T
        u = x @ self.U.T  # (N, T, m)
        h = np.zeros((N, self.hidden))
        y = np.empty((N, T, 1))

        def f(hv, uk):
            return np.tanh(hv @ Wt + uk)

        for k in range(T):
            uk = u[:, k]
            for _ in range(s):  # classical RK4, input constant on the interval
                k1 = f(h, uk)
                k2 = f(h + 0.5 * h_step * k1, uk)
                k3 = f(h + 0.5 * h_step * k2, uk)
                k4 = f(h + h_step * k3, uk)
                h = h + (h_step / 6.0) * (k1 + 2 * k2 + 2 * k3 + k4)
            y[:, k, 0] = h @ self.c
        return y

    def error_estimate(self, inputs, outputs=None) -> float:
        """Bound (linear: rounding) or estimate (tanh: Richardson) of max |y - y_exact|."""
        x = self._check(inputs)
        T = x.shape[1]
        if self.kind == "linear":
            w1 = float(np.sum(np.abs(self.kernel_weights(T))))
            return tolerance("float64", n_ops=T,
                             scale=w1 * float(np.max(np.abs(x), initial=0.0))).atol
        xs = x[:_RICHARDSON_SAMPLES]
        y1 = self.run(xs) if outputs is None else np.asarray(outputs)[:_RICHARDSON_SAMPLES]
        y2 = self.run(xs, substeps=2 * self.substeps)
        # Richardson: err(y1) ~ 16/15 |y1 - y2| for a 4th-order method; times a safety factor
        # of 2 so that higher-order terms do not make it an underestimate
        return float(np.max(np.abs(y1 - y2), initial=0.0)) * 2.0 * 16.0 / 15.0


def make_teacher(kind: str = "linear", *, hidden: int = 16, dt: float = 1.0, seed: int = 0,
                 input_dim: int = 1, memory: str = "exponential", abscissa: float = -0.1,
                 decades: float = 2.0, max_frequency: float = 1.0,
                 substeps: int = 8) -> TeacherRNN:
    """A random teacher from the parameter stream of ``SeedSequence(seed)``."""
    _choice(kind, TEACHER_KINDS, "kind")
    m, d = _positive_int(hidden, "hidden"), _positive_int(input_dim, "input_dim")
    dt = _positive_float(dt, "dt")
    substeps = _positive_int(substeps, "substeps")
    rng = np.random.default_rng(np.random.SeedSequence(_seed(seed)).spawn(2)[0])
    W = random_hurwitz(rng, m, abscissa=abscissa, memory=memory, decades=decades,
                       max_frequency=max_frequency)
    U = rng.standard_normal((m, d)) / math.sqrt(d)
    c = rng.standard_normal(m) / math.sqrt(m)
    return TeacherRNN(kind, W, U, c, dt, substeps)


def make_teacher_dataset(kind: str = "linear", *, n_samples: int, length: int,
                         dt: float = 1.0, seed: int = 0, hidden: int = 16,
                         input_dim: int = 1, input: str = "white", input_std: float = 1.0,
                         memory: str = "exponential", abscissa: float = -0.1,
                         decades: float = 2.0, max_frequency: float = 1.0,
                         substeps: int = 8) -> SequenceDataset:
    """Inputs (N, T, d) from the input stream of ``SeedSequence(seed)`` and the teacher's
    outputs (N, T, 1). ``info["teacher"]`` holds the :class:`TeacherRNN`."""
    teacher = make_teacher(kind, hidden=hidden, dt=dt, seed=seed, input_dim=input_dim,
                           memory=memory, abscissa=abscissa, decades=decades,
                           max_frequency=max_frequency, substeps=substeps)
    _choice(input, INPUT_KINDS, "input")
    rng = np.random.default_rng(np.random.SeedSequence(_seed(seed)).spawn(2)[1])
    x = sample_inputs(rng, n_samples, length, input_dim, teacher.dt, input, input_std)
    y = teacher.run(x)
    err = teacher.error_estimate(x, y)
    info = {"kind": f"teacher_{kind}", "teacher": teacher, "seed": int(seed),
            "hidden": teacher.hidden, "memory": memory, "abscissa": float(abscissa),
            "decades": float(decades), "max_frequency": float(max_frequency),
            "substeps": teacher.substeps, "input": input, "input_std": float(input_std)}
    return SequenceDataset(x, y, teacher.dt, f"teacher_{kind}", err, info)
