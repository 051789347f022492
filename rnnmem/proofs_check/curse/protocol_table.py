"""``curse-of-memory-protocols``: the seed table under each protocol of :mod:`.protocols`.

Added beside ``curse-of-memory-table`` (which keeps its own protocol and verdict): the same
seed table measured under ``com-original`` (the original code's protocol), ``com-ssm-2023-09``
and ``paper``, each cell read by :func:`.protocols.cell_results` (the one blow-up rule,
:func:`rnnmem.numerics.perturbation.blowup_verdict`, with the "ensure approximation" rule's
outcome per width). The claim's verdict is the one under ``com-original`` (does the
published table replicate under the protocol that produced it?); the other protocols are
reported beside it, cell by cell, so that a difference names the protocol it comes from.
"""

from __future__ import annotations

from ..registry import Context, Evidence, claim
from .common import SEED_TABLE, STABLESSM, WLL2024, smoke_inconclusive
from .protocols import PROTOCOL_NAMES, build_protocol, cell_line, cell_results, markdown_table
from .table import table_verdict

#: the budgets of ``rnnmem verify`` -> the protocols' budgets
_BUDGETS = {"smoke": "smoke", "quick": "quick", "full": "full"}


def _protocols(ctx: Context) -> list:
    return [build_protocol(n).at(_BUDGETS[ctx.budget]) for n in PROTOCOL_NAMES]


def _compare(measured: str, seed: str) -> str:
    if measured in ("inconclusive", "training_failed"):
        return measured
    return "match" if measured == seed else "DIFFERS"


@claim("curse-of-memory-protocols",
       title="The curse-of-memory table under the original's protocols and the paper's",
       statement="Under the protocol of the original code (com-original), diagonal RNN, "
                 "vanilla RNN, SSM and LRU approximate exponential memory stably and "
                 "polynomial memory unstably, and the softplus reparameterisation both "
                 "stably; the table is also reported under com-ssm-2023-09 and paper.",
       source=WLL2024 + ", Def. 3.4-3.5, Sec. 4; " + STABLESSM + "; radarFudan/"
              "Curse-of-memory (scripts/lf_all.sh, src/perturb.py)",
       group="curse of memory", protocols=_protocols)
@smoke_inconclusive
def check_protocol_tables(ctx: Context) -> Evidence:
    metrics: dict = {"protocols": {}}
    details = ["Each protocol's cells (row / target): the verdict of `blowup_verdict` at the "
               "level |y|^2 (the loss of the zero output), the blow-up radius per width, the "
               "slope of log beta_b on log m with its 95% bootstrap interval, and the ensure "
               "rule's ratios of consecutive widths' validation losses (factor 0.5; a cell "
               "with a failed ratio is `training_failed`, not a verdict).", ""]
    verdicts = {}
    for p in _protocols(ctx):
        cells = cell_results(ctx.results(p), seed=ctx.seed)
        comp = {f"{r}/{t}": _compare(c["verdict"], SEED_TABLE[r][t])
                for (r, t), c in cells.items()}
        # training_failed counts as inconclusive for the table's verdict
        verdicts[p.name] = table_verdict({k: (v if v in ("match", "DIFFERS")
                                              else "inconclusive") for k, v in comp.items()})
        metrics["protocols"][p.name] = {
            "verdict": verdicts[p.name], "comparison": comp,
            "cells": {f"{r}/{t}": cell_line(c) for (r, t), c in cells.items()}}
        details += [f"### {p.name}: {verdicts[p.name]}", "", markdown_table(cells), ""]
    verdict = verdicts["com-original"]
    summary = "; ".join(f"{n}: {v}" for n, v in verdicts.items())
    return Evidence(verdict, summary=summary, metrics=metrics, details="\n".join(details))
