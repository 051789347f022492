"""The claim registry: every theorem and paper claim as an executable check.

A :class:`Claim` has an id, a title, a statement, its source, and a ``check`` function that
takes a :class:`Context` (budget, output directory, seed) and returns :class:`Evidence`
(verdict, metrics, figures). Claims register themselves with the :func:`claim` decorator in
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
from typing import Callable, Literal

from ..errors import InvalidParameterError, UnknownNameError, exception_text

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
]

Budget = Literal["smoke", "quick", "full"]
BUDGETS: tuple[str, ...] = ("smoke", "quick", "full")
VERDICTS: tuple[str, ...] = ("confirmed", "refuted", "inconclusive")
#: the verdict of a result whose check raised (an error of the run, not of the claim)
ERROR_VERDICT = "error"

#: Modules whose import registers claims, in report order.
CLAIM_MODULES: list[str] = [
    "rnnmem.proofs_check.claims_linear",
    "rnnmem.proofs_check.claims_curse",
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


@dataclass
class Context:
    """What a check gets: the budget, where to write figures, a seed."""

    budget: str
    out_dir: Path
    seed: int = 0
    figures_dir: Path | None = None

    def figure_path(self, claim_id: str, name: str) -> tuple[Path, str]:
        """(absolute path to write, path relative to ``out_dir`` for the report)."""
        fig_dir = self.figures_dir or (self.out_dir / "figures")
        fig_dir.mkdir(parents=True, exist_ok=True)
        p = fig_dir / f"{claim_id}--{name}.png"
        return p, str(p.relative_to(self.out_dir))

    def pick(self, smoke, quick, full):
        """Choose a size by budget: ``ctx.pick(smoke=2, quick=8, full=64)``."""
        return {"smoke": smoke, "quick": quick, "full": full}[self.budget]


@dataclass(frozen=True)
class Claim:
    id: str
    title: str
    statement: str
    source: str
    check: Callable[[Context], Evidence]
    must_hold: bool = False
    group: str = ""


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
          group: str = ""):
    """Decorator registering ``check(ctx) -> Evidence`` as a claim."""

    def deco(fn: Callable[[Context], Evidence]):
        if id in _REGISTRY:
            raise ValueError(f"claim {id!r} registered twice")
        _REGISTRY[id] = Claim(id, title, statement, source, fn, must_hold, group)
        return fn

    return deco


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
               progress: Callable[[str], None] | None = None,
               on_result: Callable[[list[Result]], None] | None = None) -> list[Result]:
    """Run the claims ``ids`` (all when None; a repeated id runs once) at ``budget``.

    A check that raises becomes a result with verdict ``"error"`` and the traceback in
    ``error`` (an error of the run, not a refuted claim). ``on_result(results so far)`` is
    called after every claim (``rnnmem verify`` rewrites its report there)."""
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
    results = []
    for c in claims:
        if progress:
            progress(f"[{c.id}] running ({budget}) ...")
        ctx = Context(budget=budget, out_dir=out_dir, seed=seed)
        t0 = time.perf_counter()
        try:
            ev = c.check(ctx)
            err = None
        except Exception as exc:  # a crashing check is reported, not hidden
            ev = Evidence("inconclusive", summary=f"check raised {type(exc).__name__}: "
                                                  f"{exception_text(exc)}")
            err = traceback.format_exc()
        dt = time.perf_counter() - t0
        res = Result(c.id, c.title, c.source, c.statement,
                     ERROR_VERDICT if err is not None else ev.verdict, ev.summary, ev.metrics,
                     ev.figures, ev.details, dt, budget, c.must_hold, err)
        results.append(res)
        if progress:
            progress(f"[{c.id}] {res.verdict} in {dt:.1f}s: {res.summary}")
        if on_result is not None:
            on_result(list(results))
    return results
