r"""Claims of Das & Mali (2024, arXiv:2410.03154) on memory-augmented (stack) RNNs.

* ``frozen-memory-length-generalisation``: stack RNNs whose memory (the stack interface) is
  frozen keep about 90% of their training-length accuracy on longer strings, where fully
  trained ones lose up to 60%.
* ``precision-dependence``: the models rely on arithmetic precision rather than on the
  grammar: the same weights run in lower precision do worse on long strings, and their stack
  contents drift away from the float64 ones as the string grows. Beside the verdict, models
  trained purely in bfloat16/float16 (``precision="pure"``: parameters and optimiser state
  in that dtype, no autocast) are compared with float32-trained ones (quick: bfloat16 on
  dyck1; full: bfloat16 and float16 on every language).
* ``stack-memory-function``: freezing the memory "stabilises temporal dependencies":
  memory functions (Wang, Li & Li, ICLR 2024, Def. 3.1) and temporal Jacobian norms
  :math:`\|\partial h_T/\partial x_t\|` of frozen-memory and fully trained stack RNNs.

All three use the same trained models: next-symbol prediction (Gers & Schmidhuber 2001;
Suzgun et al. 2019) with an LSTM controller and a superposition stack (Joulin & Mikolov
2015), trained on lengths 1..40 and tested on longer bins (protocol of Delétang et al.
2023). Variants: ``full`` (everything trained), ``frozen_memory`` (stack interface frozen at
its initialisation), ``frozen_controller``, ``only_classifier`` (everything but the output
layer frozen) and the memory-less LSTM (``memoryless``). The models are the runs of the
protocol ``frozen-memory-length-generalisation`` (languages x variants x seeds; the models
trained in other precisions: protocol ``precision-dependence``), trained once into the run
store (``rnnmem verify --store DIR --executor local|ray --jobs N``) and read from it by
every claim; the evaluations (length bins, precisions, stack drift, Jacobians, memory
functions) are computed here from the stored models.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..experiments import register_protocol
from ._jacobian import _slope, jacobian_decay_rate, temporal_jacobian  # noqa: F401
from ._threads import one_thread
from .registry import Context, Evidence, claim

_SOURCE = "Das & Mali (2024), arXiv:2410.03154, abstract and Sec. 5-6"
_GROUP = "memory-augmented RNNs"

#: variant -> (stack kind, freeze mode)
VARIANTS = {
    "full": ("superposition", "none"),
    "frozen_memory": ("superposition", "memory"),
    "frozen_controller": ("superposition", "controller"),
    "only_classifier": ("superposition", "all_but_classifier"),
    "memoryless": ("none", "none"),
}
#: a model must reach this string accuracy on training lengths for its retention to count
TRAIN_FLOOR = 0.5
#: "retained close to 90%": the threshold on retained performance
RETAIN_TARGET = 0.85
#: minimal effect (absolute position accuracy) for a precision effect to count
MIN_EFFECT = 0.01
#: t-statistic a growth/decay slope needs
T_STAT = 3.0
_CS = ("anbncn", "copy")  # context-sensitive languages among the ones used


# ============================================================================ sizes
@dataclass(frozen=True)
class Sizes:
    languages: tuple
    variants: tuple
    seeds: tuple
    steps: int
    batch_size: int
    hidden_size: int
    stack_width: int
    lr: float
    bins: str
    per_bin: int
    lengths_per_bin: int | None
    drift_length: int
    jacobian_length: int
    jacobian_strings: int
    memory_horizon: int
    train_dtypes: tuple  # extra training precisions (AMP) for the precision claim
    pure_dtypes: tuple  # pure low-precision training (parameters and optimiser state too)
    pure_languages: tuple  # the languages of the pure-precision runs

    def as_metrics(self) -> dict:
        d = asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


_BUDGETS = ("smoke", "quick", "full")
_ALL = tuple(VARIANTS)
#: below the full budget the frozen-controller and only-classifier variants (which learn
#: nothing at small sizes) are left out, and their time goes into training steps
_CORE = ("full", "frozen_memory", "memoryless")


def sizes(ctx: Context) -> Sizes:
    """The study size of each budget."""
    from ..tasks.languages import DEFAULT_TEST_BINS

    return Sizes(
        languages=ctx.pick(smoke=("dyck1",), quick=("dyck1", "anbncn"),
                           full=("dyck1", "dyck2", "anbn", "anbncn", "copy")),
        variants=ctx.pick(smoke=_CORE, quick=_CORE, full=_ALL),
        seeds=tuple(ctx.seed + i for i in range(ctx.pick(smoke=1, quick=2, full=5))),
        steps=ctx.pick(smoke=12, quick=400, full=3000),
        batch_size=ctx.pick(smoke=16, quick=64, full=64),
        hidden_size=ctx.pick(smoke=6, quick=16, full=64),
        stack_width=ctx.pick(smoke=2, quick=4, full=8),
        lr=1e-2 if ctx.budget != "full" else 3e-3,
        bins=ctx.pick(smoke="41:60", quick="41:60,61:100,101:200",
                      full=",".join(map(str, DEFAULT_TEST_BINS))),
        per_bin=ctx.pick(smoke=8, quick=32, full=256),
        lengths_per_bin=ctx.pick(smoke=4, quick=8, full=None),
        drift_length=ctx.pick(smoke=40, quick=200, full=500),
        jacobian_length=ctx.pick(smoke=24, quick=96, full=300),
        jacobian_strings=ctx.pick(smoke=2, quick=6, full=32),
        memory_horizon=ctx.pick(smoke=20, quick=100, full=400),
        train_dtypes=ctx.pick(smoke=(), quick=(), full=("bfloat16", "float16", "float64")),
        pure_dtypes=ctx.pick(smoke=(), quick=("bfloat16",), full=("bfloat16", "float16")),
        pure_languages=ctx.pick(smoke=(), quick=("dyck1",),
                                full=("dyck1", "dyck2", "anbn", "anbncn", "copy")),
    )


# ============================================================================ protocols
def _variant_axis(variants) -> list:
    """The joint ``model.stack+train.freeze`` axis of the variants."""
    return [list(VARIANTS[v]) for v in variants]


#: (dtype, precision, adam_eps) of the models trained in other precisions: mixed (autocast,
#: float32 parameters) for ``train_dtypes``, pure for ``pure_dtypes`` (float16 AdamW needs
#: an epsilon above its smallest normal: TrainConfig refuses 1e-8 there)
def _precision_axis(sz: Sizes) -> list:
    return ([[d, "mixed", 1e-8] for d in sz.train_dtypes]
            + [[d, "pure", 1e-4 if d == "float16" else 1e-8] for d in sz.pure_dtypes])


_PRECISION = "task.name+train.dtype+train.precision+train.adam_eps"


def _precision_cells(sz: Sizes) -> list:
    """The joint ``language + precision`` axis: mixed precisions on every language, pure
    ones on ``pure_languages``."""
    return ([[f"lang:{x}", d, "mixed", 1e-8] for x in sz.languages for d in sz.train_dtypes]
            + [[f"lang:{x}", d, "pure", 1e-4 if d == "float16" else 1e-8]
               for x in sz.pure_languages for d in sz.pure_dtypes])


def _base_run():
    from ..experiments import Run

    sz = sizes(Context("quick", Path(".")))
    return Run.make(
        {"name": "stack_rnn", "controller": "lstm", "stack": "superposition",
         "width": sz.hidden_size, "stack_width": sz.stack_width},
        {"name": f"lang:{sz.languages[0]}", "mode": "next_symbol", "valid_size": 32},
        seed=0,
        train={"steps": sz.steps, "batch_size": sz.batch_size, "lr": sz.lr, "grad_clip": 1.0,
               "dtype": "float32", "device": "cpu", "eval_every": 0, "checkpoint_every": 0,
               "freeze": "none", "precision": "mixed", "adam_eps": 1e-8, "threads": 1},
        resources={"num_cpus": 1})


def _sets(sz: Sizes) -> dict:
    return {"train.steps": sz.steps, "train.batch_size": sz.batch_size, "train.lr": sz.lr,
            "model.width": sz.hidden_size, "model.stack_width": sz.stack_width}


@register_protocol("frozen-memory-length-generalisation")
def lengths_protocol():
    """Stack RNNs (LSTM controller, superposition stack) on next-symbol prediction:
    languages x variants x seeds (the models of all three stack claims)."""
    from ..experiments import Protocol

    def grid(sz):
        return {"task.name": [f"lang:{x}" for x in sz.languages],
                "model.stack+train.freeze": _variant_axis(sz.variants),
                "seed": list(sz.seeds)}

    budgets = {b: {"set": _sets(sz), "grid": grid(sz)}
               for b, sz in ((b, sizes(Context(b, Path(".")))) for b in _BUDGETS)}
    return Protocol("frozen-memory-length-generalisation", _base_run(),
                    grid=list(grid(sizes(Context("quick", Path(".")))).items()),
                    budgets=budgets, default_budget="quick",
                    analysis="frozen-memory-length-generalisation",
                    description="stack RNNs on formal languages: languages x variants (full, "
                                "frozen memory, ..., memory-less) x seeds (Das & Mali 2024)")


@register_protocol("precision-dependence")
def precision_protocol():
    """Fully trained stack RNNs trained in other precisions (pure bfloat16/float16; at
    full also mixed bfloat16/float16 and float64): languages x precisions x seeds. (The
    float32-trained models are those of ``frozen-memory-length-generalisation``.) At the
    smoke budget the claim trains none; the protocol's smoke budget is quick's grid at
    smoke sizes (the machinery)."""
    from ..experiments import Protocol

    def grid(sz):
        return {_PRECISION: _precision_cells(sz), "seed": list(sz.seeds)}

    quick = sizes(Context("quick", Path(".")))
    budgets = {}
    for b in _BUDGETS:
        sz = sizes(Context(b, Path(".")))
        g = grid(sz) if sz.pure_dtypes else {**grid(quick), "seed": list(sz.seeds)}
        budgets[b] = {"set": _sets(sz), "grid": g}
    return Protocol("precision-dependence", _base_run(), grid=list(grid(quick).items()),
                    budgets=budgets, default_budget="quick", analysis="precision-dependence",
                    description="stack RNNs trained in low precision (pure bfloat16/float16, "
                                "mixed at full): languages x precisions x seeds")


def _at(protocol, ctx: Context, **vary):
    p = protocol.at(ctx.base_budget)
    if ctx.seed:
        vary["seed"] = list(sizes(ctx).seeds)
    return p.vary(**vary) if vary else p


@dataclass(frozen=True)
class Spec:
    """What distinguishes the stack runs of one budget."""

    language: str
    variant: str
    seed: int
    dtype: str = "float32"
    precision: str = "mixed"


def spec_of(run) -> Spec:
    key = (run.model_options.get("stack"), run.config.freeze)
    variant = next(v for v, k in VARIANTS.items() if k == key)
    return Spec(run.task.split(":", 1)[1], variant, run.seed, run.config.dtype,
                run.config.precision)


def trained(results) -> dict[Spec, tuple]:
    """``spec -> (model, info)`` of finished runs read from the store (``info``: the
    run's training seconds and final training loss)."""
    out = {}
    for r in results:
        info = {"wall_s": float(r.metrics.get("elapsed_s", 0.0)),
                "train_loss": float((r.metrics.get("final") or {}).get("train_loss",
                                                                        float("nan")))}
        out[spec_of(r.run)] = (r.model().eval(), info)
    return out


def _timing(models: dict) -> dict:
    infos = [v[1] for v in models.values()]
    return {"runs": len(infos), "train_wall_s_summed": round(sum(i["wall_s"] for i in infos), 2)}


# ============================================================================ helpers
def _stats(values) -> dict:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    a = np.asarray(vals)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if a.size > 1 else 0.0,
            "min": float(a.min()), "max": float(a.max()), "n": int(a.size)}


