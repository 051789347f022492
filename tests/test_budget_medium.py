"""The ``medium`` budget of ``rnnmem verify``: claims that define it run at it, the others
at ``quick``; Das & Mali's freezing claim read under ``dm``."""

from pathlib import Path

import pytest

from rnnmem.proofs_check.claims_stack_dm import RETAINED, SOLVED, dm_verdict
from rnnmem.proofs_check.registry import BUDGETS, Context, all_claims, get_claim


def test_medium_is_a_budget_and_pick_falls_back_to_quick():
    assert "medium" in BUDGETS
    ctx = Context("medium", Path("."))
    assert ctx.pick(smoke=1, quick=2, full=3) == 2
    assert ctx.pick(smoke=1, quick=2, full=3, medium=5) == 5
    assert ctx.base_budget == "quick"
    assert Context("full", Path(".")).base_budget == "full"


def test_claims_without_a_medium_size_run_at_quick():
    assert get_claim("frozen-memory-length-generalisation").sized("medium") == "medium"
    assert get_claim("curse-of-memory-table").sized("medium") == "medium"
    others = [c for c in all_claims() if "medium" not in c.budgets]
    assert others, "some claim has no medium size"
    assert all(c.sized("medium") == "quick" for c in others)
    assert all(c.sized(b) == b for c in others for b in ("smoke", "quick", "full"))


def _cell(train, retained, hw=0.0):
    return {"train_score": {"mean": train}, "retained": {"mean": retained},
            "score": {"mean": train * retained}, "score_hw": hw, "train_hw": hw}


@pytest.mark.parametrize("frozen, full, hw, expected", [
    ((0.95, 0.95), (0.95, 0.60), 0.0, "supports"),               # the paper's picture
    ((0.95, 0.70), (0.95, 0.60), 0.0, "better, below target"),  # below RETAINED
    ((0.95, 0.90), (0.95, 0.95), 0.0, "contradicts"),            # trained keeps more
    ((0.95, 0.90), (0.95, 0.95), 0.05, "no difference"),         # ... within the bands
    ((1.00, 1.00), (1.00, 1.00), 0.0, "no difference"),          # both generalise
    ((0.50, 0.99), (0.95, 0.60), 0.0, "not learned"),            # frozen never solved 1..40
])
def test_dm_verdict_per_comparison(frozen, full, hw, expected):
    table = {"reverse_string": {"superposition": {"30": _cell(*full, hw)},
                                "superposition+frozen_memory": {"30": _cell(*frozen, hw)}}}
    overall, comps = dm_verdict(table)
    assert comps["reverse_string/superposition/30"]["verdict"] == expected
    assert overall == {"supports": "confirmed", "contradicts": "refuted"}.get(
        expected, "inconclusive")


def test_dm_verdict_thresholds_are_the_documented_ones():
    assert SOLVED == 0.9 and RETAINED == 0.85
    at = {"t": {"m": {"30": _cell(SOLVED, 0.5)},
                "m+frozen_memory": {"30": _cell(SOLVED, RETAINED)}}}
    assert dm_verdict(at)[1]["t/m/30"]["verdict"] == "supports"


def test_medium_curse_runs_are_the_protocols_and_the_ablation():
    from rnnmem.experiments import get_protocol
    from rnnmem.proofs_check.curse.ablation import ablation_variants
    from rnnmem.proofs_check.curse.protocols import PROTOCOL_NAMES

    ctx = Context("medium", Path("."))
    got = {r.hash for p in get_claim("curse-of-memory-table").protocols(ctx)
           for r in p.runs()}
    expected = {r.hash for n in PROTOCOL_NAMES for r in get_protocol(n).at("medium").runs()}
    expected |= {r.hash for _, p in ablation_variants("com-original", budget="medium").values()
                 if p is not None for r in p.runs()}
    assert got == expected
    # the dm runs at medium are the registered protocol's
    dm = {r.hash for p in get_claim("frozen-memory-length-generalisation").protocols(ctx)
          for r in p.runs()}
    assert {r.hash for r in get_protocol("dm").at("medium").runs()} <= dm


def test_score_halfwidth_of_independent_lengths():
    from types import SimpleNamespace

    from rnnmem.proofs_check.claims_stack_dm import _score_halfwidth

    rep = SimpleNamespace(band_lo=[0.4, 0.5, 0.6, 0.7], band_hi=[0.6, 0.7, 0.8, 0.9])
    assert _score_halfwidth(rep) == pytest.approx(0.1 * 2 / 4)  # sqrt(4 * 0.01) / 4
