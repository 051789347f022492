"""``inverse-approximation`` (Wang, Li & Li, ICLR 2024, Thm. 3.9): the memory functions
of the trained models decay exponentially, whatever the target.

Protocol ``inverse-approximation``: the (row, target) cells of :data:`COMBOS` x widths,
the same runs as ``curse-of-memory-table`` and ``activations-no-relief`` (one store, so
they are trained once). The memory functions are computed here from the stored models
(their time grid depends on each model's slowest mode).
"""

from __future__ import annotations

import math

import numpy as np

from ...experiments import register_protocol
from .._threads import one_thread
from ..registry import Context, Evidence, claim
from .common import (ACTIVATION_ROWS, TABLE_ROWS, TARGET_NAMES, WLL2024, at, curse_protocol,
                     fmt, loglog_slope, sizes, slowest_rate, smoke_inconclusive, trained_runs)


def _model_memory(run, t: np.ndarray) -> tuple[np.ndarray, str]:
    """Memory function of a trained model at times ``t``: closed form for linear models,
    the Def. 3.1 estimator (Heaviside probes, zero-input response subtracted) otherwise.
    Returns (M, note); a model with an eigenvalue outside the stable region is evaluated
    anyway (its memory does not decay) and noted."""
    from ...errors import UnstableSystemError

    mdl = run.model
    linear = bool(mdl.is_linear)
    with one_thread():
        if not linear:
            M = mdl.memory_function(t, method="estimator", baseline=True)
            return np.asarray(M), "estimator"
        try:
            return np.asarray(mdl.memory_function(t)), "closed form"
        except UnstableSystemError:
            return np.asarray(mdl.memory_function(t, require_stable=False)), \
                "closed form, UNSTABLE spectrum"


#: the (row, target) cells whose trained models are read, by budget
COMBOS = {
    "smoke": [(r, t) for r in ("diagonal_rnn", "softplus_ssm") for t in TARGET_NAMES]
    + [("tanh_rnn", "polynomial")],
    "quick": [(r, t) for r in TABLE_ROWS for t in TARGET_NAMES]
    + [("tanh_rnn", "polynomial"), ("hardtanh_rnn", "polynomial")],
    "full": [(r, t) for r in TABLE_ROWS + ACTIVATION_ROWS for t in TARGET_NAMES],
}


@register_protocol("inverse-approximation")
def inverse_protocol():
    """The cells of :data:`COMBOS` x widths: the same runs as the table's and the
    activations' protocols (read from the store when those ran)."""
    return curse_protocol("inverse-approximation", COMBOS,
                          "the trained models of the table and activation cells, whose "
                          "memory functions are classified (Wang, Li & Li 2024, Thm. 3.9)")


def inverse_verdict(discriminates: bool, n_decaying: int, n_polynomial_tails: int) -> str:
    """*inconclusive* unless the classifier discriminates the targets and some model
    decays; then *refuted* if a decaying model has a polynomial tail, else *confirmed*."""
    if not discriminates or not n_decaying:
        return "inconclusive"
    return "refuted" if n_polynomial_tails else "confirmed"


def _protocols(ctx: Context) -> list:
    return [at(inverse_protocol(), ctx)]


@claim("inverse-approximation",
       title="Trained recurrent models have exponentially decaying memory, whatever the target",
       statement="A recurrent model that approximates a target stably has an exponentially "
                 "decaying memory function; in particular the memory functions of models "
                 "trained on a polynomially decaying target decay exponentially (beyond the "
                 "training window), with a rate that shrinks as the width grows.",
       source=WLL2024 + ", Def. 3.1 (memory function), Thm. 3.9 (inverse approximation)",
       group="curse of memory", protocols=_protocols)
