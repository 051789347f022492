"""The model contract (rnnmem.models.base), checked on every registered model.

Parametrised from the registry, so a newly registered model is checked without editing this
file (a model with a required option other than ``width`` needs a value in ``_REQUIRED``).
"""

import inspect
import warnings

import numpy as np
import pytest
import torch

from rnnmem.errors import InvalidParameterError, NotApplicableError
from rnnmem.models import MODELS, build_model, load, save_checkpoint
from rnnmem.models.base import DEPRECATED_OPTIONS, Spectrum, canonical_options, model_outputs
from rnnmem.models.registry import content_digest, _ensure_models_loaded
from rnnmem.numerics import tolerance

_ensure_models_loaded()
NAMES = sorted(MODELS)
WIDTH = 3
#: values of required constructor options other than ``width``
_REQUIRED = {"vocab_size": 3}


def _required(cls) -> dict:
    out = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for n, p in inspect.signature(init).parameters.items():
            if n in ("self", "width") or p.default is not inspect.Parameter.empty:
                continue
            if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                continue
            assert n in _REQUIRED, f"{cls.__name__} needs option {n!r}: add it to _REQUIRED"
            out[n] = _REQUIRED[n]
    return out


def _model(name, **kw):
    cls = MODELS[name]
    return build_model(name, width=WIDTH, **_required(cls), dtype="float64", device="cpu",
                       seed=0, **kw)


def _probe(model, batch=2, length=5):
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch, length, model.input_dim, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("name", NAMES)
def test_width_is_the_option(name):
    m = _model(name)
    assert "width" in MODELS[name].options()
    assert not set(DEPRECATED_OPTIONS) & MODELS[name].options()
    assert m.width == WIDTH and m.config["width"] == WIDTH
    assert not set(DEPRECATED_OPTIONS) & set(m.config)  # stored configs use `width`


@pytest.mark.parametrize("name", NAMES)
def test_shapes(name):
    m = _model(name)
    assert isinstance(m.input_dim, int) and isinstance(m.output_dim, int)
    y = model_outputs(m, _probe(m))
    assert tuple(y.shape) == (2, 5, m.output_dim)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", NAMES)
def test_recurrent_parameters(name):
    m = _model(name)
    rec = m.recurrent_parameters()
    assert rec, f"{name} declares no recurrent parameters"
    named = dict(m.named_parameters())
    assert all(named[k] is p for k, p in rec.items())


def _annihilator(mu: np.ndarray) -> np.ndarray:
    """Coefficients (highest power first) of the real polynomial whose roots are ``mu`` and
    their conjugates: every sequence Re(sum_n c_n mu_n^k) satisfies its recurrence."""
    roots = np.concatenate([mu, mu.conj()]) if np.any(mu.imag != 0) else mu.real
    return np.real(np.poly(roots))


@pytest.mark.parametrize("name", NAMES)
def test_spectrum_and_slowest_rate(name):
    m = _model(name)
    try:
        spec = m.spectrum()
    except NotApplicableError as exc:
        assert type(m).__name__ in str(exc)
        with pytest.raises(NotApplicableError):
            m.slowest_decay_rate()
        return
    assert isinstance(spec, Spectrum) and spec.time == m.time and spec.dt == m.dt
    assert spec.eigenvalues.shape == (WIDTH,)
    ev = spec.eigenvalues
    if spec.time == "continuous":
        expected = float(np.min(-ev.real))
    else:
        with np.errstate(divide="ignore"):  # a multiplier 0 decays at an infinite rate
            expected = float(np.min(-np.log(np.abs(ev)) / m.dt))
    assert m.slowest_decay_rate() == pytest.approx(expected, rel=1e-12)
    if name in ("com_diagonal_rnn", "com_rnn", "com_ssm"):
        # the original curse-of-memory relu models start with exact integrators (w < 0
        # gives r = relu(w) = 0): never growing, but not decaying either
        assert m.slowest_decay_rate() >= 0
    else:
        assert m.slowest_decay_rate() > 0  # every model starts stable