def _fmt(s: dict | None, digits=2) -> str:
    if not s or s.get("mean") is None:
        return "-"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


# ============================================================================ claim 1
def frozen_memory_verdict(per_language: dict, budget: str) -> tuple[str, str, dict]:
    """Verdict of ``frozen-memory-length-generalisation`` from aggregated numbers.

    ``per_language[lang][variant]`` holds ``{"train": stats, "retained": stats}`` (stats:
    mean/std/min/max over seeds). A language is *valid* when the full and frozen-memory
    models both reach ``TRAIN_FLOOR`` mean training accuracy. On a valid language the claim
    is *supported* when frozen memory retains at least ``RETAIN_TARGET`` on average and more
    than full training by more than the two seed standard deviations together; it is
    *contradicted* when every frozen-memory seed retains less than ``RETAIN_TARGET`` or full
    training retains at least as much on average. The paper's claim is about
    context-sensitive languages, so when the study includes any (``anbncn``, ``copy``) the
    valid context-sensitive languages decide, else all valid ones. Confirmed: every
    deciding language supports; refuted: every deciding language contradicts; otherwise
    (or at the smoke budget, or with no deciding language) inconclusive.
    """
    per, valid = {}, []
    for lang, v in per_language.items():
        m, f = v.get("frozen_memory"), v.get("full")
        if not m or not f:
            per[lang] = "missing variant"
            continue
        ok = all(x["train"]["mean"] is not None and x["train"]["mean"] >= TRAIN_FLOOR
                 for x in (m, f))
        if not ok or m["retained"]["mean"] is None or f["retained"]["mean"] is None:
            per[lang] = "not learned"
            continue
        valid.append(lang)
        rm, rf = m["retained"], f["retained"]
        if rm["mean"] >= RETAIN_TARGET and rm["mean"] - rf["mean"] > rm["std"] + rf["std"]:
            per[lang] = "supports"
        elif rm["max"] < RETAIN_TARGET or rf["mean"] >= rm["mean"]:
            per[lang] = "contradicts"
        else:
            per[lang] = "unclear"
    if budget == "smoke":
        return "inconclusive", "smoke budget: too small to tell", per
    deciding = [lang for lang in valid if lang in _CS] \
        if any(lang in _CS for lang in per_language) else valid
    if not deciding:
        return "inconclusive", ("no context-sensitive language learned well enough at this "
                                "budget" if valid else
                                "no language learned well enough at this budget"), per
    kinds = {per[lang] for lang in deciding}
    if kinds == {"supports"}:
        return "confirmed", "frozen memory retains >= 85% and beats full training", per
    if kinds == {"contradicts"}:
        return "refuted", "frozen memory does not retain ~90% or does not beat full training", per
    return "inconclusive", "mixed across languages", per


