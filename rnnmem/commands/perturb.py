"""``rnnmem perturb``: the perturbation error :math:`E_m(\\beta)` of trained models.

For each checkpoint: rebuild the task it was trained on (or ``--task``), fix its held-out
split once, and estimate :math:`E_m(\\beta)` on a log grid of radii with
:func:`rnnmem.train.perturb.perturbation_curve` (Wang, Li & Li, ICLR 2024, Def. 3.4);
print E(0), the crossing points at 2x and 10x E(0) and a table of the envelope. With three
or more checkpoints of different widths (the models' ``width``), also the operational
stable-approximation verdict of
:func:`rnnmem.numerics.perturbation.stability_verdict` (Def. 3.5).
"""

from __future__ import annotations

import sys

import numpy as np

from ..errors import InvalidParameterError
from .memory import add_output_arguments, emit_json, parse_positive, save_plot

NAME = "perturb"
HELP = "perturbation error E(beta) of trained models (stable-approximation test)"
ORDER = 31

#: relative levels (multiples of E(0)) at which crossing points are reported
FACTORS = (2.0, 10.0)


def add_arguments(p):
    from ._user_model import add_user_model_arguments

    p.add_argument("checkpoints", nargs="*", metavar="CKPT",
                   help="checkpoint(s); three or more widths also give a stability verdict "
                        "(or --model)")
    p.add_argument("--betas", default="1e-3:1e0:21", metavar="LO:HI:N",
                   help="radii: N log-spaced from LO to HI, or a comma list "
                        "(default 1e-3:1e0:21)")
    p.add_argument("--repeats", default="30", metavar="K",
                   help="random perturbations per radius (default 30)")
    p.add_argument("--scope", default="recurrent", metavar="{recurrent,all}",
                   help="perturb the recurrent weights only (Def. 3.4, default) or all")
    p.add_argument("--norm", default="spectral", metavar="{spectral,frobenius,max}",
                   help="norm of each perturbed tensor (default spectral; vectors: max|v|)")
    p.add_argument("--distribution", default="gaussian", metavar="{gaussian,rademacher}",
                   help="entries of the random directions before scaling (default gaussian)")
    p.add_argument("--seed", default="0", metavar="INT")
    p.add_argument("--method", default="auto", metavar="{auto,batched,loop}",
                   help="vmap-batched evaluation or the per-sample loop (default auto)")
    p.add_argument("--task", metavar="NAME",
                   help="evaluate on this task instead of the checkpoint's training task")
    p.add_argument("--task-arg", dest="task_arg", action="append", metavar="K=V", default=[],
                   help="task option with --task, repeatable")
    p.add_argument("--split", metavar="NAME", help="held-out split (default: the task's first)")
    p.add_argument("--max-samples", dest="max_samples", metavar="N",
                   help="evaluate on the first N samples of the split only")
    p.add_argument("--level", metavar="E",
                   help="absolute error level for the verdict across widths (default: 10 x "
                        "the largest E(0))")
    add_user_model_arguments(p)
    p.add_argument("--params", action="append", default=[], metavar="GLOB",
                   help="perturb the parameters whose names match (repeatable, e.g. "
                        "'rnn.weight_hh*'); overrides --scope")
    add_output_arguments(p, plot_help="write a log-log plot of E(beta)",
                         device_help="device for the models (default cpu)")


def _width(model):
    """The model's ``width`` (the model contract), ``None`` for a model without one."""
    v = getattr(model, "width", None)
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


def _check_options(args):
    from ..numerics.perturbation import parse_betas
    from ..train.perturb import DISTRIBUTIONS, METHODS, NORMS, SCOPES, _check_choice
    from .train import parse_assignments

    opts = {"betas": parse_betas(args.betas),
            "repeats": parse_positive(args.repeats, "--repeats", integer=True, minimum=1),
            "seed": parse_positive(args.seed, "--seed", integer=True, minimum=0),
            "scope": _check_choice(args.scope, SCOPES, "perturbation scope"),
            "norm": _check_choice(args.norm, NORMS, "perturbation norm"),
            "distribution": _check_choice(args.distribution, DISTRIBUTIONS, "distribution"),
            "method": _check_choice(args.method, METHODS, "evaluation method")}
    task_kwargs = parse_assignments(args.task_arg, "--task-arg")
    if task_kwargs and not args.task:
        raise InvalidParameterError("--task-arg needs --task")
    max_samples = None if args.max_samples is None else parse_positive(
        args.max_samples, "--max-samples", integer=True, minimum=1)
    level = None if args.level is None else parse_positive(args.level, "--level")
    return opts, task_kwargs, max_samples, level


