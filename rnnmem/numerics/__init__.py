"""Numerics (numpy + scipy only, never torch).

Exact and ODE solutions of linear continuous-time systems, discretisations, exact and
black-box memory functions, decay classification, and the project's one tolerance helper.
"""

from .decay import DecayFit as DecayFit, classify_decay as classify_decay
from .discretise import (
    DISCRETISATIONS as DISCRETISATIONS,
    discretise as discretise,
    discretise_ss as discretise_ss,
)
from .linear import (
    eigenvector_condition as eigenvector_condition,
    linear_memory as linear_memory,
    linear_memory_discrete as linear_memory_discrete,
    linear_memory_discrete_reference as linear_memory_discrete_reference,
    linear_memory_reference as linear_memory_reference,
    linear_memory_sampled as linear_memory_sampled,
    linear_memory_sampled_reference as linear_memory_sampled_reference,
    solve_linear as solve_linear,
    solve_linear_reference as solve_linear_reference,
)
from .least_squares import (
    ExponentialSumFit as ExponentialSumFit,
    fit_exponential_sum as fit_exponential_sum,
    linear_perturbation_curve as linear_perturbation_curve,
)
from .memory import (
    DEFAULT_AMPLITUDES as DEFAULT_AMPLITUDES,
    MemoryEstimate as MemoryEstimate,
    estimate_memory as estimate_memory,
    memory_function as memory_function,
    probe_directions as probe_directions,
)
from .perturbation import (
    PerturbationCurve as PerturbationCurve,
    StabilityVerdict as StabilityVerdict,
    crossing_point as crossing_point,
    crossing_points_across_widths as crossing_points_across_widths,
    stability_verdict as stability_verdict,
)
from .tolerances import (
    Tolerance as Tolerance,
    expm_error_growth as expm_error_growth,
    tolerance as tolerance,
    unit_roundoff as unit_roundoff,
)
