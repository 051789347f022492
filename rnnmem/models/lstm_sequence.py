r"""A whole sequence of an LSTM controller with an optional superposition stack as one
autograd node: the forward loop runs without recording a graph, the backward loop is
written out by hand.

Why: the step-by-step model (:meth:`StackRNN._step_impl`) records about forty autograd
nodes per time step (the LSTM cell alone is some fifteen operations), so at hidden size
256, batch 128, length 40 the framework and the small element-wise operations cost as much
as the matrix products (profile in ``benchmarks/bench_stacks.py``). Here each step's
inputs sit in one row ``[r_{t-1} | h_{t-1} | e_t | 1]`` of a buffer, and the gate weights
and both biases in one matrix with the same columns (:func:`_layout`). Per time step the
forward is one gate product and one compiled call (``_native/lstm.c`` and
``superposition.c``, ``rn_lstm_stack_fwd``): the gate activations, c_t, tanh(c_t) and h_t,
the interface logits, the controls (softmax, sigmoid), the stack update and the copy of
its top cells, row by row in one parallel region. The backward is one compiled call for the
stack, its controls and the cell (which also adds the gradient coming back through the
interface), the gate gradient accumulated into the merged weights' gradient while it is
still in cache (the biases' gradient comes out as the column of ones), and one product
back to all three inputs of the step. The compiled loops take every buffer's address once
and advance it by arithmetic, with no per-step view or argument check
(:func:`_native_forward_steps`, :func:`_native_backward_steps`). Without the compiled
kernels the same steps run as torch operations. The stack states kept for the backward
pass (O(T^2) floats with a growing stack) are written by the kernel into one pooled arena
reused from call to call, and saved as that one tensor with their offsets
(:func:`_state_places`); a forward without grad keeps none (two buffers in turn).
Measured at that size, this arrangement's matrix products take about 0.9x the time of the
step-by-step graph's (0.87 and 0.91 in two runs). Against this node as it was before the
one-call steps and the addresses (the cell as torch operations, the stack in separate
calls through checked wrappers, a view per step), alternated in one process on 2 shared
cores: the training step above a median 0.90x the time (14 rounds, 13 below 1); forward +
backward at T=500, batch 32, hidden 20, 0.53-0.69x with the stack and 0.44-0.80x without.

The same computation written with plain differentiable operations,
:func:`lstm_stack_sequence_reference` (same signature), is the slow reference that the
tests compare with, and what a double backward (``create_graph=True``) differentiates.

Equations (Hochreiter & Schmidhuber 1997 with a forget gate; the gate order of
:class:`torch.nn.LSTMCell`, i, f, g, o; Joulin & Mikolov 2015 for the stack):

.. math::

    z_t &= W_{ih} [e_t; r_{t-1}] + b_{ih} + W_{hh} h_{t-1} + b_{hh}, \qquad
    c_t = \sigma(f) c_{t-1} + \sigma(i) \tanh(g), \quad h_t = \sigma(o) \tanh(c_t), \\
    (a_t, v_t) &= (\mathrm{softmax}(A h_t + b_A), \sigma(D h_t + b_D)), \quad
    s_t = \mathrm{update}(s_{t-1}, a_t, v_t), \quad r_t = \mathrm{top}_r(s_t).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from . import _buffers, _native
from ._device import gate_work, step_threads
from .stacks import (_compiling, _forward_ad_active, _grown_depth, _plain_form_grads,
                     _superposition_backward, _superposition_forward, _superposition_update)

__all__ = ["SequenceSpec", "lstm_stack_sequence", "lstm_stack_sequence_reference", "usable"]


class SequenceSpec(NamedTuple):
    """What the loop needs besides tensors: ``n_stacks`` K (0: no stack), ``read_depth`` r,
    ``width`` W, ``grow`` (the depth a stack stored shallow may grow to, one cell per step;
    ``None``: its depth is fixed), ``joint`` (one softmax over all stacks' actions) and
    ``final_stack`` (False: the caller uses the last stack state's top r cells at most, as
    a forward that returns no state does; the cells that no read can reach any more are
    then left out, see :func:`_depths`, and ``stack_T`` holds its top min(depth, r)
    cells)."""
    n_stacks: int
    read_depth: int
    width: int
    grow: int | None
    joint: bool
    final_stack: bool = True


def _gate_order(H: int, device) -> torch.Tensor:
    """Row order (i, f, o, g) from torch's (i, f, g, o): the three sigmoid gates adjacent."""
    idx = torch.arange(4 * H, device=device)
    return torch.cat([idx[:2 * H], idx[3 * H:], idx[2 * H:3 * H]])


def _actions(z: torch.Tensor, spec: SequenceSpec) -> torch.Tensor:
    B, K = z.shape[0], spec.n_stacks
    if spec.joint:
        return torch.softmax(z, dim=-1).view(B, K, 3)
    return torch.softmax(z.view(B, K, 3), dim=-1)


_PLAIN = (torch.Tensor, torch.nn.Parameter)
#: smallest arena of kept stack states taken from the pool (:func:`_state_places`)
ARENA_MIN_BYTES = 1 << 20


def _autocast_on(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4: no device argument
        return torch.is_autocast_enabled() or torch.is_autocast_cpu_enabled()


def usable(*tensors) -> bool:
    """Whether the fused node may run on these tensors: plain real float32/float64 tensors
    (no :mod:`torch.func` wrappers or subclasses), not while ``torch.compile`` traces, not
    under forward-mode AD (the node has no forward derivative) and not under
    :func:`torch.autocast` (whose per-operator casts the node's in-place products would
    break); elsewhere the step-by-step model runs."""
    if _compiling() or _forward_ad_active():
        return False
    dt = tensors[0].dtype
    if _autocast_on(tensors[0].device.type):  # autocast casts per operator
        return False
    return dt in (torch.float32, torch.float64) and all(
        t is None or (type(t) in _PLAIN and t.dtype == dt
                      and not torch._C._functorch.is_functorch_wrapped_tensor(t))
        for t in tensors)


# --------------------------------------------------------------------------- forward
def _layout(spec: SequenceSpec, E: int, H: int):
    """Columns of one row of the step inputs ``xb[t]`` (B, P): ``[r_{t-1} | h_{t-1} | e_t |
    1]``, so that one product with the merged weights ``[W_r, W_hh, W_e, b]`` gives the
    gate pre-activations, one product back gives the gradients of all three inputs, and one
    accumulated product gives every weight's and the bias's gradient."""
    R = spec.n_stacks * spec.read_depth * spec.width
    return R, R + H, R + H + E + 1  # R, start of e_t, P


def _depths(spec, d: int, T: int) -> list[int]:
    """Depths of the stack states s_1 .. s_T of a stack stored ``d`` cells deep, as the
    compiled loop stores them.

    Without ``spec.final_stack``, s_t keeps only its top ``r + T - t`` cells (r the read
    depth): a cell moves up at most one place per step (the pop term), and the reads of
    steps t .. T see the top r cells, so cell j of s_t reaches an output only if
    ``j < r + T - t``. The deeper cells are never computed (nor their gradients, all zero):
    about half of the O(T^2) cell updates of a stack that grows one cell per step. The
    values of everything that reaches an output are unchanged, bit for bit."""
    out = []
    for t in range(1, T + 1):
        d = _grown_depth(d, spec.grow)
        out.append(d if spec.final_stack else min(d, spec.read_depth + T - t))
    return out


def _state_places(stack0, depths, keep):
    """Where the compiled kernel writes the stack states ``s_1 .. s_{T-1}`` (their
    ``depths``, of s_1 .. s_T, from :func:`_depths`): their
    addresses, and ``(arena, offsets)`` when they are kept for the backward pass (else
    None); ``s_T``, an output, is a tensor of its own. Kept states go into one flat arena
    (:func:`rnnmem.models._buffers.arena`, reused across calls once the previous call's
    backward has freed it), each at its element offset; a forward that keeps none (no
    grad) writes them into two buffers taken in turn (each state is read once, by the
    next step).

    Why: the kept states are O(T^2) floats (128 MB at T=500, batch 32, width 8), and each
    fresh tensor of that size is a fresh ``mmap`` whose pages the kernel faults in one by
    one. Measured on 2 shared cores (forward stack loop alone, T=500, batch 32, width 8):
    66-86 ms with a fresh tensor per state (31k page faults) against 21-24 ms with the
    states in a reused arena, 20-31 ms with states dropped as soon as used. Addresses
    rather than views: at T=500 making, saving and unpacking a view per state cost more
    than the kernels of the plain LSTM's steps."""
    B, K, _, W = stack0.shape
    T = len(depths)
    sizes = [B * K * n * W for n in depths[:-1]]
    es = stack0.element_size()
    if not keep:
        n = max(sizes, default=0)
        bufs = (stack0.new_empty(n), stack0.new_empty(n))
        return [bufs[t % 2].data_ptr() for t in range(T - 1)], None, bufs
    flat = _buffers.arena(stack0, sum(sizes), min_bytes=ARENA_MIN_BYTES)
    offsets, off = [], 0
    for size in sizes:
        offsets.append(off)
        off += size
    base = flat.data_ptr()
    return [base + o * es for o in offsets], (flat, offsets), flat


def _native_forward_steps(spec, act, c, tc, xb, layout, W_all, z_all=None, W_if=None,
                          b_if=None, stack0=None, keep=True):
    """The forward loop on the compiled kernels: per step the gate product and one call
    (``rn_lstm_stack_fwd``, or ``rn_lstm_fwd`` without a stack), whose arguments are the
    buffers' addresses advanced by arithmetic, every step's in one table made before the
    loop (:func:`rnnmem.models._native.row_table`; one argument per call through ctypes;
    no per-step views or checks: at hidden 20 these cost more than the kernels). With a
    stack (``z_all`` given), returns a dict: every step's actions ``a_all`` (T, B, K, 3)
    and values ``v_all`` (T, B, K, W), the last state ``last``, ``kept`` = ``(arena,
    offsets)`` of the states s_1 .. s_{T-1} (None unless ``keep``) and their ``depths``
    (of s_1 .. s_T); without, an empty dict."""
    T, B, H4 = act.shape
    H, K, Wd, r = H4 // 4, spec.n_stacks, spec.width, spec.read_depth
    R, _, P = layout
    es = act.element_size()
    ar = torch.arange(T, dtype=torch.int64)
    pa, pc, ptc, px = act.data_ptr(), c.data_ptr(), tc.data_ptr(), xb.data_ptr()
    da, dcs, dxb = B * H4 * es, B * H * es, B * P * es  # bytes per step
    cell = (pa + da * ar, pc + dcs * ar, pc + dcs * (ar + 1), ptc + dcs * ar,
            px + dxb * (ar + 1) + R * es, P)  # act, c_{t-1}, c_t, tanh c_t, h_t and its ld
    gs_, xs, W_allT = act.unbind(0), xb.unbind(0), W_all.t()
    if not K:
        fn = _native.kernel("lstm_fwd_row", act.dtype)
        table = _native.row_table(T, *cell, None, None, 0, None, 0, H)
        p0, row = table.data_ptr(), table.shape[1] * 8
        for t in range(T):
            torch.mm(xs[t], W_allT, out=gs_[t])
            _native.run_rows(fn, B, B * 6 * H, (p0 + t * row,), ())
        return {}
    C = z_all.shape[2]
    a_all, v_all = act.new_empty(T, B, K, 3), act.new_empty(T, B, K, Wd)
    W_ifT, b_z = W_if.t().contiguous(), b_if.contiguous()
    fn = _native.kernel("lstm_stack_fwd_row", act.dtype)
    s0 = stack0.contiguous()
    depths = _depths(spec, s0.shape[2], T)
    places, kept, _hold = _state_places(s0, depths, keep)
    last = s0.new_empty(B, K, depths[-1], Wd) if T else stack0  # s_T, an output
    p_new = (places + [last.data_ptr()])[:T]  # where s_1 .. s_T are written
    table = _native.row_table(
        T, *cell, W_ifT.data_ptr(), b_z.data_ptr(), C, z_all.data_ptr() + B * C * es * ar, C,
        int(spec.joint), ([s0.data_ptr()] + p_new)[:T], a_all.data_ptr() + B * K * 3 * es * ar,
        v_all.data_ptr() + B * K * Wd * es * ar, p_new, px + dxb * (ar + 1), P, r, H, K,
        ([s0.shape[2]] + depths)[:T], depths, Wd)
    p0, row = table.data_ptr(), table.shape[1] * 8
    for t in range(T):
        torch.mm(xs[t], W_allT, out=gs_[t])
        _native.run_rows(fn, B, B * ((6 + C) * H + K * depths[t] * Wd), (p0 + t * row,), ())
    return dict(a_all=a_all, v_all=v_all, last=last, kept=kept, depths=depths)


def _forward(spec, emb, W_ih, W_hh, b_ih, b_hh, W_if, b_if, h0, c0, stack0, read0,
             keep=True):
    """The loop, without a graph; returns what the backward needs (a dict). ``keep``:
    keep every stack state for the backward (else only the last, the output)."""
    B, T, E = emb.shape
    H = W_hh.shape[1]
    K, r, Wd = spec.n_stacks, spec.read_depth, spec.width
    R, e0, P = _layout(spec, E, H)
    perm = _gate_order(H, emb.device)
    W_all = torch.cat([W_ih[:, E:], W_hh, W_ih[:, :E], (b_ih + b_hh)[:, None]],
                      dim=1)[perm]  # (4H, P)
    xb = emb.new_empty(T + 1, B, P)
    xb[:T, :, e0:P - 1] = emb.transpose(0, 1)
    xb[:, :, P - 1] = 1
    xb[0, :, R:e0] = h0
    if K:
        xb[0, :, :R] = read0
    act = emb.new_empty(T, B, 4 * H)
    c = emb.new_empty(T + 1, B, H)
    c[0] = c0
    tc = emb.new_empty(T, B, H)
    W_allT = W_all.t()
    stacks, acts, vals = [stack0], [], []
    nA = 3 * K
    native = _native.supports(emb, W_all, *((W_if, b_if, stack0) if K else ()))
    # the interface logits of all steps
    z_all = emb.new_empty(T, B, nA + K * Wd) if K else None
    if native:  # the stack states by address (f["native_stack"]), not in lists
        ns = _native_forward_steps(spec, act, c, tc, xb, (R, e0, P), W_all, z_all, W_if,
                                   b_if, stack0, keep)
        return dict(perm=perm, W_all=W_all, act=act, xb=xb, c=c, tc=tc,
                    stacks=[stack0, ns["last"]] if K else stacks, acts=acts, vals=vals,
                    layout=(R, e0, P), native_stack=ns)
    # every step's views made at once (indexing in the loop costs more than the kernels
    # at small sizes)
    gs_, sig, th = act.unbind(0), act[:, :, :3 * H].unbind(0), act[:, :, 3 * H:].unbind(0)
    gi, gf, go = (act[:, :, k * H:(k + 1) * H].unbind(0) for k in range(3))
    xs, hs, cs, tcs = xb.unbind(0), xb[:, :, R:e0].unbind(0), c.unbind(0), tc.unbind(0)
    if K:
        zs, reads = z_all.unbind(0), xb[:, :, :R].unbind(0)
        depths = _depths(spec, stack0.shape[2], T)  # as the compiled loop keeps them
    for t in range(T):
        torch.mm(xs[t], W_allT, out=gs_[t])
        sig[t].sigmoid_()
        th[t].tanh_()
        torch.mul(gf[t], cs[t], out=cs[t + 1])
        cs[t + 1].addcmul_(gi[t], th[t])
        torch.tanh(cs[t + 1], out=tcs[t])
        h = torch.mul(go[t], tcs[t], out=hs[t + 1])
        if K:
            z = torch.addmm(b_if, h, W_if, out=zs[t])
            a, v = _actions(z[:, :nA], spec), torch.sigmoid(z[:, nA:]).view(B, K, Wd)
            s = _superposition_forward(stacks[-1], a, v, depths[t])
            reads[t + 1].copy_(s[:, :, :r].reshape(B, R))
            if keep:
                stacks.append(s)
            else:  # only the last state is an output
                stacks[-1] = s
            acts.append(a)
            vals.append(v)
    return dict(perm=perm, W_all=W_all, act=act, xb=xb, c=c, tc=tc, stacks=stacks, acts=acts,
                vals=vals, layout=(R, e0, P))


def _outputs(f, spec):
    T = f["tc"].shape[0]
    R, e0, _ = f["layout"]
    hs = f["xb"][1:, :, R:e0].transpose(0, 1).contiguous()  # (B, T, H)
    out = (hs, f["c"][T].clone())
    if spec.n_stacks:
        s_T = f["stacks"][-1]
        if not spec.final_stack and T and "native_stack" not in f:  # (native: stored so)
            s_T = s_T[:, :, :spec.read_depth].clone()
        out += (s_T, f["xb"][T, :, :R].clone())
    return out


# --------------------------------------------------------------------------- backward
def _control_grads(ga, gv, a, v, spec) -> torch.Tensor:
    """dL/d(interface logits) (B, 3K + KW) from dL/dactions and dL/dvalues."""
    B = a.shape[0]
    dim = (1, 2) if spec.joint else (2,)
    za = a * (ga - (ga * a).sum(dim=dim, keepdim=True))
    zv = gv * v * (1 - v)
    return torch.cat([za.reshape(B, -1), zv.reshape(B, -1)], dim=1)


def _backward_loop(f, spec, W_if, g_hs, g_c, g_stack, g_read, need_w):
    """The loop back in time. Returns ``dx`` (T, B, P), the gradients of every step's inputs
    ``[r_{t-1} | h_{t-1} | e_t | 1]``; dL/d(interface logits) (T, B, C) or None; the
    merged weights' gradient (4H, P), accumulated step by step while each step's gate
    gradient is still in cache (None unless ``need_w``); dL/dc_0 and dL/dstack_0."""
    act, xb, c, tc, W_all = f["act"], f["xb"], f["c"], f["tc"], f["W_all"]
    R, e0, P = f["layout"]
    T, B, H4 = act.shape
    H, K = H4 // 4, spec.n_stacks
    dgates = act.new_empty(B, H4)  # one step's, reused
    dx = act.new_empty(T, B, P)
    dW = act.new_zeros(H4, P) if need_w else None
    dz = act.new_empty(T, B, 3 * K + K * spec.width) if K else None
    nxt = act.new_zeros(B, P)  # the gradient arriving from step T (none but the read's)
    if K and g_read is not None:
        nxt[:, :R] = g_read
    dc = (g_c.clone(memory_format=torch.contiguous_format) if g_c is not None
          else c.new_zeros(B, H))
    gs = g_stack
    W_ifT = W_if.t().contiguous() if K else None
    if "native_stack" in f:
        gs = _native_backward_steps(f, spec, W_ifT, g_hs, dc, gs, g_read, nxt, dx, dz, dW,
                                    dgates)
        return dx, dz, dW, dc, gs
    scratch = (act.new_empty(B, K, 3), act.new_empty(B, K, spec.width)) if K else None
    acts_, cs, tcs, xs, dxs = act.unbind(0), c.unbind(0), tc.unbind(0), xb.unbind(0), dx.unbind(0)
    d_read, d_h = dx[:, :, :R].unbind(0), dx[:, :, R:e0].unbind(0)
    g_outs = [None] * T if g_hs is None else g_hs.unbind(1)
    dzs = dz.unbind(0) if K else None
    nxt_read, nxt_h = nxt[:, :R], nxt[:, R:e0]  # from step t + 1
    depths = _depths(spec, f["stacks"][0].shape[2], T) if K else None  # as the forward's
    for t in range(T - 1, -1, -1):
        gz = None
        # (the last step's stack feeds no output when no gradient reaches it: none sent back)
        through_stack = K and not (gs is None and t == T - 1 and g_read is None)
        if through_stack:
            s, a, v = f["stacks"][t], f["acts"][t], f["vals"][t]
            B_, K_, d, W_ = s.shape
            nd = depths[t]  # of s_{t+1}
            if gs is None:
                gs = s.new_zeros(B_, K_, nd, W_)
            elif t == T - 1 and gs.shape[2] < nd:  # final_stack off: its top cells only
                gs = torch.nn.functional.pad(gs, (0, 0, 0, nd - gs.shape[2]))
            gz = dzs[t]
        elif K:
            dzs[t].zero_()
        if through_stack:
            gs, ga, gv = _superposition_backward(
                s, a, v, gs, nxt_read.view(B, K, spec.read_depth, spec.width))
            gz.copy_(_control_grads(ga, gv, a, v, spec))
        gh = nxt_h if g_outs[t] is None else nxt_h + g_outs[t]
        if gz is not None:
            gh = torch.addmm(gh, gz, W_ifT)
        _cell_backward_torch(acts_[t], cs[t], tcs[t], gh, dc, dgates)
        if need_w:
            dW.addmm_(dgates.t(), xs[t])
        torch.mm(dgates, W_all, out=dxs[t])
        nxt_read, nxt_h = d_read[t], d_h[t]
    return dx, dz, dW, dc, gs


def _native_backward_steps(f, spec, W_ifT, g_hs, dc, gs, g_read, nxt, dx, dz, dW, dgates):
    """:func:`_backward_loop` on the compiled kernels: per step one call
    (``rn_lstm_stack_bwd``: the stack's, the controls' and the cell's derivatives; or
    ``rn_lstm_bwd``: the cell's alone) on addresses advanced by arithmetic (tables made
    before the loop, as in :func:`_native_forward_steps`), then the weight gradient's
    product and the product back to the step's inputs. Returns dL/dstack_0. Every tensor
    whose address a table holds stays referenced until the loop ends."""
    act, xb, c, tc, W_all = f["act"], f["xb"], f["c"], f["tc"], f["W_all"]
    R, e0, P = f["layout"]
    T, B, H4 = act.shape
    H, K, Wd, r = H4 // 4, spec.n_stacks, spec.width, spec.read_depth
    es = act.element_size()
    ar = torch.arange(T, dtype=torch.int64)
    da, dcs, ddx = B * H4 * es, B * H * es, B * P * es  # bytes per step
    # dL/d[r_t | h_t] arrives in the row of step t + 1 (or in nxt from step T)
    p_next = dx.data_ptr() + ddx * (ar + 1)
    if T:
        p_next[-1] = nxt.data_ptr()
    if g_hs is not None and (H > 1 and g_hs.stride(2) != 1):
        g_hs = g_hs.contiguous()  # rows of dL/dh_t read with a stride between them
    gh2, ldh = ((None, 0) if g_hs is None else
                (g_hs.data_ptr() + g_hs.stride(1) * es * ar, g_hs.stride(0)))
    cell_in = (act.data_ptr() + da * ar, c.data_ptr() + dcs * ar, tc.data_ptr() + dcs * ar,
               p_next + R * es, P, gh2, ldh)
    fixed = (dc.data_ptr(), dgates.data_ptr())
    cell = _native.kernel("lstm_bwd_row", act.dtype)
    ctab = _native.row_table(T, *cell_in, None, 0, None, 0, *fixed, H)
    cp0, crow = ctab.data_ptr(), ctab.shape[1] * 8
    xs, dxs = xb.unbind(0), dx.unbind(0)
    # (the last step's stack feeds no output when no gradient reaches it: none sent back)
    skip_last = gs is None and g_read is None
    if K and T:
        C = dz.shape[2]
        ns = f["native_stack"]
        s0 = ns["stack0"].contiguous()
        depths = [s0.shape[2], *ns["depths"]]  # of s_0 .. s_T
        base = ns["arena"].data_ptr()
        p_states = [s0.data_ptr()] + [base + o * es for o in ns["offsets"]]  # s_0 .. s_{T-1}
        # dL/ds_{t+1} read at step t, dL/ds_t written: steps T-1 .. 1 write into two
        # buffers taken in turn, step 0 into dL/dstack_0 (returned)
        n = B * K * max(depths) * Wd
        gs_buf = (act.new_empty(n), act.new_empty(n))
        g_in = [gs_buf[(t + 1) % 2].data_ptr() for t in range(T)]
        if skip_last:
            if T > 1:  # nothing reaches s_{T-1} from step T-1
                zeros_in = act.new_zeros(B, K, depths[T - 1], Wd)
                g_in[T - 2] = zeros_in.data_ptr()
        else:  # (g_T held to the end of the loop: the kernel reads it by address)
            g_T = act.new_zeros(B, K, depths[T], Wd) if gs is None else gs.contiguous()
            g_in[T - 1] = g_T.data_ptr()
        gs = act.new_empty(B, K, depths[0], Wd)
        g_out = [gs.data_ptr()] + [gs_buf[t % 2].data_ptr() for t in range(1, T)]
        ga, gv = act.new_empty(B, K, 3), act.new_empty(B, K, Wd)
        step = _native.kernel("lstm_stack_bwd_row", act.dtype)
        stab = _native.row_table(
            T, p_states, ns["a_all"].data_ptr() + B * K * 3 * es * ar,
            ns["v_all"].data_ptr() + B * K * Wd * es * ar, g_in, g_out, ga.data_ptr(),
            gv.data_ptr(), p_next, P, r, dz.data_ptr() + B * C * es * ar, C, int(spec.joint),
            *cell_in, W_ifT.data_ptr(), *fixed, H, K, depths[:T], depths[1:], Wd)
        sp0, srow = stab.data_ptr(), stab.shape[1] * 8
        work = [B * ((4 + C) * H + K * nd * Wd) for nd in depths[1:]]
    for t in range(T - 1, -1, -1):
        if K and not (skip_last and t == T - 1):
            _native.run_rows(step, B, work[t], (sp0 + t * srow,), ())
        else:
            if K:
                dz[t].zero_()
            _native.run_rows(cell, B, B * 4 * H, (cp0 + t * crow,), ())
        if dW is not None:
            dW.addmm_(dgates.t(), xs[t])
        torch.mm(dgates, W_all, out=dxs[t])
    if K and T == 1 and skip_last:  # no gradient reached the stack at all
        return None
    return gs


def _cell_backward_torch(act, c_prev, tc, gh, dc, out) -> None:
    """:func:`rnnmem.models._native.lstm_cell_backward` in torch operations (same
    formulas, for ``g_h`` alone: the fallback off CPU or without a compiler, and its
    test)."""
    H = gh.shape[1]
    i, f, o, g = act[:, :H], act[:, H:2 * H], act[:, 2 * H:3 * H], act[:, 3 * H:]
    dc += gh * o * (1 - tc * tc)
    out[:, :H] = dc * g * i * (1 - i)
    out[:, H:2 * H] = dc * c_prev * f * (1 - f)
    out[:, 2 * H:3 * H] = gh * tc * o * (1 - o)
    out[:, 3 * H:] = dc * i * (1 - g * g)
    dc *= f


def _input_grads(f, dx, dz, dW, need):
    """The gradients of the node's inputs from the loop's results."""
    T, B, _ = dx.shape
    R, e0, P = f["layout"]
    out = {}
    if need[0]:
        out["emb"] = dx[:, :, e0:P - 1].transpose(0, 1)
    if dW is not None:
        dW = dW[torch.argsort(f["perm"])]
        if need[1]:
            out["W_ih"] = torch.cat([dW[:, e0:P - 1], dW[:, :R]], dim=1)
        if need[2]:
            out["W_hh"] = dW[:, R:e0]
        out["b"] = dW[:, P - 1]
    if dz is not None and (need[5] or need[6]):
        dzf = dz.view(T * B, dz.shape[2])
        hs = f["xb"][1:, :, R:e0].reshape(T * B, e0 - R)
        # a skinny result (C columns) as the transpose of (H, T B) @ (T B, C): measured
        # 2x faster than (C, T B) @ (T B, H) with OpenBLAS/MKL at C = 11
        out["W_if"] = (dzf.t() @ hs).t()
        out["b_if"] = dzf.sum(0)
    return out


_BUFFERS = ("act", "xb", "c", "tc", "W_all", "perm")


class _LSTMStackSequence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, spec, emb, W_ih, W_hh, b_ih, b_hh, W_if, b_if, h0, c0, stack0, read0):
        with step_threads(gate_work(emb.shape[0], W_ih, W_hh.shape[1]), emb.device):
            f = _forward(spec, emb, W_ih, W_hh, b_ih, b_hh, W_if, b_if, h0, c0, stack0, read0)
        ctx.spec, ctx.T = spec, emb.shape[1]
        ns = f.get("native_stack")
        # the compiled loop's stack states: one arena, its offsets and depths (ctx.native);
        # the torch loop's: a tensor per state
        ctx.native = None if ns is None else (
            (ns["kept"][1], ns["depths"]) if spec.n_stacks else ())
        states = (() if not spec.n_stacks else
                  (ns["kept"][0], ns["a_all"], ns["v_all"]) if ns is not None else
                  (*f["stacks"][1:-1], *f["acts"], *f["vals"]))
        # everything through save_for_backward: autograd frees it after a backward (and
        # keeps it under retain_graph), as for any operator
        ctx.save_for_backward(emb, W_ih, W_hh, b_ih, b_hh, W_if, b_if, h0, c0, stack0, read0,
                              *(f[k] for k in _BUFFERS), *states)
        ctx.set_materialize_grads(False)
        return _outputs(f, spec)

    @staticmethod
    def backward(ctx, *grads):
        spec, T = ctx.spec, ctx.T
        saved = ctx.saved_tensors
        ins, buf = saved[:11], saved[11:]
        need = ctx.needs_input_grad[1:]
        if torch.is_grad_enabled():  # double backward: differentiate the plain form
            return (None, *_reference_grads(spec, ins, grads, need))
        f = dict(zip(_BUFFERS, buf), layout=_layout(spec, ins[0].shape[2], ins[2].shape[1]))
        n = len(_BUFFERS)
        K = spec.n_stacks
        if ctx.native is not None:  # the compiled loop ran: it runs back too
            f["native_stack"] = (dict(zip(("arena", "a_all", "v_all"), buf[n:n + 3]),
                                      offsets=ctx.native[0], depths=ctx.native[1],
                                      stack0=ins[9]) if K else {})
        elif K:  # stacks 0..T-1 (the last one is not needed), actions, values
            f["stacks"] = [ins[9], *buf[n:n + T - 1]]
            f["acts"] = list(buf[n + T - 1:n + 2 * T - 1])
            f["vals"] = list(buf[n + 2 * T - 1:n + 3 * T - 1])
        g_hs, g_c = grads[0], grads[1]
        g_stack, g_read = (grads[2], grads[3]) if K else (None, None)
        need_w = any(need[1:5])
        with step_threads(gate_work(ins[0].shape[0], ins[1], ins[2].shape[1]),
                          ins[0].device):
            dx, dz, dW, dc, gs = _backward_loop(f, spec, ins[5], g_hs, g_c, g_stack, g_read,
                                                need_w)
        w = _input_grads(f, dx, dz, dW, need)
        R, e0, P = f["layout"]
        b = w.get("b")
        if T:  # the gradients of step 0's inputs [r_0 | h_0 | ...]
            d0 = dx[0]
        else:  # no step: h_0 reaches no output, r_0 is r_T
            d0 = dx.new_zeros(dx.shape[1], P)
            if K and g_read is not None:
                d0[:, :R] = g_read
        res = [w.get("emb"), w.get("W_ih"), w.get("W_hh"), b if need[3] else None,
               b.clone() if need[4] else None,
               w.get("W_if"), w.get("b_if"), d0[:, R:e0] if need[7] else None,
               dc if need[8] else None, gs if need[9] else None,
               d0[:, :R] if (need[10] and K) else None]
        return (None, *res)


def _reference_grads(spec, ins, grads, need):
    """Gradients through :func:`lstm_stack_sequence_reference` (differentiable themselves
    when grad mode is on)."""
    return _plain_form_grads(lambda *ts: lstm_stack_sequence_reference(spec, *ts), ins, grads,
                             need)


# --------------------------------------------------------------------------- entry points
def lstm_stack_sequence(spec: SequenceSpec, emb, W_ih, W_hh, b_ih, b_hh, W_if=None,
                        b_if=None, h0=None, c0=None, stack0=None, read0=None):
    """Run the controller (and stack) over ``emb`` (B, T, E).

    ``W_ih`` (4H, E + R), ``W_hh`` (4H, H), ``b_ih``, ``b_hh`` (4H,): the LSTM cell's
    parameters (torch's layout); ``W_if`` (H, 3K + KW), ``b_if``: the merged interface of
    the stack (``SuperpositionStack.merged_interface``); ``h0``, ``c0`` (B, H); ``stack0``
    (B, K, d, W) and ``read0`` (B, R). Returns ``(hs (B, T, H), c_T)``, plus
    ``(stack_T, read_T)`` with a stack. Callers check :func:`usable` first.
    """
    args = (emb, W_ih, W_hh, b_ih, b_hh, W_if, b_if, h0, c0, stack0, read0)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in args):
        return _LSTMStackSequence.apply(spec, *args)
    work = gate_work(emb.shape[0], W_ih, W_hh.shape[1])
    with torch.no_grad(), step_threads(work, emb.device):
        return _outputs(_forward(spec, *args, keep=False), spec)


