"""``rnnmem train --task dm:<name> / ns:<name>`` then ``rnnmem evaluate --protocol dm / ns``:
output equal to the library functions, stack depths side by side, one-line errors."""

from __future__ import annotations

import json

import pytest

from rnnmem.cli import main
from rnnmem.models.registry import load
from rnnmem.train.length_protocols import evaluate_dm
from rnnmem.train.length_protocols_ns import evaluate_ns

TINY = ["--model", "stack_rnn", "--model-arg", "hidden_size=4", "--model-arg", "stack_width=2",
        "--steps", "3", "--batch-size", "4", "--eval-every", "0", "--device", "cpu", "-q",
        "--task-arg", "valid_size=4"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("lp")
    out = {}
    for name, task in (("dm", "dm:reverse_string"), ("ns", "ns:marked_reversal"),
                       ("lang", "lang:dyck1")):
        assert main(["train", *TINY, "--task", task, "--out", str(root / name)]) == 0
        out[name] = root / name / "last.pt"
    return out


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    return err[0]


def test_dm_json_equals_library_and_reports_depths(runs, capsys):
    assert main(["evaluate", str(runs["dm"]), "--lengths", "41:43", "--k", "4", "--json",
                 "--stack-depth", "model,30", "--stack-overflow", "drop"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert [r["stack_depth"] for r in got] == ["sequence", "30"]
    ref = evaluate_dm(load(runs["dm"]), "reverse_string", [41, 42, 43], 4, 0)
    assert got[0]["accuracy"] == ref.accuracy and got[0]["score"] == ref.score


def test_ns_json_equals_library(runs, capsys):
    assert main(["evaluate", str(runs["ns"]), "--lengths", "41:43", "--k", "3", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    ref = evaluate_ns(load(runs["ns"]), "marked_reversal", [41, 43], 3, 0)
    assert got["lengths"] == [41, 43] and got["ce_diff"] == ref.ce_diff


def test_errors_are_one_line(runs, capsys):
    assert main(["evaluate", str(runs["dm"]), "--k", "0"]) == 2
    assert "--k" in _err(capsys)
    assert main(["evaluate", str(runs["dm"]), "--lengths", "41:42", "--k", "2",
                 "--stack-depth", "30"]) == 2
    assert "stack depth 30" in _err(capsys)
    assert main(["evaluate", str(runs["lang"]), "--protocol", "dm"]) == 2
    assert "dm" in _err(capsys)
    assert main(["train", *TINY, "--task", "dm:reverse", "--out", "/nonexistent/x"]) == 2
    assert "unknown task" in _err(capsys)
