"""One run, start to finish, in whichever process a scheduler chose: :func:`run_one`.

``run_one(run_json, store_root)`` is a pure function of its arguments (Ray's unit of work):
it returns at once if the run is complete in the store, else takes the run's lock, trains
(:func:`rnnmem.train.train`, in memory), evaluates what the run asks for, and writes
every file into a temporary directory that the store renames into place
(:meth:`RunStore.writing`). A run whose training diverges is a result too (status
``"diverged"``, the error kept), so it is not started again.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from ..errors import TrainingDivergedError
from ..files import to_jsonable
from .run import CODE_ENV, Run, code_digest
from .store import RunStore

__all__ = ["run_one", "provenance", "LOCKED", "DONE", "CACHED", "REUSED"]

DONE, CACHED, LOCKED = "trained", "cached", "locked"
#: the run was completed by evaluating the stored weights of a run with the same training
REUSED = "reused"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@functools.lru_cache(maxsize=1)
def _git_commit() -> str | None:
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


@functools.lru_cache(maxsize=1)
def _versions() -> dict:
    import numpy
    import scipy
    import sympy
    import torch

    from .. import __version__

    return {"rnnmem": __version__, "python": platform.python_version(),
            "torch": torch.__version__, "numpy": numpy.__version__,
            "scipy": scipy.__version__, "sympy": sympy.__version__}


def _put_json(path: Path, obj) -> None:
    """A JSON file inside the run's temporary directory (made durable, checked and renamed
    with the whole directory by :meth:`RunStore.writing`)."""
    path.write_text(json.dumps(to_jsonable(obj), indent=1, sort_keys=True, allow_nan=False)
                    + "\n", encoding="utf-8")


def cpu_model() -> str | None:
    """The processor's model name (``/proc/cpuinfo``, else :func:`platform.processor`),
    None where neither says."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _cpu() -> dict:
    """The processor the run's arithmetic ran on: its model name (:func:`cpu_model`) and
    the instruction set torch dispatches its CPU kernels to. The matrix products of torch's
    BLAS may round differently on another processor, or with another thread count
    (measured: MKL, AMD EPYC with AVX-512, a (7, 20) x (20, 21) float64 product differs in
    its last bit between 1 and 3 threads), and a training run amplifies such differences:
    two runs of one protocol agree bit for bit only on the same kind of processor with the
    same ``threads`` and, above one thread, the same ``serial_step_work``
    (:data:`rnnmem.models._device.SERIAL_STEP_WORK`, set by the OpenMP wait policy: step
    loops whose steps are smaller run on one thread)."""
    import torch

    from ..models import _device

    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except Exception:  # an older torch  # pragma: no cover
        capability = None
    return {"model": cpu_model(), "machine": platform.machine(), "capability": capability,
            "serial_step_work": _device.SERIAL_STEP_WORK}


def provenance(run: Run, *, device: str, threads: int, started: str, executor: str,
               attempt: int) -> dict:
    """Where, when and with what the run was made."""
    return {"versions": _versions(), "git_commit": _git_commit(), "device": device,
            "threads": threads, "seed": run.seed, "command": list(sys.argv),
            "host": socket.gethostname(), "platform": platform.platform(), "cpu": _cpu(),
            "pid": os.getpid(), "started": started, "ended": _now(), "executor": executor,
            "attempt": attempt, "hash": run.hash, "code": code_digest()}


