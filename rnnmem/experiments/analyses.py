"""Analyses: registered functions that turn a protocol's results into tables, figures and
verdicts. A protocol names its analysis (``analysis = "summary"``); claims register theirs
with :func:`register_analysis`.

An analysis is ``f(results) -> dict`` where ``results`` is a
:class:`~rnnmem.experiments.store.Results` (its ``frame()``, the runs' curves, models and
evaluations) and the dict holds named tables (DataFrames), figures and verdicts.
"""

from __future__ import annotations

from typing import Callable

from ..errors import UnknownNameError

__all__ = ["ANALYSES", "register_analysis", "get_analysis", "summary"]

ANALYSES: dict[str, Callable] = {}


def register_analysis(name: str):
    """Decorator on ``f(results) -> dict``: an analysis protocols can name."""

    def deco(fn):
        if name in ANALYSES and ANALYSES[name] is not fn:
            raise ValueError(f"analysis {name!r} registered twice")
        ANALYSES[name] = fn
        return fn

    return deco


def get_analysis(name: str) -> Callable:
    try:
        return ANALYSES[name]
    except KeyError:
        raise UnknownNameError("analysis", name, sorted(ANALYSES)) from None


@register_analysis("summary")
def summary(results) -> dict:
    """``{"table": DataFrame}``: mean (and count) of every numeric ``metrics.*`` and
    ``eval.*`` column over seeds, one row per other combination of the varied fields."""
    df = results.frame()
    if df.empty:
        return {"table": df}
    values = [c for c in df.columns if c.startswith(("metrics.", "eval."))
              and df[c].dtype.kind in "fiu"]
    fields = [c for c in df.columns if c not in values and c not in
              ("hash", "status", "seed", "steps", "stopped", "elapsed_s")
              and not c.startswith(("metrics.", "eval."))]
    varied = [c for c in fields if df[c].astype(str).nunique(dropna=False) > 1]
    if not varied:
        table = df[values].mean().to_frame().T
        table.insert(0, "runs", len(df))
        return {"table": table}
    g = df.groupby([df[c].astype(str) for c in varied], sort=False, dropna=False)
    table = g[values].mean()
    table.insert(0, "runs", g.size())
    return {"table": table.reset_index()}
