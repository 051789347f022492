"""Code generation: one sympy expression, callables for numpy and torch.

A formula is written once in sympy. Before :func:`sympy.lambdify` turns it into code, two
symbolic identities are applied so that the generated code does not overflow where the
formula itself is finite:

.. math::

    \\log(1 + e^{x}) = \\operatorname{softplus}(x), \\qquad
    \\frac{1}{1 + e^{-x}} = \\sigma(x), \\qquad e^{x} - 1 = \\operatorname{expm1}(x).

All are exact identities (``Softplus(x).rewrite(sp.log)`` gives back the original), and
they map to ``numpy.logaddexp(0, x)`` / ``torch.nn.functional.softplus`` and
``scipy.special.expit`` / ``torch.sigmoid``. The backends are imported only when a generated
function is first built, so importing :mod:`rnnmem.theory` pulls in sympy alone.
"""

from __future__ import annotations

from typing import Callable, Sequence

import sympy as sp

__all__ = ["Softplus", "Sigmoid", "stable_form", "generate"]


class Softplus(sp.Function):
    """:math:`\\operatorname{softplus}(x) = \\log(1 + e^x)`, kept opaque for code generation."""

    nargs = 1

    def fdiff(self, argindex=1):
        return Sigmoid(self.args[0])

    def _eval_rewrite_as_log(self, x, **kwargs):
        return sp.log(1 + sp.exp(x))

    _eval_rewrite_as_exp = _eval_rewrite_as_log

    def _eval_is_real(self):
        return self.args[0].is_real

    def _eval_is_positive(self):
        return self.args[0].is_real


class Sigmoid(sp.Function):
    """:math:`\\sigma(x) = 1 / (1 + e^{-x})`, kept opaque for code generation."""

    nargs = 1

    def fdiff(self, argindex=1):
        x = self.args[0]
        return Sigmoid(x) * (1 - Sigmoid(x))

    def _eval_rewrite_as_exp(self, x, **kwargs):
        return 1 / (1 + sp.exp(-x))

    _eval_rewrite_as_log = _eval_rewrite_as_exp

    def _eval_is_real(self):
        return self.args[0].is_real

    def _eval_is_positive(self):
        return self.args[0].is_real


class Expm1(sp.Function):
    """:math:`e^x - 1`, kept opaque for code generation (``expm1`` has no cancellation)."""

    nargs = 1

    def fdiff(self, argindex=1):
        return sp.exp(self.args[0])

    def _eval_rewrite_as_exp(self, x, **kwargs):
        return sp.exp(x) - 1

    _eval_rewrite_as_log = _eval_rewrite_as_exp

    def _eval_is_real(self):
        return self.args[0].is_real


def _expm1_match(e) -> bool:
    if not isinstance(e, sp.Add) or len(e.args) != 2:
        return False
    one = [x for x in e.args if x in (sp.S.One, sp.S.NegativeOne)]
    rest = [x for x in e.args if x not in (sp.S.One, sp.S.NegativeOne)]
    if len(one) != 1 or len(rest) != 1:
        return False
    r = rest[0]
    if isinstance(r, sp.exp):
        return one[0] == -1
    return (isinstance(r, sp.Mul) and len(r.args) == 2 and sp.S.NegativeOne in r.args
            and any(isinstance(x, sp.exp) for x in r.args) and one[0] == 1)


def _expm1_build(e):
    (r,) = [x for x in e.args if x not in (sp.S.One, sp.S.NegativeOne)]
    if isinstance(r, sp.exp):
        return Expm1(r.args[0])
    (ex,) = [x for x in r.args if isinstance(x, sp.exp)]
    return -Expm1(ex.args[0])


def stable_form(expr: sp.Expr) -> sp.Expr:
    """Rewrite overflow-prone sub-expressions into :class:`Softplus` / :class:`Sigmoid`,
    and a rational sum over one denominator.

    The result is mathematically identical to ``expr``
    (``stable_form(e).rewrite(sp.exp) - e`` simplifies to 0; tested).
    """
    x = sp.Wild("x")
    if expr.is_Add and expr.is_rational_function():
        # a sum of fractions whose terms cancel loses relative accuracy as written
        # (best_discrete's 1 - 1/(w^2 + 1) ~ w^2 has error u/w^2 near w = 0); over one
        # denominator the cancellation is done symbolically: w^2/(w^2 + 1)
        expr = sp.cancel(sp.together(expr))
    out = expr.replace(sp.log(1 + sp.exp(x)), lambda x: Softplus(x))
    out = out.replace(1 / (1 + sp.exp(x)), lambda x: Sigmoid(-x))
    out = out.replace(_expm1_match, _expm1_build)
    return out


def _numpy_namespace() -> dict:
    import numpy as np
    from scipy import special

    return {"Softplus": lambda x: np.logaddexp(0.0, x), "Sigmoid": special.expit,
            "Expm1": np.expm1}


def _torch_namespace() -> dict:
    import torch

    return {
        "Softplus": torch.nn.functional.softplus,
        "Sigmoid": torch.sigmoid,
        "Expm1": torch.expm1,
    }


def generate(expr: sp.Expr, args: Sequence[sp.Symbol], backend: str) -> Callable:
    """Generate a callable for ``backend`` in ``{"numpy", "torch"}`` from ``expr``.

    Constants (numbers) are broadcast against the first argument so that the callable always
    returns an array/tensor of the input's shape, dtype and device.
    """
    body = stable_form(sp.sympify(expr))
    if backend == "numpy":
        modules = [_numpy_namespace(), "scipy", "numpy"]
    elif backend == "torch":
        modules = [_torch_namespace(), "torch"]
    else:  # pragma: no cover - internal misuse
        raise ValueError(f"unknown backend {backend!r}")
    printer = None
    if backend == "torch":
        from sympy.printing.pytorch import TorchPrinter

        # non-strict: our opaque functions are printed by name and found in the namespace
        printer = TorchPrinter({"strict": False})
    fn = sp.lambdify(list(args), body, modules=modules, printer=printer)
    if body.free_symbols & set(args):
        return fn

    # constant expression: keep shape/dtype/device of the first argument
    def const_fn(*xs, _fn=fn):
        x0 = xs[0]
        val = _fn(*xs)
        if backend == "torch":
            import torch

            x0 = torch.as_tensor(x0)
            return torch.full_like(x0, float(val))
        import numpy as np

        return np.full_like(np.asarray(x0, dtype=float), float(val))

    return const_fn
