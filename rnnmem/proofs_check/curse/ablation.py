"""Ablation of the curse-of-memory protocols: which protocol factor a verdict depends on
(issue 10, item 6).

:func:`ablation_variants` builds, from one of the protocols of :mod:`.protocols` at a
budget, one variant per *factor*, each with that factor alone switched to the other
protocols' choice (with :meth:`rnnmem.experiments.Protocol.vary`, or for
``target_scale`` by rebuilding the protocol with other target options);
:func:`run_ablation` trains the base protocol and the variants through one run store (a
run shared by two variants, e.g. every run of a variant that changes only the polynomial
target's cells, is trained once) and reads each with :func:`.protocols.cell_results`.

Factors
-------
``parameterisation``
    ``evaluate.perturbation.evaluation_form`` flipped: the relu models perturbed with
    their eigenvalues used directly (the original's evaluation; modes with ``w <= 0`` are
    exact integrators) or in their training form ``r = relu(w)``. Not applicable to
    ``paper`` (its models have one form).
``norm``
    ``"inf"`` (max-abs per tensor, the original) <-> ``"spectral"`` (rnnmem's reading).
``scope``
    ``"all"`` parameters (the original) <-> ``"recurrent"`` only (Def. 3.4); under
    ``com-ssm-2023-09`` the recurrent-only variant has one repeat (a diagonal row's only
    recurrent tensor ``w`` is then moved deterministically).
``direction``
    ``com-original``: the recurrent weight ``w`` moved by the deterministic
    :math:`-\\beta` (the Sept.-2023 branches); ``com-ssm-2023-09``: ``w`` Gaussian like the
    rest; ``paper``: the Gaussian direction of repeat ``k`` shared across radii (the
    original) instead of independent ones.
``stopping``
    ``com-*``: ``train.restore_best`` off (the last weights instead of the best
    validation's); ``paper``: evaluations every 50 steps and the best weights restored.
``target_scale``
    the polynomial target's time scale: ``(1 + 0.1 t)^-1.1`` (the original) <->
    ``(1 + t)^-1.1`` (rnnmem's default ``scale = 1``); the exponential cells are unchanged
    (and shared with the base protocol in the store).
"""

from __future__ import annotations

from typing import Any

from ...errors import InvalidParameterError, UnknownNameError
from .protocols import PROTOCOL_NAMES, build_protocol, cell_line, cell_results

FACTORS = ("parameterisation", "norm", "scope", "direction", "stopping", "target_scale")


def _switch(name: str, factor: str, base) -> tuple[str, dict | None]:
    """``(description, {dotted path: value})`` of one factor switched; ``None``: not
    applicable to this protocol."""
    pt = base.evaluate.perturbation
    com = name != "paper"
    if factor == "parameterisation":
        if not com:
            return "not applicable (one model form)", None
        v = not pt["evaluation_form"]
        return f"evaluation_form={v}", {"evaluate.perturbation.evaluation_form": v}
    if factor == "norm":
        v = "spectral" if pt["norm"] != "spectral" else "inf"
        return f"norm={v}", {"evaluate.perturbation.norm": v}
    if factor == "scope":
        v = "recurrent" if pt["scope"] == "all" else "all"
        if v == "recurrent" and pt["distribution_by_name"]:
            # the diagonal rows' only recurrent tensor is then deterministic: one draw
            return f"scope={v} (repeats=1: w deterministic)", {
                "evaluate.perturbation.scope": v, "evaluate.perturbation.repeats": 1}
        return f"scope={v}", {"evaluate.perturbation.scope": v}
    if factor == "direction":
        if not com:
            v = not pt["shared_directions"]
            return f"shared_directions={v}", {"evaluate.perturbation.shared_directions": v}
        if pt["distribution_by_name"]:
            return "w Gaussian", {"evaluate.perturbation.distribution_by_name": {}}
        return "w deterministic -beta", {
            "evaluate.perturbation.distribution_by_name": {"w": "deterministic"}}
    if factor == "stopping":
        cfg = base.config
        if cfg.restore_best:
            return "restore_best=False (last weights)", {"train.restore_best": False}
        return "best validation weights (eval every 50)", {
            "train.restore_best": True, "train.eval_every": 50}
    raise UnknownNameError("ablation factor", factor, list(FACTORS))


