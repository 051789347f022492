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
    p.add_argument("--store", metavar="DIR", default=None,
                   help="run store the claims train into and read from (default: "
                        "$RNNMEM_STORE or ~/.cache/rnnmem/runs); runs already there are "
                        "not trained again")
    p.add_argument("--executor", default="local", metavar="local|ray[:ADDRESS]",
                   help="where the runs are trained: local (default), ray (a local Ray "
                        "instance), ray:ADDRESS or ray:auto (join a running cluster)")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs at once (local: processes; ray: CPUs of the local instance)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")


def run(args) -> int:
    from ..experiments import RunStore, get_executor
    from ..proofs_check.registry import get_claim, run_claims
    from ..proofs_check.report import summary_table, write_report

    if args.only:
        for cid in args.only:  # fail fast, before any work, on a bad id
            get_claim(cid)
    get_executor(args.executor, jobs=args.jobs)  # a bad executor or --jobs, before any work
    store = RunStore(args.store)
    progress = None if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    out = Path(args.out)
    if progress:
        progress(f"[verify] run store: {store.root} (executor {args.executor}, "
                 f"jobs {args.jobs})")
    # the report is rewritten after every claim: an interrupted run keeps finished claims
    results = run_claims(args.only, args.budget, out, seed=args.seed, progress=progress,
                         store=store, executor=args.executor, jobs=args.jobs,
                         on_result=lambda rs: write_report(rs, out, budget=args.budget))
    report, rj = write_report(results, out, budget=args.budget)
    print(summary_table(results))
    print(f"\nreport: {report}\nresults: {rj}")
    bad = [r.id for r in results if r.failed_must_hold]
    if bad:
        print(f"FAILED (must hold): {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0
