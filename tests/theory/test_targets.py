"""Target memory families: derived decay classes and L1 norms, generated callables."""

import numpy as np
import pytest
import sympy as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, special

from rnnmem.errors import (DerivationError, InvalidParameterError, NonFiniteError,
                           UnknownNameError)
from rnnmem.numerics.tolerances import tolerance
from rnnmem.theory import t
from rnnmem.theory.targets import (DECAY_CLASSES, TARGETS, TargetMemory, derive_decay,
                                   get_target)

NAMES = ["exponential", "polynomial", "shift", "two_parts", "airy", "sine"]

# the mathematical facts each derivation must reach (Ai(x) ~ exp(-2/3 x^{3/2}), DLMF 9.7.5)
EXPECTED_CLASS = {"exponential": "exponential", "polynomial": "polynomial",
                  "shift": "compact", "two_parts": "exponential",
                  "airy": "super-exponential", "sine": "none"}

# independent numpy formulas for the kernels, written from the definitions
REFERENCE = {
    "exponential": lambda s: np.exp(-s),
    "polynomial": lambda s: (1.0 + s) ** -1.1,
    "shift": lambda s: ((s > 9) & (s < 11)).astype(float),
    "two_parts": lambda s: np.exp(-s) + np.exp(-((s - 9.0) ** 2)),
    "airy": lambda s: special.airy(s - 6.0)[0],
    "sine": np.sin,
}


def test_registry_names_and_unknown_name():
    assert sorted(TARGETS) == sorted(NAMES)
    assert get_target("airy") is TARGETS["airy"]
    assert get_target(TARGETS["sine"]) is TARGETS["sine"]
    with pytest.raises(UnknownNameError, match="exponential"):
        get_target("expo")
    with pytest.raises(UnknownNameError):
        get_target(3)


@pytest.mark.parametrize("name", NAMES)
def test_decay_class_derived(name):
    d = TARGETS[name].decay
    assert d.decay_class in DECAY_CLASSES
    assert d.decay_class == EXPECTED_CLASS[name]
    text = d.text()
    assert "verdict" in text and d.decay_class.upper() in text and len(d.steps) >= 2


def test_decay_rates():
    assert TARGETS["exponential"].decay.rate == 1
    assert TARGETS["polynomial"].decay.rate == sp.Rational(11, 10)
    assert TARGETS["shift"].decay.rate == 11  # end of the support t0 + w/2
    assert TARGETS["two_parts"].decay.rate == 1
    assert TARGETS["airy"].decay.rate == sp.Rational(3, 2)  # log Ai(x) ~ -2/3 x^{3/2}
    e = get_target("exponential").with_params(tau=4)
    assert e.decay.rate == sp.Rational(1, 4)
    p = get_target("polynomial").with_params(p=2.5, scale=0.1)
    assert p.decay_class == "polynomial" and p.decay.rate == sp.Rational(5, 2)
    s = get_target("shift").with_params(t0=3, width=1)
    assert s.decay_class == "compact" and s.decay.rate == sp.Rational(7, 2)


def test_decay_outside_the_classes_raises():
    with pytest.raises(DerivationError, match="outside"):
        derive_decay("stretched", sp.exp(-sp.sqrt(t)))
    grow = derive_decay("growing", sp.exp(t))
    assert grow.decay_class == "none"


def test_l1_norms_symbolic():
    assert TARGETS["exponential"].l1_norm == 1
    assert get_target("exponential").with_params(tau=2.5).l1_norm == sp.Rational(5, 2)
    # int_0^oo (1 + s t)^{-p} dt = 1 / (s (p - 1)) for p > 1
    assert sp.simplify(TARGETS["polynomial"].l1_norm - 10) == 0
    q = get_target("polynomial").with_params(p=2, scale=0.1)
    assert sp.simplify(q.l1_norm - 10) == 0
    assert get_target("polynomial").with_params(p=0.5).l1_norm == sp.oo
    assert TARGETS["shift"].l1_norm == 2
    assert TARGETS["sine"].l1_norm == sp.oo
    for name in ("exponential", "polynomial", "shift", "two_parts", "sine"):
        assert TARGETS[name].l1.method == "symbolic"
        assert "verdict" in TARGETS[name].l1.text()


def test_l1_norm_two_parts_against_scipy():
    val, err = integrate.quad(REFERENCE["two_parts"], 0, np.inf, points=None, limit=200)
    got = float(TARGETS["two_parts"].l1_norm)
    assert abs(got - val) <= err + tolerance(scale=val).atol


def test_l1_norm_airy_against_scipy_between_zeros():
    # zeros of Ai (scipy.special.ai_zeros) shifted by 6 split [0, oo) into one-sign pieces
    zeros = special.ai_zeros(4)[0] + 6.0
    cuts = [0.0] + sorted(z for z in zeros if z > 0) + [np.inf]
    total, err = 0.0, 0.0
    for a, b in zip(cuts[:-1], cuts[1:]):
        v, e = integrate.quad(REFERENCE["airy"], a, b, epsabs=1e-14, epsrel=1e-13)
        total, err = total + abs(v), err + e
    d = TARGETS["airy"].l1
    assert d.method == "mpmath" and d.error < 1e-15
    assert abs(float(d.value) - total) <= err + d.error + tolerance(n_ops=len(cuts),
                                                                     scale=total).atol


