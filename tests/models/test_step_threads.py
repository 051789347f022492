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
    with _device.step_threads(None, "cpu"):  # work not counted
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


def test_the_nondeterministic_stack_loop_counts_its_largest_step(three_threads,
                                                                 monkeypatch):
    """The nondeterministic stack's loop runs on one thread when its largest step (the
    controller's gate product plus the stack's last step) is small, forward and back."""
    m = StackRNN(3, controller="lstm", stack="nondeterministic", width=4, dtype="float64",
                 device="cpu", seed=0)
    seen = []
    m.controller.cell.register_forward_hook(lambda *_: seen.append(torch.get_num_threads()))
    m.memory.action.weight.register_hook(lambda g: seen.append(("bwd",
                                                                torch.get_num_threads())))
    x = torch.zeros(2, 3, dtype=torch.int64)
    m(x).sum().backward()
    assert seen == [1] * 3 + [("bwd", 1)]
    largest = m._loop_work(2, 3, m.initial_state(2, capacity=3))
    monkeypatch.setattr(_device, "SERIAL_STEP_WORK", largest)  # not below: threaded
    seen.clear()
    m(x).sum().backward()
    assert seen == [3] * 3 + [("bwd", 3)]


def test_the_nondeterministic_stacks_step_work_grows_to_its_window():
    from rnnmem.models.nondeterministic import NondeterministicStack

    full = NondeterministicStack(2, 3)
    limited = NondeterministicStack(2, 3, window=4)
    work = [full.step_work(2, j) for j in range(1, 12)]
    steps = [b - a for a, b in zip(work, work[1:])]
    assert all(0 < a < b for a, b in zip(steps, steps[1:]))  # the pop term: quadratic
    capped = [limited.step_work(2, j) for j in range(1, 12)]
    # the same until a column has D rows (step D - 1), constant from there on
    assert capped[:3] == work[:3] and len(set(capped[2:])) == 1
    assert NondeterministicStack(2, 3, vector_width=2).step_work(2, 5) == 3 * work[4]


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


# ------------------------------------------------------------ the hook and the training loop
def test_step_work_counts_the_gate_product_of_step_loop_models():
    from rnnmem.models import build_model

    lstm = StackRNN(3, controller="lstm", stack="superposition", width=4, stack_width=2,
                    dtype="float64", device="cpu", seed=0)
    assert lstm.step_work(2) == 288  # the fused node's count (test above)
    gru = StackRNN(3, controller="gru", stack="stratification", width=4, stack_width=2,
                   dtype="float64", device="cpu", seed=0)
    assert gru.step_work(5) == 5 * 12 * (gru.controller.cell.weight_ih.shape[1] + 4)
    rns = StackRNN(3, controller="lstm", stack="nondeterministic", width=4, dtype="float64",
                   device="cpu", seed=0)
    assert rns.step_work(2) is None
    rnn = build_model("rnn", activation="tanh", width=6, input_dim=2, device="cpu")
    assert rnn.step_work(4) == 4 * 6 * (6 + 2)
    scan = build_model("rnn", activation="linear", recurrence="softplus", width=6,
                       device="cpu")
    assert scan.step_work(4) is None  # the parallel recurrence, no step loop
    assert build_model("diagonal_ssm", width=6, device="cpu").step_work(4) is None
    assert build_model("ssm", activation="tanh", recurrence="vanilla", width=5,
                       device="cpu").step_work(3) == 3 * 5 * 5
    assert build_model("ssm", activation="tanh", recurrence="diagonal", width=5,
                       device="cpu").step_work(3) is None


@pytest.mark.parametrize("name, activation, work", [
    ("com_diagonal_rnn", "tanh", 3 * 4), ("com_diagonal_rnn", "linear", None),
    ("com_rnn", "tanh", 3 * 4 * 4), ("com_rnn", "linear", 3 * 4 * 4),  # a full matrix: loop
    ("com_ssm", "tanh", 3 * 4 * 4), ("com_lru", "tanh", 3 * 4), ("com_lru", "linear", None)])
def test_the_original_codes_models_count_their_loop_steps(name, activation, work):
    from rnnmem.models import build_model

    m = build_model(name, width=4, activation=activation, device="cpu")
    assert m.step_work(3) == work


