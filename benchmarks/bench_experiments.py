"""(i) Executor overhead per run: the run store and the executors around one training run.

Rows (ratios measured in this run; targets of issue "Experiments as data"):

* **local executor overhead**: one run of the ``smoke-sweep`` family at its ``quick``
  budget (300 steps), without evaluations, made complete in a fresh store by
  :func:`rnnmem.experiments.execute` (validation, lock, training, checkpoint, curve,
  TensorBoard events, provenance, fsync, manifest, rename); overhead = (execute -
  train) / train, with ``train`` the time spent in :func:`rnnmem.train.train` inside that
  same call (``metrics.json``'s ``train_s``), so that the machine's load moves both
  alike; median over repeats; target <= 5%.
* **warm store**: the same ``execute`` when the run is already complete (read and
  checked: the cost of a second invocation, per run).
* **Ray overhead per run**: ``n`` short runs through a local Ray instance with one CPU
  (so they run one after another, like the local loop) minus the same runs in-process,
  per run; target <= 0.5 s. Ray's start-up (once per sweep) is reported in ``values``.

Run alone: ``python -m benchmarks.bench_experiments``.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time

from ._common import row, unavailable

SECTION = "i"


def _quick_run(tiny: bool):
    from rnnmem.experiments import get_protocol

    p = get_protocol("smoke-sweep").at("quick")
    run = p.runs()[0]
    d = run.to_dict()
    d["evaluate"] = {}
    if tiny:
        d["train"]["steps"] = 5
        d["task"]["n_samples"] = 64
    from rnnmem.experiments import Run

    return Run.from_dict(d)


def _local_rows(tiny: bool, quick: bool) -> list[dict]:
    from rnnmem.experiments import RunStore, execute

    run = _quick_run(tiny)
    repeats = 1 if tiny else (3 if quick else 7)
    t_exec, t_train, t_warm = [], [], []
    root = tempfile.mkdtemp(prefix="rnnmem-bench-store-")
    try:
        store = RunStore(root)
        execute([run], store=store, progress=False)  # warm-up: imports, first files
        for _ in range(repeats):
            store.remove(run)
            t0 = time.perf_counter()
            res = execute([run], store=store, progress=False)
            t_exec.append(time.perf_counter() - t0)
            assert res.report["trained"] == 1
            # the training inside this very call (timed by the worker around train())
            t_train.append(res[0].metrics["train_s"])
            t0 = time.perf_counter()
            res = execute([run], store=store, progress=False)
            t_warm.append(time.perf_counter() - t0)
            assert res.report["trained"] == 0
    finally:
        shutil.rmtree(root, ignore_errors=True)
    ratios = [(e - t) / t for e, t in zip(t_exec, t_train)]
    over = statistics.median(ratios)
    tr, ex, wm = (statistics.median(v) for v in (t_train, t_exec, t_warm))
    cfg = {"model": run.model, "task": run.task, "steps": run.config.steps,
           "repeats": repeats}
    return [
        row(SECTION, "local executor overhead (quick-budget run)", config=cfg, seconds=ex,
            repeats=repeats, ratio=over, ratio_label="overhead / training time",
            target="<= 0.05", met=None if tiny else over <= 0.05,
            values={"train_s": tr, "execute_s": ex,
                    "overhead_s": statistics.median(e - t for e, t in zip(t_exec, t_train)),
                    "all_ratios": str([round(v, 4) for v in ratios])}),
        row(SECTION, "warm store: a complete run read back", config=cfg, seconds=wm,
            repeats=repeats, ratio=wm / tr, ratio_label="vs training it",
            values={"train_s": tr}),
    ]


def _ray_rows(tiny: bool, quick: bool) -> list[dict]:
    try:
        import ray
    except ImportError:
        return [unavailable(SECTION, "Ray overhead per run", "ray is not installed")]
    if tiny:
        return [unavailable(SECTION, "Ray overhead per run", "skipped in tiny mode (Ray "
                                                             "starts in seconds)",
                            status="skipped")]
    from rnnmem.experiments import RayExecutor, RunStore, execute

    n = 4 if quick else 8
    base = _quick_run(True)
    runs = [base.replace(seed=s) for s in range(1, n + 1)]
    warm = base.replace(seed=0)
    if ray.is_initialized():
        return [unavailable(SECTION, "Ray overhead per run", "Ray already initialised")]
    t0 = time.perf_counter()
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")
    t_start = time.perf_counter() - t0
    dirs = [tempfile.mkdtemp(prefix="rnnmem-bench-ray-") for _ in range(2)]
    try:
        ex = RayExecutor()
        execute([warm], store=RunStore(dirs[0]), executor=ex, progress=False)  # the worker
        t0 = time.perf_counter()
        r = execute(runs, store=RunStore(dirs[0]), executor=ex, progress=False)
        t_ray = time.perf_counter() - t0
        execute([warm], store=RunStore(dirs[1]), progress=False)
        t0 = time.perf_counter()
        loc = execute(runs, store=RunStore(dirs[1]), progress=False)
        t_local = time.perf_counter() - t0
        ok = r.report["trained"] == n and loc.report["trained"] == n
    finally:
        ray.shutdown()
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)
    per = (t_ray - t_local) / n
    return [row(SECTION, "Ray overhead per run (1-CPU instance)",
                config={"runs": n, "steps": base.config.steps}, seconds=t_ray / n, repeats=1,
                ratio=max(per, 0.0), ratio_label="s per run over local", target="<= 0.5 s",
                met=per <= 0.5 if ok else None,
                values={"ray_s": t_ray, "local_s": t_local, "ray_start_s": t_start,
                        "per_run_s_signed": per},
                status="ok" if ok else "error",
                note=("not every run was trained" if not ok else
                      f"Ray {-per * 1e3:.0f} ms/run faster than in-process (within noise)"
                      if per < 0 else ""))]


def run(quick: bool = False, *, tiny: bool = False) -> list[dict]:
    import torch

    old = torch.get_num_threads()
    try:
        return _local_rows(tiny, quick) + _ray_rows(tiny, quick)
    finally:
        torch.set_num_threads(old)


if __name__ == "__main__":  # pragma: no cover
    from ._common import format_table

    print(format_table(run()))
