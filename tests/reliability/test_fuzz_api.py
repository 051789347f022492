"""Fuzzing the public API: any value of any type for one argument of a valid call.

Each public function gets a valid call in which one argument is replaced by a drawn value
(numbers of every size and sign, NaN/inf, strings, None, lists, ragged lists, arrays of the
wrong shape, dicts, objects); the call must return or raise an :class:`rnnmem.errors`
exception (never a bare ``TypeError``/``IndexError``/numpy or torch error), and a raised
message names the argument (or quotes the value).
"""

import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rnnmem
from rnnmem.errors import RnnmemError

ANY = st.one_of(
    st.none(), st.booleans(),
    st.integers(-3, 3), st.integers(min_value=2**31), st.integers(max_value=-2**31),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6), st.sampled_from(["", "nosuch", "float64", "cpu", "exp"]),
    st.lists(st.floats(-2, 2), max_size=3),
    st.just([[1.0], [1.0, 2.0]]), st.just({"a": 1}), st.just(object()),
    st.just(np.zeros((2, 3))), st.just(np.array([np.nan])), st.just(np.zeros(0)),
    st.just(np.array(["a"])), st.just(1 + 2j),
)
FUZZ = settings(max_examples=int(os.environ.get("RNNMEM_FUZZ_EXAMPLES", "12")) * 3,
                deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                      HealthCheck.function_scoped_fixture])

W1, U1, C1 = np.array([[-1.0]]), np.array([[1.0]]), np.array([[1.0]])


def _calls():
    """name -> (function, valid kwargs)."""
    from rnnmem.numerics import classify_decay, linear_memory, memory_function, tolerance
    from rnnmem.numerics.linear import linear_memory_discrete
    from rnnmem.testing.strategies import bounded_floats, hurwitz_matrices

    def system(x):
        return np.cumsum(x, axis=-2) * 0.5

    return {
        "linear_memory": (linear_memory, dict(W=W1, U=U1, c=C1, t=[0.0, 1.0],
                                              method="auto")),
        "linear_memory_discrete": (linear_memory_discrete,
                                   dict(A=0.5 * np.eye(1), B=U1, c=C1, k=[0, 1])),
        "classify_decay": (classify_decay, dict(t=np.arange(10.0), m=np.exp(-np.arange(10.0)),
                                                tail=0.5)),
        "tolerance": (tolerance, dict(dtype="float64", n_ops=3, cond=2.0, scale=1.0)),
        "memory_function": (memory_function, dict(system=system, t=[0.0, 1.0], dt=1.0,
                                                  input_dim=1)),
        "get_parameterisation": (rnnmem.get_parameterisation, dict(name="exp")),
        "DiagonalSSM": (rnnmem.DiagonalSSM, dict(width=2, seed=0, dtype="float64",
                                                 device="cpu")),
        "build_model": (lambda name, **kw: rnnmem.models.build_model(name, **kw),
                        dict(name="rnn", width=2, seed=0, device="cpu")),
        "TrainConfig": (rnnmem.TrainConfig, dict(model="rnn", task="lf:exponential", steps=2,
                                                 seed=0, lr=0.01, batch_size=4)),
        "load": (rnnmem.load, dict(path="/nonexistent.pt")),
        "bounded_floats": (bounded_floats, dict(lo=-1.0, hi=1.0)),
        "hurwitz_matrices": (hurwitz_matrices, dict(n=2, margin=0.1)),
        "linear_recurrence": (lambda a, x, **kw: rnnmem.linear_recurrence(_t(a), _t(x), **kw),
                              dict(a=[[0.5]], x=[[[1.0]]])),
        "best_parameterisation": (rnnmem.best_parameterisation, dict(time="continuous")),
        "parse_betas": (_parse_betas, dict(spec="1e-3:1:3")),
        "length_bins": (_length_bins, dict(spec="1:5,6:9")),
        "StackRNN": (rnnmem.StackRNN, dict(vocab_size=3, width=4, seed=0, device="cpu")),
        "get_language": (_get_language, dict(name="parity")),
    }


def _t(v):
    """A tensor when ``v`` converts to one (the fuzzed value otherwise, as given)."""
    import torch

    try:
        return torch.as_tensor(v, dtype=torch.float64)
    except Exception:  # noqa: BLE001 - pass the odd value through
        return v


def _parse_betas(spec):
    from rnnmem.numerics.perturbation import parse_betas

    return parse_betas(spec)


def _length_bins(spec):
    from rnnmem.tasks.languages import length_bins

    return length_bins(spec)


def _get_language(name):
    from rnnmem.tasks.languages import get_language

    return get_language(name)


CALLS = sorted(_calls())


@pytest.mark.parametrize("name", CALLS)
@FUZZ
@given(data=st.data())
def test_fuzz_api(name, data):
    fn, kwargs = _calls()[name]
    arg = data.draw(st.sampled_from(sorted(kwargs)), label="argument")
    value = data.draw(ANY, label="value")
    kw = {**kwargs, arg: value}
    try:
        fn(**kw)
    except RnnmemError as exc:
        text = str(exc)
        assert text.strip(), f"{name}({arg}={value!r}): empty message"
    except Exception as exc:  # noqa: BLE001 - what this test looks for
        pytest.fail(f"{name}({arg}={value!r}) raised {type(exc).__name__}: {exc}")
