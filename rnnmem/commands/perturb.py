"""``rnnmem perturb``: the perturbation error :math:`E_m(\\beta)` of trained models.

For each checkpoint: rebuild the task it was trained on (or ``--task``), fix its held-out
split once, and estimate :math:`E_m(\\beta)` on a log grid of radii with
:func:`rnnmem.train.perturb.perturbation_curve` (Wang, Li & Li, ICLR 2024, Def. 3.4);
print E(0), the blow-up radius (the first radius where the envelope reaches
``--level-factor`` times the target's scale :math:`\\|y\\|^2`, the loss of the zero output)
and a table of the envelope. With three or more checkpoints of different widths
(the models' ``width``), also the verdict of
:func:`rnnmem.numerics.perturbation.blowup_verdict` (Def. 3.5, the rule the
curse-of-memory claims use), the intersections of consecutive widths' curves (the
original's reading), and whether each checkpoint's training rule (``stop_below``) held: a
width whose rule failed is reported, not judged.
"""

from __future__ import annotations

import sys

import numpy as np

from ..errors import InvalidParameterError
from .memory import add_output_arguments, emit_json, parse_positive, save_plot

NAME = "perturb"
HELP = "perturbation error E(beta) of trained models (stable-approximation test)"
ORDER = 31



def add_arguments(p):
    from ._user_model import add_user_model_arguments

    p.add_argument("checkpoints", nargs="*", metavar="CKPT",
                   help="checkpoint(s); three or more widths also give a stability verdict "
                        "(or --model)")
    p.add_argument("--betas", default="1e-3:1e0:21", metavar="LO:HI:N",
                   help="radii: N log-spaced from LO to HI, a comma list, or 'original' "
                        "(1e-3*2^(i/2), i=0..20) (default 1e-3:1e0:21)")
    p.add_argument("--repeats", default="30", metavar="K",
                   help="random perturbations per radius (default 30)")
    p.add_argument("--scope", default="recurrent", metavar="{recurrent,all}",
                   help="perturb the recurrent weights only (Def. 3.4, default) or all")
    p.add_argument("--norm", default="spectral",
                   metavar="{spectral,frobenius,max,inf,operator_inf}",
                   help="norm of each perturbed tensor (default spectral; vectors: max|v|; "
                        "inf: the original's torch.norm(p=inf), = max)")
    p.add_argument("--distribution", default="gaussian",
                   metavar="{gaussian,rademacher,deterministic}",
                   help="entries of the directions before scaling (default gaussian; "
                        "deterministic: -beta, one repeat)")
    p.add_argument("--direction-for", dest="direction_for", action="append", default=[],
                   metavar="NAME=DIST", help="distribution for the parameters named NAME "
                   "(e.g. W=deterministic, the original's Sept.-2023 rule), repeatable")
    p.add_argument("--directions", default="independent", metavar="{independent,shared}",
                   help="a new direction at every radius, or one per repeat shared by all "
                        "radii (the original) (default independent)")
    p.add_argument("--evaluation-form", dest="evaluation_form", action="store_true",
                   help="perturb the model's evaluation form (relu models: eigenvalues "
                        "used directly, as the original)")
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
    p.add_argument("--level-factor", dest="level_factor", default="1", metavar="F",
                   help="blow-up level as a multiple of the target's scale |y|^2, the loss "
                        "of the zero output (default 1)")
    p.add_argument("--target-scale", dest="target_scale", metavar="S",
                   help="the target's scale instead of |y|^2 of the evaluation set")
    p.add_argument("--level", metavar="E",
                   help="absolute blow-up level (overrides --level-factor)")
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


def _user_width(model, kwargs: dict):
    """Your module's width: its ``width`` attribute, else the factory's ``width`` or
    ``hidden_size`` argument (torch's name for it), else ``None``."""
    w = _width(model)
    if w is None:
        w = _width(type("_W", (), {"width": kwargs.get("width", kwargs.get("hidden_size"))}))
    return w