def test_the_original_codes_state_loop_runs_small_steps_on_one_thread(three_threads):
    from rnnmem.models import build_model

    m = build_model("com_rnn", width=4, activation="tanh", device="cpu", dtype="float64")
    seen = []
    sigma = m._sigma
    m._sigma = lambda z: (seen.append(torch.get_num_threads()), sigma(z))[1]
    m(torch.zeros(2, 5, 1, dtype=torch.float64))
    assert seen == [1] * 5 and torch.get_num_threads() == 3


def test_the_dense_ssm_state_loop_runs_small_steps_on_one_thread(three_threads, monkeypatch):
    from rnnmem.models import build_model

    ssm = build_model("ssm", activation="tanh", recurrence="vanilla", width=5, device="cpu",
                      dtype="float64")
    seen, addmm = [], torch.addmm

    def spy(*a, **k):
        seen.append(torch.get_num_threads())
        return addmm(*a, **k)

    monkeypatch.setattr(torch, "addmm", spy)
    ssm(torch.zeros(2, 4, 1, dtype=torch.float64))
    assert seen == [1] * 4 and torch.get_num_threads() == 3


def test_the_nonlinear_rnn_loop_runs_small_steps_on_one_thread(three_threads, monkeypatch):
    from rnnmem.models import build_model

    rnn = build_model("rnn", activation="tanh", width=6, device="cpu", dtype="float64")
    seen, inner = [], rnn._sample_step

    def spy(*a):
        seen.append(torch.get_num_threads())
        return inner(*a)

    monkeypatch.setattr(rnn, "_sample_step", spy)
    rnn(torch.zeros(2, 4, 1, dtype=torch.float64))
    assert seen == [1] * 4 and torch.get_num_threads() == 3


def _backward_threads(model, task: str, steps: int = 2) -> set[int]:
    """The thread counts the parameters' gradients were computed on, training ``model``
    with three threads configured."""
    from rnnmem.train import TrainConfig, train

    seen = set()
    for p in model.parameters():
        p.register_hook(lambda g: seen.add(torch.get_num_threads()))
    cfg = TrainConfig(model=model.model_name, task=task, steps=steps, batch_size=4, lr=1e-3,
                      dtype="float64", device="cpu", threads=3, eval_every=0, seed=0,
                      model_kwargs={k: v for k, v in model.config.items() if k != "dtype"})
    train(cfg, model=model, progress=False)
    return seen


def test_training_runs_backward_of_small_step_loops_on_one_thread(monkeypatch):
    from rnnmem.models import build_model

    old = torch.get_num_threads()

    def tanh_rnn():
        return build_model("rnn", activation="tanh", width=4, dtype="float64", device="cpu",
                           seed=0)

    assert _backward_threads(tanh_rnn(), "lf:exponential") == {1}
    assert torch.get_num_threads() == old  # train restores the caller's count
    # no step loop (the parallel recurrence): the configured threads
    scan = build_model("diagonal_ssm", width=4, dtype="float64", device="cpu", seed=0)
    assert _backward_threads(scan, "lf:exponential") == {3}
    monkeypatch.setattr(_device, "SERIAL_STEP_WORK", 0)  # every loop threaded
    assert _backward_threads(tanh_rnn(), "lf:exponential") == {3}


# ------------------------------------------------- the backward of a loop outside training
def _loop_models():
    from rnnmem.models import build_model

    kw = dict(device="cpu", dtype="float64", seed=0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 6, 1, dtype=torch.float64, generator=g)
    tokens = torch.randint(0, 3, (3, 6), generator=g)
    return {
        "rnn": (build_model("rnn", activation="tanh", width=5, **kw), x),
        "ssm": (build_model("ssm", activation="tanh", recurrence="vanilla", width=5, **kw),
                x),
        "com_rnn": (build_model("com_rnn", activation="tanh", width=5, **kw), x),
        "stack_rnn": (StackRNN(3, controller="gru", stack="stratification", width=4,
                               stack_width=2, **kw), tokens),
    }


def _record(seen: dict, name: str) -> None:
    seen.setdefault(name, torch.get_num_threads())


@pytest.mark.parametrize("name, inside, upstream", [
    ("rnn", {"W"}, set()), ("ssm", {"W"}, {"U", "b"}),
    ("com_rnn", {"P", "w"}, {"encoder.weight", "encoder.bias"}),
    ("stack_rnn", {"controller.cell.weight_hh"}, set())])
