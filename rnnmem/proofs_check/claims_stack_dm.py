r"""The Das & Mali claims re-measured under DeepMind's protocol ``dm``.

A reading of the runs of the built-in protocol ``dm`` (:mod:`rnnmem.experiments.builtin_dm`:
stack RNNs with an LSTM controller on DeepMind's deterministic-context-free transductions,
trained on lengths 1..40, every memory x freezing mode), added beside the bins-based
reading of ``frozen-memory-length-generalisation``. For each task, memory, freezing mode,
training stack depth and test stack depth (each the sequence length or DeepMind's fixed
30; the nondeterministic stack has no depth to fix; a cell trained at 30 is named
``M@30``):

* the per-length accuracy curve (masked per-token accuracy, Delétang et al. 2023), mean over
  seeds with the mean of the seeds' 95% bands;
* DeepMind's score, :math:`\mathrm{score} = \frac{1}{|\mathcal N|}\sum_{n\in\mathcal N}
  \mathrm{acc}(n)` over the test lengths :math:`\mathcal N = 41..N`;
* Das & Mali's (2024, arXiv:2410.03154) retained-performance ratio
  :math:`\rho = \mathrm{score}(41..N) / \mathrm{score}(1..40)`, the same per-token masked
  accuracy on the training lengths in the denominator.

Two more readings of the same runs, for Das & Mali's other stack claims:

* :func:`dm_precision_reading` (``precision-dependence``): the fully trained cells' weights
  run in float64, float32, bfloat16 and float16, DeepMind's score per precision and its
  drop from float64, on a subset of the test lengths and of the training lengths;
* :func:`dm_memory_reading` (``stack-memory-function``): the temporal Jacobian profile
  :math:`J(\tau) = \mathrm E\,\|\partial h_T/\partial x_{T-\tau}\|_F` of every cell's
  weights run in float64, on task tapes at the longest training length, its exponential
  decay rate, and frozen-memory against fully trained cells.

Every number states the protocol and budget it comes from.
"""

from __future__ import annotations

import math

import numpy as np

from ._threads import one_thread

__all__ = ["dm_protocol_at", "dm_reading", "dm_table", "dm_verdict", "SOLVED", "RETAINED",
           "dm_cells_at", "dm_precision_reading", "dm_precision_table", "dm_memory_reading",
           "dm_memory_table", "dm_memory_comparisons", "every_nth", "PRECISION_DTYPES"]

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
    """The run's memory, ``@D`` when it was trained at a fixed stack depth D, and
    ``+frozen_<mode>`` when frozen: ``superposition@30+frozen_memory``."""
    stack, freeze = run.model_options.get("stack"), run.config.freeze
    depth = run.model_options.get("stack_depth")
    if depth is not None and depth != "sequence" and stack != "none":
        stack = f"{stack}@{depth}"
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
            "score_hw": float(np.mean([_score_halfwidth(r) for r in te])),
            "train_hw": float(np.mean([_score_halfwidth(r) for r in tr])),
            "curve": {"lengths": te[0].lengths,
                      "accuracy": np.mean([r.accuracy for r in te], 0).tolist(),
                      "band_lo": np.mean([r.band_lo for r in te], 0).tolist(),
                      "band_hi": np.mean([r.band_hi for r in te], 0).tolist()},
            "k": te[0].k}
    return out


def _score_halfwidth(rep) -> float:
    """95% half-width of a DeepMind score (a mean over lengths of independent per-length
    estimates): :math:`\\sqrt{\\sum_n h_n^2} / N` with :math:`h_n` the half-width of length
    :math:`n`'s band."""
    h = (np.asarray(rep.band_hi, float) - np.asarray(rep.band_lo, float)) / 2
    return float(np.sqrt(np.sum(h ** 2)) / max(h.size, 1))


def _retained_margin(fz: dict, full: dict) -> float:
    """95% half-width of the difference of two retained ratios, each
    :math:`\\rho = s/s_{train}` with its relative half-width from its two scores'."""
    def hw(c):
        s, t, r = c["score"]["mean"], c["train_score"]["mean"], c["retained"]["mean"]
        if not (s > 0 and t > 0):
            return float("inf")
        return abs(r) * math.hypot(c.get("score_hw", 0.0) / s, c.get("train_hw", 0.0) / t)
    return math.hypot(hw(fz), hw(full))


