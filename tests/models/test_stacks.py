"""Differentiable stacks: vectorised == reference, discrete limits, strengths, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnmem.errors import InvalidParameterError, ShapeError
from rnnmem.models.stacks import (
    StratificationControls,
    StratificationStack,
    StratificationState,
    SuperpositionControls,
    SuperpositionStack,
)
from rnnmem.numerics.tolerances import tolerance

DT = torch.float64


def unit() -> st.SearchStrategy[float]:
    """Numbers in [0, 1], with the edge values 0 and 1 drawn often."""
    return st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0.0, 1.0, allow_nan=False))


def tensor(draw, shape, elements) -> torch.Tensor:
    n = int(np.prod(shape)) if shape else 1
    vals = draw(st.lists(elements, min_size=n, max_size=n))
    return torch.tensor(vals, dtype=DT).reshape(shape)


@st.composite
def simplex_rows(draw, shape):
    """Action probabilities (..., 3): one-hot, with zeros, or generic."""
    w = tensor(draw, (*shape, 3), unit())
    onehot = draw(st.booleans())
    if onehot:
        w = torch.nn.functional.one_hot(w.argmax(-1), 3).to(DT)
    w = w + (w.sum(-1, keepdim=True) == 0).to(DT)  # all-zero rows -> uniform
    return w / w.sum(-1, keepdim=True)


@st.composite
def superposition_case(draw):
    B, K = draw(st.integers(1, 3)), draw(st.integers(1, 2))
    D, W, T = draw(st.integers(1, 5)), draw(st.integers(1, 3)), draw(st.integers(1, 5))
    r = draw(st.integers(1, D))
    stack = SuperpositionStack(D, W, read_depth=r, n_stacks=K)
    state = tensor(draw, (B, K, D, W), st.floats(-2.0, 2.0))
    ctrls = [SuperpositionControls(draw(simplex_rows((B, K))),
                                   tensor(draw, (B, K, W), unit())) for _ in range(T)]
    return stack, state, ctrls


@st.composite
def stratification_case(draw):
    B, K = draw(st.integers(1, 3)), draw(st.integers(1, 2))
    M, W, T = draw(st.integers(1, 6)), draw(st.integers(1, 3)), draw(st.integers(1, 5))
    stack = StratificationStack(W, M, n_stacks=K)
    state = StratificationState(tensor(draw, (B, K, M, W), st.floats(-1.0, 1.0)),
                                tensor(draw, (B, K, M), unit()))
    ctrls = [StratificationControls(tensor(draw, (B, K), unit()), tensor(draw, (B, K), unit()),
                                    tensor(draw, (B, K, W), st.floats(-1.0, 1.0)))
             for _ in range(T)]
    return stack, state, ctrls


def assert_close(actual, expected, tol) -> None:
    a, e = actual.detach().numpy(), expected.detach().numpy()
    assert tol.allclose(a, e), f"max violation {tol.max_violation(a, e):.3g}"


# ---------------------------------------------------------------------------------------
# vectorised == reference
# ---------------------------------------------------------------------------------------
@given(superposition_case())
def test_superposition_step_matches_reference(case):
    stack, state, ctrls = case
    fast, ref = state, state
    for c in ctrls:
        fast, ref = stack.step(fast, c), stack._reference_step(ref, c)
    tol = tolerance(DT, n_ops=3 * len(ctrls), scale=2.0)
    assert_close(fast, ref, tol)
    assert_close(stack.read(fast), ref[:, :, : stack.read_depth].reshape(fast.shape[0], -1), tol)


@given(stratification_case())
def test_stratification_step_matches_reference(case):
    stack, state, ctrls = case
    fast, ref = state, state
    M = state.strengths.shape[-1]
    for c in ctrls:
        fast, ref = stack.step(fast, c), stack._reference_step(ref, c)
    tol = tolerance(DT, n_ops=M * len(ctrls), scale=1.0)
    assert_close(fast.values, ref.values, tol)
    assert_close(fast.strengths, ref.strengths, tol)
    assert_close(stack.read(fast), stack._reference_read(ref), tolerance(DT, n_ops=M * (len(ctrls) + 1)))


def paper_stack(pushes, pops, values, capacity=None):
    """Grefenstette et al. (2015) stack equations literally: a growing list, bottom first; with a
    capacity, the element pushed ``capacity`` steps ago is forgotten."""
    V, s, reads = [], [], []
    for d, u, v in zip(pushes, pops, values):
        s = [max(0.0, s[i] - max(0.0, u - sum(s[i + 1:]))) for i in range(len(s))]
        V, s = V + [v], s + [d]
        if capacity is not None and len(s) > capacity:
            V, s = V[1:], s[1:]
        r = sum(min(s[i], max(0.0, 1 - sum(s[i + 1:]))) * V[i] for i in range(len(s)))
        reads.append(r)
    return reads, s


@given(st.integers(1, 8).flatmap(
    lambda T: st.tuples(st.lists(unit(), min_size=T, max_size=T),
                        st.lists(unit(), min_size=T, max_size=T),
                        st.lists(st.floats(-1, 1), min_size=T, max_size=T),
                        st.integers(1, T + 3))))
def test_stratification_buffer_is_the_paper_stack(args):
    """With capacity >= number of steps nothing is dropped: the paper's stack exactly;
    with capacity M, the paper's stack over the elements of the last M steps."""
    pushes, pops, vals, M = args
    reads_unbounded, _ = paper_stack(pushes, pops, vals)
    reads, strengths = paper_stack(pushes, pops, vals, capacity=M)
    if M >= len(pushes):
        assert reads == reads_unbounded
    stack = StratificationStack(1, M)
    state = stack.initial_state(1, dtype=DT)
    got = []
    for d, u, v in zip(pushes, pops, vals):
        c = StratificationControls(torch.tensor([[d]], dtype=DT), torch.tensor([[u]], dtype=DT),
                                   torch.tensor([[[v]]], dtype=DT))
        state = stack.step(state, c)
        got.append(stack.read(state)[0, 0])
    tol = tolerance(DT, n_ops=M * len(pushes))
    assert_close(torch.stack(got), torch.tensor(reads, dtype=DT), tol)
    T = min(len(pushes), M)
    top_first = torch.tensor(strengths[::-1], dtype=DT)
    assert_close(state.strengths[0, 0, :T], top_first, tol)
    assert torch.all(state.strengths[0, 0, T:] == 0)


