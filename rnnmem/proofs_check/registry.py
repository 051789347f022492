"""The claim registry: every theorem and paper claim as an executable check.

A :class:`Claim` has an id, a title, a statement, its source, and a ``check`` function that
takes a :class:`Context` (budget, output directory, seed, run store, executor) and returns
:class:`Evidence` (verdict, metrics, figures). A claim that trains models declares the
:class:`~rnnmem.experiments.Protocol` s it reads (``protocols=``, a function of the
context); :func:`run_claims` makes every run of every selected claim complete in the run
store first (one sweep, on the chosen executor), then each check reads its runs with
:meth:`Context.results`. The store is the cache: a run shared by two claims, or by two
invocations, is trained once. Claims register themselves with the :func:`claim` decorator in
the modules listed in :data:`CLAIM_MODULES`, which are imported only when claims are listed
or run (they may import torch).

Verdicts: ``confirmed`` (the claim holds on the evidence), ``refuted`` (the evidence
contradicts it), ``inconclusive`` (the budget was too small to tell, or the check failed).
A claim with ``must_hold=True`` is a mathematical identity: ``rnnmem verify`` exits non-zero
when it is not confirmed.
"""

from __future__ import annotations

import importlib
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

from ..errors import InvalidParameterError, RnnmemError, UnknownNameError, exception_text

__all__ = [
    "BUDGETS",
    "VERDICTS",
    "Evidence",
    "Context",
    "Claim",
    "Result",
    "claim",
    "all_claims",
    "get_claim",
    "run_claims",
    "CLAIM_MODULES",
    "load_claims",
]

Budget = Literal["smoke", "quick", "full"]
BUDGETS: tuple[str, ...] = ("smoke", "quick", "medium", "full")
#: the budgets every claim has; a claim without a ``medium`` size runs at ``quick`` there
BASE_BUDGETS: tuple[str, ...] = ("smoke", "quick", "full")
VERDICTS: tuple[str, ...] = ("confirmed", "refuted", "inconclusive")
#: the verdict of a result whose check raised (an error of the run, not of the claim)
ERROR_VERDICT = "error"

#: Modules whose import registers claims, in report order.
CLAIM_MODULES: list[str] = [
    "rnnmem.proofs_check.claims_linear",
    "rnnmem.proofs_check.curse",
    "rnnmem.proofs_check.claims_stack",
    "rnnmem.proofs_check.claims_ptb",
]


@dataclass
class Evidence:
    """What a check returns.

    Attributes
    ----------
    verdict : {"confirmed", "refuted", "inconclusive"}
    summary : str
        One line, shown in the summary table.
    metrics : dict
        JSON-serialisable numbers (floats, ints, strings, lists, nested dicts).
    figures : list of str
        Paths of PNG figures, relative to the output directory.
    details : str
        Markdown for REPORT.md (tables, explanations).
    """

    verdict: str
    summary: str = ""
    metrics: dict = field(default_factory=dict)
    figures: list[str] = field(default_factory=list)
    details: str = ""

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise InvalidParameterError(
                f"verdict must be one of {VERDICTS}, got {self.verdict!r}")


_QUICK = object()


@dataclass
class Context:
    """What a check gets: the budget, where to write figures, a seed, and where runs live.

    Attributes
    ----------
    store : rnnmem.experiments.RunStore, optional
        The run store (default: :func:`rnnmem.experiments.default_store_root`).
    executor : str or executor object
        ``"local"``, ``"ray"``, ``"ray:ADDRESS"`` (see :func:`rnnmem.experiments.execute`).
    jobs : int
        Processes of the local executor (CPUs of a local Ray instance).
    progress : bool
        Show sweep progress on stderr.
    """

    budget: str
    out_dir: Path
    seed: int = 0
    figures_dir: Path | None = None
    store: Any = None
    executor: Any = "local"
    jobs: int = 1
    progress: bool = False
    used: dict = field(default_factory=dict)  # hash -> trained in this invocation

    def figure_path(self, claim_id: str, name: str) -> tuple[Path, str]:
        """(absolute path to write, path relative to ``out_dir`` for the report)."""
        fig_dir = self.figures_dir or (self.out_dir / "figures")
        fig_dir.mkdir(parents=True, exist_ok=True)
        p = fig_dir / f"{claim_id}--{name}.png"
        return p, str(p.relative_to(self.out_dir))

    def pick(self, smoke, quick, full, medium=_QUICK):
        """Choose a size by budget: ``ctx.pick(smoke=2, quick=8, full=64)``; at ``medium``
        the ``medium`` value when given, else the ``quick`` one."""
        if self.budget == "medium":
            return quick if medium is _QUICK else medium
        return {"smoke": smoke, "quick": quick, "full": full}[self.budget]

    @property
    def base_budget(self) -> str:
        """The budget among smoke/quick/full whose sizes a part without a ``medium`` size
        uses (``medium`` -> ``quick``)."""
        return "quick" if self.budget == "medium" else self.budget

    def run_store(self):
        from ..experiments import RunStore

        if self.store is None or isinstance(self.store, (str, Path)):
            self.store = RunStore(self.store)
        return self.store

    def results(self, *protocols):
        """The finished runs of ``protocols`` (Protocols or lists of Runs), made complete
        in the store first (those already there are read, not trained again). A run that
        failed is an error naming it; a run whose training diverged is a result."""
        from ..errors import RnnmemError
        from ..experiments import execute

        runs, seen = [], set()
        for p in protocols:
            for r in (p.runs() if hasattr(p, "runs") else p):
                if r.hash not in seen:
                    seen.add(r.hash)
                    runs.append(r)
        store = self.run_store()
        fresh = {r.hash for r in runs if not store.has(r)}
        res = execute(runs, store=store, executor=self.executor, jobs=self.jobs,
                      progress=self.progress)
        for r in runs:
            self.used[r.hash] = self.used.get(r.hash, False) or r.hash in fresh
        if res.failed or res.missing:
            msgs = list(res.failed.values())[:3]
            raise RnnmemError(f"{len(res.failed) or len(res.missing)} of {len(runs)} runs "
                              f"did not finish: {'; '.join(msgs) or 'missing in the store'}")
        return res


