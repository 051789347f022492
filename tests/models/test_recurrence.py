"""linear_recurrence: every method against the loop reference, gradients, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import vmap

from rnnmem.errors import InvalidParameterError, ShapeError
from rnnmem.models import _native
from rnnmem.models import _scan_kernels as K
from rnnmem.models import linear_recurrence
from rnnmem.models.recurrence import METHODS, _loop, choose_method
from rnnmem.numerics import tolerance

# "native" only where the compiled kernels build (no C compiler, or RNNMEM_NATIVE=0: the
# explicit method is refused with a named error, tested in test_native.py)
FAST = ("chunked", "scan", "fft") + (("native",) if _native.available() else ())
RUNNABLE = tuple(m for m in METHODS if m != "native" or _native.available())
DTYPES = {"float32": torch.float32, "float64": torch.float64,
          "complex64": torch.complex64, "complex128": torch.complex128}


def _inputs(seed, B, T, N, dtype, tv, radius, with_h0):
    """a with |a| <= radius (some entries tiny or zero), x, h0 of the given dtype."""
    gen = torch.Generator().manual_seed(seed)
    shape = (B, T, N) if tv else (N,)
    real = dtype.to_real() if dtype.is_complex else dtype
    mod = radius * torch.rand(shape, generator=gen, dtype=torch.float64) ** 0.25
    mod.view(-1)[:: 3] *= 1e-3  # small moduli (the cumulative products underflow)
    mod.view(-1)[:: 7] = 0.0
    if dtype.is_complex:
        ph = (2 * math.pi) * torch.rand(shape, generator=gen, dtype=torch.float64)
        a = torch.polar(mod, ph).to(dtype)
        x = torch.complex(torch.randn(B, T, N, generator=gen, dtype=real),
                          torch.randn(B, T, N, generator=gen, dtype=real))
        h0 = torch.randn(B, N, generator=gen, dtype=torch.float64).to(dtype)
    else:
        sign = torch.where(torch.rand(shape, generator=gen) < 0.2, -1.0, 1.0).double()
        a = (mod * sign).to(dtype)
        x = torch.randn(B, T, N, generator=gen, dtype=real)
        h0 = torch.randn(B, N, generator=gen, dtype=real)
    return a, x, (h0 if with_h0 else None)


def _tol_args(a, x, h0):
    """``tolerance`` arguments of a length-T recurrence: cond = 1/(1 - max|a|) capped at T,
    scale = max of the recurrence run on |a|, |x|, |h0| (the summation's natural size)."""
    T = x.shape[1]
    amax = float(a.abs().max()) if a.numel() else 0.0
    cond = min(1.0 / max(1.0 - amax, 1e-300), float(T))
    habs = _loop(a.abs().double(), x.abs().double(), None if h0 is None else h0.abs().double())
    return {"n_ops": T, "cond": cond, "scale": max(float(habs.abs().max()), _tiny(x.dtype))}


def _tiny(dtype):
    """Floor of a tolerance scale: the compared values are exactly zero there, and the
    atol must stay representable in ``dtype`` (numpy compares complex64 in float32)."""
    return math.sqrt(torch.finfo(dtype).tiny)


def _tol(a, x, h0):
    """Tolerance of a length-T recurrence in x's dtype (see :func:`_tol_args`)."""
    return tolerance(x.dtype, **_tol_args(a, x, h0))


def _grad_tol_args(a, x, h0, g):
    """``tolerance`` arguments of the gradients of ``<g, h>``: ``{"x": ..., "a": ...}``.

    The adjoint gx is the recurrence on conj(a) and g in reversed time (same conditioning);
    dL/da_t = gx_t conj(h_{t-1}) (summed over b, t if time-invariant): its natural size is
    the same sum over |gx| |h| bounds, each factor accurate to its own recurrence's error.
    dL/dh0 = conj(a_0) gx_0 takes the ``"x"`` arguments."""
    B, T, _ = x.shape
    tv = a.dim() == 3
    rc = K.reverse_coefficients(a)
    rcf = rc.flip(1) if tv else rc
    ax = _tol_args(rcf, g.flip(1), None)
    gabs = _loop(rcf.abs().double(), g.flip(1).abs().double(), None).flip(1)
    habs = _loop(a.abs().double(), x.abs().double(),
                 None if h0 is None else h0.abs().double())
    hprev = torch.cat([torch.zeros_like(habs[:, :1]) if h0 is None else
                       h0.abs().double()[:, None], habs[:, :-1]], dim=1)
    prod = gabs * hprev
    scale_a = float(prod.max() if tv else prod.sum((0, 1)).max())
    terms = 1 if tv else B * T
    return {"x": ax, "a": {"n_ops": T + terms, "cond": ax["cond"],
                           "scale": max(scale_a, _tiny(x.dtype))}}


def _np(t):
    return t.detach().cpu().resolve_conj().numpy()


def _assert_close(actual, expected, tol):
    v = tol.max_violation(_np(actual), _np(expected))
    assert v <= 1.0, f"violation {v:.3g} (rtol {tol.rtol:.3g}, atol {tol.atol:.3g})"


cases = st.fixed_dictionaries({
    "seed": st.integers(0, 2**31 - 1),
    "B": st.integers(1, 3),
    "T": st.integers(1, 70),
    "N": st.integers(1, 4),
    "dtype": st.sampled_from(sorted(DTYPES)),
    "tv": st.booleans(),
    "radius": st.sampled_from([0.5, 0.9, 0.999, 1.0]),
    "with_h0": st.booleans(),
})


@given(cases)
def test_every_method_equals_loop(c):
    dtype = DTYPES[c["dtype"]]
    a, x, h0 = _inputs(c["seed"], c["B"], c["T"], c["N"], dtype, c["tv"], c["radius"],
                       c["with_h0"])
    ref = linear_recurrence(a, x, h0=h0, method="loop")
    tol = _tol(a, x, h0)
    for method in FAST + ("auto",):
        if method == "fft" and c["tv"]:
            continue
        h = linear_recurrence(a, x, h0=h0, method=method)
        assert h.shape == x.shape and h.dtype == dtype
        assert torch.isfinite(h).all()
        _assert_close(h, ref, tol)


@given(cases, st.integers(1, 9))
def test_chunked_kernel_any_chunk_count(c, k):
    """The three-phase kernel with every chunk count (tails included), both directions."""
    dtype = DTYPES[c["dtype"]]
    a, x, h0 = _inputs(c["seed"], c["B"], c["T"], c["N"], dtype, c["tv"], c["radius"],
                       c["with_h0"])
    tol = _tol(a, x, h0)
    _assert_close(K.chunked_forward(a, x, h0, k), _loop(a, x, h0), tol)
    # adjoint: gx_t = g_t + conj(a_{t+1}) gx_{t+1} is the forward recurrence on reversed time
    rc = K.reverse_coefficients(a)
    rcf = rc.flip(1) if c["tv"] else rc
    ref = _loop(rcf, x.flip(1), None).flip(1)
    tol_r = _tol(rcf, x.flip(1), None)
    _assert_close(K.chunked_reverse(a, x, k), ref, tol_r)
    gx, _ = K.adjoint_sequential(a, x, x, None, need_a=False)
    _assert_close(gx, ref, tol_r)


def _grads(a, x, h0, g, method):
    leaves = [t.detach().clone().requires_grad_() for t in (a, x, h0) if t is not None]
    args = leaves + ([None] if h0 is None else [])
    h = linear_recurrence(args[0], args[1], h0=args[2], method=method)
    return torch.autograd.grad(h, leaves, g)


@settings(max_examples=15)
@given(cases)
def test_gradients_equal_autograd_through_loop(c):
    dtype = DTYPES[c["dtype"]]
    a, x, h0 = _inputs(c["seed"], c["B"], c["T"], c["N"], dtype, c["tv"], c["radius"],
                       c["with_h0"])
    g = _inputs(c["seed"] + 1, c["B"], c["T"], c["N"], dtype, True, 1.0, False)[1]
    ref = _grads(a, x, h0, g, "loop")
    targs = _grad_tol_args(a, x, h0, g)
    tol_x, tol_a = tolerance(dtype, **targs["x"]), tolerance(dtype, **targs["a"])
    for method in FAST:
        if method == "fft" and c["tv"]:
            continue
        got = _grads(a, x, h0, g, method)
        _assert_close(got[1], ref[1], tol_x)  # dL/dx
        _assert_close(got[0], ref[0], tol_a)  # dL/da
        if h0 is not None:
            _assert_close(got[2], ref[2], tol_x)  # dL/dh0 = conj(a_0) gx_0


@pytest.mark.parametrize("method,tv", [(m, tv) for m in FAST for tv in (False, True)
                                       if not (m == "fft" and tv)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_gradcheck_and_gradgradcheck(method, dtype, tv):
    a, x, h0 = _inputs(3, 2, 6, 2, dtype, tv, 0.9, True)
    a, x, h0 = (t.requires_grad_() for t in (a, x, h0))

    def f(a, x, h0):
        return linear_recurrence(a, x, h0=h0, method=method)

    assert torch.autograd.gradcheck(f, (a, x, h0))
    assert torch.autograd.gradgradcheck(f, (a, x, h0))


def test_single_sweep_paths(monkeypatch):
    """With no cache budget every step is one in-place sweep (the path large B*N takes),
    forward and fused backward; compare values and gradients with the loop."""
    monkeypatch.setattr(K, "STEP_BYTES_CPU", 0)
    assert K.default_chunks(2, 50, 3, 8, torch.device("cpu")) == 1
    for dtype in (torch.float64, torch.complex128):
        for tv in (False, True):
            a, x, h0 = _inputs(5, 2, 23, 3, dtype, tv, 0.99, True)
            g = _inputs(6, 2, 23, 3, dtype, True, 1.0, False)[1]
            tol = _tol(a, x, h0)
            _assert_close(linear_recurrence(a, x, h0=h0, method="chunked"),
                          _loop(a, x, h0), tol)
            for got, ref in zip(_grads(a, x, h0, g, "chunked"), _grads(a, x, h0, g, "loop")):
                scale = float(ref.abs().max())
                _assert_close(got, ref, tolerance(dtype, n_ops=4 * 23 * 2, cond=23,
                                                  scale=scale))


def test_default_chunks():
    cpu = torch.device("cpu")
    for B, T, N in [(1, 1, 1), (1, 10, 1), (4, 1000, 16), (1, 100_000, 16), (128, 1024, 256)]:
        k = K.default_chunks(B, T, N, 4, cpu)
        assert 1 <= k <= max(1, T // 2)
    assert K.default_chunks(128, 1024, 256, 4, cpu) == 1  # large steps: one sweep
    assert K.default_chunks(1, 100_000, 16, 4, cpu) > 100  # tiny steps: ~sqrt(2T) chunks


def test_small_moduli_do_not_overflow():
    """|a| tiny or zero over long chunks: no quotient of cumulative products, no inf."""
    B, T, N = 2, 400, 3
    for dtype in (torch.float32, torch.complex64):
        a = torch.tensor([1e-30, 0.0, 0.3], dtype=dtype)
        x = torch.randn(B, T, N, dtype=torch.float64).to(dtype)
        ref = _loop(a, x, None)
        for method in FAST:
            h = linear_recurrence(a, x, method=method)
            assert torch.isfinite(h).all(), method
            _assert_close(h, ref, _tol(a, x, None))
        for k in (1, 3, 20):
            _assert_close(K.chunked_forward(a, x, None, k), ref, _tol(a, x, None))


def test_modulus_near_one_long_sequence():
    B, T, N = 1, 3000, 2
    a = torch.tensor([1 - 1e-6, -(1 - 1e-4)], dtype=torch.float64)
    x = torch.randn(B, T, N, dtype=torch.float64)
    ref = _loop(a, x, None)
    for method in FAST:
        _assert_close(linear_recurrence(a, x, method=method), ref, _tol(a, x, None))


def test_promotion_real_a_complex_x_gradient_is_real():
    a = torch.tensor([0.5, -0.2], dtype=torch.float64, requires_grad=True)
    x = torch.randn(2, 5, 2, dtype=torch.complex128)
    for method in FAST:
        h = linear_recurrence(a, x, method=method)
        assert h.dtype == torch.complex128
        (da,) = torch.autograd.grad(h.abs().sum(), [a])
        assert da.dtype == torch.float64
        (ref,) = torch.autograd.grad(linear_recurrence(a, x, method="loop").abs().sum(), [a])
        _assert_close(da, ref, tolerance(torch.float64, n_ops=20, scale=float(ref.abs().max())))


def test_empty_and_length_one():
    a = torch.tensor([0.5])
    for method in RUNNABLE:
        assert linear_recurrence(a, torch.zeros(2, 0, 1), method=method).shape == (2, 0, 1)
        x = torch.randn(2, 1, 1)
        h0 = torch.randn(2, 1)
        expected = 0.5 * h0 + x[:, 0]
        got = linear_recurrence(a, x, h0=h0, method=method)[:, 0]
        _assert_close(got, expected, tolerance(torch.float64, n_ops=2,
                                               scale=float(expected.abs().max())))


def test_auto_choice_is_a_method():
    a, x = torch.rand(3), torch.randn(2, 10, 3)
    assert choose_method(a, x) in METHODS and choose_method(a, x) != "auto"


@pytest.mark.parametrize("a_shape,x_shape,h0_shape", [
    ((3,), (2, 5), None),  # x not 3-D
    ((3,), (2, 5, 3, 1), None),
    ((4,), (2, 5, 3), None),  # N mismatch
    ((2, 5, 4), (2, 5, 3), None),
    ((2, 4, 3), (2, 5, 3), None),  # time-varying a with another T
    ((3, 3), (2, 5, 3), None),  # a 2-D
    ((3,), (2, 5, 3), (3,)),  # h0 not (B, N)
    ((3,), (2, 5, 3), (2, 4)),
])
def test_bad_shapes(a_shape, x_shape, h0_shape):
    h0 = None if h0_shape is None else torch.zeros(h0_shape)
    for method in RUNNABLE:
        with pytest.raises(ShapeError):
            linear_recurrence(torch.zeros(a_shape), torch.zeros(x_shape), h0=h0, method=method)


def test_bad_method():
    a, x = torch.rand(3), torch.randn(2, 5, 3)
    with pytest.raises(InvalidParameterError, match="unknown method"):
        linear_recurrence(a, x, method="blelloch")
    with pytest.raises(InvalidParameterError, match="time-invariant"):
        linear_recurrence(torch.rand(2, 5, 3), x, method="fft")


# ------------------------------------------------------------------- torch.func (vmap)
# ``vmap`` over P stacked problems must give what a Python loop over the stack gives, for
# every method, forward and backward; the fast kernels run under vmap through the
# Function's vmap rule (the vmapped dimension folded into the batch or state axis).

vcases = st.fixed_dictionaries({
    "seed": st.integers(0, 2**31 - 1),
    "P": st.integers(1, 3),
    "B": st.integers(1, 2),
    "T": st.integers(1, 40),
    "N": st.integers(1, 3),
    "dtype": st.sampled_from(sorted(DTYPES)),
    "tv": st.booleans(),
    "radius": st.sampled_from([0.5, 0.9, 0.999, 1.0]),
    "with_h0": st.booleans(),
    "batched": st.sets(st.sampled_from(["a", "x", "h0"]), min_size=1),
})


def _stack(c):
    """P problems; the operands not in c["batched"] are shared (slice 0, no stack axis).
    Returns (operands as passed to vmap, in_dims, per-problem operand triples)."""
    dtype = DTYPES[c["dtype"]]
    with_h0 = c["with_h0"] or "h0" in c["batched"]
    probs = [_inputs(c["seed"] + i, c["B"], c["T"], c["N"], dtype, c["tv"], c["radius"],
                     with_h0) for i in range(c["P"])]
    ops, dims = [], []
    for j, name in enumerate(("a", "x", "h0")):
        if probs[0][j] is None:
            ops.append(None)
            dims.append(None)
        elif name in c["batched"]:
            ops.append(torch.stack([p[j] for p in probs]))
            dims.append(0)
        else:
            ops.append(probs[0][j])
            dims.append(None)
    per = [tuple(ops[j] if dims[j] is None or ops[j] is None else ops[j][i] for j in range(3))
           for i in range(c["P"])]
    return ops, dims, per


def _vmapped(method, dims, h0_given):
    def f(a, x, h0):
        return linear_recurrence(a, x, h0=h0, method=method)

    if not h0_given:
        return vmap(lambda a, x: f(a, x, None), in_dims=tuple(dims[:2]))
    return vmap(f, in_dims=tuple(dims))


def _methods(tv):
    return [m for m in RUNNABLE if not (m == "fft" and tv)]


@settings(max_examples=25)
@given(vcases)
def test_vmap_equals_loop_over_stack(c):
    ops, dims, per = _stack(c)
    args = ops if ops[2] is not None else ops[:2]
    for method in _methods(c["tv"]):
        out = _vmapped(method, dims, ops[2] is not None)(*args)
        assert out.shape == (c["P"], c["B"], c["T"], c["N"]) and out.dtype == ops[1].dtype
        for i, (a, x, h0) in enumerate(per):
            ref = linear_recurrence(a, x, h0=h0, method=method)
            _assert_close(out[i], ref, _tol(a, x, h0))


def _combined_tol(dtype, arg_list, share):
    """A tolerance covering several problems' arguments; ``share`` problems summed (the
    gradient of an operand shared by the stack adds that many per-problem gradients)."""
    return tolerance(dtype, n_ops=max(t["n_ops"] for t in arg_list) + share - 1,
                     cond=max(t["cond"] for t in arg_list),
                     scale=share * max(t["scale"] for t in arg_list))


@settings(max_examples=12)
@given(vcases, st.sampled_from(["func.grad", "autograd"]))
def test_vmap_gradients_equal_loop_over_stack(c, how):
    """Gradients of <G, vmap(f)(a, x, h0)> by torch.func.grad or by autograd on the vmapped
    output, against autograd through the reference loop over the stack."""
    ops, dims, per = _stack(c)
    dtype = DTYPES[c["dtype"]]
    P = c["P"]
    G = torch.stack([_inputs(c["seed"] + 100 + i, c["B"], c["T"], c["N"], dtype, True, 1.0,
                             False)[1] for i in range(P)])  # (P, B, T, N)
    present = [j for j in range(3) if ops[j] is not None]
    targs = [_grad_tol_args(a, x, h0, G[i]) for i, (a, x, h0) in enumerate(per)]
    kinds = ("a", "x", "x")  # dL/dh0 is conditioned like dL/dx

    def loss_of(method):
        def loss(*leaves):
            full = [None, None, None]
            for j, t in zip(present, leaves):
                full[j] = t
            h = _vmapped(method, dims, full[2] is not None)(*[full[j] for j in present])
            return (h * G.conj()).real.sum()
        return loss

    leaves = [ops[j].detach().clone().requires_grad_() for j in present]
    ref_loss = 0.0
    for i, (a, x, h0) in enumerate(per):  # the loop over the stack, shared leaves reused
        sl = [leaves[present.index(j)] if dims[j] is None else leaves[present.index(j)][i]
              for j in present]
        full = dict(zip(present, sl))
        h = linear_recurrence(full[0], full[1], h0=full.get(2), method="loop")
        ref_loss = ref_loss + (h * G[i].conj()).real.sum()
    ref = torch.autograd.grad(ref_loss, leaves)
    for method in _methods(c["tv"]):
        if how == "func.grad":
            got = torch.func.grad(loss_of(method), argnums=tuple(range(len(present))))(
                *[ops[j] for j in present])
        else:
            fresh = [t.detach().clone().requires_grad_() for t in leaves]
            got = torch.autograd.grad(loss_of(method)(*fresh), fresh)
        for k, j in enumerate(present):
            if dims[j] is None:  # shared: the sum over the stack
                tol = _combined_tol(dtype, [t[kinds[j]] for t in targs], P)
                _assert_close(got[k], ref[k], tol)
            else:
                for i in range(P):
                    _assert_close(got[k][i], ref[k][i], tolerance(dtype, **targs[i][kinds[j]]))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")  # torch's jvp decomps
@pytest.mark.parametrize("method", ["chunked", "scan", "fft"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_vmap_of_grad_jacrev_jvp_hessian(method, dtype):
    """Per-problem gradients (vmap of grad), Jacobians by reverse and forward mode, and the
    Hessian (forward over reverse) agree with the same transforms of the reference loop."""
    from torch.func import grad, hessian, jacfwd, jacrev, jvp

    P, B, T, N = 3, 2, 9, 2
    probs = [_inputs(40 + i, B, T, N, dtype, False, 0.9, True) for i in range(P)]
    A, X, H0 = (torch.stack([p[j] for p in probs]) for j in range(3))
    G = _inputs(50, B, T, N, dtype, True, 1.0, False)[1]

    def loss(method):
        return lambda a, x, h0: (linear_recurrence(a, x, h0=h0, method=method)
                                 * G.conj()).real.sum()

    def close(got, ref, n_ops):
        scale = max(float(ref.abs().max()), 1e-300)
        _assert_close(got, ref, tolerance(dtype, n_ops=n_ops, cond=10.0 * T, scale=scale))

    pg = vmap(grad(loss(method), argnums=(0, 1, 2)))(A, X, H0)
    pr = vmap(grad(loss("loop"), argnums=(0, 1, 2)))(A, X, H0)
    for got, ref in zip(pg, pr):
        close(got, ref, 2 * T + B * T)
    a, x, h0 = probs[0]
    if dtype.is_complex:  # the Jacobians below are of real functions of real inputs
        a, x, h0 = a.real.contiguous(), x.real.contiguous(), h0.real.contiguous()
    f = lambda m: (lambda a, x, h0: linear_recurrence(a, x, h0=h0, method=m))  # noqa: E731
    for jac in (jacrev, jacfwd):
        for got, ref in zip(jac(f(method), argnums=(0, 1, 2))(a, x, h0),
                            jac(f("loop"), argnums=(0, 1, 2))(a, x, h0)):
            close(got, ref, 2 * T)
    ta, tx, th = (torch.randn_like(t) for t in (a, x, h0))
    (_, got), (_, ref) = (jvp(f(m), (a, x, h0), (ta, tx, th)) for m in (method, "loop"))
    close(got, ref, 2 * T)
    sq = lambda m: (lambda a: f(m)(a, x, h0).square().sum())  # noqa: E731
    close(hessian(sq(method))(a), hessian(sq("loop"))(a), 4 * T + B * T)


def test_vmap_nested_and_other_dims():
    """vmap of vmap (two stacking axes), in_dims/out_dims not 0, a real a with a complex x."""
    Q, P, B, T, N = 2, 3, 2, 11, 2
    a = torch.stack([torch.stack([_inputs(7 * q + p, B, T, N, torch.complex128, False, 0.95,
                                          False)[0] for p in range(P)]) for q in range(Q)])
    x = _inputs(99, B, T, N, torch.complex128, False, 0.9, False)[1]
    for method in ("chunked", "scan", "fft", "auto"):
        f = lambda a: linear_recurrence(a, x, method=method)  # noqa: E731
        out = vmap(vmap(f))(a)  # (Q, P, B, T, N)
        moved = vmap(f, in_dims=1, out_dims=3)(a[0].T)  # a as (N, P); out (B, T, N, P)
        for q in range(Q):
            for p in range(P):
                ref = linear_recurrence(a[q, p], x, method=method)
                tol = _tol(a[q, p], x, None)
                _assert_close(out[q, p], ref, tol)
                if q == 0:
                    _assert_close(moved[..., p], ref, tol)
        ar = a.real[0].contiguous()  # real a, complex x: promoted under vmap too
        got = vmap(f)(ar)
        assert got.dtype == torch.complex128
        for p in range(P):
            _assert_close(got[p], linear_recurrence(ar[p], x, method="loop"),
                          _tol(ar[p], x, None))


@pytest.mark.parametrize("batching", ["vmap over autograd.grad", "is_grads_batched"])
@pytest.mark.parametrize("tv", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_batched_cotangents(batching, tv, dtype):
    """The backward run with P batched cotangents (torch.func's vmap over a plain
    autograd.grad, or the legacy vmap of is_grads_batched=True): vector-Jacobian products
    equal a loop over the cotangents."""
    P, B, T, N = 3, 2, 13, 2
    a, x, h0 = (t.requires_grad_() for t in _inputs(60, B, T, N, dtype, tv, 0.95, True))
    G = torch.stack([_inputs(61 + i, B, T, N, dtype, True, 1.0, False)[1] for i in range(P)])
    hr = linear_recurrence(a, x, h0=h0, method="loop")
    ref = [torch.autograd.grad(hr, (a, x, h0), G[i], retain_graph=True) for i in range(P)]
    targs = [_grad_tol_args(a.detach(), x.detach(), h0.detach(), G[i]) for i in range(P)]
    for method in FAST:
        if method == "fft" and tv:
            continue
        h = linear_recurrence(a, x, h0=h0, method=method)
        if batching == "is_grads_batched":
            got = torch.autograd.grad(h, (a, x, h0), G, is_grads_batched=True)
        else:
            got = vmap(lambda g: torch.autograd.grad(h, (a, x, h0), g, retain_graph=True))(G)
        for i in range(P):
            for k, kind in enumerate(("a", "x", "x")):
                _assert_close(got[k][i], ref[i][k], tolerance(dtype, **targs[i][kind]))


def test_vmap_auto_chooses_for_the_folded_shapes(monkeypatch):
    """One problem's steps are tiny (auto: scan), the P stacked ones are not (chunked)."""
    from rnnmem.models import recurrence as R

    monkeypatch.setattr(R._native, "supports", lambda *ts: False)  # the torch kernels' choice
    seen = []
    kernel = R._forward_kernel
    monkeypatch.setattr(R, "_forward_kernel",
                        lambda method, *args: (seen.append(method), kernel(method, *args))[1])
    B, T, N = 1, 16, 2
    x = _inputs(70, B, T, N, torch.float64, False, 0.9, False)[1]
    A = torch.stack([_inputs(71 + i, B, T, N, torch.float64, False, 0.9, False)[0]
                     for i in range(4 * R._SCAN_MAX_BN_TV)])  # (P, N)
    assert choose_method(A[0], x) == "scan"
    folded = (A.repeat_interleave(B, 0)[:, None].expand(-1, T, N), x.expand(len(A), T, N))
    assert choose_method(*folded) == "chunked"
    out = vmap(lambda a: linear_recurrence(a, x))(A)
    assert seen == ["chunked"]
    for i in (0, len(A) // 2, len(A) - 1):
        _assert_close(out[i], _loop(A[i], x, None), _tol(A[i], x, None))
