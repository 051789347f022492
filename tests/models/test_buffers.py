"""Reused output buffers of the recurrence kernels (issue 14, part 4): a buffer is handed
out again only when nothing references it, results are those of fresh memory, and the
fast methods still equal the loop reference with the pool engaged on every tensor."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnmem.models import _buffers
from rnnmem.models import linear_recurrence
from rnnmem.numerics import tolerance


@pytest.fixture
def pool_everything(monkeypatch):
    """Pool every CPU tensor (the default pools only >= 8 MiB)."""
    if _buffers._use_count is None:
        pytest.skip("this torch has no storage reference count: the pool is off")
    monkeypatch.setattr(_buffers, "MIN_BYTES", 0)
    _buffers.clear()
    yield
    _buffers.clear()


def test_a_live_buffer_is_never_handed_out_again(pool_everything):
    x = torch.randn(4, 5, 3)
    b1 = _buffers.empty_like(x)
    b1.fill_(7.0)
    b2 = _buffers.empty_like(x)
    assert b2.data_ptr() != b1.data_ptr()
    b2.fill_(-1.0)
    assert torch.all(b1 == 7.0)
    ptr1 = b1.data_ptr()
    view = b1[1:]  # a view alone keeps the storage alive
    del b1
    b3 = _buffers.empty_like(x)
    assert b3.data_ptr() not in (ptr1, b2.data_ptr())
    assert torch.all(view == 7.0)


def test_a_dead_buffer_is_reused(pool_everything):
    x = torch.randn(4, 5, 3)
    b1 = _buffers.empty_like(x)
    ptr = b1.data_ptr()
    del b1
    b2 = _buffers.empty_like(x)
    assert b2.data_ptr() == ptr
    assert b2.shape == x.shape and b2.is_contiguous() and b2._base is None


def test_outputs_saved_by_autograd_are_not_reused(pool_everything):
    """h is saved for backward: a second forward before that backward gets other memory,
    and both gradients equal the reference."""
    gen = torch.Generator().manual_seed(0)
    a = (0.9 * torch.rand(3, generator=gen, dtype=torch.float64)).requires_grad_()
    x = torch.randn(2, 40, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    h1 = linear_recurrence(a, x, method="chunked")
    h2 = linear_recurrence(a, 2 * x, method="chunked")
    assert h1.data_ptr() != h2.data_ptr()
    ga1 = torch.autograd.grad(h1.sum(), a)[0]
    ga2 = torch.autograd.grad(h2.sum(), a)[0]
    ref = linear_recurrence(a, x, method="loop").sum()
    gref = torch.autograd.grad(ref, a)[0]
    torch.testing.assert_close(ga1, gref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ga2, 2 * gref, rtol=1e-12, atol=1e-12)


def test_held_bytes_are_bounded_and_clear_empties(pool_everything, monkeypatch):
    monkeypatch.setattr(_buffers, "MAX_BYTES", 3 * 4 * 100)
    x = torch.randn(100, dtype=torch.float32)
    live = [_buffers.empty_like(x) for _ in range(5)]  # 2 beyond the cap: not pooled
    assert _buffers.held_bytes() == 3 * 4 * 100
    assert len({t.data_ptr() for t in live}) == 5
    _buffers.clear()
    assert _buffers.held_bytes() == 0


def test_subclasses_and_other_devices_are_not_pooled(pool_everything):
    x = torch.randn(4, 4).to("meta")
    assert _buffers.empty_like(x).device.type == "meta"
    assert _buffers.held_bytes() == 0


@settings(max_examples=20)
@given(st.integers(0, 2**31 - 1), st.integers(1, 3), st.integers(1, 60), st.integers(1, 4),
       st.booleans(), st.sampled_from([torch.float64, torch.complex128]))
def test_chunked_equals_loop_with_the_pool_on_every_tensor(seed, B, T, N, tv, dtype):
    if _buffers._use_count is None:
        pytest.skip("pool off")
    old = _buffers.MIN_BYTES
    _buffers.MIN_BYTES = 0
    try:
        gen = torch.Generator().manual_seed(seed)
        shape = (B, T, N) if tv else (N,)
        a = (0.95 * torch.rand(shape, generator=gen, dtype=torch.float64)).to(dtype)
        x = torch.randn(B, T, N, generator=gen, dtype=torch.float64).to(dtype)
        g = torch.randn(B, T, N, generator=gen, dtype=torch.float64).to(dtype)
        outs = {}
        for method in ("loop", "chunked", "chunked"):  # twice: the second reuses memory
            a_, x_ = a.clone().requires_grad_(), x.clone().requires_grad_()
            h = linear_recurrence(a_, x_, method=method)
            ga, gx = torch.autograd.grad(h, (a_, x_), g)
            outs.setdefault(method, []).append((h.detach(), ga, gx))
        tol = tolerance(torch.float64, n_ops=T * (1 + B), cond=20.0,
                        scale=float(x.abs().sum() + g.abs().sum()))
        ref = outs["loop"][0]
        for got in outs["chunked"]:
            for u, v in zip(got, ref):
                assert tol.allclose(u.numpy(), v.numpy()), tol.max_violation(u.numpy(),
                                                                             v.numpy())
        for u, v in zip(*outs["chunked"]):  # reused memory gives the same bits
            assert torch.equal(u, v)
    finally:
        _buffers.MIN_BYTES = old
        _buffers.clear()


# ------------------------------------------------------------------ arenas (kept states)
def test_an_arena_is_reused_by_prefix_and_never_while_alive(pool_everything):
    like = torch.zeros(1, dtype=torch.float32)
    a1 = _buffers.arena(like, 100)
    a1.fill_(3.0)
    a2 = _buffers.arena(like, 100)  # a1 is alive: other memory
    assert a2.data_ptr() != a1.data_ptr()
    views = [a1[:50], a1[50:]]  # the states cut from it keep it alive
    del a1
    a3 = _buffers.arena(like, 80)
    assert a3.data_ptr() not in {v.data_ptr() for v in views}
    assert all(torch.all(v == 3.0) for v in views)
    ptrs = {a2.data_ptr(), a3.data_ptr(), views[0].data_ptr()}
    del a2, a3, views
    small = _buffers.arena(like, 60)  # the smallest free arena that fits, its prefix
    assert small.data_ptr() in ptrs and small.shape == (60,) and small.is_contiguous()


def test_a_larger_arena_supersedes_the_free_smaller_ones(pool_everything):
    like = torch.zeros(1, dtype=torch.float64)
    for n in (10, 20, 30):  # a loop at growing lengths, each arena freed before the next
        _buffers.arena(like, n)
    assert _buffers.held_bytes() == 30 * 8  # one arena, the largest
    big = _buffers.arena(like, 25)
    assert big.shape == (25,) and _buffers.held_bytes() == 30 * 8


def test_arenas_below_the_threshold_are_fresh(pool_everything):
    like = torch.zeros(1)
    t = _buffers.arena(like, 10, min_bytes=1 << 20)
    assert t.shape == (10,) and _buffers.held_bytes() == 0
