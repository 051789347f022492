"""perturbation_curve on a user's module: parameters by name pattern or callable, no_grad,
a helpful error (issue 12)."""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from rnnmem.errors import InvalidParameterError
from rnnmem.train.perturb import EvalSet, perturbation_curve, perturbed_parameters


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.rnn, self.head = nn.GRU(1, 4, batch_first=True), nn.Linear(4, 1)

    def forward(self, x):
        return self.head(self.rnn(x)[0])


def _data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 10, 1, generator=g)
    return x, 0.5 * x.cumsum(1)


def test_parameters_by_glob_list_and_callable():
    m = Net()
    assert list(perturbed_parameters(m, parameters="rnn.weight_hh*")) == ["rnn.weight_hh_l0"]
    assert list(perturbed_parameters(m, parameters=["*weight_hh*", "head.*"])) == [
        "head.bias", "head.weight", "rnn.weight_hh_l0"]
    sel = perturbed_parameters(m, parameters=lambda n, p: p.dim() == 2 and "rnn" in n)
    assert list(sel) == ["rnn.weight_hh_l0", "rnn.weight_ih_l0"]
    with pytest.raises(InvalidParameterError, match="no parameter matching"):
        perturbed_parameters(m, parameters="lstm.*")
    with pytest.raises(InvalidParameterError, match="glob pattern"):
        perturbed_parameters(m, parameters=[3])


def test_helpful_error_for_a_module_without_recurrent_parameters():
    with pytest.raises(InvalidParameterError) as info:
        perturbed_parameters(Net())
    msg = str(info.value)
    assert "recurrent_parameters" in msg and "'*weight_hh*'" in msg
    assert "rnn.weight_hh_l0" in msg and "head.weight" in msg and "scope='all'" in msg


@pytest.mark.parametrize("evaluate", ["evalset", "callable"])
def test_curve_on_a_user_module_only_moves_the_selected_parameters(evaluate):
    m = Net()
    x, y = _data()
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    es = EvalSet.from_arrays(x, y)

    def loss(model):  # a plain user callable, computing with autograd switched on
        return ((model(x) - y) ** 2).mean()

    ev = es if evaluate == "evalset" else loss
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "a tensor with requires_grad=True to a scalar"
        curve = perturbation_curve(m, ev, [1e-3, 1e-1], repeats=3, method="loop",
                                   parameters="rnn.weight_hh*")
    assert curve.meta["parameters"] == ["rnn.weight_hh_l0"]
    assert curve.meta["scope"] == "selected"
    assert curve.samples.shape == (2, 3) and np.all(np.isfinite(curve.samples))
    assert np.all(curve.samples != curve.e0)  # the recurrent matrix was perturbed
    for n, p in m.named_parameters():  # restored exactly
        assert torch.equal(p, before[n])
    assert all(p.grad is None for p in m.parameters())  # evaluated under no_grad


def test_an_adapted_time_major_module_with_a_readout():
    from rnnmem.models.adapt import AdaptedModule

    torch.manual_seed(3)
    gru, head = nn.GRU(1, 4), nn.Linear(4, 1)  # time-major, readout outside the module
    m = AdaptedModule(gru, readout=head)
    x, y = _data()
    out = m(x)
    assert out.shape == (6, 10, 1)
    with torch.no_grad():
        direct = head(gru(x.transpose(0, 1))[0]).transpose(0, 1)
    assert torch.equal(out, direct)
    curve = perturbation_curve(m, EvalSet.from_arrays(x, y), [1e-2], repeats=2,
                               method="loop", parameters="inner.weight_hh*")
    assert curve.meta["parameters"] == ["inner.weight_hh_l0"]
    assert {n for n, _ in m.named_parameters()} >= {"inner.weight_hh_l0", "readout.weight"}
