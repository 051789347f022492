"""Timing, rows, the run header and the one printed table, shared by every bench module.

Every benchmark module exposes ``run(quick: bool = False, *, tiny: bool = False) ->
list[dict]``; each dict is a *row* made by :func:`row` (validated by :func:`check_row`).
``tiny`` is for the smoke test only (seconds, meaningless numbers); ``quick`` is a short
run; the default is the full suite.

Timing method: warm-up calls, then the median of ``repeats`` calls timed with
:func:`time.perf_counter` (wall) and, alongside, :func:`time.process_time` (CPU time of
this process: less sensitive to other processes competing for the cores, which is how the
project machine is shared). Ratios in the table are ratios of wall medians measured in the
same run.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

#: section letters and titles, in table order (issue "Speed", part 5)
SECTIONS: dict[str, str] = {
    "a": "linear recurrence fwd+bwd",
    "b": "memory function: closed form vs black box",
    "c": "one training step per model family",
    "d": "perturbation sweep: batched vs one at a time",
    "e": "stack RNNs",
    "f": "rnnmem verify --budget quick",
    "g": "your own model: amplitude search vs one amplitude",
    "h": "speed round two: start-up, dense memory, stack update, recurrence buffers",
    "i": "experiments: executor overhead per run",
}

#: the keys every row carries (see :func:`row`)
ROW_KEYS = ("section", "name", "config", "seconds", "cpu_seconds", "repeats", "ratio",
            "ratio_label", "target", "met", "values", "status", "note")
STATUSES = ("ok", "not available", "error", "skipped")


@dataclass
class Timing:
    """Median wall and CPU seconds of ``repeats`` timed calls (after warm-up)."""

    seconds: float
    cpu_seconds: float
    repeats: int
    all_seconds: list[float] = field(default_factory=list)
    result: Any = None  # the last call's return value


def measure(fn: Callable[[], Any], *, repeats: int = 5, warmup: int = 1,
            budget_s: float | None = None) -> Timing:
    """Time ``fn()``: ``warmup`` untimed calls, then the median of ``repeats`` timed ones.

    ``budget_s``: stop repeating (after at least one timed call) once the timed calls have
    used this many seconds, so that slow references do not dominate a run.
    """
    result = None
    for _ in range(warmup):
        result = fn()
    walls, cpus = [], []
    spent = 0.0
    for _ in range(max(1, repeats)):
        c0, w0 = time.process_time(), time.perf_counter()
        result = fn()
        w, c = time.perf_counter() - w0, time.process_time() - c0
        walls.append(w)
        cpus.append(c)
        spent += w
        if budget_s is not None and spent >= budget_s:
            break
    return Timing(statistics.median(walls), statistics.median(cpus), len(walls), walls,
                  result)


#: seconds after which an idle OpenBLAS thread has stopped spinning (its default timeout,
#: 2^28 time-stamp ticks, is about 0.1 s at 2.5 GHz), with a margin
BLAS_SETTLE_S = 0.25


def settle_blas() -> None:
    """Wait until the OpenBLAS threads of the work timed before have gone to sleep.

    numpy and scipy each load their own OpenBLAS, each with its own thread pool, and an
    idle pool spins for about 0.1 s after its last call: a function timed right after
    work in the OTHER library's BLAS shares the cores with those spinning threads (on 2
    vCPUs the dense closed form took 8.2 ms just after the black box's scipy ``expm``,
    5.6 ms 0.3 s later). Called between timings of different functions, so that each
    starts from the state a caller that has not just used the other library sees."""
    time.sleep(BLAS_SETTLE_S)


def cpu_steal() -> tuple[int, int] | None:
    """``(steal, total)`` CPU ticks of the machine so far (``/proc/stat``), or None where
    there is no such file. Steal is time the hypervisor gave this VM's virtual CPUs to
    others: a timing taken meanwhile is slower for reasons that are not the code's (on the
    project VM, 15-40% steal made a parallel kernel's waits at its barriers 3x its CPU
    time)."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 9:
        return None
    ticks = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    return ticks[7], sum(ticks)


