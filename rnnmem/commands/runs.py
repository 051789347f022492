"""``rnnmem runs``: the finished runs of a protocol (or of the whole store) as a table."""

from __future__ import annotations

import sys

NAME = "runs"
HELP = "show or export the runs in the store: one row per run (table, csv, json, parquet)"
ORDER = 6

_DEFAULT_COLUMNS = ("model.name", "task.name", "seed", "status", "metrics.valid_loss",
                    "metrics.train_loss", "elapsed_s")


def add_arguments(p):
    from .run import add_store_argument

    p.add_argument("protocol", nargs="?", metavar="PROTOCOL_OR_FILE",
                   help="only the runs of this protocol (default: every run in the store)")
    p.add_argument("--budget", default=None, help="the protocol's budget (default: its "
                                                  "default)")
    p.add_argument("--format", choices=("table", "csv", "json", "parquet"), default="table")
    p.add_argument("--out", metavar="FILE", default=None,
                   help="write to FILE (needed for parquet) instead of standard output")
    p.add_argument("--all-columns", action="store_true",
                   help="table: every column (default: varied fields and main metrics)")
    p.add_argument("--remove-other-code", action="store_true",
                   help="delete the runs in the store made by other rnnmem code (column "
                        "'code' = other; no lookup of this code returns them) and stop")
    add_store_argument(p)


def run(args) -> int:
    from ..errors import InvalidParameterError
    from ..experiments import RunStore, code_digest, export_frame, get_protocol
    from ..proofs_check.registry import load_claims

    load_claims()  # the claims register their protocols

    store = RunStore(args.store)
    if args.remove_other_code:
        if args.protocol:
            raise InvalidParameterError("--remove-other-code works on the whole store: "
                                        "give no protocol")
        n = store.remove(store.other_code())
        print(f"removed {n} run(s) made by other rnnmem code from {store.root}; "
              f"{len(store.hashes())} left")
        return 0
    protocol = get_protocol(args.protocol) if args.protocol else None
    if protocol is not None and args.budget is not None:
        protocol = protocol.at(args.budget)
    if args.format == "parquet" and not args.out:
        raise InvalidParameterError("--out: parquet is binary; give a file (--out runs.parquet)")
    if protocol is not None:
        results = store.results(protocol.runs())
        missing = len(results.missing)
    else:
        results, missing = store.all_results(), 0
    df = results.frame()
    if not df.empty:  # which runs this code would find (RunStore.other_code's rule)
        here = code_digest()
        df["code"] = ["this" if r.code == here else "other" for r in results]
    if args.out:
        path = export_frame(df, args.out, args.format if args.format != "table" else "csv")
        print(f"{len(df)} runs -> {path}")
    elif args.format == "csv":
        sys.stdout.write(df.to_csv(index=False))
    elif args.format == "json":
        sys.stdout.write(df.to_json(orient="records", indent=1) + "\n")
    else:
        print(_table(df, protocol, args.all_columns))
    if missing:
        print(f"({missing} run(s) of the protocol not in the store yet: rnnmem run "
              f"{args.protocol})", file=sys.stderr)
    return 0


def _table(df, protocol, all_columns: bool) -> str:
    import pandas as pd

    if df.empty:
        return "no runs"
    if all_columns:
        cols = list(df.columns)
    else:
        varied = [c for c in df.columns if not c.startswith(("metrics.", "eval."))
                  and c not in ("hash", "elapsed_s", "steps", "stopped")
                  and df[c].astype(str).nunique(dropna=False) > 1]
        cols = ["hash"] + varied + [c for c in _DEFAULT_COLUMNS if c in df.columns
                                    and c not in varied]
        cols += [c for c in df.columns if c.startswith("eval.") and df[c].dtype.kind == "f"]
    view = df[cols].copy()
    view["hash"] = view["hash"].str[:12]
    with pd.option_context("display.width", 200, "display.max_columns", None,
                           "display.max_colwidth", 40):
        return view.to_string(index=False)
