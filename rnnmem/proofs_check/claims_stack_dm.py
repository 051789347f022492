r"""The Das & Mali claims re-measured under DeepMind's protocol ``dm``.

A reading of the runs of the built-in protocol ``dm`` (:mod:`rnnmem.experiments.builtin_dm`:
stack RNNs with an LSTM controller on DeepMind's deterministic-context-free transductions,
trained on lengths 1..40, every memory x freezing mode), added beside the bins-based
reading of ``frozen-memory-length-generalisation``. For each task, memory, freezing mode
and stack depth (the sequence length, and DeepMind's fixed 30; the nondeterministic stack
has no depth to fix):

* the per-length accuracy curve (masked per-token accuracy, Delétang et al. 2023), mean over
  seeds with the mean of the seeds' 95% bands;
* DeepMind's score, :math:`\mathrm{score} = \frac{1}{|\mathcal N|}\sum_{n\in\mathcal N}
  \mathrm{acc}(n)` over the test lengths :math:`\mathcal N = 41..N`;
* Das & Mali's (2024, arXiv:2410.03154) retained-performance ratio
  :math:`\rho = \mathrm{score}(41..N) / \mathrm{score}(1..40)`, the same per-token masked
  accuracy on the training lengths in the denominator.

Every number states the protocol and budget it comes from.
"""

from __future__ import annotations

import numpy as np

__all__ = ["dm_protocol_at", "dm_reading", "dm_table", "dm_verdict", "SOLVED", "RETAINED"]

#: DeepMind's threshold for a task solved (score above 90%, Deletang et al. 2023, Sec. 5),
#: applied here to the training lengths: a cell below it did not learn the task
SOLVED = 0.9
#: Das & Mali's "about 90% kept": the frozen cell's retained ratio must reach it (as the
#: bins reading's ``RETAIN_TARGET``)
RETAINED = 0.85


def dm_protocol_at(budget: str):
    """The ``dm`` protocol at a claim budget (the same budget name)."""
    from ..experiments import get_protocol

    return get_protocol("dm").at(budget)


def _cell(run) -> str:
    stack, freeze = run.model_options.get("stack"), run.config.freeze
    return stack if freeze == "none" else f"{stack}+frozen_{freeze}"


def _mean_std(xs) -> dict:
    a = np.asarray([x for x in xs if x == x], dtype=float)
    if a.size == 0:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if a.size > 1 else 0.0,
            "n": int(a.size)}


def dm_table(results) -> dict:
    """``{task: {cell: {depth: {score, train_score, retained, curve}}}}`` from the runs
    of ``dm`` (aggregated over seeds: mean, std, n; ``curve``: lengths, mean accuracy and
    the mean 95% band)."""
    groups: dict = {}
    for r in results:
        if not r.ok:
            continue
        test, train = r.dm_reports("test"), r.dm_reports("train")
        for d, rep in test.items():
            groups.setdefault((r.run.task.split(":", 1)[1], _cell(r.run), d), []).append(
                (rep, train[d]))
    out: dict = {}
    for (task, cell, d), pairs in sorted(groups.items()):
        te = [p[0] for p in pairs]
        tr = [p[1] for p in pairs]
        out.setdefault(task, {}).setdefault(cell, {})[d] = {
            "score": _mean_std(r.score for r in te),
            "train_score": _mean_std(r.score for r in tr),
            "retained": _mean_std(a.score / b.score if b.score > 0 else float("nan")
                                  for a, b in zip(te, tr)),
            "curve": {"lengths": te[0].lengths,
                      "accuracy": np.mean([r.accuracy for r in te], 0).tolist(),
                      "band_lo": np.mean([r.band_lo for r in te], 0).tolist(),
                      "band_hi": np.mean([r.band_hi for r in te], 0).tolist()},
            "k": te[0].k}
    return out


def dm_verdict(table: dict) -> tuple[str, dict]:
    """Das & Mali's freezing claim read under ``dm``: for every task, memory (with a
    frozen variant) and stack depth, the frozen cell (``M+frozen_memory``) against the
    fully trained one (``M``). ``"supports"``: both solve the training lengths (score
    1..40 >= :data:`SOLVED`), the frozen one keeps >= :data:`RETAINED` and more than the
    trained one; ``"contradicts"``: both solve them and the frozen one keeps less than
    :data:`RETAINED` or no more than the trained one; ``"not learned"``: either is below
    :data:`SOLVED` on the training lengths (nothing to generalise). Returns the overall
    verdict (``confirmed`` if some comparison supports and none contradicts, ``refuted`` if
    some contradicts and none supports, else ``inconclusive``) and the comparisons."""
    comps: dict = {}
    for task, cells in table.items():
        for cell, depths in cells.items():
            if "+frozen_memory" not in cell:
                continue
            base = cell.split("+", 1)[0]
            for d, fz in depths.items():
                full = cells.get(base, {}).get(d)
                if full is None:
                    continue
                tf, tt = fz["train_score"]["mean"], full["train_score"]["mean"]
                rf, rt = fz["retained"]["mean"], full["retained"]["mean"]
                if not (tf >= SOLVED and tt >= SOLVED):
                    v = "not learned"
                elif rf >= RETAINED and rf > rt:
                    v = "supports"
                else:
                    v = "contradicts"
                comps[f"{task}/{base}/{d}"] = {
                    "verdict": v, "train_frozen": tf, "train_full": tt,
                    "retained_frozen": rf, "retained_full": rt,
                    "score_frozen": fz["score"]["mean"], "score_full": full["score"]["mean"]}
    vs = {c["verdict"] for c in comps.values()}
    if "supports" in vs and "contradicts" not in vs:
        overall = "confirmed"
    elif "contradicts" in vs and "supports" not in vs:
        overall = "refuted"
    else:
        overall = "inconclusive"
    return overall, comps


