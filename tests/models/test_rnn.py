"""NonlinearRNN: shapes, dtypes, integrator convergence to solve_ivp, fast path vs loop,
errors, exact memory vs the black-box estimator, checkpoints, gradients, stability."""

import json

import numpy as np
import pytest
import sympy as sp
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from rnnmem.errors import InvalidParameterError, ShapeError, UnknownNameError
from rnnmem.models.registry import build_model, load, save_checkpoint
from rnnmem.models.rnn import NonlinearRNN
from rnnmem.numerics import eigenvector_condition, linear_memory_reference, tolerance
from rnnmem.theory import PARAMETERISATIONS

#: a fitted convergence order may deviate this much from the method's order
ORDER_SLACK = 0.25

CONTINUOUS_MAPS = [n for n, p in PARAMETERISATIONS.items() if p.time == "continuous"]
STABLE_CONTINUOUS_MAPS = [n for n in CONTINUOUS_MAPS
                          if PARAMETERISATIONS[n].domain == sp.S.Reals]


def _x(B, T, d, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, d, generator=g, dtype=torch.float64).to(dtype)


def _np(t):
    return t.detach().cpu().double().numpy()


def _rnn(**kw):
    args = dict(width=4, input_dim=2, output_dim=3, dt=0.5, dtype="float64", seed=1,
                device="cpu")
    args.update(kw)
    return NonlinearRNN(**args)


# ---- forward ---------------------------------------------------------------------------
@pytest.mark.parametrize("activation", ["linear", "tanh", "hardtanh"])
@pytest.mark.parametrize("recurrence", ["vanilla", "diagonal", "softplus"])
@pytest.mark.parametrize("time, integrator, substeps",
                         [("discrete", "euler", 1), ("continuous", "rk4", 2)])
def test_forward_shape_and_fast_path_equals_loop(recurrence, activation, time, integrator,
                                                 substeps):
    m = _rnn(recurrence=recurrence, activation=activation, time=time, integrator=integrator,
             substeps=substeps)
    with torch.no_grad():
        m.b.copy_(torch.linspace(-0.5, 0.5, 4))
    x = _x(3, 10, 2)
    with torch.no_grad():
        y, ref = m(x), m._forward_loop(x)
    assert y.shape == (3, 10, 3) and y.dtype == torch.float64
    tol = tolerance(torch.float64, n_ops=10 * substeps * 4 * 4, scale=float(ref.abs().max()))
    assert tol.allclose(_np(y), _np(ref))


def test_discrete_model_is_one_euler_step_of_the_continuous_one():
    d = _rnn(activation="tanh", time="discrete")
    c = _rnn(activation="tanh", time="continuous", integrator="euler", substeps=1)
    c.load_state_dict(d.state_dict())
    x = _x(2, 6, 2)
    assert torch.equal(d(x), c(x))


def test_float32():
    m32 = _rnn(activation="tanh", recurrence="vanilla", dtype="float32")
    m64 = _rnn(activation="tanh", recurrence="vanilla")
    m64.load_state_dict({k: v.double() for k, v in m32.state_dict().items()})
    x = _x(2, 8, 2, dtype=torch.float32)
    with torch.no_grad():
        y32, y64 = m32(x), m64(x.double())
    assert y32.dtype == torch.float32
    tol = tolerance(torch.float32, n_ops=8 * 4, scale=float(y64.abs().max()))
    assert tol.allclose(_np(y32), _np(y64))


# ---- the integrator converges to solve_ivp at its order ------------------------------------
@pytest.mark.parametrize("recurrence", ["vanilla", "softplus"])
@pytest.mark.parametrize("integrator, substeps", [("euler", [2, 4, 8, 16]),
                                                  ("rk4", [1, 2, 4, 8])])
def test_fixed_step_integrator_converges_at_its_order(recurrence, integrator, substeps):
    base = _rnn(recurrence=recurrence, activation="tanh", time="continuous",
                integrator=integrator)
    with torch.no_grad():
        base.b.copy_(torch.linspace(-0.3, 0.3, 4))
    x = _x(2, 6, 2)
    ref = base.solve_ivp_reference(x, rtol=1e-12, atol=1e-14)
    assert ref.shape == (2, 6, 3)
    errs = []
    for s in substeps:
        m = _rnn(recurrence=recurrence, activation="tanh", time="continuous",
                 integrator=integrator, substeps=s)
        m.load_state_dict(base.state_dict())
        with torch.no_grad():
            errs.append(np.abs(_np(m(x)) - ref).max())
    h = base.dt / np.asarray(substeps)
    slope = np.polyfit(np.log(h), np.log(errs), 1)[0]
    assert abs(slope - base.order) < ORDER_SLACK, (slope, errs)


