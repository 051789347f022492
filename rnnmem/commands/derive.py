"""``rnnmem derive NAME``: print the stability derivation of a parameterisation."""

from __future__ import annotations

NAME = "derive"
HELP = "print the derivation (gradient scale, inverse, stability) of a parameterisation"
ORDER = 10


def add_arguments(p):
    p.add_argument("name", help="a parameterisation name (see `rnnmem list parameterisations`)"
                   " or 'best' / 'best_discrete' for the optimal-map derivation too")
    p.add_argument("--latex", action="store_true", help="print expressions as LaTeX")


def run(args) -> int:
    import sympy as sp

    from ..theory import best_parameterisation_derivation, get_parameterisation

    p = get_parameterisation(args.name)
    fmt = sp.latex if args.latex else sp.sstr
    print(f"parameterisation {p.name!r} ({p.time} time), source: {p.source}")
    print(f"  f(w)            = {fmt(p.expr)}")
    if p.params:
        print("  constants       : " + ", ".join(f"{k} = {v}" for k, v in p.params.items()))
    print(f"  gradient scale  = {fmt(p.gradient_scale)}")
    print(f"  inverse         = {fmt(p.inverse_expr)}")
    print(f"  eigenvalue image: {p.image}")
    print(p.stability.text(latex=args.latex))
    if p.name in ("best", "best_discrete"):
        print(best_parameterisation_derivation(p.time).text(latex=args.latex))
    return 0