# ---------------------------------------------------------------------------------------
# discrete limits and properties
# ---------------------------------------------------------------------------------------
@given(st.integers(1, 4), st.lists(st.sampled_from([0, 1, 2]), min_size=1, max_size=12))
def test_superposition_one_hot_is_a_discrete_stack(depth, ops):
    """One-hot actions give exactly a list stack of capacity ``depth`` (bitwise)."""
    W = 2
    stack = SuperpositionStack(depth, W, read_depth=depth)
    state = stack.initial_state(1, dtype=DT)
    ref: list[list[float]] = []
    for n, op in enumerate(ops):
        v = [float(n + 1), -float(n + 1)]
        a = torch.nn.functional.one_hot(torch.tensor([[op]]), 3).to(DT)
        state = stack.step(state, SuperpositionControls(a, torch.tensor([[v]], dtype=DT)))
        if op == 0:
            ref = ([v] + ref)[:depth]
        elif op == 1:
            ref = ref[1:]
        cells = ref + [[0.0, 0.0]] * (depth - len(ref))
        assert torch.equal(state[0, 0], torch.tensor(cells, dtype=DT))
    assert stack.read(state).shape == (1, depth * W)


def test_superposition_push_then_pop_returns_pushed_value():
    stack = SuperpositionStack(3, 4)
    g = torch.Generator().manual_seed(0)
    v, w = torch.rand(2, 2, 1, 4, generator=g, dtype=DT)
    push = torch.tensor([[[1.0, 0, 0]], [[1.0, 0, 0]]], dtype=DT)
    pop = torch.tensor([[[0.0, 1, 0]], [[0.0, 1, 0]]], dtype=DT)
    s = stack.initial_state(2, dtype=DT)
    s = stack.step(s, SuperpositionControls(push, v))
    assert torch.equal(stack.read(s), v.reshape(2, 4))
    s = stack.step(s, SuperpositionControls(push, w))
    assert torch.equal(stack.read(s), w.reshape(2, 4))
    s = stack.step(s, SuperpositionControls(pop, w))
    assert torch.equal(stack.read(s), v.reshape(2, 4))
    s = stack.step(s, SuperpositionControls(pop, w))
    assert torch.equal(s, torch.zeros_like(s))


