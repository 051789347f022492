"""``rnnmem verify``: run claims, print a summary table, write the report."""

from __future__ import annotations

import sys
from pathlib import Path

NAME = "verify"
HELP = "run theorem and paper-claim checks and write REPORT.md, results.json and figures"
ORDER = 0


def add_arguments(p):
    p.add_argument("--budget", choices=("smoke", "quick", "full"), default="quick",
                   help="study size: smoke (seconds), quick (minutes), full (paper scale)")
    p.add_argument("--only", nargs="+", metavar="ID", help="run only these claim ids")
    p.add_argument("--out", default="report", help="output directory (default: report)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")


def run(args) -> int:
    from ..proofs_check.registry import get_claim, run_claims
    from ..proofs_check.report import summary_table, write_report

    if args.only:
        for cid in args.only:  # fail fast, before any work, on a bad id
            get_claim(cid)
    progress = None if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    out = Path(args.out)
    results = run_claims(args.only, args.budget, out, seed=args.seed, progress=progress)
    report, rj = write_report(results, out, budget=args.budget)
    print(summary_table(results))
    print(f"\nreport: {report}\nresults: {rj}")
    bad = [r.id for r in results if r.failed_must_hold]
    if bad:
        print(f"FAILED (must hold): {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0
