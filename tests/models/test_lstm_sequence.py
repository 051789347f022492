"""The whole-sequence LSTM (+ superposition stack) node against its plain reference."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rnnmem.models import StackRNN, _buffers, _native, lstm_sequence
from rnnmem.models.lstm_sequence import (SequenceSpec, _cell_backward_torch, _depths,
                                         lstm_stack_sequence, lstm_stack_sequence_reference)
from rnnmem.numerics.tolerances import tolerance

NAMES = ("emb", "W_ih", "W_hh", "b_ih", "b_hh", "W_if", "b_if", "h0", "c0", "stack0", "read0")


def _inputs(B, T, E, H, K, r, W, d, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=g, dtype=dtype)).requires_grad_()

    R = K * r * W
    ins = [rnd(B, T, E), rnd(4 * H, E + R, scale=0.5), rnd(4 * H, H, scale=0.5), rnd(4 * H),
           rnd(4 * H)]
    if K:
        stack0 = torch.rand(B, K, d, W, generator=g, dtype=dtype).requires_grad_()
        ins += [rnd(H, 3 * K + K * W), rnd(3 * K + K * W), rnd(B, H), rnd(B, H), stack0,
                stack0.detach()[:, :, :r].reshape(B, R).clone().requires_grad_()]
    else:
        ins += [None, None, rnd(B, H), rnd(B, H), None, None]
    return ins


def _run(fn, spec, ins, cots):
    outs = fn(spec, *ins)
    loss = sum((o * c).sum() for o, c in zip(outs, cots))
    leaves = [t for t in ins if t is not None]
    return [o.detach() for o in outs], torch.autograd.grad(loss, leaves)


def _compare(spec, ins, dtype, T):
    with torch.no_grad():
        shapes = [o.shape for o in lstm_stack_sequence_reference(spec, *ins)]
    g = torch.Generator().manual_seed(1)
    cots = [torch.randn(s, generator=g, dtype=dtype) for s in shapes]
    ref_out, ref_grad = _run(lstm_stack_sequence_reference, spec, ins, cots)
    out, grad = _run(lstm_stack_sequence, spec, ins, cots)
    # a chain of T steps, each a few dozen roundings; the gates are contractions
    tol = tolerance(dtype, n_ops=40 * T, scale=1.0)
    for a, b in zip(out, ref_out):
        torch.testing.assert_close(a, b, rtol=tol.rtol, atol=tol.atol)
    for a, b in zip(grad, ref_grad):
        scale = float(b.abs().max()) + 1.0
        torch.testing.assert_close(a, b, rtol=tol.rtol, atol=tol.rtol * scale)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(B=st.integers(1, 3), T=st.integers(1, 7), E=st.integers(1, 4), H=st.integers(1, 6),
       K=st.integers(0, 2), r=st.integers(1, 2), W=st.integers(1, 3), grow=st.booleans(),
       room=st.integers(0, 8), joint=st.booleans(), native=st.booleans(),
       final=st.booleans())
def test_matches_the_plain_reference(B, T, E, H, K, r, W, grow, room, joint, native, final):
    if native and not _native.available():
        native = False
    # a growing stack starts at its read depth; a fixed one is up to 8 cells deeper than
    # the steps can reach (final=False: the first step then drops more than one cell)
    d = r if grow else r + T // 2 + room
    # the depth limit of a growing stack: reached within the sequence when room < T
    spec = SequenceSpec(K, r, W, d + room if grow else None, joint, final_stack=final)
    ins = _inputs(B, T, E, H, K, r, W, d, torch.float64)
    if native:
        _compare(spec, ins, torch.float64, T)
    else:  # the torch fallbacks (off CPU, or without a compiler)
        orig = _native.supports
        _native.supports = lambda *ts: False
        try:
            _compare(spec, ins, torch.float64, T)
        finally:
            _native.supports = orig


def test_depths_without_the_final_stack_stop_where_no_read_reaches():
    """Cell j of s_t reaches a read only if j < r + T - t: a stack growing from depth 1
    over 10 steps keeps 2, 3, .., 6, then 5, 4, .., 1 cells (35 of 65 in all)."""
    grow = SequenceSpec(1, 1, 2, 40, False)
    assert _depths(grow, 1, 10) == list(range(2, 12))
    pruned = _depths(grow._replace(final_stack=False), 1, 10)
    assert pruned == [2, 3, 4, 5, 6, 5, 4, 3, 2, 1] and sum(pruned) == 35
    fixed = SequenceSpec(1, 2, 2, None, False, final_stack=False)  # 50 cells deep
    assert _depths(fixed, 50, 4) == [5, 4, 3, 2]


@pytest.mark.parametrize("native", [True, False], ids=["compiled", "torch"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_leaving_out_the_unreachable_cells_changes_no_output_bit(dtype, native, monkeypatch):
    """The outputs that do not depend on the final stack, bit for bit with and without it;
    the gradients to rounding (the action gradients' partial sums run over fewer cells);
    the final stack is the full one's top r cells. Both loops: the compiled one and the
    torch one (off CPU, or without a compiler), which keeps as few cells."""
    if native and not _native.available():
        pytest.skip("no C compiler")
    if not native:
        monkeypatch.setattr(_native, "supports", lambda *ts: False)
        kept = []
        real = lstm_sequence._superposition_forward
        monkeypatch.setattr(lstm_sequence, "_superposition_forward",
                            lambda s, a, v, nd: kept.append(nd) or real(s, a, v, nd))
    T, r = 24, 2
    spec = SequenceSpec(2, r, 3, 40, False)
    ins = _inputs(3, T, 2, 5, 2, r, 3, r, dtype, seed=4)
    g = torch.Generator().manual_seed(5)
    cot = torch.randn(3, T, 5, generator=g, dtype=dtype)
    res = []
    for final in (True, False):
        outs = lstm_stack_sequence(spec._replace(final_stack=final), *ins)
        leaves = [t for t in ins if t is not None]
        res.append((outs, torch.autograd.grad((outs[0] * cot).sum() + outs[3].sum(), leaves)))
    (full, g_full), (pruned, g_pruned) = res
    if not native:  # the torch loop computed the cells _depths keeps, no more
        assert kept[T:] == _depths(spec._replace(final_stack=False), r, T)
        assert kept[:T] == _depths(spec, r, T) and sum(kept[T:]) < 0.6 * sum(kept[:T])
    assert pruned[2].shape[2] == r and torch.equal(pruned[2], full[2][:, :, :r])
    for a, b in zip((full[0], full[1], full[3]), (pruned[0], pruned[1], pruned[3])):
        assert torch.equal(a, b)
    tol = tolerance(dtype, n_ops=40 * T)
    for a, b in zip(g_pruned, g_full):
        torch.testing.assert_close(a, b, rtol=tol.rtol, atol=tol.rtol * (b.abs().max() + 1))


def test_float32_matches_the_reference():
    spec = SequenceSpec(2, 1, 4, 20, False)
    ins = _inputs(4, 12, 3, 16, 2, 1, 4, 1, torch.float32)
    _compare(spec, ins, torch.float32, 12)


@pytest.mark.parametrize("K", [0, 1])
def test_gradcheck_and_double_backward(K):
    spec = SequenceSpec(K, 1, 2, 6 if K else None, True)
    ins = _inputs(2, 4, 2, 3, K, 1, 2, 1, torch.float64)
    used = [t for t in ins if t is not None]

    def f(*ts):
        it = iter(ts)
        return lstm_stack_sequence(spec, *[None if t is None else next(it) for t in ins])

    assert torch.autograd.gradcheck(f, used)
    assert torch.autograd.gradgradcheck(f, used)


@pytest.mark.parametrize("K", [0, 2])
def test_gradients_of_any_layout_reach_the_loop_intact(K):
    """The loop reads the incoming gradients by address: dL/dh, dL/dc and dL/dstack with
    permuted strides (as a product with a transposed tensor gives them) and dL/dread
    expanded from a sum all give the reference's gradients."""
    B, T, E, H, r, W = 3, 5, 2, 4, 2, 3
    spec = SequenceSpec(K, r, W, r + T if K else None, False)
    ins = _inputs(B, T, E, H, K, r, W, r, torch.float64, seed=3)
    g = torch.Generator().manual_seed(2)

    def loss(fn):
        outs = fn(spec, *ins)
        hs, c = outs[0], outs[1]
        # multipliers stored transposed: the gradients come back with their strides
        M = torch.randn(H, T, B, generator=g, dtype=torch.float64).permute(2, 1, 0)
        total = (hs * M).sum() + (c * M[:, 0].t().contiguous().t()).sum()
        if K:
            s, rd = outs[2], outs[3]
            S = torch.randn(s.permute(3, 2, 1, 0).shape, generator=g, dtype=torch.float64)
            total = total + (s * S.permute(3, 2, 1, 0)).sum() + rd.sum()
        return total

    leaves = [t for t in ins if t is not None]
    g.manual_seed(2)
    ref = torch.autograd.grad(loss(lstm_stack_sequence_reference), leaves)
    g.manual_seed(2)
    got = torch.autograd.grad(loss(lstm_stack_sequence), leaves)
    tol = tolerance(torch.float64, n_ops=40 * T)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=tol.rtol, atol=tol.rtol * (b.abs().max() + 1))