def run_one(run_json: str | Run, store_root: str | RunStore, *, wait: bool = True,
            executor: str = "local", code: str | None = None) -> str:
    """Make the run (its JSON, or the Run in this process) complete in the store; return
    ``"trained"``, ``"reused"`` (completed by evaluating the stored weights of a run with the
    same training, :meth:`.RunStore.trained_by`), ``"cached"`` (it was
    already there, or another process finished it while this one waited) or ``"locked"``
    (another process is training it and ``wait`` is false). ``code``: the caller's
    :func:`~rnnmem.experiments.code_digest`; a worker whose own differs (another rnnmem on
    a cluster node) refuses the run by name rather than store it under another hash. A
    label the caller set by hand (``$RNNMEM_RUN_CODE``, not a ``sha256:`` digest) is
    adopted: a Ray worker does not inherit the caller's environment."""
    from ..errors import DirectoryLockedError, ExecutorError

    if code is not None and not code.startswith("sha256:"):
        os.environ[CODE_ENV] = code
    elif code is not None and code != code_digest():
        raise ExecutorError(
            f"this worker ({socket.gethostname()}) runs other rnnmem code than the caller "
            f"(code {code_digest()[:19]} here, {code[:19]} there): install the same rnnmem "
            "(and torch, numpy, scipy, sympy) on every node")

    run = run_json if isinstance(run_json, Run) else Run.from_json(run_json)
    store = store_root if isinstance(store_root, RunStore) else RunStore(store_root)
    if store.has(run):
        return CACHED
    store.ensure_writable()
    lock = store.lock(run)
    try:
        lock.acquire(blocking=wait)
    except DirectoryLockedError:
        return LOCKED
    try:
        if store.has(run):
            return CACHED
        attempt = store._count_attempt(run.hash)
        marker = run.resources.test_exit_once
        if marker and not os.path.exists(marker):
            Path(marker).write_text(f"{os.getpid()}\n")
            os._exit(17)  # test only: a worker killed on its first attempt
        reused = _train_and_write(run, store, executor=executor, attempt=attempt)
        return REUSED if reused else DONE
    finally:
        lock.release()


def _train_and_write(run: Run, store: RunStore, *, executor: str, attempt: int) -> bool:
    """Train (or evaluate the shared training of) ``run`` and write it; True when the
    weights came from another run."""
    import torch

    from ..models._device import resolve_device
    from ..train import train
    from ..train.tasks import build_task

    started, t0 = _now(), time.perf_counter()
    cfg = run.config
    threads = cfg.threads or max(1, int(run.resources.num_cpus))
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        t_train = time.perf_counter()  # building the task is part of training, as in train()
        extra = {"bptt": cfg.bptt} if cfg.bptt is not None else {}
        task = build_task(cfg.task, **dict(cfg.task_kwargs), **extra)
        steps, losses = [], []

        def watch(step, loss):
            steps.append(step)
            losses.append(loss)
            return False

        status, error, res = "ok", None, None
        source = store.trained_by(run)
        if source is not None:  # the same training is in the store: evaluate its weights
            res, steps, losses = _reuse_training(store, source, cfg, task)
        else:
            try:
                res = train(cfg.replace(threads=threads), task=task, progress=False,
                            callback=watch)
            except TrainingDivergedError as exc:
                status, error = "diverged", str(exc)
        t_train = time.perf_counter() - t_train
        if res is not None and res.stopped not in ("completed", "target_loss"):
            # Ctrl-C (or SIGTERM) stopped training early: that is not this run's result, so
            # nothing is stored and the sweep stops (finished runs stay in the store)
            raise KeyboardInterrupt(f"run {run.short} interrupted at step {res.steps}")
        with store.writing(run) as d:
            _put_json(d / "run.json", {"hash": run.hash, "run": run.to_dict()})
            history = res.history if res is not None else []
            _put_json(d / "curve.json", {"history": history, "step": steps, "loss": losses})
            evaluation, scalars = {}, {}
            if res is not None:
                from ..models.registry import save_checkpoint

                save_checkpoint(d / "model.pt", res.model)
                evaluation, scalars = _evaluate(run, res.model, task)
                _put_json(d / "evaluations.json", evaluation)
            metrics = {"status": status, "final": res.final_metrics if res else {},
                       "evaluation": scalars, "steps": res.steps if res else
                       (steps[-1] if steps else 0), "stopped": res.stopped if res else status,
                       "train_s": t_train, "elapsed_s": time.perf_counter() - t0}
            if error:
                metrics["error"] = error
            if source is not None:
                metrics["weights_from"] = source
            _put_json(d / "metrics.json", metrics)
            _tensorboard(d / "tensorboard", run, history, steps, losses, cfg.log_every)
            _put_json(d / "provenance.json",
                       provenance(run, device=str(resolve_device(cfg.device)), threads=threads,
                                  started=started, executor=executor, attempt=attempt)
                       | ({"weights_from": source} if source is not None else {}))
        if status == "ok" and source is None:
            store.note_training(run)
        return source is not None
    finally:
        torch.set_num_threads(old_threads)


