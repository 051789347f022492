"""Compiled CPU kernels, built on first use with the system C compiler and called through
:mod:`ctypes` (an optional fast path: everything here has a pure-torch fallback).

Why: the sequential kernels of :mod:`rnnmem.models._scan_kernels` issue one torch
operation per time step; at B=128, T=1024, N=256 (float32) each step touches 128 rows of
1 KiB spread over 128 MiB, and the adjoint adds a second pass for the coefficient
gradient. A C loop over time *per batch row* reads each row of ``x`` once, front to back,
with the previous step in L1, and fuses the adjoint with the coefficient gradient: it is
bound by memory traffic alone (measured in ``benchmarks`` section (h)).

Build: ``recurrence.c``, ``superposition.c`` and ``lstm.c`` (next to this file) are
compiled with ``$CC`` (else the first of ``cc``, ``gcc``, ``clang`` on ``PATH``) as ISO C99
with ``-O3 -ffp-contract=off`` and no ``-march`` (the library may be shared between
machines through a common cache; the kernels are memory-bound, so baseline vector
instructions lose nothing measurable), first with ``-fopenmp`` (see Threads): a compiler
that refuses it builds without, and a ``build-failed`` marker in that attempt's folder
keeps later processes from retrying it. The shared library is cached under
``<rnnmem cache>/native/<key>/`` (see :func:`rnnmem._diskcache.cache_dir`), the key
being a SHA-256 of the sources and header, the compiler's ``--version`` output, the flags
and the machine architecture: an edit of a source or a new compiler gives a new library.
It is written under a temporary name and renamed, so concurrent first uses (processes of
one study) never load a half-written file. Where the cache cannot be written, the library
is built into a temporary directory of the process.

Off switch: ``RNNMEM_NATIVE=0``. Without a compiler, or when the build fails,
:func:`available` is False, :func:`reason` says why, and callers use their torch kernels.

Threads: rows (batch rows, or stacks) are independent, so results are bit-for-bit the same
for any split. Where the compiler has OpenMP the library is built with ``-fopenmp``
(``rn_parallel.h``); on Linux its ``libgomp.so.1`` then resolves to the copy torch has
already loaded, so the kernels split their rows over *torch's* thread pool: threads
already awake after torch's own operations, ``torch.set_num_threads`` obeyed, from
:data:`OPENMP_GRAIN` elements of work per thread. That is switched on only when exactly
one OpenMP runtime is mapped into the process (read from ``/proc/self/maps``) and the
library's thread count is torch's (:func:`threading_mode` says which mode runs; off
switch ``RNNMEM_NATIVE_OPENMP=0``). Otherwise the rows are split over
``torch.get_num_threads()`` Python threads started per call (ctypes releases the GIL
during a foreign call), from :data:`MIN_ELEMENTS_PER_THREAD` elements per thread.
Measured at the stack-LSTM training step (batch 128, hidden 256, length 40; ``benchmarks``
section (e)): the cell and stack kernels take about 120 us per call on one thread, and a
Python thread costs about 50 us to start, so only the shared pool pays at that size.
A process forked after the pool has run cannot use it, exactly as for torch's own parallel
operations (checked on this torch build: a forked child hangs in its first parallel
``torch`` operation); rnnmem's process executor spawns its workers.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

from ..._diskcache import cache_dir

__all__ = ["available", "reason", "library_path", "recurrence_forward", "recurrence_adjoint",
           "superposition_forward", "superposition_backward", "lstm_cell_backward",
           "superposition_control_forward", "superposition_control_backward", "supports",
           "lstm_cell_forward", "lstm_stack_step_forward", "lstm_stack_step_backward",
           "kernel", "run_rows", "row_table",
           "SOURCES", "threading_mode", "python_threads", "set_grain", "switched_off"]

SOURCES = tuple(Path(__file__).with_name(n) for n in ("recurrence.c", "superposition.c",
                                                     "lstm.c"))
HEADERS = (Path(__file__).with_name("rn_parallel.h"),)
FLAGS = ("-std=c99", "-O3", "-ffp-contract=off", "-fPIC", "-shared")
OPENMP_FLAGS = ("-fopenmp",)
LIBS = ("-lm",)
_ABI = 8
#: fewest elements of work per Python thread (below it one thread: starting one costs
#: ~50 us)
MIN_ELEMENTS_PER_THREAD = 1 << 18
#: fewest elements of work per thread of the shared OpenMP pool (waking a pool thread
#: costs a few us)
OPENMP_GRAIN = 1 << 14

_SUFFIX = {torch.float32: "f32", torch.float64: "f64", torch.complex64: "c64",
           torch.complex128: "c128"}
_lock = threading.Lock()
_state: dict = {}


def _compiler() -> str | None:
    env = os.environ.get("CC")
    if env:
        return shutil.which(env) or (env if os.path.isfile(env) else None)
    for name in ("cc", "gcc", "clang"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _build_key(cc: str, source: bytes, flags: tuple = FLAGS) -> str:
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True,
                                 timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise RuntimeError(f"{cc} --version failed: {exc}") from exc
    h = hashlib.sha256()
    for part in (source, version.encode(), " ".join(flags + LIBS).encode(),
                 platform.machine().encode(), str(_ABI).encode()):
        h.update(part + b"\0")
    return h.hexdigest()[:32]


def _compiled(cc: str, source: bytes, flags: tuple, remember_failure: bool = False) -> Path:
    """The cached library built with ``flags`` (built now if absent). With
    ``remember_failure``, a failed build leaves a marker so that later processes do not
    retry it (the OpenMP attempt of a compiler without OpenMP)."""
    key = _build_key(cc, source, flags)
    folder = cache_dir() / "native" / key
    lib, failed = folder / "librnnmem_native.so", folder / "build-failed"
    if lib.is_file():
        return lib
    if remember_failure and failed.is_file():
        raise RuntimeError(failed.read_text())
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-")
        probe.close()
    except OSError:  # the cache cannot be written: a private build for this process
        folder = Path(tempfile.mkdtemp(prefix=f"rnnmem-native-{key[:8]}-"))
        atexit.register(shutil.rmtree, folder, True)  # a loaded library may be unlinked
        lib, failed = folder / "librnnmem_native.so", folder / "build-failed"
    fd, tmp = tempfile.mkstemp(prefix=".build-", suffix=".so", dir=folder)
    os.close(fd)
    try:
        r = subprocess.run([cc, *flags, "-o", tmp, *map(str, SOURCES), *LIBS],
                           capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            msg = f"{cc} failed: {r.stderr.strip()[-400:]}"
            if remember_failure:
                try:
                    failed.write_text(msg)
                except OSError:
                    pass
            raise RuntimeError(msg)
        os.replace(tmp, lib)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return lib


def switched_off(name: str) -> bool:
    """Whether the environment variable ``name`` (``RNNMEM_NATIVE``,
    ``RNNMEM_NATIVE_OPENMP``) turns its part off: ``0``, ``false``, ``no`` or ``off``."""
    return os.environ.get(name, "1").strip().lower() in ("0", "false", "no", "off")


def _build() -> ctypes.CDLL:
    if switched_off("RNNMEM_NATIVE"):
        raise RuntimeError("turned off by RNNMEM_NATIVE=0")
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (set CC, or install cc/gcc/clang)")
    source = b"\0".join(f.read_bytes() for f in SOURCES + HEADERS)
    try:  # with OpenMP where the compiler has it (remembered when it has not)
        lib = _compiled(cc, source, FLAGS + OPENMP_FLAGS, remember_failure=True)
    except RuntimeError:
        lib = _compiled(cc, source, FLAGS)
    dll = ctypes.CDLL(str(lib))
    if dll.rn_abi_version() != _ABI:
        raise RuntimeError(f"{lib} has ABI {dll.rn_abi_version()}, expected {_ABI}")
    P, L, I = ctypes.c_void_p, ctypes.c_longlong, ctypes.c_int
    for suf in _SUFFIX.values():
        getattr(dll, f"rn_fwd_{suf}").argtypes = [P, I, P, P, P, L, L, L, L]
        getattr(dll, f"rn_fwd_{suf}").restype = None
        getattr(dll, f"rn_adj_{suf}").argtypes = [P, I, P, P, P, P, P, P, I, L, L, L, L]
        getattr(dll, f"rn_adj_{suf}").restype = None
    for suf in ("f32", "f64"):
        getattr(dll, f"rn_sup_fwd_{suf}").argtypes = [P, P, P, P, L, L, L, L, L]
        getattr(dll, f"rn_sup_fwd_{suf}").restype = None
        getattr(dll, f"rn_sup_bwd_{suf}").argtypes = [P, P, P, P, P, P, P, P, L, L, L, L, L,
                                                      L]
        getattr(dll, f"rn_sup_bwd_{suf}").restype = None
        getattr(dll, f"rn_lstm_bwd_{suf}").argtypes = [P, P, P, P, L, P, L, P, L, P, L, P, P,
                                                       L, L, L]
        getattr(dll, f"rn_lstm_bwd_{suf}").restype = None
        getattr(dll, f"rn_supctl_fwd_{suf}").argtypes = [P, L, I, P, P, P, P, P, L, L, L, L,
                                                         L, L, L, L]
        getattr(dll, f"rn_supctl_fwd_{suf}").restype = None
        getattr(dll, f"rn_supctl_bwd_{suf}").argtypes = [P, P, P, P, P, P, P, P, L, L, P, L,
                                                         I, L, L, L, L, L, L]
        getattr(dll, f"rn_supctl_bwd_{suf}").restype = None
        getattr(dll, f"rn_lstm_fwd_{suf}").argtypes = [P, P, P, P, P, L, P, P, L, P, L, L, L,
                                                       L]
        getattr(dll, f"rn_lstm_fwd_{suf}").restype = None
        getattr(dll, f"rn_lstm_stack_fwd_{suf}").argtypes = [P, P, P, P, P, L, P, P, L, P, L,
                                                             I, P, P, P, P, P, L, L, L, L, L,
                                                             L, L, L, L]
        getattr(dll, f"rn_lstm_stack_fwd_{suf}").restype = None
        getattr(dll, f"rn_lstm_stack_bwd_{suf}").argtypes = [P, P, P, P, P, P, P, P, L, L, P,
                                                             L, I, P, P, P, P, L, P, L, P, P,
                                                             P, L, L, L, L, L, L, L]
        getattr(dll, f"rn_lstm_stack_bwd_{suf}").restype = None
        for name in ("lstm_fwd", "lstm_bwd", "lstm_stack_fwd", "lstm_stack_bwd"):
            getattr(dll, f"rn_{name}_row_{suf}").argtypes = [P, L, L]
            getattr(dll, f"rn_{name}_row_{suf}").restype = None
    dll.rn_set_parallel.argtypes = [I, L]
    dll.rn_set_parallel.restype = None
    _state["path"] = lib
    _configure_threads(dll)
    return dll


_OMP_RUNTIME = ("libgomp", "libiomp", "libomp")


def _openmp_runtimes() -> set[str] | None:
    """Files of the OpenMP runtimes mapped into this process (None: cannot tell)."""
    try:
        with open("/proc/self/maps") as fh:
            paths = {line.split()[-1] for line in fh if "/" in line}
    except OSError:
        return None
    return {p for p in paths if os.path.basename(p).startswith(_OMP_RUNTIME)}


def _configure_threads(dll) -> None:
    """Switch the library's OpenMP row splitting on where it shares torch's runtime (the
    mode of :func:`threading_mode`)."""
    shared = False
    if dll.rn_openmp() and not switched_off("RNNMEM_NATIVE_OPENMP"):
        runtimes = _openmp_runtimes()
        shared = (runtimes is not None and len(runtimes) == 1
                  and dll.rn_omp_max_threads() == torch.get_num_threads())
    _state["grain"] = OPENMP_GRAIN
    _apply_threads(dll, "openmp" if shared else "python-threads")


def _apply_threads(dll, mode: str) -> None:
    """Record ``mode`` and tell the library whether to split rows itself (with the
    recorded grain)."""
    _state["mode"] = mode
    dll.rn_set_parallel(int(mode == "openmp"), _state["grain"])


def threading_mode() -> str | None:
    """How the kernels split their rows: ``"openmp"`` (torch's OpenMP pool, shared),
    ``"python-threads"`` (threads started per call) or None when the library is
    unavailable."""
    return _state.get("mode") if available() else None


def set_grain(grain: int) -> None:
    """Set the fewest elements of work per OpenMP thread (tests: ``1`` splits even tiny
    inputs). Does nothing when the library is unavailable."""
    dll = _dll()
    if dll is not None:
        _state["grain"] = int(grain)
        _apply_threads(dll, _state["mode"])


@contextlib.contextmanager
def python_threads():
    """Within the block, split rows over Python threads even where the kernels run on the
    shared OpenMP pool (benchmarks: both modes measured in one run). Results are the same
    bits either way."""
    dll, mode = _dll(), _state.get("mode")
    if dll is None or mode != "openmp":
        yield
        return
    with _lock:
        _apply_threads(dll, "python-threads")
    try:
        yield
    finally:
        with _lock:
            _apply_threads(dll, mode)


def _library() -> ctypes.CDLL | None:
    with _lock:
        if "dll" not in _state:
            try:
                _state["dll"], _state["reason"] = _build(), None
            except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
                _state["dll"], _state["reason"] = None, str(exc)
        return _state["dll"]


def _dll() -> ctypes.CDLL | None:
    """The loaded library without taking the lock once loaded (the per-step path)."""
    return _state["dll"] if "dll" in _state else _library()


def available() -> bool:
    """Whether the compiled kernels can be used (building them on the first call)."""
    return _library() is not None


def reason() -> str | None:
    """Why :func:`available` is False (None when it is True)."""
    _library()
    return _state.get("reason")


def library_path() -> Path | None:
    """The loaded shared library (None when unavailable)."""
    return _state.get("path") if available() else None


def _reset() -> None:
    """Forget the loaded library (tests: rebuild under another environment)."""
    with _lock:
        _state.clear()


_is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None)
_is_wrapped = torch._C._functorch.is_functorch_wrapped_tensor


def supports(*tensors) -> bool:
    """Whether the kernels can run on these tensors (``None`` entries ignored): plain CPU
    tensors (no ``torch.func`` wrappers, no subclasses, not under ``torch.compile``
    tracing) of one supported dtype, and the library is available. Called once per step
    of a model, so it is kept cheap (no lock once the library is loaded)."""
    if _dll() is None:
        return False
    dtype = None
    for t in tensors:
        if t is None:
            continue
        if type(t) is not torch.Tensor or not t.is_cpu or _is_wrapped(t):
            return False
        if dtype is None:
            dtype = t.dtype
            if dtype not in _SUFFIX:
                return False
        elif t.dtype != dtype:
            return False
    return dtype is not None and not (_is_compiling is not None and _is_compiling())


def _plain(t: torch.Tensor | None) -> torch.Tensor | None:
    """Contiguous memory holding the values of ``t`` (lazy conjugate/negative views
    resolved: their data pointer holds the un-conjugated numbers)."""
    if t is None:
        return None
    if t.is_conj() or t.is_neg():
        t = t.resolve_conj().resolve_neg()
    return t if t.is_contiguous() else t.contiguous()


def _ptr(t: torch.Tensor | None):
    return None if t is None else t.data_ptr()


def _split(fn, B: int, work: int, args_for) -> None:
    """Call ``fn(*args_for(b0, b1))`` on row ranges covering ``[0, B)``, in parallel (in
    the library over OpenMP threads when :func:`threading_mode` is ``"openmp"``, else over
    Python threads)."""
    if _state.get("mode") == "openmp":
        fn(*args_for(0, B))
        return
    n = max(1, min(torch.get_num_threads(), B, work // MIN_ELEMENTS_PER_THREAD))
    if n == 1:
        fn(*args_for(0, B))
        return
    bounds = [B * i // n for i in range(n + 1)]
    errors: list[BaseException] = []

    def run(b0, b1):
        try:
            fn(*args_for(b0, b1))
        except BaseException as exc:  # pragma: no cover - ctypes argument errors
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(bounds[i], bounds[i + 1]), daemon=True)
               for i in range(1, n)]
    for th in threads:
        th.start()
    run(bounds[0], bounds[1])
    for th in threads:
        th.join()
    if errors:  # pragma: no cover
        raise errors[0]


def kernel(name: str, dtype: torch.dtype):
    """The compiled function ``rn_<name>_<f32|f64|...>`` itself, for loops that take their
    tensors' addresses once and pass them to :func:`run_rows` step after step (no checks:
    the caller guarantees the layout its arguments describe, as the wrappers here check
    it)."""
    return getattr(_dll(), f"rn_{name}_{_SUFFIX[dtype]}")


def run_rows(fn, B: int, work: int, head: tuple, tail: tuple) -> None:
    """``fn(*head, b0, b1, *tail)`` over the rows ``[0, B)``, split as the wrappers split
    them (``work``: the call's element count)."""
    if _state.get("mode") == "openmp":
        fn(*head, 0, B, *tail)
        return
    _split(fn, B, work, lambda r0, r1: (*head, r0, r1, *tail))


def row_table(T: int, *columns) -> torch.Tensor:
    """The arguments of ``T`` calls as a (T, n) int64 table for the ``rn_*_row`` entry
    points: each column an ``int`` (the same in every call, None for a null pointer), a
    list of ``T`` ints or an int64 tensor of ``T`` (addresses advanced per call)."""
    cols = []
    for col in columns:
        if col is None or isinstance(col, int):
            cols.append(torch.full((T,), 0 if col is None else col, dtype=torch.int64))
        else:
            cols.append(torch.as_tensor(col, dtype=torch.int64))
    return torch.stack(cols, dim=1) if cols else torch.empty(T, 0, dtype=torch.int64)


def recurrence_forward(a: torch.Tensor, x: torch.Tensor, h0: torch.Tensor | None,
                       out: torch.Tensor) -> torch.Tensor:
    """``out[:, t] = a_t * out[:, t-1] + x[:, t]`` (``out[:, -1] = h0``, zero if None).

    ``a`` (N,) or (B, T, N), ``x`` and ``out`` (B, T, N) contiguous, one dtype; call only
    when :func:`supports` is True. Returns ``out``."""
    dll = _dll()
    B, T, N = x.shape
    a, x, h0 = _plain(a), _plain(x), _plain(h0)
    if not out.is_contiguous():
        raise ValueError("out must be contiguous")
    fn = getattr(dll, f"rn_fwd_{_SUFFIX[x.dtype]}")
    tv = int(a.dim() == 3)
    _split(fn, B, B * T * N,
           lambda b0, b1: (_ptr(a), tv, _ptr(x), _ptr(h0), _ptr(out), b0, b1, T, N))
    return out


def recurrence_adjoint(a: torch.Tensor, g: torch.Tensor, h: torch.Tensor | None,
                       h0: torch.Tensor | None, gx: torch.Tensor, need_a: bool,
                       da: torch.Tensor | None = None):
    """The adjoint sweep into ``gx`` and, when ``need_a``, :math:`\\partial L/\\partial a`:
    into ``da`` (B, T, N) for a time-varying ``a``; returned as (N,) for a time-invariant
    one (per-row sums over time, then over the batch). Returns ``(gx, da)``."""
    dll = _dll()
    B, T, N = g.shape
    a, g, h, h0 = _plain(a), _plain(g), _plain(h), _plain(h0)
    tv = int(a.dim() == 3)
    acc = None
    if need_a and not tv:
        acc = torch.zeros(B, N, dtype=g.dtype)
    if need_a and tv and (da is None or not da.is_contiguous()):
        raise ValueError("a contiguous da is needed for a time-varying a")
    fn = getattr(dll, f"rn_adj_{_SUFFIX[g.dtype]}")
    _split(fn, B, B * T * N,
           lambda b0, b1: (_ptr(a), tv, _ptr(g), _ptr(h), _ptr(h0), _ptr(gx),
                           _ptr(da if tv else None), _ptr(acc), int(need_a), b0, b1, T, N))
    if need_a and not tv:
        da = acc.sum(0)
    return gx, (da if need_a else None)


def superposition_forward(state: torch.Tensor, actions: torch.Tensor, values: torch.Tensor,
                          new_depth: int) -> torch.Tensor:
    """The superposition-stack update (see ``stacks._superposition_forward``) in one pass:
    ``state`` (B, K, d, W), ``actions`` (B, K, 3), ``values`` (B, K, W) -> a fresh
    (B, K, new_depth, W). Real float32/float64 only; call when :func:`supports` is True."""
    dll = _dll()
    B, K, d, W = state.shape
    s, act, v = _plain(state), _plain(actions), _plain(values)
    out = s.new_empty(B, K, new_depth, W)
    fn = getattr(dll, f"rn_sup_fwd_{_SUFFIX[s.dtype]}")
    _split(fn, B * K, B * K * new_depth * W,
           lambda r0, r1: (_ptr(s), _ptr(act), _ptr(v), _ptr(out), r0, r1, d, new_depth, W))
    return out


def superposition_backward(state: torch.Tensor, actions: torch.Tensor, values: torch.Tensor,
                           g: torch.Tensor, g_read: torch.Tensor | None = None):
    """Gradients ``(dL/dstate, dL/dactions, dL/dvalues)`` of the update from
    ``g = dL/dout`` (B, K, nd, W), in one pass (see ``stacks._SuperpositionUpdate``);
    ``g_read`` (B, K, r, W), the gradient of a read of the output's top ``r`` cells, is
    added to ``g``'s top rows on the way (no full-size sum)."""
    dll = _dll()
    B, K, d, W = state.shape
    nd = g.shape[2]
    s, act, v, g, gt = _plain(state), _plain(actions), _plain(values), _plain(g), _plain(g_read)
    rd = 0 if gt is None else gt.shape[2]
    gs, ga, gv = torch.empty_like(s), torch.empty_like(act), torch.empty_like(v)
    fn = getattr(dll, f"rn_sup_bwd_{_SUFFIX[s.dtype]}")
    _split(fn, B * K, B * K * nd * W,
           lambda r0, r1: (_ptr(s), _ptr(act), _ptr(v), _ptr(g), _ptr(gs), _ptr(ga), _ptr(gv),
                           _ptr(gt), rd, r0, r1, d, nd, W))
    return gs, ga, gv


def lstm_cell_backward(act: torch.Tensor, c_prev: torch.Tensor, tanh_c: torch.Tensor,
                       g_h: torch.Tensor, g_c: torch.Tensor, out: torch.Tensor,
                       g_h2: torch.Tensor | None = None, g_z: torch.Tensor | None = None,
                       w_zT: torch.Tensor | None = None) -> None:
    """Backward of one LSTM cell step (``lstm.c``) from its saved activations: ``act``
    (B, 4H) the activated gates in the order i, f, o, g; ``c_prev``, ``tanh_c`` (B, H).
    dL/dh_t is ``g_h`` (B, H) plus, when given, ``g_h2`` (B, H) and ``g_z @ w_zT``
    (``g_z`` (B, C), ``w_zT`` (C, H) contiguous): the gradient through the stack interface,
    summed in the kernel. Writes ``dL/d(pre-activations)`` into ``out`` (B, 4H) and replaces
    ``g_c`` (B, H), dL/dc_t on entry, by dL/dc_{t-1}. ``act``, ``c_prev``, ``tanh_c``,
    ``g_c`` and ``out`` contiguous; ``g_h``, ``g_h2`` and ``g_z`` need contiguous rows
    only. One real dtype."""
    dll = _dll()
    B, H = g_h.shape
    if g_z is not None and (w_zT is None or not w_zT.is_contiguous()
                            or w_zT.shape != (g_z.shape[1], H)):
        raise ValueError("g_z needs w_zT, contiguous, of shape (g_z.shape[1], H)")
    fn = getattr(dll, f"rn_lstm_bwd_{_SUFFIX[act.dtype]}")
    g_h, g_h2, g_z = _row_major(g_h), _row_major(g_h2), _row_major(g_z)
    ld1 = _rows(g_h)
    ld2 = 0 if g_h2 is None else _rows(g_h2)
    ldz = 0 if g_z is None else _rows(g_z)
    C = 0 if g_z is None else g_z.shape[1]
    _split(fn, B, 4 * B * H,
           lambda r0, r1: (_ptr(act), _ptr(c_prev), _ptr(tanh_c), _ptr(g_h), ld1, _ptr(g_h2),
                           ld2, _ptr(g_z), ldz, _ptr(w_zT), C, _ptr(g_c), _ptr(out), r0, r1,
                           H))


def _row_major(t: torch.Tensor | None) -> torch.Tensor | None:
    """``t`` (B, n) itself when its rows are contiguous, else a contiguous copy (an
    expanded gradient, for instance)."""
    if t is None or t.shape[1] <= 1 or t.stride(1) == 1:
        return t
    return t.contiguous()


def _rows(t: torch.Tensor) -> int:
    """Stride between the rows of a (B, n) view whose rows are contiguous."""
    if t.dim() != 2 or (t.shape[1] > 1 and t.stride(1) != 1):
        raise ValueError("expected a (B, n) view with contiguous rows")
    return t.stride(0)


def superposition_control_forward(z: torch.Tensor, joint: bool, state: torch.Tensor,
                                  new_depth: int, read_out: torch.Tensor, read_depth: int,
                                  actions_out: torch.Tensor | None = None,
                                  values_out: torch.Tensor | None = None,
                                  out: torch.Tensor | None = None):
    """One stack step of a sequence model (``superposition.c``, ``rn_supctl_fwd``): the
    actions (softmax of ``z[:, :3K]``, per stack or ``joint``) and values (sigmoid of
    ``z[:, 3K:3K + KW]``) from the interface logits ``z`` (B, >= 3K + KW, contiguous
    rows), the update of ``state`` (B, K, d, W) to a fresh (B, K, new_depth, W), and its
    top ``read_depth`` cells written into ``read_out`` (B, K * read_depth * W, contiguous
    rows). Returns ``(new_state, actions, values)``, written into ``out`` (B, K, new_depth,
    W), ``actions_out`` (B, K, 3) and ``values_out`` (B, K, W) when given (contiguous)."""
    dll = _dll()
    B, K, d, W = state.shape
    s = _plain(state)
    if out is None:
        out = s.new_empty(B, K, new_depth, W)
    elif not out.is_contiguous() or out.shape != (B, K, new_depth, W):
        raise ValueError(f"out must be contiguous of shape {(B, K, new_depth, W)}")
    act = s.new_empty(B, K, 3) if actions_out is None else actions_out
    v = s.new_empty(B, K, W) if values_out is None else values_out
    fn = getattr(dll, f"rn_supctl_fwd_{_SUFFIX[s.dtype]}")
    ldz, ldr = _rows(z), _rows(read_out)
    _split(fn, B, B * K * new_depth * W,
           lambda r0, r1: (_ptr(z), ldz, int(joint), _ptr(s), _ptr(act), _ptr(v), _ptr(out),
                           _ptr(read_out), ldr, read_depth, r0, r1, K, d, new_depth, W))
    return out, act, v


def superposition_control_backward(state: torch.Tensor, actions: torch.Tensor,
                                   values: torch.Tensor, g: torch.Tensor, g_read: torch.Tensor,
                                   read_depth: int, joint: bool, dz_out: torch.Tensor,
                                   scratch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The backward of :func:`superposition_control_forward`: from ``g`` = dL/dnew_state
    (B, K, nd, W) and ``g_read`` = dL/dread (B, K * read_depth * W, contiguous rows),
    writes dL/dz into ``dz_out`` (B, 3K + KW, contiguous rows) and returns dL/dstate.
    ``scratch``: two tensors shaped like ``actions`` and ``values`` (overwritten)."""
    dll = _dll()
    B, K, d, W = state.shape
    nd = g.shape[2]
    s, g = _plain(state), _plain(g)
    gs = torch.empty_like(s)
    ga, gv = scratch
    fn = getattr(dll, f"rn_supctl_bwd_{_SUFFIX[s.dtype]}")
    ldt, ldz = _rows(g_read), _rows(dz_out)
    _split(fn, B, B * K * nd * W,
           lambda r0, r1: (_ptr(s), _ptr(actions), _ptr(values), _ptr(g), _ptr(gs), _ptr(ga),
                           _ptr(gv), _ptr(g_read), ldt, read_depth, _ptr(dz_out), ldz,
                           int(joint), r0, r1, K, d, nd, W))
    return gs


def _cell_args(act, c_prev, c_out, tc_out, h_out, w_zT, b_z, z_out):
    """Checked arguments of ``rn_lstm_fwd`` (the cell and interface part of a step)."""
    B, H4 = act.shape
    H = H4 // 4
    for name, t in (("act", act), ("c_prev", c_prev), ("c_out", c_out), ("tc_out", tc_out)):
        if not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous")
    if (w_zT is None) != (z_out is None) or (w_zT is None) != (b_z is None):
        raise ValueError("w_zT, b_z and z_out go together")
    C = 0
    if w_zT is not None:
        C = w_zT.shape[0]
        if not w_zT.is_contiguous() or w_zT.shape != (C, H) or not b_z.is_contiguous():
            raise ValueError("w_zT must be contiguous of shape (C, H), b_z contiguous")
    return (_ptr(act), _ptr(c_prev), _ptr(c_out), _ptr(tc_out), _ptr(h_out), _rows(h_out),
            _ptr(w_zT), _ptr(b_z), C, _ptr(z_out), 0 if z_out is None else _rows(z_out)), B, H, C


def lstm_cell_forward(act: torch.Tensor, c_prev: torch.Tensor, c_out: torch.Tensor,
                      tc_out: torch.Tensor, h_out: torch.Tensor,
                      w_zT: torch.Tensor | None = None, b_z: torch.Tensor | None = None,
                      z_out: torch.Tensor | None = None) -> None:
    """Forward of one LSTM cell step (``lstm.c``, ``rn_lstm_fwd``), in place: ``act``
    (B, 4H, contiguous) holds the gate pre-activations in the order i, f, o, g and is
    overwritten by the activated gates; writes ``c_out`` = c_t and ``tc_out`` =
    tanh(c_t) (B, H, contiguous) from ``c_prev`` (B, H, contiguous), and ``h_out`` = h_t
    (B, H, contiguous rows). With ``w_zT`` (C, H, contiguous), ``b_z`` (C,) and
    ``z_out`` (B, C, contiguous rows): also the interface logits ``b_z + h_t w_zT^T``.
    The activations use the kernel's own vectorised exp (sigmoid within 4 ulp of the
    exact value, tanh within 2, in both precisions; see ``lstm.c``)."""
    dll = _dll()
    args, B, H, C = _cell_args(act, c_prev, c_out, tc_out, h_out, w_zT, b_z, z_out)
    fn = getattr(dll, f"rn_lstm_fwd_{_SUFFIX[act.dtype]}")
    _split(fn, B, B * (6 + C) * H, lambda r0, r1: (*args, r0, r1, H))


def lstm_stack_step_forward(act: torch.Tensor, c_prev: torch.Tensor, c_out: torch.Tensor,
                            tc_out: torch.Tensor, h_out: torch.Tensor, w_zT: torch.Tensor,
                            b_z: torch.Tensor, z_out: torch.Tensor, joint: bool,
                            state: torch.Tensor, new_depth: int, read_out: torch.Tensor,
                            read_depth: int, actions_out: torch.Tensor,
                            values_out: torch.Tensor, out: torch.Tensor) -> None:
    """One step of an LSTM controller with a superposition stack in one call
    (``rn_lstm_stack_fwd``): :func:`lstm_cell_forward` with the interface, then
    :func:`superposition_control_forward` on the logits it wrote (same arguments; here
    every output is given)."""
    dll = _dll()
    args, B, H, C = _cell_args(act, c_prev, c_out, tc_out, h_out, w_zT, b_z, z_out)
    _, K, d, W = state.shape
    if C != 3 * K + K * W:
        raise ValueError(f"the interface has {C} logits, the stack needs {3 * K + K * W}")
    s = _plain(state)
    for name, t, shape in (("out", out, (B, K, new_depth, W)),
                           ("actions_out", actions_out, (B, K, 3)),
                           ("values_out", values_out, (B, K, W))):
        if not t.is_contiguous() or t.shape != shape:
            raise ValueError(f"{name} must be contiguous of shape {shape}")
    fn = getattr(dll, f"rn_lstm_stack_fwd_{_SUFFIX[act.dtype]}")
    rest = (int(joint), _ptr(s), _ptr(actions_out), _ptr(values_out), _ptr(out),
            _ptr(read_out), _rows(read_out), read_depth)
    _split(fn, B, B * ((6 + C) * H + K * new_depth * W),
           lambda r0, r1: (*args, *rest, r0, r1, H, K, d, new_depth, W))


def lstm_stack_step_backward(state: torch.Tensor, actions: torch.Tensor, values: torch.Tensor,
                             g: torch.Tensor, g_read: torch.Tensor, read_depth: int,
                             joint: bool, dz_out: torch.Tensor,
                             scratch: tuple[torch.Tensor, torch.Tensor], act: torch.Tensor,
                             c_prev: torch.Tensor, tanh_c: torch.Tensor, g_h: torch.Tensor,
                             g_c: torch.Tensor, out: torch.Tensor, g_h2: torch.Tensor | None,
                             w_zT: torch.Tensor, gs_out: torch.Tensor | None = None
                             ) -> torch.Tensor:
    """The backward of :func:`lstm_stack_step_forward` in one call
    (``rn_lstm_stack_bwd``): :func:`superposition_control_backward` (writes ``dz_out``,
    returns dL/dstate, into ``gs_out`` (contiguous, shaped like ``state``) when given),
    then :func:`lstm_cell_backward` with that ``dz_out`` as its ``g_z``."""
    dll = _dll()
    B, K, d, W = state.shape
    H = g_h.shape[1]
    nd = g.shape[2]
    C = 3 * K + K * W
    if not w_zT.is_contiguous() or w_zT.shape != (C, H):
        raise ValueError(f"w_zT must be contiguous of shape {(C, H)}")
    s, g = _plain(state), _plain(g)
    if gs_out is None:
        gs_out = torch.empty_like(s)
    elif not gs_out.is_contiguous() or gs_out.shape != s.shape:
        raise ValueError(f"gs_out must be contiguous of shape {tuple(s.shape)}")
    ga, gv = scratch
    g_h, g_h2 = _row_major(g_h), _row_major(g_h2)
    fn = getattr(dll, f"rn_lstm_stack_bwd_{_SUFFIX[s.dtype]}")
    args = (_ptr(s), _ptr(actions), _ptr(values), _ptr(g), _ptr(gs_out), _ptr(ga), _ptr(gv),
            _ptr(g_read), _rows(g_read), read_depth, _ptr(dz_out), _rows(dz_out), int(joint),
            _ptr(act), _ptr(c_prev), _ptr(tanh_c), _ptr(g_h), _rows(g_h), _ptr(g_h2),
            0 if g_h2 is None else _rows(g_h2), _ptr(w_zT), _ptr(g_c), _ptr(out))
    _split(fn, B, B * ((4 + C) * H + K * nd * W),
           lambda r0, r1: (*args, r0, r1, H, K, d, nd, W))
    return gs_out
