"""``evaluate.perturbation`` accepts what ``perturbation_curve`` accepts (issue 10, item 1)."""

import numpy as np
import pytest

from exp_helpers import tiny_run
from rnnmem.errors import ConflictingOptionsError, InvalidParameterError
from rnnmem.experiments import Run, RunStore, execute
from rnnmem.numerics.perturbation import original_betas
from rnnmem.train.perturb import DISTRIBUTIONS, NORMS, SCOPES


@pytest.mark.parametrize("norm", NORMS)
def test_every_norm_of_perturbation_curve_is_accepted(norm):
    run = tiny_run(**{"evaluate.perturbation.norm": norm})
    assert run.evaluate.perturbation["norm"] == norm


@pytest.mark.parametrize("dist", DISTRIBUTIONS)
def test_every_distribution_is_accepted(dist):
    run = tiny_run(**{"evaluate.perturbation.distribution": dist,
                      "evaluate.perturbation.repeats": 1})
    assert run.evaluate.perturbation["distribution"] == dist


def test_unknown_choices_are_named():
    for field, value in (("norm", "nuclear"), ("scope", "everything"),
                         ("distribution", "cauchy"), ("method", "fast")):
        with pytest.raises(InvalidParameterError, match=f"evaluate.perturbation.{field}"):
            tiny_run(**{f"evaluate.perturbation.{field}": value})
    with pytest.raises(InvalidParameterError, match="distribution_by_name.w"):
        tiny_run(**{"evaluate.perturbation.distribution_by_name": {"w": "cauchy"}})
    with pytest.raises(InvalidParameterError, match="evaluation_form"):
        tiny_run(**{"evaluate.perturbation.evaluation_form": "yes"})
    with pytest.raises(InvalidParameterError, match="betas"):
        tiny_run(**{"evaluate.perturbation.betas": "originl"})


def test_deterministic_with_repeats_fails_naming_both():
    with pytest.raises(ConflictingOptionsError, match="deterministic.*repeats=2"):
        tiny_run(**{"evaluate.perturbation.distribution": "deterministic"})


def test_original_grid_and_hash_stability():
    run = tiny_run(**{"evaluate.perturbation.betas": "original"})
    assert np.allclose(run.evaluate.betas(), original_betas())
    assert Run.from_toml(run.to_toml()).hash == run.hash
    # the new options at their defaults are left out of the identity (old hashes kept)
    base = tiny_run()
    assert "evaluation_form" not in base.to_dict()["evaluate"]["perturbation"]
    same = tiny_run(**{"evaluate.perturbation.evaluation_form": False,
                       "evaluate.perturbation.distribution_by_name": {}})
    assert same.hash == base.hash
    other = tiny_run(**{"evaluate.perturbation.evaluation_form": True})
    assert other.hash != base.hash and Run.from_toml(other.to_toml()).hash == other.hash


def _com_run(**changes):
    run = Run.make({"name": "com_rnn", "width": 3, "activation": "linear"},
                   {"name": "lf:exponential", "length": 12, "n_samples": 48},
                   train={"steps": 4, "batch_size": 16, "lr": 0.01, "dtype": "float64",
                          "device": "cpu", "threads": 1, "eval_every": 0,
                          "checkpoint_every": 0},
                   evaluate={"perturbation": {"betas": [1e-3, 1e-1], "repeats": 2,
                                              "n_eval": 16, "scope": "all", "norm": "inf",
                                              "shared_directions": True,
                                              "distribution_by_name": {"w": "deterministic"},
                                              "evaluation_form": True}})
    return run.replace(**changes) if changes else run


def test_worker_forwards_the_options(tmp_path):
    run = _com_run()
    res = execute([run], store=RunStore(tmp_path), progress=False)
    meta = res[0].evaluations()["perturbation"]["meta"]
    text = repr(meta)
    assert "inf" in text and "P" in text  # scope all: P and the decoder are perturbed
    curve = res[0].perturbation_curve()
    assert curve.samples.shape == (2, 2)
    # the same options through perturbation_curve directly give the same numbers
    from rnnmem.train.perturb import perturbation_curve

    direct = perturbation_curve(res[0].model(), res[0].eval_set(16), np.array([1e-3, 1e-1]),
                                repeats=2, scope="all", norm="inf", seed=0, method="loop",
                                shared_directions=True,
                                distribution_by_name={"w": "deterministic"},
                                evaluation_form=True)
    np.testing.assert_array_equal(direct.samples, curve.samples)
    # the deterministic direction on w: both repeats move w the same way, so a
    # w-only perturbation gives equal repeats
    only_w = _com_run(**{"evaluate.perturbation.parameters": ["w"],
                         "evaluate.perturbation.repeats": 1})
    assert only_w.evaluate.perturbation["parameters"] == ("w",)


def test_unmatched_direction_name_fails_before_training(tmp_path):
    run = _com_run(**{"evaluate.perturbation.distribution_by_name": {"W_missing": "gaussian"}})
    with pytest.raises(ConflictingOptionsError, match="W_missing"):
        execute([run], store=RunStore(tmp_path), progress=False)
    assert not RunStore(tmp_path).hashes()
