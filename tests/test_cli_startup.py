"""Start-up of the command line (issue 14, part 1): what is imported, and the disk cache.

No timing is asserted; what makes start-up fast -- heavy libraries not imported, derived
text read back from the cache -- is asserted instead."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HEAVY = ("torch", "sympy")


def _loaded_after(code: str, env: dict | None = None) -> set[str]:
    """Top-level packages among HEAVY (and numpy) in sys.modules after running ``code`` in a
    fresh interpreter."""
    probe = (f"import sys, json\n{code}\n"
             "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & "
             "{'torch', 'sympy', 'numpy'})))")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                       timeout=300, env={**os.environ, **(env or {})})
    assert r.returncode == 0, r.stderr
    return set(json.loads(r.stdout.strip().splitlines()[-1]))


def _help(argv):
    return ("from rnnmem.cli import main\n"
            "try:\n"
            f"    main({argv!r})\n"
            "except SystemExit:\n"
            "    pass")


def test_import_rnnmem_imports_neither_torch_nor_sympy():
    assert not _loaded_after("import rnnmem") & set(HEAVY)


def test_help_imports_neither_torch_nor_sympy():
    assert not _loaded_after(_help(["--help"])) & set(HEAVY)


def _command_names():
    from rnnmem.cli import _command_specs

    return [s["NAME"] for s in _command_specs()]


@pytest.mark.parametrize("cmd", ["train", "derive", "list", "verify", "memory", "perturb",
                                 "evaluate"])
def test_command_help_imports_no_torch(cmd):
    """`rnnmem CMD --help` loads neither torch nor sympy, nor numpy."""
    if cmd not in _command_names():
        pytest.skip(f"no {cmd} command")
    assert not _loaded_after(_help([cmd, "--help"]))


def test_command_specs_match_the_modules():
    """The names/help read from the source (ast) are those the modules define."""
    import importlib

    from rnnmem.cli import _command_specs

    specs = _command_specs()
    assert len(specs) >= 5
    for s in specs:
        mod = importlib.import_module(s["module"])
        assert (s["NAME"], s["HELP"], s["ORDER"]) == (mod.NAME, mod.HELP,
                                                      getattr(mod, "ORDER", 50))


def test_full_parser_and_lazy_parser_agree_on_a_command():
    from rnnmem.cli import build_parser

    full, runners = build_parser()
    lazy, lazy_runners = build_parser(["derive", "exp"])
    assert set(runners) == set(lazy_runners)
    assert vars(full.parse_args(["derive", "exp", "--latex"])) == \
        vars(lazy.parse_args(["derive", "exp", "--latex"]))


def test_leaf_config_module_is_the_one_the_package_uses():
    """`rnnmem train --help` loads rnnmem.train.config alone; a later import of the package
    must reuse that module (one TrainConfig class)."""
    code = ("from rnnmem.cli import build_parser\n"
            "build_parser(['train'])\n"
            "import rnnmem.train as T, rnnmem.train.config as C\n"
            "assert T.TrainConfig is C.TrainConfig\n"
            "assert T.TrainConfig(model='diagonal_ssm', task='lf:exponential').model\n")
    assert "torch" in _loaded_after(code)  # the package did load, after the parser


# ----------------------------------------------------------------------- disk cache
def test_derive_is_cached_and_keyed_by_expression_and_sympy_version(tmp_path, monkeypatch,
                                                                     capsys):
    import sympy as sp

    from rnnmem.cli import main

    monkeypatch.setenv("RNNMEM_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("RNNMEM_NO_CACHE", "1")
    assert main(["derive", "softplus"]) == 0
    uncached = capsys.readouterr().out
    monkeypatch.delenv("RNNMEM_NO_CACHE")
    assert main(["derive", "softplus"]) == 0
    assert capsys.readouterr().out == uncached
    entries = sorted((tmp_path / "derive").glob("*.json"))
    assert len(entries) == 1
    entry = json.loads(entries[0].read_text())
    from rnnmem import _diskcache

    assert entry["key"]["sympy"] == _diskcache.package_version("sympy") == sp.__version__
    assert entry["key"]["expr"] == sp.srepr(sp.sympify("-log(1 + exp(w))",
                                                       locals={"w": sp.Symbol("w",
                                                                              real=True)}))
    # a hit reads the entry (a tampered text with a matching checksum is what comes back)
    fake = "cached derivation text"
    import hashlib

    entry["text"], entry["sha256"] = fake, hashlib.sha256(fake.encode()).hexdigest()
    entries[0].write_text(json.dumps(entry))
    assert main(["derive", "softplus"]) == 0
    assert capsys.readouterr().out.strip() == fake
    # a corrupt entry (checksum mismatch) is recomputed
    entry["text"] = "corrupt"
    entries[0].write_text(json.dumps(entry))
    assert main(["derive", "softplus"]) == 0
    assert capsys.readouterr().out == uncached
    # another sympy version is another key: a new entry, the right text
    real = _diskcache.package_version
    monkeypatch.setattr(_diskcache, "package_version",
                        lambda name: real(name) + (".other" if name == "sympy" else ""))
    assert main(["derive", "softplus"]) == 0
    assert capsys.readouterr().out == uncached
    assert len(list((tmp_path / "derive").glob("*.json"))) == 2


def test_warm_derive_imports_no_sympy(tmp_path):
    env = {"RNNMEM_CACHE_DIR": str(tmp_path)}
    code = ("from rnnmem.cli import main\n"
            "import contextlib, io\n"
            "out = io.StringIO()\n"
            "with contextlib.redirect_stdout(out):\n"
            "    main(['derive', 'best'])\n"
            "assert 'dsolve' in out.getvalue()")
    assert "sympy" in _loaded_after(code, env)  # the miss derives
    assert not _loaded_after(code, env) & set(HEAVY)  # the hit reads the text
    # a stale index (its full key no longer stored) falls back to deriving
    for f in (tmp_path / "derive").glob("*.json"):
        f.unlink()
    assert "sympy" in _loaded_after(code, env)


def test_derive_cache_separates_parameterisations_and_latex(tmp_path, monkeypatch, capsys):
    from rnnmem.cli import main

    monkeypatch.setenv("RNNMEM_CACHE_DIR", str(tmp_path))
    outs = {}
    for argv in (["derive", "exp"], ["derive", "exp", "--latex"], ["derive", "softplus"]):
        assert main(argv) == 0
        outs[tuple(argv)] = capsys.readouterr().out
    assert len(set(outs.values())) == 3
    assert len(list((tmp_path / "derive").glob("*.json"))) == 3


def test_list_cached_equals_uncached(tmp_path, monkeypatch, capsys):
    from rnnmem.cli import main

    monkeypatch.setenv("RNNMEM_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("RNNMEM_NO_CACHE", "1")
    assert main(["list", "parameterisations"]) == 0
    uncached = capsys.readouterr().out
    monkeypatch.delenv("RNNMEM_NO_CACHE")
    for _ in range(2):  # a miss, then a hit
        assert main(["list", "parameterisations"]) == 0
        assert capsys.readouterr().out == uncached
    assert len(list((tmp_path / "list").glob("*.json"))) == 1


def test_warm_list_imports_neither_torch_nor_sympy(tmp_path):
    """A cache hit of `rnnmem list` reads text: the registries (torch, sympy) stay unloaded."""
    env = {"RNNMEM_CACHE_DIR": str(tmp_path)}
    code = ("from rnnmem.cli import main\n"
            "import contextlib, io\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    main(['list', 'parameterisations'])")
    assert "sympy" in _loaded_after(code, env)  # the miss derives
    assert not _loaded_after(code, env) & set(HEAVY)  # the hit does not


def test_cache_survives_an_unwritable_directory(tmp_path, monkeypatch):
    from rnnmem._diskcache import cached_text

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("RNNMEM_CACHE_DIR", str(blocker))
    calls = []
    assert cached_text("k", {"a": 1}, lambda: calls.append(1) or "v") == "v"
    assert cached_text("k", {"a": 1}, lambda: calls.append(1) or "v") == "v"
    assert len(calls) == 2  # nothing could be stored: computed each time


def test_source_digest_changes_when_code_changes(tmp_path):
    from rnnmem._diskcache import source_digest

    f = tmp_path / "m.py"
    f.write_text("x = 1\n")
    d0 = source_digest(tmp_path)
    f.write_text("x = 22\n")
    assert source_digest(tmp_path) != d0