def dm_verdict(table: dict) -> tuple[str, dict]:
    """Das & Mali's freezing claim read under ``dm``: for every task, memory (with a
    frozen variant; trained at one stack depth) and test stack depth, the frozen cell
    (``M+frozen_memory``) against the fully trained one (``M``), with ``margin`` the 95%
    half-width of the difference of their retained ratios (from the per-length bands,
    :func:`_retained_margin`):

    ``"not learned"``: either is below :data:`SOLVED` on the training lengths (nothing to
    generalise); ``"supports"``: the frozen one keeps >= :data:`RETAINED` and more than the
    trained one by more than the margin; ``"contradicts"``: it keeps less than the trained
    one by more than the margin; ``"no difference"``: within the margin; ``"better, below
    target"``: more than the trained one but less than :data:`RETAINED`. Returns the overall
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
                margin = _retained_margin(fz, full)
                if not (tf >= SOLVED and tt >= SOLVED):
                    v = "not learned"
                elif abs(rf - rt) <= margin:
                    v = "no difference"
                elif rf < rt:
                    v = "contradicts"
                else:
                    v = "supports" if rf >= RETAINED else "better, below target"
                comps[f"{task}/{base}/{d}"] = {
                    "verdict": v, "train_frozen": tf, "train_full": tt,
                    "retained_frozen": rf, "retained_full": rt, "margin": margin,
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
             "score(1..40) (Das & Mali's ratio, per-token); stack depth (in test) "
             "`sequence` = the sequence length, `30` = DeepMind's fixed depth, `none` = no "
             "stack; a memory written `M@30` was trained at depth 30 (DeepMind's own "
             "training setting), the others at the sequence length. A retained "
             "ratio near 1 with a training score near chance means nothing was learned, not "
             "that the model generalises; read it beside score 1..40.", "",
             "| task | memory (+freezing) | stack depth | score 1..40 | score 41..N | "
             "retained |", "|---|---|---|---|---|---|", *rows]
    verdict, comps = dm_verdict(table)
    counts = {k: sum(1 for c in comps.values() if c["verdict"] == k)
              for k in ("supports", "contradicts", "no difference", "better, below target",
                        "not learned")}
    lines += ["", f"**Das & Mali's freezing claim under dm: {verdict}** ({counts['supports']} "
              f"comparisons support it, {counts['contradicts']} contradict it, "
              f"{counts['no difference']} show no difference beyond the margin, "
              f"{counts['better, below target']} keep more when frozen but less than "
              f"{RETAINED:g}, {counts['not learned']} have a cell that did not solve the "
              f"training lengths (score 1..40 < {SOLVED:g})). Supports: both cells solve "
              f"1..40 and the frozen one keeps >= {RETAINED:g} and more than the trained one "
              "by more than the margin (the 95% half-width of the difference of the retained "
              "ratios, from the per-length bands).", "",
              "| task / memory / depth | score 1..40 frozen, trained | retained frozen, "
              "trained | margin | reading |", "|---|---|---|---|---|",
              *(f"| {k} | {c['train_frozen']:.3f}, {c['train_full']:.3f} | "
                f"{c['retained_frozen']:.3f}, {c['retained_full']:.3f} | {c['margin']:.3f} | "
                f"{c['verdict']} |" for k, c in comps.items())]
    def draw(ax, task):
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

    rel = _task_panels(ctx, claim_id, "dm-accuracy-by-length", list(table), draw,
                       "masked per-token accuracy (dm)")
    ret = {}
    for cells in table.values():
        for cell, depths in cells.items():
            for d, v in depths.items():
                ret.setdefault(f"{cell} ({d})", []).append(v["retained"]["mean"])
    summary = f"dm protocol: freezing claim {verdict} ({counts['supports']} support, " \
        f"{counts['contradicts']} contradict, {counts['no difference']} no difference, " \
        f"{counts['not learned']} not learned); " \
        "mean retained over tasks: " + ", ".join(
        f"{k} {np.nanmean(v):.2f}" for k, v in ret.items()
        if k.startswith(("superposition", "none")))
    metrics = {"protocol": "dm", "budget": budget, "sizes": {
        k: (list(v) if isinstance(v, tuple) else v) for k, v in sz.items()},
        "per_task": table, "freezing_verdict": verdict, "freezing_comparisons": comps}
    return metrics, lines, [rel], summary


# ============================================================================ shared
def dm_cells_at(budget: str, freeze: str | None = None, train_depth: str | int | None = None):
    """The ``dm`` protocol at ``budget``, restricted to the memory x freezing x training
    depth cells with freezing mode ``freeze`` and training depth ``train_depth``
    (``None``: every one)."""
    from ..experiments.builtin_dm import DM_AXIS, DM_CELLS

    p = dm_protocol_at(budget)
    if freeze is None and train_depth is None:
        return p
    return p.vary(**{DM_AXIS: [list(c) for c in DM_CELLS
                               if (freeze is None or c[1] == freeze)
                               and (train_depth is None or c[2] == train_depth)]})


def every_nth(lengths, every: int) -> tuple[int, ...]:
    """Every ``every``-th of the sorted ``lengths`` (a task's valid lengths: every 5th of
    41..60 is 41, 46, 51, 56, 60), the first and the last always kept."""
    from ..errors import InvalidParameterError

    ls = sorted(int(n) for n in lengths)
    if not ls or isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise InvalidParameterError(f"every_nth needs lengths and every >= 1, got "
                                    f"{len(ls)} lengths, every={every!r}")
    out = ls[::every]
    return tuple(out if out[-1] == ls[-1] else [*out, ls[-1]])


def _trained_where(budget: str) -> str:
    from ..experiments.builtin_dm import DM_SIZES

    sz = DM_SIZES[budget]
    return (f"protocol dm, budget {budget}: trained on {sz['train_lengths'].replace(':', '..')} "
            f"({sz['steps']} steps, H={sz['width']}), {_seeds(budget)}")


def _dm_setup(r) -> tuple:
    """``(transduction, test lengths, training lengths, k)`` of a ``dm`` run's stored
    evaluation (``evaluate.dm``)."""
    from ..errors import InvalidParameterError
    from ..tasks.transduction_task import transduction_lengths
    from ..tasks.transductions import get_transduction

    dm = r.run.evaluate.dm
    if not dm:
        raise InvalidParameterError(f"run {r.run.short} has no evaluate.dm to read")
    t = get_transduction(_task(r))
    return (t, transduction_lengths(t, dm["lengths"]),
            transduction_lengths(t, dm["train_lengths"]), int(dm["k"]))


def _at_sequence_depth(model):
    """``model`` with its stack as deep as the sequence (the ``"sequence"`` depth)."""
    from ..train.length_protocols import model_with_stack_depth

    if getattr(model, "stack_depth", None) is None:
        return model
    return model_with_stack_depth(model, None)


def _task(r) -> str:
    return r.run.task.split(":", 1)[1]


# ============================================================================ precision
#: the evaluation precisions of :func:`dm_precision_reading` (float64: the reference)
PRECISION_DTYPES = ("float64", "float32", "bfloat16", "float16")
#: its cost bounds: at most ``PRECISION_K`` strings per length, every ``PRECISION_EVERY``-th
#: length (first and last kept), stack depth ``"sequence"`` only. Timed on 2 shared CPU
#: cores: 33-37 s at quick (16 runs), 265 s at medium (most of it the nondeterministic stack
#: on reverse_string and stack_manipulation, tapes up to 200 steps; its float32 pass is about
#: 3x slower than float64 there: subnormal numbers, gone with ``torch.set_flush_denormal``,
#: which is not used here since it changes float32 arithmetic)
PRECISION_K = 16
PRECISION_EVERY = 5
#: what a CPU without a kernel for a dtype raises (reported as unsupported, not upcast)
_UNSUPPORTED = (RuntimeError, NotImplementedError, TypeError)


def _scores_by_dtype(r, every: int, k_max: int) -> tuple[dict, dict, dict]:
    """One run's DeepMind score in each precision of :data:`PRECISION_DTYPES`:
    ``({dtype: {score, train_score, nonfinite, accuracy}}, {dtype: why unsupported},
    {test, train, k: what was evaluated})``."""
    from ..train.evaluate import model_in_dtype
    from ..train.length_protocols import evaluate_dm

    t, test, train, k = _dm_setup(r)
    test, train, k = every_nth(test, every), every_nth(train, every), min(k, k_max)
    model = _at_sequence_depth(r.model().eval())
    out, bad = {}, {}
    for dt in PRECISION_DTYPES:
        try:
            m = model_in_dtype(model, dt)
            te = evaluate_dm(m, t, test, k, r.run.seed)
            tr = evaluate_dm(m, t, train, k, r.run.seed)
        except _UNSUPPORTED as exc:
            bad[dt] = f"{type(exc).__name__}: {exc}"
            continue
        out[dt] = {"score": te.score, "train_score": tr.score,
                   "nonfinite": te.nonfinite + tr.nonfinite, "accuracy": te.accuracy}
    return out, bad, {"test": list(test), "train": list(train), "k": k}


def dm_precision_table(results, every: int = PRECISION_EVERY, k_max: int = PRECISION_K
                       ) -> tuple[dict, dict, dict]:
    """The fully trained cells (freezing mode ``none``) of ``dm`` runs in each precision:
    ``({task: {cell: {dtype: {score, train_score, drop, train_drop, nonfinite}}}},
    {dtype: why unsupported}, {task: lengths and k evaluated})``; scores and drops
    (``score(float64) - score(dtype)``, paired per seed) aggregated over seeds."""
    per, bad, choices = {}, {}, {}
    with one_thread():
        for r in results:
            if not r.ok or r.run.config.freeze != "none":
                continue
            scores, why, chosen = r.derived(
                "dm-precision", {"every": every, "k_max": k_max, "dtypes": PRECISION_DTYPES,
                                 "version": 1},
                lambda r=r: list(_scores_by_dtype(r, every, k_max)))
            bad.update(why)
            choices[_task(r)] = chosen
            per.setdefault((_task(r), _cell(r.run)), []).append(scores)
    table: dict = {}
    for (task, cell), runs in sorted(per.items()):
        row = table.setdefault(task, {}).setdefault(cell, {})
        for dt in PRECISION_DTYPES:
            have = [s for s in runs if dt in s]
            ref = [s.get("float64", {}) for s in have]
            row[dt] = {
                "score": _mean_std(s[dt]["score"] for s in have),
                "train_score": _mean_std(s[dt]["train_score"] for s in have),
                "drop": _mean_std(f.get("score", np.nan) - s[dt]["score"]
                                  for f, s in zip(ref, have)),
                "train_drop": _mean_std(f.get("train_score", np.nan) - s[dt]["train_score"]
                                        for f, s in zip(ref, have)),
                "nonfinite": int(sum(s[dt]["nonfinite"] for s in have))}
    return table, bad, choices


def _mean_drops(table: dict) -> dict:
    """``{dtype: {test, train}}``: the drops from float64 averaged over tasks and the
    stack memories (the memory-less control left out)."""
    out = {}
    for dt in PRECISION_DTYPES:
        rows = [c[dt] for cells in table.values() for cell, c in cells.items()
                if cell != "none"]
        out[dt] = {w: float(np.nanmean([r[key]["mean"] for r in rows])) if rows
                   else float("nan") for w, key in (("test", "drop"), ("train", "train_drop"))}
    return out


def _task_panels(ctx, claim_id: str, name: str, tasks: list, draw, ylabel: str) -> str:
    """One panel per task in a row, ``draw(ax, task)`` filling each; the first panel's
    y label, the last one's legend; saved as figure ``name`` of the claim (relative path
    returned)."""
    from . import _plot

    plt = _plot.pyplot()
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        draw(ax, task)
    axes[0][0].set_ylabel(ylabel)
    axes[0][-1].legend(fontsize=6)
    path, rel = ctx.figure_path(claim_id, name)
    _plot.save(fig, path)
    return rel


def _precision_figure(ctx, claim_id: str, table: dict, budget: str) -> str:
    xs = range(len(PRECISION_DTYPES))

    def draw(ax, task):
        for i, (cell, row) in enumerate(table[task].items()):
            for key, style, which in (("drop", "-o", "test"), ("train_drop", "--x", "train")):
                ax.plot(xs, [row[dt][key]["mean"] for dt in PRECISION_DTYPES], style,
                        color=f"C{i % 10}", label=f"{cell} ({which} lengths)")
        ax.axhline(0.0, color="0.6", lw=0.8)
        ax.set_xticks(list(xs), PRECISION_DTYPES)
        ax.set_title(f"dm:{task} ({budget})")
        ax.set_xlabel("evaluation precision (same float32-trained weights)")

    return _task_panels(ctx, claim_id, "dm-precision", list(table), draw,
                        "score(float64) - score(dtype)")


def dm_precision_reading(ctx, claim_id: str, budget: str | None = None
                         ) -> tuple[dict, list[str], list[str], str]:
    """Das & Mali's precision claim read under ``dm`` at ``budget`` (default
    ``ctx.budget``): the fully trained cells' weights run in each precision of
    :data:`PRECISION_DTYPES`; ``(metrics, details lines, figure paths, summary)``."""
    import time

    from ..experiments.builtin_dm import DM_SIZES

    budget = budget or ctx.budget
    results = ctx.results(dm_cells_at(budget, "none", "sequence"))
    t0 = time.perf_counter()
    table, bad, choices = dm_precision_table(results)
    seconds = time.perf_counter() - t0
    k = next(iter(choices.values()))["k"] if choices else min(DM_SIZES[budget]["k"], PRECISION_K)
    where = (f"{_trained_where(budget)}; evaluated on every {PRECISION_EVERY}th test length "
             f"and every {PRECISION_EVERY}th training length (first and last kept: "
             + "; ".join(f"{t}: {c['test']}, {c['train']}" for t, c in choices.items())
             + f"), k = min(k, {PRECISION_K}) = {k} strings per length, stack depth "
             "`sequence` only, in training and in test")
    rows = [f"| {task} | {cell} | {dt} | {_f(v['train_score'])} | {_f(v['score'])} | "
            f"{_f(v['train_drop'])} | {_f(v['drop'])} | {v['nonfinite']} |"
            for task, cells in table.items() for cell, row in cells.items()
            for dt, v in row.items()]
    lines = ["", f"**Under DeepMind's protocol** ({where}). The fully trained cells' "
             "float32-trained weights run in each precision (weights rounded, every "
             "operation in that dtype); score = mean masked per-token accuracy over the "
             "lengths evaluated (DeepMind's score on that subset); drop = score(float64) - "
             "score(dtype), paired per seed; `none` = the memory-less control.", "",
             "| task | memory | eval dtype | score (training lengths) | score (test lengths) "
             "| drop (training) | drop (test) | non-finite |", "|---" * 8 + "|", *rows,
             *([f"Unsupported on CPU (protocol dm): "
                + "; ".join(f"{d}: {w}" for d, w in bad.items())] if bad else [])]
    mean = _mean_drops(table)
    solved = [(t, c) for t, cells in table.items() for c, row in cells.items()
              if row["float64"]["train_score"]["mean"] >= SOLVED]
    n_cells = sum(len(cells) for cells in table.values())
    lines += ["", f"{len(solved)} of {n_cells} cells solve the training lengths (float64 "
              f"score >= {SOLVED:g}, DeepMind's threshold); a drop on a cell that did not "
              "learn the task says little about precision."]
    summary = (f"dm protocol ({budget}, {_seeds(budget)}; {len(solved)} of {n_cells} cells "
               "solve the training lengths): score drop from float64 on the "
               "test lengths, mean over tasks and stack memories: " + ", ".join(
                   f"{dt} {mean[dt]['test']:+.3f}" for dt in PRECISION_DTYPES[1:])
               + " (training lengths: " + ", ".join(
                   f"{dt} {mean[dt]['train']:+.3f}" for dt in PRECISION_DTYPES[1:]) + ")")
    fig = _precision_figure(ctx, claim_id, table, budget)
    metrics = {"protocol": "dm", "budget": budget, "evaluated": {
        "every": PRECISION_EVERY, "k": k, "stack_depth": "sequence", "lengths": choices},
        "per_task": table, "mean_drop": mean, "unsupported_on_cpu": bad,
        "solved": [f"{t}/{c}" for t, c in solved],
        "timing": {"evaluation_s": round(seconds, 2), "runs": len(results)}}
    return metrics, lines, [fig], summary


def _seeds(budget: str) -> str:
    from ..experiments.builtin_dm import DM_SIZES

    n = len(DM_SIZES[budget]["seeds"])
    return f"{n} seed{'s' if n > 1 else ''}"


# ============================================================================ memory
#: strings per run of :func:`dm_memory_reading` (one backward pass per chunk of strings)
JACOBIAN_STRINGS = 4


def _jacobian_of(r, strings: int) -> tuple[np.ndarray, int]:
    """``(J(tau), n)``: the temporal Jacobian profile of one run's weights run in float64,
    on ``strings`` tapes of the longest training length ``n`` (drawn as ``evaluate_dm``
    draws them: ``default_rng([seed, n])``)."""
    import torch

    from ..tasks.transduction_task import tape
    from ..train.evaluate import model_in_dtype
    from ._jacobian import temporal_jacobian

    t, _, train, _ = _dm_setup(r)
    n = max(train)
    model = _at_sequence_depth(model_in_dtype(r.model().eval(), "float64"))
    b = t.sample_batch(np.random.default_rng([int(r.run.seed), n]), strings, n)
    return temporal_jacobian(model, tape(t, b["x"], dtype=torch.float64)), n


def _stored_train_score(r) -> float:
    """The run's stored DeepMind score on the training lengths at the sequence depth."""
    reps = r.dm_reports("train")
    return reps["none" if "none" in reps else "sequence"].score