@claim("frozen-memory-length-generalisation",
       title="Frozen memory retains ~90% of its accuracy on longer strings",
       statement="Stack RNNs (LSTM controller, superposition stack) trained on next-symbol "
                 "prediction for lengths 1..40 with the stack interface frozen at "
                 "initialisation keep, on longer strings (41..500), a retained performance "
                 "rho = acc(long)/acc(train) of about 0.9 (here: mean over seeds >= 0.85), "
                 "clearly above that of fully trained models (difference larger than the "
                 "sum of the two seed standard deviations), on languages both variants learn "
                 "(mean training string accuracy >= 0.5). Frozen-controller, only-classifier "
                 "and memory-less models are reported alongside.",
       source=_SOURCE, group=_GROUP,
       protocols=lambda ctx: [_at(lengths_protocol(), ctx), _dm_protocol(ctx)],
       budgets=("medium",))
def _check_frozen_memory(ctx: Context) -> Evidence:
    from ..train.evaluate import aggregate_seeds, evaluate_lengths
    from . import _plot

    sz = sizes(ctx)
    t0 = time.perf_counter()
    models = trained(ctx.results(_at(lengths_protocol(), ctx)))
    t_train = time.perf_counter() - t0
    reports = {}
    with one_thread():
        for spec, (model, _) in models.items():
            reports[spec] = evaluate_lengths(
                model, spec.language, mode="next_symbol", bins=sz.bins, per_bin=sz.per_bin,
                seed=spec.seed, lengths_per_bin=sz.lengths_per_bin)
    agg, per_language, rows = {}, {}, []
    for lang in sz.languages:
        per_language[lang] = {}
        for v in sz.variants:
            reps = [reports[s] for s in models if s.language == lang and s.variant == v]
            a = aggregate_seeds(reps)
            pos = {b: _stats(r.position_accuracy.get(b) for r in reps)
                   for b in ["train", *a.bins]}
            agg[(lang, v)] = a
            per_language[lang][v] = {
                "train": a.train_accuracy, "long": a.long_accuracy,
                "retained": a.retained_mean,
                "bins": {b: a.bin_accuracy[b] for b in a.bins},
                "position_accuracy": pos}
            rows.append(f"| {lang} | {v} | {_fmt(a.train_accuracy)} | "
                        + " | ".join(_fmt(a.bin_accuracy[b]) for b in a.bins)
                        + f" | {_fmt(a.retained_mean)} | {_fmt(pos[a.bins[-1]])} |")
    verdict, why, per = frozen_memory_verdict(per_language, ctx.base_budget)

    plt = _plot.pyplot()
    fig, axes = plt.subplots(1, len(sz.languages), figsize=(5 * len(sz.languages), 3.8),
                             squeeze=False)
    for ax, lang in zip(axes[0], sz.languages):
        for v in sz.variants:
            a = agg[(lang, v)]
            xs = ["train", *a.bins]
            ys = [a.train_accuracy["mean"]] + [a.bin_accuracy[b]["mean"] for b in a.bins]
            es = [a.train_accuracy["std"]] + [a.bin_accuracy[b]["std"] for b in a.bins]
            ax.errorbar(range(len(xs)), ys, yerr=es, marker="o", capsize=3, label=v)
        ax.set_xticks(range(len(xs)), xs)
        ax.set_title(f"{lang}: string accuracy by length")
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("lengths")
    axes[0][0].set_ylabel("accuracy (mean ± std over seeds)")
    axes[0][-1].legend(fontsize=7)
    path, rel = ctx.figure_path("frozen-memory-length-generalisation", "accuracy-by-length")
    _plot.save(fig, path)

    bins = agg[(sz.languages[0], sz.variants[0])].bins
    details = "\n".join([
        f"Next-symbol string accuracy (mean ± std over {len(sz.seeds)} seeds); trained on "
        f"1..40, {sz.steps} steps. Verdict per language: "
        + ", ".join(f"{k}: {v}" for k, v in per.items()) + ".", "",
        "| language | variant | train | " + " | ".join(bins) + " | retained | pos. acc "
        f"{bins[-1]} |", "|---" * (5 + len(bins)) + "|", *rows])
    summ = {lang: {v: per_language[lang][v]["retained"]["mean"] for v in sz.variants}
            for lang in sz.languages}
    short = "; ".join(
        f"{lang}: rho frozen_memory {_num(summ[lang].get('frozen_memory'))} vs full "
        f"{_num(summ[lang].get('full'))}" for lang in sz.languages)
    scale = f"{ctx.base_budget}: H={sz.hidden_size}, {sz.steps} steps, {len(sz.seeds)} seeds"
    # the same question under DeepMind's protocol (a second reading; the verdict above is
    # the bins protocol's): claims_stack_dm
    from .claims_stack_dm import dm_reading

    dm_metrics, dm_lines, dm_figs, dm_short = dm_reading(
        ctx, "frozen-memory-length-generalisation", DM_BUDGET.get(ctx.budget, ctx.budget))
    details = "\n".join(["**Bins protocol** (languages, string accuracy; the verdict):",
                          details, *dm_lines])
    return Evidence(verdict, summary=f"{why} (bins protocol: {short}; {scale}. {dm_short})",
                    metrics={"sizes": sz.as_metrics(), "per_language": per_language,
                             "verdict_per_language": per, "protocol": "bins",
                             "dm_protocol": dm_metrics,
                             "timing": {**_timing(models), "train_wall_s": round(t_train, 2)},
                             "thresholds": {"train_floor": TRAIN_FLOOR,
                                            "retain_target": RETAIN_TARGET}},
                    figures=[rel, *dm_figs], details=details)


