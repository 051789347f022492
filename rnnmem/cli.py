"""The ``rnnmem`` command line.

Subcommands live in :mod:`rnnmem.commands`, one module each, discovered at start-up; a
module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``.
Any :class:`rnnmem.errors.RnnmemError` becomes one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

# Idle OpenMP workers spin by default; on small (2-core) machines that made the step-loop
# models 10-30x slower with 2 threads (measured, benchmarks/). Set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .errors import RnnmemError

__all__ = ["main", "build_parser"]


def _command_modules():
    from . import commands

    mods = []
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        mods.append(importlib.import_module(f"{commands.__name__}.{info.name}"))
    return sorted(mods, key=lambda m: getattr(m, "ORDER", 50))


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="rnnmem",
        description="Memory in recurrent models: derive, estimate, train, verify.")
    parser.add_argument("--version", action="version", version=f"rnnmem {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    runners = {}
    for mod in _command_modules():
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        runners[mod.NAME] = mod.run
    return parser, runners


def main(argv: list[str] | None = None) -> int:
    parser, runners = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        return int(runners[args.command](args) or 0)
    except RnnmemError as exc:
        print(f"rnnmem {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # pragma: no cover
        print("rnnmem: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