def ablation_variants(name: str, factors=FACTORS, budget: str = "smoke") -> dict:
    """``{"base": (description, Protocol), factor: (description, Protocol or None)}``:
    the protocol ``name`` at ``budget`` and its one-factor variants (``None``: the factor
    does not apply to this protocol)."""
    if name not in PROTOCOL_NAMES:
        raise UnknownNameError("ablation protocol", name, list(PROTOCOL_NAMES))
    factors = _check_factors(factors)
    base = build_protocol(name).at(budget)
    out: dict[str, Any] = {"base": ("as the protocol", base)}
    for f in factors:
        if f == "target_scale":
            other = 1.0 if _poly_scale(base) != 1.0 else 0.1
            out[f] = (f"polynomial scale={other:g}",
                      build_protocol(name, task_extra={"polynomial": {"scale": other}})
                      .at(budget))
            continue
        desc, changes = _switch(name, f, base.base)
        out[f] = (desc, None if changes is None else base.vary(**changes))
    return out


def _poly_scale(p) -> float:
    for r in p.runs():
        if r.task == "lf:polynomial":
            return float(r.task_options.get("scale", 1.0))
    return 0.1


def _check_factors(factors) -> tuple[str, ...]:
    if isinstance(factors, str):
        factors = [f.strip() for f in factors.split(",") if f.strip()]
    factors = tuple(factors)
    if not factors:
        raise InvalidParameterError("factors: give at least one of " + ", ".join(FACTORS))
    for f in factors:
        if f not in FACTORS:
            raise UnknownNameError("ablation factor", f, list(FACTORS))
    return factors


def run_ablation(name: str, factors=FACTORS, *, budget: str = "smoke", store=None,
                 executor="local", jobs: int = 1, progress: bool = False,
                 seed: int = 0) -> dict:
    """Train the protocol and its one-factor variants through ``store`` and read them.

    Returns ``{"protocol", "budget", "variants": {factor: {"change", "cells":
    {"row/target": cell_line}}}, "report"}`` (``report``: counts of runs trained and
    cached over all variants), with ``"base"`` as the first variant."""
    from ...experiments import RunStore, execute

    store = store if isinstance(store, RunStore) else RunStore(store)
    variants = ablation_variants(name, factors, budget)
    out: dict[str, Any] = {"protocol": name, "budget": budget, "variants": {}}
    trained = reused = cached = 0
    for factor, (desc, p) in variants.items():
        if p is None:
            out["variants"][factor] = {"change": desc, "cells": None}
            continue
        results = execute(p, store=store, executor=executor, jobs=jobs, progress=progress)
        rep = results.report
        trained += int(rep.get("trained", 0))
        reused += int(rep.get("reused", 0))
        cached += int(rep.get("cached", 0))
        cells = cell_results(results, seed=seed)
        out["variants"][factor] = {"change": desc, "runs": len(results),
                                   "cells": {f"{r}/{t}": cell_line(c)
                                             for (r, t), c in cells.items()}}
    out["report"] = {"trained": trained, "reused": reused, "cached": cached}
    return out


def _change(base: str, variant: str, is_base: bool) -> str:
    if is_base:
        return variant
    return f"{base} -> **{variant}**" if variant != base else f"{base} -> {variant}"


def ablation_markdown(ab: dict) -> str:
    """The ablation table: factor -> verdict per cell (changed ones marked), the blow-up
    radius per width and the slope with its 95% interval."""
    from .common import fmt

    base = ab["variants"]["base"]["cells"]
    lines = [f"Ablation of `{ab['protocol']}` at budget `{ab['budget']}` "
             f"({ab['report']['trained']} runs trained, {ab['report'].get('reused', 0)} "
             f"evaluated on a shared training, {ab['report']['cached']} read from the "
             "store).", "",
             "| factor | change | cell | verdict (base -> variant) | without the ensure rule "
             "(base -> variant) | blow-up radius by width | slope [95% CI] |",
             "|---|---|---|---|---|---|---|"]
    for factor, v in ab["variants"].items():
        if v["cells"] is None:
            lines.append(f"| {factor} | {v['change']} | - | - | - | - | - |")
            continue
        for cell, d in v["cells"].items():
            verdict, unruled = (_change(base.get(cell, {}).get(k, "-"), d.get(k, "-"),
                                        factor == "base")
                                for k in ("verdict", "verdict_without_rule"))
            radii = ", ".join(f"{m}:{fmt(x)}" for m, x in d.get("beta_blowup", {}).items()) \
                or "-"
            slope = (f"{fmt(d['slope'])} [{fmt(d['slope_ci'][0])}, {fmt(d['slope_ci'][1])}]"
                     if "slope" in d else "-")
            lines.append(f"| {factor} | {v['change']} | {cell} | {verdict} | {unruled} | "
                         f"{radii} | {slope} |")
    return "\n".join(lines)
