"""rnnmem: the theory of memory in recurrent models, with symbolic verification.

Sub-packages (dependency direction, never reversed): :mod:`rnnmem.theory` (sympy) ←
:mod:`rnnmem.numerics` (numpy/scipy) ← :mod:`rnnmem.models` (torch) ← :mod:`rnnmem.tasks`,
:mod:`rnnmem.train` ← :mod:`rnnmem.proofs_check` ← :mod:`rnnmem.cli`.

Importing ``rnnmem`` is cheap: the public names below are resolved on first use.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: public name -> module that defines it (resolved lazily)
_LAZY = {
    "PARAMETERISATIONS": "rnnmem.theory",
    "get_parameterisation": "rnnmem.theory",
    "best_parameterisation": "rnnmem.theory",
    "TARGETS": "rnnmem.theory",
    "linear_memory": "rnnmem.numerics",
    "memory_function": "rnnmem.models.adapt",
    "jacobian_memory": "rnnmem.models.adapt",
    "estimate_memory": "rnnmem.numerics",
    "MemoryEstimate": "rnnmem.numerics",
    "classify_decay": "rnnmem.numerics",
    "tolerance": "rnnmem.numerics",
    "DiagonalSSM": "rnnmem.models",
    "linear_recurrence": "rnnmem.models",
    "load": "rnnmem.models",
    "StackRNN": "rnnmem.models",
    "TrainConfig": "rnnmem.train",
    "fit": "rnnmem.train",
    "LANGUAGES": "rnnmem.tasks",
    "TRANSDUCTIONS": "rnnmem.tasks",
}
#: ``rnnmem.train`` is always the subpackage (whatever was imported first); the training
#: function is ``rnnmem.fit`` = ``rnnmem.train.train``, and ``rnnmem.train(config)`` still
#: calls it (the subpackage is callable)
_SUBPACKAGES = ("theory", "numerics", "models", "tasks", "train", "proofs_check", "testing",
                "errors", "files", "limits")

__all__ = sorted(_LAZY) + list(_SUBPACKAGES) + ["__version__"]


def __getattr__(name: str):
    if name in _SUBPACKAGES:
        return importlib.import_module(f"rnnmem.{name}")
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rnnmem' has no attribute {name!r}")


def __dir__():
    return __all__