def _reuse_training(store: RunStore, source: str, cfg, task):
    """``(result, steps, losses)`` of the training stored in run ``source`` (same
    :attr:`Run.training_hash`): its weights (checked against their digest), its final
    metrics and curves; ``task`` is configured as :func:`rnnmem.train.train` configures
    it, so that the evaluations read the same data."""
    from types import SimpleNamespace

    from ..models._device import resolve_device, resolve_dtype

    src = store.load(source)
    device = resolve_device(cfg.device)
    model = src.model(device=str(device))
    dtype = next((p.dtype for p in model.parameters()), resolve_dtype(cfg.dtype))
    task.configure(device=device, dtype=dtype, batch_size=cfg.batch_size, seed=cfg.seed,
                   temporal_weighting=cfg.temporal_weighting)
    curve, m = src.curve(), src.metrics
    res = SimpleNamespace(model=model, history=curve.get("history", []),
                          final_metrics=m.get("final", {}), steps=m.get("steps", 0),
                          stopped=m.get("stopped", "completed"))
    return res, list(curve.get("step", [])), list(curve.get("loss", []))


def _evaluate(run: Run, model, task) -> tuple[dict, dict]:
    """The evaluations the run asks for: full results and their scalar summaries.

    An evaluation that is undefined for the trained model (e.g. the memory function of a
    model whose recurrence left the stable region: :class:`UnstableSystemError`) is a
    result too: ``{"error": message}`` in both, the other evaluations go on."""
    from ..errors import RnnmemError

    ev = run.evaluate
    out, scalars = {}, {}
    model.eval()
    for name, fn in (("memory_function", _eval_memory), ("perturbation", _eval_perturbation),
                     ("lengths", _eval_lengths), ("splits", _eval_splits),
                     ("dm", _eval_dm), ("ns", _eval_ns)):
        if not getattr(ev, name):
            continue
        try:
            out[name], scalars[name] = fn(run, model, task)
        except RnnmemError as exc:
            msg = f"{type(exc).__name__}: {exc}"
            out[name], scalars[name] = {"error": msg}, {"error": msg}
    return to_jsonable(out), to_jsonable(scalars)


_TIMING_KEYS = ("time_s", "timing", "seconds")


def _eval_memory(run, model, task):
    import numpy as np

    mf = run.evaluate.memory_function
    t = np.linspace(0.0, mf["t_max"], mf["n"])
    values = np.asarray(model.memory_function(t, **dict(mf["options"])), dtype=float)
    return ({"t": t, "values": values},
            {"max": float(np.max(np.abs(values))), "at_t_max": float(values[-1])})


def _eval_perturbation(run, model, task):
    import numpy as np

    from ..train.perturb import EvalSet, perturbation_curve

    ev = run.evaluate
    pt = ev.perturbation
    es = EvalSet.from_task(task, max_samples=pt["n_eval"])
    curve = perturbation_curve(model, es, np.array(ev.betas()), repeats=pt["repeats"],
                               scope=pt["scope"], norm=pt["norm"], seed=run.seed,
                               method=pt["method"], shared_directions=pt["shared_directions"],
                               distribution=pt["distribution"],
                               distribution_by_name=dict(pt["distribution_by_name"]) or None,
                               evaluation_form=pt["evaluation_form"],
                               parameters=(list(pt["parameters"]) if pt["parameters"]
                                           else None))
    # wall times are left out (metrics.json has the run's), so that evaluations.json is
    # the same bits on every machine
    meta = {k: v for k, v in dict(curve.meta).items() if k not in _TIMING_KEYS}
    return ({"betas": curve.betas, "samples": curve.samples, "sup": curve.sup,
             "envelope": curve.envelope, "e0": curve.e0, "meta": meta},
            {"e0": float(curve.e0), "envelope_max": float(np.max(curve.envelope))})


