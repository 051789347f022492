"""Linear recurrences :math:`h_t = a_t \\odot h_{t-1} + x_t`, a reference and fast methods.

The diagonal linear recurrence is the core of diagonal SSMs, S4D and the LRU (Gu et al.,
"On the parameterization and initialization of diagonal state space models", NeurIPS 2022;
Orvieto et al., "Resurrecting recurrent neural networks for long sequences", ICML 2023).
``loop`` is the readable reference; ``chunked``, ``scan`` and ``fft`` are faster methods with
the same signature, tested against it (kernels in :mod:`rnnmem.models._scan_kernels`).
"""

from __future__ import annotations

import torch

from ..errors import InvalidParameterError, ShapeError
from . import _buffers, _native
from . import _scan_kernels as _k

__all__ = ["linear_recurrence", "METHODS", "choose_method"]

#: the methods ``linear_recurrence`` accepts
METHODS = ("auto", "loop", "chunked", "scan", "fft", "native")


def _loop(a: torch.Tensor, x: torch.Tensor, h0: torch.Tensor | None) -> torch.Tensor:
    """Reference: one step at a time, differentiated by plain autograd."""
    B, T, N = x.shape
    h = torch.zeros(B, N, dtype=x.dtype, device=x.device) if h0 is None else h0  # (B, N)
    a_steps = a.unbind(1) if a.dim() == 3 else [a] * T
    out = []
    for a_t, x_t in zip(a_steps, x.unbind(1)):
        h = a_t * h + x_t
        out.append(h)
    return torch.stack(out, dim=1)  # (B, T, N)


# ---------------------------------------------------------------------- autograd

def _forward_kernel(method, a, x, h0):
    if method == "native":
        if _native.supports(a, x, h0):
            return _native.recurrence_forward(a, x, h0, _buffers.empty_like(x))
        method = "chunked"  # wrapped tensors (torch.func), subclasses, tracing
    if method == "chunked":
        B, T, N = x.shape
        return _k.chunked_forward(a, x, h0, _k.default_chunks(B, T, N, x.element_size(),
                                                              x.device))
    if method == "scan":
        return _k.scan_forward(a, x, h0)
    return _k.fft_forward(a, x, h0)


def _adjoint(method, a, g, h, h0, need_a):
    """``(dL/dx, dL/da)`` from ``g = dL/dh`` by the adjoint recurrence with ``method``."""
    B, T, N = g.shape
    if method == "native":
        if _native.supports(a, g, h, h0):
            gx = _buffers.empty_like(g)
            da = _buffers.empty_like(g) if need_a and a.dim() == 3 else None
            return _native.recurrence_adjoint(a, g, h if need_a else None, h0, gx, need_a, da)
        method = "chunked"
    if method == "chunked":
        K = _k.default_chunks(B, T, N, g.element_size(), g.device)
        if K <= 1:  # one fused in-place sweep, dL/da accumulated on the way
            return _k.adjoint_sequential(a, g, h, h0, need_a)
        gx = _k.chunked_reverse(a, g, K)
    elif method == "scan":
        gx = _k.scan_reverse(a, g)
    else:
        gx = _k.fft_reverse(a, g)
    da = _k.grad_coefficient(gx, h, h0, a.dim() == 3) if need_a else None
    return gx, da


def _functorch_wrapped(*ts) -> bool:
    """Whether any tensor is a :mod:`torch.func` wrapper (batched or grad-tracking), e.g.
    cotangents batched by ``vmap`` over ``torch.autograd.grad``: the in-place kernels
    (``out=`` views of ``unbind``) must not see those."""
    return any(t is not None and torch._C._functorch.is_functorch_wrapped_tensor(t)
               for t in ts)


def _legacy_batched(*ts) -> bool:
    """Whether any tensor is batched by the legacy vmap that
    ``torch.autograd.grad(..., is_grads_batched=True)`` uses: it knows no ``vmap`` rules of
    Functions either, so only plain operations (the reference loop) can run on it."""
    return any(t is not None and torch._C._functorch.is_legacy_batchedtensor(t) for t in ts)