@dataclass(frozen=True)
class Claim:
    id: str
    title: str
    statement: str
    source: str
    check: Callable[[Context], Evidence]
    must_hold: bool = False
    group: str = ""
    #: ``ctx -> [Protocol, ...]``: the runs the check reads (``None``: it trains nothing)
    protocols: Callable[[Context], list] | None = None
    #: the budgets the claim has sizes for; at another one it runs at :meth:`sized`'s
    budgets: tuple[str, ...] = BASE_BUDGETS

    def sized(self, budget: str) -> str:
        """The budget the claim runs at when ``budget`` is asked: itself when the claim
        has it, else ``quick`` (a claim without a ``medium`` size)."""
        return budget if budget in self.budgets else "quick"


@dataclass
class Result:
    id: str
    title: str
    source: str
    statement: str
    verdict: str
    summary: str
    metrics: dict
    figures: list[str]
    details: str
    seconds: float
    budget: str
    must_hold: bool
    error: str | None = None
    #: the check's runs: ``{"total", "trained"}`` (trained in this invocation)
    runs: dict | None = None

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "title": self.title,
            "source": self.source,
            "statement": self.statement,
            "verdict": self.verdict,
            "summary": self.summary,
            "metrics": self.metrics,
            "figures": self.figures,
            "seconds": round(self.seconds, 3),
            "budget": self.budget,
            "must_hold": self.must_hold,
            "error": self.error,
            "runs": self.runs,
        }

    @property
    def failed_must_hold(self) -> bool:
        """A must-hold identity that was checked and not confirmed, or a check that raised
        (both make ``rnnmem verify`` fail; :attr:`errored` tells them apart)."""
        return (self.must_hold and self.verdict != "confirmed") or self.error is not None

    @property
    def errored(self) -> bool:
        """The check raised: an error of the run, not evidence about the claim."""
        return self.error is not None


_REGISTRY: dict[str, Claim] = {}
_LOADED = False


def claim(id: str, *, title: str, statement: str, source: str, must_hold: bool = False,
          group: str = "", protocols: Callable[[Context], list] | None = None,
          budgets: tuple[str, ...] = BASE_BUDGETS):
    """Decorator registering ``check(ctx) -> Evidence`` as a claim; ``protocols(ctx)``
    lists the protocols (at ``ctx.budget``) whose runs the check reads; ``budgets`` the
    budgets it has sizes for (smoke, quick and full always; ``medium`` where the claim
    defines it, else ``rnnmem verify --budget medium`` runs it at ``quick``). A claim with
    protocols is also an analysis named after it (:func:`claim_analysis`), which the
    claim's protocol names."""
    budgets = tuple(dict.fromkeys((*BASE_BUDGETS, *budgets)))
    for b in budgets:
        if b not in BUDGETS:
            raise ValueError(f"claim {id!r}: unknown budget {b!r}")

    def deco(fn: Callable[[Context], Evidence]):
        if id in _REGISTRY:
            raise ValueError(f"claim {id!r} registered twice")
        _REGISTRY[id] = Claim(id, title, statement, source, fn, must_hold, group, protocols,
                              budgets)
        if protocols is not None:
            from ..experiments import register_analysis

            register_analysis(id)(claim_analysis(id))
        return fn

    return deco


