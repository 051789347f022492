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
from .common import SEED_TABLE, STABLESSM, WLL2024, smoke_inconclusive, table_verdict
from .protocols import PROTOCOL_NAMES, build_protocol, cell_line, cell_results, markdown_table

#: the budgets of ``rnnmem verify`` -> the protocols' budgets
_BUDGETS = {"smoke": "smoke", "quick": "quick", "full": "full"}


def _protocols(ctx: Context) -> list:
    return [build_protocol(n).at(_BUDGETS[ctx.budget]) for n in PROTOCOL_NAMES]


def _compare(measured: str, seed: str) -> str:
    if measured in ("inconclusive", "training_failed"):
        return measured
    return "match" if measured == seed else "DIFFERS"


def protocol_view(ctx: Context, p) -> tuple[dict, str, dict]:
    """One protocol's seed table: ``(cells, verdict, metrics entry)`` (a training_failed
    cell counts as inconclusive for the table's verdict)."""
    cells = cell_results(ctx.results(p), seed=ctx.seed)
    comp = {f"{r}/{t}": _compare(c["verdict"], SEED_TABLE[r][t])
            for (r, t), c in cells.items()}
    verdict = table_verdict({k: (v if v in ("match", "DIFFERS") else "inconclusive")
                             for k, v in comp.items()})
    return cells, verdict, {"verdict": verdict, "comparison": comp,
                            "cells": {f"{r}/{t}": cell_line(c) for (r, t), c in cells.items()}}


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
        cells, verdicts[p.name], metrics["protocols"][p.name] = protocol_view(ctx, p)
        details += [f"### {p.name}: {verdicts[p.name]}", "", markdown_table(cells), ""]
    verdict = verdicts["com-original"]
    summary = "; ".join(f"{n}: {v}" for n, v in verdicts.items())
    return Evidence(verdict, summary=summary, metrics=metrics, details="\n".join(details))


# ======================================================================================
# curse-of-memory-table at the medium budget: every protocol, its figures, the ablation
# ======================================================================================
#: the protocol whose table is the published one, and the one ablated
ABLATED = "com-original"


def medium_protocols(ctx: Context) -> list:
    """What ``curse-of-memory-table`` reads at ``medium``: the three protocols and the
    one-factor variants of :data:`ABLATED` (one sweep: runs shared between them, and
    trainings shared between variants that change only the evaluation, are done once)."""
    from .ablation import ablation_variants

    variants = ablation_variants(ABLATED, budget=ctx.budget)
    return [build_protocol(n).at(ctx.budget) for n in PROTOCOL_NAMES] + [
        p for f, (_, p) in variants.items() if f != "base" and p is not None]


def _plot_range(curves: dict, level: float | None) -> tuple[float, float]:
    """The drawn range of E_m(beta): from a tenth of the smallest positive value to 1e4 x
    the level (blow-ups, infinities and overflowing values are drawn at that cap, as the
    original's figures end where the error explodes)."""
    import numpy as np

    vals = np.concatenate([np.asarray(c.envelope, float) for c in curves.values()])
    pos = vals[np.isfinite(vals) & (vals > 0)]
    lo = float(pos.min()) / 10 if pos.size else 1e-12
    top = level if level and np.isfinite(level) and level > 0 else (
        float(pos.max()) if pos.size else 1.0)
    cap = max(1e4 * top, lo * 100)
    return max(lo, 1e-300), min(cap, 1e300)


def plot_protocol(ctx: Context, claim_id: str, name: str, cells: dict) -> str:
    """The original's PerturbationError figure for every cell of one protocol: E_m(beta)
    (the envelope) against beta on log-log axes, one curve per width, the level |y|^2 of
    the blow-up rule dashed, blow-up radii as ticks, the intersections of consecutive
    widths' curves (the original's reading) as circles. Returns the report path."""
    import numpy as np

    from .. import _plot

    plt = _plot.pyplot()
    keys = list(cells)
    rows = sorted({r for r, _ in keys}, key=[r for r, _ in keys].index)
    targets = sorted({t for _, t in keys})
    fig, axes = plt.subplots(len(rows), len(targets), squeeze=False,
                             figsize=(4.2 * len(targets), 2.9 * len(rows)))
    for i, row in enumerate(rows):
        for j, target in enumerate(targets):
            ax = axes[i][j]
            cell = cells.get((row, target))
            ax.set_title(f"{name}: {row} / {target} -> {cell['verdict'] if cell else '-'}",
                         fontsize=8)
            if not cell or not cell["curves"]:
                continue
            curves = cell["curves"]
            v = cell["stability"] or cell.get("unruled")
            lo, cap = _plot_range(curves, v.level if v is not None else None)
            for k, (m, c) in enumerate(sorted(curves.items())):
                env = np.clip(np.where(np.isnan(c.envelope), cap, c.envelope), lo, cap)
                ax.loglog(c.betas, env, "-", color=f"C{k}", lw=1.2, label=f"m={m}")
            ax.set_ylim(lo / 2, cap * 2)
            if v is not None:
                ax.axhline(v.level, color="k", lw=0.6, ls="--")
                for k, (m, b) in enumerate(zip(v.widths, v.beta0)):
                    if np.isfinite(b):
                        ax.axvline(b, color=f"C{k}", lw=0.5, ls=":")
                for it in v.intersections:
                    if it.kind != "crossing" or int(it.narrow) not in curves:
                        continue
                    c = curves[int(it.narrow)]
                    y = float(np.exp(np.interp(np.log(it.beta), np.log(c.betas),
                                               np.log(np.clip(c.envelope, lo, cap)))))
                    ax.plot([it.beta], [y], "o", mfc="none", mec="k", ms=6)
            ax.tick_params(labelsize=7)
            if i == len(rows) - 1:
                ax.set_xlabel("beta", fontsize=8)
            if j == 0:
                ax.set_ylabel("E_m(beta)", fontsize=8)
            ax.legend(fontsize=6)
    path, rel = ctx.figure_path(claim_id, f"perturbation-error-{name}")
    _plot.save(fig, path)
    return rel


