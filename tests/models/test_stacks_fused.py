"""The fused superposition update (issue 14, part 3) against the plain-operation form it
replaces: values, first and second derivatives, growing and fixed depth, and the paths
that must keep using plain operations (vmap)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnmem.models import stacks as S
from rnnmem.numerics import tolerance

DT = torch.float64


def _inputs(seed, B, K, d, W):
    g = torch.Generator().manual_seed(seed)
    state = torch.rand(B, K, d, W, generator=g, dtype=DT)
    actions = torch.softmax(torch.randn(B, K, 3, generator=g, dtype=DT), -1)
    values = torch.rand(B, K, W, generator=g, dtype=DT)
    return state, actions, values


shapes = st.tuples(st.integers(0, 2**31 - 1), st.integers(1, 3), st.integers(1, 2),
                   st.integers(1, 6), st.integers(1, 3), st.booleans())


@settings(max_examples=40)
@given(shapes)
def test_fused_equals_plain_values_and_gradients(case):
    seed, B, K, d, W, grow = case
    nd = d + 1 if grow else d
    state, actions, values = _inputs(seed, B, K, d, W)
    cot = torch.randn(B, K, nd, W, generator=torch.Generator().manual_seed(seed + 1),
                      dtype=DT)
    outs, grads = {}, {}
    for name, fn in (("plain", S._superposition_composed),
                     ("fused", S._SuperpositionUpdate.apply)):
        ins = [t.clone().requires_grad_() for t in (state, actions, values)]
        out = fn(*ins, nd)
        outs[name] = out.detach()
        grads[name] = torch.autograd.grad(out, ins, cot)
    tol = tolerance(DT, n_ops=3 * nd * W, scale=float(cot.abs().max() + 1))
    assert tol.allclose(outs["fused"].numpy(), outs["plain"].numpy())
    for gf, gp in zip(grads["fused"], grads["plain"]):
        assert tol.allclose(gf.numpy(), gp.numpy()), tol.max_violation(gf.numpy(), gp.numpy())


@pytest.mark.parametrize("grow", [False, True])
def test_gradcheck_and_gradgradcheck(grow):
    state, actions, values = _inputs(0, 2, 2, 4, 3)
    nd = 5 if grow else 4
    ins = tuple(t.requires_grad_() for t in (state, actions, values))
    f = lambda s, a, v: S._SuperpositionUpdate.apply(s, a, v, nd)  # noqa: E731
    assert torch.autograd.gradcheck(f, ins)
    assert torch.autograd.gradgradcheck(f, ins)


def test_only_some_inputs_need_gradients():
    state, actions, values = _inputs(1, 2, 1, 3, 2)
    a = actions.clone().requires_grad_()
    out = S._SuperpositionUpdate.apply(state, a, values, 4)
    (ga,) = torch.autograd.grad(out.sum(), (a,))
    a2 = actions.clone().requires_grad_()
    (gp,) = torch.autograd.grad(S._superposition_composed(state, a2, values, 4).sum(), (a2,))
    torch.testing.assert_close(ga, gp, rtol=1e-13, atol=1e-13)


def test_dispatch_uses_plain_operations_under_vmap():
    """vmap over stacked states runs (the plain form has vmap rules) and equals the loop."""
    states = torch.rand(3, 2, 1, 4, 2, dtype=DT)  # (P, B, K, d, W)
    _, actions, values = _inputs(2, 2, 1, 4, 2)
    got = torch.func.vmap(lambda s: S._superposition_update(s, actions, values, 5))(states)
    for p in range(3):
        torch.testing.assert_close(got[p], S._superposition_composed(states[p], actions,
                                                                     values, 5))


def test_no_grad_forward_equals_plain():
    state, actions, values = _inputs(3, 2, 2, 5, 3)
    with torch.no_grad():
        fused = S._superposition_update(state, actions, values, 6)
    torch.testing.assert_close(fused, S._superposition_composed(state, actions, values, 6),
                               rtol=1e-15, atol=1e-15)


def test_forward_mode_equals_plain():
    """Dual tensors (forward-mode AD) through the fused Function: the tangent is that of
    the plain form."""
    import torch.autograd.forward_ad as fwAD

    state, actions, values = _inputs(4, 2, 2, 4, 3)
    tans = _inputs(5, 2, 2, 4, 3)
    outs = []
    for fn in (S._SuperpositionUpdate.apply, S._superposition_composed):
        with fwAD.dual_level():
            duals = [fwAD.make_dual(p, t) for p, t in zip((state, actions, values), tans)]
            outs.append(fwAD.unpack_dual(fn(*duals, 5)).tangent)
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-13, atol=1e-13)
