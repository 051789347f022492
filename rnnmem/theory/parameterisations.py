"""Parameterisations of recurrent eigenvalues, their gradient scale and their stability.

A *parameterisation* is a map :math:`f: w \\mapsto \\lambda` from a trainable real weight to an
eigenvalue of a diagonal recurrence. Continuous time needs :math:`\\lambda < 0`; discrete
time needs :math:`|\\lambda| < 1`.

Each one is built from a single sympy expression; everything else (gradient scale, inverse,
numpy and torch callables, the stability verdict) is derived from it.

Sources
-------
* S. Wang and Q. Li, *StableSSM: Alleviating the Curse of Memory in State-space Models
  through Stable Reparameterization*, ICML 2024 (arXiv 2311.14495): Def. 3.4 (stable
  reparameterisation), Thm. 3.6 (gradient scale :math:`|f'(w)|/f(w)^2`), the "best"
  parameterisation :math:`f(w) = -1/(a w^2 + b)`.
* A. Orvieto et al., *Resurrecting Recurrent Neural Networks for Long Sequences*, ICML 2023
  (the LRU map :math:`\\exp(-e^{\\nu})`).

The stability derivation
------------------------
For a continuous-time map put :math:`r(w) = -f(w) > 0` (the decay rate); for a discrete-time
map put :math:`r(w) = 1 - f(w)`, on the set where :math:`f(w) \\in [0, 1)`. Then

.. math::

    \\int_0^\\infty |e^{-\\tilde r t} - e^{-r t}|\\,dt
      = \\sum_{k\\ge0} |(1-\\tilde r)^k - (1-r)^k| = \\Big|\\frac1{\\tilde r} - \\frac1r\\Big|,

because the integrand (summand) never changes sign. StableSSM's quantity becomes

.. math::

    Q(w, \\tilde w) = r(w)\\Big|\\frac1{r(\\tilde w)} - \\frac1{r(w)}\\Big|
                   = \\Big|\\frac{r(w)}{r(\\tilde w)} - 1\\Big|
                   = |e^{\\log r(w) - \\log r(\\tilde w)} - 1|.

If :math:`L = \\sup_w |(\\log r)'(w)| < \\infty` then :math:`Q \\le e^{L\\beta} - 1 =: g(\\beta)`,
continuous with :math:`g(0) = 0`: the map is *stable*. If :math:`L = \\infty` because
:math:`r \\to 0` at a finite end :math:`w_0` of the domain, the pair
:math:`(w, (w + w_0)/2)` has distance :math:`|w - w_0|/2 \\to 0` while :math:`Q` tends to a
positive constant, so no :math:`g` with :math:`g(0) = 0` exists: the map is *unstable*.
Both steps are carried out by sympy for every map and kept for printing
(:meth:`StabilityDerivation.text`, ``rnnmem derive NAME``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Callable, Literal, Mapping

import sympy as sp

from ..errors import DerivationError, InvalidParameterError, NameRegistry, UnknownNameError
from . import _symbols as S
from .codegen import generate

__all__ = [
    "Parameterisation",
    "StabilityDerivation",
    "PARAMETERISATIONS",
    "get_parameterisation",
    "decay_rate_integral_identity",
]

Time = Literal["continuous", "discrete"]


# --------------------------------------------------------------------------------------
# derivation record
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DerivationStep:
    """One step of a derivation: a sentence and (optionally) the expression it produced."""

    text: str
    expr: sp.Basic | None = None


@dataclass(frozen=True)
class StabilityDerivation:
    """The derivation behind :attr:`Parameterisation.stable`.

    Attributes
    ----------
    stable : bool
        The verdict.
    lipschitz : sympy expression
        :math:`L = \\sup_w |(\\log r)'(w)|` (``sympy.oo`` when unbounded).
    bound : sympy expression or None
        :math:`g(\\beta) = e^{L\\beta} - 1` when stable.
    witness_value : sympy expression or None
        For an unstable map, :math:`\\lim Q` along the witness pair (a positive constant).
    steps : tuple of DerivationStep
    """

    name: str
    time: str
    stable: bool
    lipschitz: sp.Basic
    bound: sp.Basic | None
    witness_value: sp.Basic | None
    steps: tuple[DerivationStep, ...]

    def text(self, latex: bool = False) -> str:
        fmt = sp.latex if latex else sp.sstr
        lines = [f"Stability of the {self.time}-time parameterisation '{self.name}'"]
        for i, st in enumerate(self.steps, 1):
            line = f"  {i}. {st.text}"
            if st.expr is not None:
                line += f"\n       {fmt(st.expr)}"
            lines.append(line)
        lines.append(f"  verdict: {'STABLE' if self.stable else 'UNSTABLE'}")
        return "\n".join(lines)


def decay_rate_integral_identity(time: Time) -> tuple[sp.Expr, sp.Expr]:
    """Check :math:`\\int_0^\\infty (e^{-r_1 t} - e^{-r_2 t})dt = 1/r_1 - 1/r_2` with sympy.

    Returns the pair (computed, expected); for ``time="discrete"`` the integral is the sum
    :math:`\\sum_{k\\ge0} ((1-r_1)^k - (1-r_2)^k)` with :math:`0 < r_i \\le 1` (eigenvalues in
    :math:`[0, 1)`). Both sides equal; the absolute value passes through because the
    integrand has one sign.
    """
    r1, r2 = S.r1, S.r2
    expected = 1 / r1 - 1 / r2
    if time == "continuous":
        got = sp.integrate(sp.exp(-r1 * S.t) - sp.exp(-r2 * S.t), (S.t, 0, sp.oo))
    else:
        q = sp.Symbol("q", positive=True)  # q = 1 - r, an eigenvalue in (0, 1)
        geo = sp.summation(q**S.k, (S.k, 0, sp.oo))
        if isinstance(geo, sp.Piecewise):  # converges for q < 1: take that branch
            geo = next(e for e, c in geo.args if c.subs(q, sp.Rational(1, 2)) == sp.true)
        got = geo.subs(q, 1 - r1) - geo.subs(q, 1 - r2)
        got = sp.simplify(got)
    return sp.simplify(got), expected


# --------------------------------------------------------------------------------------
# symbolic helpers
# --------------------------------------------------------------------------------------
def _limit(expr: sp.Expr, x: sp.Symbol, at: sp.Expr, direction: str) -> sp.Expr:
    try:
        return sp.limit(expr, x, at, direction)
    except (NotImplementedError, ValueError) as exc:  # pragma: no cover - sympy gaps
        raise DerivationError(f"sympy could not take the limit of {expr} at {at}") from exc


def _critical_values(h: sp.Expr, domain: sp.Interval) -> list[sp.Expr]:
    """Values of ``h`` at its critical points in ``domain``.

    Tries :func:`sympy.solveset` first; where the equation is transcendental, roots of
    :math:`h'` are bracketed on a dense grid (in the variable :math:`\\tanh`-mapped onto a
    finite interval) and refined with :func:`sympy.nsolve`.
    """
    dh = sp.diff(h, S.w)
    try:
        sols = sp.solveset(sp.simplify(dh), S.w, domain)
    except Exception:  # pragma: no cover - sympy gaps
        sols = None
    if isinstance(sols, sp.FiniteSet):
        return [sp.simplify(h.subs(S.w, s)) for s in sols]
    if sols is sp.S.EmptySet:
        return []
    # numeric bracketing at 120 significant digits (avoids spurious sign changes from
    # cancellation), refined by bisection
    import mpmath

    lo = float(domain.inf) if domain.inf.is_finite else -40.0
    hi = float(domain.sup) if domain.sup.is_finite else 40.0
    n = 2001
    eps = 1e-9 * max(1.0, hi - lo)
    xs = [lo + eps + (hi - lo - 2 * eps) * i / (n - 1) for i in range(n)]
    f = sp.lambdify(S.w, dh, modules="mpmath")
    vals = []
    with mpmath.workdps(120):
        prev_x, prev_v = None, None
        for x in xs:
            try:
                v = f(mpmath.mpf(x))
            except (ZeroDivisionError, OverflowError, ValueError):
                prev_x, prev_v = None, None
                continue
            if prev_v is not None and prev_v * v < 0:
                a_, b_, fa = mpmath.mpf(prev_x), mpmath.mpf(x), prev_v
                for _ in range(120):
                    m = (a_ + b_) / 2
                    fm = f(m)
                    if fa * fm <= 0:
                        b_ = m
                    else:
                        a_, fa = m, fm
                vals.append(h.subs(S.w, sp.Float((a_ + b_) / 2, 30)).evalf(30))
            prev_x, prev_v = x, v
    return vals


def _sup_abs(h: sp.Expr, domain: sp.Interval) -> tuple[sp.Expr, list[DerivationStep]]:
    """:math:`\\sup_{w \\in D} |h(w)|` for continuous ``h`` on an interval ``D``."""
    steps = []
    cands = []
    for end, direction in ((domain.inf, "+"), (domain.sup, "-")):
        val = _limit(h, S.w, end, direction)
        steps.append(DerivationStep(f"limit of (log r)' as w -> {end}", val))
        cands.append(val)
    crit = _critical_values(h, domain)
    if crit:
        steps.append(DerivationStep("values at critical points", sp.FiniteSet(*crit)))
    cands.extend(crit)
    mags = [sp.Abs(c) for c in cands]
    if any(m.has(sp.oo, sp.zoo, sp.nan) or m.is_infinite for m in mags):
        return sp.oo, steps
    return sp.simplify(sp.Max(*mags)), steps


# --------------------------------------------------------------------------------------
# Parameterisation
# --------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Parameterisation:
    """A map :math:`\\lambda = f(w)` built from one sympy expression.

    Parameters
    ----------
    name : str
    time : {"continuous", "discrete"}
    expr : sympy expression in :data:`w` (and possibly the shape constants ``a``, ``b``)
    params : mapping from shape symbols to default values
    domain : sympy interval of admissible ``w`` (where :math:`f(w)` is a valid eigenvalue)
    source : str
        Where the map is published.
    """

    name: str
    time: Time
    expr: sp.Expr
    params: Mapping[sp.Symbol, sp.Expr] = field(default_factory=dict)
    domain: sp.Interval = sp.S.Reals
    source: str = ""
    symbol: sp.Symbol = S.w

    # ---- derived symbolic objects -----------------------------------------------------
    @cached_property
    def concrete(self) -> sp.Expr:
        """:attr:`expr` with the shape constants at their values."""
        return self.expr.subs(dict(self.params))

    @cached_property
    def gradient_scale(self) -> sp.Expr:
        """:math:`G_f(w) = |f'(w)|/f(w)^2` (continuous) or :math:`|f'(w)|/(1-f(w))^2`.

        StableSSM Thm. 3.6: the gradient of the loss with respect to ``w`` scales like
        :math:`G_f(w)` near the memory's stability boundary.
        """
        f = self.expr
        den = f**2 if self.time == "continuous" else (1 - f) ** 2
        return sp.simplify(sp.Abs(sp.diff(f, S.w)) / den)

    @cached_property
    def decay_rate(self) -> sp.Expr:
        """:math:`r(w) = -f(w)` (continuous) or :math:`1 - f(w)` (discrete)."""
        return -self.concrete if self.time == "continuous" else 1 - self.concrete

    @cached_property
    def analysis_domain(self) -> sp.Interval:
        """Where the stability identity holds: the domain, intersected for discrete time
        with :math:`\\{f(w) \\ge 0\\}` (eigenvalues in :math:`[0, 1)`)."""
        if self.time == "continuous":
            return self.domain
        sol = sp.solveset(self.concrete >= 0, S.w, self.domain)
        if not isinstance(sol, sp.Interval):
            raise DerivationError(f"{self.name}: {{f >= 0}} is not an interval: {sol}")
        return sol

    @cached_property
    def image(self) -> sp.Interval:
        """The set of eigenvalues the map reaches, :math:`f(\\mathrm{domain})`."""
        from sympy.calculus.util import function_range

        return function_range(self.concrete, S.w, self.domain)

    @cached_property
    def inverse_expr(self) -> sp.Expr:
        """:math:`w = f^{-1}(\\lambda)`, solved by sympy; on a two-valued map the branch
        with :math:`w \\ge 0` is chosen."""
        sols = sp.solve(sp.Eq(S.lam, self.concrete), S.w)
        probe_w = sp.Rational(7, 10)
        if not self.domain.contains(probe_w):
            probe_w = (self.domain.inf + self.domain.sup) / 2 if self.domain.inf.is_finite and \
                self.domain.sup.is_finite else self.domain.sup - 1
        probe_lam = self.concrete.subs(S.w, probe_w)
        for s in sols:
            val = sp.N(s.subs(S.lam, probe_lam))
            if val.is_real is not False and abs(complex(val) - complex(probe_w)) < 1e-9:
                return sp.simplify(s)
        raise DerivationError(f"{self.name}: no real inverse branch among {sols}")

    @cached_property
    def stability(self) -> StabilityDerivation:
        """Derive stability from StableSSM Def. 3.4 (see the module docstring)."""
        steps: list[DerivationStep] = []
        r = sp.simplify(self.decay_rate)
        D = self.analysis_domain
        kind = "-f(w)" if self.time == "continuous" else "1 - f(w)"
        steps.append(DerivationStep(f"decay rate r(w) = {kind} on w in {D}", r))
        got, expected = decay_rate_integral_identity(self.time)
        if sp.simplify(got - expected) != 0:  # pragma: no cover - sympy regression
            raise DerivationError("the decay-rate integral identity failed")
        if self.time == "continuous":
            what = "integral over t >= 0 of |exp(-r1 t) - exp(-r2 t)|"
        else:
            what = "sum over k >= 0 of |(1 - r1)^k - (1 - r2)^k|"
        steps.append(DerivationStep(
            f"{what} (one sign) = |1/r1 - 1/r2|; sympy gives", got))
        Q = sp.Abs(r / r.subs(S.w, S.w_tilde) - 1)
        steps.append(DerivationStep(
            "so r(w) * |1/r(wt) - 1/r(w)| = Q(w, wt), sup over |wt - w| <= beta, of", Q))
        h = sp.simplify(sp.diff(sp.log(r), S.w))
        steps.append(DerivationStep("(log r)'(w) =", h))
        L, sup_steps = _sup_abs(h, D)
        steps.extend(sup_steps)
        steps.append(DerivationStep("L = sup |(log r)'| =", L))
        if L is not sp.oo and L.is_finite:
            g = sp.exp(L * S.beta) - 1
            steps.append(DerivationStep(
                "L finite, so Q <= exp(L beta) - 1 = g(beta): continuous, g(0) = 0", g))
            return StabilityDerivation(self.name, self.time, True, L, g, None, tuple(steps))
        # unbounded: find a witness at an end of the domain where r -> 0
        for end, direction in ((D.inf, "+"), (D.sup, "-")):
            if not end.is_finite:
                continue
            if _limit(r, S.w, end, direction) != 0:
                continue
            pair = (S.w + end) / 2
            q = sp.simplify(r / r.subs(S.w, pair) - 1)
            val = sp.Abs(_limit(q, S.w, end, direction))
            steps.append(DerivationStep(
                f"r -> 0 as w -> {end}; along wt = (w + {end})/2, |w - wt| -> 0 but Q ->",
                val))
            if val.is_positive:
                steps.append(DerivationStep(
                    "Q stays >= this for every beta > 0, so no g with g(0) = 0 exists"))
                return StabilityDerivation(self.name, self.time, False, sp.oo, None, val,
                                           tuple(steps))
        raise DerivationError(f"{self.name}: L is unbounded but no witness was found")

    @property
    def stable(self) -> bool:
        """Whether the map is a stable reparameterisation (derived, see :attr:`stability`)."""
        return self.stability.stable

    # ---- generated callables ---------------------------------------------------------
    @cached_property
    def numpy(self) -> Callable:
        """:math:`f` for numpy arrays (generated by lambdify)."""
        return generate(self.concrete, [S.w], "numpy")

    @cached_property
    def torch(self) -> Callable:
        """:math:`f` for torch tensors (generated by lambdify; differentiable)."""
        return generate(self.concrete, [S.w], "torch")

    @cached_property
    def gradient_scale_numpy(self) -> Callable:
        """:attr:`gradient_scale` for numpy, generated from the unsimplified quotient
        :math:`|f'|/f^2` (resp. :math:`|f'|/(1-f)^2`), which does not overflow where the
        simplified form does (e.g. ``lru`` at large ``w``)."""
        f = self.concrete
        den = f**2 if self.time == "continuous" else (1 - f) ** 2
        return generate(sp.Abs(sp.diff(f, S.w)) / den, [S.w], "numpy")

    @cached_property
    def _inverse_numpy(self) -> Callable:
        return generate(self.inverse_expr, [S.lam], "numpy")

    @cached_property
    def _image_bounds(self) -> tuple[float, float, bool, bool]:
        im = self.image
        return float(im.inf), float(im.sup), bool(im.left_open), bool(im.right_open)

    def inverse_numpy(self, lam):
        """:math:`w = f^{-1}(\\lambda)` for numpy arrays; raises if some λ is not reachable."""
        import numpy as np

        lam = np.asarray(lam, dtype=float)
        lo, hi, lo_open, hi_open = self._image_bounds
        bad = ~np.isfinite(lam) | (lam < lo) | (lam > hi)
        if lo_open:
            bad |= lam == lo
        if hi_open:
            bad |= lam == hi
        if np.any(bad):
            raise InvalidParameterError(
                f"parameterisation {self.name!r} cannot reach eigenvalue(s) "
                f"{lam[bad].ravel()[:4].tolist()}; its image is {self.image}")
        return self._inverse_numpy(lam)

    def inverse_torch(self, lam):
        """:math:`w = f^{-1}(\\lambda)` for torch tensors (dtype and device kept)."""
        import torch

        lam_t = torch.as_tensor(lam)
        w = self.inverse_numpy(lam_t.detach().cpu().double().numpy())
        return torch.as_tensor(w, dtype=lam_t.dtype if lam_t.is_floating_point()
                               else torch.float64, device=lam_t.device)

    # ---- variants --------------------------------------------------------------------
    def with_params(self, **values: float) -> "Parameterisation":
        """A copy with other shape constants, e.g. ``best.with_params(a=1, b=0.1)``."""
        known = {str(s): s for s in self.params}
        new = dict(self.params)
        for k, v in values.items():
            if k not in known:
                raise InvalidParameterError(
                    f"parameterisation {self.name!r} has no constant {k!r}; "
                    f"it has {sorted(known) or 'none'}")
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise InvalidParameterError(f"{k} must be a positive finite number, got {v!r}")
            new[known[k]] = sp.nsimplify(v)
        return replace(self, params=new)

    def __repr__(self) -> str:
        return f"Parameterisation({self.name!r}, {self.time}, f(w) = {sp.sstr(self.expr)})"


# --------------------------------------------------------------------------------------
# the registry
# --------------------------------------------------------------------------------------
_w, _a, _b = S.w, S.a, S.b
_STABLESSM = "Wang & Li, StableSSM (ICML 2024), Sec. 3.3"

PARAMETERISATIONS: dict[str, Parameterisation] = NameRegistry("parameterisation", {
    p.name: p
    for p in (
        Parameterisation("direct", "continuous", _w, domain=sp.Interval.open(-sp.oo, 0),
                         source=_STABLESSM + " (no reparameterisation)"),
        Parameterisation("exp", "continuous", -sp.exp(_w), source=_STABLESSM),
        Parameterisation("softplus", "continuous", -sp.log(1 + sp.exp(_w)), source=_STABLESSM),
        Parameterisation("best", "continuous", -1 / (_a * _w**2 + _b),
                         params={_a: sp.Integer(1), _b: sp.Rational(1, 2)},
                         source=_STABLESSM + " ('best', a=1, b=0.5 in the paper)"),
        Parameterisation("linear", "discrete", _w, domain=sp.Interval.open(-1, 1),
                         source="plain discrete recurrence (no reparameterisation)"),
        Parameterisation("lru", "discrete", sp.exp(-sp.exp(_w)),
                         source="Orvieto et al., LRU (ICML 2023), exp(-exp(nu))"),
        Parameterisation("sigmoid", "discrete", 1 / (1 + sp.exp(-_w)),
                         source="gated recurrences (sigmoid forget gate)"),
        Parameterisation("best_discrete", "discrete", 1 - 1 / (_a * _w**2 + _b),
                         params={_a: sp.Integer(1), _b: sp.Integer(1)},
                         source=_STABLESSM + " (discrete analogue; b >= 1 keeps lambda in "
                                             "[0, 1), see best_parameterisation)"),
    )
})


def get_parameterisation(name: "str | Parameterisation") -> Parameterisation:
    """Look ``name`` up in :data:`PARAMETERISATIONS` (a Parameterisation passes through)."""
    if isinstance(name, Parameterisation):
        return name
    try:
        return PARAMETERISATIONS[name]
    except (KeyError, TypeError):
        raise UnknownNameError("parameterisation", name, list(PARAMETERISATIONS)) from None
