"""(h) Speed, round two (issue 14): start-up, dense closed-form memory, stack steps, recurrence.

Rows, every ratio measured in this run (peers: none; the "before" figures of the issue are
quoted in the notes only, never used in a ratio):

* **CLI start-up** -- wall time of ``python -m rnnmem ...`` in a fresh process: ``--help``
  and every ``CMD --help`` (target <= 0.3 s, judged on the slowest), ``list`` and
  ``derive best`` warm, i.e. the second call with the same on-disk cache (target <= 1 s);
  their cold times (empty cache) and the interpreter's own start-up (``python -c pass``,
  the floor of any command) are in ``values``.
* **dense closed-form memory** -- :func:`rnnmem.numerics.linear_memory_sampled` (one
  decomposition of W, batched evaluation) against the black-box estimator of Wang, Li & Li
  (ICLR 2024, Def. 3.1) on :func:`rnnmem.numerics.solve_linear`, dense normal W, N = 256,
  T = 1024 (target >= 10x) and T = 1e4 (target >= 100x), agreement <= 1e-10. ``values``
  hold the floor of ANY method that decomposes W: one ``eigh`` of W alone, and the speed-up
  that floor would give (black box / eigh); and the lower floor of a method that only
  needs the eigenvalues (``eigh(eigvals_only=True)``, the tridiagonal reduction and its
  eigenvalues).
* **superposition update fused vs plain** -- the stack-LSTM of section (e) at T = 500, run
  by the step-by-step graph (``fused_sequence = False``), with
  the fused update (compiled kernels where they build) against the same model with the
  plain-operation update (fwd+bwd); the torch form of the fused update (kernels off) in
  ``values``; the section (e) rows judge the stack-LSTM/LSTM ratio (<= 3x) and the
  training step against the GEMM floor (<= 1.3x).
* **linear recurrence** -- ``method="native"`` (the compiled kernel that ``"auto"`` runs
  on CPU, :mod:`rnnmem.models._native`) and ``method="chunked"`` (torch operations only,
  the fallback without a C compiler) against the ``loop`` reference at B=128, N=256,
  T=1024, float32, forward + backward (target >= 5x); ``chunked`` with the output buffers
  reused (default) and, for comparison, with fresh buffers every call (the pool off).

Run alone: ``python -m benchmarks.bench_round2 [--quick]``.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ._common import measure, row, settle_blas, unavailable

SECTION = "h"
ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- CLI
def _wall(argv: list[str], env: dict, repeats: int) -> float:
    """Median wall seconds of ``python argv`` in fresh processes (output discarded)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, *argv], env=env, cwd=ROOT,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        times.append(time.perf_counter() - t0)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {r.stderr.strip()[-300:]}")
    return statistics.median(times)