@pytest.mark.parametrize("K", [0, 1])
def test_an_empty_sequence_returns_the_initial_state(K):
    spec = SequenceSpec(K, 1, 3, 6 if K else None, False)
    ins = _inputs(2, 0, 3, 4, K, 1, 3, 1, torch.float64)
    outs = lstm_stack_sequence(spec, *ins)
    assert outs[0].shape == (2, 0, 4)
    assert torch.equal(outs[1], ins[8])  # c_T = c_0
    if K:
        assert torch.equal(outs[2], ins[9]) and torch.equal(outs[3], ins[10])
    loss = sum(o.sum() for o in outs[1:])
    grads = torch.autograd.grad(loss, [ins[8]] + (ins[9:11] if K else []) + [ins[7]],
                                allow_unused=True)
    for g in grads[:-1]:  # c_0 (and stack_0, read_0) pass through unchanged
        assert torch.equal(g, torch.ones_like(g))
    assert grads[-1] is None or not grads[-1].any()  # h_0 reaches no output


def test_second_backward_with_retain_graph_recomputes():
    spec = SequenceSpec(1, 1, 3, 8, False)
    ins = _inputs(2, 5, 3, 4, 1, 1, 3, 1, torch.float64)
    loss = sum(o.sum() for o in lstm_stack_sequence(spec, *ins))
    first = torch.autograd.grad(loss, ins[1], retain_graph=True)[0]
    second = torch.autograd.grad(loss, ins[1])[0]
    torch.testing.assert_close(second, first, rtol=1e-12, atol=1e-12)