#: claim budget -> budget of the ``dm`` protocol read beside the bins protocol
DM_BUDGET = {"smoke": "smoke", "quick": "quick", "medium": "medium", "full": "full"}


def _dm_protocol(ctx: Context, freeze: str | None = None, train_depth=None):
    """The ``dm`` runs read beside the bins protocol (``freeze``, ``train_depth``: only the
    cells with that freezing mode, trained at that stack depth)."""
    from .claims_stack_dm import dm_cells_at

    return dm_cells_at(DM_BUDGET.get(ctx.budget, ctx.budget), freeze, train_depth)


def _num(v) -> str:
    return "-" if v is None else f"{v:.2f}"


# ============================================================================ claim 2
def _precision_protocols(ctx: Context) -> list:
    """The float32-trained full models (of the lengths protocol) and, from quick on, the
    models trained in other precisions."""
    out = [_at(lengths_protocol(), ctx, **{"model.stack+train.freeze": _variant_axis(["full"])})]
    if sizes(ctx).pure_dtypes or sizes(ctx).train_dtypes:
        out.append(_at(precision_protocol(), ctx))
    return out


def precision_verdict(acc_drop: dict, drift_slopes: dict, budget: str,
                      learned: bool) -> tuple[str, str]:
    """Verdict of ``precision-dependence``.

    ``acc_drop[lang][dtype]`` holds the paired per-seed drops of long-string position
    accuracy from float64 to ``dtype`` (``{"long": stats, "train": stats}``);
    ``drift_slopes["<lang>/<dtype>"]`` the log-log slopes of the RMS stack drift against
    the step (``{"slope", "se"}``). Precision matters on a language when some low precision's mean
    long drop exceeds ``MIN_EFFECT``, its seed standard deviation and the drop on training
    lengths; drift grows when every slope (each language and low precision) is positive
    with t-statistic >= ``T_STAT``.
    Confirmed: precision matters on a majority of languages and drift grows; refuted: no
    language shows a drop beyond ``MIN_EFFECT`` and the seed spread; otherwise inconclusive.
    """
    matters = {}
    for lang, by in acc_drop.items():
        hit = False
        for st in by.values():
            lo, tr = st["long"], st["train"]
            if lo["mean"] is None:
                continue
            if lo["mean"] > max(MIN_EFFECT, lo["std"], tr["mean"] or 0.0):
                hit = True
        matters[lang] = hit
    none_beyond = all(
        st["long"]["mean"] is None or st["long"]["mean"] <= max(MIN_EFFECT, st["long"]["std"])
        for by in acc_drop.values() for st in by.values())
    grows = bool(drift_slopes) and all(
        d["slope"] > 0 and d["slope"] > T_STAT * d["se"] for d in drift_slopes.values())
    if budget == "smoke":
        return "inconclusive", "smoke budget: too small to tell"
    if not learned:
        return "inconclusive", "models did not learn the training lengths at this budget"
    if sum(matters.values()) * 2 > len(matters) and grows:
        return "confirmed", "lower precision costs long-string accuracy and drift grows with t"
    if none_beyond:
        return "refuted", ("long-string accuracy does not depend on precision beyond the seed "
                           "spread" + (" (although stack drift grows with t)" if grows else ""))
    return "inconclusive", "precision effects mixed or drift not growing"


