"""``rnnmem run``: run a protocol (built-in name or TOML file) through the run store."""

from __future__ import annotations

import sys

NAME = "run"
HELP = "run a protocol's runs (those not yet in the store) locally or on Ray"
ORDER = 5


def add_store_argument(p):
    p.add_argument("--store", metavar="DIR", default=None,
                   help="run store (default: $RNNMEM_STORE or ~/.cache/rnnmem/runs)")


def add_arguments(p):
    p.add_argument("protocol", metavar="PROTOCOL_OR_FILE",
                   help="a built-in protocol (rnnmem protocols) or a protocol .toml file")
    p.add_argument("--budget", default=None,
                   help="the protocol's size: smoke, quick, full or another budget it "
                        "defines (default: the protocol's default)")
    p.add_argument("--executor", default="local", metavar="local|ray[:ADDRESS]",
                   help="local (default), ray (a local Ray instance), ray:ADDRESS or "
                        "ray:auto (join a running cluster)")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs at once (local: processes; ray: CPUs of the local instance)")
    add_store_argument(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display")


def run(args) -> int:
    from ..experiments import RunStore, get_protocol
    from ..experiments.executors import execute, get_executor
    from ..proofs_check.registry import load_claims

    load_claims()  # the claims register their protocols

    protocol = get_protocol(args.protocol)
    if args.budget is not None:
        protocol = protocol.at(args.budget)
    get_executor(args.executor, jobs=args.jobs)  # a bad spec fails before any work
    store = RunStore(args.store)
    results = execute(protocol, store=store, executor=args.executor, jobs=args.jobs,
                      progress=not args.quiet)
    rep = results.report
    budget = protocol.budget or protocol.default_budget or "base"
    print(f"{protocol.name} ({budget}): {rep['total']} runs: {rep['trained']} trained, "
          f"{rep['reused']} evaluated on shared weights, "
          f"{rep['cached']} already in the store, {len(rep['failed'])} failed "
          f"in {rep['seconds']:.1f}s; store: {store.root}")
    for h, n in rep["retried"].items():
        print(f"  retried: {h[:12]} started {n} times")
    for h, msg in rep["failed"].items():
        print(f"  failed: {h[:12]}: {msg}", file=sys.stderr)
    print(f"results: rnnmem runs {args.protocol}"
          + (f" --budget {args.budget}" if args.budget else "")
          + (f" --store {args.store}" if args.store else ""))
    return 1 if rep["failed"] else 0
