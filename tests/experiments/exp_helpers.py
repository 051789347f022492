"""Helpers for the experiment tests: a tiny run (seconds on 2 cores)."""

from rnnmem.experiments import Run


def tiny_run(**changes) -> Run:
    """A linear RNN trained for a few steps on a short exponential target."""
    run = Run.make({"name": "rnn", "width": 3, "activation": "linear",
                    "recurrence": "diagonal"},
                   {"name": "lf:exponential", "length": 12, "n_samples": 48},
                   seed=0,
                   train={"steps": 8, "batch_size": 16, "lr": 0.01, "dtype": "float64",
                          "device": "cpu", "threads": 1, "eval_every": 4,
                          "checkpoint_every": 0},
                   evaluate={"memory_function": {"t_max": 5.0, "n": 6},
                             "perturbation": {"n_betas": 3, "repeats": 2, "n_eval": 16}})
    return run.replace(**changes) if changes else run