def dm_memory_table(results, strings: int = JACOBIAN_STRINGS) -> dict:
    """``{task: {cell: {rate, J_tau0, J_end, train_score, curve, length, steps}}}`` of
    ``dm`` runs: the decay rate of J(tau) (fitted per run,
    :func:`~._jacobian.jacobian_decay_rate`), J at both ends and the stored score on the
    training lengths aggregated over seeds; ``curve``: the mean J(tau) over seeds."""
    from ._jacobian import jacobian_decay_rate

    per: dict = {}
    with one_thread():
        for r in results:
            if r.ok:
                j, n = r.derived("dm-jacobian", {"strings": strings, "version": 1},
                                 lambda r=r: list(_jacobian_of(r, strings)))
                per.setdefault((_task(r), _cell(r.run)), []).append(
                    (np.asarray(j, dtype=float), int(n), _stored_train_score(r)))
    table: dict = {}
    for (task, cell), runs in sorted(per.items()):
        curves = np.stack([j for j, _, _ in runs])
        rates = [jacobian_decay_rate(c) for c in curves]
        table.setdefault(task, {})[cell] = {
            "rate": _mean_std(np.nan if v is None else v for v in rates),
            "J_tau0": _mean_std(c[0] for c in curves),
            "J_end": _mean_std(c[-1] for c in curves),
            "train_score": _mean_std(s for _, _, s in runs),
            "curve": curves.mean(0).tolist(), "length": runs[0][1],
            "steps": int(curves.shape[1])}
    return table


