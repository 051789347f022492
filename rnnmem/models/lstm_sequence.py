r"""A whole sequence of an LSTM controller with an optional superposition stack as one
autograd node: the forward loop runs without recording a graph, the backward loop is
written out by hand.

Why: the step-by-step model (:meth:`StackRNN._step_impl`) records about forty autograd
nodes per time step (the LSTM cell alone is some fifteen operations), so at hidden size
256, batch 128, length 40 the framework and the small element-wise operations cost as much
as the matrix products (profile in ``benchmarks/bench_stacks.py``). Here, per time step,
the forward is one gate product, four element-wise passes of the cell, the interface
product, softmax and sigmoid, the stack update and a copy of its top cells; the backward is
the stack kernel, the control derivatives, one product back through the interface, one
compiled cell kernel (``_native/lstm.c``) and one product back through the gates. The
weight gradients are summed over time by one matrix product each at the end, and the
input part of the gates (the embedding) is multiplied for all steps at once.

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

from . import _native
from .stacks import (_compiling, _forward_ad_active, _grown_depth, _plain_form_grads,
                     _superposition_backward, _superposition_forward, _superposition_update)

__all__ = ["SequenceSpec", "lstm_stack_sequence", "lstm_stack_sequence_reference", "usable"]


class SequenceSpec(NamedTuple):
    """What the loop needs besides tensors: ``n_stacks`` K (0: no stack), ``read_depth`` r,
    ``width`` W, ``grow`` (the depth a stack stored shallow may grow to, one cell per step;
    ``None``: its depth is fixed) and ``joint`` (one softmax over all stacks' actions)."""
    n_stacks: int
    read_depth: int
    width: int
    grow: int | None
    joint: bool


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
def _forward(spec, emb, W_ih, W_hh, b_ih, b_hh, W_if, b_if, h0, c0, stack0, read0):
    """The loop, without a graph; returns what the backward needs (a dict)."""
    B, T, E = emb.shape
    H = W_hh.shape[1]
    K, r, Wd = spec.n_stacks, spec.read_depth, spec.width
    R = K * r * Wd
    perm = _gate_order(H, emb.device)
    W_e, W_rh = W_ih[:, :E][perm], torch.cat([W_ih[:, E:], W_hh], dim=1)[perm]  # (4H, .)
    e_tb = emb.transpose(0, 1).reshape(T * B, E)
    # gates: the input part of every step at once, then one product per step
    act = torch.addmm((b_ih + b_hh)[perm], e_tb, W_e.t()).view(T, B, 4 * H)
    rh = emb.new_empty(T + 1, B, R + H)  # [r_{t-1}; h_{t-1}] of step t in rh[t]
    rh[0, :, R:] = h0
    if K:
        rh[0, :, :R] = read0
    c = emb.new_empty(T + 1, B, H)
    c[0] = c0
    tc = emb.new_empty(T, B, H)
    W_rhT = W_rh.t()
    stacks, acts, vals = [stack0], [], []
    nA = 3 * K
    native = bool(K) and _native.supports(emb, stack0)
    if K:  # the interface logits of all steps (and, for the kernel, the controls)
        z_all = emb.new_empty(T, B, nA + K * Wd)
    if native:
        a_all, v_all = emb.new_empty(T, B, K, 3), emb.new_empty(T, B, K, Wd)
    for t in range(T):
        g = act[t]
        g.addmm_(rh[t], W_rhT)
        g[:, :3 * H].sigmoid_()
        g[:, 3 * H:].tanh_()
        torch.mul(g[:, H:2 * H], c[t], out=c[t + 1])
        c[t + 1].addcmul_(g[:, :H], g[:, 3 * H:])
        torch.tanh(c[t + 1], out=tc[t])
        h = rh[t + 1, :, R:]
        torch.mul(g[:, 2 * H:3 * H], tc[t], out=h)
        if K:
            z = torch.addmm(b_if, h, W_if, out=z_all[t])
            s, nd = stacks[-1], _grown_depth(stacks[-1].shape[2], spec.grow)
            if native:  # controls, update and read in one call
                s, a, v = _native.superposition_control_forward(
                    z, spec.joint, s, nd, rh[t + 1, :, :R], r, a_all[t], v_all[t])
            else:
                a, v = _actions(z[:, :nA], spec), torch.sigmoid(z[:, nA:]).view(B, K, Wd)
                s = _superposition_forward(s, a, v, nd)
                rh[t + 1, :, :R] = s[:, :, :r].reshape(B, R)
            stacks.append(s)
            acts.append(a)
            vals.append(v)
    return dict(perm=perm, W_e=W_e, W_rh=W_rh, e_tb=e_tb, act=act, rh=rh, c=c, tc=tc,
                stacks=stacks, acts=acts, vals=vals, R=R)


def _outputs(f, spec):
    T, B = f["tc"].shape[:2]
    R = f["R"]
    hs = f["rh"][1:, :, R:].transpose(0, 1).contiguous()  # (B, T, H)
    out = (hs, f["c"][T].clone())
    if spec.n_stacks:
        out += (f["stacks"][-1], f["rh"][T, :, :R].clone())
    return out


# --------------------------------------------------------------------------- backward
def _control_grads(ga, gv, a, v, spec) -> torch.Tensor:
    """dL/d(interface logits) (B, 3K + KW) from dL/dactions and dL/dvalues."""
    B = a.shape[0]
    dim = (1, 2) if spec.joint else (2,)
    za = a * (ga - (ga * a).sum(dim=dim, keepdim=True))
    zv = gv * v * (1 - v)
    return torch.cat([za.reshape(B, -1), zv.reshape(B, -1)], dim=1)


def _backward_loop(f, spec, W_if, g_hs, g_c, g_stack, g_read):
    """The loop back in time: dL/d(gate pre-activations) of every step (T, B, 4H), of the
    interface logits (T, B, C) or None, and the gradients of the initial state."""
    act, rh, c, tc, R = f["act"], f["rh"], f["c"], f["tc"], f["R"]
    T, B, H4 = act.shape
    H, K = H4 // 4, spec.n_stacks
    dgates = torch.empty_like(act)
    dz = act.new_empty(T, B, 3 * K + K * spec.width) if K else None
    drh = rh.new_zeros(B, R + H)
    if K and g_read is not None:
        drh[:, :R] = g_read
    dc = g_c.clone() if g_c is not None else c.new_zeros(B, H)
    gs = g_stack
    native = _native.supports(act, dc)
    W_ifT = W_if.t() if K else None
    scratch = (act.new_empty(B, K, 3), act.new_empty(B, K, spec.width)) if K else None
    for t in range(T - 1, -1, -1):
        gh = drh[:, R:].clone() if g_hs is None else drh[:, R:] + g_hs[:, t]
        if K and gs is None and t == T - 1 and g_read is None:
            dz[t].zero_()  # the last step's stack feeds no output: nothing to send back
        elif K:
            s, a, v = f["stacks"][t], f["acts"][t], f["vals"][t]
            if gs is None:
                B_, K_, d, W_ = s.shape
                gs = s.new_zeros(B_, K_, _grown_depth(d, spec.grow), W_)
            if native:  # the stack's and the controls' derivatives in one call
                gs = _native.superposition_control_backward(
                    s, a, v, gs, drh[:, :R], spec.read_depth, spec.joint, dz[t], scratch)
            else:
                gs, ga, gv = _superposition_backward(
                    s, a, v, gs, drh[:, :R].view(B, K, spec.read_depth, spec.width))
                dz[t] = _control_grads(ga, gv, a, v, spec)
            gh.addmm_(dz[t], W_ifT)
        if native:
            _native.lstm_cell_backward(act[t], c[t], tc[t], gh, dc, dgates[t])
        else:
            _cell_backward_torch(act[t], c[t], tc[t], gh, dc, dgates[t])
        drh = dgates[t] @ f["W_rh"]
    return dgates, dz, drh, dc, gs


def _cell_backward_torch(act, c_prev, tc, gh, dc, out) -> None:
    """:func:`rnnmem.models._native.lstm_cell_backward` in torch operations (same
    signature and formulas: the fallback off CPU or without a compiler, and its test)."""
    H = gh.shape[1]
    i, f, o, g = act[:, :H], act[:, H:2 * H], act[:, 2 * H:3 * H], act[:, 3 * H:]
    dc += gh * o * (1 - tc * tc)
    out[:, :H] = dc * g * i * (1 - i)
    out[:, H:2 * H] = dc * c_prev * f * (1 - f)
    out[:, 2 * H:3 * H] = gh * tc * o * (1 - o)
    out[:, 3 * H:] = dc * i * (1 - g * g)
    dc *= f


def _weight_grads(f, dgates, dz, need, E):
    """Gradients of the inputs from the per-step ones, one product per weight."""
    T, B, H4 = dgates.shape
    R = f["R"]
    inv = torch.argsort(f["perm"])
    dg = dgates.view(T * B, H4)
    out = {}
    if need[0]:
        out["emb"] = (dg @ f["W_e"]).view(T, B, E).transpose(0, 1)
    if need[1] or need[2]:
        d_rh = (dg.t() @ f["rh"][:-1].reshape(T * B, -1))[inv]  # (4H, R + H)
        if need[1]:
            # a skinny result (E columns) as the transpose of (E, T B) @ (T B, 4H): measured
            # 2x faster than (4H, T B) @ (T B, E) with OpenBLAS/MKL at E = 10
            out["W_ih"] = torch.cat([(f["e_tb"].t() @ dg).t()[inv], d_rh[:, :R]], dim=1)
        if need[2]:
            out["W_hh"] = d_rh[:, R:]
    if need[3] or need[4]:
        out["b"] = dg.sum(0)[inv]
    if dz is not None and (need[5] or need[6]):
        dzf = dz.view(T * B, -1)
        out["W_if"] = (dzf.t() @ f["rh"][1:, :, R:].reshape(T * B, -1)).t()  # skinny too
        out["b_if"] = dzf.sum(0)
    return out


_BUFFERS = ("act", "rh", "c", "tc", "W_e", "W_rh", "e_tb", "perm")


class _LSTMStackSequence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, spec, emb, W_ih, W_hh, b_ih, b_hh, W_if, b_if, h0, c0, stack0, read0):
        f = _forward(spec, emb, W_ih, W_hh, b_ih, b_hh, W_if, b_if, h0, c0, stack0, read0)
        ctx.spec, ctx.R, ctx.T = spec, f["R"], emb.shape[1]
        # everything through save_for_backward: autograd frees it after a backward (and
        # keeps it under retain_graph), as for any operator
        ctx.save_for_backward(emb, W_ih, W_hh, b_ih, b_hh, W_if, b_if, h0, c0, stack0, read0,
                              *(f[k] for k in _BUFFERS), *f["stacks"][1:-1], *f["acts"],
                              *f["vals"])
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
        f = dict(zip(_BUFFERS, buf), R=ctx.R)
        n = len(_BUFFERS)
        K = spec.n_stacks
        if K:  # stacks 0..T-1 (the last one is not needed), actions, values
            f["stacks"] = [ins[9], *buf[n:n + T - 1]]
            f["acts"] = list(buf[n + T - 1:n + 2 * T - 1])
            f["vals"] = list(buf[n + 2 * T - 1:n + 3 * T - 1])
        g_hs, g_c = grads[0], grads[1]
        g_stack, g_read = (grads[2], grads[3]) if K else (None, None)
        dgates, dz, drh, dc, gs = _backward_loop(f, spec, ins[5], g_hs, g_c, g_stack, g_read)
        w = _weight_grads(f, dgates, dz, need, ins[0].shape[2])
        R = f["R"]
        b = w.get("b")
        res = [w.get("emb"), w.get("W_ih"), w.get("W_hh"), b if need[3] else None,
               b.clone() if need[4] else None,
               w.get("W_if"), w.get("b_if"), drh[:, R:] if need[7] else None,
               dc if need[8] else None, gs if need[9] else None,
               drh[:, :R] if (need[10] and K) else None]
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
    with torch.no_grad():
        return _outputs(_forward(spec, *args), spec)


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
    out = (torch.stack(hs, dim=1), c)
    return out + (s, rd) if K else out
