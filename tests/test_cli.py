"""The command line: one line and exit 2 on bad input, never a traceback."""

import json
import subprocess
import sys

import pytest

from rnnmem.cli import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "rnnmem", *args], capture_output=True,
                          text=True, timeout=600)


def test_derive_prints_derivation(capsys):
    assert main(["derive", "softplus"]) == 0
    out = capsys.readouterr().out
    assert "verdict: STABLE" in out and "gradient scale" in out


def test_derive_latex(capsys):
    assert main(["derive", "best", "--latex"]) == 0
    out = capsys.readouterr().out
    assert "\\frac" in out and "dsolve" in out


def test_unknown_name_is_one_line_exit_2():
    r = run_cli("derive", "nope")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "unknown parameterisation 'nope'" in r.stderr
    assert "Traceback" not in r.stderr


def test_unknown_claim_exit_2(tmp_path):
    r = run_cli("verify", "--only", "no-such-claim", "--out", str(tmp_path))
    assert r.returncode == 2 and "unknown claim" in r.stderr and "Traceback" not in r.stderr


def test_list(capsys):
    assert main(["list", "parameterisations"]) == 0
    out = capsys.readouterr().out
    assert "softplus" in out and "stable=False" in out


def test_verify_smoke_writes_report(tmp_path):
    r = run_cli("verify", "--budget", "smoke", "--only", "best-parameterisation",
                "--out", str(tmp_path), "-q")
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "results.json").read_text())
    assert [c["id"] for c in res] == ["best-parameterisation"]
    for key in ("id", "title", "source", "verdict", "metrics", "figures"):
        assert key in res[0]
    assert res[0]["verdict"] == "confirmed"
    assert "best-parameterisation" in (tmp_path / "REPORT.md").read_text()