class _LinearRecurrence(torch.autograd.Function):
    """Forward by a fast kernel; backward by the adjoint recurrence with the same kernel.

    With :math:`g_t = \\partial L/\\partial h_t` (PyTorch's conjugate-Wirtinger convention for
    complex tensors), :math:`\\bar g_t = g_t + \\overline{a_{t+1}}\\bar g_{t+1}` and

    .. math::

        \\frac{\\partial L}{\\partial x_t} = \\bar g_t,\\quad
        \\frac{\\partial L}{\\partial a_t} = \\bar g_t \\odot \\overline{h_{t-1}},\\quad
        \\frac{\\partial L}{\\partial h_0} = \\overline{a_0} \\odot \\bar g_0 .

    ``method`` is a fast method or ``"auto"`` (resolved by :func:`_fast_method` on the
    shapes the kernels actually see, so that under :func:`torch.func.vmap` the folded
    shapes decide). Written in the :mod:`torch.func` style (``forward`` without ``ctx``,
    ``setup_context``) with a ``vmap`` rule, so the fast kernels run under ``vmap``,
    ``functional_call`` and ``grad``: see :meth:`vmap`.
    """

    @staticmethod
    def forward(a, x, h0, method):
        return _forward_kernel(_fast_method(method, a, x), a, x, h0)

    @staticmethod
    def setup_context(ctx, inputs, output):
        a, x, h0, method = inputs
        ctx.method = _fast_method(method, a, x)
        ctx.save_for_backward(a, h0, output)
        ctx.save_for_forward(a, h0, output)

    @staticmethod
    def backward(ctx, g):
        a, h0, h = ctx.saved_tensors
        need_a, need_x, need_h0 = ctx.needs_input_grad[:3]
        tv = a.dim() == 3
        g = g.contiguous()
        legacy = _legacy_batched(a, h0, h, g)
        if torch.is_grad_enabled() or legacy or _functorch_wrapped(a, h0, h, g):
            # create_graph=True, or under a torch.func transform: a differentiable backward
            # built from this Function again (whose vmap rule handles batched tensors), or
            # from the reference loop under the legacy vmap
            gx = (_adjoint_reference if legacy else _adjoint_differentiable)(a, g, ctx.method)
            da = None
            if need_a:
                prev = torch.cat([torch.zeros_like(h[:, :1]) if h0 is None else h0[:, None],
                                  h[:, :-1]], dim=1)  # (B, T, N): h_{t-1}
                da = gx * prev.conj()
                if not tv:
                    da = da.sum((0, 1))
        else:
            gx, da = _adjoint(ctx.method, a, g, h, h0, need_a)
        dh0 = None
        if need_h0:
            dh0 = (a[:, 0] if tv else a).conj() * gx[:, 0]
        return da, (gx if need_x else None), dh0, None

    @staticmethod
    def jvp(ctx, ta, tx, th0, _):
        r"""Forward mode: the tangent obeys the same recurrence,
        :math:`\dot h_t = a_t \dot h_{t-1} + (\dot x_t + \dot a_t h_{t-1})`,
        :math:`\dot h_{-1} = \dot h_0`, run by the same kernel."""
        a, h0, h = ctx.saved_tensors
        drive = tx
        if ta is not None:
            prev = torch.cat([torch.zeros_like(h[:, :1]) if h0 is None else h0[:, None],
                              h[:, :-1]], dim=1)  # (B, T, N): h_{t-1}
            drive = ta * prev if drive is None else drive + ta * prev
        if drive is None:
            drive = torch.zeros_like(h)
        return _LinearRecurrence.apply(a, drive.contiguous(),
                                       None if th0 is None else th0.contiguous(), ctx.method)

    @staticmethod
    def vmap(info, in_dims, a, x, h0, method):
        r"""Under :func:`torch.func.vmap` over :math:`P` stacked problems: one recurrence.

        The vmapped dimension is folded into the batch axis, :math:`B \to P B`: unbatched
        operands are expanded, and a time-invariant ``a`` batched to :math:`(P, N)` becomes
        the time-varying coefficient ``(P B, T, N)``: its rows ``(P B, N)`` (one step's
        size) as a stride-0 view along time, which the kernels read one step at a time.
        The output ``(P B, T, N)`` is returned as ``(P, B, T, N)`` with the vmapped
        dimension first, so that the operations after it (a readout ``h @ C.T``) fold it
        into their rows without a copy (measured: the state-axis folding below, with its
        permuting copy of ``x`` and the vmapped dimension in the middle of the output,
        made a vmapped DiagonalSSM forward, B=1000, T=100, N=64, P=5, ~1.4x slower on
        the project CPU). ``fft`` needs a time-invariant coefficient: there a batched
        ``a`` is folded into the state axis instead, :math:`N \to P N` (``x`` copied to
        ``(B, T, P N)``). Every problem gets the recurrence a loop over the stack would
        compute; gradients flow through the folding.
        """
        P = info.batch_size
        da_, dx_, dh_ = in_dims[:3]

        def front(t, d):  # the vmapped dimension first
            return t if (t is None or d is None) else t.movedim(d, 0)

        a, x, h0 = front(a, da_), front(x, dx_), front(h0, dh_)
        B, T, N = x.shape[-3:]
        ti_batched = da_ is not None and a.dim() == 2  # (P, N)
        if ti_batched and method == "fft":  # (auto never picks fft)
            xs = x.permute(1, 2, 0, 3) if dx_ is not None else x[:, :, None].expand(
                B, T, P, N)  # (B, T, P, N)
            hs = None
            if h0 is not None:
                hs = (h0.permute(1, 0, 2) if dh_ is not None else h0[:, None].expand(
                    B, P, N)).reshape(B, P * N)  # (B, P N)
            h = _LinearRecurrence.apply(a.reshape(P * N), xs.reshape(B, T, P * N), hs,
                                        method)  # (B, T, P N)
            return h.view(B, T, P, N), 2

        def fold(t, d):  # (P, B, ...) -> (P B, ...), expanding an unbatched operand
            if d is None:
                t = t.expand(P, *t.shape)
            return t.reshape(P * t.shape[1], *t.shape[2:]).contiguous()

        if ti_batched:  # (P, N) -> (P B, N) rows -> (P B, T, N), stride 0 along time
            ab = a.repeat_interleave(B, dim=0)[:, None].expand(P * B, T, N)
        elif a.dim() == 3 or da_ is not None:
            ab = fold(a, da_)
        else:
            ab = a  # (N,) shared by all problems
        h = _LinearRecurrence.apply(ab, fold(x, dx_), None if h0 is None else fold(h0, dh_),
                                    method)  # (P B, T, N)
        return h.view(P, B, T, N), 0