# ---- bad input ---------------------------------------------------------------------------
def test_bad_input_raises():
    m = _rnn()
    with pytest.raises(ShapeError, match="input"):
        m(torch.zeros(1, 4, 3, dtype=torch.float64))
    with pytest.raises(UnknownNameError, match="activation"):
        NonlinearRNN(3, activation="gelu")
    with pytest.raises(UnknownNameError, match="recurrence"):
        NonlinearRNN(3, recurrence="orthogonal")
    with pytest.raises(UnknownNameError, match="integrator"):
        NonlinearRNN(3, time="continuous", integrator="heun")
    with pytest.raises(InvalidParameterError, match="discrete-time"):
        NonlinearRNN(3, recurrence="lru")
    with pytest.raises(InvalidParameterError, match="continuous"):
        NonlinearRNN(3, time="discrete", integrator="rk4")
    with pytest.raises(InvalidParameterError, match="substeps"):
        NonlinearRNN(3, time="continuous", substeps=0)
    for dt in (0.0, -0.1):
        with pytest.raises(InvalidParameterError, match="dt"):
            NonlinearRNN(3, dt=dt)
    with pytest.raises(InvalidParameterError, match="time"):
        NonlinearRNN(3, time="hybrid")


# ---- memory function ---------------------------------------------------------------------
@pytest.mark.parametrize("recurrence", ["vanilla", "diagonal", "best"])
@pytest.mark.parametrize("time, integrator, substeps",
                         [("discrete", "euler", 1), ("continuous", "rk4", 3)])
def test_exact_memory_equals_black_box_estimator(recurrence, time, integrator, substeps):
    m = _rnn(recurrence=recurrence, time=time, integrator=integrator, substeps=substeps,
             bias=False, dt=0.3)
    t = m.dt * np.arange(14)
    exact = m.memory_function(t, form="sampled")
    assert exact.shape == (14, 3)
    box = m.memory_function(t, exact=False)
    tol = tolerance("float64", n_ops=14 * substeps * 4 * 4, scale=float(exact.sum()))
    assert tol.allclose(box, exact)


def test_continuous_memory_is_the_odes_and_the_limit_of_the_sampled_one():
    base = _rnn(recurrence="vanilla", time="continuous", integrator="rk4", bias=False,
                output_dim=1, dt=0.1)
    t = np.array([0.4, 0.8, 1.6])
    cont = base.memory_function(t)
    W = _np(base.W)
    ref = linear_memory_reference(W, _np(base.U), _np(base.C)[0], t)
    tol = tolerance("float64", n_ops=16, cond=eigenvector_condition(W), scale=float(ref.max()))
    assert cont.shape == (3,) and tol.allclose(cont, ref)
    dts, errs = [0.1, 0.05, 0.025, 0.0125], []
    for dt in dts:
        m = _rnn(recurrence="vanilla", time="continuous", integrator="rk4", bias=False,
                 output_dim=1, dt=dt)
        m.load_state_dict(base.state_dict())
        errs.append(np.abs(m.memory_function(t, form="sampled") - cont).max())
    slope = np.polyfit(np.log(dts), np.log(errs), 1)[0]
    assert abs(slope - 1.0) < ORDER_SLACK, (slope, errs)


def test_nonlinear_memory_is_black_box():
    m = _rnn(activation="tanh", bias=False, output_dim=1)
    M = m.memory_function(m.dt * np.arange(6))
    assert M.shape == (6,) and np.all(np.isfinite(M)) and M[0] > 0
    with pytest.raises(InvalidParameterError):
        m.memory_function([0.0], exact=True)
    with pytest.raises(InvalidParameterError, match="continuous"):
        _rnn().memory_function([0.0], form="continuous")


