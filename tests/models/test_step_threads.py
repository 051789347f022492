"""Small step loops run on one torch thread (rnnmem.models._device.step_threads)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from rnnmem.models import StackRNN, _device, lstm_sequence


@pytest.fixture
def three_threads():
    old = torch.get_num_threads()
    torch.set_num_threads(3)
    yield
    torch.set_num_threads(old)


def test_a_small_loop_runs_on_one_thread_and_the_count_comes_back(three_threads):
    small = _device.SERIAL_STEP_WORK - 1
    with _device.step_threads(small, torch.device("cpu")):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 3
    with pytest.raises(ZeroDivisionError):
        with _device.step_threads(small, "cpu"):
            1 / 0
    assert torch.get_num_threads() == 3


def test_a_large_loop_or_another_device_keeps_the_configured_threads(three_threads):
    with _device.step_threads(_device.SERIAL_STEP_WORK, "cpu"):
        assert torch.get_num_threads() == 3
    with _device.step_threads(0, torch.device("meta")):
        assert torch.get_num_threads() == 3


def _node_threads(monkeypatch, B: int, H: int, grad: bool = True) -> list[int]:
    """The thread count inside the fused stack-LSTM node's forward and backward loops
    (``grad`` False: a forward without grad, which keeps no states)."""
    seen = []
    fwd, bwd = lstm_sequence._forward, lstm_sequence._backward_loop

    def spy(fn):
        def wrapped(*a, **k):
            seen.append(torch.get_num_threads())
            return fn(*a, **k)
        return wrapped

    monkeypatch.setattr(lstm_sequence, "_forward", spy(fwd))
    monkeypatch.setattr(lstm_sequence, "_backward_loop", spy(bwd))
    m = StackRNN(3, controller="lstm", stack="superposition", width=H, stack_width=2,
                 dtype="float64", device="cpu", seed=0)
    x = torch.randint(0, 3, (B, 4), generator=torch.Generator().manual_seed(0))
    if grad:
        m(x).sum().backward()
    else:
        with torch.no_grad():
            m(x)
    return seen


def test_the_fused_node_runs_small_steps_on_one_thread_forward_and_back(three_threads,
                                                                        monkeypatch):
    assert _node_threads(monkeypatch, 2, 4) == [1, 1]
    assert _node_threads(monkeypatch, 2, 4, grad=False) == [1]
    assert torch.get_num_threads() == 3


def test_the_fused_node_keeps_the_threads_above_the_threshold(three_threads, monkeypatch):
    # a step's gate product: batch 2 x 4H = 16 rows x (3 symbols + read 2 + H 4) = 288
    monkeypatch.setattr(_device, "SERIAL_STEP_WORK", 288)
    assert _node_threads(monkeypatch, 2, 4) == [3, 3]
    monkeypatch.setattr(_device, "SERIAL_STEP_WORK", 289)
    assert _node_threads(monkeypatch, 2, 4) == [1, 1]


def test_the_step_by_step_loop_runs_small_steps_on_one_thread(three_threads):
    seen = []
    m = StackRNN(3, controller="gru", stack="stratification", width=4, stack_width=2,
                 dtype="float64", device="cpu", seed=0)
    m.controller.cell.register_forward_hook(lambda *_: seen.append(torch.get_num_threads()))
    m(torch.zeros(2, 5, dtype=torch.int64))
    assert seen == [1] * 5 and torch.get_num_threads() == 3


def test_the_nondeterministic_stack_loop_keeps_the_threads(three_threads):
    seen = []
    m = StackRNN(3, controller="lstm", stack="nondeterministic", width=4, dtype="float64",
                 device="cpu", seed=0)
    m.controller.cell.register_forward_hook(lambda *_: seen.append(torch.get_num_threads()))
    m(torch.zeros(2, 3, dtype=torch.int64))
    assert seen == [3] * 3


def test_small_loops_give_the_same_values_on_one_thread_as_split(three_threads, monkeypatch):
    """One thread or three change only how the products are split: the values agree to
    rounding (the gradients of a sequence amplify it a little)."""
    m = StackRNN(3, controller="lstm", stack="superposition", width=6, stack_width=2,
                 dtype="float64", device="cpu", seed=1)
    x = torch.randint(0, 3, (5, 12), generator=torch.Generator().manual_seed(1))

    def run():
        m.zero_grad(set_to_none=True)
        out = m(x)
        out.square().sum().backward()
        return [out.detach()] + [p.grad.clone() for p in m.parameters()]

    one = run()
    monkeypatch.setattr(_device, "SERIAL_STEP_WORK", 0)
    split = run()
    for u, v in zip(one, split):
        torch.testing.assert_close(u, v, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("env, passive", [({}, False), ({"OMP_WAIT_POLICY": "passive"}, True),
                                         ({"GOMP_SPINCOUNT": "0"}, True),
                                         ({"OMP_WAIT_POLICY": "ACTIVE"}, False),
                                         ({"OMP_WAIT_POLICY": "PASSIVE",
                                           "GOMP_SPINCOUNT": "10000"}, False)])
def test_the_threshold_follows_the_wait_policy(monkeypatch, env, passive):
    for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert _device._passive_wait() is passive


def test_a_fresh_process_sets_the_threshold_from_its_wait_policy():
    code = "from rnnmem.models import _device; print(_device.SERIAL_STEP_WORK)"
    got = {}
    for policy in ("PASSIVE", None):
        env = {k: v for k, v in os.environ.items()
               if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
        if policy:
            env["OMP_WAIT_POLICY"] = policy
        r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                           text=True, timeout=120, check=True)
        got[policy] = int(r.stdout.strip())
    assert got == {"PASSIVE": 1 << 23, None: 1 << 19}
