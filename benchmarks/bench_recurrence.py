"""Speed of ``linear_recurrence``: every method against the ``loop`` reference and against the
memory-bandwidth floor, and the cost exponent in ``T``, all measured in one run.

Rows (JSON-serialisable dicts, ``bench = "recurrence"``):

``bandwidth``
    copy bandwidth of this machine, bytes read + written per second, from a large
    ``torch.Tensor.copy_`` into an existing tensor (``copy_GBps``) and from ``clone``, which
    also allocates (``alloc_copy_GBps``; on Linux the first touch of freshly ``mmap``-ed
    pages costs a page fault each, unless PyTorch is told to use transparent huge pages with
    ``THP_MEM_ALLOC_ENABLE=1``).
``target``
    ``B=128, N=256, T=1024``, float32, forward + backward (gradients of ``a`` and ``x``), for a
    time-invariant (``a`` of shape (N,)) and a time-varying (``a`` of shape (B, T, N)) system.
    ``speedup_vs_loop`` is time(loop) / time(method); ``vs_floor`` is time / floor with
    floor = bytes the recurrence must move / copy bandwidth (forward: read ``x`` (and ``a``),
    write ``h``; backward: read ``dL/dh``, ``h`` (and ``a``), write ``dL/dx`` (and
    ``dL/da``)); ``vs_alloc_floor`` uses the allocating copy bandwidth instead (the outputs
    of the recurrence are fresh tensors too).
``exponent``
    the least-squares slope of log time against log T over T in {1e2, 1e3, 1e4, 1e5} at a
    small ``B * N`` (forward + backward).
``crossover``
    (full run only) the fastest method per (B*N, T) cell; the table in
    :func:`rnnmem.models.linear_recurrence` comes from it.

Times are the *minimum* over repetitions, with the methods interleaved within each
repetition: on a shared machine the minimum is the least disturbed estimate.

Run alone: ``python -m benchmarks.bench_recurrence [--full] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import time

import torch

from rnnmem.models.recurrence import linear_recurrence

TARGET = dict(B=128, T=1024, N=256)
EXPONENT_SHAPE = dict(B=4, N=16)
EXPONENT_T = (100, 1_000, 10_000, 100_000)


def _native() -> list[str]:
    """``["native"]`` where the compiled kernels build here, else nothing."""
    from rnnmem.models import _native as nat

    return ["native"] if nat.available() else []


def _best_times(fns: dict, reps: int) -> dict:
    """Minimum wall time of each callable, interleaved over ``reps`` rounds (after a warm-up)."""
    for f in fns.values():
        f()
    best = {k: math.inf for k in fns}
    for _ in range(reps):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            best[k] = min(best[k], time.perf_counter() - t0)
    return best


def bandwidth(reps: int = 5, numel: int = 1 << 25) -> dict:
    """Copy bandwidth (GB/s of bytes read + written) with and without allocation."""
    x = torch.randn(numel, dtype=torch.float32)
    y = torch.empty_like(x)
    t = _best_times({"copy": lambda: y.copy_(x), "clone": lambda: x.clone()}, reps)
    nbytes = 2 * x.numel() * x.element_size()
    return {"bench": "recurrence", "row": "bandwidth", "bytes": nbytes,
            "copy_GBps": nbytes / t["copy"] / 1e9, "alloc_copy_GBps": nbytes / t["clone"] / 1e9,
            "threads": torch.get_num_threads(), "loadavg_1min": os.getloadavg()[0],
            "THP_MEM_ALLOC_ENABLE": os.environ.get("THP_MEM_ALLOC_ENABLE", "")}


def _fwd_bwd(a, x, g, method):
    def run():
        a_ = a.detach().requires_grad_()
        x_ = x.detach().requires_grad_()
        h = linear_recurrence(a_, x_, method=method)
        h.backward(g)
    return run


def _fwd(a, x, method):
    def run():
        with torch.no_grad():
            linear_recurrence(a, x, method=method)
    return run


def target_rows(bw: dict, quick: bool) -> list[dict]:
    B, T, N = TARGET["B"], TARGET["T"], TARGET["N"]
    reps = 3 if quick else 7
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(B, T, N, generator=gen)
    g = torch.randn(B, T, N, generator=gen)
    rows = []
    for kind in ("time_invariant", "time_varying"):
        if kind == "time_invariant":
            a = 0.5 + 0.49 * torch.rand(N, generator=gen)
            tensors_moved = 2 + 3  # fwd: x, h;  bwd: dh, h, dx
            methods = ["loop", "chunked", "auto"] + _native() + ([] if quick else ["scan", "fft"])
        else:
            a = 0.5 + 0.49 * torch.rand(B, T, N, generator=gen)
            tensors_moved = 3 + 5  # fwd: x, a, h;  bwd: dh, h, a, dx, da
            methods = ["loop", "chunked", "auto"] + _native() + ([] if quick else ["scan"])
        nbytes = tensors_moved * x.numel() * x.element_size()
        floor = nbytes / (bw["copy_GBps"] * 1e9)
        alloc_floor = nbytes / (bw["alloc_copy_GBps"] * 1e9)
        fb = _best_times({m: _fwd_bwd(a, x, g, m) for m in methods}, reps)
        fw = _best_times({m: _fwd(a, x, m) for m in methods}, reps)
        for m in methods:
            rows.append({
                "bench": "recurrence", "row": "target", "system": kind, "method": m,
                "B": B, "T": T, "N": N, "dtype": "float32",
                "fwd_s": fw[m], "fwd_bwd_s": fb[m],
                "speedup_vs_loop": fb["loop"] / fb[m],
                "fwd_speedup_vs_loop": fw["loop"] / fw[m],
                "floor_s": floor, "vs_floor": fb[m] / floor,
                "vs_alloc_floor": fb[m] / alloc_floor,
                "meets_10x_loop": fb["loop"] / fb[m] >= 10.0,
                "within_4x_floor": fb[m] / floor <= 4.0,
                "threads": torch.get_num_threads(),
            })
    return rows


def _slope(ts, ys) -> float:
    lx = [math.log(t) for t in ts]
    ly = [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((u - mx) * (v - my) for u, v in zip(lx, ly)) / sum((u - mx) ** 2 for u in lx)


def exponent_rows(quick: bool) -> list[dict]:
    B, N = EXPONENT_SHAPE["B"], EXPONENT_SHAPE["N"]
    gen = torch.Generator().manual_seed(1)
    a = 0.5 + 0.49 * torch.rand(N, generator=gen)
    rows = []
    times: dict[str, dict[int, float]] = {}
    for T in EXPONENT_T:
        x = torch.randn(B, T, N, generator=gen)
        g = torch.randn(B, T, N, generator=gen)
        methods = ["chunked", "scan", "fft", "auto"] + _native()
        if not (quick and T > 10_000):
            methods.append("loop")  # loop at T = 1e5 takes seconds per repetition
        best = _best_times({m: _fwd_bwd(a, x, g, m) for m in methods}, 3 if quick else 5)
        for m, t in best.items():
            times.setdefault(m, {})[T] = t
    loop = times["loop"]
    for m, tt in times.items():
        Ts = sorted(tt)
        slope = _slope(Ts, [tt[t] for t in Ts])
        rows.append({"bench": "recurrence", "row": "exponent", "method": m, "B": B, "N": N,
                     "T": Ts, "fwd_bwd_s": [tt[t] for t in Ts],
                     "speedup_vs_loop": [loop[t] / tt[t] if t in loop else None for t in Ts],
                     "exponent": slope, "exponent_le_1.1": slope <= 1.1})
    return rows


CROSSOVER_BN = ((1, 16), (4, 64), (4, 256), (16, 256), (128, 256))
CROSSOVER_T = (2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


def crossover_rows(quick: bool) -> list[dict]:
    """Fastest method (forward + backward) per (B*N, T) cell, and what ``auto`` picks."""
    from rnnmem.models.recurrence import choose_method

    gen = torch.Generator().manual_seed(2)
    rows = []
    for B, N in CROSSOVER_BN:
        for T in CROSSOVER_T:
            if B * N * T > (1 << 23):
                continue
            x = torch.randn(B, T, N, generator=gen)
            g = torch.randn(B, T, N, generator=gen)
            for kind in ("time_invariant", "time_varying"):
                shape = (N,) if kind == "time_invariant" else (B, T, N)
                a = 0.5 + 0.49 * torch.rand(*shape, generator=gen)
                methods = ["loop", "chunked", "scan"]
                if kind == "time_invariant" and T in (16, 1024):
                    methods.append("fft")
                best = _best_times({m: _fwd_bwd(a, x, g, m) for m in methods},
                                   3 if quick else 7)
                win = min(best, key=best.get)
                pick = choose_method(a, x)
                rows.append({"bench": "recurrence", "row": "crossover", "system": kind,
                             "B": B, "N": N, "T": T, "fastest": win, "auto": pick,
                             "auto_vs_fastest": best[pick] / best[win],
                             "fwd_bwd_s": best})
    return rows


@contextlib.contextmanager
def _threads(n: int):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def run(quick: bool = True) -> list[dict]:
    """All rows, measured in this one run (``quick``: fewer repetitions, no crossover grid,
    and the loop's exponent fitted without T = 1e5).

    The bandwidth and target rows use torch's thread count; the exponent and crossover rows,
    whose steps are far too small to gain from a second thread, run on one (on a shared
    machine a preempted partner thread stalls every parallel step; the rows say so).
    """
    bw = bandwidth()
    rows = [bw]
    rows += target_rows(bw, quick)
    with _threads(1):
        small = exponent_rows(quick) + ([] if quick else crossover_rows(quick))
    for r in small:
        r["threads"] = 1
    return rows + small


def _fmt(v):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, list):
        return "[" + ", ".join(_fmt(u) for u in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_fmt(u)}" for k, u in v.items()) + "}"
    return str(v)


def print_rows(rows: list[dict]) -> None:
    for r in rows:
        print("  ".join(f"{k}={_fmt(v)}" for k, v in r.items() if k != "bench"))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--full", action="store_true", help="more repetitions, crossover grid")
    p.add_argument("--json", help="also write the rows to this file")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run(quick=not args.full)
    print_rows(rows)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
