"""The curse-of-memory protocols (com-original, com-ssm-2023-09, paper) and the ablation
(issue 10, items 4 and 6), at the smoke budget."""

import math

import numpy as np
import pytest

from rnnmem.errors import UnknownNameError
from rnnmem.experiments import Protocol, RunStore, get_protocol, protocol_names
from rnnmem.numerics.perturbation import original_betas
from rnnmem.proofs_check.curse.ablation import ablation_markdown, ablation_variants, run_ablation
from rnnmem.proofs_check.curse.common import TABLE_ROWS, TARGET_NAMES
from rnnmem.proofs_check.curse.protocols import (PROTOCOL_NAMES, _row_of, ensure_outcome)


@pytest.mark.parametrize("name", PROTOCOL_NAMES)
def test_protocol_covers_the_table(name):
    assert name in protocol_names()
    p = get_protocol(name)
    assert {"smoke", "quick", "medium", "full"} <= set(p.budget_names())
    for budget in ("quick", "medium", "full"):
        runs = p.at(budget).runs()
        cells = {(_row_of(r), r.task.split(":", 1)[1]) for r in runs}
        assert cells == {(r, t) for r in TABLE_ROWS for t in TARGET_NAMES}
    medium = p.at("medium").runs()
    assert sorted({r.model_options["width"] for r in medium}) == [8, 16, 32, 64]
    assert np.allclose(medium[0].evaluate.betas(), original_betas())
    # printable as TOML and read back to the same runs
    back = Protocol.from_toml(p.to_toml())
    assert [r.hash for r in back.at("medium").runs()] == [r.hash for r in medium]


def test_protocol_settings():
    com = get_protocol("com-original").at("medium").runs()
    poly = next(r for r in com if r.task == "lf:polynomial")
    assert poly.task_options["scale"] == 0.1 and poly.task_options["p"] == 1.1
    assert poly.task_options["length"] == 100 and poly.task_options["dt"] == 1.0
    pt = poly.evaluate.perturbation
    assert (pt["scope"], pt["norm"], pt["shared_directions"], pt["repeats"],
            pt["evaluation_form"]) == ("all", "inf", True, 30, True)
    cfg = poly.config
    assert (cfg.batch_size, cfg.temporal_weighting, cfg.schedule, cfg.margin_penalty,
            cfg.restore_best) == (512, 2.0, "plateau", 0.01, True)
    assert cfg.grad_clip is not None
    sept = get_protocol("com-ssm-2023-09").at("medium").runs()[0].evaluate.perturbation
    assert dict(sept["distribution_by_name"]) == {"w": "deterministic"}
    paper = get_protocol("paper").at("medium").runs()[0].evaluate.perturbation
    assert (paper["scope"], paper["norm"]) == ("recurrent", "spectral")


def test_ensure_outcome():
    out = ensure_outcome({8: 1.0, 16: 0.4, 32: 0.3, 64: float("nan")})
    assert out["status"][8] == "ok" and out["status"][16] == "ok"
    assert math.isclose(out["ratios"][32], 0.75) and "0.75" in out["status"][32]
    assert out["status"][64] == "diverged"


def test_ablation_variants_switch_one_factor():
    v = ablation_variants("com-original", "norm,scope,direction,target_scale")
    base = v["base"][1].runs()
    norm = v["norm"][1].runs()
    assert all(r.evaluate.perturbation["norm"] == "spectral" for r in norm)
    assert [r.to_dict()["model"] for r in norm] == [r.to_dict()["model"] for r in base]
    assert all(dict(r.evaluate.perturbation["distribution_by_name"]) == {"w": "deterministic"}
               for r in v["direction"][1].runs())
    ts = v["target_scale"][1].runs()
    shared = {r.hash for r in ts} & {r.hash for r in base}
    assert shared and all(r.task == "lf:exponential" for r in base if r.hash in shared)
    assert ablation_variants("paper", "parameterisation")["parameterisation"][1] is None
    with pytest.raises(UnknownNameError, match="ablation factor"):
        ablation_variants("com-original", "norm,colour")
    with pytest.raises(UnknownNameError, match="ablation protocol"):
        ablation_variants("smoke-sweep", "norm")


def test_ablation_at_smoke_trains_shared_runs_once(tmp_path):
    smoke_store = RunStore(tmp_path)
    ab = run_ablation("com-original", "norm,target_scale", budget="smoke",
                      store=smoke_store)
    base = ab["variants"]["base"]["cells"]
    assert set(base) == {f"{r}/{t}" for r in ("diagonal_rnn", "softplus_ssm")
                         for t in TARGET_NAMES}
    # the exponential cells of target_scale are the base's runs, read from the store; the
    # norm variant changes only the evaluation: its 12 runs evaluate the base's weights
    assert ab["report"]["cached"] == 6
    assert (ab["report"]["trained"], ab["report"]["reused"]) == (12 + 6, 12)
    for factor in ("base", "norm", "target_scale"):
        for cell in ab["variants"][factor]["cells"].values():
            assert cell["verdict"] in ("stable", "unstable", "inconclusive",
                                       "training_failed")
            assert set(cell["ensure"]) == {2, 3, 4}
    text = ablation_markdown(ab)
    assert "| norm | norm=spectral |" in text and "polynomial scale=1" in text
    # a second invocation trains nothing
    again = run_ablation("com-original", "norm", budget="smoke", store=smoke_store)
    assert again["report"]["trained"] == 0


def test_ablate_cli_bad_factor(capsys):
    from rnnmem.cli import main

    assert main(["ablate", "com-original", "--factors", "norm,colour"]) == 2
    assert "colour" in capsys.readouterr().err


def test_protocols_claim_at_smoke(tmp_path):
    from rnnmem.proofs_check import registry as R

    (res,) = R.run_claims(["curse-of-memory-protocols"], "smoke", tmp_path / "out", seed=0,
                          store=RunStore(tmp_path / "store"))
    assert res.verdict == "inconclusive"  # smoke: the machinery only
    per = res.metrics["protocols"]
    assert set(per) == set(PROTOCOL_NAMES)
    for name, d in per.items():
        assert set(d["cells"]) == {f"{r}/{t}" for r in ("diagonal_rnn", "softplus_ssm")
                                   for t in TARGET_NAMES}
        assert "| row | target |" in res.details


@pytest.mark.parametrize("name", PROTOCOL_NAMES)
def test_every_variant_passes_the_checks_before_training(name):
    from rnnmem.experiments.executors import validate_runs

    for factor, (desc, p) in ablation_variants(name).items():
        if p is not None:
            validate_runs(p.runs())  # e.g. deterministic w with several repeats would fail
    scope = ablation_variants("com-ssm-2023-09", "scope")["scope"][1]
    assert all(r.evaluate.perturbation["repeats"] == 1 for r in scope.runs())
