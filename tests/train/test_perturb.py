"""Perturbing torch models: exact norms, scope, batched == loop, restoring, the task's set."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rnnmem.errors import (CheckpointError, InvalidParameterError, NonFiniteError,
                           UnknownNameError)
from rnnmem.models import build_model, save_checkpoint
from rnnmem.numerics import tolerance
from rnnmem.numerics.perturbation import PerturbationCurve
from rnnmem.train import TrainConfig, train
from rnnmem.train.perturb import (EvalSet, eval_set_from_checkpoint, perturbation_curve,
                                  perturbation_directions, perturbed_parameters)

BETAS = np.geomspace(1e-3, 1.0, 4)


def _data(B=12, T=15, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, 1, generator=g, dtype=torch.float64)
    y = 0.3 * torch.cumsum(x, 1)
    return x, y


def _tanh_rnn(n=5):
    return build_model("rnn", width=n, activation="tanh", dtype="float64", device="cpu",
                       seed=1)


def _diag(n=5):
    return build_model("diagonal_ssm", width=n, dtype="float64", device="cpu", seed=1)


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ----------------------------------------------------------------------------- directions
@pytest.mark.parametrize("dist", ["gaussian", "rademacher"])
def test_directions_have_norm_exactly_beta(dist):
    shapes = {"W": ((6, 4), False), "v": ((5,), False), "s": ((), False), "T": ((2, 3, 4), False),
              "z": ((4,), True)}
    tol = tolerance("float64", n_ops=24)
    for norm in ("spectral", "frobenius", "max"):
        d = perturbation_directions(shapes, 0.37, seed=2, index=1, repeat=3, norm=norm,
                                    distribution=dist)
        assert set(d) == set(shapes)
        for name, t in d.items():
            if norm == "frobenius":
                n = torch.linalg.vector_norm(t)
            elif norm == "max" or t.dim() <= 1:
                n = t.abs().max()  # spectral norm of diag(v) for vectors
            else:
                n = torch.linalg.matrix_norm(t.reshape(t.shape[0], -1), ord=2)
            assert tol.allclose(float(n), 0.37), (norm, name)
        assert d["z"].is_complex() and not d["W"].is_complex()


def test_directions_are_reproducible_and_distinct():
    shapes = {"W": ((3, 3), False)}
    a = perturbation_directions(shapes, 1.0, seed=0, index=0, repeat=0)
    assert torch.equal(a["W"], perturbation_directions(shapes, 1.0, seed=0, index=0,
                                                       repeat=0)["W"])
    for kw in ({"seed": 1, "index": 0, "repeat": 0}, {"seed": 0, "index": 1, "repeat": 0},
               {"seed": 0, "index": 0, "repeat": 1}):
        assert not torch.equal(a["W"], perturbation_directions(shapes, 1.0, **kw)["W"])


def test_scope_selects_parameters():
    m = _tanh_rnn()
    assert list(perturbed_parameters(m, "recurrent")) == ["W"]
    assert set(perturbed_parameters(m, "all")) == {n for n, _ in m.named_parameters()}
    with pytest.raises(UnknownNameError):
        perturbed_parameters(m, "readout")
    with pytest.raises(InvalidParameterError):
        perturbed_parameters(torch.nn.Linear(2, 2), "recurrent")


# ----------------------------------------------------------------------------- the curve
class _Recorder:
    """evaluate(model): records the perturbation actually applied, returns a loss."""

    def __init__(self, model):
        self.base = _snapshot(model)
        self.seen = []

    def __call__(self, model):
        self.seen.append({k: (v.detach() - self.base[k]) for k, v in model.state_dict().items()})
        return 1.0 + float(sum(float(d.abs().sum()) for d in self.seen[-1].values()))


@pytest.mark.parametrize("norm", ["spectral", "frobenius", "max"])
def test_loop_applies_perturbations_of_norm_beta_to_the_scope_only(norm):
    m = _tanh_rnn()
    rec = _Recorder(m)
    c = perturbation_curve(m, rec, BETAS, repeats=3, norm=norm, scope="recurrent")
    assert isinstance(c, PerturbationCurve) and c.samples.shape == (4, 3)
    assert c.meta["method"] == "loop" and c.meta["parameters"] == ["W"]
    assert c.e0 == 1.0  # the first call is unperturbed
    # recorded as (W0 + d) - W0: rounding of |W0|, relative to the smallest radius
    tol = tolerance("float64", n_ops=25, cond=float(rec.base["W"].abs().max()) / BETAS[0])
    for j, seen in enumerate(rec.seen[1:]):
        beta = BETAS[j // 3]
        for name, d in seen.items():
            if name != "W":
                assert torch.count_nonzero(d) == 0
                continue
            n = {"spectral": lambda: torch.linalg.matrix_norm(d, ord=2),
                 "frobenius": lambda: torch.linalg.vector_norm(d),
                 "max": lambda: d.abs().max()}[norm]()
            assert tol.allclose(float(n), beta)
    assert all(torch.equal(v, rec.base[k]) for k, v in m.state_dict().items())


@pytest.mark.parametrize("scope", ["recurrent", "all"])
def test_batched_equals_loop(scope):
    m = _tanh_rnn()
    x, y = _data()
    es = EvalSet.from_arrays(x, y, batch_size=5)  # three batches, the last one short
    before = _snapshot(m)
    loop = perturbation_curve(m, es, BETAS, repeats=3, scope=scope, method="loop", seed=4)
    bat = perturbation_curve(m, es, BETAS, repeats=3, scope=scope, method="batched", seed=4,
                             chunk_size=5)
    assert loop.meta["method"] == "loop" and bat.meta["method"] == "batched"
    tol = tolerance("float64", n_ops=x.shape[1] * 5, cond=10.0)
    assert tol.allclose(bat.samples, loop.samples)
    assert bat.e0 == loop.e0 == pytest.approx(es(m))
    assert not np.allclose(loop.samples[0], loop.samples[-1])  # the radii matter
    assert all(torch.equal(v, before[k]) for k, v in m.state_dict().items())


@pytest.mark.parametrize("make", [_diag, _tanh_rnn])
def test_auto_matches_loop_whatever_it_picks(make):
    m = make()
    x, y = _data()
    es = EvalSet.from_arrays(x, y)
    auto = perturbation_curve(m, es, BETAS, repeats=2, seed=1, chunk_size=3)
    loop = perturbation_curve(m, es, BETAS, repeats=2, seed=1, method="loop")
    if auto.meta["method"] == "loop":  # the model's forward cannot be vmapped
        assert "batched_error" in auto.meta and "timing" not in auto.meta
    else:  # first chunk batched, second in the loop, the rest with the faster one
        assert auto.meta["method"] in ("batched (measured faster)", "loop (measured faster)")
        assert set(auto.meta["timing"]) == {"batched_s_per_sample", "loop_s_per_sample"}
    tol = tolerance("float64", n_ops=x.shape[1] * 5, cond=10.0)
    assert tol.allclose(auto.samples, loop.samples)


def test_shared_directions_scale_one_direction():
    m = _tanh_rnn()
    rec = _Recorder(m)
    perturbation_curve(m, rec, BETAS, repeats=2, shared_directions=True)
    W = [s["W"] for s in rec.seen[1:]]  # index = 2 * radius + repeat
    # recorded as (W0 + d) - W0: rounding of |W0|, relative to the smallest radius
    tol = tolerance("float64", n_ops=25, cond=float(rec.base["W"].abs().max()) / BETAS[0])
    for r in range(2):
        assert tol.allclose((W[2 * 3 + r] / BETAS[3]).numpy(), (W[r] / BETAS[0]).numpy())


def test_nan_losses_are_blow_ups_and_the_model_is_restored_on_error():
    m = _tanh_rnn()
    before = _snapshot(m)
    calls = []

    def evaluate(model):
        calls.append(1)
        return float("nan") if len(calls) > 1 else 0.5

    c = perturbation_curve(m, evaluate, BETAS, repeats=2)
    assert np.all(np.isposinf(c.samples)) and c.e0 == 0.5

    def failing(model):
        calls.append(1)
        if len(calls) > 12:
            raise RuntimeError("boom")
        return 1.0

    with pytest.raises(RuntimeError):
        perturbation_curve(m, failing, BETAS, repeats=2)
    assert all(torch.equal(v, before[k]) for k, v in m.state_dict().items())


def test_validation():
    m = _tanh_rnn()
    es = EvalSet.from_arrays(*_data())
    for kw, err in (({"repeats": 0}, InvalidParameterError),
                    ({"scope": "readout"}, UnknownNameError),
                    ({"norm": "nuclear"}, UnknownNameError),
                    ({"method": "fast"}, UnknownNameError),
                    ({"distribution": "uniform"}, UnknownNameError),
                    ({"seed": -1}, InvalidParameterError),
                    ({"chunk_size": 0}, InvalidParameterError)):
        with pytest.raises(err):
            perturbation_curve(m, es, BETAS, **kw)
    for bad in ([0.0, 1.0], [1.0, 0.1], [-1.0]):
        with pytest.raises(InvalidParameterError):
            perturbation_curve(m, es, bad)
    with pytest.raises(NonFiniteError):
        perturbation_curve(m, es, [float("nan")])
    with pytest.raises(InvalidParameterError):
        perturbation_curve(m, lambda model: 1.0, BETAS, method="batched")
    with pytest.raises(InvalidParameterError):
        perturbation_curve(m, "loss", BETAS)
    with pytest.raises(InvalidParameterError):
        EvalSet([])


# ----------------------------------------------------------------------------- checkpoints
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cfg = TrainConfig(model="diagonal_ssm", task="lf:exponential",
                      task_kwargs={"n_samples": 40, "length": 12}, model_kwargs={"width": 3},
                      steps=4, eval_every=4, checkpoint_every=4, batch_size=8, dtype="float64",
                      device="cpu", out_dir=str(out))
    result = train(cfg, progress=False)
    return out / "last.pt", result


def test_eval_set_recovers_the_training_task(trained):
    path, result = trained
    from rnnmem.models import load

    model = load(path)
    es, info = eval_set_from_checkpoint(path, model)
    assert info["task"] == "lf:exponential" and info["from"] == "checkpoint"
    assert info["split"] == "valid" and es.n_samples == 8  # 20 % of 40
    # the loss on the rebuilt held-out split is the one the loop logged at that step
    logged = result.history[-1]["valid_loss"]
    assert tolerance("float64", n_ops=12 * 8, cond=10.0).allclose(es(model), logged)
    es2, _ = eval_set_from_checkpoint(path, model, max_samples=3)
    assert es2.n_samples == 3
    es3, info3 = eval_set_from_checkpoint(path, model, task="lf:polynomial",
                                          task_kwargs={"n_samples": 20, "length": 5})
    assert info3["from"] == "option" and es3.batches[0][0].shape[1] == 5


def test_checkpoint_without_training_state_needs_a_task(tmp_path):
    path = save_checkpoint(tmp_path / "bare.pt", _diag())
    with pytest.raises(CheckpointError, match="task"):
        eval_set_from_checkpoint(path)
    es, info = eval_set_from_checkpoint(path, task="lf:exponential",
                                        task_kwargs={"n_samples": 10, "length": 5})
    assert info["from"] == "option" and es.n_samples == 2
    assert math.isfinite(es(_diag()))