def _adjoint_differentiable(a, g, method):
    """The adjoint recurrence through ``_LinearRecurrence`` on time-reversed tensors."""
    rc = _k.reverse_coefficients(a)
    if a.dim() == 3:
        rc = rc.flip(1).contiguous()
    return _LinearRecurrence.apply(rc, g.flip(1).contiguous(), None, method).flip(1)


def _adjoint_reference(a, g, method=None):
    """The adjoint recurrence by the reference loop (plain operations only)."""
    rc = _k.reverse_coefficients(a)
    return _loop(rc.flip(1) if a.dim() == 3 else rc, g.flip(1), None).flip(1)


# ---------------------------------------------------------------------- dispatch

def choose_method(a: torch.Tensor, x: torch.Tensor) -> str:
    """The method ``"auto"`` resolves to for these inputs (see :func:`linear_recurrence`).

    On CPU: ``loop`` for the shortest sequences (nothing amortises the setup), then
    ``native`` where the compiled kernels are available (:mod:`rnnmem.models._native`: a C
    compiler on the machine, ``RNNMEM_NATIVE`` not 0) for plain tensors of a supported
    dtype; otherwise ``scan`` when each of its :math:`\\log_2 T` whole-tensor levels is tiny
    (op count dominates), else ``chunked``. Elsewhere (not measured: no accelerator was
    available) ``chunked``.
    """
    B, T, N = x.shape
    tv = a.dim() == 3
    if T <= (_LOOP_MAX_T_TV if tv else _LOOP_MAX_T):
        return "loop"
    if x.device.type != "cpu":
        return "chunked"
    if _native.supports(a, x):
        return "native"
    if (B * N <= (_SCAN_MAX_BN_TV if tv else _SCAN_MAX_BN)
            and B * N * T <= (_SCAN_MAX_WORK_TV if tv else _SCAN_MAX_WORK)):
        return "scan"
    return "chunked"


