"""The ``rnnmem`` command line.

Subcommands live in :mod:`rnnmem.commands`, one module each, discovered at start-up; a
module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``.
Errors: every failure is one line on stderr, ``rnnmem CMD: error: MESSAGE`` (the whole
message, on one line), and exit status 2 -- an :class:`rnnmem.errors.RnnmemError`, a command
line argparse cannot parse (no usage block; ``--help`` shows it), an ``OSError`` (mapped by
:func:`rnnmem.files.storage_error` to a :class:`~rnnmem.errors.StorageError` naming the path
and what to do) or a ``MemoryError``. Anything else is a bug: one line saying so, status 70
(``RNNMEM_DEBUG=1`` shows the traceback). Ctrl-C: status 130.
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

from .errors import RnnmemError, UsageError, exception_text

__all__ = ["main", "build_parser"]

#: exit status of an internal error (a bug: an exception that is not an RnnmemError)
EXIT_INTERNAL = 70


class _Parser(argparse.ArgumentParser):
    """argparse without its usage block on errors: they raise :class:`UsageError`, which
    :func:`main` prints as one line naming the command."""

    def error(self, message):  # noqa: D401 - argparse API
        raise UsageError(message, prog=self.prog)

    def parse_args(self, args=None, namespace=None):
        ns, extra = self.parse_known_args(args, namespace)
        if extra:  # name the subcommand they were given to, not the top-level parser
            cmd = getattr(ns, "command", None)
            raise UsageError(f"unrecognized arguments: {' '.join(extra)}",
                             prog=f"{self.prog} {cmd}" if cmd else self.prog)
        return ns


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

    parser = _Parser(
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


def _fail(prog: str, message: str, status: int = 2) -> int:
    print(f"{prog}: error: {message}", file=sys.stderr)
    return status


def main(argv: list[str] | None = None) -> int:
    parser, runners = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        return _fail(exc.prog, exception_text(exc))
    if not args.command:
        parser.print_help()
        return 2
    prog = f"rnnmem {args.command}"
    try:
        return int(runners[args.command](args) or 0)
    except RnnmemError as exc:
        return _fail(prog, exception_text(exc))
    except OSError as exc:  # an OS error no command mapped: name the path and the reason
        from .files import storage_error

        where = exc.filename if exc.filename is not None else "a file"
        return _fail(prog, exception_text(storage_error(exc, where, "use")))
    except MemoryError:
        return _fail(prog, "out of memory: the run needs more memory than is available; "
                           "use smaller sizes")
    except RuntimeError as exc:
        if "can't allocate memory" in str(exc) or type(exc).__name__ == "OutOfMemoryError":
            return _fail(prog, f"out of memory ({exception_text(exc)}); use smaller sizes")
        return _internal(prog, exc)
    except KeyboardInterrupt:  # pragma: no cover
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        return _internal(prog, exc)


def _internal(prog: str, exc: Exception) -> int:
    """An exception that is not an RnnmemError: a bug, said on one line (status 70)."""
    if os.environ.get("RNNMEM_DEBUG"):
        raise exc
    return _fail(prog, f"internal error (a bug in rnnmem, please report it): "
                       f"{type(exc).__name__}: {exception_text(exc)} (RNNMEM_DEBUG=1 shows "
                       "the traceback)", EXIT_INTERNAL)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