@claim("precision-dependence",
       title="Stack RNNs rely on precision: lower precision hurts long strings",
       statement="For fully trained stack RNNs (float32 training), running the same weights "
                 "in bfloat16 or float16 instead of float64 lowers next-symbol position "
                 "accuracy on long strings (41..) by more than max(0.01, the seed standard "
                 "deviation of the paired drop, the drop on training lengths) on a majority "
                 "of languages, and the RMS deviation of the stack contents from float64 "
                 "grows with the time step t (log-log slope > 0 with t-statistic >= 3 for "
                 "every low precision). Refuted if no precision lowers long-string accuracy "
                 "beyond max(0.01, seed spread).",
       source=_SOURCE, group=_GROUP,
       protocols=lambda ctx: [*_precision_protocols(ctx),
                             _dm_protocol(ctx, "none", "sequence")],
       budgets=("medium",))
def _check_precision(ctx: Context) -> Evidence:
    import torch

    from ..train.evaluate import autocast_coverage, evaluate_lengths, stack_drift
    from . import _plot

    sz = sizes(ctx)
    dtypes = ("float64", "float32", "bfloat16", "float16")
    t0 = time.perf_counter()
    models = trained(ctx.results(*_precision_protocols(ctx)))
    specs = [s for s in models if s.dtype == "float32"]
    extra = [s for s in models if s.precision == "mixed" and s.dtype != "float32"]
    pure = [s for s in models if s.precision == "pure" and s.dtype != "float32"]
    t_train = time.perf_counter() - t0
    acc, drift_curves, unsupported, learned = {}, {}, {}, True
    with one_thread():
        for spec in specs:
            model = models[spec][0]
            for dt in dtypes:
                try:
                    r = evaluate_lengths(model, spec.language, mode="next_symbol",
                                         bins=sz.bins, per_bin=sz.per_bin, seed=spec.seed,
                                         dtype=dt, lengths_per_bin=sz.lengths_per_bin)
                except Exception as exc:  # a dtype the CPU cannot run: reported, not upcast
                    unsupported[dt] = f"{type(exc).__name__}: {exc}"
                    continue
                acc[(spec.language, spec.seed, dt)] = r
            from ..tasks.languages import get_language

            lang = get_language(spec.language)
            T = max(n for n in lang.valid_lengths(sz.drift_length) if n >= 1)
            rng = np.random.default_rng([spec.seed, 7])
            ids = torch.as_tensor(lang.sample_ids(rng, 4, T))
            d = stack_drift(model, ids, ("float32", "bfloat16", "float16"))
            unsupported.update(d.unsupported)
            for dt, curve in d.stack_rms.items():
                drift_curves.setdefault((spec.language, dt), []).append(curve)
        # models trained in other precisions, evaluated in their parameter dtype (float32
        # for mixed precision, which keeps float32 parameters; float64 for float64)
        trained_in = {}
        for spec in extra:
            r = evaluate_lengths(models[spec][0], spec.language, mode="next_symbol",
                                 bins=sz.bins, per_bin=sz.per_bin, seed=spec.seed,
                                 lengths_per_bin=sz.lengths_per_bin)
            trained_in.setdefault((spec.language, spec.dtype), []).append(r)
        # models trained purely in a low precision (parameters, optimiser state and every
        # operation in that dtype), evaluated in that dtype
        pure_in = {}
        for spec in pure:
            r = evaluate_lengths(models[spec][0], spec.language, mode="next_symbol",
                                 bins=sz.bins, per_bin=sz.per_bin, seed=spec.seed,
                                 lengths_per_bin=sz.lengths_per_bin)
            pure_in.setdefault((spec.language, spec.dtype), {})[spec.seed] = r
        # what mixed-precision training really lowers on this device
        probe = models[specs[0]][0]
        pid = torch.zeros(1, 4, dtype=torch.long)
        coverage = {dt: autocast_coverage(probe, pid, dt) for dt in ("bfloat16", "float16")}
    kept = {dt: sorted(k for k, v in cov.items() if v == "float32")
            for dt, cov in coverage.items()}

    def pos_long(r):
        return float(np.mean([r.position_accuracy[b] for b in r.bins]))

    acc_drop, table = {}, {}
    for lang in sz.languages:
        acc_drop[lang], table[lang] = {}, {}
        ref = {s: acc[(lang, s, "float64")] for s in sz.seeds if (lang, s, "float64") in acc}
        for dt in dtypes:
            reps = [acc[(lang, s, dt)] for s in sz.seeds if (lang, s, dt) in acc]
            table[lang][dt] = {
                "train_string": _stats(r.train_accuracy for r in reps),
                "long_string": _stats(r.long_accuracy for r in reps),
                "train_position": _stats(r.position_accuracy["train"] for r in reps),
                "long_position": _stats(pos_long(r) for r in reps),
                "nonfinite": int(sum(r.nonfinite for r in reps))}
            if dt in ("bfloat16", "float16") and reps:
                acc_drop[lang][dt] = {
                    "long": _stats(pos_long(ref[s]) - pos_long(acc[(lang, s, dt)])
                                   for s in sz.seeds if (lang, s, dt) in acc),
                    "train": _stats(ref[s].position_accuracy["train"]
                                    - acc[(lang, s, dt)].position_accuracy["train"]
                                    for s in sz.seeds if (lang, s, dt) in acc)}
    # a model must predict most positions right on training lengths for drops to mean much
    learned = all(table[lang]["float64"]["train_position"]["mean"] is not None
                  and table[lang]["float64"]["train_position"]["mean"] >= 0.9
                  for lang in sz.languages)
    slopes = {}
    for (lang, dt), curves in drift_curves.items():
        c = np.mean(np.stack(curves), axis=0)  # (T,), mean over seeds
        t = np.arange(1, c.size + 1)
        sel = (t >= 5) & (c > 0)
        if sel.sum() >= 3:
            b, se = _slope(np.log(t[sel]), np.log(c[sel]))
            slopes[f"{lang}/{dt}"] = {"slope": b, "se": se, "at_t5": float(c[sel][0]),
                                      "at_end": float(c[-1]), "T": int(c.size)}
    verdict, why = precision_verdict(acc_drop, slopes, ctx.base_budget, learned)

    plt = _plot.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for lang in sz.languages:
        ys = [table[lang][dt]["long_position"]["mean"] for dt in dtypes]
        es = [table[lang][dt]["long_position"]["std"] for dt in dtypes]
        axes[0].errorbar(range(len(dtypes)), [np.nan if y is None else y for y in ys],
                         yerr=[0 if e is None else e for e in es], marker="o", capsize=3,
                         label=lang)
    axes[0].set_xticks(range(len(dtypes)), dtypes)
    axes[0].set_ylabel("long-string position accuracy")
    axes[0].set_title("same weights, evaluation precision")
    axes[0].legend(fontsize=8)
    for (lang, dt), curves in drift_curves.items():
        c = np.mean(np.stack(curves), axis=0)
        axes[1].loglog(np.arange(1, c.size + 1), np.maximum(c, 1e-30), label=f"{lang} {dt}")
    axes[1].set_xlabel("step t")
    axes[1].set_ylabel("RMS |S_t(dtype) - S_t(float64)|")
    axes[1].set_title("stack drift from float64")
    axes[1].legend(fontsize=8)
    path, rel = ctx.figure_path("precision-dependence", "accuracy-and-drift")
    _plot.save(fig, path)

    rows = []
    for lang in sz.languages:
        for dt in dtypes:
            t_ = table[lang][dt]
            rows.append(f"| {lang} | {dt} | {_fmt(t_['train_string'])} | "
                        f"{_fmt(t_['long_string'])} | {_fmt(t_['train_position'], 3)} | "
                        f"{_fmt(t_['long_position'], 3)} | {t_['nonfinite']} |")
    amp = {f"{lang}/{dt}": {"long_position": _stats(pos_long(r) for r in reps),
                            "train_string": _stats(r.train_accuracy for r in reps)}
           for (lang, dt), reps in trained_in.items()}
    pure_tab = {}
    for (lang, dt), by_seed in pure_in.items():
        ref = {sd: acc[(lang, sd, "float32")] for sd in by_seed if (lang, sd, "float32") in acc}
        pure_tab[f"{lang}/{dt}"] = {
            "train_position": _stats(r.position_accuracy["train"] for r in by_seed.values()),
            "long_position": _stats(pos_long(r) for r in by_seed.values()),
            "long_string": _stats(r.long_accuracy for r in by_seed.values()),
            "nonfinite": int(sum(r.nonfinite for r in by_seed.values())),
            # paired per seed: float32-trained, float32-evaluated minus pure low precision
            "long_position_drop_vs_float32": _stats(
                pos_long(ref[sd]) - pos_long(r) for sd, r in by_seed.items() if sd in ref),
            "train_loss": _stats(models[s][1]["train_loss"] for s in pure
                                 if s.language == lang and s.dtype == dt)}
    pure_rows = [f"| {k} | {_fmt(v['train_position'], 3)} | {_fmt(v['long_position'], 3)} | "
                 f"{_fmt(v['long_position_drop_vs_float32'], 3)} | {v['nonfinite']} |"
                 for k, v in pure_tab.items()]
    details = "\n".join([
        "Same float32-trained weights evaluated in each precision (weights rounded, every "
        "operation in that dtype; nothing upcast).", "",
        "| language | eval dtype | train string acc | long string acc | train position acc "
        "| long position acc | non-finite |", "|---|---|---|---|---|---|---|", *rows, "",
        "Stack drift (RMS over cells and strings) vs step: "
        + ", ".join(f"{k}: slope {v['slope']:.2f} ± {v['se']:.2f} (t=5: {v['at_t5']:.2g}, "
                    f"t={v['T']}: {v['at_end']:.2g})" for k, v in slopes.items()),
        "",
        "Mixed-precision training (rnnmem train --dtype bfloat16/float16: autocast, float32 "
        "parameters) on cpu leaves these modules in float32: "
        + "; ".join(f"{dt}: {', '.join(v) or 'none'}" for dt, v in kept.items())
        + ".", "",
        *(["Pure low-precision training (parameters, AdamW state and every operation in "
           "that dtype; rnnmem train --precision pure), evaluated in the same dtype; the "
           "drop is paired per seed against the float32-trained model evaluated in float32. "
           "Reported beside the verdict, which rests on the same-weights comparison above.",
           "", "| language/dtype | train position acc | long position acc | long drop vs "
           "float32 | non-finite |", "|---|---|---|---|---|", *pure_rows]
          if pure_rows else ["Pure low-precision training: not run at this budget."]),
        "" if not unsupported else "Unsupported on CPU: " + "; ".join(
            f"{k}: {v}" for k, v in unsupported.items())])
    drops = ", ".join(f"{lang}/{dt} {_fmt(v['long'], 3)}" for lang, by in acc_drop.items()
                      for dt, v in by.items())
    from .claims_stack_dm import dm_precision_reading  # a second reading; verdict: bins

    dm_metrics, dm_lines, dm_figs, dm_short = dm_precision_reading(
        ctx, "precision-dependence", DM_BUDGET.get(ctx.budget, ctx.budget))
    details = "\n".join(["**Bins protocol** (languages; the verdict):", details, *dm_lines])
    return Evidence(verdict, summary=f"{why} (bins protocol: long position-accuracy drop vs "
                                     f"float64: {drops}. {dm_short})",
                    metrics={"sizes": sz.as_metrics(), "accuracy": table, "protocol": "bins",
                             "dm_protocol": dm_metrics,
                             "drop_vs_float64": acc_drop, "drift_slopes": slopes,
                             "trained_in_precision": amp, "trained_pure": pure_tab,
                             "unsupported_on_cpu": unsupported,
                             "autocast_kept_float32": kept,
                             "timing": {**_timing(models), "train_wall_s": round(t_train, 2)}},
                    figures=[rel, *dm_figs], details=details)