def _f(s: dict) -> str:
    if not s or s["n"] == 0:
        return "-"
    return f"{s['mean']:.3f}" + (f" ± {s['std']:.3f}" if s["n"] > 1 else "")


def dm_reading(ctx, claim_id: str, budget: str | None = None
               ) -> tuple[dict, list[str], list[str], str]:
    """Train (or read) the ``dm`` runs at ``budget`` (default ``ctx.budget``) and read
    them: ``(metrics, details lines, figure paths, one-line summary)``."""
    from . import _plot
    from ..experiments.builtin_dm import DM_SIZES

    budget = budget or ctx.budget
    p = dm_protocol_at(budget)
    table = dm_table(ctx.results(p))
    sz = DM_SIZES[budget]
    where = (f"protocol dm, budget {budget}: train 1..40 ({sz['steps']} steps, "
             f"H={sz['width']}), test every length 41..{sz['N']} with k={sz['k']} strings, "
             f"{len(sz['seeds'])} seed(s)")
    rows = []
    for task, cells in table.items():
        for cell, depths in cells.items():
            for d, v in depths.items():
                rows.append(f"| {task} | {cell} | {d} | {_f(v['train_score'])} | "
                            f"{_f(v['score'])} | {_f(v['retained'])} |")
    lines = ["", f"**Under DeepMind's protocol** ({where}). Score = mean masked per-token "
             "accuracy over the test lengths (DeepMind); retained = score(41..N) / "
             "score(1..40) (Das & Mali's ratio, per-token); stack depth `sequence` = the "
             "sequence length, `30` = DeepMind's fixed depth, `none` = no stack. A retained "
             "ratio near 1 with a training score near chance means nothing was learned, not "
             "that the model generalises; read it beside score 1..40.", "",
             "| task | memory (+freezing) | stack depth | score 1..40 | score 41..N | "
             "retained |", "|---|---|---|---|---|---|", *rows]
    verdict, comps = dm_verdict(table)
    counts = {k: sum(1 for c in comps.values() if c["verdict"] == k)
              for k in ("supports", "contradicts", "not learned")}
    lines += ["", f"**Das & Mali's freezing claim under dm: {verdict}** ({counts['supports']} "
              f"comparisons support it, {counts['contradicts']} contradict it, "
              f"{counts['not learned']} have a cell that did not solve the training lengths "
              f"(score 1..40 < {SOLVED:g})). Supports: both cells solve 1..40, the frozen one "
              f"keeps >= {RETAINED:g} and more than the trained one.", "",
              "| task / memory / depth | score 1..40 frozen, trained | retained frozen, "
              "trained | reading |", "|---|---|---|---|",
              *(f"| {k} | {c['train_frozen']:.3f}, {c['train_full']:.3f} | "
                f"{c['retained_frozen']:.3f}, {c['retained_full']:.3f} | {c['verdict']} |"
                for k, c in comps.items())]
    plt = _plot.pyplot()
    tasks = list(table)
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for i, (cell, depths) in enumerate(table[task].items()):
            color = f"C{i % 10}"
            for d, v in depths.items():
                c = v["curve"]
                style = "--" if d not in ("sequence", "none") else "-"
                ax.plot(c["lengths"], c["accuracy"], style, color=color,
                        label=f"{cell} ({d})")
                ax.fill_between(c["lengths"], c["band_lo"], c["band_hi"], color=color,
                                alpha=0.15)
        ax.set_title(f"dm:{task}")
        ax.set_xlabel("test length")
        ax.set_ylim(-0.05, 1.05)
    axes[0][0].set_ylabel("masked per-token accuracy (dm)")
    axes[0][-1].legend(fontsize=6)
    path, rel = ctx.figure_path(claim_id, "dm-accuracy-by-length")
    _plot.save(fig, path)
    ret = {}
    for cells in table.values():
        for cell, depths in cells.items():
            for d, v in depths.items():
                ret.setdefault(f"{cell} ({d})", []).append(v["retained"]["mean"])
    summary = f"dm protocol: freezing claim {verdict} ({counts['supports']} support, " \
        f"{counts['contradicts']} contradict, {counts['not learned']} not learned); " \
        "mean retained over tasks: " + ", ".join(
        f"{k} {np.nanmean(v):.2f}" for k, v in ret.items()
        if k.startswith(("superposition", "none")))
    metrics = {"protocol": "dm", "budget": budget, "sizes": {
        k: (list(v) if isinstance(v, tuple) else v) for k, v in sz.items()},
        "per_task": table, "freezing_verdict": verdict, "freezing_comparisons": comps}
    return metrics, lines, [rel], summary