def lstm_stack_sequence_reference(spec: SequenceSpec, emb, W_ih, W_hh, b_ih, b_hh, W_if=None,
                                  b_if=None, h0=None, c0=None, stack0=None, read0=None):
    """:func:`lstm_stack_sequence` written with plain differentiable operations, one time
    step after another (the slow reference; same signature, same results to rounding)."""
    B, T, _ = emb.shape
    K, r = spec.n_stacks, spec.read_depth
    h, c, s, rd = h0, c0, stack0, read0
    hs = []
    for t in range(T):
        inp = torch.cat([emb[:, t], rd], dim=1) if K else emb[:, t]
        h, c = torch.lstm_cell(inp, (h, c), W_ih, W_hh, b_ih, b_hh)
        hs.append(h)
        if K:
            z = torch.addmm(b_if, h, W_if)
            a = _actions(z[:, :3 * K], spec)
            v = torch.sigmoid(z[:, 3 * K:]).view(B, K, spec.width)
            s = _superposition_update(s, a, v, _grown_depth(s.shape[2], spec.grow))
            rd = s[:, :, :r].reshape(B, -1)
    if K and T and not spec.final_stack:
        s = s[:, :, :r]
    out = (torch.stack(hs, dim=1), c)
    return out + (s, rd) if K else out