def _check_options(args):
    from ..limits import parse_count, parse_seed
    from ..numerics.perturbation import parse_betas
    from ..train.perturb import DISTRIBUTIONS, METHODS, NORMS, SCOPES, _check_choice
    from .train import parse_assignments

    by_name = {}
    for item in args.direction_for:
        name, eq, dist = item.partition("=")
        if not eq or not name or not dist:
            raise InvalidParameterError(f"--direction-for: expected NAME=DIST, got {item!r}")
        by_name[name] = _check_choice(dist, DISTRIBUTIONS, "distribution")
    if args.directions not in ("independent", "shared"):
        raise InvalidParameterError(f"--directions: 'independent' or 'shared', got "
                                    f"{args.directions!r}")
    opts = {"betas": parse_betas(args.betas),
            "repeats": parse_count(args.repeats, "--repeats"),
            "seed": parse_seed(args.seed, "--seed"),
            "scope": _check_choice(args.scope, SCOPES, "perturbation scope"),
            "norm": _check_choice(args.norm, NORMS, "perturbation norm"),
            "distribution": _check_choice(args.distribution, DISTRIBUTIONS, "distribution"),
            "method": _check_choice(args.method, METHODS, "evaluation method"),
            "shared_directions": args.directions == "shared",
            "evaluation_form": bool(args.evaluation_form)}
    if by_name:
        opts["distribution_by_name"] = by_name
    if opts["repeats"] > 1 and opts["distribution"] == "deterministic" and not by_name:
        from ..errors import ConflictingOptionsError

        raise ConflictingOptionsError("--distribution deterministic",
                                      f"--repeats {opts['repeats']}", "a deterministic "
                                      "direction gives the same perturbation every time")
    task_kwargs = parse_assignments(args.task_arg, "--task-arg")
    if task_kwargs and not args.task:
        raise InvalidParameterError("--task-arg needs --task")
    max_samples = None if args.max_samples is None else parse_positive(
        args.max_samples, "--max-samples", integer=True, minimum=1)
    level = {"level": None if args.level is None else parse_positive(args.level, "--level"),
             "level_factor": parse_positive(args.level_factor, "--level-factor"),
             "target_scale": None if args.target_scale is None
             else parse_positive(args.target_scale, "--target-scale")}
    return opts, task_kwargs, max_samples, level


def compute(paths, opts: dict, *, task=None, task_kwargs=None, split=None, max_samples=None,
            level=None, device="cpu", progress=None) -> dict:
    """Curves (and a verdict) for ``paths``; the dict ``rnnmem perturb --json`` prints."""
    from ..models.registry import load
    from ..numerics.perturbation import blowup_radius, blowup_verdict
    from ..train.perturb import eval_set_from_checkpoint, perturbation_curve

    rule = {"level": None, "level_factor": 1.0, "target_scale": None}
    if isinstance(level, dict):
        rule.update(level)
    elif level is not None:  # an absolute level (the former signature)
        rule["level"] = level
    entries = []
    for path in paths:
        model = load(path, device=device)
        es, info = eval_set_from_checkpoint(path, model, task=task, task_kwargs=task_kwargs,
                                            split=split, max_samples=max_samples)
        _check_against_model(model, opts)  # contradictions fail before any message
        if progress:
            progress(f"{path}: {info['task']} / {info['split']} ({es.n_samples} samples), "
                     f"{len(opts['betas'])} radii x {opts['repeats']} repeats")
        curve = perturbation_curve(model, es, **opts)
        lv = rule["level"] if rule["level"] is not None else rule["level_factor"] * (
            rule["target_scale"] or curve.meta["target_scale"])
        b = blowup_radius(curve, lv) if lv > 0 else None
        entries.append({"checkpoint": str(path),
                        "model": getattr(model, "model_name", type(model).__name__),
                        "width": _width(model), "task": info, "curve": curve,
                        "training": _training_status(path),
                        "blowup": None if b is None else {
                            "beta": b.beta, "level": b.level, "censored": b.censored}})
    verdict, note = None, None
    widths = [e["width"] for e in entries]
    if len(entries) >= 3:
        if None in widths or len(set(widths)) != len(widths):
            note = "no verdict: the checkpoints need distinct widths (model option width)"
        else:
            verdict = blowup_verdict({e["width"]: e["curve"] for e in entries},
                                     training={e["width"]: e["training"] for e in entries},
                                     **rule)
    return {"curves": entries, "verdict": verdict, "verdict_note": note}


def compute_user(spec, opts: dict, *, weights=None, model_args=(), layout=None,
                 readout=None, params=(), task=None, task_kwargs=None, split=None,
                 max_samples=None, level=None, device="cpu", progress=None) -> dict:
    """``rnnmem perturb --model SPEC --task NAME``: the curve of your own module."""
    from ..models.adapt import AdaptedModule
    from ..numerics.perturbation import blowup_radius
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
    rule = {"level": None, "level_factor": 1.0, "target_scale": None, **(level or {})}
    lv = rule["level"] if rule["level"] is not None else rule["level_factor"] * (
        rule["target_scale"] or curve.meta.get("target_scale") or 0.0)
    b = blowup_radius(curve, lv) if lv > 0 else None
    info = {"task": task, "task_kwargs": dict(task_kwargs or {}),
            "split": split or t.eval_splits[0], "from": "option", "n_samples": es.n_samples}
    entry = {"checkpoint": str(spec), "model": type(model).__name__, "width": _user_width(model, kwargs),
             "task": info, "curve": curve, "training": "ok", "weights": weights,
             "blowup": None if b is None else {
                 "beta": b.beta, "level": b.level, "censored": b.censored}}
    return {"curves": [entry], "verdict": None, "verdict_note": None}


