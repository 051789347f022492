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
    DecayDerivation as DecayDerivation,
    L1Derivation as L1Derivation,
    TargetMemory as TargetMemory,
    derive_decay as derive_decay,
    derive_l1_norm as derive_l1_norm,
    get_target as get_target,
)
from .memory import (
    diagonal_ssm_memory as diagonal_ssm_memory,
    discrete_linear_memory as discrete_linear_memory,
    linear_rnn_memory as linear_rnn_memory,
    memory_numpy as memory_numpy,
)