def factor_answer(ab: dict) -> tuple[list[str], dict]:
    """Which single factor turns each polynomial cell of the ablated protocol into the
    published "unstable" while its exponential cell stays "stable": per row, the factors
    (by the ruled verdict and by the verdict without the ensure rule). Returns (markdown
    lines, metrics)."""
    variants = ab["variants"]
    rows = sorted({k.split("/")[0] for k in variants["base"]["cells"]})
    out: dict = {}
    lines = ["| row | base: polynomial, exponential | factors giving polynomial unstable and "
             "exponential stable (ruled) | ... without the ensure rule |",
             "|---|---|---|---|"]
    for row in rows:
        found = {"ruled": [], "unruled": []}
        for f, v in variants.items():
            if f == "base" or v["cells"] is None:
                continue
            poly, exp = v["cells"].get(f"{row}/polynomial"), v["cells"].get(
                f"{row}/exponential")
            if poly is None or exp is None:
                continue
            if poly["verdict"] == "unstable" and exp["verdict"] == "stable":
                found["ruled"].append(f)
            if (poly["verdict_without_rule"] == "unstable"
                    and exp["verdict_without_rule"] == "stable"):
                found["unruled"].append(f)
        b = variants["base"]["cells"]
        bp, be = b.get(f"{row}/polynomial", {}), b.get(f"{row}/exponential", {})
        base = (f"{bp.get('verdict', '-')} ({bp.get('verdict_without_rule', '-')}), "
                f"{be.get('verdict', '-')} ({be.get('verdict_without_rule', '-')})")
        out[row] = {**found, "base": base}
        lines.append(f"| {row} | {base} | {', '.join(found['ruled']) or 'none'} | "
                     f"{', '.join(found['unruled']) or 'none'} |")
    return lines, out


def check_medium(ctx: Context, claim_id: str) -> Evidence:
    """``curse-of-memory-table`` at ``medium``: the seed table under every protocol (the
    verdict is ``com-original``'s), the PerturbationError figures, and the ablation of
    ``com-original`` with the factors that reproduce the published polynomial row."""
    from .ablation import FACTORS, ablation_markdown, run_ablation

    ctx.results(*medium_protocols(ctx))  # one sweep (cached when already done)
    metrics: dict = {"protocols": {}, "budget": ctx.budget}
    details = [f"**Budget `{ctx.budget}`: the seed table under each protocol** (sizes: "
               f"`rnnmem.proofs_check.curse.protocols.SIZES[{ctx.budget!r}]`). Per cell: the "
               "verdict of `blowup_verdict` at the level |y|^2 with the ensure rule (factor "
               "0.5; a width that failed it makes the cell `training_failed`), beside it the "
               "same rule with the ensure rule left out (what the curves say if the family "
               "is taken as approximating; never the cell's verdict), the blow-up radius per "
               "width, the slope of log beta_b on log m with its 95% bootstrap interval, "
               "and the ratios of consecutive widths' validation losses.", ""]
    figs, verdicts = [], {}
    for name in PROTOCOL_NAMES:
        cells, verdicts[name], metrics["protocols"][name] = protocol_view(
            ctx, build_protocol(name).at(ctx.budget))
        figs.append(plot_protocol(ctx, claim_id, name, cells))
        details += [f"### {name}: {verdicts[name]}", "", markdown_table(cells), "",
                    f"Figure: `{figs[-1]}` (log-log E_m(beta), one curve per width; dashed: "
                    "the level; dotted: blow-up radii; circles: intersections of "
                    "consecutive widths' curves).", ""]
    ab = run_ablation(ABLATED, FACTORS, budget=ctx.budget, store=ctx.run_store(),
                      executor=ctx.executor, jobs=ctx.jobs, seed=ctx.seed)
    answer_lines, answer = factor_answer(ab)
    metrics["ablation"] = ab
    metrics["factor_answer"] = answer
    details += [f"### Ablation of `{ABLATED}`", "", ablation_markdown(ab), "",
                "Which single factor reproduces the published row (polynomial unstable, "
                "exponential stable); base verdicts as ruled (without the rule):", "",
                *answer_lines]
    verdict = verdicts[ABLATED]
    summary = ("; ".join(f"{n}: {v}" for n, v in verdicts.items()) + "; factors giving the "
               "published polynomial row (without the ensure rule): " + ", ".join(
                   f"{r}: {'/'.join(a['unruled']) or 'none'}" for r, a in answer.items()))
    return Evidence(verdict, summary=summary, metrics=metrics, figures=figs,
                    details="\n".join(details))
