"""``rnnmem list``: what is registered."""

from __future__ import annotations

NAME = "list"
HELP = "list claims, parameterisations, target memories, models and languages"
ORDER = 90

_WHAT = ("claims", "parameterisations", "targets", "models", "languages", "tasks")


def add_arguments(p):
    p.add_argument("what", nargs="?", choices=_WHAT + ("all",), default="all")


def _rows(what):
    if what == "claims":
        from ..proofs_check.registry import all_claims

        return [(c.id, ("[must hold] " if c.must_hold else "") + c.title) for c in all_claims()]
    if what == "parameterisations":
        from ..theory import PARAMETERISATIONS

        return [(n, f"{p.time:<10} f(w) = {p.expr}   stable={p.stable}")
                for n, p in PARAMETERISATIONS.items()]
    if what == "targets":
        try:
            from ..theory import TARGETS
        except ImportError:
            return []
        return [(n, str(t)) for n, t in TARGETS.items()]
    if what == "models":
        try:
            from ..models.registry import MODELS
        except ImportError:
            return []
        return [(n, (m.__doc__ or "").strip().splitlines()[0]) for n, m in MODELS.items()]
    if what == "languages":
        try:
            from ..tasks import LANGUAGES
        except ImportError:
            return []
        return [(n, str(getattr(lang, "description", ""))) for n, lang in LANGUAGES.items()]
    if what == "tasks":
        from ..train import task_names

        return [(n, "") for n in task_names()]
    return []


def _cached_rows(what):
    """:func:`_rows`, cached on disk: the registries are a pure function of the package's
    code and the installed sympy/torch/numpy (all in the key), and listing them imports
    torch and derives every parameterisation's stability with sympy (seconds)."""
    import json
    import sys
    from pathlib import Path

    from .._diskcache import cached_text, package_version, source_digest

    key = {"what": what, "code": source_digest(Path(__file__).resolve().parents[1]),
           "python": sys.version, **{lib: package_version(lib) for lib in ("sympy", "torch", "numpy", "scipy")}}
    return json.loads(cached_text("list", key, lambda: json.dumps(_rows(what))))


def run(args) -> int:
    whats = _WHAT if args.what == "all" else (args.what,)
    for what in whats:
        rows = _cached_rows(what)
        print(f"{what}:")
        width = max([len(r[0]) for r in rows] + [4])
        for name, desc in rows:
            print(f"  {name:<{width}}  {desc}")
    return 0
