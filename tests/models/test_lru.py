"""LRU: shapes, dtypes, complex recurrence vs real loop, ring initialisation, normalisation,
errors, exact memory vs the black-box estimator, checkpoints, gradients, stability."""

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import stats

from rnnmem.errors import InvalidParameterError, ShapeError, UnstableSystemError
from rnnmem.models.lru import LRU
from rnnmem.models.registry import build_model, load, save_checkpoint
from rnnmem.numerics import tolerance
from rnnmem.theory import PARAMETERISATIONS

#: significance level of the distribution test of the (seeded) ring initialisation
ALPHA = 1e-3


def _x(B, T, d, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, d, generator=g, dtype=torch.float64).to(dtype)


def _np(t):
    return t.detach().cpu().numpy()


def _lru(**kw):
    args = dict(width=6, input_dim=2, output_dim=3, r_min=0.4, r_max=0.95, dtype="float64",
                seed=1, device="cpu")
    args.update(kw)
    return LRU(**args)


def _cond(m):
    return 1.0 / (1.0 - float(m.modulus().detach().max()))


def test_forward_shape_complex_recurrence_and_kernel_agree():
    m = _lru()
    x = _x(3, 12, 2)
    with torch.no_grad():
        y, ref = m(x), m._forward_loop(x)
        rho = m.impulse_response(12)  # (L, p, d)
        conv = sum(torch.einsum("pd,btd->btp", rho[j], torch.nn.functional.pad(
            x, (0, 0, j, 0))[:, :12]) for j in range(12))
    assert y.shape == (3, 12, 3) and y.dtype == torch.float64
    tol = tolerance(torch.float64, n_ops=12 * 6, cond=_cond(m), scale=float(ref.abs().max()))
    assert tol.allclose(_np(y), _np(ref)) and tol.allclose(_np(conv), _np(ref))


def test_float32():
    m32 = _lru(dtype="float32")
    m64 = _lru()
    m64.load_state_dict({k: v.double() for k, v in m32.state_dict().items()})
    x = _x(2, 10, 2, dtype=torch.float32)
    with torch.no_grad():
        y32, y64 = m32(x), m64(x.double())
    assert y32.dtype == torch.float32
    tol = tolerance(torch.float32, n_ops=10 * 6, cond=_cond(m64), scale=float(y64.abs().max()))
    assert tol.allclose(_np(y32).astype(float), _np(y64))


def test_ring_initialisation():
    r_min, r_max, max_phase = 0.5, 0.9, math.pi / 3
    m = LRU(2000, r_min=r_min, r_max=r_max, max_phase=max_phase, dtype="float64", seed=0,
            device="cpu")
    with torch.no_grad():
        r, th, g = _np(m.modulus()), _np(m.theta), _np(m.gamma())
    assert np.all((r >= r_min) & (r <= r_max)) and np.all((th >= 0) & (th <= max_phase))
    # uniform on the ring: |lambda|^2 uniform on [r_min^2, r_max^2]; phase uniform
    assert stats.kstest(r**2, stats.uniform(r_min**2, r_max**2 - r_min**2).cdf).pvalue > ALPHA
    assert stats.kstest(th, stats.uniform(0, max_phase).cdf).pvalue > ALPHA
    # the modulus is the generated "lru" map of nu
    nu = _np(m.nu_log)
    tol = tolerance("float64", n_ops=4)
    assert tol.allclose(r, PARAMETERISATIONS["lru"].numpy(nu))
    assert tol.allclose(g**2 + r**2, np.ones_like(r))


def test_gamma_normalises_the_state_energy():
    # sum_k |gamma lambda^k|^2 = 1 - |lambda|^(2K): unit stationary gain per mode
    m = _lru(r_min=0.0, r_max=0.99)
    K = 400
    with torch.no_grad():
        lam, g = m.eigenvalues(), m.gamma()
        k = torch.arange(K, dtype=torch.float64)
        energy = (g[None] ** 2 * lam.abs()[None] ** (2 * k[:, None])).sum(0)
        expected = 1 - lam.abs() ** (2 * K)
    assert tolerance("float64", n_ops=K, cond=_cond(m)).allclose(_np(energy), _np(expected))