def _eval_lengths(run, model, task):
    from ..errors import InvalidParameterError
    from ..train.evaluate import evaluate_lengths

    ln = run.evaluate.lengths
    language = ln["language"] or (run.task.split(":", 1)[1] if run.task.startswith("lang:")
                                  else None)
    if language is None:
        raise InvalidParameterError("evaluate.lengths.language: needed for a task that is "
                                    f"not lang:<language> ({run.task!r})")
    d = evaluate_lengths(model, language, **dict(ln["options"])).to_dict()
    return d, {k: v for k, v in d.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _eval_splits(run, model, task):
    import torch

    full, flat = {}, {}
    with torch.no_grad():
        for split in run.evaluate.splits:
            m = {k: float(v) for k, v in task.evaluate(model, split).items()}
            full[split] = m
            flat.update({f"{split}_{k}": v for k, v in m.items()})
    return full, flat


def _range(spec) -> range | list:
    if isinstance(spec, str):
        lo, _, hi = spec.partition(":")
        return range(int(lo), int(hi or lo) + 1)
    return list(spec)


def _eval_dm(run, model, task):
    """DeepMind's protocol at each stack depth: per-length curves (test and training
    lengths), the score, and the retained ratio score(test) / score(train)."""
    from ..tasks.transduction_task import transduction_lengths
    from ..tasks.transductions import get_transduction
    from ..train.length_protocols import evaluate_dm_depths

    dm = run.evaluate.dm
    t = get_transduction(run.task.split(":", 1)[1])
    test = transduction_lengths(t, _range(dm["lengths"]))
    train = transduction_lengths(t, _range(dm["train_lengths"]))
    depths = [None if d == "sequence" else int(d) for d in dm["depths"]]
    skipped = []
    if getattr(model, "stack_kind", None) == "nondeterministic":
        # no depth limit to set (its window is a model option): sequence depth only
        skipped = [d for d in depths if d is not None]
        depths = [None]
    kw = dict(k=dm["k"], seed=run.seed, depths=depths, batch_size=dm["batch_size"],
              overflow=dm["overflow"])
    full, flat = {}, {}
    for te, tr in zip(evaluate_dm_depths(model, t, test, **kw),
                      evaluate_dm_depths(model, t, train, **kw)):
        d = te.stack_depth
        retained = te.score / tr.score if tr.score > 0 else float("nan")
        full[d] = {"test": te.to_dict(), "train": tr.to_dict(), "retained": retained}
        flat.update({f"score_{d}": te.score, f"train_score_{d}": tr.score,
                     f"retained_{d}": retained})
    if skipped:
        full["not_applicable"] = skipped
    return full, flat


def _eval_ns(run, model, task):
    """DuSell & Chiang's protocol: cross-entropy above the lower bound per length."""
    from ..train.length_protocols_ns import evaluate_ns

    ns = run.evaluate.ns
    lengths = None
    if ns["lengths"] != "test":
        from ..errors import TaskLengthError
        from ..tasks.dusell import get_cfl_task

        t = get_cfl_task(run.task.split(":", 1)[1])
        lengths = [n for n in _range(ns["lengths"]) if t.has_length(n)]
        if not lengths:
            raise TaskLengthError(f"evaluate.ns.lengths: task {t.name!r} has no string at "
                                  f"any of {ns['lengths']!r}")
    rep = evaluate_ns(model, run.task.split(":", 1)[1], lengths, ns["k"], run.seed,
                      batch_size=ns["batch_size"])
    return rep.to_dict(), {"score": rep.score}


def _tensorboard(logdir: Path, run: Run, history, steps, losses, every: int) -> None:
    """The training curve as TensorBoard events (skipped if tensorboard is missing): the
    batch loss every ``every`` (``train.log_every``) steps and at the last step (every
    step is in ``curve.json``), and every evaluation row, one event per step holding all
    of that step's values (what ``tensorboard --logdir STORE`` reads as scalars)."""
    try:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
        from torch.utils.tensorboard.summary import text
    except ImportError:  # tensorboard is an optional extra
        return
    by_step: dict[int, list] = {}
    for s, v in zip(steps, losses):
        if (s % every == 0 or s == steps[-1]) and v == v:
            by_step.setdefault(int(s), []).append(("train/loss_step", float(v)))
    for row in history:
        step = int(row.get("step", 0))
        for k, v in row.items():
            if k not in ("step", "epoch", "time_s") and isinstance(v, (int, float)) \
                    and v == v:
                by_step.setdefault(step, []).append((f"eval/{k}", float(v)))
    w = EventFileWriter(str(logdir), flush_secs=3600)
    try:
        now = time.time()
        w.add_event(Event(wall_time=now, step=0, summary=text(
            "run", "```\n" + json.dumps(run.to_dict(resources=False), indent=1,
                                         sort_keys=True) + "\n```")))
        for step in sorted(by_step):
            values = [Summary.Value(tag=k, simple_value=v) for k, v in by_step[step]]
            w.add_event(Event(wall_time=now, step=step, summary=Summary(value=values)))
    finally:
        w.close()