def test_no_grad_forward_equals_the_recorded_one():
    spec = SequenceSpec(1, 2, 3, 9, False)
    ins = _inputs(3, 6, 2, 5, 1, 2, 3, 2, torch.float64)
    recorded = lstm_stack_sequence(spec, *ins)
    with torch.no_grad():
        plain = lstm_stack_sequence(spec, *ins)
    for a, b in zip(recorded, plain):
        assert torch.equal(a.detach(), b)


@pytest.mark.skipif(not _native.available(), reason="no C compiler")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("extra", [False, True])
def test_cell_kernel_equals_its_torch_form(dtype, extra):
    g = torch.Generator().manual_seed(0)
    B, H, C = 5, 37, 4
    act = torch.rand(B, 4 * H, generator=g, dtype=dtype)
    c, tc = (torch.randn(B, H, generator=g, dtype=dtype) for _ in range(2))
    # dL/dh as a column slice of a wider buffer (rows apart by more than H), as in the loop
    gh = torch.randn(B, H + 9, generator=g, dtype=dtype)[:, 3:3 + H]
    gh2 = torch.randn(B, 2, H, generator=g, dtype=dtype)[:, 1] if extra else None
    gz = torch.randn(B, C + 2, generator=g, dtype=dtype)[:, :C] if extra else None
    wT = torch.randn(C, H, generator=g, dtype=dtype) if extra else None
    dc = torch.randn(B, H, generator=g, dtype=dtype)
    dc2, out, out2 = dc.clone(), torch.empty_like(act), torch.empty_like(act)
    _native.lstm_cell_backward(act, c, tc, gh, dc, out, gh2, gz, wT)
    gh_all = gh + gh2 + gz @ wT if extra else gh
    _cell_backward_torch(act, c, tc, gh_all, dc2, out2)
    # the same operations, the sum over the C interface columns in another order
    tol = tolerance(dtype, n_ops=8 + 2 * C)
    torch.testing.assert_close(out, out2, rtol=tol.rtol, atol=tol.rtol)
    torch.testing.assert_close(dc, dc2, rtol=tol.rtol, atol=tol.rtol)


