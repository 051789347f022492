"""``rnnmem evaluate`` end to end: a checkpoint from ``rnnmem train``, table/JSON/CSV output
equal to :func:`evaluate_lengths`, bin selection, one-line errors with exit status 2."""

from __future__ import annotations

import json

import pytest
import torch

from rnnmem.cli import main
from rnnmem.commands.evaluate import choose_bins
from rnnmem.errors import InvalidParameterError
from rnnmem.models.registry import load
from rnnmem.tasks.languages import DEFAULT_TEST_BINS, LengthBin
from rnnmem.train.evaluate import evaluate_lengths

TINY = ["--model", "stack_rnn", "--model-arg", "width=4", "--model-arg", "stack_width=2",
        "--steps", "3", "--batch-size", "4", "--eval-every", "0", "--device", "cpu", "-q",
        "--task-arg", "valid_size=4"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for name, extra in (("ns", ["--task", "lang:dyck1"]),
                        ("rec", ["--task", "lang:anbn", "--task-arg", "mode=recognition",
                                 "--task-arg", "lengths=2:20"]),
                        ("lf", None)):
        if extra is None:
            argv = ["train", "--model", "diagonal_ssm", "--task", "lf:exponential",
                    "--model-arg", "width=2", "--task-arg", "n_samples=8",
                    "--task-arg", "length=6", "--steps", "1", "--batch-size", "4",
                    "--device", "cpu", "-q"]
        else:
            argv = ["train", *TINY, *extra]
        assert main([*argv, "--out", str(root / name)]) == 0
        out[name] = root / name / "last.pt"
    torch.set_num_threads(old)
    return out


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("rnnmem evaluate: error: ")
    return lines[0]


def test_table_json_and_csv_agree_with_the_function(runs, tmp_path, capsys):
    ck = str(runs["ns"])
    args = ["--bins", "41:50,51:60", "--per-bin", "6", "--seed", "3"]
    assert main(["evaluate", ck, *args]) == 0
    table = capsys.readouterr().out
    assert "dyck1 (next_symbol)" in table and "41:50" in table and "51:60" in table
    assert main(["evaluate", ck, *args, "--json", "--out", str(tmp_path / "r.json")]) == 0
    printed = json.loads(capsys.readouterr().out)
    written = json.loads((tmp_path / "r.json").read_text())
    direct = evaluate_lengths(load(ck), "dyck1", mode="next_symbol", bins="41:50,51:60",
                              per_bin=6, seed=3).to_dict()
    assert printed == written == json.loads(json.dumps(direct))
    assert main(["evaluate", ck, *args, "--out", str(tmp_path / "r.csv")]) == 0
    rows = (tmp_path / "r.csv").read_text().splitlines()
    assert rows[0].startswith("kind,range,n,accuracy") and rows[1].startswith("train,2:40,6,")
    assert [r.split(",")[1] for r in rows if r.startswith("test,")] == ["41:50", "51:60"]


def test_mode_lengths_and_dtype_come_from_the_checkpoint_or_flags(runs, capsys):
    assert main(["evaluate", str(runs["rec"]), "--lengths", "41:70", "--per-bin", "4",
                 "--dtype", "bfloat16", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["mode"] == "recognition" and d["language"] == "anbn" and d["dtype"] == "bfloat16"
    assert d["bins"] == ["41:60", "61:70"] and d["train_bin"] == "2:20"
    assert "position_accuracy" in d and d["position_accuracy"] == {}


def test_choose_bins():
    assert choose_bins(None, None) == DEFAULT_TEST_BINS
    assert choose_bins("41:500", None) == DEFAULT_TEST_BINS
    assert choose_bins("50:120", None) == (LengthBin(50, 60), LengthBin(61, 100),
                                           LengthBin(101, 120))
    assert choose_bins("10:30", None) == (LengthBin(10, 30),)
    assert choose_bins("45:55", "41:50,51:60") == (LengthBin(45, 50), LengthBin(51, 55))
    with pytest.raises(InvalidParameterError, match="one range"):
        choose_bins("1:5,7:9", None)
    with pytest.raises(InvalidParameterError, match="meets"):
        choose_bins("1:5", "41:50")


@pytest.mark.parametrize("argv,needle", [
    (["--bins", "a:b"], "integers"),
    (["--bins", "41:41"], "no member"),  # dyck1 has even lengths only
    (["--lengths", "60:41"], "lo <= hi"),
    (["--per-bin", "0"], "--per-bin"),
    (["--seed", "x"], "--seed"),
    (["--dtype", "float8"], "dtype"),
])
def test_bad_input_is_one_line_and_status_2(runs, capsys, argv, needle):
    assert main(["evaluate", str(runs["ns"]), *argv]) == 2
    assert needle in _error_line(capsys)


def test_bad_checkpoints(runs, tmp_path, capsys):
    assert main(["evaluate", str(runs["lf"])]) == 2
    assert "not on a formal language" in _error_line(capsys)
    assert main(["evaluate", str(tmp_path / "missing.pt")]) == 2
    assert "does not exist" in _error_line(capsys)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert main(["evaluate", str(tmp_path / "junk.pt")]) == 2
    _error_line(capsys)