def _strat(d, u, v):
    return StratificationControls(torch.tensor([[d]], dtype=DT), torch.tensor([[u]], dtype=DT),
                                  torch.as_tensor(v, dtype=DT).reshape(1, 1, -1))


def test_stratification_push_then_pop_returns_pushed_vector():
    stack = StratificationStack(3, 4)
    v, w, junk = torch.tensor([0.3, -0.7, 0.5]), torch.tensor([0.9, 0.1, -0.2]), torch.ones(3)
    s = stack.initial_state(1, dtype=DT)
    tol = tolerance(DT, n_ops=8)
    s = stack.step(s, _strat(1.0, 0.0, v))
    assert_close(stack.read(s)[0], v, tol)
    s = stack.step(s, _strat(1.0, 0.0, w))
    assert_close(stack.read(s)[0], w, tol)
    s = stack.step(s, _strat(0.0, 1.0, junk))  # pop w, push nothing
    assert_close(stack.read(s)[0], v, tol)
    # partial strengths: push 0.5 of w; the read mixes 0.5 w + 0.5 v
    s = stack.step(s, _strat(0.5, 0.0, w))
    assert_close(stack.read(s)[0], 0.5 * w + 0.5 * v, tol)


@given(stratification_case())
def test_stratification_strengths_and_sums(case):
    """Strengths stay in [0, 1]; a pop removes min(u, total) strength; read weight = min(1, total)."""
    stack, state, ctrls = case
    tol = tolerance(DT, n_ops=4 * state.strengths.shape[-1])
    for c in ctrls:
        before = state.strengths
        new = stack.step(state, c)
        s = new.strengths
        assert torch.all(s >= 0) and torch.all(s <= 1)
        # the whole old stack, including the cell that may be dropped, after the pop
        popped = stack.step(StratificationState(
            torch.cat([state.values, state.values[:, :, :1]], 2),
            torch.cat([before, torch.zeros_like(before[..., :1])], -1)), c).strengths[..., 1:]
        expected_total = torch.relu(before.sum(-1) - c.pop)
        assert_close(popped.sum(-1), expected_total, tol)
        w = stack.read_weights(new)
        assert torch.all(w >= 0)
        assert_close(w.sum(-1), torch.clamp(s.sum(-1), max=1.0), tol)
        state = new


