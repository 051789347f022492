"""``rnnmem verify``: run claims, print a summary table, write the report.

``results.json`` and ``REPORT.md`` are rewritten (atomically) after every claim, so a Ctrl-C
or a crash keeps every finished claim. A check that raises is an *error of the run* (verdict
``error``), reported apart from a must-hold identity that was refuted. Exit status: 0 all
good, 1 a must-hold identity not confirmed or a check that raised, 2 bad input, 130
interrupted (the finished claims are in the report).
"""

from __future__ import annotations

import sys
from pathlib import Path

NAME = "verify"
HELP = "run theorem and paper-claim checks and write REPORT.md, results.json and figures"
ORDER = 0


def add_arguments(p):
    p.add_argument("--budget", choices=("smoke", "quick", "medium", "full"), default="quick",
                   help="study size: smoke (seconds), quick (minutes), medium (up to an "
                        "hour on 2 cores, for the claims that define it; the others run "
                        "at quick), full (paper scale)")
    p.add_argument("--only", nargs="+", metavar="ID",
                   help="run only these claim ids (each once, in the order given)")
    p.add_argument("--out", default="report", help="output directory (default: report)")
    p.add_argument("--seed", default="0", metavar="INT", help="seed, in [0, 2**63 - 1]")
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
    from ..errors import InvalidParameterError, UnknownNameError
    from ..experiments import RunStore, get_executor
    from ..limits import parse_seed
    from ..proofs_check.registry import get_claim, run_claims
    from ..proofs_check.report import summary_table, write_report

    seed = parse_seed(args.seed, "--seed")
    if not str(args.out).strip():
        raise InvalidParameterError("--out: an output directory is required, got ''")
    only = list(dict.fromkeys(args.only)) if args.only else None  # each claim once
    if only:
        for cid in only:  # fail fast, before any work, on a bad id
            try:
                get_claim(cid)
            except UnknownNameError as exc:
                raise InvalidParameterError(f"--only: {exc}") from None
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        from ..errors import StorageError

        raise StorageError(f"--out: {str(out)!r} exists and is not a directory", path=str(out))
    get_executor(args.executor, jobs=args.jobs)  # a bad executor or --jobs, before any work
    store = RunStore(args.store)
    progress = None if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    if progress:
        progress(f"[verify] run store: {store.root} (executor {args.executor}, "
                 f"jobs {args.jobs})")
    done: list = []

    def keep(results) -> None:  # after every claim: the report so far, atomically
        done[:] = results
        write_report(results, out, budget=args.budget)

    try:
        results = run_claims(only, args.budget, out, seed=seed, progress=progress,
                             store=store, executor=args.executor, jobs=args.jobs,
                             on_result=keep)
    except KeyboardInterrupt:
        print(f"rnnmem verify: interrupted; {len(done)} finished claim(s) kept in "
              f"{out / 'REPORT.md'} and {out / 'results.json'}", file=sys.stderr)
        return 130
    report, rj = write_report(results, out, budget=args.budget)
    print(summary_table(results))
    print(f"\nreport: {report}\nresults: {rj}")
    status = 0
    errors = [r.id for r in results if r.error is not None]
    if errors:
        print(f"ERROR (the check raised; see the report): {', '.join(errors)}", file=sys.stderr)
        status = 1
    bad = [r.id for r in results if r.error is None and r.failed_must_hold]
    if bad:
        print(f"FAILED (must hold): {', '.join(bad)}", file=sys.stderr)
        status = 1
    return status
