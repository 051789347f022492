"""``rnnmem train`` end to end: real models and tasks, resume, one-line errors, safe values."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from rnnmem.cli import main
from rnnmem.commands.train import parse_assignments, parse_value
from rnnmem.errors import InvalidParameterError
from rnnmem.models.registry import load
from rnnmem.train import load_train_state

TINY_LF = ["--model", "diagonal_ssm", "--task", "lf:exponential", "--model-arg", "width=3",
           "--task-arg", "n_samples=48", "--task-arg", "length=12", "--batch-size", "16",
           "--dtype", "float64", "--device", "cpu", "-q"]


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("rnnmem train: error: ")
    return lines[0]


def test_train_checkpoint_and_resume_a_finished_run(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    common = [*TINY_LF, "--steps", "24", "--eval-every", "8", "--lr", "0.03",
              "--schedule", "cosine", "--warmup", "3"]
    assert main(["train", *common, "--out", str(a)]) == 0
    out = capsys.readouterr().out
    assert f"last checkpoint: {a / 'last.pt'}" in out and "completed after 24/24" in out
    # checkpointing more often does not change the trajectory
    assert main(["train", *common, "--checkpoint-every", "5", "--out", str(b)]) == 0
    # resuming a finished run from its directory alone changes nothing
    assert main(["train", "--out", str(a), "--resume", "-q"]) == 0
    ma, mb = load(a / "last.pt"), load(b / "last.pt")
    assert all(torch.equal(p, q) for p, q in zip(ma.state_dict().values(),
                                                  mb.state_dict().values()))
    rows = json.loads((a / "metrics.json").read_text())
    assert [r["step"] for r in rows] == [8, 16, 24]
    assert rows[-1]["valid_loss"] < rows[0]["valid_loss"]
    cfg, _ = load_train_state(a / "last.pt")
    assert cfg.schedule == "cosine" and cfg.warmup == 3 and cfg.model_kwargs == {"width": 3}


def test_resume_continues_to_more_steps(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY_LF, "--steps", "10", "--eval-every", "5", "--out", str(run)]) == 0
    assert main(["train", "--out", str(run), "--resume", "--steps", "20", "-q"]) == 0
    assert "completed after 20/20" in capsys.readouterr().out
    _, st_ = load_train_state(run / "last.pt")
    assert st_["step"] == 20 and [r["step"] for r in st_["history"]] == [5, 10, 15, 20]


def test_npz_task_and_config_file(tmp_path, capsys):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((20, 8, 2))
    y = np.cumsum(x[..., :1], axis=1) * 0.1
    np.savez(tmp_path / "d.npz", inputs=x, targets=y)
    cfg = {"model": "diagonal_ssm", "task": "npz", "steps": 6, "batch_size": 5,
           "model_kwargs": {"width": 2}, "task_kwargs": {"path": str(tmp_path / "d.npz")},
           "device": "cpu", "eval_every": 3}
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    assert main(["train", "--config", str(tmp_path / "c.json"), "--lr", "0.01",
                 "--out", str(tmp_path / "o"), "-q"]) == 0
    stored = json.loads((tmp_path / "o" / "config.json").read_text())
    assert stored["lr"] == 0.01 and stored["steps"] == 6 and stored["model_kwargs"] == {"width": 2}
    m = load(tmp_path / "o" / "best.pt")
    assert m.input_dim == 2 and m.output_dim == 1


@pytest.mark.parametrize("argv,needle", [
    (["--model", "no_such_model", "--task", "lf:exponential"], "unknown model 'no_such_model'"),
    (["--model", "diagonal_ssm", "--task", "lf:nope"], "unknown task 'lf:nope'"),
    (["--model", "diagonal_ssm", "--task", "nope"], "lang:dyck1"),
    (["--model", "diagonal_ssm", "--task", "lf:exponential", "--steps", "abc"], "--steps"),
    (["--model", "diagonal_ssm", "--task", "lf:exponential", "--lr", "-1"], "lr"),
    (["--model", "diagonal_ssm", "--task", "lf:exponential", "--optimizer", "adam"], "optimizer"),
    (["--model", "diagonal_ssm", "--task", "lf:exponential", "--model-arg", "width"],
     "key=value"),
    (["--model", "diagonal_ssm", "--task", "lf:exponential", "--task-arg", "bogus=1"], "bogus"),
    (["--task", "lf:exponential"], "--model"),
    (["--model", "diagonal_ssm", "--task", "lf:exponential", "--model-arg", "width=1j"],
     "complex"),
    (["--model", "diagonal_ssm", "--task", "lf:exponential", "--config", "/nonexistent.json"],
     "--config"),
    (["--model", "diagonal_ssm", "--task", "lf:exponential", "--threads", "0"], "threads"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, argv, needle):
    assert main(["train", *argv, "--out", str(tmp_path / "o"), "-q"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert needle in line


def test_missing_out_is_one_line(capsys):
    assert main(["train", "--model", "diagonal_ssm", "--task", "lf:exponential"]) == 2
    assert "--out" in _one_error_line(capsys.readouterr().err)


def test_divergence_reports_the_last_good_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["train", *TINY_LF, "--optimizer", "sgd", "--lr", "1e12", "--steps", "50",
                 "--checkpoint-every", "1", "--out", str(run)])
    assert code == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "diverged at step" in line
    assert f"last good checkpoint: {run / 'last.pt'}" in line
    _, st_ = load_train_state(run / "last.pt")
    assert f"diverged at step {st_['step'] + 1}:" in line  # saved the step before
    m = load(run / "last.pt")
    assert all(torch.isfinite(p).all() for p in m.parameters())


def test_subprocess_exit_code_and_single_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "rnnmem", "train", "--model", "diagonal_ssm",
                        "--task", "lf:nope", "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "unknown task 'lf:nope'" in _one_error_line(r.stderr)


# ------------------------------------------------------------------ the safe value parser
@given(st.recursive(st.none() | st.booleans() | st.integers(-10**12, 10**12)
                    | st.floats(allow_nan=False, allow_infinity=False)
                    | st.text(max_size=6),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=3), inner, max_size=3),
                    max_leaves=8))
def test_parse_value_round_trips_literals(v):
    assert parse_value(repr(v)) == v


@pytest.mark.parametrize("text,expected", [
    ("3", 3), ("1e-3", 1e-3), ("true", True), ("False", False), ("none", None),
    ("[1, 2.5]", [1, 2.5]), ("(1, 2)", [1, 2]), ("lstm", "lstm"), ("1:40", "1:40"),
    ("'quoted'", "quoted"), ("__import__('os').system('echo hi')",
                             "__import__('os').system('echo hi')"),
])
def test_parse_value_examples(text, expected):
    assert parse_value(text) == expected


@pytest.mark.parametrize("text", ["1j", "{1, 2}", "b'x'", "1e999", "[1, 2j]"])
def test_parse_value_refuses_odd_literals(text):
    with pytest.raises(InvalidParameterError):
        parse_value(text)


@pytest.mark.parametrize("text", ["float('nan')", "open('/etc/passwd')", "1 +", "a.b"])
def test_parse_value_keeps_non_literals_as_strings(text):
    assert parse_value(text) == text


def test_parse_assignments():
    assert parse_assignments(["a=1", "b=x=y", "c=[1]"], "--task-arg") == \
        {"a": 1, "b": "x=y", "c": [1]}
    for bad in (["a"], ["=1"], ["a=1", "a=2"], ["1a=3"]):
        with pytest.raises(InvalidParameterError):
            parse_assignments(bad, "--task-arg")


def test_memoryless_stack_rnn_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "m"
    assert main(["train", "--model", "stack_rnn", "--task", "lang:dyck1", "--model-arg",
                 "stack=none", "--model-arg", "controller=gru", "--model-arg", "width=4",
                 "--steps", "2", "--batch-size", "4", "--out", str(out), "-q"]) == 0
    from rnnmem.models.registry import load

    assert load(out / "last.pt").config["stack"] == "none"