# ---- registry, checkpoints, gradients ------------------------------------------------------
@pytest.mark.parametrize("kw", [
    dict(recurrence="vanilla", activation="tanh"),
    dict(recurrence="exp", activation="hardtanh", time="continuous", integrator="rk4",
         substeps=2, bias=False),
])
def test_checkpoint_round_trip(tmp_path, kw):
    m = build_model("rnn", width=3, input_dim=2, output_dim=1, dt=0.2, dtype="float64",
                    seed=3, device="cpu", **kw)
    json.dumps(m.config)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.01 * torch.arange(p.numel(), dtype=p.dtype).reshape(p.shape).cos())
    m2 = load(save_checkpoint(tmp_path / "rnn.pt", m), device="cpu")
    assert type(m2) is NonlinearRNN and m2.config == m.config
    x = _x(2, 5, 2)
    assert torch.equal(m(x), m2(x))


@pytest.mark.parametrize("recurrence", ["vanilla", "diagonal", "exp"])
def test_gradients_flow(recurrence):
    m = _rnn(recurrence=recurrence, activation="tanh", time="continuous", integrator="rk4")
    m(_x(2, 5, 2)).pow(2).sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().max() > 0, \
            name
    assert set(m.recurrent_parameters()) == {"W" if recurrence == "vanilla" else "w"}


@pytest.mark.parametrize("dtype, bound", [("float32", 8.0), ("float64", 25.0)])
@pytest.mark.parametrize("name", STABLE_CONTINUOUS_MAPS)
@given(w=arrays(np.float64, 5, elements=st.floats(-8.0, 8.0)))
def test_stable_maps_keep_w_negative(name, dtype, bound, w):
    if (name, dtype) not in _CACHE:
        _CACHE[name, dtype] = NonlinearRNN(5, recurrence=name, dtype=dtype, device="cpu")
    m = _CACHE[name, dtype]
    with torch.no_grad():
        m.w.copy_(torch.as_tensor(w * bound / 8.0))
    assert torch.all(m.eigenvalues() < 0)


_CACHE = {}


@pytest.mark.gpu
@pytest.mark.parametrize("recurrence", ["vanilla", "softplus"])
def test_cuda_matches_cpu(recurrence):
    kw = dict(recurrence=recurrence, activation="tanh", time="continuous", integrator="rk4")
    gpu, cpu = _rnn(device="auto", **kw), _rnn(**kw)
    assert gpu.device.type == "cuda"
    cpu.load_state_dict(gpu.state_dict())
    x = _x(2, 7, 2)
    with torch.no_grad():
        y_gpu, y_cpu = gpu(x.to(gpu.device)), cpu(x)
    tol = tolerance(torch.float64, n_ops=7 * 4 * 4, scale=float(y_cpu.abs().max()))
    assert y_gpu.device == gpu.device and tol.allclose(_np(y_gpu), _np(y_cpu))


def test_compile_falls_back_with_one_warning_and_equals_eager(no_compiler):
    import warnings

    kw = dict(activation="tanh", recurrence="softplus", time="continuous", integrator="rk4",
              substeps=2, dt=0.1, seed=1)
    m, eager = _rnn(compile=True, **kw), _rnn(**kw)
    x = _x(3, 7, 2)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        y, y2 = m(x), m(x)
    msgs = [str(i.message) for i in w if "torch.compile failed" in str(i.message)]
    assert len(msgs) == 1 and "NonlinearRNN" in msgs[0] and "no compiler here" in msgs[0]
    assert m.compile_failed and torch.equal(y, eager(x)) and torch.equal(y2, y)
    assert m.config["compile"] is True and not eager.compile_failed


def test_compiled_model_checkpoint_round_trip(tmp_path):
    m = _rnn(activation="tanh", compile=True, seed=2)
    path = save_checkpoint(tmp_path / "m.pt", m)
    m2 = load(path)
    assert m2.config["compile"] is True and m2._compiled is not None
    import copy
    import pickle

    pickle.dumps(m)  # the compiled graph is never pickled
    assert copy.deepcopy(m)._compiled.fn.__self__ is not m


@pytest.mark.slow
def test_compile_matches_eager():
    import warnings

    kw = dict(activation="tanh", recurrence="vanilla", seed=3)
    m, eager = _rnn(compile=True, **kw), _rnn(**kw)
    x = _x(2, 5, 2)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        y = m(x)
    if m.compile_failed:
        pytest.skip(f"torch.compile unavailable: {[str(i.message) for i in w]}")
    torch.testing.assert_close(y, eager(x), rtol=1e-12, atol=1e-12)
