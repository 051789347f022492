"""Units of the reliability layer: limits, the CLI's error handling, one NaN rule, the
rnnmem.train name, numerics that never return NaN, registries, figures."""

import json
import math
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rnnmem
from rnnmem.errors import (InvalidParameterError, NonFiniteError, ResourceLimitError,
                           RnnmemError, ShapeError, StorageError, UnknownNameError,
                           exception_text)
from rnnmem.limits import (MAX_COUNT, SEED_MAX, check_count, check_memory, check_seed,
                           memory_limit, parse_count, parse_seed)


# ----------------------------------------------------------------------------- limits
@given(st.integers())
def test_seed_range_is_exactly_0_to_2_63_minus_1(v):
    if 0 <= v <= SEED_MAX:
        assert check_seed(v) == v and parse_seed(str(v)) == v
    else:
        with pytest.raises(InvalidParameterError, match="seed"):
            check_seed(v)


@pytest.mark.parametrize("v", [True, 1.0, "3", None, np.float64(2.0)])
def test_seed_must_be_an_integer(v):
    with pytest.raises(InvalidParameterError, match="seed"):
        check_seed(v)
    assert check_seed(None, optional=True) is None
    assert check_seed(np.int64(5)) == 5


@pytest.mark.parametrize("text,expect", [("3", 3), ("1e3", 1000), (" 7 ", 7)])
def test_parse_count(text, expect):
    assert parse_count(text, "--n") == expect


@pytest.mark.parametrize("text,err", [("2.5", InvalidParameterError), ("nan", InvalidParameterError),
                                      ("0", InvalidParameterError), ("abc", InvalidParameterError),
                                      (str(MAX_COUNT + 1), ResourceLimitError),
                                      ("1e30", ResourceLimitError)])
def test_parse_count_refuses(text, err):
    with pytest.raises(err, match="--n"):
        parse_count(text, "--n")


def test_memory_cap_from_the_environment(monkeypatch):
    monkeypatch.setenv("RNNMEM_MAX_BYTES", "1000")
    assert memory_limit() == (1000, "cap RNNMEM_MAX_BYTES")
    check_memory(999, "x=1")
    with pytest.raises(ResourceLimitError, match=r"x=2 would allocate about 1\.95 KiB.*cap"):
        check_memory(2000, "x=2")
    monkeypatch.setenv("RNNMEM_MAX_BYTES", "lots")
    with pytest.raises(InvalidParameterError, match="RNNMEM_MAX_BYTES"):
        check_memory(1, "x")


def test_model_sizes_are_estimated_before_allocating(monkeypatch):
    monkeypatch.setenv("RNNMEM_MAX_BYTES", str(2**20))
    with pytest.raises(ResourceLimitError, match="width=1000 would allocate"):
        rnnmem.models.build_model("rnn", width=1000)
    with pytest.raises(ResourceLimitError, match="width=100000"):
        rnnmem.DiagonalSSM(width=100_000)
    rnnmem.DiagonalSSM(width=8)  # small ones pass


# ----------------------------------------------------------------------------- CLI
def _run(argv, capsys):
    from rnnmem.cli import main

    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.err


def test_argparse_errors_are_one_line_naming_the_command(capsys):
    rc, err = _run(["evaluate"], capsys)
    assert rc == 2 and err == "rnnmem evaluate: error: the following arguments are required: CKPT\n"
    rc, err = _run(["perturb", "x.pt", "--nope"], capsys)
    assert rc == 2 and err == "rnnmem perturb: error: unrecognized arguments: --nope\n"


def test_os_errors_and_bugs_reaching_the_cli(monkeypatch, capsys, tmp_path):
    from rnnmem.commands import derive

    def raise_(exc):
        def run(args):
            raise exc
        return run

    monkeypatch.setattr(derive, "run", raise_(PermissionError(13, "Permission denied",
                                                              str(tmp_path / "f"))))
    rc, err = _run(["derive", "exp"], capsys)
    assert rc == 2 and err.count("\n") == 1 and "permission denied" in err \
        and str(tmp_path / "f") in err
    monkeypatch.setattr(derive, "run", raise_(KeyError("boom")))
    rc, err = _run(["derive", "exp"], capsys)
    assert rc == 70 and err.startswith("rnnmem derive: error: internal error") \
        and "KeyError" in err and err.count("\n") == 1
    monkeypatch.setattr(derive, "run", raise_(MemoryError()))
    rc, err = _run(["derive", "exp"], capsys)
    assert rc == 2 and "out of memory" in err
    long = "x" * 500 + " the reason at the end"
    monkeypatch.setattr(derive, "run", raise_(InvalidParameterError(long + "\nsecond line")))
    rc, err = _run(["derive", "exp"], capsys)
    assert rc == 2 and "the reason at the end second line" in err and err.count("\n") == 1


def test_exception_text_keeps_everything_on_one_line():
    assert exception_text(ValueError("a\n  b\tc")) == "a b c"
    assert exception_text(ValueError()) == "ValueError"
    assert len(exception_text(ValueError("y" * 1000))) == 1000


