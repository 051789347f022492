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


def _literal_constants(path: str) -> dict:
    """The module-level ``NAME``/``HELP``/``ORDER`` literals of a command's source (ast: the
    module is not imported, so ``rnnmem --help`` loads no command and none of its imports)."""
    import ast

    out = {}
    try:
        with open(path, encoding="utf-8") as fh:
            tree = ast.parse(fh.read(), path)
    except (OSError, SyntaxError, ValueError):
        return out
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 \
                and isinstance(node.targets[0], ast.Name) \
                and node.targets[0].id in ("NAME", "HELP", "ORDER"):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return out


def _command_specs() -> list[dict]:
    """``{"module", "NAME", "HELP", "ORDER"}`` of every subcommand, in menu order; a module
    whose constants are not plain literals is imported to read them."""
    from . import commands

    specs = []
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        modname = f"{commands.__name__}.{info.name}"
        spec = _literal_constants(os.path.join(commands.__path__[0], info.name + ".py"))
        if "NAME" not in spec or "HELP" not in spec:
            mod = importlib.import_module(modname)
            spec = {"NAME": mod.NAME, "HELP": mod.HELP, "ORDER": getattr(mod, "ORDER", 50)}
        spec.setdefault("ORDER", 50)
        spec["module"] = modname
        specs.append(spec)
    return sorted(specs, key=lambda s: s["ORDER"])


def _command_modules():
    return [importlib.import_module(s["module"]) for s in _command_specs()]


#: torch-free modules that a command's ``add_arguments`` reads, inside packages whose
#: ``__init__`` imports torch (``rnnmem.train``): loaded on their own (:func:`_load_leaf`)
#: so that ``rnnmem CMD --help`` stays fast
_LEAF_IMPORTS = {"train": ("rnnmem.train.config",)}


def _load_leaf(modname: str) -> None:
    """Import ``modname`` (a stdlib-only module) without running its package's
    ``__init__``. The module is registered in ``sys.modules`` under its own name, so a later
    ``import`` of the package reuses this very module (same classes, same constants)."""
    import importlib.util

    package = modname.rpartition(".")[0]
    if modname in sys.modules or package in sys.modules:
        return
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        *modname.split(".")[1:]) + ".py"
    spec = importlib.util.spec_from_file_location(modname, path)
    if spec is None or spec.loader is None:  # pragma: no cover - a broken install
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules[modname] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[modname]
        raise


def _lazy_runner(modname: str):
    def run(args):
        return importlib.import_module(modname).run(args)
    return run


def _chosen_command(argv) -> str | None:
    """The subcommand named in ``argv`` (the first word that is not an option: the top-level
    parser has only flags), or None."""
    for word in argv:
        if word == "--":
            return None
        if not word.startswith("-"):
            return word
    return None


def build_parser(argv: list[str] | None = None) -> tuple[argparse.ArgumentParser, dict]:
    """The parser and ``{command: run}``. With ``argv``, only the chosen subcommand's
    module is imported and its options added (start-up time: the other subcommands'
    imports -- torch, sympy -- are never loaded); without, every subcommand is complete."""
    from . import __version__

    parser = _Parser(
        prog="rnnmem",
        description="Memory in recurrent models: derive, estimate, train, verify.")
    parser.add_argument("--version", action="version", version=f"rnnmem {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    specs = _command_specs()
    chosen = None if argv is None else _chosen_command(argv)
    # a top-level option unknown here (maybe taking a value that looks like a command)
    # before an unknown word: build every subcommand, as without argv
    lead = [] if argv is None or chosen is None else argv[:argv.index(chosen)]
    full = argv is None or (chosen not in {s["NAME"] for s in specs} and any(
        w not in ("-h", "--help", "--version") for w in lead))
    runners = {}
    for spec in specs:
        p = sub.add_parser(spec["NAME"], help=spec["HELP"], description=spec["HELP"])
        if full or spec["NAME"] == chosen:
            for leaf in _LEAF_IMPORTS.get(spec["NAME"], ()):
                _load_leaf(leaf)
            mod = importlib.import_module(spec["module"])
            mod.add_arguments(p)
            runners[spec["NAME"]] = mod.run
        else:
            runners[spec["NAME"]] = _lazy_runner(spec["module"])
    return parser, runners


def _fail(prog: str, message: str, status: int = 2) -> int:
    print(f"{prog}: error: {message}", file=sys.stderr)
    return status


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    parser, runners = build_parser(argv)
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