def dm_memory_comparisons(table: dict) -> dict:
    """``{"task/memory": {...}}``: for every memory with a frozen cell, the decay rate of
    J(tau) frozen (``M+frozen_memory``) against fully trained (``M``); ``slower``: the
    frozen rate is lower (with several seeds: by more than the sum of the two seed
    standard deviations; with one seed there is no spread to add)."""
    comps = {}
    for task, cells in table.items():
        for cell, fz in cells.items():
            if "+frozen_memory" not in cell:
                continue
            base = cell.split("+", 1)[0]
            full = cells.get(base)
            if full is None:
                continue
            rf, rt = fz["rate"], full["rate"]
            spread = rf["std"] + rt["std"] if min(rf["n"], rt["n"]) > 1 else 0.0
            slower = None if not (rf["n"] and rt["n"]) else bool(
                rt["mean"] - rf["mean"] > spread)
            comps[f"{task}/{base}"] = {"rate_frozen": rf["mean"], "rate_full": rt["mean"],
                                       "spread": spread, "seeds": min(rf["n"], rt["n"]),
                                       "learned": bool(min(fz["train_score"]["mean"],
                                                           full["train_score"]["mean"])
                                                       >= SOLVED),
                                       "slower": slower}
    return comps


def _memory_figure(ctx, claim_id: str, table: dict, budget: str) -> str:
    def draw(ax, task):
        colors: dict = {}
        for cell, v in table[task].items():
            mem = cell.split("+", 1)[0]
            color = colors.setdefault(mem, f"C{len(colors) % 10}")
            c = np.asarray(v["curve"])
            ax.semilogy(np.arange(c.size), np.maximum(c, 1e-300), "--" if "+" in cell else "-",
                        color=color, label=cell)
        ax.set_title(f"dm:{task} ({budget}): ||dh_T/dx_(T-tau)||_F")
        ax.set_xlabel("tau = T - t (tape steps)")

    return _task_panels(ctx, claim_id, "dm-jacobian", list(table), draw, "J(tau), float64")