# ----------------------------------------------------------------------------- names
def test_rnnmem_train_is_one_thing_in_any_import_order():
    import importlib
    import subprocess
    import sys

    code = ("import rnnmem, types\n"
            "a = rnnmem.train\n"
            "_ = rnnmem.TrainConfig\n"
            "import rnnmem.train.loop\n"
            "b = rnnmem.train\n"
            "assert a is b and isinstance(a, types.ModuleType) and callable(a)\n"
            "assert rnnmem.fit is rnnmem.train.train is rnnmem.train.fit\n"
            "print('ok')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.stdout.strip() == "ok", out.stderr
    assert isinstance(rnnmem.train, type(importlib))


def test_registries_name_a_missing_key():
    for reg, kind in ((rnnmem.PARAMETERISATIONS, "parameterisation"),
                      (rnnmem.TARGETS, "target"), (rnnmem.LANGUAGES, "language")):
        with pytest.raises(UnknownNameError, match=f"unknown {kind} 'nosuch'; known: "):
            reg["nosuch"]
        with pytest.raises(KeyError):  # still a dict's KeyError
            reg["nosuch"]
        assert reg.get("nosuch") is None and "nosuch" not in reg


# ----------------------------------------------------------------------------- numerics
@settings(max_examples=25)
@given(st.floats(3.0, 300.0), st.integers(1, 3))
def test_linear_memory_is_finite_for_huge_times_and_scales(log_t, n):
    from rnnmem.numerics import linear_memory

    rng = np.random.default_rng(n)
    A = rng.standard_normal((n, n))
    W = -(A @ A.T + n * np.eye(n))
    t = [0.0, 10.0 ** log_t]
    for scale in (1.0, 1e200):
        m = linear_memory(W * scale, np.ones((n, 1)), np.ones((1, n)), t)
        assert np.all(np.isfinite(m)) and m[-1] == 0.0  # e^{W t} underflows to 0 (t >= 1e3)


def test_linear_memory_overflow_is_named():
    from rnnmem.numerics import linear_memory, linear_memory_discrete

    W = np.diag([-1.0, -2.0])
    with pytest.raises(NonFiniteError, match="overflows float64"):
        linear_memory(W, np.full((2, 1), 1e300), np.full((1, 2), 1e300), [0.0, 1.0])
    with pytest.raises(NonFiniteError, match="overflows float64 at k"):
        linear_memory_discrete(0.5 * np.eye(2), np.full((2, 1), 1e300),
                               np.full((1, 2), 1e300), [0, 1])


@pytest.mark.parametrize("kw", [dict(cond=math.nan), dict(cond=-1.0), dict(scale=math.inf),
                                dict(scale=-2.0), dict(n_ops=-1), dict(n_ops=math.nan),
                                dict(solver_rtol=math.inf), dict(cond="big")])
def test_tolerance_refuses_bad_arguments(kw):
    from rnnmem.numerics import tolerance

    with pytest.raises(InvalidParameterError, match="tolerance: " + next(iter(kw))):
        tolerance("float64", **kw)


def test_tolerance_of_valid_arguments_is_finite_and_positive():
    from rnnmem.numerics import tolerance

    t = tolerance("float64", n_ops=10, cond=100.0, scale=2.0)
    assert 0 < t.rtol < 1e-10 and 0 < t.atol and math.isfinite(t.atol)


# ----------------------------------------------------------------------------- one NaN rule
def test_reports_metrics_and_json_outputs_write_null_for_nan(tmp_path):
    from rnnmem.commands.memory import emit_json
    from rnnmem.proofs_check.registry import Result
    from rnnmem.proofs_check.report import write_report
    from rnnmem.train.loop import _MetricsLog

    r = Result("c", "t", "s", "st", "confirmed", "ok", {"a": math.nan, "b": [math.inf, 1.0]},
               [], "", 0.1, "smoke", False)
    _, rj = write_report([r], tmp_path, budget="smoke")
    assert json.loads(rj.read_text())[0]["metrics"] == {"a": None, "b": [None, 1.0]}
    assert (rj.stat().st_mode & 0o777) == (0o666 & ~_umask())
    emit_json({"x": np.float64(math.nan)}, str(tmp_path / "m.json"))
    assert json.loads((tmp_path / "m.json").read_text()) == {"x": None}
    log = _MetricsLog(tmp_path)
    log.rewrite([{"step": 1, "loss": math.nan}])
    assert json.loads((tmp_path / "metrics.json").read_text()) == [{"loss": None, "step": 1}]
    assert (tmp_path / "metrics.csv").read_text().splitlines()[1] == "1,"


def _umask():
    m = os.umask(0o022)
    os.umask(m)
    return m


def test_figures_are_written_atomically_and_bad_formats_named(tmp_path):
    from rnnmem.proofs_check._plot import pyplot, save

    plt = pyplot()
    fig, ax = plt.subplots()
    ax.plot([1, 2])
    save(fig, tmp_path / "a.svg")
    assert (tmp_path / "a.svg").read_text().lstrip().startswith("<?xml")
    fig, _ = plt.subplots()
    with pytest.raises(InvalidParameterError, match="'nosuchext'"):
        save(fig, tmp_path / "b.nosuchext")
    fig, _ = plt.subplots()
    with pytest.raises(StorageError, match="is a directory"):
        save(fig, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.svg"]


def test_all_named_errors_are_rnnmem_errors():
    import rnnmem.errors as E

    for name in E.__all__:
        obj = getattr(E, name)
        if isinstance(obj, type) and issubclass(obj, Exception) \
                and not issubclass(obj, Warning):  # warnings: rnnmem.errors.RnnmemWarning
            assert issubclass(obj, RnnmemError), name
    assert issubclass(ShapeError, ValueError)