# ============================================================================ claim 3
_MEMORY_VARIANTS = ("full", "frozen_memory", "memoryless")


def stability_verdict(per_language: dict, budget: str) -> tuple[str, str, dict]:
    """Verdict of ``stack-memory-function`` (the Jacobian part).

    ``per_language[lang][variant]`` holds ``{"rate": stats of per-seed decay rates of
    J(tau), "dispersion": mean over tau of the seed std of log10 J(tau)}``. Frozen memory
    is *more stable* on a language when its decay rate is lower than full training's by
    more than the two seed standard deviations together **and** its seed dispersion is
    smaller; *less or equally stable* when its rate is not lower than full training's and
    its dispersion is not smaller. Confirmed: more stable on every language; refuted: less
    or equally stable on every language; otherwise (or at the smoke budget, or with a
    single seed) inconclusive.
    """
    per = {}
    for lang, v in per_language.items():
        m, f = v.get("frozen_memory"), v.get("full")
        if not m or not f or m["rate"]["mean"] is None or f["rate"]["mean"] is None:
            per[lang] = "missing"
            continue
        slower = f["rate"]["mean"] - m["rate"]["mean"] > m["rate"]["std"] + f["rate"]["std"]
        steadier = m["dispersion"] is not None and f["dispersion"] is not None \
            and m["dispersion"] < f["dispersion"]
        if slower and steadier:
            per[lang] = "more stable"
        elif m["rate"]["mean"] >= f["rate"]["mean"] and not steadier:
            per[lang] = "not more stable"
        else:
            per[lang] = "mixed"
    if budget == "smoke":
        return "inconclusive", "smoke budget: too small to tell", per
    kinds = set(per.values())
    if kinds == {"more stable"}:
        return "confirmed", "frozen memory: slower, steadier temporal Jacobians", per
    if kinds == {"not more stable"}:
        return "refuted", "frozen memory's temporal Jacobians are not more stable", per
    return "inconclusive", "Jacobian stability mixed", per


