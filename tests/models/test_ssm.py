"""NonlinearSSM and StableSSM: shapes, dtypes, fast path vs loop, errors, exact memory vs the
black-box estimator and vs its continuous-time limit, checkpoints, gradients, stability."""

import json

import numpy as np
import pytest
import sympy as sp
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from rnnmem.errors import (
    InvalidParameterError,
    NonFiniteError,
    ShapeError,
    UnknownNameError,
    UnstableSystemError,
)
from rnnmem.models.diagonal import DiagonalSSM
from rnnmem.models.registry import MODELS, build_model, load, save_checkpoint
from rnnmem.models.ssm import NonlinearSSM, StableSSM, zoh_diagonal, zoh_matrix
from rnnmem.numerics import eigenvector_condition, linear_memory_reference, tolerance
from rnnmem.theory import PARAMETERISATIONS

#: a fitted convergence order may deviate this much from the method's order
ORDER_SLACK = 0.25

#: maps whose eigenvalues lie in the stable region for every real weight
STABLE_MAPS = [n for n, p in PARAMETERISATIONS.items() if p.domain == sp.S.Reals]

CONFIGS = {
    "vanilla-discrete": dict(recurrence="vanilla", time="discrete"),
    "vanilla-continuous": dict(recurrence="vanilla", time="continuous"),
    "diagonal-discrete": dict(recurrence="diagonal", time="discrete"),
    "diagonal-continuous": dict(recurrence="diagonal", time="continuous"),
    "exp": dict(recurrence="exp"),
    "sigmoid": dict(recurrence="sigmoid"),
}


def _x(B, T, d, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, d, generator=g, dtype=torch.float64).to(dtype)


def _np(t):
    return t.detach().cpu().double().numpy()


def _model(cfg, **kw):
    args = dict(width=5, input_dim=3, output_dim=2, dt=0.2, dtype="float64", seed=1,
                device="cpu")
    args.update(CONFIGS[cfg])
    args.update(kw)
    return NonlinearSSM(**args)


# ---- forward ---------------------------------------------------------------------------
@pytest.mark.parametrize("activation", ["linear", "tanh", "hardtanh"])
@pytest.mark.parametrize("cfg", list(CONFIGS))
def test_forward_shape_and_fast_path_equals_loop(cfg, activation):
    m = _model(cfg, activation=activation)
    with torch.no_grad():
        m.b.copy_(torch.linspace(-0.5, 0.5, 5))
    x = _x(4, 11, 3)
    y = m(x)
    assert y.shape == (4, 11, 2) and y.dtype == torch.float64
    ref = m._forward_loop(x)
    tol = tolerance(torch.float64, n_ops=11 * 5, scale=float(ref.detach().abs().max()))
    assert tol.allclose(_np(y), _np(ref))
    assert m.time == (PARAMETERISATIONS[cfg].time if cfg in PARAMETERISATIONS
                      else CONFIGS[cfg]["time"])


@pytest.mark.parametrize("cfg", ["vanilla-continuous", "exp"])
def test_float32_agrees_with_float64(cfg):
    m32 = _model(cfg, activation="tanh", dtype="float32")
    m64 = _model(cfg, activation="tanh")
    m64.load_state_dict({k: v.double() for k, v in m32.state_dict().items()})  # same weights
    x = _x(2, 9, 3, dtype=torch.float32)
    y32 = m32(x)
    assert y32.dtype == torch.float32 and all(p.dtype == torch.float32
                                              for p in m32.parameters())
    y64 = m64(x.double())
    A, _ = m64.transition()
    A = A.detach()
    rho = float((torch.linalg.eigvals(A) if A.dim() == 2 else A).abs().max())
    tol = tolerance(torch.float32, n_ops=9 * 5, cond=1 / (1 - rho),
                    scale=float(y64.detach().abs().max()))
    assert tol.allclose(_np(y32), _np(y64))


def test_two_dim_input_gets_batch_axis():
    m = _model("exp")
    x = _x(1, 6, 3)
    assert torch.equal(m(x[0]), m(x))


def test_zoh_helpers_agree():
    lam = torch.tensor([-2.0, -0.3, 0.0, 1e-12, 0.7], dtype=torch.float64)
    Ad, gd = zoh_diagonal(lam, 0.4)
    Am, Gm = zoh_matrix(torch.diag(lam), 0.4)
    tol = tolerance(torch.float64, n_ops=20)
    assert tol.allclose(_np(torch.diag(Am)), _np(Ad)) and tol.allclose(_np(torch.diag(Gm)),
                                                                        _np(gd))
    assert gd[2] == 0.4  # the lambda -> 0 limit


