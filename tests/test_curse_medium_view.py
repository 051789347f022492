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