@claim("stack-memory-function",
       title="Freezing the memory stabilises temporal dependencies",
       statement="For stack RNNs trained as in frozen-memory-length-generalisation, the "
                 "temporal Jacobian profile J(tau) = E||dh_T/dx_{T-tau}||_F of frozen-memory "
                 "models decays more slowly than that of fully trained ones (per-seed "
                 "exponential rate, fitted to log J on tau >= 1, lower by more than the sum "
                 "of the seed standard deviations) and varies less across seeds (mean over "
                 "tau of the seed std of log10 J). Memory functions (Def. 3.1, black-box, "
                 "one-hot step inputs, baseline-subtracted) and their decay class are "
                 "reported for full, frozen-memory and memory-less models (all measured "
                 "with the trained weights run in float64).",
       source=_SOURCE + "; memory function: Wang, Li & Li (ICLR 2024), Def. 3.1",
       group=_GROUP, protocols=lambda ctx: [_at(lengths_protocol(), ctx, **{
           "model.stack+train.freeze": _variant_axis(_MEMORY_VARIANTS)}),
           _dm_protocol(ctx, train_depth="sequence")],
       budgets=("medium",))
def _check_stack_memory(ctx: Context) -> Evidence:
    import torch

    from ..numerics import classify_decay, memory_function
    from ..tasks.languages import get_language
    from ..train.evaluate import model_in_dtype
    from . import _plot

    sz = sizes(ctx)
    variants = _MEMORY_VARIANTS
    t0 = time.perf_counter()
    models = trained(ctx.results(_at(lengths_protocol(), ctx, **{
        "model.stack+train.freeze": _variant_axis(variants)})))
    specs = list(models)
    t_train = time.perf_counter() - t0
    jac, mem = {}, {}
    with one_thread():
        for spec in specs:
            # the same weights in float64, so that rounding noise (~1e-7 in float32) does not
            # masquerade as a memory-function tail
            model = model_in_dtype(models[spec][0], "float64")
            lang = get_language(spec.language)
            A = len(lang.alphabet)
            T = max(n for n in lang.valid_lengths(sz.jacobian_length) if n >= 1)
            rng = np.random.default_rng([spec.seed, 11])
            ids = torch.as_tensor(lang.sample_ids(rng, sz.jacobian_strings, T))
            x = torch.nn.functional.one_hot(ids, A).to(model.dtype)
            jac[spec] = temporal_jacobian(model, x)
            t = np.arange(sz.memory_horizon, dtype=float)
            mem[spec] = memory_function(model.as_system(), t, dt=1.0, input_dim=A,
                                        directions=np.eye(A), baseline=True,
                                        output_reduce="norm")

    per_language, summary_rows, mf_rows = {}, [], []
    for lang in sz.languages:
        per_language[lang] = {}
        for v in variants:
            ss = [s for s in specs if s.language == lang and s.variant == v]
            curves = np.stack([jac[s] for s in ss])  # (S, T)
            logj = np.log10(np.maximum(curves, 1e-300))
            rates = [jacobian_decay_rate(c) for c in curves]
            disp = float(np.mean(np.std(logj, axis=0, ddof=1))) if len(ss) > 1 else None
            fits = []
            for s in ss:
                m = mem[s]
                fit = classify_decay(np.arange(m.size, dtype=float), m)
                fits.append({"kind": fit.kind, "rate": fit.parameter, "r2_exp": fit.r2_exp,
                             "r2_pol": fit.r2_pol, "M0": float(m[0]), "M_end": float(m[-1])})
            half = curves.shape[1] // 2
            tail = [float(np.mean(c[half:]) / c[0]) if c[0] > 0 else None for c in curves]
            per_language[lang][v] = {
                "rate": _stats(rates), "dispersion": disp, "tail_ratio": _stats(tail),
                "J_tau0": _stats(c[0] for c in curves), "J_end": _stats(c[-1] for c in curves),
                "J_mean_curve": np.mean(curves, axis=0).tolist(),
                "memory_function": fits,
                "memory_function_mean": np.mean(np.stack([mem[s] for s in ss]), 0).tolist()}
            summary_rows.append(
                f"| {lang} | {v} | {_fmt(per_language[lang][v]['rate'], 4)} | "
                f"{'-' if disp is None else f'{disp:.3f}'} | "
                f"{_fmt(per_language[lang][v]['J_tau0'], 3)} | "
                f"{_fmt(per_language[lang][v]['J_end'], 3)} | "
                f"{_fmt(per_language[lang][v]['tail_ratio'], 3)} |")
            mf_rows.append(f"| {lang} | {v} | "
                           + ", ".join(f"{f['kind']} ({f['rate']:.3g})" for f in fits) + " |")
    verdict, why, per = stability_verdict(per_language, ctx.base_budget)

    plt = _plot.pyplot()
    n = len(sz.languages)
    fig, axes = plt.subplots(2, n, figsize=(5 * n, 7), squeeze=False)
    for j, lang in enumerate(sz.languages):
        for v in variants:
            d = per_language[lang][v]
            c = np.asarray(d["J_mean_curve"])
            axes[0][j].semilogy(np.arange(c.size), np.maximum(c, 1e-30), label=v)
            m = np.asarray(d["memory_function_mean"])
            axes[1][j].semilogy(np.arange(m.size), np.maximum(m, 1e-30), label=v)
        axes[0][j].set_title(f"{lang}: ||dh_T/dx_(T-tau)||_F")
        axes[0][j].set_xlabel("tau = T - t")
        axes[1][j].set_title(f"{lang}: memory function (Def. 3.1)")
        axes[1][j].set_xlabel("t")
    axes[0][-1].legend(fontsize=8)
    path, rel = ctx.figure_path("stack-memory-function", "jacobian-and-memory")
    _plot.save(fig, path)

    details = "\n".join([
        f"Temporal Jacobians on {sz.jacobian_strings} member strings of length <= "
        f"{sz.jacobian_length}; decay rate = -slope of ln J(tau) on tau >= 1. Verdict per "
        "language: " + ", ".join(f"{k}: {v}" for k, v in per.items()) + ".", "",
        "| language | variant | decay rate | seed dispersion (log10) | J(0) | J(T-1) | "
        "mean J(tau >= T/2) / J(0) (not used in the verdict) |",
        "|---|---|---|---|---|---|---|", *summary_rows, "",
        "Memory-function decay class per seed (rate):", "",
        "| language | variant | classify_decay |", "|---|---|---|", *mf_rows])
    for lang in per_language:  # keep metrics small: curves only in the figure
        for v in per_language[lang]:
            per_language[lang][v].pop("J_mean_curve")
            per_language[lang][v].pop("memory_function_mean")
    short = "; ".join(
        f"{lang}: rate frozen {_fmt(per_language[lang]['frozen_memory']['rate'], 3)} vs full "
        f"{_fmt(per_language[lang]['full']['rate'], 3)}" for lang in sz.languages)
    from .claims_stack_dm import dm_memory_reading  # a second reading; verdict: bins

    dm_metrics, dm_lines, dm_figs, dm_short = dm_memory_reading(
        ctx, "stack-memory-function", DM_BUDGET.get(ctx.budget, ctx.budget))
    details = "\n".join(["**Bins protocol** (languages; the verdict):", details, *dm_lines])
    return Evidence(verdict, summary=f"{why} (bins protocol: {short}. {dm_short})",
                    metrics={"sizes": sz.as_metrics(), "per_language": per_language,
                             "verdict_per_language": per, "protocol": "bins",
                             "dm_protocol": dm_metrics,
                             "timing": {**_timing(models), "train_wall_s": round(t_train, 2)}},
                    figures=[rel, *dm_figs], details=details)
