"""Your own torch model through ``rnnmem.memory_function`` (issue 12): no glue code, the
checks, and agreement with an independent Def. 3.1 estimate written here."""

import itertools
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import rnnmem
from rnnmem.errors import (BaselineDriftWarning, InvalidParameterError, NonCausalError,
                           NonFiniteError, ShapeError, TimeVaryingError)
from rnnmem.models.adapt import TorchSystem, jacobian_memory, jacobian_memory_reference
from rnnmem.numerics import tolerance

pytestmark = pytest.mark.usefixtures("one_thread")
T_LAGS = np.arange(25.0)


class Headed(nn.Module):
    """A torch RNN with a Linear readout, as a user writes it."""

    def __init__(self, kind, d=2, h=6, **kw):
        super().__init__()
        self.rnn = getattr(nn, kind)(d, h, batch_first=True, **kw)
        self.head = nn.Linear(h, 1)

    def forward(self, x):
        return self.head(self.rnn(x)[0])


class UserSSM(nn.Module):
    """A hand-written diagonal SSM with a tanh readout and a bias (nonlinear, biased)."""

    def __init__(self, d=2, n=5):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.log_decay = nn.Parameter(torch.linspace(-2.5, -0.3, n))
        self.inp = nn.Linear(d, n)  # its in_features is how rnnmem reads d
        self.out = nn.Parameter(torch.randn(1, n, generator=g))

    def forward(self, x):  # (B, T, d)
        lam = torch.exp(-torch.exp(self.log_decay))  # in (0, 1)
        u = self.inp(x)
        h = torch.zeros(x.shape[0], lam.shape[0], dtype=x.dtype)
        ys = []
        for k in range(x.shape[1]):
            h = lam * h + u[:, k]
            ys.append(torch.tanh(h) @ self.out.T)
        return torch.stack(ys, 1)


def _models():
    torch.manual_seed(0)
    return {"RNN(tanh)": Headed("RNN", nonlinearity="tanh"), "GRU": Headed("GRU"),
            "LSTM": Headed("LSTM"), "user SSM": UserSSM()}


def _independent_def31(f, d, n_lags, amplitudes, warm, dt):
    """Def. 3.1 from scratch: Heaviside inputs x 1_[0, inf) from the zero-input steady
    state (``warm`` zeros), the zero-input response subtracted, forward differences, sup
    over all sign vectors and the given amplitudes, divided by |x|_inf."""
    best = np.zeros(n_lags)
    with torch.no_grad():
        zero = torch.zeros(1, warm + n_lags + 1, d)
        y0 = f(zero)[0, warm:, 0].numpy()
        for a, signs in itertools.product(amplitudes, itertools.product((-1.0, 1.0),
                                                                        repeat=d)):
            x = zero.clone()
            x[0, warm + 1:] = a * torch.tensor(signs)
            s = f(x)[0, warm:, 0].numpy() - y0
            best = np.maximum(best, np.abs(np.diff(s)[:n_lags]) / dt / a)
    return best


@pytest.mark.parametrize("name", ["RNN(tanh)", "GRU", "LSTM", "user SSM"])
def test_agrees_with_an_independent_def31_estimate(name):
    model = _models()[name]
    est = rnnmem.memory_function(model, T_LAGS, dt=1.0)  # no glue: input size, tuple, ...
    assert isinstance(est, rnnmem.MemoryEstimate) and est.values.shape == T_LAGS.shape
    assert all(v is not None and v <= est.check_rtol for v in est.checks.values())
    ref = _independent_def31(model, 2, T_LAGS.size, est.amplitudes, est.warmup_steps, 1.0)
    # float64 rounding of outputs of size |y| divided by the smallest amplitude
    with torch.no_grad():
        y_scale = float(model(torch.zeros(1, 5, 2)).abs().max()) + 1.0
    cond = y_scale / (est.amplitudes.min() * ref.max())
    tol = tolerance("float64", n_ops=est.warmup_steps + T_LAGS.size + 1, cond=cond,
                    scale=ref.max())
    assert tol.allclose(est.values, ref), (name, tol.max_violation(est.values, ref))
