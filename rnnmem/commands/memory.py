"""``rnnmem memory``: the memory function of a trained model, its decay, and its target.

Loads a checkpoint, computes the memory function (Wang, Li & Li, ICLR 2024, Def. 3.1) on
``t = linspace(0, t_max, n_points)`` -- in closed form for linear models
(``DiagonalSSM`` and the linear configurations of the other models), by the black-box
estimator :func:`rnnmem.numerics.memory_function` otherwise or with ``--black-box`` --,
classifies its decay (:func:`rnnmem.numerics.classify_decay`; for an exact memory on its
running tail supremum, so that zeros of a sign-changing kernel do not hide the decay) and
overlays the memory of the
target: :math:`\\|c\\|_1|\\rho(t)|` of the linear functional the checkpoint was trained on
(``lf:<target>`` tasks, with the task's parameters), or :math:`|\\rho(t)|` of ``--target``.

Discrete-time models are evaluated on the multiples of ``dt`` in ``[0, t_max]`` (their
memory lives on that grid).

Your own model: ``rnnmem memory --model pkg.module:factory`` (or ``path/file.py:Name``)
``--weights state_dict.pt --model-arg k=v [--layout TBD] [--readout head]`` runs
:func:`rnnmem.memory_function` (checks, warm-up, baseline, amplitude search; ``--dt``,
``--input-dim``, ``--amplitudes``, ``--no-check``) on the module the factory returns (see
:mod:`rnnmem.commands._user_model`).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

from ..errors import InvalidParameterError, exception_text

NAME = "memory"
HELP = "memory function of a trained model (exact or black-box), its decay and its target"
ORDER = 30


def add_arguments(p):
    from ._user_model import add_user_model_arguments

    p.add_argument("checkpoint", metavar="CKPT", nargs="?",
                   help="a checkpoint (e.g. run/best.pt), or --model")
    p.add_argument("--t-max", dest="t_max", metavar="T",
                   help="largest time (default: the training sequence length x dt, or 100 dt)")
    p.add_argument("--n-points", dest="n_points", metavar="N", default="200",
                   help="number of times in [0, T] (default 200)")
    p.add_argument("--black-box", dest="black_box", action="store_true",
                   help="use the Def. 3.1 estimator even when a closed form exists")
    p.add_argument("--target", metavar="NAME",
                   help="overlay this target memory (see `rnnmem list targets`) instead of "
                        "the one of the training task")
    add_user_model_arguments(p)
    g = p.add_argument_group("estimator options for --model")
    g.add_argument("--dt", metavar="DT", help="sampling step of --model (default: its dt "
                                              "attribute, else 1)")
    g.add_argument("--input-dim", dest="input_dim", metavar="D",
                   help="input size of --model when it cannot be read from the module")
    g.add_argument("--amplitudes", metavar="A,B,...",
                   help="amplitudes of the sup in Def. 3.1 (default: the 1e-2..10 grid)")
    g.add_argument("--no-check", dest="no_check", action="store_true",
                   help="skip the causality / time-invariance checks (recorded)")
    add_output_arguments(p, plot_help="write a log-scale plot",
                         device_help="device to load the model on (default cpu)")


# ----------------------------------------------------------------------------- helpers
def add_output_arguments(p, *, plot_help: str, device_help: str) -> None:
    """The last options of a checkpoint command: ``--json [FILE]`` (for :func:`emit_json`;
    ``-``, the bare flag, is stdout), ``--plot FILE.png`` (for :func:`save_plot`) and
    ``--device`` (default cpu)."""
    p.add_argument("--json", nargs="?", const="-", metavar="FILE",
                   help="print the result as JSON (or write it to FILE)")
    p.add_argument("--plot", metavar="FILE.png", help=plot_help)
    p.add_argument("--device", default="cpu", help=device_help)


def parse_positive(text, flag: str, *, integer: bool = False, minimum: float = 0.0):
    """A command-line number > ``minimum`` (>= for integers), or one-line error."""
    try:
        v = int(text) if integer else float(text)
    except (TypeError, ValueError):
        kind = "an integer" if integer else "a number"
        raise InvalidParameterError(f"{flag}: expected {kind}, got {text!r}") from None
    if integer:
        if v < minimum:
            raise InvalidParameterError(f"{flag} must be >= {int(minimum)}, got {v}")
        return v
    if not math.isfinite(v) or v <= minimum:
        raise InvalidParameterError(f"{flag} must be a finite number > {minimum:g}, got {text!r}")
    return v


def train_info(path):
    """The TrainConfig stored in a checkpoint by the training loop, or None."""
    from ..errors import CheckpointError
    from ..train import load_train_state

    try:
        return load_train_state(path)[0]
    except CheckpointError:
        return None


def jsonable(obj):
    """Plain JSON values (the one rule of :func:`rnnmem.files.to_jsonable`: non-finite
    floats are ``null``)."""
    from ..files import to_jsonable

    return to_jsonable(obj)


def emit_json(obj, dest: str) -> None:
    """Print ``obj`` as JSON (``dest == "-"``) or write it to ``dest`` atomically; a path
    that cannot be written is a named :class:`rnnmem.errors.StorageError`."""
    from ..files import atomic_write

    text = json.dumps(jsonable(obj), indent=1, allow_nan=False)
    if dest == "-":
        print(text)
        return
    atomic_write(dest, text + "\n")


def save_plot(fig, path) -> None:
    """Write the figure of ``--plot`` atomically; an unwritable ``path`` or a format
    matplotlib cannot write is a one-line named error."""
    from ..proofs_check._plot import save

    save(fig, path)


def _task_target(cfg):
    """(TargetMemory-like object with .memory(t), description, data dt) of an lf task."""
    if cfg is None or not isinstance(cfg.task, str) or not cfg.task.startswith("lf:"):
        return None
    name = cfg.task[3:]
    from ..theory.targets import TARGETS

    if name not in TARGETS:
        return None  # e.g. teacher tasks: no closed-form target family
    from ..tasks.datasets import FUNCTIONAL_TASKS
    from ..tasks.functional import LinearFunctionalTask

    kw = dict(cfg.task_kwargs)
    tgt = TARGETS[name]
    params = {k: kw[k] for k in tgt.param_values if k in kw}
    if params:
        tgt = tgt.with_params(**params)
    defaults = FUNCTIONAL_TASKS[name].options
    dt = float(kw.get("dt", defaults.get("dt", 1.0)))
    lf = LinearFunctionalTask(tgt, dt=dt, input_dim=int(kw.get("input_dim",
                                                               defaults.get("input_dim", 1))),
                              input_weights=kw.get("input_weights"))
    return lf, tgt, dt


def _memory(model, t, black_box: bool):
    """(M (L,) or (L, p), method): the closed form of a linear model, else (or with
    ``--black-box``) the Def. 3.1 estimator, through the model contract's
    ``memory_function(t, method=...)``."""
    exact = bool(model.is_linear) and not black_box
    try:
        M = model.memory_function(t, method="closed_form" if exact else "estimator")
    except (RuntimeError, NotImplementedError) as exc:
        raise InvalidParameterError(
            f"cannot compute the memory function of {type(model).__name__}: "
            f"{type(exc).__name__}: {exception_text(exc)}") from None
    return np.asarray(M, dtype=float), ("exact" if exact else "black-box")


def compute(path, *, t_max=None, n_points=200, black_box=False, target=None,
            device="cpu") -> dict:
    """Everything ``rnnmem memory`` reports, as a dict (see the module docstring)."""
    from ..models.registry import load
    from ..numerics import classify_decay

    if target is not None:
        from ..theory.targets import get_target

        get_target(target)  # fail fast on an unknown name
    model = load(path, device=device)
    cfg = train_info(path)
    dt = float(model.dt)
    if t_max is None:
        length = None
        if cfg is not None:
            length = dict(cfg.task_kwargs).get("length")
            if length is None and isinstance(cfg.task, str) and cfg.task.startswith("lf:"):
                from ..tasks.datasets import FUNCTIONAL_TASKS

                spec = FUNCTIONAL_TASKS.get(cfg.task[3:])
                length = spec.options.get("length") if spec is not None else None
        t_max = dt * (int(length) if isinstance(length, int) and length > 1 else 100)
    from ..limits import check_count, check_memory

    n_points = check_count(n_points, "n_points", minimum=2)
    width = max(int(v) for v in (getattr(model, "state_dim", 0), getattr(model, "width", 0), 1)
                if isinstance(v, int))
    # times, the (L, N) complex modes and the (L, p, d) response (estimated first)
    check_memory(8.0 * n_points * (4 + 2 * width), f"n_points={n_points} (width {width})",
                 "use fewer points")
    t = np.linspace(0.0, float(t_max), int(n_points))
    if model.time == "discrete":
        t = dt * np.unique(np.round(t / dt))
    M, method = _memory(model, t, black_box)
    M1 = M if M.ndim == 1 else M.max(axis=1)
    # an exact memory has no noise: fit its tail supremum, so that the zeros of a
    # sign-changing kernel do not hide the decay (classify_decay's envelope option)
    envelope = method == "exact"
    fit = classify_decay(t, M1, envelope=envelope)
    out = {"checkpoint": str(path), "model": getattr(model, "model_name", type(model).__name__),
           "config": dict(model.config), "method": method, "t": t, "memory": M,
           "decay": decay_dict(fit, envelope),
           "task": None if cfg is None else {"name": cfg.task,
                                              "kwargs": dict(cfg.task_kwargs)},
           "target": None}
    if M.ndim == 2:
        out["memory_max_over_outputs"] = M1
    _add_target(out, t, M1, target, cfg, dt)
    return out


def decay_dict(fit, envelope: bool) -> dict:
    """A :class:`~rnnmem.numerics.DecayFit` as JSON, its parameter named by kind (``rate``
    is None for a polynomial fit, ``exponent`` None for an exponential one)."""
    return {"kind": fit.kind, "parameter": fit.parameter,
            "parameter_name": fit.parameter_name,
            "rate": fit.parameter if fit.kind != "polynomial" else None,
            "exponent": fit.parameter if fit.kind == "polynomial" else None,
            "r2_exp": fit.r2_exp, "r2_pol": fit.r2_pol, "exp_fit": list(fit.exp_fit),
            "pol_fit": list(fit.pol_fit), "tail_start": fit.tail_start,
            "n_points": fit.n_points, "envelope": envelope}


def _add_target(out: dict, t, M1, target, cfg, dt: float = 1.0) -> None:
    tinfo = None
    if target is not None:
        from ..theory.targets import get_target

        tgt = get_target(target)
        tinfo = {"name": tgt.name, "params": tgt.param_values, "from": "option",
                 "decay_class": tgt.decay_class, "memory": tgt.memory(t)}
    else:
        found = _task_target(cfg)
        if found is not None:
            lf, tgt, data_dt = found
            # the model's sample k is the data's sample k: rescale time if the dts differ
            tt = t * (data_dt / dt)
            tinfo = {"name": tgt.name, "params": tgt.param_values, "from": "checkpoint",
                     "decay_class": tgt.decay_class, "memory": lf.memory(tt)}
    if tinfo is not None:
        diff = np.abs(M1 - tinfo["memory"])
        tinfo["max_abs_diff"] = float(diff.max())
        denom = float(np.trapezoid(tinfo["memory"], t)) if t.size > 1 else 0.0
        tinfo["rel_l1_diff"] = float(np.trapezoid(diff, t) / denom) if denom > 0 else None
        out["target"] = tinfo


def parse_amplitudes(text):
    """``--amplitudes``: ``default`` or a comma list of positive numbers."""
    if text is None or text.strip() == "default":
        return "default"
    vals = [parse_positive(v, "--amplitudes") for v in text.split(",") if v.strip()]
    if not vals:
        raise InvalidParameterError(f"--amplitudes: expected numbers, got {text!r}")
    return vals


def compute_user(spec, *, weights=None, model_args=(), layout=None, readout=None,
                 t_max=None, n_points=200, dt=None, input_dim=None, amplitudes="default",
                 check=True, target=None, device="cpu") -> dict:
    """``rnnmem memory --model SPEC``: the checked Def. 3.1 estimate of your own module."""
    from ..models.adapt import memory_function as user_memory
    from ..numerics import classify_decay
    from ._user_model import build_user_model, parse_readout

    if target is not None:
        from ..theory.targets import get_target

        get_target(target)  # fail fast on an unknown name
    model, kwargs = build_user_model(spec, weights=weights, model_args=model_args,
                                     device=device)
    if dt is None:
        dt = float(getattr(model, "dt", 1.0))
    t_max = 100.0 * dt if t_max is None else t_max
    t = dt * np.unique(np.round(np.linspace(0.0, float(t_max), int(n_points)) / dt))
    est = user_memory(model, t, dt=dt, input_dim=input_dim, layout=layout,
                      readout=parse_readout(readout, model), amplitudes=amplitudes,
                      check=check)
    M = np.asarray(est.values, dtype=float)
    M1 = M if M.ndim == 1 else M.max(axis=1)
    fit = classify_decay(t, M1)
    out = {"checkpoint": str(spec), "model": type(model).__name__, "config": kwargs,
           "weights": weights, "method": "black-box (Def. 3.1, sup over directions and "
                                         "amplitudes, checked)",
           "t": t, "memory": M, "decay": decay_dict(fit, False), "task": None,
           "target": None,
           "estimate": {k: v for k, v in est.to_dict().items()
                        if k in ("amplitude", "amplitudes", "warmup_steps", "drift",
                                 "checks", "checks_skipped", "check_rtol", "baseline")}}
    if M.ndim == 2:
        out["memory_max_over_outputs"] = M1
    _add_target(out, t, M1, target, None, dt)
    return out


def summary(res: dict) -> str:
    t, M1 = np.asarray(res["t"]), np.asarray(res.get("memory_max_over_outputs", res["memory"]))
    d = res["decay"]
    lines = [f"{res['model']} ({res['checkpoint']}): memory function, {res['method']}, "
             f"t in [0, {t[-1]:.4g}] ({t.size} points)",
             f"  M(0) = {M1[0]:.4g}   M(t_max) = {M1[-1]:.4g}"]
    if d["kind"] == "exponential":
        lines.append(f"  decay: exponential, M ~ e^(-{d['parameter']:.4g} t), rate "
                     f"{d['parameter']:.4g}   (R^2 exp "
                     f"{d['r2_exp']:.4f}, pol {d['r2_pol']:.4f}; tail from t = "
                     f"{d['tail_start']:.4g})")
    elif d["kind"] == "polynomial":
        lines.append(f"  decay: polynomial, M ~ (1+t)^(-{d['parameter']:.4g}), exponent "
                     f"{d['parameter']:.4g}   (R^2 pol "
                     f"{d['r2_pol']:.4f}, exp {d['r2_exp']:.4f}; tail from t = "
                     f"{d['tail_start']:.4g})")
    else:
        lines.append("  decay: none detected")
    est = res.get("estimate")
    if est is not None:
        amp = np.asarray(est["amplitude"], dtype=float)
        checks = ", ".join(f"{k} {v:.2g}" for k, v in est["checks"].items() if v is not None)
        lines.append(f"  warm-up {est['warmup_steps']} steps; zero-input drift "
                     f"{est['drift']:.3g}; arg-sup amplitude {amp.min():.3g}..{amp.max():.3g}"
                     f"; checks: {checks or 'skipped'}"
                     + (f" (tolerance {est['check_rtol']:.2g})" if checks else ""))
    tg = res.get("target")
    if tg is None:
        lines.append("  target: unknown (pass --target NAME to compare)")
    else:
        params = ", ".join(f"{k}={v:g}" for k, v in tg["params"].items())
        rel = tg.get("rel_l1_diff")
        lines.append(f"  target: {tg['name']}{f' ({params})' if params else ''}, from the "
                     f"{tg['from']}; decay class {tg['decay_class']}; max |M - M_target| = "
                     f"{tg['max_abs_diff']:.3g}" + (f", relative L1 {rel:.3g}"
                                                     if rel is not None else ""))
    return "\n".join(lines)


def plot(res: dict, path) -> None:
    from ..proofs_check._plot import pyplot

    plt = pyplot()
    t, M = np.asarray(res["t"]), np.asarray(res["memory"], dtype=float)
    fig, ax = plt.subplots(figsize=(6, 4))
    cols = M[:, None] if M.ndim == 1 else M
    for o in range(cols.shape[1]):
        y = np.where(cols[:, o] > 0, cols[:, o], np.nan)
        ax.plot(t, y, label="model" if cols.shape[1] == 1 else f"model, output {o}")
    tg = res.get("target")
    if tg is not None:
        y = np.asarray(tg["memory"], dtype=float)
        ax.plot(t, np.where(y > 0, y, np.nan), "k--", label=f"target {tg['name']}")
    d = res["decay"]
    tail = t >= d["tail_start"]
    if d["kind"] == "exponential":
        a, r = d["exp_fit"]
        ax.plot(t[tail], np.exp(a - r * t[tail]), ":", label=f"fit e^(-{r:.3g} t)")
    elif d["kind"] == "polynomial":
        a, q = d["pol_fit"]
        ax.plot(t[tail], np.exp(a - q * np.log1p(t[tail])), ":",
                label=f"fit (1+t)^(-{q:.3g})")
    ax.set_yscale("log")
    ax.set_xlabel("t")
    ax.set_ylabel("memory function M(t)")
    ax.set_title(f"{res['model']}: {res['method']} memory, decay {d['kind']}")
    ax.legend(fontsize=8)
    save_plot(fig, path)


def run(args) -> int:
    t_max = None if args.t_max is None else parse_positive(args.t_max, "--t-max")
    n_points = parse_positive(args.n_points, "--n-points", integer=True, minimum=2)
    if (args.checkpoint is None) == (args.user_model is None):
        raise InvalidParameterError("give a checkpoint CKPT or --model SPEC (exactly one)")
    if args.user_model is None:
        stray = [f for f, v in (("--weights", args.weights), ("--model-arg", args.model_arg),
                                ("--layout", args.layout), ("--readout", args.readout),
                                ("--dt", args.dt), ("--input-dim", args.input_dim),
                                ("--amplitudes", args.amplitudes)) if v]
        if stray:
            raise InvalidParameterError(f"{stray[0]} needs --model")
        res = compute(args.checkpoint, t_max=t_max, n_points=n_points,
                      black_box=args.black_box, target=args.target, device=args.device)
    else:
        res = compute_user(
            args.user_model, weights=args.weights, model_args=args.model_arg,
            layout=args.layout, readout=args.readout, t_max=t_max, n_points=n_points,
            dt=None if args.dt is None else parse_positive(args.dt, "--dt"),
            input_dim=None if args.input_dim is None else parse_positive(
                args.input_dim, "--input-dim", integer=True, minimum=1),
            amplitudes=parse_amplitudes(args.amplitudes), check=not args.no_check,
            target=args.target, device=args.device)
    if args.plot:
        plot(res, args.plot)
    if args.json:
        emit_json(res, args.json)
        if args.json != "-":
            print(summary(res))
    else:
        print(summary(res))
    if args.plot:
        print(f"plot: {args.plot}", file=sys.stderr if args.json == "-" else sys.stdout)
    return 0
