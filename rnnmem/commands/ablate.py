"""``rnnmem ablate``: a curse-of-memory protocol with one factor switched at a time."""

from __future__ import annotations

from pathlib import Path

NAME = "ablate"
HELP = ("run a curse-of-memory protocol (com-original, com-ssm-2023-09, paper) with one "
        "factor switched at a time and write the verdict table per factor")
ORDER = 8


def add_arguments(p):
    p.add_argument("protocol", metavar="PROTOCOL",
                   help="com-original, com-ssm-2023-09 or paper")
    p.add_argument("--factors", default="parameterisation,norm,scope,direction,stopping,"
                                        "target_scale",
                   help="comma-separated factors (default: all): parameterisation, norm, "
                        "scope, direction, stopping, target_scale")
    p.add_argument("--budget", default="smoke", help="smoke (default), quick, medium, full")
    p.add_argument("--executor", default="local", metavar="local|ray[:ADDRESS]")
    p.add_argument("--jobs", type=int, default=1, help="runs at once")
    p.add_argument("--store", metavar="DIR", default=None,
                   help="run store (default: $RNNMEM_STORE or ~/.cache/rnnmem/runs)")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="also write ablation.md and ablation.json into DIR")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display")


def run(args) -> int:
    import json

    from ..experiments.executors import get_executor
    from ..files import to_jsonable
    from ..proofs_check.curse.ablation import ablation_markdown, run_ablation

    get_executor(args.executor, jobs=args.jobs)  # a bad spec fails before any work
    ab = run_ablation(args.protocol, args.factors, budget=args.budget, store=args.store,
                      executor=args.executor, jobs=args.jobs, progress=not args.quiet)
    text = ablation_markdown(ab)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "ablation.md").write_text(text + "\n", encoding="utf-8")
        (out / "ablation.json").write_text(json.dumps(to_jsonable(ab), indent=1,
                                                      sort_keys=True) + "\n",
                                           encoding="utf-8")
    return 0