def _ulps(got: torch.Tensor, ref) -> float:
    """Largest error of ``got`` in units of its dtype's spacing at the reference values
    (``ref`` exact enough: float64 for float32 results, mpmath for float64 ones)."""
    import numpy as np

    g = got.numpy()
    r = np.asarray(ref, dtype=np.float64)
    spacing = np.spacing(np.abs(r).astype(g.dtype)).astype(np.float64)
    return float((np.abs(g.astype(np.float64) - r) / spacing).max())


def _activation_points(dtype):
    g = torch.Generator().manual_seed(4)
    edge = torch.tensor([0.0, -0.0, 1e-30, -1e-30, 0.625, -0.625, 0.62499, 87.0, -87.0, 20.0,
                         -20.0], dtype=dtype)
    return torch.cat([edge, 12 * torch.rand(4000, generator=g, dtype=dtype) - 6,
                      torch.randn(1000, generator=g, dtype=dtype) * 1e-3,
                      torch.linspace(-0.7, 0.7, 1001, dtype=dtype)])


@pytest.mark.skipif(not _native.available(), reason="no C compiler")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cell_forward_activations_are_within_a_few_ulp(dtype):
    """The kernel's own exp (lstm.c): sigmoid within 4 ulp and tanh within 2 of the exact
    values (float32 against float64, float64 against mpmath), the sign of zero kept."""
    import mpmath

    x = _activation_points(dtype)
    n = x.numel()
    H = n  # one row: gates i, f, o all x (sigmoid), g = x (tanh)
    act = x.repeat(4).view(1, 4 * H).clone()
    c_prev = torch.zeros(1, H, dtype=dtype)
    c, tc, h = (torch.empty(1, H, dtype=dtype) for _ in range(3))
    _native.lstm_cell_forward(act, c_prev, c, tc, h)
    if dtype == torch.float32:
        xd = x.double()
        sig_ref, tanh_ref = torch.sigmoid(xd).numpy(), torch.tanh(xd).numpy()
    else:
        mpmath.mp.prec = 80
        sig_ref = [float(1 / (1 + mpmath.exp(-mpmath.mpf(float(v))))) for v in x]
        tanh_ref = [float(mpmath.tanh(mpmath.mpf(float(v)))) for v in x]
    for k in range(3):
        assert _ulps(act[0, k * H:(k + 1) * H], sig_ref) <= 4
    tanh = act[0, 3 * H:]
    assert _ulps(tanh, tanh_ref) <= 2
    assert torch.equal(torch.signbit(tanh), torch.signbit(x))
    # c = i g exactly as rounded, then tanh(c)
    assert torch.equal(c[0], act[0, :H] * tanh)


@pytest.mark.skipif(not _native.available(), reason="no C compiler")
def test_float_sigmoid_beyond_the_exp_range_is_within_1e_38_of_its_limit():
    x = torch.tensor([-1000.0, -100.0, -88.0, 88.0, 100.0, 1000.0, float("inf"),
                      -float("inf")])
    act = x.repeat(4).view(1, -1).clone()
    H = x.numel()
    z = torch.zeros(1, H)
    _native.lstm_cell_forward(act, z, z.clone(), z.clone(), z.clone())
    assert (act[0, :H] - torch.sigmoid(x.double()).float()).abs().max() <= 1e-38
    assert torch.equal(act[0, 3 * H:], torch.tanh(x))
    nan = torch.full((1, 4), float("nan"))
    _native.lstm_cell_forward(nan, torch.zeros(1, 1), *(torch.empty(1, 1) for _ in range(3)))
    assert nan.isnan().all()


def _cell_forward_torch(act, c_prev, w_zT=None, b_z=None):
    """The forward cell in torch operations (the loop's fallback), for comparison."""
    H = c_prev.shape[1]
    act = act.clone()
    act[:, :3 * H].sigmoid_()
    act[:, 3 * H:].tanh_()
    c = act[:, H:2 * H] * c_prev
    c.addcmul_(act[:, :H], act[:, 3 * H:])
    tc = torch.tanh(c)
    h = act[:, 2 * H:3 * H] * tc
    z = torch.addmm(b_z, h, w_zT.t()) if w_zT is not None else None
    return act, c, tc, h, z


