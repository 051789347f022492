"""``rnnmem run``, ``rnnmem runs``, ``rnnmem protocols`` end to end (in-process)."""

import json
import sys

import pytest

from rnnmem.cli import main

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent / "experiments"))
from exp_helpers import tiny_run  # noqa: E402
from rnnmem.experiments import Protocol  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def proto_file(tmp_path):
    p = Protocol("cli-tiny", tiny_run(), grid={"seed": [0, 1]},
                 budgets={"smoke": {}, "quick": {"grid": {"seed": [0, 1, 2]}}},
                 default_budget="smoke")
    f = tmp_path / "tiny.toml"
    f.write_text(p.to_toml())
    return f


def test_protocols_lists_and_prints_toml(capsys, tmp_path):
    assert main(["protocols"]) == 0
    out = capsys.readouterr().out
    assert "smoke-sweep" in out and "runs" in out
    assert main(["protocols", "smoke-sweep"]) == 0
    text = capsys.readouterr().out
    f = tmp_path / "copy.toml"
    f.write_text(text)
    assert main(["protocols", str(f)]) == 0
    assert capsys.readouterr().out == text


def test_run_then_runs(capsys, proto_file, tmp_path):
    store = str(tmp_path / "store")
    assert main(["run", str(proto_file), "--store", store, "-q"]) == 0
    assert "2 runs: 2 trained, 0 evaluated on shared weights, 0 already in the store" in capsys.readouterr().out
    assert main(["run", str(proto_file), "--store", store, "-q"]) == 0
    assert "0 trained, 0 evaluated on shared weights, 2 already in the store" in capsys.readouterr().out
    assert main(["runs", str(proto_file), "--store", store, "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["seed"] for r in rows] == [0, 1] and all(r["status"] == "ok" for r in rows)
    assert main(["runs", str(proto_file), "--store", store, "--format", "csv"]) == 0
    csv = capsys.readouterr().out.splitlines()
    assert csv[0].startswith("hash,status,") and len(csv) == 3
    out = tmp_path / "r.parquet"
    assert main(["runs", "--store", store, "--format", "parquet", "--out", str(out)]) == 0
    import pandas as pd

    assert len(pd.read_parquet(out)) == 2
    assert main(["runs", str(proto_file), "--store", store]) == 0  # the table
    assert "lf:exponential" not in capsys.readouterr().out.splitlines()[0]
    assert main(["runs", str(proto_file), "--budget", "quick", "--store", store]) == 0
    assert "1 run(s) of the protocol not in the store" in capsys.readouterr().err


def _one_line_exit_2(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_bad_input_is_one_line(capsys, proto_file, tmp_path):
    store = str(tmp_path / "store")
    bad = tmp_path / "bad.toml"
    bad.write_text(proto_file.read_text().replace("steps = 8", "stepz = 8"))
    line = _one_line_exit_2(capsys, ["run", str(bad), "--store", store])
    assert "bad.toml:" in line and "run.train.stepz" in line
    assert "unknown" in _one_line_exit_2(capsys, ["run", "no-such", "--store", store])
    assert "medium" in _one_line_exit_2(capsys, ["run", str(proto_file), "--budget",
                                                 "medium", "--store", store])
    msg = _one_line_exit_2(capsys, ["run", str(proto_file), "--store", store,
                                    "--executor", "ray:127.0.0.1:1"])
    assert "127.0.0.1:1" in msg and "no Ray cluster" in msg
    assert "executor" in _one_line_exit_2(capsys, ["run", str(proto_file), "--store", store,
                                                   "--executor", "slurm"])
    (tmp_path / "store" / "store.json").parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "store" / "store.json").write_text('{"format": "rnnmem-run-store", '
                                                   '"version": 7}')
    assert "newer rnnmem" in _one_line_exit_2(capsys, ["runs", "--store", store])
    assert list(tmp_path.glob("store/runs/*")) == []  # nothing ran
    (tmp_path / "afile").write_text("")
    msg = _one_line_exit_2(capsys, ["run", str(proto_file), "--store",
                                    str(tmp_path / "afile" / "store")])
    assert "afile" in msg and "cannot" in msg


def test_runs_marks_and_removes_runs_of_other_code(capsys, proto_file, tmp_path,
                                                   monkeypatch):
    """Runs made by other code (here: another $RNNMEM_RUN_CODE) are listed with code
    'other', their stored hash, and go with --remove-other-code; this code's stay."""
    store = str(tmp_path / "store")
    monkeypatch.setenv("RNNMEM_RUN_CODE", "old-build")
    assert main(["run", str(proto_file), "--store", store, "-q"]) == 0
    monkeypatch.setenv("RNNMEM_RUN_CODE", "new-build")
    assert main(["run", str(proto_file), "--store", store, "-q"]) == 0
    capsys.readouterr()
    assert main(["runs", "--store", store, "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sorted(r["code"] for r in rows) == ["other", "other", "this", "this"]
    assert len({r["hash"] for r in rows}) == 4  # each as stored, not recomputed here
    assert main(["runs", "--store", store]) == 0
    assert "other" in capsys.readouterr().out
    _one_line_exit_2(capsys, ["runs", str(proto_file), "--store", store,
                              "--remove-other-code"])
    assert main(["runs", "--store", store, "--remove-other-code"]) == 0
    assert "removed 2 run(s) made by other rnnmem code" in capsys.readouterr().out
    assert main(["run", str(proto_file), "--store", store, "-q"]) == 0
    assert "2 already in the store" in capsys.readouterr().out
    assert main(["runs", "--store", store, "--remove-other-code"]) == 0
    assert "removed 0 run(s)" in capsys.readouterr().out