def test_a_users_own_backward_runs_the_loop_on_one_thread(three_threads, name, inside,
                                                          upstream):
    """Outside ``rnnmem.train``: the loop's backward (the gradients of the weights used in
    every step) runs on one thread, the work upstream of the loop's inputs (their
    projection) on the configured three, and the count is 3 when ``backward`` returns."""
    model, x = _loop_models()[name]
    seen = {}
    for pname, p in model.named_parameters():
        p.register_hook(lambda g, n=pname: _record(seen, n))
    model(x).square().sum().backward()
    assert torch.get_num_threads() == 3
    assert {seen[n] for n in inside} == {1}, seen
    assert {seen[n] for n in upstream} <= {3}, seen


def test_work_upstream_of_the_stack_rnns_loop_gets_the_configured_threads_back(
        three_threads):
    """Float codes computed from a leaf ``z``: the gradient of ``z`` (computed after the
    loop has delivered the codes' gradient) runs on the configured threads, the
    controller's on one."""
    model, tokens = _loop_models()["stack_rnn"]
    z = torch.nn.functional.one_hot(tokens, 3).double().requires_grad_(True)
    seen = {}
    z.register_hook(lambda g: _record(seen, "z"))
    model.controller.cell.weight_ih.register_hook(lambda g: _record(seen, "weight_ih"))
    model(z * 1.5).sum().backward()
    assert seen == {"z": 3, "weight_ih": 1} and torch.get_num_threads() == 3


def test_large_steps_keep_the_configured_threads_in_backward(three_threads, monkeypatch):
    monkeypatch.setattr(_device, "SERIAL_STEP_WORK", 0)
    model, x = _loop_models()["rnn"]
    seen = set()
    model.W.register_hook(lambda g: seen.add(torch.get_num_threads()))
    model(x).sum().backward()
    assert seen == {3} and torch.get_num_threads() == 3


def test_the_backward_hooks_leave_the_gradients_alone(three_threads, monkeypatch):
    """With the hooks (small work) or without them (every loop threaded), the same
    gradients to rounding, also through torch.autograd.grad with create_graph."""
    grads = []
    for work in (None, 0):
        if work is not None:
            monkeypatch.setattr(_device, "SERIAL_STEP_WORK", work)
        model, x = _loop_models()["com_rnn"]
        x = x.clone().requires_grad_(True)
        gx, = torch.autograd.grad(model(x).square().sum(), x, create_graph=True)
        gx.square().sum().backward()
        grads.append([gx.detach()] + [p.grad.clone() for p in model.parameters()])
        assert torch.get_num_threads() == 3
    for u, v in zip(*grads):
        torch.testing.assert_close(u, v, rtol=1e-12, atol=1e-12)


def test_a_backward_that_raises_mid_loop_gets_its_count_back_at_the_next_loop(
        three_threads):
    model, x = _loop_models()["rnn"]

    def fail(g):
        raise ArithmeticError("stop")

    handle = model.W.register_hook(fail)
    with pytest.raises(ArithmeticError):
        model(x).sum().backward()
    handle.remove()
    assert torch.get_num_threads() == 1  # the queued restore was dropped with the backward
    with torch.no_grad():
        model(x)  # the next step loop, outside a backward, restores it
    assert torch.get_num_threads() == 3
    # a count set by the caller after the failed backward is kept
    handle = model.W.register_hook(fail)
    with pytest.raises(ArithmeticError):
        model(x).sum().backward()
    handle.remove()
    torch.set_num_threads(2)
    with torch.no_grad():
        model(x)
    assert torch.get_num_threads() == 2 and not _device._BACKWARD_SAVED


def test_no_hooks_without_grad_or_for_a_tensor_that_needs_none(three_threads):
    loop = _device.StepLoop(True)
    t = torch.ones(2)
    assert loop.outputs(t) is t and t._backward_hooks is None
    w = torch.ones(2, requires_grad=True)
    with torch.no_grad():
        assert loop.outputs(w) is w
    assert w._backward_hooks is None
    assert _device.StepLoop(False).inputs(w) is w and w._backward_hooks is None
    loop.inputs(w)
    assert len(w._backward_hooks) == 1