@pytest.mark.skipif(not _native.available(), reason="no C compiler")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("with_z", [False, True])
def test_cell_forward_kernel_equals_its_torch_form(dtype, with_z):
    g = torch.Generator().manual_seed(1)
    B, H, C = 6, 37, 5  # H not a multiple of the kernel's 16 partial sums
    pre = 3 * torch.randn(B, 4 * H, generator=g, dtype=dtype)
    c_prev = torch.randn(B, H, generator=g, dtype=dtype)
    w_zT = torch.randn(C, H, generator=g, dtype=dtype) if with_z else None
    b_z = torch.randn(C, generator=g, dtype=dtype) if with_z else None
    act = pre.clone()
    c, tc = torch.empty(B, H, dtype=dtype), torch.empty(B, H, dtype=dtype)
    hbuf = torch.full((B, H + 7), 7.0, dtype=dtype)  # h into a slice of a wider row
    zbuf = torch.full((B, C + 3), 7.0, dtype=dtype) if with_z else None
    _native.lstm_cell_forward(act, c_prev, c, tc, hbuf[:, 2:2 + H], w_zT, b_z,
                              zbuf[:, 1:1 + C] if with_z else None)
    ref = _cell_forward_torch(pre, c_prev, w_zT, b_z)
    tol = tolerance(dtype, n_ops=8 + H)
    got = (act, c, tc, hbuf[:, 2:2 + H], zbuf[:, 1:1 + C] if with_z else None)
    for u, v in zip(got, ref):
        if v is not None:
            torch.testing.assert_close(u, v, rtol=tol.rtol, atol=tol.rtol * (1 + C))
    assert (hbuf[:, :2] == 7).all() and (hbuf[:, 2 + H:] == 7).all()  # nothing else written
    if with_z:
        assert (zbuf[:, 0] == 7).all() and (zbuf[:, 1 + C:] == 7).all()


def _step_inputs(dtype, B=5, H=6, K=2, d=4, W=3, r=2, seed=2):
    g = torch.Generator().manual_seed(seed)
    C = 3 * K + K * W
    return dict(pre=2 * torch.randn(B, 4 * H, generator=g, dtype=dtype),
                c_prev=torch.randn(B, H, generator=g, dtype=dtype),
                w_zT=torch.randn(C, H, generator=g, dtype=dtype),
                b_z=torch.randn(C, generator=g, dtype=dtype),
                s=torch.rand(B, K, d, W, generator=g, dtype=dtype),
                g=torch.randn(B, K, d + 1, W, generator=g, dtype=dtype),
                g_read=torch.randn(B, K * r * W, generator=g, dtype=dtype),
                g_h=torch.randn(B, H, generator=g, dtype=dtype),
                g_h2=torch.randn(B, H, generator=g, dtype=dtype),
                dc=torch.randn(B, H, generator=g, dtype=dtype), B=B, H=H, K=K, d=d, W=W, r=r,
                C=C)


@pytest.mark.skipif(not _native.available(), reason="no C compiler")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("joint", [False, True])
def test_the_one_call_step_is_the_separate_kernels_bit_for_bit(dtype, joint):
    """rn_lstm_stack_fwd/bwd run the cell, interface and stack kernels in one parallel
    region: the same bits as calling them one after another."""
    i = _step_inputs(dtype)
    B, H, K, d, W, r, C = (i[k] for k in "B H K d W r C".split())

    def forward(one_call):
        act, c, tc, h = i["pre"].clone(), *(torch.empty(B, H, dtype=dtype) for _ in range(3))
        z, rd = torch.empty(B, C, dtype=dtype), torch.empty(B, K * r * W, dtype=dtype)
        a, v = torch.empty(B, K, 3, dtype=dtype), torch.empty(B, K, W, dtype=dtype)
        out = torch.empty(B, K, d + 1, W, dtype=dtype)
        if one_call:
            _native.lstm_stack_step_forward(act, i["c_prev"], c, tc, h, i["w_zT"], i["b_z"], z,
                                            joint, i["s"], d + 1, rd, r, a, v, out)
        else:
            _native.lstm_cell_forward(act, i["c_prev"], c, tc, h, i["w_zT"], i["b_z"], z)
            _native.superposition_control_forward(z, joint, i["s"], d + 1, rd, r, a, v, out)
        return act, c, tc, h, z, rd, a, v, out

    def backward(one_call, act, tc, a, v):
        dc, dg = i["dc"].clone(), torch.empty(B, 4 * H, dtype=dtype)
        dz = torch.empty(B, C, dtype=dtype)
        scratch = (torch.empty(B, K, 3, dtype=dtype), torch.empty(B, K, W, dtype=dtype))
        if one_call:
            gs = _native.lstm_stack_step_backward(
                i["s"], a, v, i["g"], i["g_read"], r, joint, dz, scratch, act, i["c_prev"], tc,
                i["g_h"], dc, dg, i["g_h2"], i["w_zT"])
        else:
            gs = _native.superposition_control_backward(i["s"], a, v, i["g"], i["g_read"], r,
                                                        joint, dz, scratch)
            _native.lstm_cell_backward(act, i["c_prev"], tc, i["g_h"], dc, dg, i["g_h2"], dz,
                                       i["w_zT"])
        return gs, dz, dc, dg

    one, apart = forward(True), forward(False)
    for u, w in zip(one, apart):
        assert torch.equal(u, w)
    act, _, tc, _, _, _, a, v, _ = one
    for u, w in zip(backward(True, act, tc, a, v), backward(False, act, tc, a, v)):
        assert torch.equal(u, w)


