"""Kernels of the linear recurrence :math:`h_t = c_t \\odot h_{t-1} + x_t` (no autograd).

Private helpers of :mod:`rnnmem.models.recurrence`; they assume validated, contiguous inputs
of one common dtype: ``x`` is ``(B, T, N)``, the coefficient ``c`` is ``(N,)``
(time-invariant) or ``(B, T, N)`` (time-varying), the initial state ``h0`` is ``(B, N)`` or
``None`` (zero). Every kernel comes with its *reverse* companion, which computes the
adjoint recurrence used by the backward pass,

.. math::

    \\bar g_t = g_t + \\overline{a_{t+1}} \\odot \\bar g_{t+1}, \\qquad \\bar g_T = 0,

i.e. the same recurrence run backwards in time on the conjugate coefficients shifted by one
step (the adjoint of a first-order linear recurrence; e.g. Martin & Cundy, "Parallelizing
linear recurrent neural nets over sequence length", ICLR 2018, Sec. 3).

Three kernels:

``chunked``
    the sequence is cut into ``K`` chunks of length ``C`` processed *together*
    (vectorised over ``(B, K, N)``) in three phases (reduce, carry, scan):

    1. chunk end states from zero, :math:`s_k = \\sum_{i} (\\prod_{l>i} c_{kl}) x_{ki}`,
       and chunk products :math:`p_k = \\prod_i c_{ki}`, by a sequential sweep of length
       ``C``;
    2. the carries entering each chunk, :math:`q_k = p_{k-1} q_{k-1} + s_{k-1}`,
       :math:`q_0 = h_0` (``K`` sequential steps on ``(B, N)``);
    3. the recurrence inside every chunk from its carry, written straight into the output
       (``C`` sequential steps on ``(B, K, N)``).

    Only products of the coefficients are formed, never quotients: unlike the
    cumulative-product formulation :math:`h_t = P_t \\sum_{s\\le t} x_s / P_s` (with
    :math:`P_t = \\prod_{l\\le t} a_l`), which overflows as soon as :math:`|P_s|` underflows
    (:math:`|a|` small, :math:`T` long), nothing here can overflow when :math:`|a|\\le 1`,
    and an underflowing product only drops a term below the roundoff of the result. With
    ``K = 1`` this is the plain sequential loop written in place (no stack, no copies);
    ``K > 1`` trades one extra read of ``x`` for ``~2T/K + K`` instead of ``T`` Python-level
    steps, which pays when a step holds few elements.
``scan``
    Hillis–Steele inclusive scan on the pairs :math:`(c, x)` with the associative operator
    :math:`(c_1, x_1) \\bullet (c_2, x_2) = (c_1 c_2, c_2 x_1 + x_2)`
    (Hillis & Steele, CACM 1986; Blelloch 1990): :math:`\\lceil\\log_2 T\\rceil` levels
    of whole-tensor operations, :math:`O(T \\log T)` work.
``fft``
    time-invariant coefficient only: :math:`h = k * x` with the kernel
    :math:`k_j = a^j` (a causal convolution), computed with a zero-padded FFT of length
    :math:`\\ge 2T - 1`, plus :math:`a^{t+1} h_0`.
"""

from __future__ import annotations

import math

import torch

from . import _buffers

__all__ = [
    "chunked_forward", "chunked_reverse", "scan_forward", "scan_reverse", "fft_forward",
    "fft_reverse", "default_chunks", "reverse_coefficients", "grad_coefficient",
    "adjoint_sequential",
]

#: bytes one vectorised step of ``chunked`` may touch before it falls out of cache; with
#: ``B * N * itemsize`` above this a single chunk (the in-place sequential loop) is used.
#: Measured on the 2-core CPU of the project machine (see ``linear_recurrence``).
STEP_BYTES_CPU = 1 << 18
#: on accelerators the per-step launch cost dominates; let steps grow large (not measured).
STEP_BYTES_ACCEL = 1 << 26
#: fewer chunks than this fitting in the budget: chunking does not pay, use one (measured).
MIN_CHUNKS = 8


