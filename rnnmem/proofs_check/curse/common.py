"""What the curse-of-memory claims share: sizes by budget, the model rows, the protocols'
runs, the trained runs read from the store, and small numeric and text helpers.

Every experiment trains through :func:`rnnmem.train.train` on the ``lf:<target>`` tasks
(Li, Han, E & Li, ICLR 2021), in float64 on the CPU with one thread (the models are tiny
and sequential: a GPU would not help, and the CPU keeps runs reproducible). A run is a
:class:`rnnmem.experiments.Run`; a claim's runs are the grid of its protocol at the
budget, trained once into the run store and read back from it (:func:`trained_runs`), so
that claims reading the same models (the table, inverse approximation, the trained part
of the approximation rate) share them, within one invocation and across invocations.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from ..registry import Context, Evidence

LI2021 = ("Li, Han, E & Li, On the curse of memory in recurrent neural networks: "
          "approximation and optimization analysis (ICLR 2021)")
WLL2024 = ("Wang, Li & Li, Inverse approximation theory for nonlinear recurrent neural "
           "networks (ICLR 2024)")
STABLESSM = ("Wang & Li, StableSSM: alleviating the curse of memory in state-space models "
             "through stable reparameterization (ICML 2024)")

TARGET_NAMES = ("exponential", "polynomial")


# ======================================================================================
# sizes by budget
# ======================================================================================
@dataclass(frozen=True)
class Sizes:
    """Everything that defines a training run and a perturbation test at one budget."""

    widths: tuple[int, ...]
    length: int
    n_samples: int
    steps: int
    batch_size: int
    lr: float
    n_eval: int
    betas: tuple[float, ...]
    repeats: int

    def to_dict(self) -> dict:
        return {"widths": list(self.widths), "length": self.length,
                "n_samples": self.n_samples, "steps": self.steps,
                "batch_size": self.batch_size, "lr": self.lr, "n_eval": self.n_eval,
                "betas": [float(b) for b in self.betas], "repeats": self.repeats,
                "dtype": "float64", "optimizer": "adamw (cosine to lr/10)"}


SIZES = {
    "smoke": Sizes(widths=(2, 4, 8), length=20, n_samples=120, steps=10, batch_size=24,
                   lr=1e-2, n_eval=24, betas=tuple(np.geomspace(1e-3, 1.0, 6)), repeats=2),
    "quick": Sizes(widths=(2, 4, 8, 16), length=50, n_samples=640, steps=120, batch_size=32,
                   lr=1e-2, n_eval=128, betas=tuple(np.geomspace(1e-3, 1.0, 13)), repeats=4),
    "full": Sizes(widths=(2, 4, 8, 16, 32, 64), length=100, n_samples=12800, steps=6000,
                  batch_size=128, lr=5e-3, n_eval=1280,
                  betas=tuple(np.geomspace(1e-4, 1.0, 25)), repeats=30),
}


def sizes(ctx: Context) -> Sizes:
    """The sizes of ``ctx.budget`` (``quick``'s at ``medium``, which these have not)."""
    return SIZES.get(ctx.budget) or SIZES[ctx.base_budget]


def smoke_inconclusive(check):
    """For a claim on trained models: at the smoke budget (a few training steps, the
    machinery only) the verdict is ``inconclusive``; what the run measured stays in the
    summary, the details and ``metrics["verdict_as_measured"]``."""

    @functools.wraps(check)
    def wrapped(ctx: Context) -> Evidence:
        ev = check(ctx)
        if ctx.budget != "smoke" or ev.verdict == "inconclusive":
            return ev
        ev.metrics["verdict_as_measured"] = ev.verdict
        note = (f"Smoke budget: the models are trained for a few steps only, so the verdict "
                f"is inconclusive; as measured it would be **{ev.verdict}**.")
        return dataclasses.replace(
            ev, verdict="inconclusive",
            summary=f"smoke budget: too small to tell (as measured: {ev.verdict}; "
                    f"{ev.summary})",
            details=note + "\n\n" + ev.details)

    return wrapped


# ======================================================================================
# the model rows
# ======================================================================================
@dataclass(frozen=True)
class Row:
    """A model family of the table: registered name and options (the width is the model
    option ``width`` of every model)."""

    label: str
    model: str
    options: tuple[tuple[str, Any], ...]

    def table(self) -> dict:
        """The run's ``model`` table without its width."""
        return {"name": self.model, **dict(self.options)}


ROWS: dict[str, Row] = {
    "diagonal_rnn": Row("diagonal RNN (linear, residual, free diagonal W)", "rnn",
                        (("activation", "linear"), ("recurrence", "diagonal"))),
    "vanilla_rnn": Row("vanilla RNN (linear, residual, full W)", "rnn",
                       (("activation", "linear"), ("recurrence", "vanilla"))),
    "ssm": Row("SSM (linear recurrence, full W, no reparameterisation)", "ssm",
               (("activation", "linear"), ("recurrence", "vanilla"))),
    "lru": Row("LRU (Orvieto et al. 2023)", "lru", ()),
    "softplus_ssm": Row("stable reparameterisation: diagonal SSM, lambda = -softplus(w)",
                        "diagonal_ssm", (("parameterisation", "softplus"),)),
    # activations-no-relief
    "tanh_rnn": Row("tanh RNN (residual, diagonal W)", "rnn",
                    (("activation", "tanh"), ("recurrence", "diagonal"))),
    "hardtanh_rnn": Row("hardtanh RNN (residual, diagonal W)", "rnn",
                        (("activation", "hardtanh"), ("recurrence", "diagonal"))),
}
TABLE_ROWS = ("diagonal_rnn", "vanilla_rnn", "ssm", "lru", "softplus_ssm")
ACTIVATION_ROWS = ("tanh_rnn", "hardtanh_rnn")

#: The seeded table (issue "curse of memory"): stable approximation by row and target.
SEED_TABLE: dict[str, dict[str, str]] = {
    "diagonal_rnn": {"exponential": "stable", "polynomial": "unstable"},
    "vanilla_rnn": {"exponential": "stable", "polynomial": "unstable"},
    "ssm": {"exponential": "stable", "polynomial": "unstable"},
    "lru": {"exponential": "stable", "polynomial": "unstable"},
    "softplus_ssm": {"exponential": "stable", "polynomial": "stable"},
    "tanh_rnn": {"exponential": "stable", "polynomial": "unstable"},
    "hardtanh_rnn": {"exponential": "stable", "polynomial": "unstable"},
}


def row_of(run) -> str:
    """The row of a run (its model table without the width)."""
    table = {k: v for k, v in run.to_dict()["model"].items() if k != "width"}
    for name, row in ROWS.items():
        if row.table() == table:
            return name
    raise KeyError(f"run {run.short}: model {table} is not a row of the table")


# ======================================================================================
# the protocols: one run per (row, target, width)
# ======================================================================================
def _budget_fields(s: Sizes) -> dict:
    return {"task.length": s.length, "task.n_samples": s.n_samples,
            "train.steps": s.steps, "train.batch_size": s.batch_size, "train.lr": s.lr,
            "train.min_lr": s.lr / 10,
            "evaluate.perturbation.n_eval": s.n_eval,
            "evaluate.perturbation.beta_min": float(min(s.betas)),
            "evaluate.perturbation.beta_max": float(max(s.betas)),
            "evaluate.perturbation.n_betas": len(s.betas),
            "evaluate.perturbation.repeats": s.repeats}


def base_run():
    """The base run of every curse protocol (sizes set by the budget): AdamW with a cosine
    schedule to lr/10, float64, CPU, one thread; afterwards the perturbation curve of the
    recurrent weights (spectral norm, :func:`rnnmem.train.perturb.perturbation_curve`)."""
    from ...experiments import Run

    s = SIZES["smoke"]
    return Run.make(
        {**ROWS["diagonal_rnn"].table(), "width": s.widths[0]},
        {"name": "lf:exponential", "length": s.length, "n_samples": s.n_samples, "seed": 0},
        seed=0,
        train={"steps": s.steps, "batch_size": s.batch_size, "lr": s.lr,
               "schedule": "cosine", "min_lr": s.lr / 10, "dtype": "float64",
               "device": "cpu", "threads": 1, "eval_every": 0, "checkpoint_every": 0},
        evaluate={"perturbation": {"beta_min": float(min(s.betas)),
                                   "beta_max": float(max(s.betas)),
                                   "n_betas": len(s.betas), "repeats": s.repeats,
                                   "scope": "recurrent", "norm": "spectral",
                                   "n_eval": s.n_eval, "method": "auto"}},
        resources={"num_cpus": 1})


def cells_axis(pairs) -> list:
    """A joint ``model+task.name`` axis over (row, target) pairs."""
    return [[ROWS[r].table(), f"lf:{t}"] for r, t in pairs]


def curse_protocol(name: str, pairs_by_budget: dict, description: str):
    """A protocol over (row, target) cells x widths; ``pairs_by_budget[b]`` the cells at
    budget ``b`` (a list of (row, target) pairs)."""
    from ...experiments import Protocol

    budgets = {b: {"set": _budget_fields(SIZES[b]),
                   "grid": {"model+task.name": cells_axis(pairs_by_budget[b]),
                            "model.width": list(SIZES[b].widths)}}
               for b in ("smoke", "quick", "full")}
    return Protocol(name, base_run(),
                    grid=[("model+task.name", cells_axis(pairs_by_budget["quick"])),
                          ("model.width", list(SIZES["quick"].widths))],
                    budgets=budgets, default_budget="quick", description=description,
                    analysis=name)


def at(protocol, ctx: Context):
    """``protocol`` at the context's budget and seed (the data seed follows the seed)."""
    p = protocol.at(ctx.budget if ctx.budget in protocol.budgets else ctx.base_budget)
    if ctx.seed:
        p = p.vary(**{"seed": ctx.seed, "task.seed": ctx.seed})
    return p


# ======================================================================================
# trained runs, read from the store
# ======================================================================================
class Trained:
    """One trained model of a curse protocol (or the record of a run that diverged), read
    from the run store: ``row``, ``target``, ``width``, ``status``, ``loss`` (final
    validation MSE), ``seconds``, ``error``; ``model`` and ``curve`` (the perturbation
    curve) are read on first use."""

    def __init__(self, result):
        self.result = result
        run = result.run
        self.row, self.target = row_of(run), run.task.split(":", 1)[1]
        self.width = int(run.model_options["width"])
        m = result.metrics
        self.loss = float((m.get("final") or {}).get("valid_loss", float("nan")))
        self.status = "ok" if result.ok and math.isfinite(self.loss) else "diverged"
        self.seconds = float(m.get("elapsed_s", 0.0))
        self.error = str(m.get("error", ""))

    @cached_property
    def model(self):
        return self.result.model().eval() if self.result.ok else None

    @cached_property
    def curve(self):
        return self.result.perturbation_curve()


def trained_runs(results) -> dict[tuple[str, str, int], Trained]:
    """``(row, target, width) -> Trained`` for the results of curse protocols."""
    out = {}
    for r in results:
        t = Trained(r)
        out[(t.row, t.target, t.width)] = t
    return out


def slowest_rate(run: Trained) -> float:
    """Decay rate per unit time of the slowest mode of the (linearised) recurrence, the
    model contract's :meth:`~rnnmem.models.base.RecurrentModel.slowest_decay_rate`:
    :math:`-\\max\\operatorname{Re}\\lambda` for a continuous-time generator, else
    :math:`-\\log\\max|\\mu|/\\Delta t` for the per-sample multipliers :math:`\\mu` (for a
    nonlinear residual RNN, :math:`I + \\Delta t W`, its linearisation at the origin).
    Non-positive when a mode does not decay."""
    return run.model.slowest_decay_rate()


# ======================================================================================
# small helpers
# ======================================================================================
def loglog_slope(x, y) -> float:
    """Least-squares slope of log y on log x (nan with fewer than 2 positive points)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = (x > 0) & (y > 0) & np.isfinite(y)
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0])


def fmt(x: float) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return str(x)
    return f"{x:.3g}"


def json_curve(c) -> dict:
    d = c.to_dict()
    d.pop("samples", None)
    d["meta"] = {k: v for k, v in d["meta"].items() if k in ("repeats", "scope", "norm",
                                                             "method", "time_s", "width")}
    return d


def eigen_summary(run: Trained) -> str:
    """How close the trained spectrum is to the stability boundary (for explanations),
    from the model contract's :meth:`~rnnmem.models.base.RecurrentModel.spectrum`."""
    if run.model is None:
        return "-"
    spec = run.model.spectrum()
    ev = spec.eigenvalues
    edge = (f"max Re lambda {ev.real.max():.4f}" if spec.time == "continuous"
            else f"max|lambda| {np.abs(ev).max():.4f}")
    return f"{edge} ({spec.time} time), slowest decay rate {spec.slowest_decay_rate():.4g}"


def table_verdict(comparison: dict) -> str:
    """The table's overall verdict from the per-cell comparisons with the seed:
    *refuted* if a cell is measured the other way, else *inconclusive* if a cell is
    inconclusive, else *confirmed*."""
    values = list(comparison.values())
    if "DIFFERS" in values:
        return "refuted"
    return "inconclusive" if "inconclusive" in values else "confirmed"