@pytest.mark.skipif(not _native.available(), reason="no C compiler")
def test_the_one_call_step_checks_its_arguments():
    i = _step_inputs(torch.float64)
    B, H, K, d, W, r, C = (i[k] for k in "B H K d W r C".split())
    e = lambda *s: torch.empty(*s, dtype=torch.float64)  # noqa: E731
    act, c, tc, h = i["pre"].clone(), e(B, H), e(B, H), e(B, H)
    common = (act, i["c_prev"], c, tc, h)
    with pytest.raises(ValueError, match="go together"):
        _native.lstm_cell_forward(*common, i["w_zT"], None, e(B, C))
    with pytest.raises(ValueError, match="act must be contiguous"):
        _native.lstm_cell_forward(e(4 * H, B).t(), *common[1:])
    with pytest.raises(ValueError, match=r"w_zT must be contiguous of shape \(C, H\)"):
        _native.lstm_cell_forward(*common, e(H, C).t(), i["b_z"], e(B, C))
    stack = (False, i["s"], d + 1, e(B, K * r * W), r, e(B, K, 3), e(B, K, W))
    with pytest.raises(ValueError, match="the stack needs 12"):
        _native.lstm_stack_step_forward(*common, e(C - 1, H), e(C - 1), e(B, C - 1), *stack,
                                        e(B, K, d + 1, W))
    with pytest.raises(ValueError, match="out must be contiguous of shape"):
        _native.lstm_stack_step_forward(*common, i["w_zT"], i["b_z"], e(B, C), *stack,
                                        e(B, K, d, W))
    scratch = (e(B, K, 3), e(B, K, W))
    with pytest.raises(ValueError, match="gs_out must be contiguous"):
        _native.lstm_stack_step_backward(i["s"], e(B, K, 3), e(B, K, W), i["g"], i["g_read"], r,
                                         False, e(B, C), scratch, act, i["c_prev"], tc,
                                         i["g_h"], i["dc"].clone(), e(B, 4 * H), None,
                                         i["w_zT"], e(B, K, d + 1, W))


@pytest.mark.skipif(not _native.available(), reason="no C compiler")
def test_cell_kernel_rejects_an_interface_gradient_without_its_weights():
    t = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="w_zT"):
        _native.lstm_cell_backward(torch.zeros(2, 12), t, t, t, t.clone(), torch.zeros(2, 12),
                                   None, torch.zeros(2, 4), None)


@pytest.mark.parametrize("stack,depth", [("superposition", None), ("superposition", 4),
                                         ("none", None)])
@pytest.mark.parametrize("with_state", [True, False])
def test_model_forward_equals_the_step_by_step_graph(stack, depth, with_state):
    """Also without ``return_state``, where the node leaves out the stack cells that no
    read reaches (``final_stack=False``)."""
    m = StackRNN(5, controller="lstm", stack=stack, width=7, dtype="float64", device="cpu",
                 seed=3, n_stacks=1 if stack == "none" else 2, read_depth=2 if stack != "none"
                 else 1, stack_depth=depth)
    x = torch.randint(0, 5, (3, 11), generator=torch.Generator().manual_seed(0))
    res = []
    for fused in (True, False):
        m.fused_sequence = fused
        m.zero_grad()
        if not with_state:
            y = m(x)
            loss = y.square().sum()
        else:
            y, state = m(x, return_state=True)
            loss = y.square().sum() + state.controller[1].sum()
            if state.read is not None:
                loss = loss + state.read.sum() + state.stack.square().sum()
        loss.backward()
        res.append((y.detach(), [p.grad.clone() for p in m.parameters()]))
    tol = tolerance("float64", n_ops=40 * 11)
    torch.testing.assert_close(res[0][0], res[1][0], rtol=tol.rtol, atol=tol.rtol)
    for a, b in zip(res[0][1], res[1][1]):
        torch.testing.assert_close(a, b, rtol=tol.rtol, atol=tol.rtol * (b.abs().max() + 1))


