"""The original curse-of-memory model forms (rnnmem.models.curse_original)."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

from rnnmem.errors import InvalidParameterError, UnknownNameError, UnstableSystemError
from rnnmem.models import build_model, load, save_checkpoint
from rnnmem.numerics import tolerance

NAMES = ["com_diagonal_rnn", "com_rnn", "com_ssm", "com_lru"]


def _model(name, width=3, **kw):
    kw.setdefault("dtype", "float64")
    kw.setdefault("device", "cpu")
    kw.setdefault("seed", 0)
    return build_model(name, width=width, **kw)


def _original_forward(m, x):
    """The residual update written out from the formulas of the module docstring, with
    plain matrices (independent of the model's own code paths)."""
    sig = {"linear": lambda z: z, "tanh": torch.tanh,
           "hardtanh": torch.nn.functional.hardtanh}[m.activation]
    u = x @ m.encoder.weight.T + m.encoder.bias
    if m._mlp:
        u = sig(u @ m.g.linear1.weight.T + m.g.linear1.bias) @ m.g.linear2.weight.T \
            + m.g.linear2.bias
    w = m.w
    h = torch.zeros(x.shape[0], m.width, dtype=x.dtype)
    rec = sig if m.recurrent_activation else (lambda z: z)
    ys = []
    for k in range(x.shape[1]):
        if m._lru:
            a = torch.exp(-torch.exp(w)) - 1
            h = h + m.dt * rec(a * h + torch.sqrt(1 - a**2) * u[:, k])
        else:
            if m.decay_map == "softplus":
                r = torch.log1p(torch.exp(w))
            else:
                r = w if m.direct else torch.clamp(w, min=0)
            M = torch.diag(r)
            if m._rotation:
                M = m.P.T @ M @ m.P
            h = h + m.dt * rec(u[:, k] - h @ M.T)
        z = h
        if m._mlp:
            z = sig(z @ m.f.linear1.weight.T + m.f.linear1.bias) @ m.f.linear2.weight.T \
                + m.f.linear2.bias
        ys.append(z @ m.decoder.weight.T + m.decoder.bias)
    return torch.stack(ys, 1)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("activation", ["linear", "tanh"])
def test_forward_matches_the_written_out_recurrence(name, activation):
    m = _model(name, 4, activation=activation, dt=0.7)
    x = torch.randn(2, 15, 1, generator=torch.Generator().manual_seed(1))
    y, ref = m(x), _original_forward(m, x)
    assert y.shape == (2, 15, 1)
    tol = tolerance(torch.float64, n_ops=15 * 4 * 4, scale=float(ref.detach().abs().max()) + 1)
    assert tol.allclose(y.detach().numpy(), ref.detach().numpy())


def test_main_ssm_puts_the_activation_inside_the_recurrence():
    a = _model("com_ssm", 3, activation="tanh")
    b = _model("com_ssm", 3, activation="tanh", recurrent_activation=True)
    x = torch.randn(2, 10, 1, generator=torch.Generator().manual_seed(2)) * 3
    assert not a.recurrent_activation and b.recurrent_activation
    assert torch.allclose(b(x), _original_forward(b, x), atol=1e-13, rtol=0)
    assert not torch.allclose(a(x), b(x))


@pytest.mark.parametrize("name", NAMES)
def test_contract_width_spectrum_and_recurrent_parameters(name):
    m = _model(name, 5)
    assert m.width == 5 and m.config["width"] == 5
    assert m.input_dim == 1 and m.output_dim == 1
    ev = m.spectrum().eigenvalues
    assert ev.shape == (5,)
    A, _ = m.transition()
    A = A.detach()
    ref = np.linalg.eigvals(A.numpy()) if A.dim() == 2 else A.numpy()
    assert np.allclose(np.sort(np.abs(ev)), np.sort(np.abs(ref)))
    rate = m.slowest_decay_rate()
    assert math.isclose(rate, -math.log(np.abs(ev).max()) / m.dt, abs_tol=1e-15)
    rec = set(m.recurrent_parameters())
    assert "w" in rec and ("P" in rec) == (name in ("com_rnn", "com_ssm"))
    assert not any(k.startswith(("encoder", "decoder")) for k in rec)


def test_relu_map_dead_modes_are_integrators_and_the_evaluation_form():
    m = _model("com_diagonal_rnn", 8, seed=3)
    w = m.w.detach()
    assert (w < 0).any() and (w > 0).any()  # randn init: both signs
    r = m.decay_rates().detach()
    assert torch.equal(r, torch.clamp(w, min=0))
    ev = m.spectrum().eigenvalues.real
    assert np.sum(ev == 1.0) == int((w <= 0).sum())  # exact integrators
    dead = (w <= 0).numpy()
    e = m.evaluation_form()
    assert e is not m and e.direct and e.config["direct"] and not m.direct
    assert torch.equal(e.w.detach(), torch.clamp(w, min=0))
    x = torch.randn(3, 12, 1, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(e(x), m(x), atol=1e-14, rtol=0)  # same function
    with torch.no_grad():  # a perturbation by -beta now makes the dead modes grow ...
        e.w.sub_(1e-2)
        m.w.sub_(1e-2)
    assert np.allclose(e.spectrum().eigenvalues.real[dead], 1 + 1e-2)
    assert np.all(m.spectrum().eigenvalues.real[dead] == 1.0)  # ... which relu clamps in training form
    # with dt = 1 the residual form is stable only for 0 <= r < 2 (|1 - r| < 1)
    big = (m.w.detach() > 2).numpy()
    assert np.all(np.abs(m.spectrum().eigenvalues[big]) > 1)


def test_softplus_and_lru_keep_their_map_at_evaluation():
    for name, kw in (("com_rnn", {"decay_map": "softplus"}), ("com_lru", {})):
        m = _model(name, 3, **kw)
        assert m.evaluation_form() is m
        assert m.slowest_decay_rate() > 0


@pytest.mark.parametrize("name", NAMES)
def test_exact_memory_equals_the_black_box_estimate(name):
    kw = {"decay_map": "softplus"} if name in ("com_rnn", "com_ssm") else {}
    m = _model(name, 3, seed=5, **kw)
    t = np.arange(12.0)
    exact = m.memory_function(t, method="closed_form")  # integrators allowed
    est = m.memory_function(t, method="estimator")  # the biases are removed by a baseline
    assert exact.shape == est.shape == (12,)
    tol = tolerance(np.float64, n_ops=50, scale=float(np.abs(exact).max()) + 1)
    assert tol.allclose(est, exact)


@given(seed=st.integers(0, 2**16), width=st.integers(1, 4))
def test_exact_memory_is_the_kernel_of_the_written_out_model(seed, width):
    """Closed form against the impulse response of the independent reference."""
    m = _model("com_rnn", width, seed=seed, decay_map="softplus")
    T = 8
    x = torch.zeros(1, T, 1)
    x[0, 0, 0] = 1.0
    base = _original_forward(m, torch.zeros(1, T, 1))
    rho = (_original_forward(m, x) - base)[0, :, 0].detach().numpy()  # kernel rho_k
    M = m.memory_function(np.arange(T, dtype=float), method="closed_form")
    tol = tolerance(np.float64, n_ops=T * width * width, scale=float(np.abs(rho).max()) + 1)
    assert tol.allclose(M, np.abs(rho) / m.dt)


def test_stability_margin_is_the_originals():
    m = _model("com_diagonal_rnn", 6, seed=3)
    w = m.w.detach()
    assert float(m.stability_margin().detach()) == float(w[w > 0].min())
    assert float(m.evaluation_form().stability_margin()) == 0.0  # min(relu(w)) with dead modes
    s = _model("com_rnn", 4, decay_map="softplus")
    assert math.isclose(float(s.stability_margin()), math.log1p(math.exp(float(s.w.min()))))
    # differentiable: the penalty relu(1 - margin) has a gradient on w
    loss = torch.relu(1 - m.stability_margin())
    loss.backward()
    assert m.w.grad is not None and m.w.grad.abs().sum() > 0


def test_checkpoint_round_trip_keeps_the_form(tmp_path):
    m = _model("com_ssm", 3, decay_map="softplus", activation="tanh").evaluation_form()
    e = _model("com_diagonal_rnn", 3).evaluation_form()
    x = torch.randn(2, 9, 1)
    for mdl in (m, e):
        p = save_checkpoint(tmp_path / f"{mdl.model_name}.pt", mdl)
        back = load(p)
        assert back.config == mdl.config
        assert torch.allclose(back(x), mdl(x))


def test_bad_options():
    with pytest.raises(InvalidParameterError, match="width"):
        _model("com_rnn", 0)
    with pytest.raises(UnknownNameError, match="decay map"):
        _model("com_rnn", 3, decay_map="exp")
    with pytest.raises(InvalidParameterError, match="direct"):
        _model("com_rnn", 3, decay_map="softplus", direct=True)
    with pytest.raises(InvalidParameterError, match="LRU"):
        _model("com_lru", 3, decay_map="relu")
    with pytest.raises(InvalidParameterError, match="recurrent_activation"):
        _model("com_rnn", 3, recurrent_activation=False)
    with pytest.raises(InvalidParameterError, match="method"):
        _model("com_rnn", 3, decay_map="softplus").memory_function([0.0], method="ode")


def test_closed_form_can_insist_on_decay():
    m = _model("com_diagonal_rnn", 6, seed=3)  # dead relu modes: exact integrators
    M = m.memory_function(np.arange(5.0), method="closed_form")
    assert np.all(np.isfinite(M))
    with pytest.raises(UnstableSystemError):
        m.memory_function(np.arange(5.0), method="closed_form", require_stable=True)


@given(seed=st.integers(0, 2**16), width=st.integers(1, 5),
       name=st.sampled_from(["com_diagonal_rnn", "com_lru"]),
       decay_map=st.sampled_from(["relu", "softplus"]), dt=st.floats(0.1, 1.0))
def test_fast_forward_equals_the_step_loop(seed, width, name, decay_map, dt):
    """The scan path (linear_recurrence, diagonal linear forms) against _forward_loop."""
    kw = {} if name == "com_lru" else {"decay_map": decay_map}
    m = _model(name, width, seed=seed, dt=dt, **kw)
    x = torch.randn(2, 9, 1, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        fast, ref = m(x), m._forward_loop(x)
        A, _ = m.transition()
    growth = float(max(1.0, A.abs().max())) ** 9  # |A| > 1 modes amplify rounding
    tol = tolerance(torch.float64, n_ops=9 * width, scale=float(ref.abs().max()) + 1,
                    cond=growth)
    assert tol.allclose(fast.numpy(), ref.numpy())
