"""Reuse of large CPU buffers (an allocator detail of the recurrence kernels and of the
stack states that :mod:`rnnmem.models.lstm_sequence` keeps for its backward pass).

Why: on Linux a fresh tensor of more than a few MiB is a fresh ``mmap``; its first write
faults in every 4 KiB page (the kernel zeroes each one). Measured on the project CPU (2
shared cores, B=128, T=1024, N=256 float32, 128 MiB): the in-place sequential forward of
:func:`rnnmem.models.linear_recurrence` took 34 ms into existing memory and 65 ms into a
fresh tensor, i.e. the page faults cost as much as the recurrence. :func:`empty_like`
hands out a buffer this module already owns when *nobody else references it any more*
(its storage's reference count, read under a lock, is the pool's own), so a training loop
that frees the previous step's output before the next forward reuses the same memory:
results are bit-for-bit those of a fresh ``torch.empty_like`` (every element is written
by the kernels before it is read). :func:`arena` does the same for one flat buffer that a
loop cuts into many views (a view keeps the whole arena in use).

Huge pages were tried and dropped: advising a new pool buffer ``MADV_HUGEPAGE`` (the
per-buffer form of PyTorch's ``THP_MEM_ALLOC_ENABLE=1``) gave the same steady-state time
here and made the first call 5-7x slower (2.7-2.9 s instead of 0.4-0.6 s, B=128, T=1024,
N=256, forward + backward: the kernel compacts memory synchronously to find 2 MiB pages on
a busy machine).

Limits: only CPU tensors of at least :data:`MIN_BYTES` (a caller of :func:`arena` may
set its own threshold), only plain dense tensors (no
tensor subclasses -- fake tensors under ``torch.compile`` -- and nothing while compiling),
at most :data:`MAX_BYTES` held in all; :func:`clear` returns them to the system. Without
the (private) storage reference count of this torch version the pool is off and
:func:`empty_like` is ``torch.empty_like``.
"""

from __future__ import annotations

import threading

import torch

__all__ = ["empty_like", "arena", "clear", "held_bytes", "MIN_BYTES", "MAX_BYTES"]

#: smallest tensor worth pooling (below it, malloc's own free lists reuse memory)
MIN_BYTES = 8 << 20
#: most bytes the pool keeps in all (a new buffer beyond it is not pooled)
MAX_BYTES = 2 << 30

_lock = threading.Lock()
_pool: dict[tuple, list[torch.Tensor]] = {}
_use_count = getattr(torch._C, "_storage_Use_Count", None)


def _poolable(x: torch.Tensor, nbytes: int | None = None, min_bytes: int | None = None) -> bool:
    """Whether a buffer like ``x`` (``nbytes`` long, default ``x``'s) may come from the
    pool: a plain CPU tensor of at least ``min_bytes`` (default :data:`MIN_BYTES`), not
    while compiling."""
    if _use_count is None or type(x) is not torch.Tensor or x.device.type != "cpu":
        return False
    nbytes = x.numel() * x.element_size() if nbytes is None else nbytes
    if x.layout != torch.strided or nbytes < (MIN_BYTES if min_bytes is None else min_bytes):
        return False
    compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None)
    return not (compiling is not None and compiling())


def _free(buf: torch.Tensor) -> bool:
    """Whether only the pool references ``buf``'s storage (the temporary Python storage
    object made here counts one)."""
    return _use_count(buf.untyped_storage()._cdata) <= 2


def _alias(buf: torch.Tensor, shape) -> torch.Tensor:
    """A new tensor (not a view: autograd sees a fresh tensor) on ``buf``'s storage (its
    start), of the contiguous ``shape``."""
    return torch.empty(0, dtype=buf.dtype).set_(buf.untyped_storage(), 0, shape)


def empty_like(x: torch.Tensor) -> torch.Tensor:
    """``torch.empty_like(x, memory_format=torch.contiguous_format)``, from a pooled buffer
    where possible (see the module docstring)."""
    if not _poolable(x):
        return torch.empty_like(x, memory_format=torch.contiguous_format)
    key = (x.dtype, x.numel())
    with _lock:
        for buf in _pool.get(key, ()):
            if _free(buf):
                return _alias(buf, x.shape)
        nbytes = x.numel() * x.element_size()
        if held_bytes() + nbytes > MAX_BYTES:
            return torch.empty_like(x, memory_format=torch.contiguous_format)
        buf = torch.empty(x.numel(), dtype=x.dtype)
        _pool.setdefault(key, []).append(buf)
        return _alias(buf, x.shape)


def arena(like: torch.Tensor, numel: int, min_bytes: int | None = None) -> torch.Tensor:
    """A flat contiguous tensor of ``numel`` elements of ``like``'s dtype, to be cut into
    many views (the states a loop keeps for its backward pass). From ``min_bytes``
    (default :data:`MIN_BYTES`) on, it comes from the pool: the smallest free pooled arena
    of at least ``numel`` elements (its prefix), else a new one, which replaces the free
    arenas smaller than it (so a loop run at many lengths keeps about one arena, of its
    largest size). Below it, a fresh ``like.new_empty(numel)``."""
    nbytes = numel * like.element_size()
    if not _poolable(like, nbytes, min_bytes):
        return like.new_empty(numel)
    key = ("arena", like.dtype)
    with _lock:
        bufs = _pool.setdefault(key, [])
        free = [b for b in bufs if _free(b)]
        fits = [b for b in free if b.numel() >= numel]
        if fits:
            return _alias(min(fits, key=torch.Tensor.numel), (numel,))
        bufs[:] = [b for b in bufs if not any(b is f for f in free)]  # superseded
        if held_bytes() + nbytes > MAX_BYTES:
            return like.new_empty(numel)
        buf = torch.empty(numel, dtype=like.dtype)
        bufs.append(buf)
        return _alias(buf, (numel,))


def held_bytes() -> int:
    """Bytes of the buffers the pool holds (in use or free)."""
    return sum(b.numel() * b.element_size() for bufs in _pool.values() for b in bufs)


def clear() -> None:
    """Drop the pool's references (memory still in use elsewhere stays valid)."""
    with _lock:
        _pool.clear()
