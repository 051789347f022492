"""``rnnmem protocols``: the built-in protocols; with a name, its TOML."""

from __future__ import annotations

NAME = "protocols"
HELP = "list built-in protocols, or print one as TOML to start a new one from"
ORDER = 7


def add_arguments(p):
    p.add_argument("name", nargs="?", metavar="NAME_OR_FILE",
                   help="print this protocol as TOML (a built-in name or a .toml file)")
    p.add_argument("--budget", default=None,
                   help="print the protocol at this budget (its fields set, no budgets)")


def run(args) -> int:
    from ..experiments import get_protocol, protocol_names
    from ..proofs_check.registry import load_claims

    load_claims()  # the claims register their protocols

    if args.name:
        p = get_protocol(args.name)
        if args.budget:
            p = p.at(args.budget)
        print(p.to_toml(), end="")
        return 0
    names = protocol_names()
    width = max([len(n) for n in names] + [4])
    for n in names:
        p = get_protocol(n)
        budgets = ", ".join(p.budget_names()) or "-"
        print(f"{n:<{width}}  {len(p.runs()):>4} runs  budgets: {budgets:<20}  {p.description}")
    return 0
