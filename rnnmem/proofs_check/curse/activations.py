"""``activations-no-relief`` (Wang, Li & Li, ICLR 2024): tanh and hardtanh RNNs are still
not stable approximants of polynomial memory.

Protocol ``activations-no-relief``: rows :data:`ACTIVATION_ROWS` x targets (polynomial at
smoke and quick, both at full) x widths, measured cell by cell as the table
(:func:`.table.measure_cells`).
"""

from __future__ import annotations

from ...experiments import register_protocol
from ..registry import Context, Evidence, claim
from .common import (ACTIVATION_ROWS, ROWS, SEED_TABLE, TARGET_NAMES, WLL2024, at,
                     curse_protocol, sizes, smoke_inconclusive)
from .table import cell_details, measure_cells

#: the targets by budget
TARGETS = {"smoke": ("polynomial",), "quick": ("polynomial",), "full": TARGET_NAMES}


@register_protocol("activations-no-relief")
def activations_protocol():
    return curse_protocol("activations-no-relief",
                          {b: [(r, t) for r in ACTIVATION_ROWS for t in ts]
                           for b, ts in TARGETS.items()},
                          "tanh and hardtanh residual RNNs on the polynomial target x widths, "
                          "perturbed (Wang, Li & Li 2024)")


def activations_verdict(polynomial_cells: list[str]) -> str:
    """*confirmed* if every activation is measured unstable on the polynomial target,
    *refuted* if one is measured stable, else *inconclusive*."""
    if all(v == "unstable" for v in polynomial_cells):
        return "confirmed"
    if any(v == "stable" for v in polynomial_cells):
        return "refuted"
    return "inconclusive"


def _protocols(ctx: Context) -> list:
    return [at(activations_protocol(), ctx)]


@claim("activations-no-relief",
       title="tanh and hardtanh RNNs still approximate polynomial memory unstably",
       statement="Replacing the linear activation of the residual RNN by tanh or hardtanh does "
                 "not make the approximation of polynomially decaying memory stable: the "
                 "crossing points of the perturbation error still shrink as the width grows.",
       source=WLL2024 + ", Thm. 3.9 (nonlinear activations) and Sec. 4 (tanh/hardtanh "
                        "experiments)",
       group="curse of memory", protocols=_protocols)
@smoke_inconclusive
def check_activations(ctx: Context) -> Evidence:
    targets = TARGETS[ctx.budget]
    results = ctx.results(*_protocols(ctx))
    res, metrics, figs = measure_cells(ctx, results, ACTIVATION_ROWS, targets,
                                       "activations-no-relief")
    cells = res["cells"]
    s = sizes(ctx)
    lines = ["| model | " + " | ".join(f"{t} (seed: measured)" for t in targets) + " |",
             "|---|" + "---|" * len(targets)]
    for row in ACTIVATION_ROWS:
        lines.append(f"| {ROWS[row].label} | " + " | ".join(
            f"{SEED_TABLE[row][t]}: **{cells[(row, t)]['verdict']}**" for t in targets) + " |")
    verdict = activations_verdict([cells[(row, "polynomial")]["verdict"]
                                   for row in ACTIVATION_ROWS])
    detail = [f"Same perturbation test as `curse-of-memory-table` (widths {list(s.widths)}, "
              f"{s.steps} steps, T={s.length}, {s.repeats} directions per radius). Verdict: "
              "*confirmed* if both activations are measured unstable on the polynomial "
              "target, *refuted* if either is measured stable, else inconclusive.", "",
              *lines, ""]
    detail += cell_details(cells, res["runs"], s)
    if verdict != "confirmed":
        detail += ["", "Reading: the theorem concerns a sequence of models converging to the "
                   "target as m grows. Here each width is trained briefly on a finite window "
                   f"T = {s.length}; a slowest mode pushed a distance d past the boundary "
                   "grows only like e^{dT} over the window, and a saturating activation bounds "
                   "the state, so the perturbed error can stay below the level even when the "
                   "slowest mode approaches the boundary with m (see the decay rates above). "
                   "The full budget (T = 100, widths to 64, 6000 steps) is the real test."]
    return Evidence(verdict, summary=", ".join(f"{r}/{t}: {cells[(r, t)]['verdict']}"
                                               for (r, t) in cells),
                    metrics=metrics, figures=figs, details="\n".join(detail))