@pytest.mark.parametrize("name", NAMES)
def test_numpy_torch_and_reference_agree(name):
    T = TARGETS[name]
    s = np.linspace(0.0, 25.0, 501)
    s = s[(np.abs(s - 9) > 1e-9) & (np.abs(s - 11) > 1e-9)]  # off the shift window ends
    ref = REFERENCE[name](s)
    got = T.numpy(s)
    assert got.shape == s.shape and got.dtype == np.float64
    tol = tolerance(cond=30.0, scale=1.0)  # cond: |d rho/dt| * t <= 30 on [0, 25]
    assert tol.allclose(got, ref), tol.max_violation(got, ref)
    tt = T.torch(torch.as_tensor(s, dtype=torch.float64))
    assert tt.dtype == torch.float64 and tt.shape == (s.size,)
    assert tol.allclose(tt.numpy(), got)
    t32 = T.torch(torch.as_tensor(s, dtype=torch.float32))
    assert t32.dtype == torch.float32
    assert tolerance("float32", cond=30.0).allclose(t32.double().numpy(), got)
    assert np.array_equal(T.memory(s), np.abs(got))


def test_torch_kernel_is_differentiable_where_generated():
    x = torch.tensor([0.5, 2.0], dtype=torch.float64, requires_grad=True)
    TARGETS["polynomial"].torch(x).sum().backward()
    expected = -1.1 * (1 + x.detach()) ** -2.1
    assert tolerance().allclose(x.grad.numpy(), expected.numpy())


@pytest.mark.parametrize("name", ["exponential", "polynomial", "two_parts", "sine"])
def test_antiderivative_symbolic(name):
    T = TARGETS[name]
    assert T.antiderivative is not None
    assert sp.simplify(sp.diff(T.antiderivative, t) - T.concrete) == 0


def test_antiderivative_shift_and_breakpoints():
    T = TARGETS["shift"]
    assert T.breakpoints == (9.0, 11.0)
    R = T.antiderivative_numpy
    a, b = np.array([0.0, 8.0, 9.5, 10.0, 12.0]), np.array([1.0, 10.0, 10.5, 20.0, 13.0])
    # length of (a, b) ∩ (9, 11)
    expected = np.clip(np.minimum(b, 11) - np.maximum(a, 9), 0, None)
    assert tolerance(scale=2.0).allclose(R(b) - R(a), expected)
    assert TARGETS["airy"].antiderivative is None


def test_with_params_validation():
    P = get_target("polynomial")
    assert P.with_params(p=2).param_values["p"] == 2.0
    assert P.param_values["p"] == 1.1  # the original is unchanged
    with pytest.raises(NonFiniteError):
        P.with_params(p=float("nan"))
    with pytest.raises(NonFiniteError):
        P.with_params(scale=float("inf"))
    with pytest.raises(InvalidParameterError, match="positive"):
        P.with_params(p=-1.0)
    with pytest.raises(InvalidParameterError, match="positive"):
        get_target("exponential").with_params(tau=0)
    with pytest.raises(InvalidParameterError, match="no parameter"):
        P.with_params(tau=1.0)
    with pytest.raises(InvalidParameterError):
        P.with_params(p=True)
    with pytest.raises(InvalidParameterError, match="none"):
        get_target("sine").with_params(a=1.0)


def test_memory_rejects_bad_times():
    with pytest.raises(InvalidParameterError):
        TARGETS["exponential"].memory([-1.0, 1.0])
    with pytest.raises(NonFiniteError):
        TARGETS["exponential"].memory([np.nan])


def test_user_defined_target():
    T = TargetMemory("gauss", sp.exp(-t**2))
    assert T.decay_class == "super-exponential"
    assert sp.simplify(T.l1_norm - sp.sqrt(sp.pi) / 2) == 0


@settings(max_examples=8)
@given(tau=st.floats(0.05, 20.0), p=st.floats(0.2, 4.0), scale=st.floats(0.05, 5.0),
       s=st.lists(st.floats(0.0, 100.0), min_size=1, max_size=8))
def test_parameterised_kernels_match_formula(tau, p, scale, s):
    s = np.asarray(s)
    e = get_target("exponential").with_params(tau=tau)
    q = get_target("polynomial").with_params(p=p, scale=scale)
    # with_params stores the doubles exactly (as short rationals or 53-bit Floats)
    assert e.param_values["tau"] == tau and q.param_values["p"] == p
    tol_e = tolerance(cond=1.0 + float(np.max(s)) / tau)
    assert tol_e.allclose(e.numpy(s), np.exp(-s / tau))
    tol_q = tolerance(cond=1.0 + p * float(np.log1p(scale * np.max(s))))
    assert tol_q.allclose(q.numpy(s), (1.0 + scale * s) ** -p)


def test_import_pulls_in_sympy_only():
    import subprocess
    import sys

    code = ("import sys, rnnmem.theory.targets; "
            "print(sorted(m for m in ('numpy', 'scipy', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
