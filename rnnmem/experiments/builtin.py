"""Built-in protocols and analyses.

``smoke-sweep``
    The machinery in under a minute on 2 cores: two model families (a linear RNN with a
    diagonal recurrence, a diagonal SSM with the stable ``softplus`` parameterisation,
    Wang & Li, ICML 2024) x two widths x two seeds = 8 runs on the exponential
    linear-functional target (``lf:exponential``, Li, Han, E & Li, ICLR 2021), float64,
    one thread each; every run also evaluates its memory function and a small
    perturbation curve. Budgets: ``smoke`` (the default), ``quick`` (longer training,
    three seeds).

New built-ins go into :data:`BUILTIN` (name -> function returning the Protocol).
"""

from __future__ import annotations

from .protocol import Protocol
from .run import Run

__all__ = ["smoke_sweep", "BUILTIN"]


def smoke_sweep() -> Protocol:
    base = Run.make(
        {"name": "rnn", "width": 4, "activation": "linear", "recurrence": "diagonal"},
        {"name": "lf:exponential", "length": 20, "n_samples": 96},
        seed=0,
        train={"steps": 30, "batch_size": 32, "lr": 0.01, "dtype": "float64",
               "device": "cpu", "threads": 1, "eval_every": 10, "checkpoint_every": 0},
        evaluate={"memory_function": {"t_max": 10.0, "n": 11},
                  "perturbation": {"beta_min": 1e-3, "beta_max": 1.0, "n_betas": 4,
                                   "repeats": 2, "n_eval": 32}},
        resources={"num_cpus": 1})
    families = [{"name": "rnn", "width": 4, "activation": "linear", "recurrence": "diagonal"},
                {"name": "diagonal_ssm", "width": 4, "parameterisation": "softplus"}]
    return Protocol(
        "smoke-sweep", base, grid={"model": families, "model.width": [4, 8], "seed": [0, 1]},
        analysis="summary",
        description="two model families x two widths x two seeds on lf:exponential: "
                    "the experiment machinery in under a minute",
        budgets={"smoke": {},
                 "quick": {"set": {"train.steps": 300, "task.n_samples": 512},
                           "grid": {"seed": [0, 1, 2]}}},
        default_budget="smoke")


def _dm():
    from .builtin_dm import dm_protocol

    return dm_protocol()


def _ns():
    from .builtin_dm import ns_protocol

    return ns_protocol()


#: the built-in protocols: name -> function returning it (built on demand); ``dm`` and
#: ``ns``: :mod:`.builtin_dm`
BUILTIN = {"smoke-sweep": smoke_sweep, "dm": _dm, "ns": _ns}