def test_depth_limit_drops_the_bottom():
    D, W = 3, 1
    sup = SuperpositionStack(D, W)
    strat = StratificationStack(W, D)
    s1, s2 = sup.initial_state(1, dtype=DT), strat.initial_state(1, dtype=DT)
    push = torch.tensor([[[1.0, 0, 0]]], dtype=DT)
    pop = torch.tensor([[[0.0, 1, 0]]], dtype=DT)
    for n in range(1, D + 2):  # D + 1 pushes: value 1 is lost
        s1 = sup.step(s1, SuperpositionControls(push, torch.full((1, 1, W), float(n), dtype=DT)))
        s2 = strat.step(s2, _strat(1.0, 0.0, [float(n)]))
        assert s1.shape == (1, 1, D, W) and s2.strengths.shape == (1, 1, D)
    seen1, seen2 = [], []
    for _ in range(D + 1):
        seen1.append(float(sup.read(s1)[0, 0]))
        seen2.append(float(strat.read(s2)[0, 0]))
        s1 = sup.step(s1, SuperpositionControls(pop, torch.zeros(1, 1, W, dtype=DT)))
        s2 = strat.step(s2, _strat(0.0, 1.0, [99.0]))
    assert seen1 == [4.0, 3.0, 2.0, 0.0]
    # stratification: every step takes a cell (a pop pushes a zero-strength element), so
    # the capacity is a window of D steps: each pop also evicts the bottom element
    assert seen2 == [4.0, 3.0, 0.0, 0.0]
    big = StratificationStack(W, 2 * D + 2)
    s3 = big.initial_state(1, dtype=DT)
    for n in range(1, D + 2):
        s3 = big.step(s3, _strat(1.0, 0.0, [float(n)]))
    seen3 = []
    for _ in range(D + 2):
        seen3.append(float(big.read(s3)[0, 0]))
        s3 = big.step(s3, _strat(0.0, 1.0, [99.0]))
    assert seen3 == [4.0, 3.0, 2.0, 1.0, 0.0]


# ---------------------------------------------------------------------------------------
# gradients and the interface layers
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["superposition", "stratification"])
def test_gradcheck(kind):
    torch.manual_seed(1)
    H, W, D, K, B = 3, 2, 3, 2, 2
    if kind == "superposition":
        stack = SuperpositionStack(D, W, read_depth=2, n_stacks=K, hidden_size=H, dtype=DT)
        state0 = torch.rand(B, K, D, W, dtype=DT, requires_grad=True)
        parts = (state0,)

        def f(h, *st):
            r1, s = stack(h[0], st[0])
            r2, s = stack(h[1], s)
            return r1, r2, s
    else:
        stack = StratificationStack(W, D, n_stacks=K, hidden_size=H, dtype=DT)
        state0 = StratificationState(torch.randn(B, K, D, W, dtype=DT, requires_grad=True),
                                     (0.1 + 0.3 * torch.rand(B, K, D, dtype=DT)).requires_grad_())
        parts = tuple(state0)

        def f(h, *st):
            r1, s = stack(h[0], StratificationState(*st))
            r2, s = stack(h[1], s)
            return r1, r2, s.values, s.strengths
    h = torch.randn(2, B, H, dtype=DT, requires_grad=True)
    # full Jacobians on one batch row, random projections (fast mode) on the whole batch
    assert torch.autograd.gradcheck(f, (h[:, :1], *(x[:1] for x in parts)))
    assert torch.autograd.gradcheck(f, (h, *parts), fast_mode=True)
    # parameters get gradients too
    out = f(h, *parts)
    sum(o.sum() for o in out).backward()
    for p in stack.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_controls_ranges():
    torch.manual_seed(2)
    sup = SuperpositionStack(4, 3, n_stacks=2, hidden_size=5, dtype=DT)
    c = sup.controls(10 * torch.randn(7, 5, dtype=DT))
    assert c.actions.shape == (7, 2, 3) and c.values.shape == (7, 2, 3)
    assert_close(c.actions.sum(-1), torch.ones(7, 2, dtype=DT), tolerance(DT, n_ops=3))
    assert torch.all((c.values >= 0) & (c.values <= 1))
    strat = StratificationStack(3, 4, n_stacks=2, hidden_size=5, dtype=DT)
    c = strat.controls(10 * torch.randn(7, 5, dtype=DT))
    for x in (c.push, c.pop):
        assert x.shape == (7, 2) and torch.all((x >= 0) & (x <= 1))
    assert torch.all(c.value.abs() <= 1)


