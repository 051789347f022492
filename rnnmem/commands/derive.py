"""``rnnmem derive NAME``: print the stability derivation of a parameterisation."""

from __future__ import annotations

from pathlib import Path

NAME = "derive"
HELP = "print the derivation (gradient scale, inverse, stability) of a parameterisation"
ORDER = 10


def add_arguments(p):
    p.add_argument("name", help="a parameterisation name (see `rnnmem list parameterisations`)"
                   " or 'best' / 'best_discrete' for the optimal-map derivation too")
    p.add_argument("--latex", action="store_true", help="print expressions as LaTeX")


def run(args) -> int:
    import sympy as sp

    from ..theory import get_parameterisation
    from .._diskcache import cached_text, source_digest

    p = get_parameterisation(args.name)
    # the derivation is a pure function of the expression, the sympy version and the
    # deriving code (rnnmem/theory): cached on disk under exactly that key
    theory_dir = Path(__file__).resolve().parents[1] / "theory"
    key = {"name": p.name, "latex": bool(args.latex), "time": p.time,
           "expr": sp.srepr(p.expr), "params": sorted((str(k), str(v))
                                                       for k, v in p.params.items()),
           "sympy": sp.__version__, "code": source_digest(theory_dir)}
    print(cached_text("derive", key, lambda: _derivation_text(p, args.latex)))
    return 0


def _derivation_text(p, latex: bool) -> str:
    import sympy as sp

    from ..theory import best_parameterisation_derivation

    fmt = sp.latex if latex else sp.sstr
    lines = [f"parameterisation {p.name!r} ({p.time} time), source: {p.source}",
             f"  f(w)            = {fmt(p.expr)}"]
    if p.params:
        lines.append("  constants       : " + ", ".join(f"{k} = {v}"
                                                        for k, v in p.params.items()))
    lines += [f"  gradient scale  = {fmt(p.gradient_scale)}",
              f"  inverse         = {fmt(p.inverse_expr)}",
              f"  eigenvalue image: {p.image}",
              p.stability.text(latex=latex)]
    if p.name in ("best", "best_discrete"):
        lines.append(best_parameterisation_derivation(p.time).text(latex=latex))
    return "\n".join(lines)