@pytest.mark.parametrize("name", NAMES)
def test_spectrum_generates_the_impulse_response(name):
    """For a linear model, the spectrum is the one of the outputs: with the per-step
    multipliers mu (e^{lambda dt} for a continuous-time model, a zero-order hold), the
    impulse response rho_k (k >= 1, after any skip term) is annihilated by the polynomial
    prod (z - mu_n) (Cayley-Hamilton), measured on the model's own outputs."""
    m = _model(name)
    if not m.is_linear:
        pytest.skip(f"{name} is not linear in its default configuration")
    spec = m.spectrum()
    mu = spec.eigenvalues if spec.time == "discrete" else np.exp(spec.eigenvalues * m.dt)
    coef = _annihilator(mu)  # (D + 1,)
    D = coef.size - 1
    T = D + 8
    imp = torch.zeros(1, T, m.input_dim, dtype=torch.float64)
    imp[0, 0, 0] = 1.0
    with torch.no_grad():
        y1, y0 = model_outputs(m, imp), model_outputs(m, torch.zeros_like(imp))
        rho = (y1 - y0)[0].numpy()
    # the difference of two outputs rounds relative to the outputs (biases included)
    out_scale = float(np.abs(coef).sum() * max(y1.abs().max(), y0.abs().max()))
    rho = rho[1:]  # (T - 1, p): k >= 1
    for k in range(rho.shape[0] - D):
        window = rho[k:k + D + 1][::-1]  # rho_{k+D}, ..., rho_k
        resid = coef @ window
        scale = np.maximum(np.abs(coef) @ np.abs(window), out_scale)
        tol = tolerance("float64", n_ops=8 * (D + T), scale=float(scale.max()))
        assert tol.allclose(resid, 0.0), (k, resid, scale)


@pytest.mark.parametrize("name", NAMES)
def test_memory_function_finite_nonnegative(name):
    m = _model(name)
    t = m.dt * np.arange(6)
    M = np.asarray(m.memory_function(t, method="auto"))
    assert M.shape[0] == t.size and np.all(np.isfinite(M)) and np.all(M >= 0)
    E = np.asarray(m.memory_function(t, method="estimator"))
    assert E.shape == M.shape and np.all(np.isfinite(E)) and np.all(E >= 0)
    if m.is_linear:
        C = np.asarray(m.memory_function(t, method="closed_form"))
        assert np.array_equal(C, M)
        if m.time == "discrete":  # the closed (sampled) form is what the estimator measures
            assert tolerance("float64", n_ops=64, scale=float(np.abs(C).max())).allclose(E, C)
    else:
        with pytest.raises(NotApplicableError):
            m.memory_function(t, method="closed_form")
    with pytest.raises(InvalidParameterError):
        m.memory_function(t, method="exactly")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("old", sorted(DEPRECATED_OPTIONS))
def test_deprecated_width_names(name, old, tmp_path):
    cls = MODELS[name]
    with pytest.warns(DeprecationWarning, match=old):
        m = build_model(name, **{old: WIDTH}, **_required(cls), dtype="float64", device="cpu",
                        seed=0)
    assert m.width == WIDTH and "width" in m.config and old not in m.config
    with pytest.raises(InvalidParameterError, match=old):
        build_model(name, **{old: WIDTH, "width": WIDTH}, **_required(cls))
    # an old checkpoint (stored config with the old name) still loads, with a warning
    path = save_checkpoint(tmp_path / "m.pt", m)
    obj = torch.load(path, weights_only=True)
    obj["config"][old] = obj["config"].pop("width")
    obj["sha256"] = content_digest(obj)  # re-signed: an intact checkpoint of an older release
    torch.save(obj, path)
    with pytest.warns(DeprecationWarning, match=old):
        again = load(path)
    assert again.width == WIDTH and again.config["width"] == WIDTH
    assert torch.equal(model_outputs(again, _probe(m)), model_outputs(m, _probe(m)))


def test_canonical_options_leaves_new_names_alone():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert canonical_options({"width": 4, "dt": 0.5}) == {"width": 4, "dt": 0.5}


def test_code_above_models_uses_the_contract():
    """No module above ``models`` inspects signatures or compares a model's name (the
    contract makes both unnecessary; ARCHITECTURE.md, "Contracts")."""
    import ast
    from pathlib import Path

    import rnnmem

    root = Path(rnnmem.__file__).parent
    above = ("tasks", "train", "experiments", "proofs_check", "commands")
    bad = []
    for pkg in above:
        for path in sorted((root / pkg).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    mods = [a.name for a in node.names] if isinstance(node, ast.Import) \
                        else [node.module or ""]
                    if "inspect" in mods:
                        bad.append(f"{path.relative_to(root)}:{node.lineno} imports inspect")
                if isinstance(node, ast.Compare):
                    sides = [node.left, *node.comparators]
                    if any(isinstance(s, ast.Attribute) and s.attr == "model_name"
                           for s in sides):
                        bad.append(f"{path.relative_to(root)}:{node.lineno} compares "
                                   "model_name")
    assert not bad, bad