def steal_fraction(before, after) -> float | None:
    """The share of CPU time stolen between two :func:`cpu_steal` readings."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


def row(section: str, name: str, *, config: dict | None = None, timing: Timing | None = None,
        seconds: float | None = None, cpu_seconds: float | None = None,
        repeats: int | None = None, ratio: float | None = None, ratio_label: str = "",
        target: str | None = None, met: bool | None = None, values: dict | None = None,
        status: str = "ok", note: str = "") -> dict:
    """One table row (a plain JSON-serialisable dict with the keys :data:`ROW_KEYS`).

    ``ratio`` is the headline number of the row (a speed-up, or a ratio to a floor or a
    baseline), described by ``ratio_label``; ``target`` states the goal in words and
    ``met`` whether this run meets it (``None``: no target, or not measurable here).
    """
    if timing is not None:
        seconds, cpu_seconds, repeats = timing.seconds, timing.cpu_seconds, timing.repeats
    r = {"section": section, "name": name, "config": dict(config or {}),
         "seconds": None if seconds is None else float(seconds),
         "cpu_seconds": None if cpu_seconds is None else float(cpu_seconds),
         "repeats": repeats, "ratio": None if ratio is None else float(ratio),
         "ratio_label": ratio_label, "target": target,
         "met": None if met is None else bool(met),
         "values": {k: _jsonable(v) for k, v in (values or {}).items()},
         "status": status, "note": note}
    check_row(r)
    return r


def unavailable(section: str, name: str, why: str, *, status: str = "not available",
                target: str | None = None) -> dict:
    """A row saying cleanly that a benchmark could not run (and why)."""
    return row(section, name, status=status, note=why, target=target)


def _jsonable(v):
    if isinstance(v, (bool, int, str)) or v is None:
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else str(v)
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)


def check_row(r: dict) -> None:
    """Raise ``ValueError`` unless ``r`` is a well-formed row."""
    if not isinstance(r, dict) or tuple(sorted(r)) != tuple(sorted(ROW_KEYS)):
        raise ValueError(f"row keys {sorted(r) if isinstance(r, dict) else r!r} "
                         f"!= {sorted(ROW_KEYS)}")
    if r["section"] not in SECTIONS:
        raise ValueError(f"unknown section {r['section']!r}")
    if not isinstance(r["name"], str) or not r["name"]:
        raise ValueError("row needs a name")
    if r["status"] not in STATUSES:
        raise ValueError(f"unknown status {r['status']!r}")
    for k in ("seconds", "cpu_seconds", "ratio"):
        v = r[k]
        if v is not None and not (isinstance(v, float) and math.isfinite(v) and v >= 0):
            raise ValueError(f"{k} must be a finite non-negative float or None, got {v!r}")
    if r["status"] == "ok" and r["seconds"] is None and r["ratio"] is None and not r["values"]:
        raise ValueError(f"row {r['name']!r} is 'ok' but carries no measurement")
    if r["met"] is not None and not isinstance(r["met"], bool):
        raise ValueError("met must be a bool or None")
    json.dumps(r)  # serialisable


# ---------------------------------------------------------------------------- set-up
def set_threads(n: int) -> int:
    """``torch.set_num_threads(n)`` (and the interop pool, when still possible)."""
    import torch

    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set, or parallel work has started
        pass
    return torch.get_num_threads()


def _cpu_model() -> str:
    from rnnmem.experiments.worker import cpu_model

    return cpu_model() or platform.machine()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10, cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def header() -> dict:
    """The JSON header: machine, library versions, torch threads, load at the start."""
    import numpy as np
    import torch

    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load = None
    return {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cuda": torch.cuda.is_available(),
        "load_average_at_start": load,
        "threads_env": {v: os.environ.get(v) for v in
                        ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                         "OMP_WAIT_POLICY")},
        # PyTorch's CPU allocator asks for transparent huge pages when this is "1": large
        # fresh tensors then cost far fewer page faults (a large effect on some VMs)
        "THP_MEM_ALLOC_ENABLE": os.environ.get("THP_MEM_ALLOC_ENABLE"),
        "git_commit": _git_commit(),
        "argv": sys.argv[1:],
    }


# ------------------------------------------------------------------------ the floor
def copy_bandwidth(n_bytes: int = 1 << 28, repeats: int = 5) -> dict:
    """Memory-bandwidth floor of this run: a large tensor copy (read + write).

    Returns ``{"bytes": n, "seconds": median, "gb_per_s": 2 n / median / 1e9}``
    (counting the bytes read and written).
    """
    import torch

    src = torch.ones(n_bytes // 8, dtype=torch.float64)  # explicit: tests change the default
    dst = torch.empty_like(src)
    t = measure(lambda: dst.copy_(src), repeats=repeats, warmup=1)
    return {"bytes": n_bytes, "seconds": t.seconds, "gb_per_s": 2 * n_bytes / t.seconds / 1e9}


def matmul_throughput(m: int, k: int, n: int, dtype=None, repeats: int = 5) -> dict:
    """Measured GEMM rate for an ``(m, k) @ (k, n)`` product, ``{"gflop_per_s", ...}``."""
    import torch

    dtype = dtype or torch.float32
    a = torch.randn(m, k, dtype=dtype)
    b = torch.randn(k, n, dtype=dtype)
    out = torch.empty(m, n, dtype=dtype)
    reps = max(1, int(2e8 // max(1, 2 * m * k * n)))  # ~0.2 GFLOP per timed call
    t = measure(lambda: [torch.mm(a, b, out=out) for _ in range(reps)], repeats=repeats)
    return {"shape": [m, k, n], "seconds": t.seconds / reps,
            "gflop_per_s": 2 * m * k * n * reps / t.seconds / 1e9,
            "cpu_per_wall": t.cpu_seconds / t.seconds}


# ------------------------------------------------------------------------- printing
def _fmt_time(s: float | None) -> str:
    if s is None:
        return "-"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.1f} ms"
    return f"{s * 1e6:.0f} us"


def _fmt_ratio(r: float | None, label: str) -> str:
    if r is None:
        return "-"
    if label == "cost exponent in T":
        return f"T^{r:.2f}"
    num = f"{r:.3g}" if r < 1000 else f"{r:.0f}"
    return f"{num}x {label}".rstrip()


def _fmt_config(c: dict, width: int = 52) -> str:
    s = " ".join(f"{k}={v}" for k, v in c.items())
    return s if len(s) <= width else s[: width - 1] + "…"


def format_table(rows: list[dict]) -> str:
    """The one table: every row of the run, grouped by section."""
    cols = ("sec", "benchmark", "config", "wall", "cpu", "ratio", "target", "met")
    body = []
    for r in rows:
        met = {True: "yes", False: "NO", None: ""}[r["met"]]
        if r["status"] != "ok":
            met = r["status"]
        ratio = _fmt_ratio(r["ratio"], r["ratio_label"])
        if r["status"] != "ok" and r["note"]:
            ratio = r["note"][:60]
        body.append((r["section"], r["name"], _fmt_config(r["config"]),
                     _fmt_time(r["seconds"]), _fmt_time(r["cpu_seconds"]), ratio,
                     r["target"] or "", met))
    widths = [max(len(c), *(len(b[i]) for b in body)) if body else len(c)
              for i, c in enumerate(cols)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()
    out = [line(cols), line("-" * w for w in widths)]
    prev = None
    for b in body:
        if prev is not None and b[0] != prev:
            out.append("")
        out.append(line(b))
        prev = b[0]
    return "\n".join(out)


def write_json(path: Path, head: dict, rows: list[dict]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps({"header": head, "sections": SECTIONS, "rows": rows},
                              indent=1) + "\n")
    os.replace(tmp, path)
    return path


def fit_exponent(xs, ys) -> float:
    """Least-squares slope of log y against log x (the cost exponent)."""
    lx = [math.log(x) for x in xs]
    ly = [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    sxx = sum((a - mx) ** 2 for a in lx)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sxx if sxx > 0 else float("nan")


def compiled_vs_eager(section: str, name: str, make_step, *, config: dict, eager_s: float,
                      repeats: int = 3) -> dict:
    """A row timing ``make_step(compile=True)()`` against an eager time measured in the
    same run: the first call (compilation included) and the median of later calls; ratio
    = compiled / eager (below 1: compiling pays). A fallback to eager is reported."""
    import warnings

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            step, model = make_step(True)
            w0 = time.perf_counter()
            step()
            first = time.perf_counter() - w0
            t = measure(step, repeats=repeats, warmup=0)
        fell_back = [str(w.message) for w in caught if "torch.compile failed" in str(w.message)]
    except Exception as exc:  # pragma: no cover - reported, not raised
        return unavailable(section, name, f"{type(exc).__name__}: {exc}", status="error")
    return row(section, name, config={**config, "compile": True}, timing=t,
               ratio=t.seconds / eager_s, ratio_label="compiled / eager",
               values={"eager_s": eager_s, "first_call_s": first,
                       "fell_back_to_eager": bool(fell_back)},
               note=fell_back[0][:120] if fell_back else "")