@smoke_inconclusive
def _check_inverse(ctx: Context) -> Evidence:
    from ...numerics import classify_decay
    from ...theory.targets import get_target
    from .. import _plot

    s = sizes(ctx)
    combos = COMBOS[ctx.budget]
    runs = trained_runs(ctx.results(*_protocols(ctx)))
    horizon = ctx.pick(smoke=6, quick=8, full=10) * s.length  # steps
    cap_estimator = ctx.pick(smoke=1000, quick=5000, full=20000)
    records, rows_md = [], []
    rates: dict[str, dict[int, list[float]]] = {t: {} for t in TARGET_NAMES}
    curves_for_plot: dict[tuple[str, str], list] = {}
    for row, target in combos:
        for m in s.widths:
            run = runs[(row, target, m)]
            if run.status != "ok":
                records.append({"row": row, "target": target, "width": m, "status": run.status})
                continue
            # the grid must reach the regime of the slowest mode: at least `horizon` steps
            # and 40 time constants of the slowest mode (capped)
            r_slow = slowest_rate(run)
            cap = 20000 if getattr(run.model, "is_linear", False) else cap_estimator
            n_steps = horizon if r_slow <= 0 else int(min(cap, max(
                horizon, math.ceil(40.0 / (r_slow * run.model.dt)))))
            t = run.model.dt * np.arange(n_steps + 1)
            M, how = _model_memory(run, t)
            M = np.asarray(M, dtype=float).reshape(t.shape)
            T_win = run.model.dt * s.length
            # envelope: the running tail supremum, so that a zero crossing of a kernel with
            # mixed-sign modes (a dip of log M) is not read as decay (exact, noise-free M)
            tail = classify_decay(t, M, tail=0.5, envelope=True)
            inwin = classify_decay(t[t <= T_win], M[t <= T_win], tail=0.5, envelope=True)
            rec = {"row": row, "target": target, "width": m, "status": "ok", "memory": how,
                   "tail_kind": tail.kind, "tail_rate": tail.parameter,
                   "tail_r2_exp": tail.r2_exp, "tail_r2_pol": tail.r2_pol,
                   "window_kind": inwin.kind, "window_rate": inwin.parameter,
                   "slowest_rate": r_slow, "grid_steps": n_steps, "valid_loss": run.loss}
            records.append(rec)
            if r_slow > 0:
                rates[target].setdefault(m, []).append(r_slow)
            rows_md.append(f"| {row} | {target} | {m} | {fmt(run.loss)} | {fmt(r_slow)} | "
                           f"{n_steps} | {how} | "
                           f"{inwin.kind} ({fmt(inwin.parameter)}) | {tail.kind} "
                           f"({fmt(tail.parameter)}; R2 exp {fmt(tail.r2_exp)}, pol "
                           f"{fmt(tail.r2_pol)}) |")
            curves_for_plot.setdefault((row, target), []).append((m, t, M))
    # the classifier must see the targets' own classes on the same grid
    t_ref = np.arange(horizon + 1, dtype=float)
    target_cls = {}
    for target in TARGET_NAMES:
        tgt = get_target(target)
        fit = classify_decay(t_ref, tgt.memory(t_ref), tail=0.5, envelope=True)
        target_cls[target] = {"kind": fit.kind, "rate": fit.parameter, "derived": tgt.decay_class}
    discriminates = (target_cls["exponential"]["kind"] == "exponential"
                     and target_cls["polynomial"]["kind"] == "polynomial")
    ok_recs = [r for r in records if r["status"] == "ok"]
    decaying = [r for r in ok_recs if "UNSTABLE" not in r["memory"] and r["tail_kind"] != "none"]
    not_decaying = [r for r in ok_recs if r not in decaying]
    poly_tails = [r for r in decaying if r["tail_kind"] == "polynomial"]
    exp_tails = [r for r in decaying if r["tail_kind"] == "exponential"]
    verdict = inverse_verdict(discriminates, len(decaying), len(poly_tails))
    med = {t: {str(m): float(np.median(v)) for m, v in sorted(d.items())}
           for t, d in rates.items()}
    trend = {t: loglog_slope([int(m) for m in d], list(d.values())) for t, d in med.items()}
    # figure: memory functions of two rows on both targets, log10 on linear axes
    plt = _plot.pyplot()
    show = [k for k in curves_for_plot if k[0] in ("diagonal_rnn", "softplus_ssm")] or \
        list(curves_for_plot)[:2]
    fig, axes = plt.subplots(1, max(1, len(show)), figsize=(4.2 * max(1, len(show)), 3.4),
                             squeeze=False)
    for ax, key in zip(axes[0], show):
        for m, t, M in curves_for_plot[key]:
            ax.plot(t, np.log10(np.maximum(M, 1e-300)), "-", lw=1, label=f"m={m}")
        tgt = get_target(key[1])
        ax.plot(t_ref, np.log10(np.maximum(tgt.memory(t_ref), 1e-300)), "k--", lw=1,
                label="target")
        ax.axvline(s.length, color="grey", lw=0.6, ls=":")
        ax.set_ylim(-12, 1)
        ax.set_title(f"{key[0]} on {key[1]}", fontsize=8)
        ax.set_xlabel("t (dotted: end of the training window)", fontsize=7)
        ax.set_ylabel("log10 M(t)", fontsize=7)
        ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=6)
    path, rel = ctx.figure_path("inverse-approximation", "memory-functions")
    _plot.save(fig, path)
    detail = [
        f"Memory functions (Def. 3.1) of the trained models of the perturbation test "
        f"(widths {list(s.widths)}, {s.steps} steps, training window T={s.length}) on "
        f"t = 0..n steps, n = max({horizon}, 40 time constants of the slowest mode) (capped "
        f"at 20000 steps, {cap_estimator} for the estimator); decay classified by "
        "`classify_decay` (log-linear vs log-log least squares on the last half of the "
        "resolved samples) on the whole grid "
        "('tail', beyond the window) and inside the training window; the fits use the running "
        "tail supremum of M (`envelope=True`), so that a zero crossing of a kernel with "
        "mixed-sign modes is not read as decay.",
        "",
        f"The classifier on the targets themselves, same grid: exponential -> "
        f"{target_cls['exponential']['kind']}, polynomial -> {target_cls['polynomial']['kind']} "
        f"({'discriminates' if discriminates else 'DOES NOT discriminate: inconclusive'}).",
        "",
        f"Tails: {len(exp_tails)} exponential, {len(poly_tails)} polynomial, "
        f"{len(not_decaying)} not decaying (unstable spectrum or no resolved decay; these "
        "models do not approximate stably, so the theorem says nothing about them), "
        f"{len(records) - len(ok_recs)} diverged in training.",
        "",
        "Verdict: *confirmed* if every decaying model has an exponential tail (and the "
        "classifier discriminates the targets), *refuted* if one has a polynomial tail.",
        "",
        "What this checks: a finite-width model with a stable linear recurrence has a "
        "finite sum of exponentials as its memory, so an exponential tail is guaranteed "
        "there; the content of the check is that no trained model, nonlinear ones included, "
        "shows a polynomial tail, whichever target it learnt. The theorem's mechanism is the "
        "uniformity in m: for the polynomial target the slowest decay rate has to go to 0 as "
        "m grows (no uniform exponential bound), for the exponential one it need not. Median "
        f"slowest-mode decay rate by width: {med}; log-log slope against m: "
        f"{ {t: fmt(v) for t, v in trend.items()} } (not part of the verdict: unused modes "
        "left near their initial rates take part in it for both targets).",
        "",
        "| model | target | m | valid MSE | slowest rate | grid steps | memory | in window | "
        "tail (rate) |", "|---|---|---|---|---|---|---|---|---|", *rows_md]
    return Evidence(verdict,
                    summary=f"{len(exp_tails)}/{len(decaying)} decaying trained models have "
                            f"exponential tails ({len(poly_tails)} polynomial, "
                            f"{len(not_decaying)} not decaying)",
                    metrics={"sizes": s.to_dict(), "horizon_steps": horizon,
                             "targets": target_cls, "records": records,
                             "median_slowest_rate": med, "slowest_rate_trend": trend,
                             "counts": {"exponential": len(exp_tails),
                                        "polynomial": len(poly_tails),
                                        "not_decaying": len(not_decaying),
                                        "diverged": len(records) - len(ok_recs)}},
                    figures=[rel], details="\n".join(detail))