def compute(paths, opts: dict, *, task=None, task_kwargs=None, split=None, max_samples=None,
            level=None, device="cpu", progress=None) -> dict:
    """Curves (and a verdict) for ``paths``; the dict ``rnnmem perturb --json`` prints."""
    from ..models.registry import load
    from ..numerics.perturbation import crossing_point, stability_verdict
    from ..train.perturb import eval_set_from_checkpoint, perturbation_curve

    entries = []
    for path in paths:
        model = load(path, device=device)
        es, info = eval_set_from_checkpoint(path, model, task=task, task_kwargs=task_kwargs,
                                            split=split, max_samples=max_samples)
        if progress:
            progress(f"{path}: {info['task']} / {info['split']} ({es.n_samples} samples), "
                     f"{len(opts['betas'])} radii x {opts['repeats']} repeats")
        curve = perturbation_curve(model, es, **opts)
        crossings = {}
        for f in FACTORS:
            c = crossing_point(curve, f) if curve.e0 > 0 else None
            crossings[f"{f:g}x"] = None if c is None else {
                "beta": c.beta, "level": c.level, "censored": c.censored}
        entries.append({"checkpoint": str(path),
                        "model": getattr(model, "model_name", type(model).__name__),
                        "width": _width(model), "task": info, "curve": curve,
                        "crossings": crossings})
    verdict, note = None, None
    widths = [e["width"] for e in entries]
    if len(entries) >= 3:
        if None in widths or len(set(widths)) != len(widths):
            note = "no verdict: the checkpoints need distinct widths (model option width)"
        else:
            verdict = stability_verdict({e["width"]: e["curve"] for e in entries},
                                        level=level)
    return {"curves": entries, "verdict": verdict, "verdict_note": note}


def compute_user(spec, opts: dict, *, weights=None, model_args=(), layout=None,
                 readout=None, params=(), task=None, task_kwargs=None, split=None,
                 max_samples=None, device="cpu", progress=None) -> dict:
    """``rnnmem perturb --model SPEC --task NAME``: the curve of your own module."""
    from ..models.adapt import AdaptedModule
    from ..numerics.perturbation import crossing_point
    from ..train.perturb import EvalSet, perturbation_curve, perturbed_parameters
    from ..train.tasks import build_task
    from ._user_model import build_user_model, parse_readout

    if task is None:
        raise InvalidParameterError("--model needs --task NAME (the data to evaluate the "
                                    "loss on; see `rnnmem list tasks`)")
    model, kwargs = build_user_model(spec, weights=weights, model_args=model_args,
                                     device=device)
    patterns = list(params) or None
    if layout is not None or readout is not None:
        model = AdaptedModule(model, layout=layout, readout=parse_readout(readout, model))
        patterns = None if patterns is None else [f"inner.{q}" for q in patterns]
    perturbed_parameters(model, opts.get("scope", "recurrent"), patterns)  # fail early
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
    t = build_task(task, **dict(task_kwargs or {}))
    t.configure(device=device, dtype=dtype, seed=0)
    es = EvalSet.from_task(t, split, max_samples=max_samples)
    if progress:
        progress(f"{spec}: {task} ({es.n_samples} samples), {len(opts['betas'])} radii x "
                 f"{opts['repeats']} repeats")
    curve = perturbation_curve(model, es, parameters=patterns, **opts)
    crossings = {}
    for f in FACTORS:
        c = crossing_point(curve, f) if curve.e0 > 0 else None
        crossings[f"{f:g}x"] = None if c is None else {
            "beta": c.beta, "level": c.level, "censored": c.censored}
    info = {"task": task, "task_kwargs": dict(task_kwargs or {}),
            "split": split or t.eval_splits[0], "from": "option", "n_samples": es.n_samples}
    entry = {"checkpoint": str(spec), "model": type(model).__name__, "width": _width(kwargs),
             "task": info, "curve": curve, "crossings": crossings, "weights": weights}
    return {"curves": [entry], "verdict": None, "verdict_note": None}


