"""``rnnmem evaluate``: length generalisation of a checkpoint (``lang:``, ``dm:`` or ``ns:`` task).

``--protocol`` chooses the measurement (default ``auto``: ``bins`` for ``lang:``, ``dm`` for
``dm:``, ``ns`` for ``ns:`` checkpoints):

* ``dm`` -- DeepMind's protocol (:func:`rnnmem.train.length_protocols.evaluate_dm`): every
  length of ``--lengths`` (default 41:500) with ``--k`` strings each (default 512),
  masked per-token accuracy, score = mean over lengths; ``--stack-depth model,sequence,30``
  runs the same weights at several stack depths side by side (``--stack-overflow drop``
  lets a fixed depth drop its bottom as DeepMind's does; the default refuses).
* ``ns`` -- DuSell & Chiang's cross-entropy above the per-length lower bound
  (:func:`rnnmem.train.length_protocols_ns.evaluate_ns`).
* ``bins`` -- the string accuracy per length bin described below.

The language, the task mode (next-symbol or recognition) and the training lengths are read
from the training configuration stored in the checkpoint
(:func:`rnnmem.train.load_train_state`); accuracy is measured by
:func:`rnnmem.train.evaluate.evaluate_lengths` per length bin (default 41..500 in five bins,
Delétang et al. 2023) and on the training lengths, and printed as a table (or JSON).

Bins: ``--bins 41:60,61:100`` gives them explicitly; ``--lengths LO:HI`` alone clips the
default bins to that range (or uses the range as one bin if no default bin meets it); with
both, the bins are clipped to the range.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import CheckpointError, InvalidParameterError

NAME = "evaluate"
HELP = "length generalisation of a checkpoint: bins, dm (DeepMind) or ns (DuSell-Chiang)"
ORDER = 25


def add_arguments(p) -> None:
    p.add_argument("checkpoint", metavar="CKPT", help="a last.pt/best.pt of `rnnmem train "
                                                      "--task lang:<language>`")
    p.add_argument("--lengths", metavar="LO:HI",
                   help="restrict the test lengths to this range (default 41:500)")
    p.add_argument("--bins", metavar="BINS",
                   help="comma-separated inclusive bins, e.g. 41:60,61:100,101:200")
    p.add_argument("--per-bin", default="64", metavar="N", help="strings per bin (default 64)")
    p.add_argument("--lengths-per-bin", default=None, metavar="N",
                   help="at most N distinct lengths per bin (default: one per string)")
    p.add_argument("--seed", default="0", metavar="S", help="seed of the test strings")
    p.add_argument("--dtype", default=None, metavar="{float16,bfloat16,float32,float64}",
                   help="evaluate in this precision (default: the model's parameter dtype)")
    p.add_argument("--batch-size", default="64", metavar="N")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, auto")
    p.add_argument("--json", action="store_true", help="print (and write) JSON")
    p.add_argument("--out", metavar="FILE",
                   help="also write the result: JSON with --json or a .json name, else CSV")
    p.add_argument("--protocol", default="auto", choices=("auto", "bins", "dm", "ns"),
                   help="bins (lang: tasks), dm (DeepMind, dm: tasks), ns (DuSell-Chiang, "
                        "ns: tasks); auto picks by the checkpoint's task")
    p.add_argument("--k", default="512", metavar="N",
                   help="dm/ns: strings per test length (default 512)")
    p.add_argument("--stack-depth", default="model", metavar="LIST",
                   help="dm: comma-separated stack depths to report side by side: model "
                        "(as trained), sequence (the sequence length), or an integer "
                        "(DeepMind: 30)")
    p.add_argument("--stack-overflow", default="error", choices=("error", "drop"),
                   help="dm: a fixed depth below a test string's steps raises (error) or "
                        "drops the stack's bottom (drop, DeepMind's behaviour)")


def _int(flag: str, text: str, minimum: int) -> int:
    from ..limits import parse_count

    return parse_count(text, flag, minimum=minimum)


def choose_bins(lengths: str | None, bins: str | None):
    """The test bins from ``--lengths`` and ``--bins`` (see the module docstring)."""
    from ..tasks.languages import DEFAULT_TEST_BINS, LengthBin, length_bins

    def parse(text, flag):  # the message names the option
        try:
            return length_bins(text)
        except InvalidParameterError as exc:
            raise InvalidParameterError(f"{flag}: {exc}") from None

    chosen = parse(bins, "--bins") if bins is not None else DEFAULT_TEST_BINS
    if lengths is None:
        return tuple(chosen)
    rng = parse(lengths, "--lengths")
    if len(rng) != 1:
        raise InvalidParameterError(f"--lengths must be one range LO:HI, got {lengths!r}")
    lo, hi = rng[0]
    clipped = tuple(LengthBin(max(b.lo, lo), min(b.hi, hi)) for b in chosen
                    if b.lo <= hi and b.hi >= lo)
    if clipped:
        return clipped
    if bins is not None:
        raise InvalidParameterError(f"no bin of --bins {bins!r} meets --lengths {lengths!r}")
    return rng


def load_language_checkpoint(path, device="cpu"):
    """``(model, language, mode, task_kwargs)`` of a checkpoint trained on ``lang:<name>``."""
    from ..models.registry import load
    from ..tasks.languages import LANGUAGES
    from ..train import load_train_state

    cfg, _ = load_train_state(path)
    prefix, sep, language = cfg.task.partition(":")
    if prefix != "lang" or not sep:
        raise CheckpointError(f"{str(path)!r} was trained on task {cfg.task!r}, not on a "
                              "formal language (lang:<language>)")
    if language not in LANGUAGES:
        raise CheckpointError(f"{str(path)!r}: unknown language {language!r} in task "
                              f"{cfg.task!r}")
    kw = dict(cfg.task_kwargs)
    mode = kw.get("mode", "next_symbol")
    model = load(path, device=device)
    return model, language, mode, kw


def _protocol(args) -> tuple[str, object]:
    from ..train import load_train_state

    cfg, _ = load_train_state(args.checkpoint)
    prefix = cfg.task.partition(":")[0]
    want = {"lang": "bins", "dm": "dm", "ns": "ns"}.get(prefix)
    if want is None:
        raise CheckpointError(f"{str(args.checkpoint)!r} was trained on task {cfg.task!r}, "
                              "not on a formal language (lang:), a DeepMind transduction "
                              "(dm:) or a DuSell-Chiang task (ns:)")
    proto = want if args.protocol == "auto" else args.protocol
    if proto != want:
        raise InvalidParameterError(
            f"--protocol {proto}: {str(args.checkpoint)!r} was trained on "
            f"task {cfg.task!r}; bins needs a lang:, dm a dm:, ns an ns: task")
    return proto, cfg


def _depths(text: str):
    out = []
    for part in text.split(","):
        part = part.strip()
        if part in ("model", "sequence"):
            out.append(part)
            continue
        try:
            out.append(_int("--stack-depth", part, 1))
        except InvalidParameterError:
            raise InvalidParameterError(f"--stack-depth: {part!r} is not model, sequence or "
                                        "a positive integer") from None
    return out


def _write(args, text_json: str, text_plain: str) -> None:
    if args.out:
        out = Path(args.out)
        as_json = args.json or str(out).lower().endswith(".json")
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text_json + "\n" if as_json else text_plain + "\n")
        except OSError as exc:
            raise InvalidParameterError(f"--out: cannot write {str(out)!r}: "
                                        f"{exc.strerror}") from None
        print(f"written: {out}", file=sys.stderr)


def _run_dm(args, cfg) -> int:
    import json

    from ..models._device import resolve_device
    from ..models.registry import load
    from ..train.length_protocols import (DM_TEST_RANGE, dm_test_lengths, evaluate_dm,
                                          model_with_stack_depth)

    k = _int("--k", args.k, 1)
    seed = _int("--seed", args.seed, 0)
    batch = _int("--batch-size", args.batch_size, 1)
    depths = _depths(args.stack_depth)
    name = cfg.task.partition(":")[2]
    lo, hi = DM_TEST_RANGE
    if args.lengths is not None:
        from ..tasks.languages import length_bins

        rng = length_bins(args.lengths)
        if len(rng) != 1:
            raise InvalidParameterError(f"--lengths must be one range LO:HI, got "
                                        f"{args.lengths!r}")
        lo, hi = rng[0]
    lengths = dm_test_lengths(name, lo, hi)
    model = load(args.checkpoint, device=str(resolve_device(args.device)))
    reports = []
    for d in depths:
        m = model
        if d != "model" and getattr(model, "has_stack", False):
            m = model_with_stack_depth(model, None if d == "sequence" else d)
        reports.append(evaluate_dm(m, name, lengths, k, seed, batch_size=batch,
                                   overflow=args.stack_overflow))
        if not getattr(model, "has_stack", False):
            break
    js = json.dumps([r.to_dict() for r in reports], indent=2)
    every = max(1, len(lengths) // 20)
    plain = "\n\n".join(r.table(every) for r in reports)
    if len(reports) > 1:
        plain += "\n\nscore by stack depth: " + ", ".join(
            f"{r.stack_depth}: {r.score:.4f}" for r in reports)
    print(js if args.json else plain)
    _write(args, js, plain)
    return 0


def _run_ns(args, cfg) -> int:
    import json

    from ..models._device import resolve_device
    from ..models.registry import load
    from ..train.length_protocols_ns import evaluate_ns

    k = _int("--k", args.k, 1)
    seed = _int("--seed", args.seed, 0)
    name = cfg.task.partition(":")[2]
    lengths = None
    if args.lengths is not None:
        from ..tasks.languages import length_bins

        from ..tasks.dusell import get_cfl_task

        rng = length_bins(args.lengths)
        if len(rng) != 1:
            raise InvalidParameterError(f"--lengths must be one range LO:HI, got "
                                        f"{args.lengths!r}")
        lengths = get_cfl_task(name).valid_lengths(rng[0].lo, rng[0].hi)
        if not lengths:
            raise InvalidParameterError(f"--lengths {args.lengths}: task {name!r} has no "
                                        "string of these lengths")
    model = load(args.checkpoint, device=str(resolve_device(args.device)))
    report = evaluate_ns(model, name, lengths, k, seed,
                         batch_size=_int("--batch-size", args.batch_size, 1))
    js = json.dumps(report.to_dict(), indent=2)
    print(js if args.json else report.table())
    _write(args, js, report.table())
    return 0


def run(args) -> int:
    from ..train.evaluate import evaluate_lengths

    if args.protocol != "bins":
        proto, cfg = _protocol(args)
        if proto == "dm":
            return _run_dm(args, cfg)
        if proto == "ns":
            return _run_ns(args, cfg)
    from ..tasks.languages import DEFAULT_TRAIN_LENGTHS

    from ..limits import parse_seed

    per_bin = _int("--per-bin", args.per_bin, 1)
    seed = parse_seed(args.seed, "--seed")
    batch = _int("--batch-size", args.batch_size, 1)
    lpb = None if args.lengths_per_bin is None else _int("--lengths-per-bin",
                                                          args.lengths_per_bin, 1)
    bins = choose_bins(args.lengths, args.bins)
    from ..models._device import resolve_device

    device = str(resolve_device(args.device))
    model, language, mode, kw = load_language_checkpoint(args.checkpoint, device=device)
    report = evaluate_lengths(
        model, language, mode=mode, bins=bins, per_bin=per_bin, seed=seed, dtype=args.dtype,
        batch_size=batch, train_lengths=kw.get("lengths") or DEFAULT_TRAIN_LENGTHS,
        lengths_per_bin=lpb, neg_ratio=kw.get("neg_ratio", 0.5))
    as_json = args.json or (args.out is not None and str(args.out).lower().endswith(".json"))
    print(report.to_json() if args.json else report.table())
    if args.out:
        from ..files import atomic_write

        out = Path(args.out)
        atomic_write(out, report.to_json() + "\n" if as_json else report.to_csv())
        print(f"written: {out}", file=sys.stderr)
    return 0


__all__ = ["NAME", "HELP", "add_arguments", "run", "choose_bins", "load_language_checkpoint"]