def test_bad_input_raises():
    m = _lru()
    with pytest.raises(ShapeError):
        m(torch.zeros(1, 5, 3, dtype=torch.float64))
    for kw in (dict(r_min=0.9, r_max=0.5), dict(r_max=1.5), dict(r_min=-0.1),
               dict(max_phase=0.0), dict(max_phase=float("inf")), dict(time="continuous"),
               dict(dt=0.0), dict(width=0), dict(dtype="bfloat16")):
        with pytest.raises(InvalidParameterError):
            _lru(**kw)


@pytest.mark.parametrize("dt", [1.0, 0.5])
def test_exact_memory_equals_black_box_estimator(dt):
    m = _lru(dt=dt)
    t = dt * np.arange(20)
    exact = m.memory_function(t)
    assert exact.shape == (20, 3) and np.all(exact > 0)
    box = m.memory_function(t, exact=False)
    tol = tolerance("float64", n_ops=20 * 6, cond=_cond(m), scale=float(exact.sum()))
    assert tol.allclose(box, exact)
    with pytest.raises(InvalidParameterError, match="continuous"):
        m.memory_function(t, form="continuous")


def test_memory_of_an_unstable_lru_raises():
    m = _lru()
    with torch.no_grad():
        m.nu_log.fill_(-800.0)  # exp(-exp(nu)) rounds to 1
    with pytest.raises(UnstableSystemError):
        m.memory_function([0.0, 1.0])


def test_checkpoint_round_trip(tmp_path):
    m = build_model("lru", width=4, input_dim=2, output_dim=1, r_min=0.5, r_max=0.99,
                    max_phase=1.0, dtype="float64", seed=4, device="cpu")
    json.dumps(m.config)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.01 * torch.arange(p.numel(), dtype=p.dtype).reshape(p.shape).sin())
    m2 = load(save_checkpoint(tmp_path / "lru.pt", m), device="cpu")
    assert type(m2) is LRU and m2.config == m.config
    x = _x(2, 9, 2)
    assert torch.equal(m(x), m2(x))


def test_gradients_flow():
    m = _lru()
    m(_x(2, 7, 2)).pow(2).sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().max() > 0, \
            name
    assert set(m.recurrent_parameters()) == {"nu_log", "theta"}


_CACHE = {}


@pytest.mark.parametrize("dtype, bound", [("float32", 8.0), ("float64", 25.0)])
@given(nu=arrays(np.float64, 5, elements=st.floats(-1.0, 1.0)),
       theta=arrays(np.float64, 5, elements=st.floats(-50.0, 50.0)))
def test_eigenvalues_stay_in_the_unit_disc(dtype, bound, nu, theta):
    if dtype not in _CACHE:
        _CACHE[dtype] = LRU(5, dtype=dtype, device="cpu")
    m = _CACHE[dtype]
    with torch.no_grad():
        m.nu_log.copy_(torch.as_tensor(nu * bound))
        m.theta.copy_(torch.as_tensor(theta))
        lam, g = m.eigenvalues(), m.gamma()
    assert torch.all(lam.abs() < 1) and torch.all(torch.isfinite(g)) and torch.all(g > 0)


@pytest.mark.gpu
def test_cuda_matches_cpu():
    gpu, cpu = _lru(device="auto"), _lru()
    assert gpu.device.type == "cuda"
    cpu.load_state_dict(gpu.state_dict())
    x = _x(2, 11, 2)
    with torch.no_grad():
        y_gpu, y_cpu = gpu(x.to(gpu.device)), cpu(x)
    tol = tolerance(torch.float64, n_ops=11 * 6, cond=_cond(cpu), scale=float(y_cpu.abs().max()))
    assert y_gpu.device == gpu.device and tol.allclose(_np(y_gpu), _np(y_cpu))
