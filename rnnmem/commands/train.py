"""``rnnmem train``: train a registered model on a registered task.

Options ``--model-arg`` / ``--task-arg`` take ``key=value`` pairs whose values are read by
:func:`parse_value`, a safe literal parser (:func:`ast.literal_eval` restricted to numbers,
strings, booleans, ``None``, lists, tuples and dicts of those; never ``eval``); a value that
is not a literal is kept as a string, so ``--task-arg lengths=1:40`` passes ``"1:40"``.
"""

from __future__ import annotations

import argparse
import ast
import math
import sys
from pathlib import Path

from ..errors import InvalidParameterError

NAME = "train"
HELP = "train a model on a task (metrics, checkpoints, resume)"
ORDER = 20

_WORDS = {"true": True, "false": False, "none": None, "null": None}
#: command-line flag -> TrainConfig field, for the plain scalar options
_FLAGS = {
    "steps": int, "epochs": int, "batch_size": int, "lr": float, "weight_decay": float,
    "momentum": float, "optimizer": str, "schedule": str, "warmup": int, "min_lr": float,
    "plateau_factor": float, "plateau_patience": int, "grad_clip": float,
    "target_loss": float, "dtype": str, "precision": str, "adam_eps": float, "device": str, "threads": int,
    "seed": int,
    "temporal_weighting": float, "eval_every": int, "checkpoint_every": int,
    "freeze": str, "freeze_after": int, "bptt": int,
    "margin_penalty": float, "margin_target": float, "stop_below": float,
    "stop_below_after": int,
}


def _check_literal(v, text):
    if isinstance(v, bool) or v is None or isinstance(v, (int, str)):
        return v
    if isinstance(v, float):
        if not math.isfinite(v):
            raise InvalidParameterError(f"value {text!r} is not finite")
        return v
    if isinstance(v, (list, tuple)):
        return [_check_literal(x, text) for x in v]
    if isinstance(v, dict):
        return {_check_literal(k, text): _check_literal(x, text) for k, x in v.items()}
    raise InvalidParameterError(f"value {text!r} is a {type(v).__name__}; use numbers, "
                                "strings, booleans, lists or dicts")


def parse_value(text: str):
    """A command-line value as a Python literal, or the string itself.

    ``"3"`` -> 3, ``"1e-3"`` -> 0.001, ``"true"``/``"True"`` -> True, ``"none"`` -> None,
    ``"[1, 2]"`` -> [1, 2], ``"'a'"`` -> ``"a"``, ``"lstm"`` -> ``"lstm"``. Tuples become
    lists (configs are JSON). Complex numbers, sets, bytes and non-finite floats are refused.
    """
    s = text.strip()
    if s.lower() in _WORDS:
        return _WORDS[s.lower()]
    try:
        v = ast.literal_eval(s)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text
    return _check_literal(v, text)


def parse_assignments(items, what: str) -> dict:
    """``["k=v", ...]`` -> ``{k: parse_value(v)}``; a malformed item raises."""
    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise InvalidParameterError(f"{what} {item!r} must look like key=value")
        if key in out:
            raise InvalidParameterError(f"{what} {key!r} given twice")
        out[key] = parse_value(value)
    return out


def _convert(name: str, typ, text: str):
    flag = "--" + name.replace("_", "-")
    if typ is str:
        return text
    if typ is float and text.strip().lower() in ("none", "off"):
        return None  # e.g. --grad-clip none
    try:
        v = typ(text)
    except ValueError:
        kind = "an integer" if typ is int else "a number"
        raise InvalidParameterError(f"{flag}: expected {kind}, got {text!r}") from None
    return v


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("what to train")
    g.add_argument("--model", help="a registered model (see `rnnmem list models`)")
    g.add_argument("--task", help="a task: lf:<target>, lang:<language>, ptb, npz (see `rnnmem list tasks`)")
    g.add_argument("--model-arg", action="append", metavar="K=V", default=[],
                   help="model option, repeatable (e.g. --model-arg width=8)")
    g.add_argument("--task-arg", action="append", metavar="K=V", default=[],
                   help="task option, repeatable (e.g. --task-arg length=50)")
    g.add_argument("--config", metavar="FILE.json",
                   help="start from a TrainConfig JSON file (flags override it)")
    from ..train.config import DTYPE_NAMES, FREEZE_MODES, OPTIMIZERS, PRECISIONS, SCHEDULES

    shown = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES, "dtype": DTYPE_NAMES,
             "precision": PRECISIONS, "freeze": FREEZE_MODES}
    o = p.add_argument_group("optimisation (defaults: rnnmem.train.TrainConfig)")
    for name, typ in _FLAGS.items():
        flag = "--" + name.replace("_", "-")
        meta = "{" + ",".join(shown[name]) + "}" if name in shown else typ.__name__.upper()
        # parsed in _config_from_args, so that a bad value is one line, not argparse's usage
        o.add_argument(flag, dest=name, default=None, metavar=meta)
    r = p.add_argument_group("output")
    r.add_argument("--out", metavar="DIR",
                   help="output directory: metrics.csv/json, config.json, last.pt, best.pt")
    r.add_argument("--resume", action="store_true",
                   help="continue from DIR/last.pt (model/task default to the stored ones)")
    r.add_argument("--force", action="store_true",
                   help="replace the run that DIR holds (refused otherwise)")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _config_from_args(args):
    from ..train import TrainConfig, load_train_state

    if not args.out:
        raise InvalidParameterError("--out DIR is required")
    from ..errors import CheckpointError, RnnmemError
    from ..files import read_json

    base: dict = {}
    last = Path(args.out) / "last.pt"
    if args.resume and args.force:
        raise InvalidParameterError("--resume and --force exclude each other")
    if args.resume and last.exists() and not last.is_file():
        raise CheckpointError(f"--resume: {str(last)!r} is a directory, not a checkpoint "
                              "(nothing was trained)")
    if args.config:
        try:
            base = read_json(args.config)
        except RnnmemError as exc:
            raise InvalidParameterError(f"--config: {exc}") from None
        if not isinstance(base, dict):
            raise InvalidParameterError(f"--config: {args.config!r} must hold a JSON object")
    elif args.resume and last.is_file():
        base = load_train_state(last)[0].to_dict()
    if args.model:
        base["model"] = args.model
    if args.task:
        base["task"] = args.task
    for flag, key in (("model_arg", "model_kwargs"), ("task_arg", "task_kwargs")):
        given = parse_assignments(getattr(args, flag), "--" + flag.replace("_", "-"))
        if given:
            base[key] = {**base.get(key, {}), **given}
    for name, typ in _FLAGS.items():
        v = getattr(args, name)
        if v is not None:
            base[name] = _convert(name, typ, v)
    base["out_dir"] = str(args.out)
    for need in ("model", "task"):
        if not base.get(need):
            raise InvalidParameterError(f"--{need} is required (or --resume from a run)")
    return TrainConfig.from_dict(base)


def run(args) -> int:
    from ..train import train

    config = _config_from_args(args)
    result = train(config, resume=args.resume, progress=not args.quiet, force=args.force)
    print(result.summary())
    print(f"metrics: {Path(config.out_dir) / 'metrics.csv'}")
    if result.stopped in ("interrupted", "callback"):
        print(f"rnnmem train: interrupted at step {result.steps}; continue with --resume",
              file=sys.stderr)
        return 130
    return 0
