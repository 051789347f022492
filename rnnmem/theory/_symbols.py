"""Shared sympy symbols. Importing this module imports sympy only."""

from __future__ import annotations

import sympy as sp

#: The trainable weight of a parameterisation, :math:`\lambda = f(w)`.
w = sp.Symbol("w", real=True)
#: Auxiliary weight (the perturbed :math:`\tilde w`).
w_tilde = sp.Symbol("wt", real=True)
#: An eigenvalue.
lam = sp.Symbol("lambda", real=True)
#: Time, continuous.
t = sp.Symbol("t", nonnegative=True)
#: Time step index, discrete.
k = sp.Symbol("k", integer=True, nonnegative=True)
#: Perturbation radius.
beta = sp.Symbol("beta", positive=True)
#: Shape constants of the "best" parameterisation.
a, b = sp.symbols("a b", positive=True)
#: Decay rates.
r1, r2 = sp.symbols("r1 r2", positive=True)
