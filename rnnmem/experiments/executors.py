"""Executors: where the runs of a protocol are made, behind one interface.

:func:`execute` takes a protocol (or runs), skips every run already complete in the store,
checks the others before anything starts (the configurations, the resources), and hands
the rest to an executor:

``"local"`` (:class:`LocalExecutor`)
    In this process, one run after the other; ``jobs=N`` runs ``N`` at once in a process
    pool.
``"ray"``, ``"ray:ADDRESS"``, ``"ray:auto"`` (:class:`RayExecutor`)
    One Ray task per run (``num_cpus``/``num_gpus`` from the run's resources, fractional
    GPUs allowed, ``max_retries`` when a worker dies). ``"ray"`` starts a local instance,
    ``"ray:ADDRESS"`` joins a cluster. Workers write into the shared store.

An executor's ``map(runs, store, on_event)`` makes every run complete in the store and
reports ``("start" | "trained" | "reused" | "cached" | "failed", run, detail)`` events
(``reused``: completed from the stored weights of a run with the same training); the
progress display (:class:`Progress`) counts them: a tqdm bar across runs (done, running,
failed, ETA) on a terminal, plain log lines every ``log_every`` seconds otherwise.

Two processes executing the same protocol on one store train each run once: a run is
trained under its lock (:meth:`RunStore.lock`); a process that finds a run locked goes on
with the others and reads that run when the lock is released.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Callable, Iterable

from ..errors import ExecutorError, InvalidParameterError
from .run import Run, code_digest
from .store import Results, RunStore
from .worker import CACHED, DONE, LOCKED, REUSED, run_one

__all__ = ["execute", "get_executor", "LocalExecutor", "RayExecutor", "Progress",
           "SweepReport"]

Event = Callable[[str, Run, str], None]


class SweepReport(dict):
    """Counts and details of one execution: ``trained``, ``reused`` (completed from the
    stored weights of a run with the same training), ``cached``, ``failed`` (hash ->
    message), ``retried`` (hash -> attempts), ``seconds``."""


# ====================================================================== progress
class Progress:
    """Runs done / running / failed, with ETA: tqdm on a terminal, else a log line every
    ``log_every`` seconds (and at the end) on ``stream``."""

    def __init__(self, total: int, *, enabled: bool = True, stream=None, log_every: float = 10.0,
                 desc: str = "runs"):
        self.total, self.stream = total, stream or sys.stderr
        self.done = self.running = self.failed = self.cached = 0
        self.enabled, self.log_every = enabled, log_every
        self.t0 = self.last = time.monotonic()
        self.bar = None
        if enabled and hasattr(self.stream, "isatty") and self.stream.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="run", file=self.stream,
                            dynamic_ncols=True)

    def __call__(self, event: str, run: Run, detail: str = "") -> None:
        if event == "start":
            self.running += 1
        elif event == "skip":  # complete in the store before this execution started
            self.done += 1
            self.cached += 1
            if self.bar is not None:
                self.bar.update(1)
        elif event in ("trained", "reused", "cached", "failed"):
            self.running = max(0, self.running - 1)
            if event == "failed":
                self.failed += 1
            else:
                self.done += 1
                self.cached += event == "cached"
            if self.bar is not None:
                self.bar.update(1)
        if self.bar is not None:
            self.bar.set_postfix(done=self.done, running=self.running, failed=self.failed)
        elif self.enabled:
            now = time.monotonic()
            if event == "failed" or now - self.last >= self.log_every:
                self.last = now
                self._line(f" ({detail[:200]})" if event == "failed" else "")

    def _line(self, extra: str = "") -> None:
        n = self.done + self.failed
        self._ended = n == self.total
        el = time.monotonic() - self.t0
        trained = self.done - self.cached
        eta = (el / trained * (self.total - n)) if trained and n < self.total else 0.0
        print(f"[rnnmem] runs {n}/{self.total}: {self.done} done ({self.cached} from the "
              f"store), {self.running} running, {self.failed} failed; {el:.0f}s elapsed, "
              f"eta {eta:.0f}s{extra}", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and not getattr(self, "_ended", False):
            self._line()


# ====================================================================== local
class LocalExecutor:
    """In this process (``jobs=1``) or in a pool of ``jobs`` processes."""

    name = "local"

    def __init__(self, jobs: int = 1):
        if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
            raise InvalidParameterError(f"jobs: must be an integer >= 1, got {jobs!r}")
        self.jobs = jobs

    def check(self, runs: list[Run]) -> None:
        _check_gpus(runs, _local_gpus(), "this machine")

    def map(self, runs: list[Run], store: RunStore, on_event: Event) -> None:
        root = str(store.root)
        pending = list(runs)
        if self.jobs == 1:
            waiting = []
            for run in pending:  # first pass: never wait for another process's run
                on_event("start", run, "")
                try:
                    status = run_one(run, store, wait=False, executor=self.name)
                except Exception as exc:  # noqa: BLE001 - reported, the sweep goes on
                    on_event("failed", run, f"{type(exc).__name__}: {exc}")
                    continue
                if status == LOCKED:
                    waiting.append(run)
                else:
                    on_event(status, run, "")
            for run in waiting:  # then wait for the others' runs
                try:
                    status = run_one(run, store, wait=True, executor=self.name)
                    on_event(status, run, "")
                except Exception as exc:  # noqa: BLE001
                    on_event("failed", run, f"{type(exc).__name__}: {exc}")
            return
        import concurrent.futures as cf
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        code = code_digest()
        with cf.ProcessPoolExecutor(max_workers=self.jobs, mp_context=ctx) as pool:
            futs = {}
            for run in pending:
                futs[pool.submit(run_one, run.to_json(), root, wait=False,
                                 executor=f"local:{self.jobs}", code=code)] = run
                on_event("start", run, "")
            waiting = []
            for fut in cf.as_completed(futs):
                run = futs[fut]
                try:
                    status = fut.result()
                except Exception as exc:  # noqa: BLE001
                    on_event("failed", run, f"{type(exc).__name__}: {exc}")
                    continue
                if status == LOCKED:
                    waiting.append(run)
                else:
                    on_event(status, run, "")
            for run in waiting:
                try:
                    on_event(run_one(run.to_json(), root, wait=True, executor=self.name),
                             run, "")
                except Exception as exc:  # noqa: BLE001
                    on_event("failed", run, f"{type(exc).__name__}: {exc}")


def _local_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _check_gpus(runs: list[Run], available: float, where: str) -> None:
    need = [r for r in runs if r.resources.num_gpus > 0]
    if need and available <= 0:
        raise ExecutorError(f"resources.num_gpus: {len(need)} run(s) ask for a GPU "
                            f"({need[0].resources.num_gpus:g} each) but {where} has none")
    for r in need:
        if r.resources.num_gpus > max(available, 0):
            raise ExecutorError(f"resources.num_gpus: a run asks for "
                                f"{r.resources.num_gpus:g} GPUs, {where} has {available:g}")


# ====================================================================== ray
class RayExecutor:
    """One Ray task per run; ``address=None`` starts a local instance (``num_cpus`` of
    it: ``ray_num_cpus``), ``"auto"`` or ``"HOST:PORT"`` joins a running cluster."""

    name = "ray"

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None,
                 poll_s: float = 0.2):
        self.address, self.num_cpus, self.poll_s = address, num_cpus, poll_s
        self.started_here = False

    def _ray(self):
        try:
            import ray
        except ImportError:
            raise ExecutorError("the ray executor needs Ray: pip install 'rnnmem[ray]'") \
                from None
        return ray

    def connect(self):
        ray = self._ray()
        if ray.is_initialized():
            return ray
        kw = dict(include_dashboard=False, log_to_driver=False,
                  configure_logging=True, logging_level="ERROR")
        if self.address not in (None, "auto"):
            _check_reachable(self.address)
        try:
            if self.address is None:
                ray.init(num_cpus=self.num_cpus, **kw)
                self.started_here = True
            else:
                ray.init(address=self.address, **kw)
        except Exception as exc:  # ConnectionError, RuntimeError, ValueError ...
            msg = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            raise ExecutorError(f"executor ray:{self.address or ''}: cannot start or reach "
                                f"Ray ({type(exc).__name__}: {msg})") from None
        return ray

    def check(self, runs: list[Run]) -> None:
        ray = self.connect()
        res = ray.cluster_resources()
        _check_gpus(runs, float(res.get("GPU", 0)), "the Ray cluster")
        cpus = float(res.get("CPU", 0))
        for r in runs:
            if r.resources.num_cpus > cpus:
                raise ExecutorError(f"resources.num_cpus: a run asks for "
                                    f"{r.resources.num_cpus:g} CPUs, the Ray cluster has "
                                    f"{cpus:g}")

    def map(self, runs: list[Run], store: RunStore, on_event: Event) -> None:
        ray = self.connect()
        remote = ray.remote(_ray_task)
        root, code = str(store.root), code_digest()
        refs = {}
        for run in runs:
            r = run.resources
            ref = remote.options(num_cpus=r.num_cpus, num_gpus=r.num_gpus,
                                 max_retries=r.max_retries, retry_exceptions=False
                                 ).remote(run.to_json(), root, code)
            refs[ref] = run
            on_event("start", run, "")
        left = list(refs)
        while left:
            ready, left = ray.wait(left, num_returns=1, timeout=None)
            for ref in ready:
                run = refs[ref]
                try:
                    status = ray.get(ref)
                    on_event(status, run, "")
                except Exception as exc:  # noqa: BLE001 - a worker died too often, or raised
                    on_event("failed", run, _ray_error(exc))

    def shutdown(self) -> None:
        if self.started_here:
            self._ray().shutdown()
            self.started_here = False


def _check_reachable(address: str, timeout: float = 3.0) -> None:
    """A TCP connection to ``HOST:PORT`` (or ``ray://HOST:PORT``) within ``timeout``
    seconds; Ray itself would retry for minutes."""
    import socket

    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ExecutorError(f"executor ray:{address}: expected ray:HOST:PORT, "
                            f"ray:ray://HOST:PORT or ray:auto")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise ExecutorError(f"executor ray:{address}: no Ray cluster reachable there "
                            f"({exc.strerror or type(exc).__name__}); start one with "
                            f"`ray start --head` or use --executor ray") from None


def _ray_task(run_json: str, root: str, code: str | None = None) -> str:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return run_one(run_json, root, wait=True, executor="ray", code=code)


def _ray_error(exc: Exception) -> str:
    cause = getattr(exc, "cause", None)
    text = str(cause or exc).strip().splitlines()
    return f"{type(cause or exc).__name__}: {text[-1][:300] if text else ''}"


# ====================================================================== execute
def get_executor(spec="local", *, jobs: int = 1):
    """``"local"``, ``"ray"``, ``"ray:ADDRESS"``/``"ray:auto"``, or an executor object."""
    if not isinstance(spec, str):
        if hasattr(spec, "map") and hasattr(spec, "check"):
            return spec
        raise InvalidParameterError(f"executor: must be 'local', 'ray' or 'ray:ADDRESS', "
                                    f"got {spec!r}")
    if spec == "local":
        return LocalExecutor(jobs)
    if spec == "ray" or spec.startswith("ray:"):
        address = spec[4:] or None if spec.startswith("ray:") else None
        return RayExecutor(address, num_cpus=jobs if jobs > 1 else None)
    raise InvalidParameterError(f"executor: must be 'local', 'ray' or 'ray:ADDRESS', "
                                f"got {spec!r}")


def _check_perturbation(run: Run, model) -> None:
    """The run's perturbation options checked together on its (untrained) model before
    anything trains: the perturbed parameters exist, the norm fits their shapes, the
    ``distribution_by_name`` keys match, a deterministic direction has one repeat
    (:func:`rnnmem.train.perturb.check_direction_options`)."""
    pt = run.evaluate.perturbation
    if pt is None or model is None:
        return
    from ..train.perturb import check_direction_options, perturbed_parameters

    try:
        m = model
        if pt["evaluation_form"]:
            form = getattr(model, "evaluation_form", None)
            m = form() if callable(form) else model
        params = perturbed_parameters(m, pt["scope"], list(pt["parameters"])
                                      if pt["parameters"] else None)
        shapes = {n: (tuple(q.shape), q.is_complex()) for n, q in params.items()}
        check_direction_options(shapes, norm=pt["norm"], distribution=pt["distribution"],
                                repeats=pt["repeats"],
                                distribution_by_name=dict(pt["distribution_by_name"]) or None)
    except InvalidParameterError as exc:
        exc.args = (f"evaluate.perturbation ({run.label()}): {exc}",)
        exc.field = "evaluate.perturbation"
        raise


def validate_runs(runs: Iterable[Run]) -> None:
    """Every distinct model configuration is built once (on the CPU) and every task name
    looked up before anything runs, so that a mistyped option fails at once and by name
    (``exc.option`` holds the rejected option's name when the model says which)."""
    import re

    from ..errors import UnknownNameError
    from ..models.registry import build_model
    from ..train.tasks import task_names

    runs = list(runs)
    seen: dict = {}
    for run in runs:
        key = (run.model, tuple(sorted((k, repr(v)) for k, v in run.model_options.items())))
        if key in seen:
            _check_perturbation(run, seen[key])
            continue
        seen[key] = None
        try:
            seen[key] = build_model(run.model, **dict(run.model_options), device="cpu")
        except TypeError as exc:
            if "required positional argument" in str(exc):
                continue  # filled in from the task's model defaults (e.g. a vocabulary size)
            m = re.search(r"keyword argument '(\w+)'", str(exc))
            opt = m.group(1) if m else None
            err = InvalidParameterError(
                f"model.{opt}: {run.model!r} has no option {opt!r}" if opt else
                f"model: {run.model!r} rejects its options: {exc}")
            err.field, err.option, err.value = (f"model.{opt}" if opt else "model"), opt, None
            raise err from None
        except InvalidParameterError as exc:  # the model's own check names the option
            opt = next((k for k in run.model_options if str(exc).startswith(k)), None)
            err = InvalidParameterError(f"model.{opt}: {exc}" if opt
                                        else f"model ({run.model}): {exc}")
            err.field = f"model.{opt}" if opt else "model"
            err.option, err.value = opt, run.model_options.get(opt) if opt else None
            raise err from None
        _check_perturbation(run, seen[key])
    names = set(task_names())  # prefixed families listed by name, "<prefix>:<name>" if not
    for run in runs:
        prefix = run.task.split(":", 1)[0]
        if run.task not in names and f"{prefix}:<name>" not in names:
            err = UnknownNameError("task", run.task, sorted(names))
            err.field = "task.name"
            raise err


def execute(protocol_or_runs, *, store: RunStore | str | None = None, executor="local",
            jobs: int = 1, progress: bool = True, stream=None) -> Results:
    """Make every run of ``protocol_or_runs`` complete in ``store`` and return the results.

    Parameters
    ----------
    protocol_or_runs : Protocol or iterable of Run
    store : RunStore or path, optional (default :func:`default_store_root`)
    executor : ``"local"``, ``"ray"``, ``"ray:ADDRESS"``, ``"ray:auto"`` or an executor
    jobs : int
        Processes of the local executor (CPUs of a local Ray instance).
    progress : bool
        Show progress (tqdm on a terminal, log lines otherwise) on ``stream`` (stderr).

    Returns
    -------
    Results
        The finished runs in protocol order (``failed`` names the runs that did not
        finish, with the error; ``report`` is a :class:`SweepReport`).
    """
    protocol = protocol_or_runs if hasattr(protocol_or_runs, "runs") else None
    runs = protocol.runs() if protocol is not None else list(protocol_or_runs)
    if not all(isinstance(r, Run) for r in runs):
        raise InvalidParameterError("runs: expected Run objects")
    store = store if isinstance(store, RunStore) else RunStore(store)
    todo = [r for r in runs if not store.has(r)]
    report = SweepReport(total=len(runs), trained=0, reused=0, cached=len(runs) - len(todo),
                         failed={}, retried={}, seconds=0.0)
    t0 = time.monotonic()
    before = {r.hash: store.attempts(r) for r in todo}
    if todo:
        store.ensure_writable()
        store.clean_temporaries()  # left by killed writers (a live writer holds its lock)
        validate_runs(todo)
        ex = get_executor(executor, jobs=jobs)
        ex.check(todo)
        bar = Progress(len(runs), enabled=progress, stream=stream,
                       desc=protocol.name if protocol is not None else "runs")
        todo_hashes = {r.hash for r in todo}
        for r in runs:
            if r.hash not in todo_hashes:
                bar("skip", r, "")

        def on_event(event, run, detail):
            if event in (DONE, REUSED, CACHED):
                report[{DONE: "trained", REUSED: "reused", CACHED: "cached"}[event]] += 1
            elif event == "failed":
                report["failed"][run.hash] = detail
            bar(event, run, detail)

        try:
            # runs that share a training (same Run.training_hash, e.g. an ablation that
            # changes only the evaluation) are trained once: the first of each group goes
            # in a first wave, the others then evaluate its stored weights
            first, seen = [], set()
            for r in todo:
                if r.training_hash not in seen:
                    seen.add(r.training_hash)
                    first.append(r)
            lead = {id(r) for r in first}
            rest = [r for r in todo if id(r) not in lead]
            for wave in (first, rest):
                if wave:
                    ex.map(wave, store, on_event)
        finally:
            bar.close()
            if isinstance(ex, RayExecutor):
                ex.shutdown()
        for r in todo:  # a run started more than once in this execution was retried
            n = store.attempts(r) - before[r.hash]
            if n > 1:
                report["retried"][r.hash] = n
    report["seconds"] = time.monotonic() - t0
    done = [r for r in runs if store.has(r)]
    results = Results([store.load(r) for r in done],
                      missing=[r for r in runs if not store.has(r)],
                      failed=report["failed"], store=store, protocol=protocol, report=report)
    return results
