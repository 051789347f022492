"""Batched perturbation sweeps of the linear models: vmap through linear_recurrence.

The linear models (DiagonalSSM, LRU, the diagonal linear SSM / StableSSM / RNN) run their
recurrence through :func:`rnnmem.models.recurrence.linear_recurrence`, whose fast kernels
are a custom autograd Function with a vmap rule; ``perturbation_curve(method="batched")``
evaluates stacked perturbed parameter sets with ``functional_call`` under ``vmap`` and must
give the loop's losses.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rnnmem.models import build_model
from rnnmem.models import recurrence as R
from rnnmem.numerics import tolerance
from rnnmem.train.perturb import EvalSet, perturbation_curve

BETAS = np.geomspace(1e-3, 0.5, 4)
T = 15  # long enough that "auto" picks a fast kernel, not the loop
N = 4

MODELS = {
    "diagonal_ssm": {"width": N},
    "lru": {"width": N},
    "stable_ssm": {"width": N},
    "ssm": {"width": N, "recurrence": "diagonal"},
    "rnn": {"width": N, "recurrence": "diagonal", "activation": "linear"},
}


def _model(name, dtype="float64"):
    return build_model(name, dtype=dtype, device="cpu", seed=3, **MODELS[name])


def _evalset(dtype=torch.float64, B=11, batch_size=4):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, T, 1, generator=g, dtype=torch.float64)
    y = 0.5 * torch.cumsum(x, 1) / (1 + torch.arange(T, dtype=torch.float64))[:, None]
    return EvalSet.from_arrays(x, y, batch_size=batch_size, dtype=dtype)  # short last batch


def _tol(dtype):
    """The losses are means of squared readouts of a length-T recurrence of width N: chains
    of about T + N roundings, conditioning at most T (the recurrence's 1/(1 - |a|) capped at
    its length), computed in a different order by the two methods."""
    return tolerance(dtype, n_ops=T + N, cond=T)


@pytest.fixture
def vmap_rule_calls(monkeypatch):
    """Counts the calls of the Function's vmap rule (the fast kernels under vmap)."""
    calls = []
    rule = R._LinearRecurrence.vmap

    def counted(info, in_dims, *args):
        calls.append(in_dims)
        return rule(info, in_dims, *args)

    monkeypatch.setattr(R._LinearRecurrence, "vmap", staticmethod(counted))
    return calls


@pytest.mark.parametrize("scope", ["recurrent", "all"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_batched_equals_loop(name, scope, vmap_rule_calls):
    m = _model(name)
    es = _evalset()
    before = {k: v.detach().clone() for k, v in m.state_dict().items()}
    loop = perturbation_curve(m, es, BETAS, repeats=3, scope=scope, method="loop", seed=5)
    assert not vmap_rule_calls
    bat = perturbation_curve(m, es, BETAS, repeats=3, scope=scope, method="batched", seed=5,
                             chunk_size=5)
    assert bat.meta["method"] == "batched" and loop.meta["method"] == "loop"
    assert vmap_rule_calls  # the fast kernels ran under vmap (no fallback to the loop)
    assert np.all(np.isfinite(loop.samples))
    assert _tol(torch.float64).allclose(bat.samples, loop.samples)
    assert bat.e0 == loop.e0 == pytest.approx(es(m))
    assert not np.allclose(loop.samples[0], loop.samples[-1])  # the radii matter
    assert all(torch.equal(v, before[k]) for k, v in m.state_dict().items())


@pytest.mark.parametrize("name", ["diagonal_ssm", "lru"])
def test_batched_equals_loop_float32(name):
    m = _model(name, "float32")
    es = _evalset(torch.float32)
    loop = perturbation_curve(m, es, BETAS, repeats=2, method="loop", seed=1)
    bat = perturbation_curve(m, es, BETAS, repeats=2, method="batched", seed=1, chunk_size=3)
    assert _tol(torch.float32).allclose(bat.samples, loop.samples)


@pytest.mark.parametrize("name", ["diagonal_ssm", "lru"])
def test_auto_can_batch_the_linear_models(name):
    """``auto`` no longer falls back: the batched chunk runs, and is timed against the loop."""
    m = _model(name)
    es = _evalset()
    auto = perturbation_curve(m, es, BETAS, repeats=2, seed=2, chunk_size=3)
    assert "batched_error" not in auto.meta
    assert auto.meta["method"] in ("batched (measured faster)", "loop (measured faster)")
    loop = perturbation_curve(m, es, BETAS, repeats=2, seed=2, method="loop")
    assert _tol(torch.float64).allclose(auto.samples, loop.samples)
