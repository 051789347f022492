"""Hypothesis strategies for rnnmem objects, for your own property tests.

Every strategy is bounded: entries are finite, of modest size, never subnormal, and
eigenvalues lie strictly inside the stable region with a ``margin``, so that a property
that fails does so for a mathematical reason and not because of overflow or an
ill-posed example. Pair them with :func:`rnnmem.numerics.tolerance` and
:func:`conditioning` to get a per-example tolerance::

    from hypothesis import given
    from rnnmem.numerics import linear_memory, linear_memory_reference, tolerance
    from rnnmem.testing import strategies as rst

    @given(rst.linear_systems(max_n=4))
    def test_fast_equals_reference(system):
        W, U, c = system
        t = [0.0, 0.5, 2.0]
        tol = tolerance("float64", cond=rst.conditioning(W), scale=...)
        assert tol.allclose(linear_memory(W, U, c, t), linear_memory_reference(W, U, c, t))

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
    """Eigenvector condition number :math:`\\kappa(V)` of ``W`` (``inf`` if defective).

    The ``cond`` to pass to :func:`rnnmem.numerics.tolerance` for results computed through
    an eigendecomposition of ``W``.
    """
    from ..numerics.linear import eigenvector_condition

    return eigenvector_condition(W)