def summary(res: dict) -> str:
    lines = []
    for e in res["curves"]:
        c = e["curve"]
        meta = c.meta
        lines.append(f"{e['model']} (width {e['width']}) {e['checkpoint']}")
        lines.append(f"  task {e['task']['task']} / {e['task']['split']}, "
                     f"{e['task']['n_samples']} samples; {meta['scope']} weights, "
                     f"{meta['norm']} norm = beta per tensor; {meta['repeats']} repeats; "
                     f"{meta['method']} in {meta['time_s']:.2f}s")
        mark = {"left": "<=", "right": ">", "none": ""}
        cr = "   ".join(
            f"beta0({k} E0) = " + ("n/a" if v is None else
                                   f"{mark[v['censored']]}{v['beta']:.3g}")
            for k, v in e["crossings"].items())
        lines.append(f"  E(0) = {c.e0:.6g}   {cr}")
        lines.append("        beta      sup_k E     envelope")
        for b, s, v in zip(c.betas, c.sup, c.envelope):
            lines.append(f"  {b:10.3e}  {s:11.4e}  {v:11.4e}")
    v = res.get("verdict")
    if v is not None:
        lines.append(f"stable approximation across widths {list(v.widths)}: {v.verdict.upper()}"
                     f" -- {v.reason}")
        lines.append(f"  level {v.level_rule}; beta0 = "
                     + ", ".join(f"{b:.3g}" for b in v.beta0))
    elif res.get("verdict_note"):
        lines.append(res["verdict_note"])
    return "\n".join(lines)


def to_json(res: dict) -> dict:
    return {"curves": [{**{k: v for k, v in e.items() if k != "curve"},
                        **e["curve"].to_dict()} for e in res["curves"]],
            "verdict": None if res["verdict"] is None else res["verdict"].to_dict(),
            "verdict_note": res.get("verdict_note")}


def plot(res: dict, path) -> None:
    from ..proofs_check._plot import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for e in res["curves"]:
        c = e["curve"]
        label = f"{e['model']} m={e['width']}" if e["width"] else e["model"]
        (line,) = ax.plot(c.betas, np.where(np.isfinite(c.envelope), c.envelope, np.nan),
                          marker="o", ms=3, label=label)
        bb = np.repeat(c.betas, c.samples.shape[1])
        ss = c.samples.ravel()
        ok = np.isfinite(ss) & (ss > 0)
        ax.scatter(bb[ok], ss[ok], s=4, alpha=0.25, color=line.get_color())
        ax.axhline(c.e0, color=line.get_color(), lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(r"perturbation radius $\beta$")
    ax.set_ylabel(r"perturbed error $E_m(\beta)$")
    v = res.get("verdict")
    ax.set_title("perturbation error" + (f": {v.verdict}" if v is not None else ""))
    ax.legend(fontsize=8)
    save_plot(fig, path)


def run(args) -> int:
    opts, task_kwargs, max_samples, level = _check_options(args)
    quiet_stdout = args.json == "-"
    progress = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    if bool(args.checkpoints) == bool(args.user_model):
        raise InvalidParameterError("give checkpoint(s) CKPT or --model SPEC (not both)")
    if args.user_model:
        res = compute_user(args.user_model, opts, weights=args.weights,
                           model_args=args.model_arg, layout=args.layout,
                           readout=args.readout, params=args.params, task=args.task,
                           task_kwargs=task_kwargs, split=args.split,
                           max_samples=max_samples, device=args.device, progress=progress)
    else:
        stray = [f for f, v in (("--weights", args.weights), ("--model-arg", args.model_arg),
                                ("--layout", args.layout), ("--readout", args.readout),
                                ("--params", args.params)) if v]
        if stray:
            raise InvalidParameterError(f"{stray[0]} needs --model")
        res = compute(args.checkpoints, opts, task=args.task, task_kwargs=task_kwargs,
                      split=args.split, max_samples=max_samples, level=level,
                      device=args.device, progress=progress)
    if args.plot:
        plot(res, args.plot)
    if args.json:
        emit_json(to_json(res), args.json)
    if not quiet_stdout:
        print(summary(res))
        if args.plot:
            print(f"plot: {args.plot}")
    return 0
