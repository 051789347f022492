"""``curse-of-memory-table`` at ``medium`` (the protocols, their figures, the ablation),
exercised at smoke sizes: the same code path, seconds of training."""

from pathlib import Path

import pytest

from rnnmem.experiments import RunStore
from rnnmem.proofs_check.curse.protocol_table import (ABLATED, check_medium, factor_answer,
                                                      medium_protocols)
from rnnmem.proofs_check.curse.protocols import PROTOCOL_NAMES
from rnnmem.proofs_check.registry import Context


@pytest.fixture(scope="module")
def evidence(tmp_path_factory):
    root = tmp_path_factory.mktemp("medium")
    ctx = Context("smoke", root / "out", store=RunStore(root / "store"), jobs=1)
    return ctx, check_medium(ctx, "curse-of-memory-table")


def test_every_protocol_has_a_table_and_a_loglog_figure(evidence):
    ctx, ev = evidence
    assert set(ev.metrics["protocols"]) == set(PROTOCOL_NAMES)
    assert len(ev.figures) == len(PROTOCOL_NAMES)
    for rel in ev.figures:
        p = Path(ctx.out_dir) / rel
        assert p.is_file() and p.read_bytes()[:4] == b"\x89PNG"
    for name in PROTOCOL_NAMES:
        assert f"### {name}" in ev.details
    cell = next(iter(ev.metrics["protocols"]["com-original"]["cells"].values()))
    assert {"verdict", "verdict_without_rule", "ensure"} <= set(cell)


def test_the_ablation_and_the_factor_answer_are_reported(evidence):
    _, ev = evidence
    ab = ev.metrics["ablation"]
    assert ab["protocol"] == ABLATED
    assert "parameterisation" in ab["variants"] and "target_scale" in ab["variants"]
    assert f"### Ablation of `{ABLATED}`" in ev.details
    assert set(ev.metrics["factor_answer"]) == {"diagonal_rnn", "softplus_ssm"}
    assert ev.verdict == ev.metrics["protocols"][ABLATED]["verdict"]


def test_evaluation_only_variants_reuse_the_base_training(evidence):
    ctx, _ = evidence
    store = ctx.run_store()
    base_runs = {r.training_hash for r in medium_protocols(ctx)[0].runs()}
    shared = [store.load(h) for h in store.hashes()]
    reused = [r for r in shared if "weights_from" in r.metrics]
    assert reused, "no variant evaluated stored weights"
    assert any(r.run.training_hash in base_runs for r in reused)


def test_factor_answer_names_a_factor_that_reproduces_the_row():
    def cells(poly, exp, poly_u=None, exp_u=None):
        return {"r/polynomial": {"verdict": poly, "verdict_without_rule": poly_u or poly},
                "r/exponential": {"verdict": exp, "verdict_without_rule": exp_u or exp}}
    ab = {"variants": {"base": {"cells": cells("stable", "stable")},
                       "norm": {"cells": cells("unstable", "stable")},
                       "scope": {"cells": cells("training_failed", "stable", "unstable")},
                       "direction": {"cells": cells("unstable", "unstable")},
                       "parameterisation": {"cells": None}}}
    _, ans = factor_answer(ab)
    assert ans["r"]["ruled"] == ["norm"]
    assert ans["r"]["unruled"] == ["norm", "scope"]


def test_figure_draws_blowups_overflows_and_zeros(tmp_path):
    """E_m(beta) of a blown-up model reaches 1e300 and inf (the medium run's com_* cells
    did): the figure caps them relative to the level instead of failing to lay out."""
    import numpy as np

    from rnnmem.numerics.perturbation import PerturbationCurve, blowup_verdict
    from rnnmem.proofs_check.curse.protocol_table import plot_protocol

    betas = 1e-3 * 2 ** (np.arange(21) / 2)
    curves = {}
    for j, m in enumerate((8, 16, 32, 64)):
        s = np.tile((betas * m) ** 2, (3, 1)).T
        s[-4:, :] = [1e300, np.inf, 1e308, np.inf][j]
        s[0, 0] = 0.0
        curves[m] = PerturbationCurve.from_samples(betas, s, 0.0, {"target_scale": 1.0})
    v = blowup_verdict(curves, level_factor=1.0, n_boot=100)
    cell = {"verdict": v.verdict, "curves": curves, "stability": v, "unruled": v}
    ctx = Context("smoke", tmp_path)
    rel = plot_protocol(ctx, "curse-of-memory-table", "test", {("r", "polynomial"): cell})
    assert (tmp_path / rel).read_bytes()[:4] == b"\x89PNG"