def _fast_method(method: str, a: torch.Tensor, x: torch.Tensor) -> str:
    """``method`` itself, or for ``"auto"`` the choice of :func:`choose_method` among the
    kernels of :class:`_LinearRecurrence` (``chunked`` where it would pick ``loop``)."""
    if method != "auto":
        return method
    m = choose_method(a, x)
    return "chunked" if m == "loop" else m


# crossovers measured on the project's 2-core CPU (see linear_recurrence, Notes)
_LOOP_MAX_T = 4
_LOOP_MAX_T_TV = 8
_SCAN_MAX_BN = 1024
_SCAN_MAX_BN_TV = 256
_SCAN_MAX_WORK = 1 << 18
_SCAN_MAX_WORK_TV = 1 << 16


def _check(a, x, h0, method):
    if not isinstance(x, torch.Tensor) or not isinstance(a, torch.Tensor):
        raise ShapeError("a and x must be torch tensors")
    if x.dim() != 3:
        raise ShapeError(f"x must be (B, T, N), got shape {tuple(x.shape)}")
    if a.dim() not in (1, 3) or a.shape[-1] != x.shape[-1] or (
            a.dim() == 3 and a.shape != x.shape):
        raise ShapeError(f"a must be (N,) or (B, T, N) matching x {tuple(x.shape)}, "
                         f"got {tuple(a.shape)}")
    if h0 is not None:
        if not isinstance(h0, torch.Tensor) or h0.shape != (x.shape[0], x.shape[2]):
            raise ShapeError(f"h0 must be (B, N) = {(x.shape[0], x.shape[2])}, got "
                             f"{tuple(getattr(h0, 'shape', ()))}")
    if method not in METHODS:
        raise InvalidParameterError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    if method == "native":
        if x.device.type != "cpu" or not _native.available():
            why = (f"x is on {x.device}" if x.device.type != "cpu" else _native.reason())
            raise InvalidParameterError(f"method 'native' (compiled CPU kernels) cannot run: "
                                        f"{why}; use 'auto' or 'chunked'")
    if method == "fft" and a.dim() == 3:
        raise InvalidParameterError("method 'fft' needs a time-invariant a of shape (N,); "
                                    f"got a time-varying a of shape {tuple(a.shape)}")