def test_forward_mode_ad_falls_back_to_the_step_graph():
    import torch.autograd.forward_ad as fwAD

    m = StackRNN(4, controller="lstm", stack="superposition", width=5, dtype="float64",
                 device="cpu", seed=0)
    x = torch.softmax(torch.randn(2, 5, 4, dtype=torch.float64), dim=-1)
    dx = torch.randn_like(x)
    with fwAD.dual_level():
        y = m(fwAD.make_dual(x, dx))
        tangent = fwAD.unpack_dual(y).tangent
    eps = 1e-6
    with torch.no_grad():
        fd = (m(x + eps * dx) - m(x - eps * dx)) / (2 * eps)
    torch.testing.assert_close(tangent, fd, rtol=1e-6, atol=1e-8)


def test_usable_refuses_what_the_node_cannot_take():
    x = torch.zeros(2, 3, 4, dtype=torch.float32)
    assert lstm_sequence.usable(x, torch.nn.Parameter(torch.zeros(2, dtype=torch.float32)))
    assert not lstm_sequence.usable(x.to(torch.bfloat16))
    assert not lstm_sequence.usable(x, torch.zeros(2, dtype=torch.float64))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not lstm_sequence.usable(x)
    seen = []

    def probe(t):
        seen.append(lstm_sequence.usable(t))
        return t

    torch.func.vmap(probe)(x)
    assert seen == [False]  # a torch.func wrapper: the step graph runs


def test_autocast_runs_the_step_graph():
    m = StackRNN(4, controller="lstm", stack="superposition", width=6, dtype="float32",
                 device="cpu", seed=0)
    x = torch.randint(0, 4, (2, 6), generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x)
        m.fused_sequence = False
        y_step = m(x)
    assert y.dtype == torch.bfloat16 and torch.equal(y, y_step)


@pytest.mark.parametrize("frozen", ["memory", "controller"])
def test_frozen_parts_get_no_gradient_and_the_rest_the_step_graphs(frozen):
    m = StackRNN(4, controller="lstm", stack="superposition", width=6, dtype="float64",
                 device="cpu", seed=1, embedding_dim=3)
    for p in getattr(m, "memory" if frozen == "memory" else "controller").parameters():
        p.requires_grad_(False)
    x = torch.randint(0, 4, (2, 9), generator=torch.Generator().manual_seed(2))
    grads = []
    for fused in (True, False):
        m.fused_sequence = fused
        m.zero_grad(set_to_none=True)
        m(x).square().sum().backward()
        grads.append({n: p.grad for n, p in m.named_parameters()})
    tol = tolerance("float64", n_ops=40 * 9)
    for name, p in m.named_parameters():
        if not p.requires_grad:
            assert grads[0][name] is None and grads[1][name] is None, name
        else:
            torch.testing.assert_close(grads[0][name], grads[1][name], rtol=tol.rtol,
                                       atol=tol.rtol * (grads[1][name].abs().max() + 1))


# ------------------------------------------------------------ kept states in a pooled arena
needs_pool = pytest.mark.skipif(
    not _native.available() or _buffers._use_count is None,
    reason="the arena is used by the compiled stack kernel, with the storage use count")


@pytest.fixture
def arena_always(monkeypatch):
    """The kept stack states in a pooled arena at every size (default: from 1 MiB)."""
    monkeypatch.setattr(lstm_sequence, "ARENA_MIN_BYTES", 0)
    _buffers.clear()
    yield
    _buffers.clear()


def _arenas():
    return [b for k, bufs in _buffers._pool.items() if k[0] == "arena" for b in bufs]


@needs_pool
@pytest.mark.parametrize("grow", [False, True])
def test_states_in_a_reused_arena_match_the_reference(arena_always, grow):
    """Twice (the second call reuses the first one's arena): values and gradients."""
    T, d = 9, 1
    spec = SequenceSpec(2, 1, 3, d + T if grow else None, False)
    for seed in (0, 1):
        ins = _inputs(3, T, 2, 4, 2, 1, 3, d if grow else d + 4, torch.float64, seed=seed)
        _compare(spec, ins, torch.float64, T)
    assert len(_arenas()) == 1


