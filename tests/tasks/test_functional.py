"""Linear-functional data sets: exactness, convergence order, references, validation."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate

from rnnmem.errors import (InvalidParameterError, NonFiniteError, RnnmemError, ShapeError,
                           UnknownNameError)
from rnnmem.numerics.tolerances import tolerance
from rnnmem.tasks import (FUNCTIONAL_TASKS, LinearFunctionalTask, apply_linear_functional,
                          causal_convolve_direct, causal_convolve_fft, get_task,
                          kernel_weights, make_linear_functional_dataset, sample_inputs)
from rnnmem.theory.targets import TARGETS, get_target


def _conv_tol(w, z):
    """Rounding tolerance of a length-T causal convolution of magnitude ||w||_1 max|z|."""
    T = w.shape[0]
    return tolerance("float64", n_ops=T, scale=float(np.sum(np.abs(w)) * np.max(np.abs(z))))


# ---------------------------------------------------------------- convolutions
@settings(max_examples=20)
@given(T=st.integers(1, 200), N=st.integers(1, 4), seed=st.integers(0, 2**31))
def test_fft_convolution_matches_direct(T, N, seed):
    rng = np.random.default_rng(seed)
    w, z = rng.standard_normal(T), rng.standard_normal((N, T))
    fast, ref = causal_convolve_fft(w, z), causal_convolve_direct(w, z)
    assert fast.shape == ref.shape == (N, T)
    tol = _conv_tol(w, z)
    assert tol.allclose(fast, ref), tol.max_violation(fast, ref)


def test_convolution_is_causal_and_bad_shapes_raise():
    w = np.arange(1.0, 6.0)
    z = np.zeros((1, 5))
    z[0, 2] = 1.0  # an impulse at step 2 appears from step 2 on, as w shifted by 2
    y = causal_convolve_fft(w, z)[0]
    assert _conv_tol(w, z).allclose(y, [0, 0, 1, 2, 3])
    with pytest.raises(ShapeError):
        causal_convolve_fft(w, np.zeros((1, 4)))
    with pytest.raises(NonFiniteError):
        causal_convolve_direct(w, np.full((1, 5), np.nan))


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_fft_method_equals_direct_method(name):
    kw = dict(n_samples=3, length=120, dt=0.25, seed=1)
    a = make_linear_functional_dataset(name, method="fft", **kw)
    b = make_linear_functional_dataset(name, method="direct", **kw)
    assert np.array_equal(a.inputs, b.inputs)
    w = 0.25 * TARGETS[name].numpy(0.25 * np.arange(120))  # rectangle weights
    tol = _conv_tol(w, a.inputs[..., 0])
    assert tol.allclose(a.outputs, b.outputs), tol.max_violation(a.outputs, b.outputs)


# ---------------------------------------------------------------- exactness of "quadrature"
@pytest.mark.parametrize("dt", [1.0, 0.3, 0.05])
@pytest.mark.parametrize("tau", [0.5, 2.0])
def test_quadrature_exact_for_step_input_exponential(dt, tau):
    """Step input x = 1: y((k+1)dt) = tau (1 - exp(-(k+1) dt / tau)) exactly."""
    T = 60
    tgt = get_target("exponential").with_params(tau=tau)
    out = apply_linear_functional(tgt, np.ones((1, T, 1)), dt, method="quadrature")
    exact = tau * -np.expm1(-dt * np.arange(1, T + 1) / tau)
    err = np.max(np.abs(out.outputs[0, :, 0] - exact))
    assert err <= out.error_bound
    # exact up to rounding: T weights R(b) - R(a) with |R| <= tau (2T roundings of size
    # u tau, summed in the worst case) plus the convolution's sqrt(T) u tau: n_ops = 3T
    assert out.error_bound <= tolerance(n_ops=3 * T, worst_case=True, scale=tau).atol


@settings(max_examples=6)
@given(seed=st.integers(0, 2**31), dt=st.floats(0.01, 2.0), tau=st.floats(0.2, 5.0))
def test_quadrature_matches_exact_zoh_recursion(seed, dt, tau):
    """Piecewise-constant input, exponential kernel: the exact solution obeys
    y_k = e^{-dt/tau} y_{k-1} + tau (1 - e^{-dt/tau}) x_k (variation of constants)."""
    T = 80
    x = np.random.default_rng(seed).standard_normal((2, T, 1))
    tgt = get_target("exponential").with_params(tau=tau)
    out = apply_linear_functional(tgt, x, dt, method="quadrature")
    a, b = math.exp(-dt / tau), -tau * math.expm1(-dt / tau)
    ref = np.zeros((2, T))
    for k in range(T):
        ref[:, k] = (a * ref[:, k - 1] if k else 0.0) + b * x[:, k, 0]
    tol = tolerance(n_ops=T, cond=1.0 / (1.0 - a), scale=tau * float(np.max(np.abs(x))))
    assert tol.allclose(out.outputs[..., 0], ref), tol.max_violation(out.outputs[..., 0], ref)


def _order(dts, errs):
    return float(np.polyfit(np.log(dts), np.log(errs), 1)[0])


@pytest.mark.parametrize("name", ["exponential", "polynomial", "two_parts"])
def test_rectangle_rule_converges_at_order_one(name):
    """Step input over the fixed horizon [0, 4]: the rectangle rule's error is
    dt/2 (rho(0) - rho(4)) + O(dt^2), so the regression slope of log error is 1."""
    tgt = get_target(name)
    horizon = 4.0
    dts = np.array([0.1, 0.05, 0.025, 0.0125, 0.00625])
    errs = []
    for dt in dts:
        T = int(round(horizon / dt))
        x = np.ones((1, T, 1))
        rect = apply_linear_functional(tgt, x, dt, method="fft")
        exact = apply_linear_functional(tgt, x, dt, method="quadrature")
        err = abs(rect.outputs[0, -1, 0] - exact.outputs[0, -1, 0])
        assert err <= rect.error_bound  # the attached bound holds
        errs.append(err)
    slope = _order(dts, errs)
    # the next error term is O(dt^2): the fitted slope is 1 to within O(dt_max)
    assert abs(slope - 1.0) < 0.1, slope
    # and the leading constant is the predicted c = (rho(0) - rho(4)) / 2: err/dt - c = O(dt)
    c = (tgt.numpy(np.array([0.0]))[0] - tgt.numpy(np.array([horizon]))[0]) / 2
    dev = np.abs(np.array(errs) / dts - c)
    assert _order(dts, dev) > 0.9


@pytest.mark.parametrize("name", ["exponential", "polynomial", "shift", "two_parts", "sine"])
def test_exact_weights_antiderivative_vs_quad_vec(name):
    dt = 0.37  # not aligned with the shift window ends 9 and 11
    a = kernel_weights(name, 90, dt, via="antiderivative")
    b = kernel_weights(name, 90, dt, via="quad_vec")
    assert a.via == "antiderivative" and b.via == "quad_vec"
    tol = tolerance(scale=dt)
    assert np.all(np.abs(a.weights - b.weights) <= a.error + b.error + tol.atol)


def test_airy_weights_against_scipy_quad():
    dt, T = 0.5, 30
    kw = kernel_weights("airy", T, dt)
    assert kw.via == "quad_vec"
    ref = [integrate.quad(lambda s: TARGETS["airy"].numpy(np.array([s]))[0], j * dt,
                          (j + 1) * dt, epsabs=1e-15, epsrel=1e-13) for j in range(T)]
    vals, errs = np.array(ref).T
    assert np.all(np.abs(kw.weights - vals) <= kw.error + errs + tolerance(scale=dt).atol)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_error_bound_holds_for_rectangle(name):
    ds_f = make_linear_functional_dataset(name, n_samples=4, length=64, dt=0.5, seed=3,
                                          method="fft")
    ds_q = make_linear_functional_dataset(name, n_samples=4, length=64, dt=0.5, seed=3)
    diff = np.max(np.abs(ds_f.outputs - ds_q.outputs))
    assert diff <= ds_f.error_bound + ds_q.error_bound
    assert ds_q.error_bound < ds_f.error_bound


# ---------------------------------------------------------------- inputs, seeds, dims
def test_seeds_reproducible_and_distinct():
    kw = dict(n_samples=5, length=30, dt=0.5)
    a = make_linear_functional_dataset("polynomial", seed=7, **kw)
    b = make_linear_functional_dataset("polynomial", seed=7, **kw)
    c = make_linear_functional_dataset("polynomial", seed=8, **kw)
    assert np.array_equal(a.inputs, b.inputs) and np.array_equal(a.outputs, b.outputs)
    assert not np.array_equal(a.inputs, c.inputs)
    assert a.inputs.shape == (5, 30, 1) and a.outputs.shape == (5, 30, 1)
    assert np.allclose(a.times, 0.5 * np.arange(1, 31))


def test_gaussian_process_is_scaled_cumsum_of_white():
    args = (4, 50, 2, 0.2)
    white = sample_inputs(np.random.default_rng(0), *args, kind="white", std=1.5)
    gp = sample_inputs(np.random.default_rng(0), *args, kind="gaussian_process", std=1.5)
    ref = math.sqrt(0.2) * np.cumsum(white, axis=1)
    assert tolerance(n_ops=50, scale=float(np.max(np.abs(ref)))).allclose(gp, ref)


def test_multidimensional_inputs_average_by_default():
    ds = make_linear_functional_dataset("exponential", n_samples=2, length=40, dt=0.5,
                                        seed=0, input_dim=3)
    per_dim = [apply_linear_functional("exponential", ds.inputs[..., i:i + 1], 0.5).outputs
               for i in range(3)]
    ref = sum(per_dim) / 3
    tol = tolerance(n_ops=40, scale=float(np.max(np.abs(ds.inputs))) * 2)
    assert tol.allclose(ds.outputs, ref)
    task = LinearFunctionalTask("exponential", dt=0.5, input_dim=3)
    s = np.linspace(0, 5, 11)
    assert tolerance().allclose(task.memory(s), np.exp(-s))  # ||c||_1 = 1
    w = LinearFunctionalTask("exponential", input_dim=2, input_weights=[2.0, -1.0])
    assert tolerance().allclose(w.memory(s), 3 * np.exp(-s))
    with pytest.raises(ShapeError):
        LinearFunctionalTask("exponential", input_dim=2, input_weights=[1.0])


def test_sample_batch_protocol():
    task = LinearFunctionalTask("shift", dt=1.0)
    b = task.sample_batch(np.random.default_rng(0), 3, 25)
    assert b["inputs"].shape == (3, 25, 1) and b["outputs"].shape == (3, 25, 1)
    # shift by 10 with window (9, 11) and dt = 1: y_k = x_{k-9} + x_{k-10}
    x = b["inputs"][..., 0]
    ref = np.zeros_like(x)
    ref[:, 9:] += x[:, :-9]
    ref[:, 10:] += x[:, :-10]
    assert tolerance(n_ops=25, scale=float(np.max(np.abs(x)))).allclose(b["outputs"][..., 0],
                                                                          ref)


def test_as_tensors_and_split():
    ds = make_linear_functional_dataset("sine", n_samples=6, length=10, dt=0.1, seed=0)
    x, y = ds.as_tensors(torch.float32)
    assert x.dtype == torch.float32 and y.shape == (6, 10, 1) and x.device.type == "cpu"
    x64, _ = ds.as_tensors("float64")
    assert np.array_equal(x64.numpy(), ds.inputs)
    assert len(ds.torch_dataset()) == 6
    tr, va = ds.split(4, 2)
    assert len(tr) == 4 and np.array_equal(va.inputs, ds.inputs[4:])
    with pytest.raises(InvalidParameterError):
        ds.split(5, 2)
    with pytest.raises(InvalidParameterError):
        ds.as_tensors("int8")


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize("kwargs, exc", [
    (dict(target="nope"), UnknownNameError),
    (dict(dt=0.0), InvalidParameterError),
    (dict(dt=-1.0), InvalidParameterError),
    (dict(dt=float("nan")), NonFiniteError),
    (dict(length=0), InvalidParameterError),
    (dict(n_samples=0), InvalidParameterError),
    (dict(length=2.5), InvalidParameterError),
    (dict(seed=-1), InvalidParameterError),
    (dict(input="pink"), InvalidParameterError),
    (dict(method="simpson"), InvalidParameterError),
    (dict(input_std=float("inf")), NonFiniteError),
])
def test_bad_arguments_raise(kwargs, exc):
    args = dict(target="exponential", n_samples=2, length=5, dt=0.5, seed=0)
    args.update(kwargs)
    target = args.pop("target")
    with pytest.raises(exc):
        make_linear_functional_dataset(target, **args)


def test_bad_inputs_and_params_raise():
    with pytest.raises(ShapeError):
        apply_linear_functional("exponential", np.zeros((3, 4)), 0.1)
    with pytest.raises(NonFiniteError):
        apply_linear_functional("exponential", np.full((1, 3, 1), np.inf), 0.1)
    with pytest.raises(NonFiniteError):
        get_task("polynomial", p=float("nan")).build(n_samples=1, length=3)
    with pytest.raises(RnnmemError):
        get_task("exponential", tau=-1.0).build(n_samples=1, length=3)
    with pytest.raises(InvalidParameterError):
        kernel_weights("airy", 5, 0.1, via="antiderivative")


# ---------------------------------------------------------------- registry
def test_task_registry():
    expected = {"exponential", "polynomial", "shift", "two_parts", "airy", "sine",
                "teacher_linear", "teacher_tanh"}
    assert expected <= set(FUNCTIONAL_TASKS)
    spec = get_task("polynomial", p=2.0, length=12)
    assert spec.options["length"] == 12 and spec.options["dt"] == 1.0  # original dt
    assert FUNCTIONAL_TASKS["exponential"].options["length"] == 100  # original seq_length
    ds = spec.build(n_samples=3, seed=4)
    assert ds.outputs.shape == (3, 12, 1) and ds.info["params"]["p"] == 2.0
    same = make_linear_functional_dataset(get_target("polynomial").with_params(p=2.0),
                                          n_samples=3, length=12, dt=1.0, seed=4)
    assert np.array_equal(ds.outputs, same.outputs)
    teacher = get_task("teacher_linear", hidden=4).build(n_samples=2, length=7)
    assert teacher.outputs.shape == (2, 7, 1)
    with pytest.raises(UnknownNameError, match="two_parts"):
        get_task("twoparts")
    with pytest.raises(InvalidParameterError, match="no option"):
        get_task("exponential", p=2.0)