def _check_against_model(model, opts: dict) -> None:
    """The direction options against the parameters they perturb (one-line errors)."""
    from ..train.perturb import check_direction_options, perturbed_parameters

    target = model.evaluation_form() if opts.get("evaluation_form") else model
    params = perturbed_parameters(target, opts.get("scope", "recurrent"))
    check_direction_options({n: (tuple(p.shape), p.is_complex()) for n, p in params.items()},
                            norm=opts.get("norm", "spectral"),
                            distribution=opts.get("distribution", "gaussian"),
                            repeats=opts.get("repeats", 1),
                            distribution_by_name=opts.get("distribution_by_name"))


def _training_status(path) -> str:
    """``"ok"``, or why the checkpoint's training rule (``stop_below``) failed."""
    from ..errors import CheckpointError
    from ..train import load_train_state

    try:
        cfg, st = load_train_state(path)
    except CheckpointError:
        return "ok"  # no training state: no rule to check
    best = st.get("best_loss")
    if cfg.stop_below is None:
        return "ok"
    if best is None or not best < cfg.stop_below:
        return (f"rule failed: best validation loss {best if best is None else f'{best:.4g}'}"
                f" not below {cfg.stop_below:.4g} in {st.get('step')} steps")
    return "ok"


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
        b = e["blowup"]
        cr = "n/a" if b is None else f"{mark[b['censored']]}{b['beta']:.3g}"
        scale = meta.get("target_scale")
        level = "" if b is None else f" (E >= {b['level']:.4g})"
        lines.append(f"  E(0) = {c.e0:.6g}   |y|^2 = "
                     + ("n/a" if scale is None else f"{scale:.6g}")
                     + f"   blow-up radius{level} = {cr}")
        if e.get("training", "ok") != "ok":
            lines.append(f"  training: {e['training']}")
        lines.append("        beta      sup_k E     envelope")
        for b, s, v in zip(c.betas, c.sup, c.envelope):
            lines.append(f"  {b:10.3e}  {s:11.4e}  {v:11.4e}")
    v = res.get("verdict")
    if v is not None:
        lines.append(f"stable approximation across widths {list(v.widths)}: {v.verdict.upper()}"
                     f" -- {v.reason}")
        lines.append(f"  level {v.level_rule}; blow-up radii = "
                     + ", ".join(f"{b:.3g}" for b in v.beta0)
                     + f"; slope {v.slope:.3g}, regression CI {v.regression_ci[0]:.3g}.."
                     f"{v.regression_ci[1]:.3g}, bootstrap CI {v.bootstrap_ci[0]:.3g}.."
                     f"{v.bootstrap_ci[1]:.3g}")
        lines.append("  intersections of consecutive curves (the original's reading): "
                     + ", ".join(f"{i.narrow}/{i.wide}: "
                                 + (f"{i.beta:.3g}" if i.kind == "crossing" else i.kind)
                                 for i in v.intersections))
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
        b = e.get("blowup")
        if b is not None and b["censored"] == "none":
            ax.plot([b["beta"]], [b["level"]], marker="x", ms=8, color=line.get_color())
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(r"perturbation radius $\beta$")
    ax.set_ylabel(r"perturbed error $E_m(\beta)$")
    v = res.get("verdict")
    if v is not None:
        ax.axhline(v.level, color="k", lw=0.8, ls="--", label="blow-up level")
        by_m = {e["width"]: e["curve"] for e in res["curves"]}
        for i in v.intersections:  # the original's reading, marked on the wider curve
            if i.kind == "crossing":
                c = by_m[i.wide]
                y = float(np.exp(np.interp(np.log(i.beta), np.log(c.betas),
                                           np.log(np.maximum(c.envelope, 1e-300)))))
                ax.plot([i.beta], [y], marker="D", ms=5, mfc="none", color="k")
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
                           max_samples=max_samples, level=level, device=args.device,
                           progress=progress)
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
