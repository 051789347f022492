"""Perturbation options of the original curse-of-memory protocol: inf-norm per tensor,
deterministic -beta, per-parameter directions, the evaluation form, the target scale."""

import math

import numpy as np
import pytest
import torch

from rnnmem.errors import ConflictingOptionsError
from rnnmem.models import build_model
from rnnmem.numerics.perturbation import original_betas
from rnnmem.train.perturb import (EvalSet, check_direction_options, perturbation_curve,
                                  perturbation_directions)
from rnnmem.train.tasks import weighted_mse


def _shapes(**kw):
    return {k: (v, False) for k, v in kw.items()}


@pytest.mark.parametrize("m", [2, 5, 9])
def test_inf_norm_is_the_originals_torch_norm_and_equals_max(m):
    sh = _shapes(W=(m, m), b=(m,))
    d_inf = perturbation_directions(sh, 0.3, seed=1, index=0, repeat=2, norm="inf")
    d_max = perturbation_directions(sh, 0.3, seed=1, index=0, repeat=2, norm="max")
    for k in sh:
        assert torch.equal(d_inf[k], d_max[k])
        # what the original normalises by: torch.norm(noise, p=inf) of the whole tensor
        assert math.isclose(float(torch.norm(d_inf[k], p=float("inf"))), 0.3, rel_tol=1e-14)


def test_inf_norm_spectral_size_grows_with_the_width():
    """The issue's measurement: a Gaussian m x m direction of max-entry beta has spectral
    norm growing with m (about 2 sqrt(m) / sqrt(2 log m^2) times beta)."""
    sizes = []
    for m in (8, 16, 32, 64):
        s = [float(torch.linalg.matrix_norm(perturbation_directions(
            _shapes(W=(m, m)), 1.0, seed=0, index=0, repeat=k, norm="inf")["W"], ord=2))
            for k in range(10)]
        sizes.append(np.mean(s))
    assert np.all(np.diff(sizes) > 0) and sizes[-1] > 1.5 * sizes[0]


def test_operator_inf_norm_and_shapes_it_refuses():
    d = perturbation_directions(_shapes(W=(4, 3), v=(5,)), 0.2, seed=0, index=0, repeat=0,
                                norm="operator_inf")
    assert math.isclose(float(d["W"].abs().sum(1).max()), 0.2, rel_tol=1e-14)
    assert math.isclose(float(d["v"].abs().max()), 0.2, rel_tol=1e-14)
    with pytest.raises(ConflictingOptionsError) as e:
        check_direction_options(_shapes(K=(2, 3, 4)), norm="operator_inf",
                                distribution="gaussian", repeats=1)
    assert "operator_inf" in str(e.value) and "'K'" in str(e.value)


def test_deterministic_direction_is_minus_beta_and_has_one_repeat():
    d = perturbation_directions(_shapes(w=(6,), P=(3, 3)), 0.05, seed=3, index=4, repeat=0,
                                norm="max", distribution="deterministic")
    assert torch.equal(d["w"], torch.full((6,), -0.05, dtype=torch.float64))
    assert torch.equal(d["P"], torch.full((3, 3), -0.05, dtype=torch.float64))
    with pytest.raises(ConflictingOptionsError) as e:
        check_direction_options(_shapes(w=(6,)), norm="max", distribution="deterministic",
                                repeats=30)
    assert "deterministic" in str(e.value) and "repeats=30" in str(e.value)


def test_per_parameter_distribution_the_september_2023_rule():
    """W moved by -beta, the rest Gaussian: repeats vary only the Gaussian part."""
    sh = _shapes(**{"net.W.weight": (4,), "encoder.weight": (4, 1)})
    by = {"W": "deterministic"}
    dists = check_direction_options(sh, norm="inf", distribution="gaussian", repeats=30,
                                    distribution_by_name=by)
    assert dists == {"net.W.weight": "deterministic", "encoder.weight": "gaussian"}
    a = perturbation_directions(sh, 0.1, seed=0, index=0, repeat=0, norm="inf",
                                distribution_by_name=by)
    b = perturbation_directions(sh, 0.1, seed=0, index=0, repeat=1, norm="inf",
                                distribution_by_name=by)
    assert torch.equal(a["net.W.weight"], b["net.W.weight"])
    assert torch.all(a["net.W.weight"] == -0.1)
    assert not torch.equal(a["encoder.weight"], b["encoder.weight"])
    with pytest.raises(ConflictingOptionsError, match="matches none"):
        check_direction_options(sh, norm="inf", distribution="gaussian", repeats=1,
                                distribution_by_name={"Q": "deterministic"})
    with pytest.raises(ConflictingOptionsError, match="repeats=2"):
        check_direction_options(sh, norm="inf", distribution="deterministic", repeats=2,
                                distribution_by_name={"W": "deterministic"})


def _evalset(T=10, n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, T, 1, generator=g)
    y = torch.cumsum(x, 1) * 0.3
    return EvalSet.from_arrays(x, y)


def test_target_scale_is_the_zero_models_loss():
    es = _evalset()
    y = torch.cat([b[1] for b in es.batches])
    assert math.isclose(es.target_scale(), float(y.square().mean()), rel_tol=1e-13)
    w = EvalSet(es.batches, lambda o, t, m: weighted_mse(o, t, m, 2.0))
    assert math.isclose(w.target_scale(), float(weighted_mse(torch.zeros_like(y), y, None, 2.0)),
                        rel_tol=1e-13)
    assert w.target_scale() != es.target_scale()


def test_evaluation_form_curve_of_the_relu_model():
    """Dead relu modes: -beta on w does nothing in the training form (relu clamps it) but
    makes those modes grow in the evaluation form, so its error is larger."""
    m = build_model("com_diagonal_rnn", width=6, seed=3, dtype="float64", device="cpu")
    assert (m.w <= 0).any()
    es = _evalset(T=20)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    opts = dict(repeats=1, scope="recurrent", norm="max", distribution="deterministic",
                method="loop")
    betas = np.array([0.05, 0.2])
    train_form = perturbation_curve(m, es, betas, **opts)
    eval_form = perturbation_curve(m, es, betas, evaluation_form=True, **opts)
    assert math.isclose(train_form.e0, eval_form.e0, rel_tol=1e-12)  # same function
    assert np.all(eval_form.samples > train_form.samples)
    assert eval_form.meta["evaluation_form"] and "evaluation_form" not in train_form.meta
    for k, v in m.state_dict().items():  # the trained model is left as it was
        assert torch.equal(v, before[k])
    # the original's grid and shared directions: each repeat scales one direction
    c = perturbation_curve(m, es, original_betas(5), repeats=2, scope="all", norm="inf",
                           shared_directions=True, method="loop")
    assert c.samples.shape == (5, 2) and c.meta["target_scale"] == es.target_scale()


@pytest.mark.parametrize("name", ["com_diagonal_rnn", "com_rnn", "com_ssm", "com_lru"])
def test_batched_equals_loop_for_the_original_models(name):
    m = build_model(name, width=3, seed=1, dtype="float64", device="cpu", activation="tanh")
    es = _evalset(T=8, n=6)
    kw = dict(repeats=2, scope="all", norm="inf", seed=2, evaluation_form=True)
    a = perturbation_curve(m, es, np.array([1e-3, 1e-1]), method="loop", **kw)
    b = perturbation_curve(m, es, np.array([1e-3, 1e-1]), method="batched", **kw)
    assert b.meta["method"] == "batched"
    assert np.allclose(a.samples, b.samples, rtol=1e-10, atol=1e-14)
