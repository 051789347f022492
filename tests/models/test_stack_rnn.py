"""Stack RNN: interface, equations, state carrying, recording, dtypes, checkpoints."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from rnnmem.errors import (AlphabetError, InvalidParameterError, NonFiniteError, ShapeError,
                           UnknownNameError)
from rnnmem.models.registry import build_model, load, save_checkpoint
from rnnmem.models.stack_rnn import StackRNN, StackRNNState
from rnnmem.models.stacks import SuperpositionControls
from rnnmem.numerics.tolerances import tolerance

DT = torch.float64
V = 5
KINDS = ["superposition", "stratification", "none"]


def make(stack="superposition", controller="lstm", **kw) -> StackRNN:
    torch.manual_seed(kw.pop("seed", 0))
    args = dict(width=6, stack_width=3, n_stacks=2, dtype="float64", device="cpu")
    args.update(kw)
    return StackRNN(V, controller=controller, stack=stack, **args)


def tokens(B=3, T=7, seed=1) -> torch.Tensor:
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


def assert_close(a, e, tol) -> None:
    a, e = a.detach().numpy(), e.detach().numpy()
    assert tol.allclose(a, e), f"max violation {tol.max_violation(a, e):.3g}"


@pytest.mark.parametrize("controller", ["srnn", "lstm", "gru"])
@pytest.mark.parametrize("stack", KINDS)
def test_shapes_names_and_gradients(controller, stack):
    m = make(stack, controller, embedding_dim=4 if controller == "gru" else None)
    assert {n for n, _ in m.named_children()} >= {"controller", "memory", "classifier"}
    x = tokens()
    y = m(x)
    assert y.shape == (3, 7, V) and y.dtype == DT
    y.square().mean().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    mem = list(m.memory.parameters())
    if stack == "none":
        assert mem == []
    else:
        assert mem and all(p.grad.abs().sum() > 0 for p in mem)  # the stack is used
        n_in = m.controller.cell.weight_ih.shape[1]
        assert n_in == m.controller.input_size + m.read_size


def test_matches_hand_written_joulin_mikolov_equations():
    """srnn + superposition == the equations written out with the reference stack step."""
    m = make("superposition", "srnn", stack_depth=4, read_depth=2)
    x = tokens(B=2, T=6)
    cell, mem = m.controller.cell, m.memory
    h = torch.zeros(2, 6, dtype=DT)
    s = torch.zeros(2, 2, 4, 3, dtype=DT)
    r = torch.zeros(2, m.read_size, dtype=DT)
    outs = []
    for t in range(6):
        e = torch.nn.functional.one_hot(x[:, t], V).to(DT)
        z = torch.cat([e, r], -1)
        h = torch.tanh(z @ cell.weight_ih.T + cell.bias_ih + h @ cell.weight_hh.T + cell.bias_hh)
        a = torch.softmax((h @ mem.action.weight.T + mem.action.bias).view(2, 2, 3), -1)
        v = torch.sigmoid(h @ mem.value.weight.T + mem.value.bias).view(2, 2, 3)
        s = mem._reference_step(s, SuperpositionControls(a, v))
        r = s[:, :, :2].reshape(2, -1)
        outs.append(h @ m.classifier.weight.T + m.classifier.bias)
    assert_close(m(x), torch.stack(outs, 1), tolerance(DT, n_ops=6 * 20, cond=10.0))


@pytest.mark.parametrize("stack", KINDS)
def test_chunked_forward_and_step_equal_full_forward(stack):
    """Carrying the state across chunks (truncated BPTT) or stepping gives the same logits."""
    m = make(stack, "gru", stack_depth=12)
    x = tokens(T=10)
    full = m(x)
    y1, st = m(x[:, :4], return_state=True)
    assert isinstance(st, StackRNNState)
    st = m.detach_state(st)
    assert all(t.requires_grad is False for t in torch.utils._pytree.tree_leaves(st)
               if isinstance(t, torch.Tensor))
    y2 = m(x[:, 4:], state=st)
    tol = tolerance(DT, n_ops=10 * 30, cond=10.0)
    assert_close(torch.cat([y1, y2], 1), full, tol)
    state, steps = m.initial_state(3, capacity=12), []
    for t in range(10):
        logit, state = m.step(x[:, t], state)
        steps.append(logit)
    assert_close(torch.stack(steps, 1), full, tol)


@pytest.mark.parametrize("stack", ["superposition", "stratification"])
def test_record_stack(stack):
    m = make(stack, "lstm", read_depth=1)
    x = tokens(T=5)
    y, st, tr = m(x, return_state=True, record_stack=True)
    y2, tr2 = m(x, record_stack=True)
    assert torch.equal(y, y2)
    assert tr["reads"].shape == (3, 5, m.read_size)
    if stack == "superposition":
        assert tr["stack"].shape == (3, 5, 2, 5, 3)  # depth = T when stack_depth is None
        assert torch.equal(tr["stack"][:, -1], st.stack)
        assert torch.equal(tr["reads"][:, 2], m.memory.read(tr["stack"][:, 2]))
        assert_close(tr["actions"].sum(-1), torch.ones(3, 5, 2, dtype=DT), tolerance(DT, n_ops=3))
    else:
        assert tr["values"].shape == (3, 5, 2, 5, 3) and tr["strengths"].shape == (3, 5, 2, 5)
        assert torch.equal(tr["strengths"][:, -1], st.stack.strengths)
        assert torch.all((tr["strengths"] >= 0) & (tr["strengths"] <= 1))
        # step t pushed with strength push[:, t] onto the top cell
        assert torch.equal(tr["strengths"][:, :, :, 0], tr["push"])
    assert all(v.dtype == DT for v in tr.values())
    assert make("none")(x, record_stack=True)[1] == {}


def test_classify_pools_and_ignores_padding():
    torch.manual_seed(3)
    m = make("stratification", "lstm", mode="recognition")
    assert m.output_size == 2
    x = tokens(T=6)
    lengths = torch.tensor([6, 2, 4])
    logits = m(x)
    got = m.classify(x, lengths)
    assert torch.equal(got, logits[torch.arange(3), lengths - 1])
    padded = x.clone()
    padded[1, 2:] = (padded[1, 2:] + 1) % V  # change what lies after the end
    assert torch.equal(m.classify(padded, lengths)[1], got[1])
    mean = make("stratification", "lstm", mode="recognition", pool="mean")
    lg = mean(x)
    assert_close(mean.classify(x, lengths)[2], lg[2, :4].mean(0), tolerance(DT, n_ops=4))
    assert torch.equal(m.classify(x), logits[:, -1])
    with pytest.raises(InvalidParameterError, match="lengths"):
        m.classify(x, torch.tensor([7, 1, 1]))
    with pytest.raises(ShapeError, match="lengths"):
        m.classify(x, torch.tensor([1, 1]))


def test_soft_one_hot_input_matches_token_ids():
    for emb in (None, 4):
        m = make("superposition", "lstm", embedding_dim=emb)
        x = tokens()
        soft = torch.nn.functional.one_hot(x, V).to(DT)
        assert_close(m(soft), m(x), tolerance(DT, n_ops=V))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("stack", KINDS)
def test_dtypes_forward_backward_without_upcast(dtype, stack):
    m = make(stack, "lstm", dtype=dtype)
    want = getattr(torch, dtype)
    y, tr = m(tokens(T=4), record_stack=True)
    assert y.dtype == want and all(v.dtype == want for v in tr.values())
    y.float().square().mean().backward()
    for p in m.parameters():
        assert p.dtype == want and p.grad.dtype == want and torch.isfinite(p.grad).all()
    # the low-precision model computes the float64 model's function, to its own precision
    ref = make(stack, "lstm")
    ref.load_state_dict({k: v.to(DT) for k, v in m.state_dict().items()})
    tol = tolerance(want, n_ops=4 * 30, cond=10.0)
    assert_close(y.to(DT), ref(tokens(T=4)), tol)


def test_config_registry_checkpoint_roundtrip(tmp_path):
    m = make("stratification", "gru", stack_depth=9, embedding_dim=4, mode="lm")
    cfg = m.config
    json.dumps(cfg)
    rebuilt = build_model("stack_rnn", **{**cfg, "device": "cpu"})
    rebuilt.load_state_dict(m.state_dict())
    x = tokens()
    assert torch.equal(rebuilt(x), m(x))
    path = save_checkpoint(tmp_path / "m.pt", m)
    assert torch.equal(load(path)(x), m(x))
    base = build_model("lstm_baseline", vocab_size=V, width=4, dtype="float64", device="cpu")
    assert base.has_stack is False and list(base.memory.parameters()) == []
    again = load(save_checkpoint(tmp_path / "b.pt", base))
    assert type(again) is type(base) and torch.equal(again(x), base(x))
    with pytest.raises(InvalidParameterError, match="stack"):
        build_model("gru_baseline", vocab_size=V, stack="superposition")


def test_seed_fixes_the_initialisation_and_leaves_the_global_stream():
    torch.manual_seed(5)
    expected_next = torch.rand(3)
    torch.manual_seed(5)
    a = StackRNN(V, stack="stratification", seed=11, dtype="float64", device="cpu")
    assert torch.equal(torch.rand(3), expected_next)
    b = StackRNN(V, stack="stratification", seed=11, dtype="float64", device="cpu")
    c = StackRNN(V, stack="stratification", seed=12, dtype="float64", device="cpu")
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert a.config["seed"] == 11


def test_bad_input():
    m = make()
    with pytest.raises(AlphabetError, match="token id"):
        m(torch.tensor([[0, V]]))
    with pytest.raises(ShapeError):
        m(torch.zeros(2, 3, 4, dtype=torch.long))
    with pytest.raises(InvalidParameterError, match="dtype"):
        m(torch.zeros(2, 3, V, dtype=torch.float32))
    with pytest.raises(NonFiniteError):
        m(torch.full((2, 3, V), float("nan"), dtype=DT))
    with pytest.raises(ShapeError, match="controller state"):
        m(tokens(B=2), state=m.initial_state(3, capacity=4))
    with pytest.raises(UnknownNameError, match="controller"):
        StackRNN(V, controller="transformer")
    with pytest.raises(UnknownNameError, match="stack"):
        StackRNN(V, stack="queue")
    with pytest.raises(InvalidParameterError, match="read_depth"):
        StackRNN(V, stack="stratification", read_depth=2)
    with pytest.raises(InvalidParameterError, match="width"):
        StackRNN(V, width=0)


def test_compile_falls_back_with_one_warning(no_compiler):
    m = make("superposition", "lstm", compile=True)
    eager = make("superposition", "lstm")
    x = tokens(T=4)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        y = m(x)
        y2 = m(x)
    msgs = [str(i.message) for i in w if "torch.compile failed" in str(i.message)]
    assert len(msgs) == 1 and "no compiler here" in msgs[0] and m.compile_failed
    # the fallback runs the eager step on the full-depth stack (the compiled path's
    # layout); the eager model's own default grows its stack, which rounds differently,
    # and runs the sequence as one node (fused_sequence), which does too
    eager.fused_sequence = False
    full = eager(x, state=eager.initial_state(x.shape[0], capacity=x.shape[1]))
    assert torch.equal(y, full) and torch.equal(y2, y)


@pytest.mark.slow
def test_compile_matches_eager():
    m = make("stratification", "lstm", compile=True)
    eager = make("stratification", "lstm")
    x = tokens(T=4)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        y = m(x)
    if m.compile_failed:
        pytest.skip(f"torch.compile unavailable: {[str(i.message) for i in w]}")
    assert_close(y, eager(x), tolerance(DT, n_ops=4 * 30, cond=10.0))


def test_stack_none_as_python_none_is_the_memoryless_model():
    """``--model-arg stack=none`` parses to None on the command line: same model."""
    a = StackRNN(3, stack=None, width=4, seed=0, device="cpu")
    b = StackRNN(3, stack="none", width=4, seed=0, device="cpu")
    assert a.config["stack"] == "none" and not a.has_stack
    x = torch.randint(0, 3, (2, 5), generator=torch.Generator().manual_seed(0))
    assert torch.equal(a(x), b(x))


@pytest.mark.parametrize("stack", ["superposition", "stratification", "nondeterministic"])
def test_stack_depth_sequence_is_the_default(stack):
    """``stack_depth="sequence"`` (the name TOML protocols and reports use) is ``None``:
    the same model, the same config, so checkpoints rebuild alike."""
    kw = {"n_stacks": 1} if stack == "nondeterministic" else {}
    a, b = make(stack, seed=3, **kw), make(stack, seed=3, stack_depth="sequence", **kw)
    assert b.stack_depth is None and b.config == a.config
    x = tokens()
    assert torch.equal(a(x), b(x))


@pytest.mark.parametrize("bad", [0, -3, "seq", 2.5, True])
def test_stack_depth_names_what_it_accepts(bad):
    with pytest.raises(InvalidParameterError, match="stack_depth must be a positive integer "
                                                    "or 'sequence'"):
        make(stack_depth=bad)
