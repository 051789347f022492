"""rnnmem.testing: assertion helpers (their messages), torch strategies, the plugin."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from rnnmem.errors import InvalidParameterError
from rnnmem.numerics import PerturbationCurve, linear_memory_discrete, tolerance
from rnnmem.testing import (assert_decays, assert_memory_close, assert_stable_approximation,
                            strategies as rst)

ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------- tolerance()
@pytest.mark.parametrize("kw", [dict(cond=np.inf), dict(cond=np.nan), dict(cond=-1.0),
                                dict(n_ops=-3), dict(n_ops=np.inf), dict(scale=-1.0),
                                dict(solver_rtol=np.nan)])
def test_tolerance_refuses_non_finite_or_negative_inputs(kw):
    name = next(iter(kw))
    with pytest.raises(InvalidParameterError, match=name):
        tolerance("float64", **kw)


def test_tolerance_of_a_jordan_draw_is_refused_not_vacuous():
    W = np.array([[-1.0, 1.0], [0.0, -1.0]])  # defective: kappa(V) = inf
    with pytest.raises(InvalidParameterError, match="infinite condition"):
        tolerance("float64", cond=rst.conditioning(W))


# ---------------------------------------------------------------------- assertions
def test_assert_memory_close_message_says_where_by_how_much_and_which_tolerance():
    t = np.arange(10.0)
    m = np.exp(-0.3 * t)
    assert_memory_close(m, m.copy(), t)
    bad = m.copy()
    bad[4] *= 1.001
    with pytest.raises(AssertionError) as info:
        assert_memory_close(bad, m, t, dtype="float32")
    msg = str(info.value)
    assert "at 1 of 10 times" in msg and "t = 4:" in msg
    assert "tolerance('float32', n_ops=10" in msg and "given values" in msg
    with pytest.raises(AssertionError, match="shape"):
        assert_memory_close(m[:3], m, t)


def test_assert_memory_close_on_a_model():
    lin = torch.nn.RNN(1, 1, nonlinearity="relu", bias=False, batch_first=True)
    with torch.no_grad():  # h_k = relu(0.5 h + x): for x >= 0 linear, M(k) = 0.5^k
        lin.weight_hh_l0.fill_(0.5)
        lin.weight_ih_l0.fill_(1.0)
    t = np.arange(8.0)
    # relu: the negative direction is cut to 0, the positive one gives 0.5^k exactly
    assert_memory_close(lin, 0.5 ** t, t, n_ops=16)
    with pytest.raises(AssertionError, match=r"rnnmem.memory_function\(RNN"):
        assert_memory_close(lin, 0.6 ** t, t)


def test_assert_decays_kinds_parameter_bounds_and_messages():
    t = np.arange(1.0, 200.0)
    assert assert_decays(np.exp(-0.1 * t), "exponential", t).kind == "exponential"
    assert_decays((1 + t) ** -1.5, "polynomial", t, parameter=(1.4, 1.6))
    with pytest.raises(AssertionError, match="decays as 'polynomial', expected 'exponential'"):
        assert_decays((1 + t) ** -1.5, "exponential", t)
    with pytest.raises(AssertionError, match=r"fitted rate 0.1 is outside \[0.2, 0.3\]"):
        assert_decays(np.exp(-0.1 * t), "exponential", t, parameter=(0.2, 0.3))
    with pytest.raises(InvalidParameterError, match="kind"):
        assert_decays(np.exp(-t), "fast", t)


def _curve(beta0, e0=1e-3):
    betas = np.geomspace(1e-3, 1.0, 13)
    env = e0 * (1 + (betas / beta0) ** 2)  # crosses 10 e0 at 3 beta0
    return PerturbationCurve.from_samples(betas, env[:, None], e0, {})


def test_assert_stable_approximation_passes_and_explains_a_failure():
    stable = {m: _curve(0.05) for m in (4, 8, 16, 32)}  # beta0 does not shrink with m
    v = assert_stable_approximation(stable)
    assert v.verdict == "stable"
    shrinking = {m: _curve(0.4 / m) for m in (4, 8, 16, 32)}  # beta0 ~ 1/m
    with pytest.raises(AssertionError) as info:
        assert_stable_approximation(shrinking)
    msg = str(info.value)
    assert "expected 'stable'" in msg and "crossing points" in msg and "m=32" in msg


# ---------------------------------------------------------------------- strategies
@settings(max_examples=8, deadline=None)
@given(rst.torch_rnns(max_hidden=3, margin=0.2))
def test_torch_rnns_are_contractions_and_their_memory_decays(model):
    W = model.rnn.weight_hh_l0.detach().numpy()
    assert np.linalg.norm(W, 2) <= 0.8 * (1 + tolerance("float64", n_ops=9).rtol)
    import rnnmem

    t = np.arange(12.0)
    est = rnnmem.memory_function(model, t, dt=1.0, amplitudes=[0.1, 1.0], check=False)
    # a contraction of rate 0.8 through tanh (1-Lipschitz): M(k) <= |head| |W_ih| 0.8^k
    bound = (np.abs(model.head.weight.detach().numpy()).sum()
             * np.abs(model.rnn.weight_ih_l0.detach().numpy()).sum(1).max() * 0.8 ** t)
    assert np.all(est.values <= bound * (1 + 1e-9) + 1e-12)


@settings(max_examples=8, deadline=None)
@given(rst.torch_diagonal_ssms(max_n=3, time="discrete", margin=0.2))
def test_torch_diagonal_ssms_have_bounded_spectra(m):
    lam = m.eigenvalues().detach().numpy()
    assert np.all(np.abs(lam) <= 0.8 + 1e-12) and np.all(np.abs(lam) > 0)


@settings(max_examples=5, deadline=None)
@given(rst.lrus(max_n=3, margin=0.25))
def test_lrus_have_bounded_spectra(m):
    lam = m.eigenvalues().detach().numpy()
    assert np.all(np.abs(lam) <= 0.75 + 1e-12)


@settings(max_examples=15, deadline=None)
@given(rst.heaviside_probes(max_input_dim=3, min_amplitude=0.1, max_amplitude=5.0),
       rst.input_sequences(length=7, input_dim=2, batch=3, max_abs=0.5))
def test_heaviside_probes_and_input_sequences(probe, x):
    p, direction, a = probe
    assert np.all(p[0] == 0) and 0.1 <= a <= 5.0
    assert np.max(np.abs(direction)) == 1.0
    assert np.allclose(p[1:], a * direction[None]) and p.shape[0] >= 2
    assert x.shape == (3, 7, 2) and np.all(np.abs(x) <= 0.5)


def test_heaviside_probe_of_a_linear_model_reads_its_kernel():
    """The property a user writes: a Heaviside probe of a diagonal SSM gives the
    running sum of its kernel, so its increments are c^T A^k B x."""
    from rnnmem.models import DiagonalSSM

    m = DiagonalSSM(3, input_dim=2, time="discrete", parameterisation="lru", dt=1.0,
                    dtype="float64", device="cpu", seed=1)
    A = np.diag(m.eigenvalues().detach().numpy())
    B, C = m.U.detach().numpy(), m.C.detach().numpy()[0]

    @settings(max_examples=10, deadline=None)
    @given(rst.heaviside_probes(input_dim=2, length=12))
    def check(probe):
        x, direction, a = probe
        with torch.no_grad():
            y = m(torch.as_tensor(x)[None])[0, :, 0].numpy()
        inc = np.diff(y)
        k = np.arange(inc.size)
        expected = np.array([C @ np.linalg.matrix_power(A, int(j)) @ B @ (a * direction)
                             for j in k])
        tol = tolerance("float64", n_ops=12, cond=12.0, scale=a * np.abs(B).sum())
        assert tol.allclose(inc, expected), tol.max_violation(inc, expected)

    check()
    assert linear_memory_discrete(A, B, C, [0]).shape == (1,)


def test_bad_strategy_arguments_fail_when_built():
    with pytest.raises(InvalidParameterError, match="nonlinearity"):
        rst.torch_rnns(nonlinearity="gelu")
    with pytest.raises(InvalidParameterError, match="max_abs"):
        rst.input_sequences(max_abs=0)
    with pytest.raises(InvalidParameterError, match="amplitude"):
        rst.heaviside_probes(min_amplitude=2.0, max_amplitude=1.0)
    with pytest.raises(InvalidParameterError, match="margin"):
        rst.lrus(margin=1.5)


# ---------------------------------------------------------------------- plugin
def test_plugin_is_declared_as_a_pytest11_entry_point():
    import tomllib

    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert data["project"]["entry-points"]["pytest11"]["rnnmem"] == "rnnmem.testing.plugin"
    assert any(r.startswith("hypothesis") for r in
               data["project"]["optional-dependencies"]["testing"])


def test_plugin_profiles_and_fixture_in_a_user_suite(tmp_path):
    (tmp_path / "test_user.py").write_text(textwrap.dedent("""
        import numpy as np
        from hypothesis import settings

        def test_profile_is_loaded():
            assert settings.default.derandomize is True  # the ci profile

        def test_fixture(rnnmem_tolerance):
            import torch

            tol = rnnmem_tolerance("float64", n_ops=4)
            assert tol.rtol == 8 * 2.0**-53 * 2
            assert rnnmem_tolerance().rtol == 8 * 2.0**-24  # torch's default, float32
            torch.set_default_dtype(torch.float64)
            try:
                assert rnnmem_tolerance().rtol == 8 * 2.0**-53
            finally:
                torch.set_default_dtype(torch.float32)
        """))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HYPOTHESIS_PROFILE": ""}
    # an installed rnnmem registers the plugin through its pytest11 entry point (naming it
    # again with -p is an error); a bare checkout on PYTHONPATH has to name it
    from importlib.metadata import entry_points

    installed = any(ep.value.startswith("rnnmem.testing.plugin")
                    for ep in entry_points(group="pytest11"))
    plugin = [] if installed else ["-p", "rnnmem.testing.plugin"]
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", *plugin,
                          "-p", "no:cacheprovider", "--hypothesis-profile", "ci",
                          str(tmp_path / "test_user.py")], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "2 passed" in res.stdout