def claim_analysis(claim_id: str) -> Callable:
    """The analysis ``f(results) -> dict`` of a claim: the check run at the budget of the
    results' protocol, on the results' store (figures in a new temporary directory).
    Returns ``{"verdict", "summary", "metrics", "details", "figures"}``."""

    def analyse(results) -> dict:
        import tempfile

        p = getattr(results, "protocol", None)
        budget = (p.budget or p.default_budget) if p is not None else "quick"
        if budget not in BUDGETS:
            raise InvalidParameterError(f"budget: the claim {claim_id!r} is analysed at "
                                        f"{', '.join(BUDGETS)}, not {budget!r}")
        out = Path(tempfile.mkdtemp(prefix=f"rnnmem-{claim_id}-"))
        ctx = Context(budget=budget, out_dir=out, store=results.store)
        ev = get_claim(claim_id).check(ctx)
        return {"verdict": ev.verdict, "summary": ev.summary, "metrics": ev.metrics,
                "details": ev.details, "figures": [str(out / f) for f in ev.figures]}

    analyse.__name__ = f"analyse_{claim_id.replace('-', '_')}"
    analyse.__doc__ = f"The claim {claim_id!r} as an analysis of its protocol's results."
    return analyse


def _load() -> None:
    global _LOADED
    if _LOADED:
        return
    for mod in CLAIM_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:  # a real import error inside an existing module
                raise
    _LOADED = True


def load_claims() -> None:
    """Import the claim modules (registering the claims and their protocols)."""
    _load()


def all_claims() -> list[Claim]:
    _load()
    return list(_REGISTRY.values())


def get_claim(id: str) -> Claim:
    _load()
    try:
        return _REGISTRY[id]
    except KeyError:
        raise UnknownNameError("claim", id, list(_REGISTRY)) from None


def run_claims(ids: list[str] | None, budget: str, out_dir: Path, *, seed: int = 0,
               progress: Callable[[str], None] | None = None, store=None,
               executor="local", jobs: int = 1,
               on_result: Callable[[list[Result]], None] | None = None) -> list[Result]:
    """Run the claims ``ids`` (all when None; a repeated id runs once) at ``budget``.

    First every run of every selected claim's protocols is made complete in ``store``
    (a :class:`~rnnmem.experiments.RunStore` or a directory; default the store default),
    in one sweep on ``executor`` with ``jobs``; then the checks run one after the other
    and read their runs from the store. A check that raises becomes a result with verdict
    ``"error"`` and the traceback in ``error`` (an error of the run, not a refuted claim).
    ``on_result(results so far)`` is called after every claim (``rnnmem verify`` rewrites
    its report there)."""
    from ..experiments import RunStore, get_executor
    from ..limits import check_seed

    if budget not in BUDGETS:
        raise InvalidParameterError(f"budget must be one of {BUDGETS}, got {budget!r}")
    seed = check_seed(seed, "seed")
    claims = [get_claim(i) for i in dict.fromkeys(ids)] if ids else all_claims()
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        from ..files import storage_error

        raise storage_error(exc, out_dir, "create") from None
    store = store if isinstance(store, RunStore) else RunStore(store)
    get_executor(executor, jobs=jobs)  # a bad executor fails before any work
    shared = dict(store=store, executor=executor, jobs=jobs, progress=progress is not None)
    # one sweep over every run the claims read (so that ray distributes all of them)
    protocols, fresh = [], set()
    for c in claims:
        if c.protocols is not None:
            protocols += c.protocols(Context(budget=c.sized(budget), out_dir=out_dir,
                                             seed=seed, **shared))
    if protocols:
        sweep = Context(budget=budget, out_dir=out_dir, seed=seed, **shared)
        if progress:
            n = len({r.hash for p in protocols for r in p.runs()})
            progress(f"[runs] {n} runs for {len(protocols)} protocol(s) in {store.root} ...")
        try:
            res = sweep.results(*protocols)
            if progress:
                rep = res.report
                progress(f"[runs] {rep['trained']} trained, {rep['reused']} evaluated on "
                         f"shared weights, {rep['cached']} from the store in {rep['seconds']:.1f}s")
        except Exception as exc:  # noqa: BLE001 - the claims report what is missing
            if not isinstance(exc, RnnmemError) or "did not finish" not in str(exc):
                raise
            if progress:
                progress(f"[runs] {exc}")
        fresh = {h for h, t in sweep.used.items() if t}
    results = []
    for c in claims:
        if progress:
            progress(f"[{c.id}] running ({budget}) ...")
        ctx = Context(budget=c.sized(budget), out_dir=out_dir, seed=seed, **shared)
        t0 = time.perf_counter()
        try:
            ev = c.check(ctx)
            err = None
        except Exception as exc:  # a crashing check is reported, not hidden
            ev = Evidence("inconclusive", summary=f"check raised {type(exc).__name__}: "
                                                  f"{exception_text(exc)}")
            err = traceback.format_exc()
        dt = time.perf_counter() - t0
        runs = None
        if ctx.used:
            runs = {"total": len(ctx.used),
                    "trained": sum(1 for h, t in ctx.used.items() if t or h in fresh)}
        res = Result(c.id, c.title, c.source, c.statement,
                     ERROR_VERDICT if err is not None else ev.verdict, ev.summary, ev.metrics,
                     ev.figures, ev.details, dt, ctx.budget, c.must_hold, err, runs)
        results.append(res)
        if progress:
            progress(f"[{c.id}] {res.verdict} in {dt:.1f}s: {res.summary}")
        if on_result is not None:
            on_result(list(results))
    return results
