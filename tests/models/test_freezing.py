"""Freezing components: which parameters, and that AdamW + weight decay leaves them alone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rnnmem.errors import InvalidParameterError, UnknownNameError
from rnnmem.models.freezing import (FreezeSchedule, apply_freeze, drop_frozen_from_optimizer,
                                    trainable_parameters)
from rnnmem.models.stack_rnn import StackRNN

V = 4
PREFIX = {"memory": ("memory.",), "controller": ("controller.",),
          "all_but_classifier": ("controller.", "memory.")}


def make(stack="superposition") -> StackRNN:
    torch.manual_seed(0)
    return StackRNN(V, controller="gru", stack=stack, width=5, stack_width=2,
                    stack_depth=4, embedding_dim=3, dtype="float64", device="cpu")


def snapshot(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def train(model, opt, steps, seed=0, set_to_none=True):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randint(0, V, (3, 5), generator=g)
        loss = nn.functional.cross_entropy(model(x)[:, :-1].reshape(-1, V), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=set_to_none)
        loss.backward()
        opt.step()


def is_frozen_name(name, freeze) -> bool:
    return name.startswith(PREFIX[freeze])


@pytest.mark.parametrize("freeze", ["memory", "controller", "all_but_classifier"])
def test_apply_freeze_marks_the_named_parameters(freeze):
    m = make()
    names = apply_freeze(m, freeze)
    assert names and all(is_frozen_name(n, freeze) for n in names)
    for n, p in m.named_parameters():
        assert p.requires_grad is (not is_frozen_name(n, freeze)), n
    assert {id(p) for p in trainable_parameters(m)} == {
        id(p) for n, p in m.named_parameters() if not is_frozen_name(n, freeze)}
    if freeze == "controller":  # the input embedding belongs to the controller
        assert not m.controller.embedding.weight.requires_grad


def test_none_and_errors():
    m = make()
    assert apply_freeze(m, "none") == [] and all(p.requires_grad for p in m.parameters())
    with pytest.raises(InvalidParameterError, match="memory"):
        apply_freeze(make("none"), "memory")
    assert apply_freeze(make("none"), "controller")  # the baseline has a controller
    with pytest.raises(UnknownNameError, match="freeze mode"):
        apply_freeze(m, "stack")
    with pytest.raises(InvalidParameterError, match="controller"):
        apply_freeze(nn.Sequential(nn.Linear(2, 2)), "controller")
    with pytest.raises(InvalidParameterError, match="after_steps"):
        FreezeSchedule("memory", after_steps=-1)
    with pytest.raises(UnknownNameError):
        FreezeSchedule("everything")


@pytest.mark.parametrize("freeze", ["memory", "controller", "all_but_classifier"])
def test_frozen_from_start_bitwise_unchanged_with_adamw_decay(freeze):
    m = make()
    sched = FreezeSchedule(freeze, after_steps=0)
    assert sched.maybe_apply(m, 0) is True and sched.maybe_apply(m, 1) is False
    before = snapshot(m)
    opt = torch.optim.AdamW(trainable_parameters(m), lr=1e-2, weight_decay=0.5)
    train(m, opt, 4, set_to_none=False)
    for n, p in m.named_parameters():
        if is_frozen_name(n, freeze):
            assert torch.equal(p, before[n]), n
        else:
            assert not torch.equal(p, before[n]), n


@pytest.mark.parametrize("freeze", ["memory", "all_but_classifier"])
def test_late_freeze_with_optimizer_built_earlier(freeze):
    m = make()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=0.5)
    sched = FreezeSchedule(freeze, after_steps=3)
    at_freeze = None
    for step in range(7):
        if sched.maybe_apply(m, step, opt):
            at_freeze = snapshot(m)
            assert step == 3
        train(m, opt, 1, seed=step, set_to_none=False)  # zero (not None) grads: the hard case
    assert at_freeze is not None
    for n, p in m.named_parameters():
        if is_frozen_name(n, freeze):
            assert torch.equal(p, at_freeze[n]), n
        else:
            assert not torch.equal(p, at_freeze[n]), n
    kept = {id(p) for g in opt.param_groups for p in g["params"]}
    assert kept == {id(p) for p in trainable_parameters(m)}
    assert all(id(p) in kept for p in opt.state)


def test_late_freeze_without_dropping_moves_frozen_parameters():
    """The hazard handled above: requires_grad=False alone does not stop AdamW."""
    m = make()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=0.5)
    train(m, opt, 2, set_to_none=False)
    apply_freeze(m, "memory")
    before = snapshot(m)
    train(m, opt, 2, seed=1, set_to_none=False)
    assert not torch.equal(m.memory.action.weight, before["memory.action.weight"])
    # and the helper, applied now, stops it
    assert drop_frozen_from_optimizer(opt, m) == len(list(m.memory.parameters()))
    before = snapshot(m)
    train(m, opt, 2, seed=2, set_to_none=False)
    assert torch.equal(m.memory.action.weight, before["memory.action.weight"])