def linear_recurrence(a: torch.Tensor, x: torch.Tensor, *, h0: torch.Tensor | None = None,
                      method: str = "auto") -> torch.Tensor:
    """Compute :math:`h_t = a_t \\odot h_{t-1} + x_t`, :math:`h_{-1} = h_0` (zero by default).

    .. math::

        h_t = \\Big(\\prod_{s=0}^{t} a_s\\Big) h_0
              + \\sum_{s=0}^{t} \\Big(\\prod_{l=s+1}^{t} a_l\\Big) x_s

    the diagonal linear recurrence of diagonal SSMs / S4D / LRU (Gu et al. 2022; Orvieto
    et al. 2023). Real or complex; all methods are differentiable in ``a``, ``x`` and ``h0``.

    Parameters
    ----------
    a : tensor (N,) time-invariant or (B, T, N) time-varying; real or complex
    x : tensor (B, T, N)
    h0 : tensor (B, N), optional
    method : {"auto", "loop", "chunked", "scan", "fft", "native"}
        ``loop``: the reference, one step at a time with plain autograd (readable, slow to
        differentiate). ``native``: compiled C kernels (CPU; float32/64, complex64/128):
        one pass over time per batch row, the adjoint fused with
        :math:`\\partial L/\\partial a`, rows split over ``torch.get_num_threads()``
        threads; built on first use with the system C compiler and cached
        (:mod:`rnnmem.models._native`; ``RNNMEM_NATIVE=0`` turns it off). Its real forward
        is bit-for-bit the loop's. Under ``torch.func`` wrappers, for tensor subclasses,
        while ``torch.compile`` traces and for other dtypes it runs ``chunked``; asked for
        explicitly where it cannot build (no compiler) or off the CPU it raises.
        ``chunked``: three-phase chunked scan written in place (the fast torch-only
        method on CPU; see :mod:`rnnmem.models._scan_kernels`), with no quotients of
        cumulative products, so it cannot overflow for :math:`|a|\\le 1`. ``scan``:
        Hillis–Steele parallel scan, :math:`O(T\\log T)` work in :math:`\\log_2 T` tensor
        operations. ``fft``: time-invariant ``a`` only, a zero-padded FFT convolution with
        the kernel :math:`a^j`; see the accuracy note. ``auto``: chosen by
        :func:`choose_method` from the crossovers below. The non-reference methods use a
        custom backward: the adjoint recurrence
        :math:`\\bar g_t = g_t + \\overline{a_{t+1}}\\bar g_{t+1}` by the same kernel, then
        :math:`\\partial_x L = \\bar g`, :math:`\\partial_{a_t} L = \\bar g_t\\overline{h_{t-1}}`;
        double backward (``create_graph=True``) is supported.

        Every method works under the :mod:`torch.func` transforms (``vmap``, ``grad``,
        ``vjp``/``jacrev``, ``jvp``/``jacfwd``, ``hessian``, ``functional_call``) and
        with batched cotangents (``is_grads_batched=True``). Under ``vmap`` the fast
        methods run once on the stacked problems (the vmapped dimension folded into the
        batch axis, see ``_LinearRecurrence.vmap``), and ``auto`` chooses for the folded
        shapes; forward mode runs the tangent recurrence
        :math:`\\dot h_t = a_t \\dot h_{t-1} + \\dot x_t + \\dot a_t h_{t-1}` by the
        same kernel.

    Returns
    -------
    h : tensor (B, T, N), dtype the promotion of those of ``a``, ``x`` and ``h0``

    Raises
    ------
    ShapeError
        ``x`` not 3-D, ``a`` neither ``(N,)`` nor ``x.shape``, ``h0`` not ``(B, N)``.
    InvalidParameterError
        unknown ``method``; ``fft`` with a time-varying ``a``; ``native`` off the CPU or
        where the compiled kernels cannot be built (the reason is in the message).

    Notes
    -----
    *Accuracy.* ``loop``, ``chunked`` and ``scan`` form only sums and products of the
    inputs; their errors are bounded like a recursive summation, by about
    :math:`u\\,T\\,\\max_t \\tilde h_t` with :math:`\\tilde h` the recurrence run on
    :math:`|a|, |x|`. ``fft`` has a *normwise* error of about
    :math:`u \\log_2 T \\,\\|k\\|_1 \\max|x|` with :math:`\\|k\\|_1 \\approx 1/(1-|a|)`: entries
    of ``h`` much smaller than that (e.g. after a long decay) have a large *relative* error,
    and for :math:`|a| \\to 1` with long ``T`` (or in float32, or :math:`|a|>1`) the error
    grows accordingly; ``auto`` never picks it. Half-precision inputs are transformed in
    float32. Inputs are not scanned for NaN/inf here (a whole extra read of ``x``); models
    validate their inputs (:func:`rnnmem.models.base.check_input`).

    *Crossovers* (``auto``, :func:`choose_method`). Forward + backward (gradients of ``a``
    and ``x``), float32, ``|a|`` in [0.5, 0.99], minimum of 7 interleaved repetitions, one
    intra-op thread (the 2 cores were shared with other jobs, load ~2.3; with two threads
    large steps run up to ~1.5x faster when the machine is quiet, op-count-bound cells do
    not change), ``torch`` 2.13 CPU, by ``benchmarks/bench_recurrence.py`` (crossover
    rows). Times in ms, time-invariant ``a`` (time-varying in brackets; so is ``auto``'s
    pick where it differs):

    ======  ======  ==============  ==============  ==============  ==============
    B*N     T       loop            chunked         scan            auto
    ======  ======  ==============  ==============  ==============  ==============
    16      2       0.18 (0.17)     0.24 (0.20)     0.28 (0.25)     loop
    16      8       0.31 (0.28)     0.38 (0.41)     0.28 (0.37)     scan (loop)
    16      128     3.2 (2.5)       0.93 (0.91)     0.46 (0.69)     scan
    16      4096    105 (132)       3.5 (4.1)       1.3 (2.4)       scan
    256     512     22 (13)         2.6 (2.2)       2.0 (3.9)       scan (chunked)
    256     4096    166 (150)       9.7 (10.3)      14 (45)         chunked
    1024    64      3.0 (2.9)       1.4 (1.6)       1.0 (1.7)       scan (chunked)
    1024    1024    40 (33)         7.9 (7.8)       17 (34)         chunked
    4096    8       0.41 (0.45)     0.47 (0.58)     0.39 (0.85)     chunked (loop)
    4096    1024    57 (52)         20 (29)         98 (173)        chunked
    32768   256     37 (50)         25 (29)         150 (395)       chunked
    ======  ======  ==============  ==============  ==============  ==============

    Near the boundaries the losers are within ~30 %. ``fft`` is never the fastest on this
    CPU: one ``torch.fft`` call alone costs 3-8 ms here, and its work is
    :math:`O(T \\log T)` with complex arithmetic.

    *Speed at B=128, N=256, T=1024 (float32, forward + backward, 2 threads).* Every time
    step already holds 32 768 elements, so the reference loop is itself not far from
    memory-bound there. ``chunked`` is one in-place sweep (no ``stack``, no per-step autograd
    nodes) and a fused adjoint sweep. Measured (2 shared cores, load 3-4; floor = bytes
    moved / ``copy_`` bandwidth, 5 tensors time-invariant, 8 time-varying):

    ===============================  ===========  =========  ==========  =========
    run                              TI vs loop   TI/floor   TV vs loop  TV/floor
    ===============================  ===========  =========  ==========  =========
    ``THP_MEM_ALLOC_ENABLE=1``       15-19x       2.7-3.5x   1.5-2.7x    2.8-3.2x
    default (4 KiB page faults)      4.1-5.5x     6-7x       1.5-2.2x    3.3-8x
    ===============================  ===========  =========  ==========  =========

    Without transparent huge pages a fresh 128 MiB tensor costs ~6x a copy into existing
    memory here (page faults), and the outputs of any method are fresh tensors: against the
    allocating copy bandwidth ``chunked`` is at 0.4-1.4x. Since issue 14 the kernels write
    their outputs (``h``, ``dL/dx``, a time-varying ``dL/da``) into buffers of
    :mod:`rnnmem.models._buffers`, reused once nothing references them, so a training
    loop pays these page faults once, not every step (measured: the in-place forward 34 ms
    vs 65 ms into fresh memory, 2 threads; forward + backward 0.107 s vs 0.194-0.200 s CPU
    time with fresh buffers, one thread, load ~10); ``benchmarks`` section (g) times both. The time-varying loop's backward
    has no reductions and is within ~5-8x of the floor itself, so 10x over it is not
    reachable by any method; the time-invariant loop pays 1024 batch reductions for
    ``dL/da``. Where steps are small the gains are large: B=4, N=16, T=1e4: 37-52x
    (``chunked``), 44-50x (``scan``). Cost exponent in T over 1e2..1e5 at B=4, N=16:
    0.58-0.66 for ``chunked`` (fixed costs dominate short T; 0.86 between 1e4 and 1e5).
    Reproduce: ``python -m benchmarks.bench_recurrence``.
    """
    _check(a, x, h0, method)
    dtype = torch.promote_types(a.dtype, x.dtype)
    if h0 is not None:
        dtype = torch.promote_types(dtype, h0.dtype)
    if not (dtype.is_floating_point or dtype.is_complex):
        dtype = torch.promote_types(dtype, torch.get_default_dtype())
    a, x = a.to(dtype), x.to(dtype)
    h0 = None if h0 is None else h0.to(dtype)
    if x.shape[1] == 0:
        return x.clone()  # (B, 0, N)
    if method == "loop" or (method == "auto" and choose_method(a, x) == "loop"):
        return _loop(a, x, h0)
    # "auto" is passed on: under vmap the kernels see folded shapes, and choose for those
    return _LinearRecurrence.apply(a.contiguous(), x.contiguous(),
                                   None if h0 is None else h0.contiguous(), method)
