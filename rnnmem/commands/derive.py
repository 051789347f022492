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
    import json

    from .._diskcache import cached_text, lookup, package_version, source_digest, store

    # The derivation is a pure function of the expression, the sympy version and the
    # deriving code (rnnmem/theory), and is cached on disk under exactly that key. The
    # expression itself is a function of that code: an index keyed by (name, code, sympy
    # version) remembers the full key, so a warm call imports no sympy at all.
    theory_dir = Path(__file__).resolve().parents[1] / "theory"
    code, sympy_version = source_digest(theory_dir), package_version("sympy")
    index_key = {"name": args.name, "latex": bool(args.latex), "code": code,
                 "sympy": sympy_version}
    known = lookup("derive-index", index_key)
    if known is not None:
        text = lookup("derive", json.loads(known))
        if text is not None:
            print(text)
            return 0
    import sympy as sp

    from ..theory import get_parameterisation

    p = get_parameterisation(args.name)
    key = {"name": p.name, "latex": bool(args.latex), "time": p.time,
           "expr": sp.srepr(p.expr), "params": sorted((str(k), str(v))
                                                       for k, v in p.params.items()),
           "sympy": sympy_version, "code": code}
    print(cached_text("derive", key, lambda: _derivation_text(p, args.latex)))
    store("derive-index", index_key, json.dumps(key))
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
