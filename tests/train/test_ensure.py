"""Training as the original curse-of-memory code: penalty, stop-below, best weights restored,
validation callbacks, test splits, and the ensure-approximation rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rnnmem.errors import ConflictingOptionsError, InvalidParameterError
from rnnmem.train import TrainConfig, build_task, train
from rnnmem.train.ensure import train_until_below

TASK = "lf:exponential"
TASK_KW = {"n_samples": 96, "length": 12, "seed": 1}


def _cfg(**kw):
    base = dict(model="com_diagonal_rnn", task=TASK, task_kwargs=TASK_KW,
                model_kwargs={"width": 3}, steps=12, batch_size=32, lr=1e-2,
                dtype="float64", device="cpu", eval_every=3, checkpoint_every=0,
                temporal_weighting=2.0, grad_clip=0.5)
    base.update(kw)
    return TrainConfig(**base)


def test_new_fields_round_trip_and_validate():
    c = _cfg(margin_penalty=0.01, margin_target=1.0, stop_below=0.5, stop_below_after=4,
             restore_best=True)
    assert TrainConfig.from_json(c.to_json()) == c
    for bad in ({"margin_penalty": -1.0}, {"stop_below": 0.0}, {"stop_below_after": -1},
                {"restore_best": 1}):
        with pytest.raises(InvalidParameterError, match=next(iter(bad))):
            _cfg(**bad)


@pytest.mark.parametrize("option", [{"stop_below": 0.1}, {"restore_best": True}])
def test_rule_without_evaluations_fails_naming_both_options(option):
    with pytest.raises(ConflictingOptionsError) as e:
        _cfg(eval_every=0, **option)
    assert next(iter(option)) in str(e.value) and "eval_every" in str(e.value)


def test_rule_without_validation_split_fails_before_training():
    calls = []
    cfg = _cfg(stop_below=0.1, task_kwargs={**TASK_KW, "valid_fraction": 0.0})
    with pytest.raises(ConflictingOptionsError) as e:
        train(cfg, progress=False, callback=lambda s, l: calls.append(s))
    assert "stop_below" in str(e.value) and "lf:exponential" in str(e.value)
    assert calls == []  # not one step


def test_penalty_needs_a_stability_margin():
    cfg = _cfg(model="diagonal_ssm", model_kwargs={"state_dim": 3}, margin_penalty=0.01)
    with pytest.raises(ConflictingOptionsError, match="margin_penalty.*diagonal_ssm"):
        train(cfg, progress=False)


def test_penalty_changes_the_gradient_by_its_own_term():
    """One SGD step: with the penalty, w moves by an extra -lr * c * d relu(1 - mu)/dw."""
    common = dict(optimizer="sgd", lr=0.1, steps=1, eval_every=1, grad_clip=None,
                  temporal_weighting=0.0)
    a = train(_cfg(**common), progress=False).model
    b = train(_cfg(margin_penalty=0.5, **common), progress=False).model
    from rnnmem.models import build_model

    w0 = build_model("com_diagonal_rnn", width=3, seed=0, dtype="float64", device="cpu").w
    w0 = w0.detach()  # the run's initial weights (model seed = config seed 0)
    smallest = int(torch.argmin(torch.where(w0 > 0, w0, torch.inf)))
    assert 0 < float(w0[smallest]) < 1.0  # relu(1 - mu) is active: d/dw = -1 there
    diff = (b.w - a.w).detach()
    expected = torch.zeros_like(diff)
    expected[smallest] = 0.1 * 0.5
    assert torch.allclose(diff, expected, atol=1e-12, rtol=0)


def test_stop_below_restore_best_and_eval_callback():
    seen = []
    res = train(_cfg(steps=60, stop_below=1e9, stop_below_after=6, restore_best=True),
                progress=False, eval_callback=lambda s, row: seen.append((s, row)) or False)
    assert res.stopped == "stop_below" and res.steps == 6  # checked from step 6 on
    assert [s for s, _ in seen] == [3]  # the stopping evaluation ends the run first
    assert "valid_loss" in seen[0][1]
    # restore: the model's validation loss equals the best one
    res = train(_cfg(steps=30, lr=0.3, restore_best=True), progress=False)
    assert res.restored_best
    losses = [r["valid_loss"] for r in res.history]
    assert res.best_loss == min(losses) == res.best_metrics["valid_loss"]
    task = build_task(TASK, **TASK_KW)
    task.configure(device="cpu", dtype=torch.float64, batch_size=32, seed=0,
                   temporal_weighting=2.0)
    assert math.isclose(task.evaluate(res.model, "valid")["loss"], res.best_loss,
                        rel_tol=1e-12)


def test_eval_callback_can_stop():
    res = train(_cfg(steps=30), progress=False, eval_callback=lambda s, row: s >= 6)
    assert res.stopped == "callback" and res.steps == 6


def test_train_until_below_records_the_rule_per_width():
    cfgs = {m: _cfg(model_kwargs={"width": m}, steps=15, lr=3e-2) for m in (2, 4, 3)}
    res = train_until_below(cfgs, factor=0.5, max_steps=15)
    assert list(res.outcomes) == [2, 3, 4]
    o = res.outcomes
    assert o[2].threshold is None and o[2].reached
    for a, b in ((2, 3), (3, 4)):
        assert math.isclose(o[b].threshold, 0.5 * o[a].best_valid_loss)
        assert o[b].reached == (o[b].best_valid_loss < o[b].threshold)
        assert o[b].status == "ok" if o[b].reached else o[b].status.startswith("rule failed")
        if not o[b].reached:
            assert o[b].steps == 15 and o[b].stopped == "completed"
    for m, oc in o.items():  # each model holds its best-validation weights
        assert oc.result.restored_best
        assert oc.best_valid_loss == min(r["valid_loss"] for r in oc.result.history)
    assert set(res.statuses()) == {2, 3, 4}
    assert res.to_dict()["outcomes"]["3"]["threshold"] == o[3].threshold


def test_train_until_below_generous_threshold_stops_early():
    cfgs = {m: _cfg(model_kwargs={"width": m}, steps=30) for m in (2, 3)}
    res = train_until_below(cfgs, factor=1.0, initial_threshold=1e9)
    assert res.outcomes[2].stopped == "stop_below" and res.outcomes[2].steps == 3
    assert res.outcomes[2].reached


def test_train_until_below_refuses_before_training():
    with pytest.raises(ConflictingOptionsError, match="eval_every"):
        train_until_below({2: _cfg(), 3: _cfg(eval_every=0)})
    with pytest.raises(InvalidParameterError, match="factor"):
        train_until_below({2: _cfg()}, factor=0.0)
