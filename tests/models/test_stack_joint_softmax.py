"""DeepMind's joint softmax over all stacks' actions (``action_softmax="joint"``)."""

from __future__ import annotations

import pytest
import torch

from rnnmem.errors import InvalidParameterError, UnknownNameError
from rnnmem.models.stack_rnn import StackRNN
from rnnmem.numerics import tolerance
from rnnmem.models.stacks import SuperpositionStack


def test_joint_softmax_is_one_softmax_over_all_logits():
    torch.manual_seed(0)
    s = SuperpositionStack(5, 3, n_stacks=2, hidden_size=4, action_softmax="joint",
                           dtype=torch.float64)
    h = torch.randn(7, 4, dtype=torch.float64)
    a = s.controls(h).actions.detach()  # (B, K, 3)
    ref = torch.softmax(s.action(h), dim=-1).view(7, 2, 3).detach()
    tol = tolerance("float64", n_ops=8)
    assert tol.allclose(a.numpy(), ref.numpy())
    assert tol.allclose(a.sum(dim=(1, 2)).numpy(), 1.0)
    assert (a.sum(-1) < 1).all()  # each stack only gets its share
    W, b = s.merged_interface()
    assert tolerance("float64", n_ops=16).allclose(
        s.controls_from_logits(h @ W + b).actions.detach().numpy(), a.detach().numpy())


def test_joint_equals_per_stack_for_one_stack_and_differs_for_two():
    torch.manual_seed(1)
    h = torch.randn(3, 4, dtype=torch.float64)
    one = [SuperpositionStack(4, 2, hidden_size=4, action_softmax=m, dtype=torch.float64)
           for m in ("per_stack", "joint")]
    one[1].load_state_dict(one[0].state_dict())
    torch.testing.assert_close(one[0].controls(h).actions, one[1].controls(h).actions)
    two = [SuperpositionStack(4, 2, n_stacks=2, hidden_size=4, action_softmax=m,
                              dtype=torch.float64) for m in ("per_stack", "joint")]
    two[1].load_state_dict(two[0].state_dict())
    assert not torch.allclose(two[0].controls(h).actions, two[1].controls(h).actions)


def test_stack_rnn_joint_option_runs_and_is_stored():
    m = StackRNN(3, 2, controller="srnn", hidden_size=6, n_stacks=2,
                 action_softmax="joint", dtype="float64", device="cpu", seed=0)
    assert m.config["action_softmax"] == "joint"
    x = torch.randint(0, 3, (4, 9))
    logits, trace = m(x, record_stack=True)
    assert tolerance("float64", n_ops=8).allclose(trace["actions"].sum(dim=(2, 3)).detach().numpy(),
                                                 1.0)
    assert "action_softmax" not in StackRNN(3, 2, device="cpu").config


def test_bad_action_softmax():
    with pytest.raises(UnknownNameError, match="action_softmax"):
        StackRNN(3, 2, action_softmax="global", device="cpu")
    with pytest.raises(InvalidParameterError, match="superposition"):
        StackRNN(3, 2, stack="stratification", action_softmax="joint", device="cpu")
    with pytest.raises(InvalidParameterError, match="action_softmax"):
        SuperpositionStack(3, 2, action_softmax="all")
