"""``python -m benchmarks [--quick] [--only SECTION ...] [--json FILE] [--threads N]``

Runs the sections of issue "Speed" in one process and prints ONE table (every row
measured in this run, as ratios: speed-ups, ratios to a floor or a baseline), then writes
the rows and a header (CPU, torch thread count, versions, load average) as JSON, by
default to ``benchmarks/results/latest.json`` (git-ignored).

Sections: (a) linear recurrence (rows of :mod:`benchmarks.bench_recurrence`), (b) memory
function closed form vs black box, (c) one training step per model family, (d)
perturbation sweep batched vs loop, (e) stack RNNs, (f) ``rnnmem verify --budget quick``
(minutes; skipped by ``--quick``), (g) your own model: the amplitude search of Def. 3.1 vs
one amplitude, (h) speed round two (issue 14: CLI start-up, dense closed-form memory, fused
stack update, recurrence buffers), (i) experiment executors: overhead per run.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback
from pathlib import Path

from ._common import (SECTIONS, check_row, copy_bandwidth, cpu_steal, format_table, header,
                      row, set_threads, steal_fraction, unavailable, write_json)

#: a section's share of stolen CPU time above which its timings are flagged
STEAL_WARN = 0.05

#: the module of each section (``a`` is owned by bench_recurrence, adapted below)
MODULES = {"a": "bench_recurrence", "b": "bench_memory", "c": "bench_training",
           "d": "bench_perturb", "e": "bench_stacks", "f": "bench_verify",
           "g": "bench_amplitude", "h": "bench_round2", "i": "bench_experiments"}
BLAS_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "latest.json"


# ------------------------------------------------------------ section (a) adapter
def _recurrence_row(r: dict) -> dict:
    """One row of bench_recurrence (its own dict layout) as a table row."""
    if isinstance(r, dict) and set(r) >= {"section", "name", "status"}:
        check_row(r)
        return r
    kind = r.get("row")
    if kind == "bandwidth":
        return row("a", "copy bandwidth (the floor)", config={"threads": r.get("threads")},
                   values={k: r[k] for k in ("bytes", "copy_GBps", "alloc_copy_GBps")
                           if k in r},
                   note=f"{r.get('copy_GBps', float('nan')):.3g} GB/s copy, "
                        f"{r.get('alloc_copy_GBps', float('nan')):.3g} GB/s allocating copy")
    if kind == "target":
        m = r.get("method")
        is_ref = m == "loop"
        target = None if is_ref else ">= 10x loop, <= 4x floor"
        met = None if is_ref else bool(r.get("meets_10x_loop") and r.get("within_4x_floor"))
        return row("a", f"{m} ({r.get('system', '')})",
                   config={k: r[k] for k in ("B", "T", "N", "dtype") if k in r},
                   seconds=r.get("fwd_bwd_s"), repeats=None, ratio=r.get("speedup_vs_loop"),
                   ratio_label="speed-up vs loop", target=target, met=met,
                   values={k: r[k] for k in ("fwd_s", "fwd_speedup_vs_loop", "floor_s",
                                             "vs_floor", "vs_alloc_floor") if k in r})
    if kind == "exponent":
        times = r.get("fwd_bwd_s") or []
        return row("a", f"{r.get('method')} cost exponent in T",
                   config={"B": r.get("B"), "N": r.get("N"), "T": r.get("T")},
                   seconds=times[-1] if times else None, ratio=r.get("exponent"),
                   ratio_label="cost exponent in T", target="<= 1.1",
                   met=r.get("exponent_le_1.1"),
                   values={"fwd_bwd_s": str(times)})
    if kind == "crossover":  # one cell (see _crossover_summary for the table)
        ratio_key = next((k for k in r if k.endswith("_vs_fastest")), None)
        return row("a", f"crossover {r.get('system', '')}",
                   config={k: r[k] for k in ("B", "N", "T") if k in r},
                   ratio=r.get(ratio_key) if ratio_key else None,
                   ratio_label=ratio_key.replace("_", " ") if ratio_key else "",
                   values={"fastest": r.get("fastest"), "auto": r.get("auto"),
                           "fwd_bwd_s": str(r.get("fwd_bwd_s"))})
    return row("a", str(kind or "recurrence row"),
               values={k: v for k, v in r.items() if k != "bench"} or {"raw": str(r)})


def _run_recurrence(quick: bool, tiny: bool) -> list[dict]:
    try:
        mod = importlib.import_module(".bench_recurrence", __package__)
    except ImportError as exc:
        return [unavailable("a", "linear recurrence", f"benchmarks.bench_recurrence missing "
                                                       f"({exc})")]
    if tiny:
        return [unavailable("a", "linear recurrence", "no tiny mode", status="skipped")]
    raw = mod.run(quick)
    cells = [r for r in raw if isinstance(r, dict) and r.get("row") == "crossover"]
    rows = [_recurrence_row(r) for r in raw if r not in cells]
    return rows + _crossover_summary(cells)


def _crossover_summary(cells: list[dict]) -> list[dict]:
    """The crossover grid as one row per system (every cell kept in ``values``)."""
    out = []
    for system in sorted({c.get("system", "") for c in cells}):
        rows = [_recurrence_row(c) for c in cells if c.get("system", "") == system]
        ratios = [r["ratio"] for r in rows if r["ratio"] is not None]
        label = next((r["ratio_label"] for r in rows if r["ratio_label"]), "vs fastest")
        wins: dict[str, int] = {}
        for r in rows:
            wins[str(r["values"].get("fastest"))] = wins.get(str(r["values"].get("fastest")), 0) + 1
        cells_txt = "; ".join(
            f"B={r['config'].get('B')} N={r['config'].get('N')} T={r['config'].get('T')}: "
            f"{r['values'].get('fastest')}" + (f" ({r['ratio']:.2f})" if r["ratio"] else "")
            for r in rows)
        out.append(row("a", f"crossover grid ({system})", config={"cells": len(rows)},
                       ratio=max(ratios) if ratios else None,
                       ratio_label=f"worst {label}" if ratios else "",
                       values={"fastest_counts": str(wins), "cells": cells_txt}))
    return out


# -------------------------------------------------------------------------- driver
def run_sections(sections, *, quick: bool = False, tiny: bool = False, log=print,
                 steal: dict | None = None) -> list[dict]:
    """The rows of ``sections``; ``steal`` (a dict), when given, gets each section's share
    of CPU time taken by the hypervisor (:func:`~benchmarks._common.steal_fraction`)."""
    rows: list[dict] = []
    for sec in sections:
        t0 = time.perf_counter()
        s0 = cpu_steal()
        log(f"[{sec}] {SECTIONS[sec]} ...")
        try:
            if sec == "a":
                got = _run_recurrence(quick, tiny)
            else:
                mod = importlib.import_module(f".{MODULES[sec]}", __package__)
                got = mod.run(quick, tiny=tiny)
            for r in got:
                check_row(r)
            rows.extend(got)
        except Exception as exc:  # one broken section must not lose the others
            traceback.print_exc(file=sys.stderr)
            rows.append(unavailable(sec, SECTIONS[sec], f"{type(exc).__name__}: {exc}",
                                    status="error"))
        frac = steal_fraction(s0, cpu_steal())
        if steal is not None and frac is not None:
            steal[sec] = round(frac, 4)
        log(f"[{sec}] done in {time.perf_counter() - t0:.1f} s"
            + ("" if frac is None else f" (steal {100 * frac:.0f}%)"))
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="fewer sizes and repetitions; skips (f) rnnmem verify")
    p.add_argument("--only", nargs="+", metavar="SECTION", choices=sorted(SECTIONS),
                   help="run only these sections (a-g)")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON,
                   help=f"where to write the rows (default {DEFAULT_JSON})")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # smoke test
    args = p.parse_args(argv)
    # numpy's BLAS pool too (read when numpy loads; a user's setting is kept)
    for var in BLAS_THREAD_VARS:
        os.environ.setdefault(var, str(args.threads))
    # Idle OpenMP workers sleep instead of spinning (read when torch loads). Measured on the
    # 2-core project VM: with the default policy, 2 threads made the per-step kernels of the
    # recurrent loops 10-30x slower than 1 thread (times quantised to scheduler ticks); with
    # PASSIVE, 2 threads run as fast as 1. A user's setting is kept and recorded.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    set_threads(args.threads)
    head = header()
    bw = copy_bandwidth(1 << 26 if args.tiny else 1 << 28)
    head["copy_bandwidth_GBps"] = round(bw["gb_per_s"], 3)
    head["mode"] = "tiny" if args.tiny else ("quick" if args.quick else "full")
    sections = args.only or list(SECTIONS)
    log = lambda s: print(s, file=sys.stderr, flush=True)
    steal: dict = {}
    rows = run_sections(sections, quick=args.quick, tiny=args.tiny, log=log, steal=steal)
    head["steal_fraction_by_section"] = steal
    head["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    try:
        head["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        pass
    print(f"rnnmem benchmarks ({head['mode']}): {head['cpu']}, torch {head['torch']}, "
          f"{head['torch_threads']} threads, load {head['load_average_at_start']}, "
          f"copy {head['copy_bandwidth_GBps']} GB/s")
    load = head.get("load_average_at_start")
    cpus = head.get("cpu_count") or 1
    if load and args.threads > 1 and load[0] + args.threads > cpus + 0.5:
        print(f"WARNING: load {load[0]} + {args.threads} threads > {cpus} cores: "
              "multi-threaded timings are unreliable here; compare with --threads 1")
    stolen = {sec: f for sec, f in steal.items() if f > STEAL_WARN}
    if stolen:
        print("WARNING: the hypervisor took CPU time from this VM (steal) during section(s) "
              + ", ".join(f"{sec} ({100 * f:.0f}%)" for sec, f in stolen.items())
              + ": their timings, above all of parallel kernels, are unreliable; run them "
              "again (--only) when steal is low")
    print(format_table(rows))
    path = write_json(args.json, head, rows)
    print(f"\nrows: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
