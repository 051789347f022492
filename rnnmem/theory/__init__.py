"""Symbolic theory (sympy only): parameterisations, memory functions, targets, bounds."""

from ._symbols import a as a, b as b, beta as beta, k as k, lam as lam, t as t, w as w
from .best import (
    BestDerivation as BestDerivation,
    best_parameterisation as best_parameterisation,
    best_parameterisation_derivation as best_parameterisation_derivation,
)
from .codegen import generate as generate
from .parameterisations import (
    PARAMETERISATIONS as PARAMETERISATIONS,
    Parameterisation as Parameterisation,
    StabilityDerivation as StabilityDerivation,
    get_parameterisation as get_parameterisation,
)
from .targets import (
    DECAY_CLASSES as DECAY_CLASSES,
    TARGETS as TARGETS,
    TargetMemory as TargetMemory,
    get_target as get_target,
)