def dm_memory_reading(ctx, claim_id: str, budget: str | None = None
                      ) -> tuple[dict, list[str], list[str], str]:
    """Das & Mali's "freezing the memory stabilises temporal dependencies" read under
    ``dm`` at ``budget`` (default ``ctx.budget``): temporal Jacobian profiles of every
    cell; ``(metrics, details lines, figure paths, summary)``."""
    import time

    budget = budget or ctx.budget
    results = ctx.results(dm_cells_at(budget, train_depth="sequence"))
    t0 = time.perf_counter()
    table = dm_memory_table(results)
    seconds = time.perf_counter() - t0
    comps = dm_memory_comparisons(table)
    lengths = {task: (next(iter(c.values()))["length"], next(iter(c.values()))["steps"])
               for task, c in table.items()}
    where = (f"{_trained_where(budget)}; J(tau) of the weights run in float64 on "
             f"{JACOBIAN_STRINGS} tapes per run at the longest training length n (input, "
             "then the blanks: T = n + m(n) steps; " + ", ".join(
                 f"{t}: n={n}, T={T}" for t, (n, T) in lengths.items())
             + "), stack depth `sequence`, in training and here")
    rows = [f"| {task} | {cell} | {_f(v['rate'])} | {v['J_tau0']['mean']:.3g} | "
            f"{v['J_end']['mean']:.3g} | {_f(v['train_score'])} |"
            for task, cells in table.items() for cell, v in cells.items()]
    n_slow = sum(1 for c in comps.values() if c["slower"])
    n_learned = sum(1 for c in comps.values() if c["learned"])
    lines = ["", f"**Under DeepMind's protocol** ({where}). Decay rate = -slope of ln J(tau) "
             "on tau >= 1 (the fit of the bins reading); the claim's comparison: frozen "
             "memory decays more slowly than full training (rate frozen < rate full"
             + (", beyond the sum of the seed standard deviations" if any(
                 c["seeds"] > 1 for c in comps.values()) else "; 1 seed, no seed spread")
             + "). A single exponential rate assumes J(tau) decays; where the task's last "
             "output depends on the first input (reverse_string writes x_1 last), a model "
             "that solves it has J(tau) rising again towards tau = T-1 (see the figure), and "
             "the rate is no measure of its memory.", "",
             "| task | memory (+freezing) | decay rate | J(0) | J(T-1) | "
             "score 1..40 (stored) |", "|---|---|---|---|---|---|", *rows, "",
             f"Frozen memory decays more slowly in {n_slow} of {len(comps)} task/memory "
             f"pairs (protocol dm); both cells solve the training lengths (score >= "
             f"{SOLVED:g}) in {n_learned} of them:", "",
             "| task / memory | rate frozen | rate full | frozen slower | both solve 1..40 |",
             "|---|---|---|---|---|",
             *(f"| {k} | {c['rate_frozen']:.4f} | {c['rate_full']:.4f} | "
               f"{'-' if c['slower'] is None else ('yes' if c['slower'] else 'no')} | "
               f"{'yes' if c['learned'] else 'no'} |" for k, c in comps.items())]
    summary = (f"dm protocol ({budget}, {_seeds(budget)}): J(tau) of frozen memory decays "
               f"more slowly than full training in {n_slow} of {len(comps)} task/memory pairs "
               f"(both cells solve the training lengths in {n_learned})")
    fig = _memory_figure(ctx, claim_id, table, budget)
    for cells in table.values():  # curves in the figure, not the metrics
        for v in cells.values():
            v.pop("curve")
    metrics = {"protocol": "dm", "budget": budget, "strings": JACOBIAN_STRINGS,
               "stack_depth": "sequence", "per_task": table, "comparisons": comps,
               "slower": n_slow, "timing": {"evaluation_s": round(seconds, 2),
                                            "runs": len(results)}}
    return metrics, lines, [fig], summary