def test_bad_input():
    with pytest.raises(InvalidParameterError, match="read_depth"):
        SuperpositionStack(2, 3, read_depth=3)
    with pytest.raises(InvalidParameterError, match="depth"):
        SuperpositionStack(0, 3)
    with pytest.raises(InvalidParameterError, match="max_depth"):
        StratificationStack(3).initial_state(2)
    with pytest.raises(InvalidParameterError, match="depth is needed"):
        SuperpositionStack(None, 3).initial_state(2)
    with pytest.raises(InvalidParameterError, match="read_depth"):
        SuperpositionStack(None, 3, read_depth=2).initial_state(2, depth=1)
    with pytest.raises(ShapeError, match="read_depth"):
        SuperpositionStack(None, 1, read_depth=2).step(
            torch.zeros(1, 1, 1, 1), SuperpositionControls(torch.ones(1, 1, 3), torch.ones(1, 1, 1)))
    sup = SuperpositionStack(3, 2, hidden_size=4)
    s = sup.initial_state(2, dtype=DT)
    with pytest.raises(ShapeError, match="actions"):
        sup.step(s, SuperpositionControls(torch.ones(2, 1, 2, dtype=DT), torch.ones(2, 1, 2, dtype=DT)))
    with pytest.raises(ShapeError, match="h must be"):
        sup.controls(torch.ones(2, 5, dtype=DT))
    strat = StratificationStack(2, 3)
    st_ = strat.initial_state(2, dtype=DT)
    with pytest.raises(ShapeError, match="value"):
        strat.step(st_, StratificationControls(torch.ones(2, 1), torch.ones(2, 1), torch.ones(2, 1, 3)))
    with pytest.raises(InvalidParameterError, match="hidden_size"):
        strat.controls(torch.ones(2, 4))


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "torch"])
@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 3), st.integers(1, 2), st.integers(2, 40),
       st.integers(1, 20), st.data(), st.sampled_from(["float32", "float64"]))
def test_an_update_kept_shallower_is_the_top_of_the_full_one(compiled, seed, B, K, d, W,
                                                            data, dtype):
    """nd < d (the depths that lstm_sequence._depths keeps), in the compiled kernels and
    in the torch form (off CPU, or without a compiler): the values are the top nd cells of
    the full update, bit for bit; the state and value gradients are those of the full
    update whose cotangent is zero below nd, bit for bit (the added terms are exact
    zeros); the action gradients to the tolerance of their sums (partial sums in another
    order)."""
    from rnnmem.models import _native, stacks

    if compiled and not _native.available():
        pytest.skip("no C compiler")
    dt = getattr(torch, dtype)
    nd = data.draw(st.integers(1, d - 1), label="nd")
    gen = torch.Generator().manual_seed(seed)
    s = torch.rand(B, K, d, W, generator=gen, dtype=torch.float64).to(dt)
    act = torch.softmax(torch.randn(B, K, 3, generator=gen, dtype=torch.float64), -1).to(dt)
    v = torch.rand(B, K, W, generator=gen, dtype=torch.float64).to(dt)
    g = torch.randn(B, K, nd, W, generator=gen, dtype=torch.float64).to(dt)
    g_full = torch.cat([g, g.new_zeros(B, K, d - nd, W)], dim=2)
    real = _native.supports
    if not compiled:
        _native.supports = lambda *ts: False
    try:
        assert stacks._native_ok(s, act, v) == compiled
        out, full = (stacks._superposition_forward(s, act, v, n) for n in (nd, d))
        gs, ga, gv = stacks._superposition_backward(s, act, v, g)
        gs_f, ga_f, gv_f = stacks._superposition_backward(s, act, v, g_full)
    finally:
        _native.supports = real
    assert out.shape == (B, K, nd, W) and torch.equal(out, full[:, :, :nd])
    assert torch.equal(gs, gs_f) and torch.equal(gv, gv_f)
    assert not gs[:, :, nd + 1:].any()
    tol = tolerance(dt, n_ops=d * W, scale=float((g.abs().sum((2, 3)).max()) + 1))
    assert tol.allclose(ga.double().numpy(), ga_f.double().numpy()), \
        tol.max_violation(ga.double().numpy(), ga_f.double().numpy())
