"""``make gpu-check`` (issue 14, part 5): the comparison logic runs everywhere (CPU against
CPU at tiny sizes), flags a disagreement, and without CUDA says so in one line, exit 0."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import gpu_check as G


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_one_line_and_exit_0(capsys, tmp_path):
    assert G.main(["--json", str(tmp_path / "g.json")]) == 0
    out = capsys.readouterr().out.strip()
    assert out.count("\n") == 0 and "no CUDA device" in out
    assert not (tmp_path / "g.json").exists()


@pytest.mark.filterwarnings("error::DeprecationWarning")  # no deprecated option of ours
def test_every_case_runs_cpu_against_cpu_and_agrees(tmp_path, capsys):
    path = tmp_path / "g.json"
    assert G.main(["--force-cpu", "--tiny", "--skip-tests", "--repeats", "1",
                   "--json", str(path)]) == 0
    table = json.loads(path.read_text())
    names = [r["case"] for r in table["rows"]]
    for want in ("linear_recurrence time-invariant", "curse-of-memory training step",
                 "stack-RNN training step (superposition)", "perturbation sweep"):
        assert want in names
    assert all(r["ok"] and r["max_violation"] == 0.0 for r in table["rows"]), table["rows"]
    assert table["header"]["ok"] is True


def test_a_disagreement_beyond_the_bound_fails():
    """Second device's loss off by 100 ulps-worth of the bound: flagged, not averaged away."""
    calls = []

    def make(device, tiny):
        def fn():
            x = torch.linspace(1.0, 2.0, 5, dtype=torch.float64)
            if len(calls) >= 2:  # warm-up + timed call of the first device done
                x = x * (1 + 1e-9)
            calls.append(device)
            return {"loss": x}
        return fn, {"*": dict(n_ops=10, cond=1.0)}

    r = G.compare("fake", make, ("cpu", "cpu"), repeats=1)
    assert not r["ok"] and r["max_violation"] > 1 and r["worst_output"] == "loss"


def test_a_failing_case_is_reported_not_raised():
    def make(device, tiny):
        raise RuntimeError("boom")

    r = G.compare("broken", make, ("cpu", "cpu"))
    assert not r["ok"] and "boom" in r["error"]


def test_nondeterministic_stack_is_detected_when_registered(monkeypatch):
    from rnnmem.models import stack_rnn

    monkeypatch.setattr(stack_rnn, "STACK_KINDS", tuple(stack_rnn.STACK_KINDS) +
                        ("nondeterministic",))
    assert G.nondeterministic_stack_kind() == "nondeterministic"
    assert any(name.startswith("RNS") for name, _ in G.cases())


@pytest.mark.gpu
def test_linear_recurrence_gpu_agrees_with_cpu():
    r = G.compare("lr", G.case_linear_recurrence(True), ("cpu", "cuda"), tiny=True,
                  repeats=1)
    assert r["ok"], r
