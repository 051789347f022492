"""S4D: shapes, dtypes, FFT convolution vs the naive recurrence, initialisations, errors,
exact memory vs the black-box estimator and its continuous limit, checkpoints, gradients,
stability of the parameterised real parts."""

import json
import math

import numpy as np
import pytest
import sympy as sp
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from rnnmem.errors import InvalidParameterError, ShapeError, UnknownNameError
from rnnmem.models.registry import build_model, load, save_checkpoint
from rnnmem.models.s4d import S4D, s4d_initial_eigenvalues
from rnnmem.numerics import tolerance
from rnnmem.theory import PARAMETERISATIONS

#: a fitted convergence order may deviate this much from the method's order
ORDER_SLACK = 0.25

STABLE_CONTINUOUS_MAPS = [n for n, p in PARAMETERISATIONS.items()
                          if p.time == "continuous" and p.domain == sp.S.Reals]


def _x(B, T, d, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, d, generator=g, dtype=torch.float64).to(dtype)


def _np(t):
    return t.detach().cpu().numpy()


def _s4d(**kw):
    args = dict(width=6, input_dim=2, output_dim=3, dt_min=0.01, dt_max=0.5,
                dtype="float64", seed=1, device="cpu")
    args.update(kw)
    return S4D(**args)


def _fft_tol(m, x, dtype="float64"):
    # FFT convolution: roundoff ~ u log2(n) relative to sum_j |K_j| max|x| (+ |D| max|x|)
    T = x.shape[1]
    with torch.no_grad():
        scale = float(m.impulse_response(T).abs().sum(0).max() * x.abs().max())
    return tolerance(dtype, n_ops=T * m.width, scale=scale)


@pytest.mark.parametrize("init", ["s4d-lin", "s4d-inv", "real"])
@pytest.mark.parametrize("parameterisation", ["exp", "softplus", "direct"])
def test_fft_convolution_equals_naive_recurrence(init, parameterisation):
    m = _s4d(init=init, parameterisation=parameterisation)
    x = _x(2, 300, 2)
    with torch.no_grad():
        y, ref = m(x), m._naive(x)
    assert y.shape == (2, 300, 3) and y.dtype == torch.float64
    assert _fft_tol(m, x).allclose(_np(y), _np(ref))


def test_float32():
    m32 = _s4d(dtype="float32")
    m64 = _s4d()
    m64.load_state_dict({k: v.double() for k, v in m32.state_dict().items()})
    x = _x(2, 64, 2, dtype=torch.float32)
    with torch.no_grad():
        y32, y64 = m32(x), m64(x.double())
    assert y32.dtype == torch.float32
    assert _fft_tol(m64, x.double(), "float32").allclose(_np(y32).astype(float), _np(y64))


@pytest.mark.parametrize("init", ["s4d-lin", "s4d-inv", "real"])
@pytest.mark.parametrize("parameterisation", ["exp", "best"])
def test_initialisation(init, parameterisation):
    if init == "real" and parameterisation == "best":
        with pytest.raises(InvalidParameterError, match="best"):
            _s4d(init=init, parameterisation=parameterisation)
        return
    m = _s4d(init=init, parameterisation=parameterisation, dt_min=1e-3, dt_max=1e-1)
    A0 = s4d_initial_eigenvalues(6, init)
    n = np.arange(6)
    expected_imag = {"s4d-lin": math.pi * n, "s4d-inv": 6 / math.pi * (6 / (2 * n + 1) - 1),
                     "real": 0 * n}[init]
    tol = tolerance("float64", n_ops=8, scale=float(np.abs(A0).max()))
    assert tol.allclose(A0.imag, expected_imag)
    with torch.no_grad():
        A, steps = m.kernel.A(), m.kernel.steps()
    assert tol.allclose(_np(A.real), A0.real) and tol.allclose(_np(A.imag), A0.imag)
    assert torch.all((steps >= 1e-3 * (1 - tol.rtol)) & (steps <= 1e-1 * (1 + tol.rtol)))


def test_bad_input_raises():
    m = _s4d()
    with pytest.raises(ShapeError):
        m(torch.zeros(1, 5, 1, dtype=torch.float64))
    with pytest.raises(UnknownNameError, match="parameterisation"):
        S4D(3, parameterisation="bogus")
    with pytest.raises(InvalidParameterError, match="continuous-time"):
        S4D(3, parameterisation="lru")
    with pytest.raises(UnknownNameError, match="init"):
        S4D(3, init="hippo")
    for kw in (dict(dt_min=0.2, dt_max=0.1), dict(dt_min=0.0), dict(dt_max=float("nan")),
               dict(time="discrete"), dict(dt=-1.0)):
        with pytest.raises(InvalidParameterError):
            S4D(3, **kw)
    with pytest.raises(InvalidParameterError, match="width"):
        S4D(0)