def cli_rows(repeats: int, tiny: bool = False) -> list[dict]:
    from rnnmem.cli import _command_specs

    rows = []
    with tempfile.TemporaryDirectory(prefix="rnnmem-bench-cache-") as cache:
        env = {**os.environ, "RNNMEM_CACHE_DIR": cache,
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        floor = _wall(["-c", "pass"], env, repeats)
        helps = {"--help": _wall(["-m", "rnnmem", "--help"], env, repeats)}
        if not tiny:
            for spec in _command_specs():
                helps[f"{spec['NAME']} --help"] = _wall(["-m", "rnnmem", spec["NAME"],
                                                         "--help"], env, repeats)
        worst = max(helps, key=helps.get)
        rows.append(row(SECTION, "CLI start-up: --help and CMD --help",
                        config={"commands": len(helps), "slowest": worst},
                        seconds=helps[worst], repeats=repeats,
                        ratio=helps[worst] / floor, ratio_label="x python start-up",
                        target="<= 0.3 s (slowest)", met=helps[worst] <= 0.3,
                        values={"python_startup_s": floor,
                                **{f"{k}_s": v for k, v in helps.items()}},
                        note="issue 14 quoted 6.6 s for --help before"))
        if tiny:
            return rows
        for argv, quoted in ((["list"], "10.4 s"), (["derive", "best"], "5.4 s")):
            cold = _wall(["-m", "rnnmem", *argv], env, 1)  # fills the empty cache
            warm = _wall(["-m", "rnnmem", *argv], env, repeats)
            nocache = _wall(["-m", "rnnmem", *argv], {**env, "RNNMEM_NO_CACHE": "1"}, 1)
            rows.append(row(SECTION, f"CLI: rnnmem {' '.join(argv)} (warm cache)",
                            config={"cache": "on-disk, keyed"}, seconds=warm,
                            repeats=repeats, ratio=nocache / warm,
                            ratio_label="speed-up vs no cache", target="<= 1 s",
                            met=warm <= 1.0,
                            values={"cold_s": cold, "no_cache_s": nocache,
                                    "python_startup_s": floor},
                            note=f"issue 14 quoted {quoted} before"))
    return rows


# ------------------------------------------------------------ dense closed-form memory
def dense_memory_rows(lengths, reps: int, budget_s: float, n: int = 256) -> list[dict]:
    import numpy as np

    from rnnmem.numerics import linear_memory_sampled, memory_function, solve_linear

    from .bench_memory import _normal_system

    W, U, c, dt = _normal_system(n)
    rows = []
    for T in lengths:
        k = np.arange(T)
        t = dt * k
        settle_blas()
        tc = measure(lambda: linear_memory_sampled(W, U, c, k, dt), repeats=max(reps, 5))
        # the decomposition the closed form runs (numpy's syevd), alone
        te = measure(lambda: np.linalg.eigh(W), repeats=max(reps, 5))
        # eigenvalues alone (tridiagonal reduction + QR/root-free iteration): what any
        # method needs that evaluates the modes of W, before any eigenvector
        tv = measure(lambda: np.linalg.eigvalsh(W), repeats=max(reps, 5))
        settle_blas()
        tb = measure(lambda: memory_function(lambda x: solve_linear(W, U, c, x, dt), t,
                                             dt=dt, input_dim=1),
                     repeats=reps, budget_s=budget_s)
        diff = float(np.max(np.abs(tc.result - tb.result)))
        ratio = tb.seconds / tc.seconds
        goal = 10 if T <= 1024 else 100
        judged = n == 256 and T in (1024, 10_000)
        rows.append(row(
            SECTION, "dense closed-form memory vs black box",
            config=dict(N=n, T=T, dt=dt, system="dense normal W, d=1, p=1"), timing=tc,
            ratio=ratio, ratio_label="speed-up of closed form",
            target=f">= {goal}x, diff <= 1e-10" if judged else None,
            met=(ratio >= goal and diff <= 1e-10) if judged else None,
            values=dict(black_box_s=tb.seconds, black_box_cpu_s=tb.cpu_seconds,
                        closed_cpu_s=tc.cpu_seconds, eigh_floor_s=te.seconds,
                        floor_speedup=tb.seconds / te.seconds,
                        eigvals_floor_s=tv.seconds,
                        eigvals_floor_speedup=tb.seconds / tv.seconds,
                        cpu_ratio=tb.cpu_seconds / max(tc.cpu_seconds, 1e-9),
                        max_abs_diff=diff),
            note="floor_speedup = black box / one eigh of W, eigvals_floor_speedup = black "
                 "box / the eigenvalues of W alone: the most a method that decomposes W, or "
                 "only finds its eigenvalues, can reach here"))
    return rows


# --------------------------------------------------------------- stacks, fused vs plain
def fused_update_rows(T: int, reps: int, B: int = 32, H: int = 20, W: int = 8,
                      V: int = 3) -> list[dict]:
    from rnnmem.models import StackRNN
    from rnnmem.models import stacks as S

    from .bench_stacks import _fwd_bwd

    m = StackRNN(V, controller="lstm", stack="superposition", width=H, stack_width=W,
                 dtype="float32", device="cpu", seed=0)
    plain = StackRNN(V, controller="lstm", stack="none", width=H, dtype="float32",
                     device="cpu", seed=0)
    # the update Function inside the step-by-step graph (the whole-sequence node, the
    # default, is timed in section (e))
    m.fused_sequence = plain.fused_sequence = False
    fused_step, plain_step = _fwd_bwd(m, B, T), _fwd_bwd(plain, B, T)
    tf = measure(fused_step, repeats=reps)
    tp = measure(plain_step, repeats=reps)
    orig, orig_ok = S._superposition_update, S._native_ok
    S._native_ok = lambda *ts: False  # the torch form of the fused update (no kernels)
    try:
        tt = measure(fused_step, repeats=reps)
        S._superposition_update = S._superposition_composed  # the plain-operation form
        to = measure(fused_step, repeats=reps)
    finally:
        S._superposition_update, S._native_ok = orig, orig_ok
    # deep cells of a long stack hold products of hundreds of probabilities: float32
    # subnormals, whose arithmetic is slow on x86. Measured with flush-to-zero (a
    # process-wide CPU flag that changes results below 1.2e-38; not set by rnnmem)
    import torch

    flushed = torch.set_flush_denormal(True)
    try:
        tz = measure(fused_step, repeats=reps) if flushed else None
        tzp = measure(plain_step, repeats=reps) if flushed else None
    finally:
        torch.set_flush_denormal(False)
    # floor of the stack's memory traffic: 2.5 copies of the state per step (forward: read
    # s, write s'; backward: read g and s, write dL/ds) at the copy rate of a tensor of the
    # mean state size (cache-resident), summed over the growing depths 1..T
    mean_state = torch.ones(B, 1, max(1, T // 2), W, dtype=torch.float32)
    dst = torch.empty_like(mean_state)
    tcopy = measure(lambda: [dst.copy_(mean_state) for _ in range(100)], repeats=5)
    stack_floor = 2.5 * T * tcopy.seconds / 100
    return [row(SECTION, "superposition update: fused vs plain ops (stack-LSTM fwd+bwd)",
                config=dict(T=T, batch=B, hidden=H, width=W, depth=T), timing=tf,
                ratio=to.seconds / tf.seconds, ratio_label="speed-up of fused",
                values=dict(plain_ops_s=to.seconds, plain_lstm_s=tp.seconds,
                            torch_fused_s=tt.seconds,
                            torch_fused_vs_lstm=tt.seconds / tp.seconds,
                            cpu_ratio=to.cpu_seconds / tf.cpu_seconds,
                            fused_vs_lstm=tf.seconds / tp.seconds,
                            plain_ops_vs_lstm=to.seconds / tp.seconds,
                            fused_vs_lstm_cpu=tf.cpu_seconds / tp.cpu_seconds,
                            fused_vs_lstm_flush_denormal=(tz.seconds / tzp.seconds
                                                          if tz else None),
                            stack_traffic_floor_s=stack_floor,
                            best_possible_vs_lstm=(tp.seconds + stack_floor) / tp.seconds),
                note="the <= 3x target is judged in section (e)")]


# ------------------------------------------------------------------ linear recurrence
def recurrence_rows(reps: int, B: int = 128, T: int = 1024, N: int = 256) -> list[dict]:
    import torch

    from rnnmem.models import _buffers, _native
    from rnnmem.models.recurrence import linear_recurrence

    from .bench_recurrence import _fwd_bwd

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(B, T, N, generator=gen)
    g = torch.randn(B, T, N, generator=gen)
    native = _native.available()
    rows = []
    for kind in ("time-invariant", "time-varying"):
        shape = (N,) if kind == "time-invariant" else (B, T, N)
        a = 0.5 + 0.49 * torch.rand(shape, generator=gen)
        fns = {"loop": _fwd_bwd(a, x, g, "loop"), "pool": _fwd_bwd(a, x, g, "chunked"),
               "fresh": _fwd_bwd(a, x, g, "chunked")}
        if native:
            fns["native"] = _fwd_bwd(a, x, g, "native")
        # interleaved: loop, chunked (pool), chunked (fresh buffers), native, per repetition
        times = {k: [] for k in fns}
        cpu = {k: [] for k in fns}
        for fn in fns.values():
            fn()
        min_bytes, held = _buffers.MIN_BYTES, 0
        for _ in range(reps):
            for key, fn in fns.items():
                # fresh: the pool is bypassed (its buffers kept for the next pooled run)
                _buffers.MIN_BYTES = (1 << 62) if key == "fresh" else min_bytes
                c0, w0 = time.process_time(), time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - w0)
                cpu[key].append(time.process_time() - c0)
                if key == "pool":
                    held = _buffers.held_bytes()
        _buffers.MIN_BYTES = min_bytes
        med = {k: statistics.median(v) for k, v in times.items()}
        mcpu = {k: statistics.median(v) for k, v in cpu.items()}
        config = dict(B=B, T=T, N=N, dtype="float32", reps=reps)
        ratio = med["loop"] / med["pool"]
        rows.append(row(SECTION, f"linear_recurrence chunked (torch ops) vs loop ({kind})",
                        config=config, seconds=med["pool"], repeats=reps, ratio=ratio,
                        ratio_label="speed-up vs loop (fwd+bwd)",
                        target=">= 5x (torch-only path)", met=ratio >= 5.0,
                        values=dict(loop_s=med["loop"], fresh_buffers_s=med["fresh"],
                                    fresh_speedup=med["loop"] / med["fresh"],
                                    cpu_ratio=mcpu["loop"] / mcpu["pool"],
                                    pool_held_MiB=held >> 20),
                        note="one torch op per step; used where no C compiler is found "
                             "(issue 14 quoted 1.8x time-invariant before)"))
        if native:
            ratio = med["loop"] / med["native"]
            rows.append(row(SECTION, f"linear_recurrence native (auto) vs loop ({kind})",
                            config=config, seconds=med["native"], repeats=reps, ratio=ratio,
                            ratio_label="speed-up vs loop (fwd+bwd)", target=">= 5x",
                            met=ratio >= 5.0,
                            values=dict(loop_s=med["loop"], chunked_s=med["pool"],
                                        vs_chunked=med["pool"] / med["native"],
                                        cpu_ratio=mcpu["loop"] / mcpu["native"]),
                            note="compiled C kernel per batch row (rnnmem.models._native), "
                                 "what method='auto' runs on CPU"))
        else:
            rows.append(unavailable(SECTION, f"linear_recurrence native (auto) vs loop ({kind})",
                                    f"compiled kernels unavailable: {_native.reason()}",
                                    target=">= 5x"))
    return rows


def run(quick: bool = False, *, tiny: bool = False) -> list[dict]:
    if tiny:
        parts = [("cli", lambda: cli_rows(1, tiny=True)),
                 ("dense memory", lambda: dense_memory_rows([64], 1, 1.0, n=8)),
                 ("fused update", lambda: fused_update_rows(6, 1, B=2, H=3)),
                 ("recurrence", lambda: recurrence_rows(1, B=2, T=16, N=4))]
    else:
        reps = 3 if quick else 5
        parts = [("cli", lambda: cli_rows(reps)),
                 ("dense memory", lambda: dense_memory_rows([1024, 10_000], reps, 10.0)),
                 ("fused update", lambda: fused_update_rows(500, 3 if quick else 5)),
                 ("recurrence", lambda: recurrence_rows(reps))]
    rows: list[dict] = []
    for name, part in parts:
        try:
            rows.extend(part())
        except Exception as exc:  # reported in the table, not raised
            rows.append(unavailable(SECTION, name, f"{type(exc).__name__}: {exc}",
                                    status="error"))
    return rows


if __name__ == "__main__":  # pragma: no cover
    from ._common import format_table, set_threads

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    set_threads(2)
    print(format_table(run(quick="--quick" in sys.argv)))
