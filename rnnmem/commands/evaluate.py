"""``rnnmem evaluate``: length generalisation of a checkpoint trained on a ``lang:`` task.

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
HELP = "accuracy of a language checkpoint per length bin (length generalisation)"
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


def run(args) -> int:
    from ..train.evaluate import evaluate_lengths
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
