"""Experiments as data: runs, protocols, a content-addressed store, executors.

API summary
-----------
``Run`` (:mod:`.run`)
    One unit of work, frozen: ``Run.make(model, task, seed=, model_options=,
    task_options=, train={TrainConfig fields}, evaluate={memory_function, perturbation,
    lengths, splits, dm, ns}, resources={num_cpus, num_gpus, max_retries})``. ``run.hash`` (SHA-256
    of the canonical JSON + :data:`RESULT_FORMAT` + :func:`code_digest`, the code that
    computes it; resources excluded), ``run.config`` (the
    :class:`rnnmem.train.TrainConfig`), ``to_dict/from_dict``, ``to_json/from_json``,
    ``to_toml/from_toml``, ``run.get("model.width")``, ``run.replace(train__lr=0.1)``.
``Protocol`` (:mod:`.protocol`)
    ``Protocol(name, base=Run, grid={"model.width": [8, 16], "seed": [0, 1]},
    analysis="summary", budgets={"smoke": {"set": {...}, "grid": {...}}, ...},
    default_budget=...)``; ``p.at("quick")``, ``p.vary(train__lr=[...])``,
    ``p.runs()``, ``p.to_toml()``, ``Protocol.from_toml(text)``, ``load_protocol(path)``
    (errors with line numbers), ``get_protocol(name_or_file)``, ``protocol_names()``,
    ``@register_protocol(name)``, ``@register_analysis(name)``.
``RunStore`` (:mod:`.store`)
    ``RunStore(root=None)`` (``$RNNMEM_STORE``, ``~/.cache/rnnmem/runs``): ``has(run)``,
    ``load(run) -> RunResult`` (manifest checked), ``results(runs) -> Results``,
    ``frame(protocol, budget=None) -> DataFrame``, ``hashes()``, ``remove(runs)``,
    ``other_code()`` (the runs made by other code, :func:`code_digest`);
    :func:`export_frame(df, path, fmt)` writes CSV / JSON / Parquet.
``RunResult``
    ``.run``, ``.hash``, ``.status`` ("ok" | "diverged"), ``.metrics`` (``final``,
    ``evaluation``), ``.curve()``, ``.evaluations()``, ``.memory_function() -> (t, M)``,
    ``.perturbation_curve() -> PerturbationCurve``, ``.dm_reports(which) -> {depth:
    DMReport}``, ``.ns_report()``, ``.model(device)`` (checkpoint's
    SHA-256 checked), ``.task()`` / ``.eval_set(max_samples)`` (rebuilt as in training),
    ``.provenance()``, ``.row()``.
``Results`` (a list of RunResult)
    ``.frame()``, ``.where(model__width=8)``, ``.get(run)``, ``.analyse()``,
    ``.missing``, ``.failed``, ``.report`` (trained / cached / failed / retried counts).
``execute(protocol_or_runs, store=, executor="local" | "ray" | "ray:ADDRESS", jobs=1,
progress=True) -> Results`` (:mod:`.executors`), also ``protocol.execute(budget=, store=,
executor=, jobs=)``
    Complete runs are never run again; two processes on one store train each run once;
    invalid runs and missing resources fail before anything starts. A run whose training
    diverges is stored (status ``"diverged"``, no model); an evaluation undefined for the
    trained model (e.g. the memory function of an unstable one) is stored as
    ``{"error": ...}``; an interrupted run (Ctrl-C) is not stored; a run whose worker
    fails is reported in ``results.failed`` and the others finish.

A claim uses it as::

    p = get_protocol("smoke-sweep").at(ctx.budget)     # or its own Protocol
    results = p.execute(store=ctx.store, executor=ctx.executor)
    for r in results.where(seed=0):
        model = r.model(); curve = r.perturbation_curve(); t, M = r.memory_function()
    table = results.frame()
"""

from .executors import LocalExecutor as LocalExecutor
from .executors import Progress as Progress
from .executors import RayExecutor as RayExecutor
from .executors import SweepReport as SweepReport
from .executors import execute as execute
from .executors import get_executor as get_executor
from .analyses import ANALYSES as ANALYSES
from .analyses import get_analysis as get_analysis
from .analyses import register_analysis as register_analysis
from .catalog import PROTOCOLS as PROTOCOLS
from .catalog import get_protocol as get_protocol
from .catalog import protocol_names as protocol_names
from .catalog import register_protocol as register_protocol
from .protocol import Protocol as Protocol
from .protocol import load_protocol as load_protocol
from .run import RESULT_FORMAT as RESULT_FORMAT
from .run import Evaluation as Evaluation
from .run import Resources as Resources
from .run import Run as Run
from .run import code_digest as code_digest
from .store import Results as Results
from .store import RunResult as RunResult
from .store import RunStore as RunStore
from .store import default_store_root as default_store_root
from .store import export_frame as export_frame

__all__ = ["Run", "Evaluation", "Resources", "RESULT_FORMAT", "code_digest", "Protocol",
           "load_protocol",
           "get_protocol", "protocol_names", "register_protocol", "register_analysis",
           "get_analysis", "PROTOCOLS", "ANALYSES", "RunStore", "RunResult", "Results",
           "default_store_root", "export_frame", "execute", "get_executor", "LocalExecutor",
           "RayExecutor", "Progress", "SweepReport"]