# ---- bad input ---------------------------------------------------------------------------
def test_bad_input_raises():
    m = _model("exp")
    with pytest.raises(ShapeError, match="input"):
        m(torch.zeros(2, 5, 4, dtype=torch.float64))
    with pytest.raises(ShapeError):
        m(torch.zeros(5, dtype=torch.float64))
    with pytest.raises(NonFiniteError):
        m(torch.full((1, 3, 3), float("nan"), dtype=torch.float64))
    with pytest.raises(UnknownNameError, match="activation"):
        NonlinearSSM(3, activation="swish")
    with pytest.raises(UnknownNameError, match="recurrence"):
        NonlinearSSM(3, recurrence="nope")
    with pytest.raises(UnknownNameError, match="parameterisation"):
        StableSSM(3, parameterisation="vanilla")
    for dt in (0.0, -1.0, float("nan")):
        with pytest.raises(InvalidParameterError, match="dt"):
            NonlinearSSM(3, dt=dt)
    with pytest.raises(InvalidParameterError, match="continuous-time"):
        NonlinearSSM(3, recurrence="exp", time="discrete")
    with pytest.raises(InvalidParameterError, match="width"):
        NonlinearSSM(0)
    with pytest.raises(InvalidParameterError):
        NonlinearSSM(3, dtype="float16")
    with pytest.raises(InvalidParameterError, match="decay_range"):
        NonlinearSSM(3, time="discrete", decay_range=(0.1, 1.5))
    with pytest.raises(InvalidParameterError, match=">= 0"):
        m.memory_function([-1.0])


# ---- memory function ---------------------------------------------------------------------
def _memory_tol(M, n_grid, state_dim):
    # the sampled kernel is a difference of outputs of size <= dt * sum(M), divided by dt
    return tolerance("float64", n_ops=n_grid * state_dim, scale=float(np.sum(M)))


@pytest.mark.parametrize("cfg", list(CONFIGS))
def test_exact_memory_equals_black_box_estimator(cfg):
    m = _model(cfg, bias=False, dt=0.25)
    t = m.dt * np.arange(16)
    exact = m.memory_function(t, form="sampled")
    assert exact.shape == (16, 2) and np.all(exact >= 0)
    box = m.memory_function(t, exact=False)
    assert _memory_tol(exact, 16, 5).allclose(box, exact)
    # off-grid times are interpolated like the estimator does
    t_off = np.array([0.1, 0.6, 2.3])
    assert _memory_tol(exact, 16, 5).allclose(m.memory_function(t_off, form="sampled"),
                                              m.memory_function(t_off, exact=False))


def test_memory_with_bias_is_the_baseline_subtracted_estimate():
    m = _model("vanilla-continuous", dt=0.25)
    with torch.no_grad():
        m.b.copy_(torch.linspace(-1.0, 1.0, 5))
    t = m.dt * np.arange(10)
    exact = m.memory_function(t, form="sampled")
    box = m.memory_function(t, exact=False, baseline=True)
    assert _memory_tol(exact, 10, 5).allclose(box, exact)


def test_nonlinear_model_uses_black_box_and_refuses_closed_form():
    m = _model("exp", activation="tanh", bias=False, output_dim=1)
    t = m.dt * np.arange(5)
    M = m.memory_function(t)
    assert M.shape == (5,) and np.all(np.isfinite(M)) and M[0] > 0
    with pytest.raises(InvalidParameterError, match="closed-form"):
        m.memory_function(t, exact=True)


@pytest.mark.parametrize("recurrence", ["vanilla", "softplus"])
def test_continuous_memory_is_exact_and_the_limit_of_the_sampled_one(recurrence):
    base = NonlinearSSM(4, 2, 1, recurrence=recurrence, time="continuous", dt=0.1,
                        bias=False, dtype="float64", seed=3, device="cpu")
    t = np.array([0.4, 0.8, 1.6])
    cont = base.memory_function(t)
    W = _np(base.recurrence_matrix())
    W = np.diag(W) if W.ndim == 1 else W
    ref = linear_memory_reference(W, _np(base.U), _np(base.C)[0], t)  # (L,)
    tol = tolerance("float64", n_ops=16, cond=eigenvector_condition(W), scale=float(ref.max()))
    assert cont.shape == ref.shape and tol.allclose(cont, ref)
    dts = [0.1, 0.05, 0.025, 0.0125]
    errs = []
    for dt in dts:
        m = NonlinearSSM(4, 2, 1, recurrence=recurrence, time="continuous", dt=dt, bias=False,
                         dtype="float64", seed=3, device="cpu")
        m.load_state_dict(base.state_dict())
        errs.append(np.abs(m.memory_function(t, form="sampled") - cont).max())
    slope = np.polyfit(np.log(dts), np.log(errs), 1)[0]
    assert abs(slope - 1.0) < ORDER_SLACK, (slope, errs)