def default_chunks(B: int, T: int, N: int, itemsize: int, device: torch.device) -> int:
    """The number of chunks ``K`` of ``chunked``: :math:`\\sqrt{2T}` minimises the
    ``2T/K + K`` sequential steps, capped so that one vectorised step ``(B, K, N)`` stays
    within :data:`STEP_BYTES_CPU` bytes (the cache), and at least 1."""
    budget = STEP_BYTES_CPU if device.type == "cpu" else STEP_BYTES_ACCEL
    k_cache = budget // max(1, B * N * itemsize)
    if k_cache < MIN_CHUNKS:
        return 1
    k_steps = math.isqrt(2 * T)
    return int(max(1, min(k_cache, k_steps, T // 2)))


# --------------------------------------------------------------------------- chunked

def _sequential(coefs, xs, outs, prev, order):
    """outs[t] = coefs[t] * prev + xs[t] for t in ``order`` (``prev`` None: zero state).

    ``xs``, ``outs`` (and ``coefs`` when time-varying) are lists of per-step views from
    ``unbind`` (cheaper than indexing inside the loop); ``coefs`` may be one tensor (N,).
    """
    shared = isinstance(coefs, torch.Tensor)
    for t in order:
        if prev is None:
            outs[t].copy_(xs[t])
        else:
            torch.addcmul(xs[t], coefs if shared else coefs[t], prev, out=outs[t])
        prev = outs[t]
    return prev


def _chunked(c: torch.Tensor, x: torch.Tensor, h0, K: int, reverse: bool) -> torch.Tensor:
    """y_t = c_t * y_prev + x_t in processing order (forward, or reverse: prev = t + 1).

    ``c`` is ``(N,)`` or ``(B, T, N)`` and holds, at position ``t``, the coefficient that
    multiplies the state coming from the previous position in processing order.
    """
    B, T, N = x.shape
    tv = c.dim() == 3
    out = _buffers.empty_like(x)  # (B, T, N), reused memory where possible
    K = max(1, min(int(K), T // 2)) if T >= 2 else 1
    if K == 1:
        order = range(T - 1, -1, -1) if reverse else range(T)
        _sequential(c.unbind(1) if tv else c, x.unbind(1), out.unbind(1), h0, order)
        return out
    C = T // K
    M = K * C
    lo = T - M if reverse else 0  # main part [lo, lo + M); the tail holds the rest
    xs = x[:, lo:lo + M].view(B, K, C, N).unbind(2)  # C views (B, K, N)
    os = out[:, lo:lo + M].view(B, K, C, N).unbind(2)
    cs = c[:, lo:lo + M].view(B, K, C, N).unbind(2) if tv else [c] * C
    inner = list(range(C - 1, -1, -1)) if reverse else list(range(C))
    # phase 1: end state of each chunk from zero, and the chunk's coefficient product
    s = xs[inner[0]].clone()  # (B, K, N)
    p = cs[inner[0]].clone() if tv else None
    for i in inner[1:]:
        torch.addcmul(xs[i], cs[i], s, out=s)
        if tv:
            p.mul_(cs[i])
    if not tv:
        p = _int_power(c, C)  # (N,)
    # phase 2: carries entering every chunk, in processing order
    q = torch.empty_like(s)  # (B, K, N)
    chunks = list(range(K - 1, -1, -1)) if reverse else list(range(K))
    first = chunks[0]
    if h0 is None:
        q[:, first].zero_()
    else:
        q[:, first].copy_(h0)
    for j, k in zip(chunks[:-1], chunks[1:]):
        torch.addcmul(s[:, j], p[:, j] if tv else p, q[:, j], out=q[:, k])
    # phase 3: the recurrence inside each chunk from its carry, into the output
    prev = q
    for i in inner:
        torch.addcmul(xs[i], cs[i], prev, out=os[i])
        prev = os[i]
    # tail (fewer than K steps) from the last state of the main part
    if M < T:
        t0, t1 = (0, lo) if reverse else (M, T)
        cu = c[:, t0:t1].unbind(1) if tv else c
        start = out[:, lo] if reverse else out[:, M - 1]
        order = range(t1 - t0 - 1, -1, -1) if reverse else range(t1 - t0)
        _sequential(cu, x[:, t0:t1].unbind(1), out[:, t0:t1].unbind(1), start, order)
    return out


def _int_power(c: torch.Tensor, n: int) -> torch.Tensor:
    """c**n by repeated squaring (exact for n = 0, no log/exp, no special case at c = 0)."""
    result = torch.ones_like(c)
    base = c.clone()
    while n:
        if n & 1:
            result = result * base
        n >>= 1
        if n:
            base = base * base
    return result


def reverse_coefficients(a: torch.Tensor) -> torch.Tensor:
    """Coefficients of the adjoint recurrence in *original* time: ``conj(a_{t+1})`` at ``t``
    (zero at ``T - 1``, where it multiplies the zero state beyond the end)."""
    if a.dim() == 1:
        return a.conj().resolve_conj()
    out = torch.empty_like(a)
    out[:, :-1] = a[:, 1:].conj()
    out[:, -1] = 0
    return out


def chunked_forward(a, x, h0, K):
    return _chunked(a, x, h0, K, reverse=False)


def chunked_reverse(a, g, K):
    """Adjoint: :math:`\\bar g_t = g_t + \\overline{a_{t+1}}\\,\\bar g_{t+1}`."""
    B, T, N = g.shape
    if K <= 1 or T < 4:
        return adjoint_sequential(a, g, None, None, need_a=False)[0]
    return _chunked(reverse_coefficients(a), g, None, K, reverse=True)


def adjoint_sequential(a, g, h, h0, need_a: bool):
    """The adjoint sweep and, fused into it, :math:`\\partial L/\\partial a`.

    One backward pass over time: :math:`\\bar g_t = g_t + \\overline{a_{t+1}}\\bar g_{t+1}`
    written in place, and, while the step :math:`\\bar g_t` is still in cache,
    :math:`\\bar g_t \\overline{h_{t-1}}` (accumulated over batch and time for a
    time-invariant ``a``). Indexes ``a[:, t + 1]`` directly (no shifted copy of ``a``).
    Returns ``(gx, da)`` (``da`` None unless ``need_a``).
    """
    B, T, N = g.shape
    tv = a.dim() == 3
    gx = _buffers.empty_like(g)  # (B, T, N), reused memory where possible
    gs, os = g.unbind(1), gx.unbind(1)
    if tv:
        ac = a.conj().unbind(1)
    else:
        ac = a.conj().resolve_conj()
    da = das = acc = hs = None
    if need_a:
        hs = h.conj().unbind(1)
        if tv:
            da = _buffers.empty_like(g)
            das = da.unbind(1)
        else:
            acc = torch.zeros(B, N, dtype=g.dtype, device=g.device)  # (B, N)
    prev = None
    for t in range(T - 1, -1, -1):
        if prev is None:
            os[t].copy_(gs[t])
        else:
            torch.addcmul(gs[t], ac[t + 1] if tv else ac, prev, out=os[t])
        prev = os[t]
        if need_a:
            hp = hs[t - 1] if t > 0 else (None if h0 is None else h0.conj())
            if tv:
                if hp is None:
                    das[0].zero_()
                else:
                    torch.mul(prev, hp, out=das[t])
            elif hp is not None:
                acc.addcmul_(prev, hp)
    if need_a and not tv:
        da = acc.sum(0)  # (N,)
    return gx, da


def grad_coefficient(gx: torch.Tensor, h: torch.Tensor, h0, time_varying: bool):
    """:math:`\\partial L/\\partial a_t = \\bar g_t \\odot \\overline{h_{t-1}}` (summed over
    batch and time when ``a`` is time-invariant), with :math:`h_{-1} = h_0`."""
    if time_varying:
        da = _buffers.empty_like(gx)
        torch.mul(gx[:, 1:], h[:, :-1].conj(), out=da[:, 1:])
        if h0 is None:
            da[:, 0].zero_()
        else:
            torch.mul(gx[:, 0], h0.conj(), out=da[:, 0])
        return da
    B, T, N = gx.shape
    da = torch.zeros(N, dtype=gx.dtype, device=gx.device)  # (N,)
    if h0 is not None:
        da += (gx[:, 0] * h0.conj()).sum(0)
    # blocks of time whose (B, Tb, N) temporary stays within the cache budget
    budget = STEP_BYTES_CPU if gx.device.type == "cpu" else STEP_BYTES_ACCEL
    Tb = max(1, budget // max(1, B * N * gx.element_size()))
    for t0 in range(1, T, Tb):
        t1 = min(T, t0 + Tb)
        da += (gx[:, t0:t1] * h[:, t0 - 1:t1 - 1].conj()).sum((0, 1))
    return da


# --------------------------------------------------------------------------- scan

def _hillis_steele(c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Inclusive scan of (c, x) along dim 1 (forward time), zero initial state."""
    y = x.clone()  # (B, T, N)
    T = x.shape[1]
    tv = c.dim() == 3
    A = c.clone() if tv else c
    d = 1
    while d < T:
        if tv:
            upd = A[:, d:] * y[:, :-d]  # (B, T - d, N)
            A_new = A[:, d:] * A[:, :-d]
            A[:, d:] = A_new
        else:
            upd = y[:, :-d] * A  # A = c**d
            A = A * A
        y[:, d:] += upd
        d *= 2
    return y


def scan_forward(a, x, h0):
    if h0 is not None:
        x = x.clone()
        x[:, 0] += (a[:, 0] if a.dim() == 3 else a) * h0
    return _hillis_steele(a, x)


def scan_reverse(a, g):
    rc = reverse_coefficients(a)
    rcf = rc.flip(1) if rc.dim() == 3 else rc
    return _hillis_steele(rcf, g.flip(1)).flip(1)


# --------------------------------------------------------------------------- fft

def _powers(a: torch.Tensor, j0: int, j1: int) -> torch.Tensor:
    """``a**j`` for ``j0 <= j < j1``, shape (j1 - j0, N), from the real power of the modulus
    and the multiplied phase (so that ``0**0 = 1`` also for complex ``a``)."""
    real = a.real.dtype if a.is_complex() else a.dtype
    j = torch.arange(j0, j1, device=a.device, dtype=real).unsqueeze(1)  # (J, 1)
    if not a.is_complex():
        return torch.pow(a.unsqueeze(0), j)  # integral exponents: negative a is fine
    return torch.polar(torch.pow(a.abs().unsqueeze(0), j), j * a.angle().unsqueeze(0))


def _fft_conv(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Causal convolution of x (B, T, N) with k_j = a^j along time, zero-padded FFT."""
    B, T, N = x.shape
    work = x.dtype if x.dtype in (torch.float32, torch.float64, torch.complex64,
                                  torch.complex128) else torch.float32
    xw, aw = x.to(work), a.to(work)
    n = 1 << max(0, (2 * T - 1 - 1).bit_length())  # power of two >= 2T - 1
    k = _powers(aw, 0, T)  # (T, N): a**j
    if aw.is_complex():
        h = torch.fft.ifft(torch.fft.fft(xw, n=n, dim=1) * torch.fft.fft(k, n=n, dim=0), dim=1)
    else:
        h = torch.fft.irfft(torch.fft.rfft(xw, n=n, dim=1) * torch.fft.rfft(k, n=n, dim=0),
                            n=n, dim=1)
    return h[:, :T].to(x.dtype).contiguous()


def fft_forward(a, x, h0):
    h = _fft_conv(a, x)
    if h0 is not None:
        h += _powers(a, 1, x.shape[1] + 1).unsqueeze(0) * h0.unsqueeze(1)  # a**(t+1) h0
    return h


def fft_reverse(a, g):
    return _fft_conv(a.conj().resolve_conj(), g.flip(1)).flip(1)
