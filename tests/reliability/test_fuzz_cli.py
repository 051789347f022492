"""Fuzzing every CLI command (in-process ``rnnmem.cli.main``) and a few subprocess runs.

Each example replaces one option of a small, valid command line with a drawn value (any
type: integers of every size, floats, text, lists, empty strings, huge numbers) and asserts
the promise of issue 13: exit status 0 or 2, no traceback, and on 2 exactly one line
``rnnmem CMD: error: ...`` that names the option (or quotes the bad value). A documented
cap (``RNNMEM_MAX_BYTES``, fixture ``small_memory_cap``) keeps every accepted size small.
"""

import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from campaign import run_cli

NASTY = ["", " ", "-1", "0", "1", "2", "-0", "1e300", "-1e300", "1e-320", "nan", "inf", "-inf",
         str(2**63), str(2**70), str(-2**63), "1e9", "1e10", str(10**12), "abc", "None",
         "[1, 2]", "{'a': 1}", "1:2", "1:2:3", "::", ",", "1,,2", "0:0", "3:1", "x=1",
         "é", "🙂", "'", '"', "\\", "a" * 300, "1" * 40, "-", "--", "true"]
VALUES = st.one_of(
    st.sampled_from(NASTY),
    st.integers(-5, 5).map(str),
    st.integers(min_value=10**9, max_value=10**30).map(str),
    st.integers(max_value=-1).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
            max_size=12),
)
#: examples per fuzz test (RNNMEM_FUZZ_EXAMPLES for a longer campaign)
FUZZ = settings(max_examples=int(os.environ.get("RNNMEM_FUZZ_EXAMPLES", "12")), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


def _check(argv, flag, value, also=()):
    rc, out, err, escaped = run_cli(argv, timeout=300)
    assert not escaped, f"{argv}: escaped {escaped}"
    assert rc in (0, 2), f"{argv}: exit {rc}: {err}"
    assert "Traceback" not in err and "internal error" not in err, f"{argv}: {err}"
    if rc == 2:
        lines = [ln for ln in err.strip().splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("rnnmem") and ": error: " in lines[0], \
            f"{argv}: {err!r}"
        if "training diverged" in lines[0]:  # an outcome of a valid value (a huge --lr)
            return rc
        names = {flag, flag.lstrip("-"), flag.lstrip("-").replace("-", "_"),
                 flag.split(" ")[-1].split("=")[0], *also}
        assert any(n and n in lines[0] for n in names) or (value and value.strip()[:30] in
                                                           lines[0]), \
            f"{argv}: the message names neither {flag} nor {value!r}: {lines[0]}"
    return rc


# every command: (base argv builder, {option: how the value enters argv})
def _memory(fx):
    return ["memory", fx["ckpt"], "--n-points", "5"]


def _perturb(fx):
    return ["perturb", fx["ckpt"], "--betas", "1e-3:1:2", "--repeats", "2"]


def _evaluate(fx):
    return ["evaluate", fx["lang"], "--bins", "7:8", "--per-bin", "2"]


def _train(fx, out, fuzzed=""):
    """A tiny valid run; the key=value option being fuzzed is left out of the base."""
    kv = [("--model-arg", "width=2"), ("--task-arg", "n_samples=8"),
          ("--task-arg", "length=6")]
    args = [x for opt, v in kv if not fuzzed.endswith(v.split("=")[0] + "=") for x in (opt, v)]
    return ["train", "--model", "diagonal_ssm", "--task", "lf:exponential", "-q",
            "--steps", "2", *args, "--batch-size", "4", "--out", out, "--force"]


COMMAND_OPTIONS = {
    "memory": (_memory, ["--n-points", "--t-max", "--target", "--device", "--json", "--plot"]),
    "perturb": (_perturb, ["--betas", "--repeats", "--seed", "--scope", "--norm",
                           "--distribution", "--method", "--max-samples", "--level",
                           "--split", "--device"]),
    "evaluate": (_evaluate, ["--bins", "--lengths", "--per-bin", "--lengths-per-bin",
                             "--seed", "--dtype", "--batch-size", "--device"]),
}
TRAIN_OPTIONS = ["--seed", "--lr", "--steps", "--batch-size", "--optimizer", "--schedule",
                 "--dtype", "--precision", "--grad-clip", "--weight-decay", "--threads",
                 "--warmup", "--eval-every", "--checkpoint-every", "--device", "--model",
                 "--task", "--model-arg width=", "--task-arg length=",
                 "--task-arg n_samples=", "--model-arg seed="]


def _with(base, flag, value):
    if " " in flag:  # "--model-arg width=" -> ["--model-arg", "width=VALUE"]
        opt, kv = flag.split(" ", 1)
        return [*base, opt, kv + value]
    return [*base, flag, value]


@pytest.mark.parametrize("command", sorted(COMMAND_OPTIONS))
@FUZZ
@given(data=st.data())
def test_fuzz_checkpoint_commands(fx, small_memory_cap, tmp_path, command, data):
    base, options = COMMAND_OPTIONS[command]
    flag = data.draw(st.sampled_from(options), label="option")
    value = data.draw(VALUES, label="value")
    if flag in ("--json", "--plot"):  # a path: keep it inside tmp_path unless it is odd
        value = str(tmp_path / value) if value.strip() and "/" not in value else value
    _check(_with(base(fx), flag, value), flag, value)


@FUZZ
@given(data=st.data())
def test_fuzz_train(fx, small_memory_cap, tmp_path, data):
    flag = data.draw(st.sampled_from(TRAIN_OPTIONS), label="option")
    value = data.draw(VALUES, label="value")
    if flag == "--steps":  # a valid huge step count would train for ever: keep it tiny
        try:
            if 10 < int(value) < 10**9:
                value = "3"
        except ValueError:
            pass
    _check(_with(_train(fx, str(tmp_path / "run"), flag), flag, value), flag, value)


@FUZZ
@given(data=st.data())
def test_fuzz_verify_derive_list(small_memory_cap, tmp_path, data):
    which = data.draw(st.sampled_from(["verify --seed", "verify --out", "verify --only",
                                       "verify --budget", "derive", "list"]), label="what")
    value = data.draw(VALUES, label="value")
    if which == "derive":
        argv, flag = ["derive", value], "name"  # or "unknown parameterisation '...'"
    elif which == "list":
        argv, flag = ["list", value], "what"
    else:
        flag = which.split()[1]
        base = {"--only": "best-parameterisation", "--out": str(tmp_path / "rep"),
                "--seed": "0", "--budget": "smoke"}
        base[flag] = value if flag != "--out" or not value.strip() or "/" in value \
            else str(tmp_path / value)
        argv = ["verify", "-q"] + [x for k, v in base.items() for x in (k, v)]
    _check(argv, flag, value, also=("parameterisation",) if which == "derive" else ())


@FUZZ
@given(argv=st.lists(VALUES, max_size=4))
def test_fuzz_raw_argv(argv):
    """Arbitrary words as the whole command line: 0 or 2, one line, never a traceback."""
    rc, out, err, escaped = run_cli(argv, timeout=300)
    assert not escaped and rc in (0, 2) and "Traceback" not in err, (argv, rc, err, escaped)
    if rc == 2 and err.strip():
        assert len(err.strip().splitlines()) == 1, (argv, err)


# ----------------------------------------------------------------------- real processes
@pytest.mark.parametrize("argv,needle", [
    (["train", "--bogus"], "rnnmem train: error: unrecognized arguments: --bogus"),
    (["memory", "{flip_tensor}"], "does not match its SHA-256"),
    (["verify", "--seed", "-1"], "rnnmem verify: error: --seed"),
])
def test_subprocess_one_line(fx, argv, needle):
    argv = [a.format(**fx) for a in argv]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    p = subprocess.run([sys.executable, "-m", "rnnmem", *argv], capture_output=True,
                       text=True, timeout=300, env=env)
    assert p.returncode == 2, p.stderr
    assert p.stderr.count("\n") == 1 and needle in p.stderr and "usage:" not in p.stderr, \
        p.stderr


def test_help_still_shows_usage(capsys):
    from rnnmem.cli import main

    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0 and "usage:" in capsys.readouterr().out
