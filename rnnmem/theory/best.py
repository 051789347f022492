"""Derive the "best" parameterisation from its defining property.

StableSSM (Wang & Li, ICML 2024, Sec. 3.3) asks for the map whose gradient scale grows
linearly in the weight, :math:`G_f(w) = 2a|w|`, so that the gradient-over-weight ratio is
the same at every scale. With :math:`G_f = |f'|/f^2` (continuous time) this is the ODE

.. math::

    f'(w) = 2 a w\\, f(w)^2 \\quad (w > 0,\\ f' > 0),

whose general solution (sympy ``dsolve``) is :math:`f(w) = -1/(a w^2 + C_1)`. It is a valid
continuous-time eigenvalue (:math:`f < 0` for every real ``w``) iff :math:`C_1 > 0`; calling
:math:`C_1 = b` gives the published :math:`-1/(a w^2 + b)`. In discrete time,
:math:`G_f = |f'|/(1-f)^2` and the solution is :math:`f(w) = 1 - 1/(a w^2 + C_1)`; then
:math:`|f| < 1` for all ``w`` iff :math:`C_1 > 1/2`, and :math:`f \\ge 0` (the range where the
stability identity of :mod:`.parameterisations` holds) iff :math:`C_1 \\ge 1`.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from ..errors import DerivationError, InvalidParameterError
from . import _symbols as S

__all__ = ["best_parameterisation", "best_parameterisation_derivation", "BestDerivation"]


@dataclass(frozen=True)
class BestDerivation:
    time: str
    ode: sp.Eq
    general_solution: sp.Expr
    conditions: tuple[tuple[str, sp.Basic], ...]
    result: sp.Expr

    def text(self, latex: bool = False) -> str:
        fmt = sp.latex if latex else sp.sstr
        lines = [f"Derivation of the best {self.time}-time parameterisation",
                 f"  1. require gradient scale = 2 a |w|; on w > 0 with f' > 0 this is the ODE",
                 f"       {fmt(self.ode)}",
                 f"  2. dsolve: f(w) = {fmt(self.general_solution)}"]
        for i, (txt, cond) in enumerate(self.conditions, 3):
            lines.append(f"  {i}. {txt}: {fmt(cond)}")
        lines.append(f"  => f(w) = {fmt(self.result)}")
        return "\n".join(lines)


def best_parameterisation_derivation(time: str = "continuous") -> BestDerivation:
    """Solve "gradient scale = 2a|w|" and the admissibility conditions with sympy."""
    if not isinstance(time, str) or time not in ("continuous", "discrete"):
        raise InvalidParameterError(f"time must be 'continuous' or 'discrete', got {time!r}")
    w, a, b = S.w, S.a, S.b
    f = sp.Function("f")
    if time == "continuous":
        ode = sp.Eq(f(w).diff(w), 2 * a * w * f(w) ** 2)
    else:
        ode = sp.Eq(f(w).diff(w), 2 * a * w * (1 - f(w)) ** 2)
    sol = sp.dsolve(ode, f(w))
    sols = sol if isinstance(sol, list) else [sol]
    if len(sols) != 1:  # pragma: no cover - sympy regression
        raise DerivationError(f"dsolve returned {len(sols)} solutions: {sols}")
    general = sp.simplify(sols[0].rhs)
    consts = sorted(general.free_symbols - {w, a}, key=str)
    if len(consts) != 1:  # pragma: no cover
        raise DerivationError(f"expected one integration constant in {general}")
    C1 = consts[0]
    # bring it to the form -1/(a w^2 + c) resp. 1 - 1/(a w^2 + c)
    base = -1 / general if time == "continuous" else 1 / (1 - general)
    base = sp.expand(sp.simplify(base))
    c_expr = sp.simplify(base - a * w**2)
    if c_expr.has(w):  # pragma: no cover
        raise DerivationError(f"solution {general} is not of the form 1/(a w^2 + c)")
    c = sp.Symbol("c", real=True)
    # the minimum over w of a w^2 + c is c (a > 0), attained at w = 0
    if time == "continuous":
        cond = sp.solveset(c > 0, c, sp.S.Reals)  # f < 0 for all w
        conds = (("f(w) < 0 for all real w  <=>  a w^2 + c > 0 at w = 0, so c in", cond),)
    else:
        cond = sp.solveset(sp.Abs(1 - 1 / c) < 1, c, sp.S.Reals)
        cond_nonneg = sp.solveset(1 - 1 / c >= 0, c, sp.Interval.open(0, sp.oo))
        conds = (("|f(w)| < 1 for all w  <=>  |1 - 1/c| < 1, so c in", cond),
                 ("f(w) >= 0 for all w (eigenvalues in [0, 1)) needs c in", cond_nonneg))
    result = (-1 / (a * w**2 + b)) if time == "continuous" else (1 - 1 / (a * w**2 + b))
    # check: the derived family with c = b is the result, and it solves the ODE
    if sp.simplify(general.subs(C1, sp.solve(sp.Eq(c_expr, b), C1)[0]) - result) != 0:
        raise DerivationError("derived solution does not reduce to the published form")
    return BestDerivation(time, ode, general, conds, result)


def best_parameterisation(time: str = "continuous") -> sp.Expr:
    """The optimal map derived by :func:`best_parameterisation_derivation`.

    Returns a sympy expression in :data:`rnnmem.theory.w` with positive constants ``a``,
    ``b``: :math:`-1/(a w^2 + b)` (continuous) or :math:`1 - 1/(a w^2 + b)` (discrete).
    """
    return best_parameterisation_derivation(time).result