@needs_pool
def test_two_live_graphs_never_share_an_arena(arena_always):
    """A second forward before the first one's backward gets other memory; both backward
    passes equal the reference; and the returned final state is not a view of the arena,
    so holding it does not pin the arena."""
    T = 7
    spec = SequenceSpec(1, 2, 3, 2 + T, True)
    ins1 = _inputs(2, T, 3, 5, 1, 2, 3, 2, torch.float64, seed=3)
    ins2 = _inputs(2, T, 3, 5, 1, 2, 3, 2, torch.float64, seed=4)
    out1 = lstm_stack_sequence(spec, *ins1)
    out2 = lstm_stack_sequence(spec, *ins2)
    assert len(_arenas()) == 2
    g = [torch.autograd.grad(sum((o * o).sum() for o in out), [t for t in ins if t is not None])
         for out, ins in ((out1, ins1), (out2, ins2))]
    for ins, got in ((ins1, g[0]), (ins2, g[1])):
        ref_out = lstm_stack_sequence_reference(spec, *ins)
        ref = torch.autograd.grad(sum((o * o).sum() for o in ref_out),
                                  [t for t in ins if t is not None])
        tol = tolerance(torch.float64, n_ops=40 * T)
        for a, b in zip(got, ref):
            torch.testing.assert_close(a, b, rtol=tol.rtol, atol=tol.rtol * (1 + b.abs().max()))
    arena_ptrs = {b.data_ptr() for b in _arenas()}
    held = out1[2]  # the final stack state, kept by a caller (truncated BPTT)
    assert held.untyped_storage().data_ptr() not in arena_ptrs
    lstm_stack_sequence(spec, *ins1)  # both arenas free again: one is reused
    assert len(_arenas()) == 2


@needs_pool
def test_a_forward_without_grad_keeps_no_states(arena_always):
    spec = SequenceSpec(1, 1, 3, 10, False)
    ins = _inputs(2, 8, 2, 4, 1, 1, 3, 1, torch.float64)
    with torch.no_grad():
        lstm_stack_sequence(spec, *ins)
    assert _arenas() == []


# ------------------------------------------------------------ the shortest sequences
@pytest.mark.parametrize("read_grad", [False, True])
@pytest.mark.parametrize("T", [1, 2, 3])
def test_shortest_sequences_without_a_final_stack_gradient_match_the_step_graph(T, read_grad):
    """The training case: the loss reads the logits (and perhaps the last read), never the
    final stack, so dL/dstack_T is None and the backward makes its zeros itself. At T = 2
    (T = 1 with a read gradient) the first stack step back is also the last, which swaps
    in dL/dstack_0: at 5e14880 that dropped the only reference to the zeros before the
    kernel read them (a use-after-free), so most calls read freed memory (gradients off
    by up to 1e24, some non-finite) and training on lengths that include 2 (``lang:dyck1``,
    1..40) was not reproducible from one process to the next (``verify``:
    ``frozen-memory-length-generalisation``, dyck1 rho of full training 0.28 in one run,
    0.39 in another). What a stale read gives depends on the allocator's state, so each
    case runs at many batch sizes (many chunk sizes), twice each."""
    m = StackRNN(2, 3, controller="lstm", stack="superposition", width=16, stack_width=4,
                 dtype="float32", device="cpu", seed=0)
    tol = tolerance("float32", n_ops=40 * T)

    def grads(x, fused, with_state=True):  # without: the node's final_stack=False path
        m.fused_sequence = fused
        m.zero_grad(set_to_none=True)
        if not with_state:
            y = m(x)
            loss = y.square().sum()
        else:
            y, state = m(x, return_state=True)
            loss = y.square().sum() + (state.read.sum() if read_grad else 0.0)
        loss.backward()
        return [torch.zeros_like(p) if p.grad is None else p.grad.clone()
                for p in m.parameters()]

    for B in (1, 2, 3, 5, 8, 13, 21, 34, 55, 64):
        ids = torch.randint(0, 2, (B, T), generator=torch.Generator().manual_seed(B))
        x = torch.nn.functional.one_hot(ids, 2).float()
        ref = grads(x, False)
        for with_state in ((True,) if read_grad else (True, False)):
            for _ in range(2):
                for a, b in zip(grads(x, True, with_state), ref):
                    torch.testing.assert_close(a, b, rtol=tol.rtol,
                                               atol=tol.rtol * (b.abs().max() + 1))
