"""DeepMind's length-generalisation tasks as transductions (Delétang et al. 2023).

Each task is a :class:`Transduction` (``sample(rng, length) -> (input, output)``,
``solve(input) -> output``, ``output_length(n)``, ``mask(output)``), in the token
encoding of google-deepmind/neural_networks_chomsky_hierarchy, registered in
:data:`TRANSDUCTIONS` under DeepMind's name. See :mod:`._base` for how a model reads them.
"""

from __future__ import annotations

from ...errors import UnknownNameError
from ._base import (LEVELS as LEVELS, Transduction as Transduction,
                    from_binary as from_binary, random_nonzero_bits as random_nonzero_bits,
                    to_binary as to_binary)
from ._cs import (BinaryAddition as BinaryAddition,
                  BinaryMultiplication as BinaryMultiplication, BucketSort as BucketSort,
                  ComputeSqrt as ComputeSqrt, DuplicateString as DuplicateString,
                  MissingDuplicateString as MissingDuplicateString, OddsFirst as OddsFirst)
from ._dcf import (ModularArithmeticBrackets as ModularArithmeticBrackets,
                   ReverseString as ReverseString, SolveEquation as SolveEquation,
                   StackManipulation as StackManipulation,
                   bracket_expression as bracket_expression,
                   evaluate_brackets as evaluate_brackets)
from ._regular import (CycleNavigation as CycleNavigation, EvenPairs as EvenPairs,
                       ModularArithmetic as ModularArithmetic, ParityCheck as ParityCheck)

#: DeepMind's fifteen tasks by name, regular, then DCF, then CS
TRANSDUCTIONS: dict[str, Transduction] = {
    t.name: t for t in (
        EvenPairs(), ModularArithmetic(), ParityCheck(), CycleNavigation(),
        StackManipulation(), ReverseString(), ModularArithmeticBrackets(), SolveEquation(),
        DuplicateString(), MissingDuplicateString(), OddsFirst(), BinaryAddition(),
        BinaryMultiplication(), ComputeSqrt(), BucketSort())
}


def get_transduction(name) -> Transduction:
    """The registered transduction ``name`` (a Transduction is returned as is); raises
    UnknownNameError listing the names."""
    if isinstance(name, Transduction):
        return name
    try:
        return TRANSDUCTIONS[name]
    except (KeyError, TypeError):
        raise UnknownNameError("transduction", name, list(TRANSDUCTIONS)) from None


__all__ = ["Transduction", "TRANSDUCTIONS", "get_transduction", "LEVELS",
           "EvenPairs", "ModularArithmetic", "ParityCheck", "CycleNavigation",
           "StackManipulation", "ReverseString", "ModularArithmeticBrackets", "SolveEquation",
           "DuplicateString", "MissingDuplicateString", "OddsFirst", "BinaryAddition",
           "BinaryMultiplication", "ComputeSqrt", "BucketSort", "bracket_expression",
           "evaluate_brackets", "random_nonzero_bits", "to_binary", "from_binary"]
