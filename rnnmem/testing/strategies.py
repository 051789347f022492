"""Hypothesis strategies for rnnmem objects, for your own property tests.

Every strategy is bounded: entries are finite, of modest size, never subnormal, and
eigenvalues lie strictly inside the stable region with a ``margin``, so that a property
that fails does so for a mathematical reason and not because of overflow or an
ill-posed example. Pair them with :func:`rnnmem.numerics.tolerance` and
:func:`conditioning` to get a per-example tolerance (a defective "jordan" draw has
``conditioning = inf``, which :func:`~rnnmem.numerics.tolerance` refuses: exclude that
kind, or bound the error another way). When both sides of a comparison carry rounding
error, add both methods' error growths: here the eigendecomposition of the fast path and
the ``expm`` of the reference (:func:`rnnmem.numerics.expm_error_growth`, which can be the
larger):

>>> import numpy as np
>>> from hypothesis import given, settings
>>> from rnnmem.numerics import (expm_error_growth, linear_memory, linear_memory_reference,
...                              tolerance)
>>> from rnnmem.testing import strategies as rst
>>> @settings(max_examples=10, deadline=None)
... @given(rst.linear_systems(max_n=3, kind="normal"))
... def test_fast_equals_reference(system):
...     W, U, c = system
...     t = [0.0, 0.5, 2.0]
...     ref = linear_memory_reference(W, U, c, t)
...     cond = (rst.conditioning(W) * (1.0 + np.linalg.norm(W, 2) * max(t))  # eig path
...             + expm_error_growth(W * max(t)))                            # expm reference
...     tol = tolerance("float64", n_ops=W.shape[0] * len(t), cond=cond,
...                     scale=float(np.abs(c).sum() * np.abs(U).sum()))
...     assert tol.allclose(linear_memory(W, U, c, t), ref)
>>> test_fast_equals_reference()

Torch modules (:func:`torch_rnns`, :func:`torch_diagonal_ssms`, :func:`lrus`) come with
bounded spectra, float64 by default, and inputs from :func:`input_sequences` and
:func:`heaviside_probes`; torch is imported only when such a strategy is built.

Kinds of stable matrices
------------------------
``"dissipative"``
    :math:`W = -(S S^\\top + \\mu I) + K`, :math:`K` skew-symmetric: the symmetric part is
    :math:`\\preceq -\\mu I`, so every eigenvalue has real part :math:`\\le -\\mu` and
    :math:`\\|e^{Wt}\\|_2 \\le e^{-\\mu t}`; in general not normal.
``"normal"``
    :math:`W = Q D Q^\\top` with :math:`Q` orthogonal and :math:`D` block diagonal (real
    eigenvalues and :math:`2\\times2` rotation blocks).
``"nonnormal"``
    :math:`W = P D P^{-1}` with :math:`P = I + N`, :math:`N` strictly upper triangular with
    entries in [-2, 2]: diagonalisable, with transient growth of :math:`\\|e^{Wt}\\|`
    possible; :math:`\\kappa(P)` stays moderate (at most a few hundred for n <= 4).
``"jordan"``
    As ``"nonnormal"`` but :math:`D` contains a Jordan block (a defective matrix).

Here :math:`\\mu` is ``margin``. The discrete analogues (:func:`schur_stable_matrices`) keep
the spectral radius :math:`\\le 1 - \\mu`.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import strategies as st

from ..errors import InvalidParameterError, UnknownNameError

__all__ = [
    "bounded_floats",
    "hurwitz_matrices",
    "schur_stable_matrices",
    "linear_systems",
    "diagonal_ssms",
    "parameterisation_names",
    "target_memory_kernels",
    "conditioning",
    "input_sequences",
    "heaviside_probes",
    "HeavisideProbe",
    "torch_rnns",
    "torch_diagonal_ssms",
    "lrus",
    "HURWITZ_KINDS",
    "SCHUR_KINDS",
]

HURWITZ_KINDS = ("dissipative", "normal", "nonnormal", "jordan")
SCHUR_KINDS = ("contraction", "normal", "nonnormal", "jordan")
#: Drawn scalars of magnitude below this are replaced by 0 (keeps products far from
#: subnormals).
_SNAP = 2.0**-20
#: Computed entries below this are flushed to 0 (a safety net; far below every margin).
_FLUSH = 2.0**-60


def _clean(a: np.ndarray) -> np.ndarray:
    """Flush tiny computed entries (and -0.0) to +0.0."""
    a = np.asarray(a, dtype=float)
    return np.where(np.abs(a) < _FLUSH, 0.0, a) + 0.0


def _slack(margin: float) -> float:
    """Extra distance kept from the margin, against rounding in the constructions."""
    return max(1e-6 * margin, 1e-12)


def bounded_floats(lo: float = -1.0, hi: float = 1.0) -> st.SearchStrategy[float]:
    """Finite floats in [lo, hi], never subnormal; magnitudes below 2**-20 become 0."""
    for name, v in (("lo", lo), ("hi", hi)):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) \
                or not math.isfinite(float(v)) or abs(float(v)) > 1.7e308:
            raise InvalidParameterError(f"bounded_floats: {name} must be a finite number, "
                                        f"got {v!r}")
    if not lo <= hi:
        raise InvalidParameterError(f"bounded_floats: need lo <= hi, got lo={lo!r}, hi={hi!r}")
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False,
                     allow_subnormal=False).map(lambda v: 0.0 if abs(v) < _SNAP else v + 0.0)


def _array(shape, lo=-1.0, hi=1.0) -> st.SearchStrategy[np.ndarray]:
    size = int(np.prod(shape))
    return st.lists(bounded_floats(lo, hi), min_size=size, max_size=size).map(
        lambda v: np.array(v, dtype=float).reshape(shape))


def _positive_int(v, name):
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
        raise InvalidParameterError(f"{name} must be a positive integer, got {v!r}")


def _check_dims(n, max_n, name="n"):
    """Validate a fixed size ``n`` or an upper bound ``max_n`` (eagerly, not at draw time)."""
    if n is not None:
        _positive_int(n, name)
    else:
        _positive_int(max_n, f"max_{name}")


def _dims(n, max_n, lo=1):
    return st.just(int(n)) if n is not None else st.integers(lo, int(max_n))


def _check_kind(n, max_n, kind, kinds):
    _check_dims(n, max_n)
    if kind is not None and kind not in kinds:
        raise InvalidParameterError(f"kind must be one of {kinds}, got {kind!r}")
    if kind == "jordan" and (n if n is not None else max_n) < 2:
        raise InvalidParameterError("a Jordan block needs n >= 2")


def _size_and_kind(draw, n, max_n, kind, kinds):
    """Draw the size and the kind (validated by _check_kind); a Jordan block needs n >= 2."""
    if kind == "jordan":
        return draw(_dims(n, max_n, lo=2)), kind
    size = draw(_dims(n, max_n))
    if kind is None:
        kind = draw(st.sampled_from(kinds if size >= 2 else kinds[:3]))
    return size, kind


def _check_margin(margin: float, discrete: bool) -> float:
    try:
        margin = float(margin)
    except (TypeError, ValueError):
        raise InvalidParameterError(f"margin must be a number, got {margin!r}") from None
    hi = 1.0 if discrete else np.inf
    if not (0 < margin < hi):
        raise InvalidParameterError(f"margin must be in (0, {hi}), got {margin!r}")
    return margin


def _orthogonal(draw, n: int) -> np.ndarray:
    M = draw(_array((n, n)))
    q, r = np.linalg.qr(M + 2.0 * np.eye(n))  # + 2I keeps it well away from singular
    return q * np.where(np.diag(r) < 0, -1.0, 1.0)


def _unit_upper(draw, n: int) -> np.ndarray:
    P = np.eye(n)
    if n > 1:
        iu = np.triu_indices(n, 1)
        P[iu] = draw(_array((len(iu[0]),), -2.0, 2.0))
    return P


def _block_spectrum(draw, n: int, real_part, imag_part) -> np.ndarray:
    """Block-diagonal real matrix: 1x1 blocks a, 2x2 blocks [[a, -b], [b, a]]."""
    D = np.zeros((n, n))
    i = 0
    while i < n:
        if i + 1 < n and draw(st.booleans()):
            a, b = draw(real_part), draw(imag_part)
            D[i:i + 2, i:i + 2] = [[a, -b], [b, a]]
            i += 2
        else:
            D[i, i] = draw(real_part)
            i += 1
    return D


def _jordan_spectrum(draw, n: int, real_part) -> np.ndarray:
    """Diagonal of draws with one Jordan block of size >= 2 (n >= 2)."""
    D = np.diag([draw(real_part) for _ in range(n)])
    size = draw(st.integers(2, n))
    start = draw(st.integers(0, n - size))
    lam = D[start, start]
    for j in range(start, start + size):
        D[j, j] = lam
        if j + 1 < start + size:
            D[j, j + 1] = 1.0
    return D


def hurwitz_matrices(n: int | None = None, max_n: int = 4, margin: float = 0.1,
                     max_rate: float = 3.0, kind: str | None = None
                     ) -> st.SearchStrategy[np.ndarray]:
    """Real (n, n) matrices with every eigenvalue of real part :math:`\\le -` ``margin``.

    Parameters
    ----------
    n : int, optional
        Fixed size; otherwise drawn from 1..``max_n``.
    max_n : int
    margin : float > 0
        Stability margin :math:`\\mu`: :math:`\\max \\operatorname{Re}\\lambda(W) \\le -\\mu`.
    max_rate : float
        Real parts of the constructed eigenvalues lie in [-max_rate, -margin] (kinds
        "normal", "nonnormal", "jordan"); imaginary parts in [-max_rate, max_rate].
    kind : {"dissipative", "normal", "nonnormal", "jordan"}, optional
        See the module docstring; drawn when None ("jordan" only for n >= 2).

    Entries are bounded (by roughly ``n * (max_rate + 1)`` for "dissipative" and
    ``max_rate * kappa(P)`` otherwise), finite, and never subnormal.
    """
    margin = _check_margin(margin, discrete=False)
    if not max_rate > margin:
        raise InvalidParameterError(
            f"max_rate must exceed margin, got {max_rate!r} <= {margin!r}")
    _check_kind(n, max_n, kind, HURWITZ_KINDS)
    return _hurwitz(n, max_n, margin, float(max_rate), kind)


@st.composite
def _hurwitz(draw, n, max_n, margin, max_rate, kind):
    size, kind = _size_and_kind(draw, n, max_n, kind, HURWITZ_KINDS)
    mu = margin + _slack(margin)  # slack against rounding in the construction
    real_part = bounded_floats(-max_rate, -mu).filter(lambda v: v <= -mu)
    if kind == "dissipative":
        S = draw(_array((size, size)))
        K = draw(_array((size, size)))
        W = -(S @ S.T + mu * np.eye(size)) + (K - K.T) / 2
    elif kind == "normal":
        D = _block_spectrum(draw, size, real_part, bounded_floats(-max_rate, max_rate))
        Q = _orthogonal(draw, size)
        W = Q @ D @ Q.T
    else:
        if kind == "jordan":
            D = _jordan_spectrum(draw, size, real_part)
        else:
            D = _block_spectrum(draw, size, real_part, bounded_floats(-max_rate, max_rate))
        P = _unit_upper(draw, size)
        W = P @ D @ np.linalg.inv(P)
    return _clean(W)


def schur_stable_matrices(n: int | None = None, max_n: int = 4, margin: float = 0.1,
                          kind: str | None = None) -> st.SearchStrategy[np.ndarray]:
    """Real (n, n) matrices with spectral radius :math:`\\le 1 -` ``margin``.

    ``kind``: ``"contraction"`` (:math:`\\|A\\|_2 \\le 1 - \\mu`, by rescaling a random
    matrix), ``"normal"``, ``"nonnormal"``, ``"jordan"`` (as in :func:`hurwitz_matrices`, with
    eigenvalue moduli in [0, 1 - margin]).
    """
    margin = _check_margin(margin, discrete=True)
    _check_kind(n, max_n, kind, SCHUR_KINDS)
    return _schur(n, max_n, margin, kind)


@st.composite
def _schur(draw, n, max_n, margin, kind):
    size, kind = _size_and_kind(draw, n, max_n, kind, SCHUR_KINDS)
    r = 1.0 - margin - _slack(margin)
    if kind == "contraction":
        M = draw(_array((size, size)))
        norm = np.linalg.norm(M, 2)
        frac = draw(st.floats(0.0, 1.0))
        A = M * (r * frac / norm) if norm > 0 else M
        return _clean(A)
    radius = bounded_floats(-r, r)
    if kind == "jordan":
        D = _jordan_spectrum(draw, size, radius)
    else:
        # 2x2 blocks [[a, -b], [b, a]] with a^2 + b^2 <= r^2: draw modulus and angle
        D = np.zeros((size, size))
        i = 0
        while i < size:
            if i + 1 < size and draw(st.booleans()):
                rho = draw(st.floats(0.0, r))
                th = draw(st.floats(0.0, np.pi))
                a, b = rho * np.cos(th), rho * np.sin(th)
                D[i:i + 2, i:i + 2] = [[a, -b], [b, a]]
                i += 2
            else:
                D[i, i] = draw(radius)
                i += 1
    if kind == "normal":
        Q = _orthogonal(draw, size)
        A = Q @ D @ Q.T
    else:
        P = _unit_upper(draw, size)
        A = P @ D @ np.linalg.inv(P)
    return _clean(A)


def linear_systems(n: int | None = None, max_n: int = 4, input_dim: int | None = None,
                   max_input_dim: int = 3, margin: float = 0.1, kind: str | None = None,
                   time: str = "continuous") -> st.SearchStrategy[tuple]:
    """``(W, U, c)``: a stable state matrix (Hurwitz for ``time="continuous"``, Schur stable
    for ``"discrete"``), an input matrix (N, d) and a readout vector (N,).

    ``U`` and ``c`` have entries in [-1, 1] and are never identically zero.
    """
    if not isinstance(time, str) or time not in ("continuous", "discrete"):
        raise InvalidParameterError(f"time must be 'continuous' or 'discrete', got {time!r}")
    if time == "continuous":
        mats = hurwitz_matrices(n=n, max_n=max_n, margin=margin, kind=kind)
    else:
        mats = schur_stable_matrices(n=n, max_n=max_n, margin=margin, kind=kind)
    _check_dims(input_dim, max_input_dim, "input_dim")
    return _systems(mats, input_dim, max_input_dim)


@st.composite
def _systems(draw, mats, input_dim, max_input_dim):
    W = draw(mats)
    size = W.shape[0]
    d = draw(_dims(input_dim, max_input_dim))
    U = draw(_array((size, d)).filter(lambda a: np.any(a != 0)))
    c = draw(_array((size,)).filter(lambda a: np.any(a != 0)))
    return W, U, c


def diagonal_ssms(n: int | None = None, max_n: int = 4, input_dim: int | None = None,
                  max_input_dim: int = 3, margin: float = 0.1, max_rate: float = 3.0,
                  time: str = "continuous", complex_eigenvalues: bool = True
                  ) -> st.SearchStrategy[tuple]:
    """``(lambdas, U, c)`` of a diagonal state-space model.

    ``lambdas`` (N,) has :math:`\\operatorname{Re}\\lambda \\in [-\\text{max\\_rate}, -\\mu]`
    (continuous) or :math:`|\\lambda| \\le 1 - \\mu` (discrete); it is complex128 when
    ``complex_eigenvalues`` (imaginary parts in [-max_rate, max_rate], resp. any phase),
    else float64. ``U`` (N, d) and ``c`` (N,) are real with entries in [-1, 1], not
    identically zero.
    """
    if not isinstance(time, str) or time not in ("continuous", "discrete"):
        raise InvalidParameterError(f"time must be 'continuous' or 'discrete', got {time!r}")
    margin = _check_margin(margin, discrete=time == "discrete")
    if time == "continuous" and not max_rate > margin:
        raise InvalidParameterError(
            f"max_rate must exceed margin, got {max_rate!r} <= {margin!r}")
    _check_dims(n, max_n)
    _check_dims(input_dim, max_input_dim, "input_dim")
    return _diagonal(n, max_n, input_dim, max_input_dim, margin, float(max_rate), time,
                     bool(complex_eigenvalues))


@st.composite
def _diagonal(draw, n, max_n, input_dim, max_input_dim, margin, max_rate, time,
              complex_eigenvalues):
    size = draw(_dims(n, max_n))
    d = draw(_dims(input_dim, max_input_dim))
    if time == "continuous":
        mu = margin + _slack(margin)
        re = np.array(draw(st.lists(bounded_floats(-max_rate, -mu).filter(lambda v: v <= -mu),
                                    min_size=size, max_size=size)))
        if complex_eigenvalues:
            im = np.array(draw(st.lists(bounded_floats(-max_rate, max_rate),
                                        min_size=size, max_size=size)))
            lam = re + 1j * im
        else:
            lam = re
    else:
        r = 1.0 - margin - _slack(margin)
        if complex_eigenvalues:
            rho = np.array(draw(st.lists(bounded_floats(0.0, r), min_size=size, max_size=size)))
            th = np.array(draw(st.lists(st.floats(-np.pi, np.pi), min_size=size,
                                        max_size=size)))
            lam = rho * np.exp(1j * th)
            lam = _clean(lam.real) + 1j * _clean(lam.imag)
        else:
            lam = np.array(draw(st.lists(bounded_floats(-r, r), min_size=size,
                                         max_size=size)))
    U = draw(_array((size, d)).filter(lambda a: np.any(a != 0)))
    c = draw(_array((size,)).filter(lambda a: np.any(a != 0)))
    return lam, U, c


def parameterisation_names(time: str | None = None) -> st.SearchStrategy[str]:
    """Names from :data:`rnnmem.theory.PARAMETERISATIONS` (of one ``time`` if given)."""
    from ..theory import PARAMETERISATIONS

    if time not in (None, "continuous", "discrete"):
        raise InvalidParameterError(
            f"time must be None, 'continuous' or 'discrete', got {time!r}")
    names = sorted(n for n, p in PARAMETERISATIONS.items() if time is None or p.time == time)
    return st.sampled_from(names)


def target_memory_kernels(names=None) -> st.SearchStrategy:
    """Target memory objects from :data:`rnnmem.theory.targets.TARGETS`.

    Each has ``.name``, ``.expr`` (sympy, in :data:`rnnmem.theory.t`) and ``.numpy``. The
    module is imported when this function is called. ``names`` restricts the choice.
    """
    from ..theory.targets import TARGETS

    keys = sorted(TARGETS) if names is None else list(names)
    unknown = [k for k in keys if k not in TARGETS]
    if unknown:
        raise UnknownNameError("target", unknown[0], list(TARGETS))
    return st.sampled_from([TARGETS[k] for k in keys])


def conditioning(W) -> float:
    """Eigenvector condition number :math:`\\kappa(V)` of ``W``; ``inf`` if ``W`` is
    (numerically) defective, i.e. :math:`\\kappa(V) > \\varepsilon^{-1/2}`: the computed
    eigenvectors of a Jordan block are parallel up to :math:`O(\\sqrt\\varepsilon)` and
    the finite number then returned measures rounding, not the problem.

    The ``cond`` to pass to :func:`rnnmem.numerics.tolerance` for results computed through
    an eigendecomposition of ``W`` (which refuses ``inf``: bound such a case another way).
    """
    from ..numerics.linear import eigenvector_condition

    k = eigenvector_condition(W)
    return k if k <= np.finfo(float).eps ** -0.5 else float("inf")


# --------------------------------------------------------------------------------------
# input sequences and Heaviside probes
# --------------------------------------------------------------------------------------
def input_sequences(length: int | None = None, max_length: int = 32,
                    input_dim: int | None = None, max_input_dim: int = 3,
                    batch: int | None = None, max_abs: float = 1.0
                    ) -> st.SearchStrategy[np.ndarray]:
    """Input sequences with entries in [-max_abs, max_abs]: (T, d), or (batch, T, d)."""
    _check_dims(length, max_length, "length")
    _check_dims(input_dim, max_input_dim, "input_dim")
    if batch is not None:
        _positive_int(batch, "batch")
    if not (isinstance(max_abs, (int, float)) and np.isfinite(max_abs) and max_abs > 0):
        raise InvalidParameterError(f"max_abs must be a positive number, got {max_abs!r}")
    return _sequences(length, max_length, input_dim, max_input_dim, batch, float(max_abs))


@st.composite
def _sequences(draw, length, max_length, input_dim, max_input_dim, batch, max_abs):
    T = draw(_dims(length, max_length))
    d = draw(_dims(input_dim, max_input_dim))
    shape = (T, d) if batch is None else (int(batch), T, d)
    return draw(_array(shape, -max_abs, max_abs))


class HeavisideProbe(tuple):
    """``(x, direction, amplitude)``: ``x`` (T, d) is 0 at step 0 and
    ``amplitude * direction`` after, with :math:`|\\text{direction}|_\\infty = 1` (the
    probe of Def. 3.1, Wang, Li & Li, ICLR 2024)."""

    __slots__ = ()

    def __new__(cls, x, direction, amplitude):
        return super().__new__(cls, (x, direction, amplitude))

    x = property(lambda self: self[0])
    direction = property(lambda self: self[1])
    amplitude = property(lambda self: self[2])


def heaviside_probes(input_dim: int | None = None, max_input_dim: int = 3,
                     length: int | None = None, max_length: int = 32,
                     min_amplitude: float = 1e-2, max_amplitude: float = 10.0
                     ) -> st.SearchStrategy[HeavisideProbe]:
    """Heaviside probes :math:`x\\,\\mathbf 1_{[1, T)}` with amplitude drawn log-uniformly
    in [min_amplitude, max_amplitude] and a direction of sup-norm 1 (a sign vector or a
    scaled bounded vector)."""
    _check_dims(input_dim, max_input_dim, "input_dim")
    _check_dims(length, max_length, "length")
    if not (0 < min_amplitude <= max_amplitude < np.inf):
        raise InvalidParameterError(f"need 0 < min_amplitude <= max_amplitude < inf, got "
                                    f"{min_amplitude!r}, {max_amplitude!r}")
    return _probes(input_dim, max_input_dim, length, max_length, float(min_amplitude),
                   float(max_amplitude))


@st.composite
def _probes(draw, input_dim, max_input_dim, length, max_length, lo, hi):
    d = draw(_dims(input_dim, max_input_dim))
    T = draw(_dims(length, max_length, lo=2))
    v = draw(_array((d,)).filter(lambda a: np.any(a != 0)))
    direction = v / np.max(np.abs(v))
    amplitude = float(np.exp(draw(st.floats(np.log(lo), np.log(hi))))) if hi > lo else lo
    x = np.zeros((T, d))
    x[1:] = amplitude * direction
    return HeavisideProbe(x, direction, amplitude)


# --------------------------------------------------------------------------------------
# torch modules with bounded spectra
# --------------------------------------------------------------------------------------
def torch_rnns(hidden: int | None = None, max_hidden: int = 4, input_dim: int | None = None,
               max_input_dim: int = 2, margin: float = 0.1, nonlinearity: str = "tanh",
               bias: bool = True, dtype: str = "float64") -> st.SearchStrategy:
    """``nn.RNN(batch_first=True)`` + ``nn.Linear`` readout, as a module ``(B, T, d) ->
    (B, T, 1)``, with :math:`\\|W_{hh}\\|_2 \\le 1 -` ``margin`` (so the tanh/relu RNN is
    a contraction in its state: its memory decays exponentially)."""
    _check_dims(hidden, max_hidden, "hidden")
    _check_dims(input_dim, max_input_dim, "input_dim")
    if nonlinearity not in ("tanh", "relu"):
        raise InvalidParameterError(f"nonlinearity must be 'tanh' or 'relu', got "
                                    f"{nonlinearity!r}")
    margin = _check_margin(margin, discrete=True)
    return _torch_rnn(hidden, max_hidden, input_dim, max_input_dim, margin, nonlinearity,
                      bool(bias), dtype)


@st.composite
def _torch_rnn(draw, hidden, max_hidden, input_dim, max_input_dim, margin, nonlinearity,
               bias, dtype):
    import torch

    H = draw(_dims(hidden, max_hidden))
    d = draw(_dims(input_dim, max_input_dim))
    Whh = draw(schur_stable_matrices(n=H, margin=margin, kind="contraction"))
    tdt = getattr(torch, dtype)
    rnn = torch.nn.RNN(d, H, nonlinearity=nonlinearity, bias=bias, batch_first=True,
                       dtype=tdt)
    head = torch.nn.Linear(H, 1, dtype=tdt)
    with torch.no_grad():
        rnn.weight_hh_l0.copy_(torch.as_tensor(Whh))
        rnn.weight_ih_l0.copy_(torch.as_tensor(draw(_array((H, d)))))
        if bias:
            rnn.bias_ih_l0.copy_(torch.as_tensor(draw(_array((H,), -0.5, 0.5))))
            rnn.bias_hh_l0.zero_()
        head.weight.copy_(torch.as_tensor(draw(_array((1, H)).filter(np.any))))
        head.bias.zero_()
    return _Headed(rnn, head)


def _headed_class():
    import torch

    class Headed(torch.nn.Module):
        """A torch RNN followed by a Linear readout (drawn by :func:`torch_rnns`)."""

        def __init__(self, rnn, head):
            super().__init__()
            self.rnn, self.head = rnn, head

        def forward(self, x):
            return self.head(self.rnn(x)[0])

    return Headed


def _Headed(rnn, head):
    global _HEADED
    if _HEADED is None:
        _HEADED = _headed_class()
    return _HEADED(rnn, head)


_HEADED = None


def torch_diagonal_ssms(n: int | None = None, max_n: int = 4, input_dim: int | None = None,
                        max_input_dim: int = 2, margin: float = 0.1, time: str = "continuous",
                        dt: float = 0.1, dtype: str = "float64") -> st.SearchStrategy:
    """:class:`rnnmem.models.DiagonalSSM` with real eigenvalues set to a draw of
    :func:`diagonal_ssms` (``margin`` from the stability boundary; discrete: moduli in
    [1e-3, 1 - margin], positive) through the inverse of its parameterisation
    (``"softplus"`` in continuous time, ``"lru"`` in discrete time)."""
    _check_dims(n, max_n)
    _check_dims(input_dim, max_input_dim, "input_dim")
    if time not in ("continuous", "discrete"):
        raise InvalidParameterError(f"time must be 'continuous' or 'discrete', got {time!r}")
    margin = _check_margin(margin, discrete=time == "discrete")
    return _torch_diag(n, max_n, input_dim, max_input_dim, margin, time, float(dt), dtype)


@st.composite
def _torch_diag(draw, n, max_n, input_dim, max_input_dim, margin, time, dt, dtype):
    from ..models import DiagonalSSM

    lam, U, c = draw(diagonal_ssms(n=n, max_n=max_n, input_dim=input_dim,
                                   max_input_dim=max_input_dim, margin=margin, time=time,
                                   complex_eigenvalues=False))
    par = "softplus" if time == "continuous" else "lru"
    m = DiagonalSSM(lam.size, input_dim=U.shape[1], output_dim=1, parameterisation=par,
                    time=time, dt=dt if time == "continuous" else 1.0, dtype=dtype,
                    device="cpu", seed=0)
    if time == "discrete":  # the "lru" map's image is (0, 1)
        lam = np.clip(np.abs(lam), 1e-3, None)
    import torch

    with torch.no_grad():
        m.w.copy_(torch.as_tensor(m.parameterisation.inverse_numpy(lam), dtype=m.w.dtype))
        m.U.copy_(torch.as_tensor(U, dtype=m.U.dtype))
        m.C.copy_(torch.as_tensor(c[None], dtype=m.C.dtype))
    return m


def lrus(n: int | None = None, max_n: int = 4, input_dim: int | None = None,
         max_input_dim: int = 2, margin: float = 0.1, dtype: str = "float64"
         ) -> st.SearchStrategy:
    """:class:`rnnmem.models.LRU` with eigenvalue moduli in [0, 1 - margin] (its ring
    ``r_max``), drawn seeds (reproducible) and random ``r_min``, ``max_phase``."""
    _check_dims(n, max_n)
    _check_dims(input_dim, max_input_dim, "input_dim")
    margin = _check_margin(margin, discrete=True)
    return _lru(n, max_n, input_dim, max_input_dim, margin, dtype)


@st.composite
def _lru(draw, n, max_n, input_dim, max_input_dim, margin, dtype):
    from ..models import LRU

    N = draw(_dims(n, max_n))
    d = draw(_dims(input_dim, max_input_dim))
    r_max = 1.0 - margin
    r_min = draw(st.floats(0.0, r_max * 0.9))
    phase = draw(st.floats(0.1, 2 * np.pi))
    return LRU(N, input_dim=d, output_dim=1, r_min=r_min, r_max=r_max, max_phase=phase,
               dtype=dtype, device="cpu", seed=draw(st.integers(0, 2**16)))
