"""A bad-input and fault campaign over the CLI and the public API.

Each case runs ``rnnmem.cli.main(argv)`` in-process (or an API call) and is classified:

- ``clean``: the expected outcome -- exit 0 with a right answer, or exit 2 with one line
  ``rnnmem CMD: error: ...`` on stderr;
- ``traceback``: an exception escaped, a traceback or an internal error was printed, or the
  exit status was neither 0 nor 2 (130 for Ctrl-C aside);
- ``silent``: exit 0 (or no exception) where the input is wrong and must be refused;
- ``wrong``: an error where the input is fine.

Run ``python tests/reliability/campaign.py`` for the counts (the tests in this folder run the
same cases). The cases name the bad inputs of issue 13, one or more per item.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

#: per-case wall-clock limit (seconds, generous for a busy machine): a case still running
#: is a "hang" (a traceback-class failure: an unbounded size was accepted)
CASE_TIMEOUT = 300


@dataclass
class Outcome:
    case: str
    kind: str  # clean / traceback / silent / wrong / hang
    rc: int | None
    err: str


class _Timeout(BaseException):
    pass


def run_cli(argv: list[str], timeout: int = CASE_TIMEOUT) -> tuple[int | None, str, str, str]:
    """(exit status, stdout, stderr, escaped exception text) of ``main(argv)``."""
    from rnnmem.cli import main

    out, err = io.StringIO(), io.StringIO()
    escaped = ""

    def alarm(signum, frame):
        raise _Timeout()

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(timeout)
    rc = None
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(list(argv))
    except _Timeout:
        escaped = "TIMEOUT"
    except SystemExit as exc:  # --help/--version only
        rc = exc.code if isinstance(exc.code, int) else 2
    except BaseException as exc:  # noqa: BLE001 - that is what we count
        escaped = f"{type(exc).__name__}: {exc}"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    return rc, out.getvalue(), err.getvalue(), escaped


def classify_cli(argv, expect: str, rc, err: str, escaped: str) -> str:
    if escaped == "TIMEOUT":
        return "hang"
    if escaped or rc not in (0, 2) or "Traceback" in err or "internal error" in err:
        return "traceback"
    if rc == 2:
        lines = [ln for ln in err.strip().splitlines() if ln.strip()]
        if len(lines) != 1 or not lines[0].startswith("rnnmem") or ": error: " not in lines[0]:
            return "traceback"  # several lines: usage block or a printed trace
        return "wrong" if expect == "ok" else "clean"
    return "silent" if expect == "error" else "clean"


# ----------------------------------------------------------------------------- fixtures
def make_fixtures(root: Path) -> dict:
    """A trained run, a language run and damaged copies of a checkpoint, under ``root``."""
    import torch

    from rnnmem.train import TrainConfig, train

    root = Path(root)
    fx = {"root": str(root)}
    cfg = TrainConfig(model="diagonal_ssm", task="lf:exponential", model_kwargs={"width": 3},
                      task_kwargs={"n_samples": 24, "length": 10}, steps=4, eval_every=2,
                      checkpoint_every=2, batch_size=8, dtype="float64", device="cpu",
                      out_dir=str(root / "run"))
    train(cfg, progress=False)
    fx["ckpt"] = str(root / "run" / "last.pt")
    lcfg = TrainConfig(model="rnn", task="lang:parity", model_kwargs={"width": 4},
                       task_kwargs={"lengths": [1, 6]}, steps=2, eval_every=2, batch_size=4,
                       dtype="float64", device="cpu", out_dir=str(root / "lang"))
    train(lcfg, progress=False)
    fx["lang"] = str(root / "lang" / "last.pt")
    raw = (root / "run" / "last.pt").read_bytes()
    obj = torch.load(root / "run" / "last.pt", weights_only=True)

    def write(name, data: bytes) -> str:
        p = root / name
        p.write_bytes(data)
        return str(p)

    fx["empty"] = write("empty.pt", b"")
    fx["text"] = write("text.pt", b"hello, not a checkpoint\n")
    fx["truncated"] = write("truncated.pt", raw[: len(raw) // 2])
    fx["flip_tensor"] = write("flip_tensor.pt", _flip_in_tensor(raw, obj["state_dict"]))
    fx["flip_rng"] = write("flip_rng.pt",
                           _flip_in_tensor(raw, {"rng": obj["extra"]["train"]["rng"]["torch"]}))
    # a run directory whose last.pt has one flipped bit in its stored torch RNG state
    import shutil

    shutil.copytree(root / "run", root / "run_flip_rng")
    (root / "run_flip_rng" / "last.pt").write_bytes(Path(fx["flip_rng"]).read_bytes())
    fx["run_flip_rng"] = str(root / "run_flip_rng")
    (root / "dir.pt").mkdir(exist_ok=True)
    fx["dir"] = str(root / "dir.pt")
    fx["file"] = write("a_file", b"x")
    (root / "lastdir" / "last.pt").mkdir(parents=True, exist_ok=True)
    fx["lastdir"] = str(root / "lastdir")
    return fx


def _flip_in_tensor(raw: bytes, tensors: dict) -> bytes:
    """``raw`` with one bit flipped inside the stored bytes of the first tensor of
    ``tensors`` (found by its content)."""
    import torch

    for t in tensors.values():
        if isinstance(t, torch.Tensor) and t.numel() * t.element_size() >= 8:
            data = t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
            at = raw.find(data)
            if at >= 0:
                b = bytearray(raw)
                b[at + len(data) // 2] ^= 0x10
                return bytes(b)
    raise AssertionError("no tensor bytes found in the checkpoint")


def cli_cases(fx: dict) -> list[tuple[str, list[str], str]]:
    """(id, argv, expect) with expect in {"error", "ok", "any"}."""
    c, lang, tmp = fx["ckpt"], fx["lang"], fx["root"]
    B = ["train", "--model", "diagonal_ssm", "--task", "lf:exponential", "-q", "--steps", "2"]
    S = ["--model-arg", "width=3"]
    T = [*B, *S, "--task-arg", "n_samples=16", "--task-arg", "length=8"]
    cases = [
        # argparse
        ("no-command-arg", ["memory"], "error"),
        ("unknown-option", ["train", "--bogus"], "error"),
        ("unknown-command", ["nosuch"], "error"),
        ("bad-choice", ["verify", "--budget", "enormous"], "error"),
        ("list-bad-what", ["list", "nothing"], "error"),
        ("derive-unknown", ["derive", "nosuch"], "error"),
        ("derive-ok", ["derive", "softplus"], "ok"),
        ("list-ok", ["list", "parameterisations"], "ok"),
        # checkpoints: missing, damaged, wrong kind
        *[(f"{cmd}-{k}", [cmd, fx[k]] + extra, "error")
          for k in ("empty", "text", "truncated", "flip_tensor", "flip_rng", "dir", "file")
          for cmd, extra in (("memory", []), ("perturb", ["--repeats", "2", "--betas",
                                                          "1e-3:1:3"]),
                             ("evaluate", []))],
        ("memory-missing", ["memory", f"{tmp}/missing.pt"], "error"),
        ("resume-flip-rng", ["train", "--out", fx["run_flip_rng"], "--resume", "-q"], "error"),
        ("resume-flip-rng-with-config", ["train", "--model", "diagonal_ssm", "--task",
                                         "lf:exponential", "--out", fx["run_flip_rng"],
                                         "--resume", "-q"], "error"),
        # sizes and seeds
        ("state-dim-1e11", [*B, "--out", tmp + "/o1", "--model-arg", "width=1e11"],
         "error"),
        ("state-dim-10**11", [*B, "--out", tmp + "/o2", "--model-arg",
                              "width=100000000000"], "error"),
        ("state-dim-10**8", [*B, "--out", tmp + "/o2b", "--model-arg",
                             "width=100000000"], "error"),
        ("rnn-hidden-10**6", ["train", "--model", "rnn", "--task", "lf:exponential", "-q",
                              "--out", tmp + "/o3", "--model-arg", "width=1000000"],
         "error"),
        ("task-length-1e9", [*B, *S, "--out", tmp + "/o4", "--task-arg", "length=1e9"],
         "error"),
        ("task-length-10**9", [*B, *S, "--out", tmp + "/o5", "--task-arg",
                               "length=1000000000"], "error"),
        ("task-n-samples-10**10", [*B, *S, "--out", tmp + "/o6", "--task-arg",
                                   "n_samples=10000000000"], "error"),
        ("batch-size-10**12", [*T, "--out", tmp + "/o7", "--batch-size", "1000000000000"],
         "error"),
        # larger than the data set: the whole set is one batch (a valid run)
        ("batch-size-10**8", [*T, "--out", tmp + "/o7b", "--batch-size", "100000000"],
         "ok"),
        ("lang-lengths-10**9", ["train", "--model", "rnn", "--task", "lang:parity", "-q",
                                "--steps", "1", "--out", tmp + "/o7c", "--task-arg",
                                "lengths=[1,1000000000]"], "error"),
        ("seed-2**70", [*T, "--out", tmp + "/o8", "--seed", str(2**70)], "error"),
        ("seed--1", [*T, "--out", tmp + "/o9", "--seed", "-1"], "error"),
        ("steps-10**30", [*T, "--out", tmp + "/o10", "--steps", str(10**30)], "error"),
        ("n-points-1e10", ["memory", c, "--n-points", "1e10"], "error"),
        ("n-points-10**10", ["memory", c, "--n-points", "10000000000"], "error"),
        ("t-max-1e300", ["memory", c, "--t-max", "1e300", "--n-points", "5"], "any"),
        ("betas-n-1e10", ["perturb", c, "--betas", "1e-3:1:1e10"], "error"),
        ("betas-n-10**10", ["perturb", c, "--betas", "1e-3:1:10000000000"], "error"),
        ("repeats-1e10", ["perturb", c, "--repeats", "1e10"], "error"),
        ("repeats-10**10", ["perturb", c, "--repeats", "10000000000"], "error"),
        ("perturb-seed-2**70", ["perturb", c, "--seed", str(2**70)], "error"),
        ("perturb-max-samples-10**12", ["perturb", c, "--max-samples", str(10**12),
                                        "--repeats", "2", "--betas", "1e-3:1:2"], "any"),
        ("evaluate-bins-1e8", ["evaluate", lang, "--bins", "100000000:100000000"], "error"),
        ("evaluate-bins-float", ["evaluate", lang, "--bins", "1e8:1e8"], "error"),
        ("evaluate-per-bin-10**12", ["evaluate", lang, "--per-bin", str(10**12)], "error"),
        ("evaluate-seed-2**70", ["evaluate", lang, "--seed", str(2**70)], "error"),
        ("evaluate-seed--1", ["evaluate", lang, "--seed", "-1"], "error"),
        ("evaluate-ok", ["evaluate", lang, "--bins", "7:8", "--per-bin", "2"], "ok"),
        ("verify-seed--1", ["verify", "--seed", "-1", "--only", "best-parameterisation",
                            "--out", tmp + "/v1", "-q"], "error"),
        ("verify-seed-2**70", ["verify", "--seed", str(2**70), "--only",
                               "best-parameterisation", "--out", tmp + "/v2", "-q"], "error"),
        ("verify-seed-text", ["verify", "--seed", "x", "--out", tmp + "/v3"], "error"),
        ("verify-out-empty", ["verify", "--out", "", "--only", "best-parameterisation"],
         "error"),
        ("verify-out-file", ["verify", "--out", fx["file"], "--only", "best-parameterisation",
                             "-q"], "error"),
        ("verify-out-proc", ["verify", "--out", "/proc/rnnmem", "--only",
                             "best-parameterisation", "-q"], "error"),
        ("verify-unknown-claim", ["verify", "--only", "nosuch", "--out", tmp + "/v4"], "error"),
        # output paths
        ("train-out-file", [*T, "--out", fx["file"]], "error"),
        ("train-out-proc", [*T, "--out", "/proc/rnnmem"], "error"),
        ("train-out-empty", [*T, "--out", ""], "error"),
        ("train-resume-lastdir", [*T, "--out", fx["lastdir"], "--resume"], "error"),
        ("train-other-run", ["train", "--model", "rnn", "--task", "lf:exponential", "-q",
                             "--steps", "2", "--out", str(Path(c).parent)], "error"),
        ("train-same-run-no-resume", [*T, "--out", str(Path(c).parent)], "error"),
        ("memory-plot-bad-ext", ["memory", c, "--n-points", "5", "--plot",
                                 tmp + "/x.nosuchext"], "error"),
        ("memory-plot-dir", ["memory", c, "--n-points", "5", "--plot", tmp], "error"),
        ("memory-json-dir", ["memory", c, "--n-points", "5", "--json", tmp], "error"),
        ("memory-json-proc", ["memory", c, "--n-points", "5", "--json", "/proc/x.json"],
         "error"),
        ("memory-ok", ["memory", c, "--n-points", "5", "--json", tmp + "/m.json"], "ok"),
        ("evaluate-out-dir", ["evaluate", lang, "--bins", "7:8", "--per-bin", "2", "--out",
                              tmp], "error"),
        ("perturb-ok", ["perturb", c, "--repeats", "2", "--betas", "1e-3:1:3"], "ok"),
        ("train-config-text", [*T, "--out", tmp + "/o11", "--config", fx["text"]], "error"),
        ("train-config-dir", [*T, "--out", tmp + "/o12", "--config", tmp], "error"),
    ]
    return cases


def api_cases() -> list[tuple[str, Callable[[], object], str]]:
    """(id, thunk, expect): expect "error" (an RnnmemError), or "ok" (no exception and the
    thunk's own assertion holds)."""
    import numpy as np

    import rnnmem
    from rnnmem.numerics import classify_decay, linear_memory, tolerance

    def ok_linear_memory_huge_t():
        W, b, c = np.array([[-1.0]]), np.array([[1.0]]), np.array([[1.0]])
        m = np.asarray(linear_memory(W, b, c, t=[0.0, 1e300]))
        assert np.all(np.isfinite(m)), m

    def ok_linear_memory_scaled():
        rng = np.random.default_rng(0)
        A = rng.standard_normal((3, 3))
        W = -(A @ A.T + 3 * np.eye(3)) * 1e200
        m = np.asarray(linear_memory(W, np.ones((3, 1)), np.ones((1, 3)), t=[0.0, 1.0]))
        assert np.all(np.isfinite(m)), m

    def ok_train_is_module():
        import importlib

        _ = rnnmem.TrainConfig
        assert isinstance(rnnmem.train, type(importlib)), rnnmem.train
        assert callable(rnnmem.fit)

    from rnnmem.testing.strategies import bounded_floats

    cases = [
        ("DiagonalSSM-seed--1", lambda: rnnmem.DiagonalSSM(width=2, seed=-1), "error"),
        ("DiagonalSSM-seed-2**70", lambda: rnnmem.DiagonalSSM(width=2, seed=2**70),
         "error"),
        ("DiagonalSSM-state-1e11", lambda: rnnmem.DiagonalSSM(width=10**11), "error"),
        ("DiagonalSSM-state-float", lambda: rnnmem.DiagonalSSM(width=4.0), "error"),
        ("bounded_floats-1--1", lambda: bounded_floats(1, -1), "error"),
        ("PARAMETERISATIONS-nosuch", lambda: rnnmem.PARAMETERISATIONS["nosuch"], "error"),
        ("get_parameterisation-nosuch", lambda: rnnmem.get_parameterisation("nosuch"),
         "error"),
        ("tolerance-cond-nan", lambda: tolerance(np.float64, cond=float("nan")), "error"),
        ("tolerance-cond-neg", lambda: tolerance(np.float64, cond=-1.0), "error"),
        ("tolerance-scale-inf", lambda: tolerance(np.float64, scale=float("inf")), "error"),
        ("tolerance-n_ops-neg", lambda: tolerance(np.float64, n_ops=-3), "error"),
        ("classify_decay-reversed",
         lambda: classify_decay(np.linspace(10, 0, 50), np.exp(-np.linspace(10, 0, 50))),
         "error"),
        ("classify_decay-empty", lambda: classify_decay([], []), "error"),
        ("classify_decay-nan", lambda: classify_decay([0, 1, 2], [1, float("nan"), 0.1]),
         "error"),
        ("linear_memory-huge-t", ok_linear_memory_huge_t, "ok"),
        ("linear_memory-scaled-W", ok_linear_memory_scaled, "ok"),
        ("linear_memory-nan-W",
         lambda: linear_memory(np.array([[float("nan")]]), np.ones((1, 1)), np.ones((1, 1)),
                               t=[0.0]), "error"),
        ("memory_function-ragged",
         lambda: rnnmem.memory_function(lambda x: [[1.0], [1.0, 2.0]], t=[0.0, 1.0], dt=1.0,
                                        input_dim=1), "error"),
        ("rnnmem.train-module", ok_train_is_module, "ok"),
        ("load-empty", lambda: rnnmem.load(_empty_file()), "error"),
        ("load-directory", lambda: rnnmem.load(tempfile.mkdtemp()), "error"),
        ("TrainConfig-seed-2**70",
         lambda: rnnmem.TrainConfig(model="rnn", task="lf:exponential", seed=2**70), "error"),
    ]
    return cases


def _empty_file() -> str:
    fd, p = tempfile.mkstemp(suffix=".pt")
    os.close(fd)
    return p


def run_api(thunk) -> tuple[str, str]:
    """(outcome, text) of an API case: "raised-named", "raised-other", "returned"."""
    from rnnmem.errors import RnnmemError

    try:
        thunk()
    except RnnmemError as exc:
        return "raised-named", f"{type(exc).__name__}: {exc}"
    except AssertionError as exc:
        return "assert", f"AssertionError: {exc}"
    except Exception as exc:  # noqa: BLE001
        return "raised-other", f"{type(exc).__name__}: {exc}"
    return "returned", ""


def classify_api(expect: str, outcome: str) -> str:
    if outcome == "raised-other":
        return "traceback"
    if expect == "error":
        return "clean" if outcome == "raised-named" else "silent"
    return "clean" if outcome == "returned" else ("silent" if outcome == "assert" else "wrong")


def campaign(root: Path, verbose: bool = True) -> dict:
    fx = make_fixtures(root)
    outcomes = []
    for cid, argv, expect in cli_cases(fx):
        rc, _, err, escaped = run_cli(argv)
        kind = classify_cli(argv, expect, rc, err, escaped)
        outcomes.append(Outcome("cli:" + cid, kind, rc, (escaped or err).strip()))
    for cid, thunk, expect in api_cases():
        outcome, text = run_api(thunk)
        outcomes.append(Outcome("api:" + cid, classify_api(expect, outcome), None, text))
    counts = {"tried": len(outcomes)}
    for o in outcomes:
        counts[o.kind] = counts.get(o.kind, 0) + 1
        if verbose and o.kind != "clean":
            print(f"{o.kind:10s} {o.case}: rc={o.rc} {o.err[:300]}")
    return {"counts": counts, "outcomes": outcomes}


def random_phase(fx, n_cli: int, n_api: int, seed: int = 0, verbose: bool = True) -> dict:
    """Random cases drawn from the fuzz suite's option and value pools (no hypothesis): one
    option of a valid command line (or one argument of a valid API call) replaced by a
    random value. Classes: clean (0, or 2 with one line naming the option or quoting the
    value), traceback, unnamed (one line that names neither)."""
    import random

    import test_fuzz_api as FA
    import test_fuzz_cli as FC

    rng = random.Random(seed)
    pool = FC.NASTY + [str(v) for v in range(-5, 6)] + [str(10**k) for k in (9, 12, 30)] \
        + [repr(rng.uniform(-1e6, 1e6)) for _ in range(10)]
    counts: dict = {"tried": 0}
    tmp = Path(fx["root"]) / "random"
    for i in range(n_cli):
        what = rng.choice(["memory", "perturb", "evaluate", "train", "verify"])
        value = rng.choice(pool)
        if what == "train":
            flag = rng.choice(FC.TRAIN_OPTIONS)
            if flag == "--steps" and value.isdigit() and 10 < int(value) < 10**9:
                value = "3"
            argv = FC._with(FC._train(fx, str(tmp / f"t{i}"), flag), flag, value)
        elif what == "verify":
            flag = rng.choice(["--seed", "--out", "--only", "--budget"])
            base = {"--only": "best-parameterisation", "--out": str(tmp / f"v{i}"),
                    "--seed": "0", "--budget": "smoke"}
            base[flag] = value
            argv = ["verify", "-q"] + [x for k, v in base.items() for x in (k, v)]
        else:
            build, options = FC.COMMAND_OPTIONS[what]
            flag = rng.choice(options)
            v = str(tmp / f"o{i}{value}") if flag in ("--json", "--plot") and value.strip() \
                and "/" not in value else value
            argv = FC._with(build(fx), flag, v)
        rc, _, err, escaped = run_cli(argv)
        kind = classify_cli(argv, "any", rc, err, escaped)
        if kind == "clean" and rc == 2 and "training diverged" not in err:
            names = {flag, flag.lstrip("-"), flag.lstrip("-").replace("-", "_"),
                     flag.split(" ")[-1].split("=")[0]}
            if not any(nm and nm in err for nm in names) and not (value.strip()
                                                                 and value.strip()[:30] in err):
                kind = "unnamed"
        counts["tried"] += 1
        counts["cli:" + kind] = counts.get("cli:" + kind, 0) + 1
        if verbose and kind != "clean":
            print(f"{kind:10s} {argv}: rc={rc} {(escaped or err).strip()[:300]}")
    calls = FA._calls()
    import numpy as np

    api_pool = [None, True, -1, 0, 3, 2**40, -2**40, float("nan"), float("inf"), -0.5, 1e300,
                "", "nosuch", "cpu", [1.0, 2.0], [[1.0], [1.0, 2.0]], {"a": 1}, object(),
                np.zeros((2, 3)), np.array([np.nan]), np.zeros(0), 1 + 2j]
    for _ in range(n_api):
        name = rng.choice(sorted(calls))
        fn, kwargs = calls[name]
        arg = rng.choice(sorted(kwargs))
        value = rng.choice(api_pool)
        outcome, text = run_api(lambda: fn(**{**kwargs, arg: value}))
        kind = "traceback" if outcome == "raised-other" else "clean"
        counts["tried"] += 1
        counts["api:" + kind] = counts.get("api:" + kind, 0) + 1
        if verbose and kind != "clean":
            print(f"{kind:10s} {name}({arg}={value!r}): {text[:300]}")
    return counts


if __name__ == "__main__":  # pragma: no cover
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--random-cli", type=int, default=0, help="random CLI cases too")
    ap.add_argument("--random-api", type=int, default=0, help="random API cases too")
    ns = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.path.insert(0, str(Path(__file__).parent))
    with tempfile.TemporaryDirectory() as d:
        os.chdir(d)  # relative output paths drawn by the cases land here, not in the checkout
        res = campaign(Path(d), verbose=True)
        print("named cases:", res["counts"])
        ok = set(res["counts"]) <= {"tried", "clean"}
        if ns.random_cli or ns.random_api:
            # random values: keep every accepted size small (the documented cap)
            os.environ.setdefault("RNNMEM_MAX_BYTES", str(256 * 2**20))
            fx = make_fixtures(Path(d) / "r")
            rc = random_phase(fx, ns.random_cli, ns.random_api)
            print("random cases:", rc)
            ok = ok and all(k == "tried" or k.endswith(":clean") for k in rc)
    sys.exit(0 if ok else 1)