def test_unstable_memory_raises_unless_allowed():
    m = _model("diagonal-continuous", bias=False)
    with torch.no_grad():
        m.w[0] = 0.3
    with pytest.raises(UnstableSystemError):
        m.memory_function([0.0, 1.0])
    assert np.all(np.isfinite(m.memory_function([0.0, 1.0], require_stable=False)))


def test_stable_ssm_linear_equals_the_leads_diagonal_ssm():
    s = StableSSM(4, 2, 1, parameterisation="softplus", dt=0.1, bias=False, dtype="float64",
                  seed=5, device="cpu")
    d = DiagonalSSM(4, 2, 1, parameterisation="softplus", dt=0.1, dtype="float64", seed=5,
                    device="cpu")
    d.load_state_dict(s.state_dict())
    x = _x(2, 12, 2)
    with torch.no_grad():
        ys, yd = s(x), d(x)
    assert tolerance("float64", n_ops=12, scale=float(yd.abs().max())).allclose(_np(ys), _np(yd))
    t = np.array([0.0, 0.3, 1.0])
    Ms, Md = s.memory_function(t), d.memory_function(t)
    assert tolerance("float64", n_ops=4, scale=float(Md.max())).allclose(Ms, Md)


# ---- registry, checkpoints, gradients ------------------------------------------------------
@pytest.mark.parametrize("name, kw", [
    ("ssm", dict(recurrence="vanilla", activation="tanh", time="continuous")),
    ("ssm", dict(recurrence="lru", activation="hardtanh")),
    ("stable_ssm", dict(parameterisation="best", activation="tanh", bias=False)),
])
def test_checkpoint_round_trip(tmp_path, name, kw):
    m = build_model(name, width=3, input_dim=2, output_dim=2, dt=0.3, dtype="float64",
                    seed=7, device="cpu", **kw)
    assert MODELS[name] is type(m)
    json.dumps(m.config)  # JSON-serialisable
    with torch.no_grad():  # move away from the initialisation
        for p in m.parameters():
            p.add_(0.01 * torch.arange(p.numel(), dtype=p.dtype).reshape(p.shape).sin())
    path = save_checkpoint(tmp_path / "m.pt", m, extra={"step": 3})
    m2 = load(path, device="cpu")
    assert type(m2) is type(m) and m2.config == m.config
    assert m2.checkpoint_extra == {"step": 3}
    x = _x(2, 7, 2)
    assert torch.equal(m(x), m2(x))


@pytest.mark.parametrize("cfg", ["vanilla-continuous", "diagonal-discrete", "exp"])
def test_gradients_flow_to_every_parameter(cfg):
    m = _model(cfg, activation="tanh")
    with torch.no_grad():
        m.b.fill_(0.1)
    m(_x(3, 8, 3)).pow(2).sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().max() > 0, name
    assert set(m.recurrent_parameters()) == {"W" if cfg.startswith("vanilla") else "w"}


# ---- stability of the parameterised eigenvalues ---------------------------------------------
_CACHE = {}


def _stable_model(name, dtype):
    if (name, dtype) not in _CACHE:
        _CACHE[name, dtype] = StableSSM(6, parameterisation=name, dt=0.5, dtype=dtype,
                                        device="cpu")
    return _CACHE[name, dtype]


@pytest.mark.parametrize("dtype, bound", [("float32", 8.0), ("float64", 25.0)])
@pytest.mark.parametrize("name", STABLE_MAPS)
@given(data=st.data())
def test_stable_maps_keep_every_eigenvalue_stable(name, dtype, bound, data):
    # bound: |w| small enough that rounding cannot push f(w) onto the boundary in this dtype
    w = data.draw(arrays(np.float64, 6, elements=st.floats(-bound, bound)))
    m = _stable_model(name, dtype)
    with torch.no_grad():
        m.w.copy_(torch.as_tensor(w))
    lam = m.eigenvalues()
    A, _ = m.transition()
    if m.time == "continuous":
        assert torch.all(lam < 0)
    assert torch.all(A.abs() < 1) and torch.all(torch.isfinite(A))


# ---- device --------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("cfg", ["vanilla-continuous", "exp", "sigmoid"])
def test_cuda_matches_cpu(cfg):
    gpu = _model(cfg, activation="tanh", device="auto")
    assert gpu.device.type == "cuda"
    cpu = _model(cfg, activation="tanh")
    cpu.load_state_dict(gpu.state_dict())
    x = _x(2, 9, 3)
    with torch.no_grad():
        y_gpu, y_cpu = gpu(x.to(gpu.device)), cpu(x)
    assert y_gpu.device == gpu.device
    tol = tolerance(torch.float64, n_ops=9 * 5, scale=float(y_cpu.abs().max()))
    assert tol.allclose(_np(y_gpu), _np(y_cpu))