@pytest.mark.parametrize("dt", [1.0, 0.2])
def test_exact_memory_equals_black_box_estimator(dt):
    m = _s4d(dt=dt)
    t = dt * np.arange(25)
    exact = m.memory_function(t, form="sampled")
    assert exact.shape == (25, 3) and np.all(exact >= 0)
    box = m.memory_function(t, exact=False)
    tol = tolerance("float64", n_ops=25 * 6, scale=float(exact.sum()))
    assert tol.allclose(box, exact)


def test_continuous_memory_is_the_limit_of_the_sampled_one():
    # steps Delta <= dt / 10, so that |mu| dt = |A| Delta is small on the finest grids
    base = _s4d(output_dim=1, dt=0.1, dt_min=1e-3, dt_max=1e-2)
    t = np.array([0.4, 0.8, 1.6])
    cont = base.memory_function(t)
    assert cont.shape == (3,) and np.all(cont > 0)
    dts, errs = [0.1, 0.05, 0.025, 0.0125], []
    for dt in dts:
        m = _s4d(output_dim=1, dt=dt)
        state = base.state_dict()
        # keep mu = A Delta / dt fixed: Delta scales with dt
        state["kernel.log_dt"] = state["kernel.log_dt"] + math.log(dt / base.dt)
        m.load_state_dict(state)
        # same continuous system; exp(mu t) is conditioned like |mu| t
        cond = float(base.eigenvalues().detach().abs().max()) * t.max()
        tol = tolerance("float64", n_ops=8, cond=cond, scale=float(cont.max()))
        assert tol.allclose(m.memory_function(t), cont)
        errs.append(np.abs(m.memory_function(t, form="sampled") - cont).max())
    slope = np.polyfit(np.log(dts), np.log(errs), 1)[0]
    assert abs(slope - 1.0) < ORDER_SLACK, (slope, errs)


def test_checkpoint_round_trip(tmp_path):
    m = build_model("s4d", width=4, input_dim=2, output_dim=2, parameterisation="softplus",
                    init="s4d-inv", dt_min=0.01, dt_max=0.2, dt=0.5, dtype="float64", seed=2,
                    device="cpu")
    json.dumps(m.config)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.01 * torch.arange(p.numel(), dtype=p.dtype).reshape(p.shape).sin())
    m2 = load(save_checkpoint(tmp_path / "s4d.pt", m), device="cpu")
    assert type(m2) is S4D and m2.config == m.config
    x = _x(2, 33, 2)
    assert torch.equal(m(x), m2(x))


def test_gradients_flow():
    m = _s4d()
    m(_x(2, 40, 2)).pow(2).sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().max() > 0, \
            name
    assert set(m.recurrent_parameters()) == {"kernel.w", "kernel.A_imag", "kernel.log_dt"}


_CACHE = {}


@pytest.mark.parametrize("dtype, bound", [("float32", 8.0), ("float64", 25.0)])
@pytest.mark.parametrize("name", STABLE_CONTINUOUS_MAPS)
@given(w=arrays(np.float64, 4, elements=st.floats(-1.0, 1.0)),
       log_dt=arrays(np.float64, 4, elements=st.floats(math.log(1e-3), math.log(1e-1))))
def test_stable_maps_keep_eigenvalues_stable(name, dtype, bound, w, log_dt):
    if (name, dtype) not in _CACHE:
        _CACHE[name, dtype] = S4D(4, parameterisation=name, dtype=dtype, device="cpu")
    m = _CACHE[name, dtype]
    with torch.no_grad():
        m.kernel.w.copy_(torch.as_tensor(w * bound))
        m.kernel.log_dt.copy_(torch.as_tensor(log_dt))
        mu, Abar = m.eigenvalues(), m.discrete_eigenvalues()
    assert torch.all(mu.real < 0) and torch.all(Abar.abs() < 1)


@pytest.mark.gpu
def test_cuda_matches_cpu():
    gpu, cpu = _s4d(device="auto"), _s4d()
    assert gpu.device.type == "cuda"
    cpu.load_state_dict(gpu.state_dict())
    x = _x(2, 100, 2)
    with torch.no_grad():
        y_gpu, y_cpu = gpu(x.to(gpu.device)), cpu(x)
    assert y_gpu.device == gpu.device and _fft_tol(cpu, x).allclose(_np(y_gpu), _np(y_cpu))
