"""Run: canonical form, JSON and TOML round trips, hash identity, named errors."""

import json
import os
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rnnmem.errors import InvalidParameterError
from rnnmem.experiments import RESULT_FORMAT, Run
from rnnmem.train import TrainConfig

from exp_helpers import tiny_run


def test_sections_and_views():
    run = tiny_run()
    d = run.to_dict()
    assert set(d) == {"seed", "model", "task", "train", "evaluate", "resources"}
    assert d["model"] == {"name": "rnn", "width": 3, "activation": "linear",
                          "recurrence": "diagonal"}
    assert run.model == "rnn" and run.task == "lf:exponential" and run.seed == 0
    assert isinstance(run.config, TrainConfig) and run.config.out_dir is None
    # every TrainConfig field except the ones a Run holds elsewhere is in "train"
    assert "lr" in d["train"] and "out_dir" not in d["train"] and "seed" not in d["train"]
    assert run.get("model.width") == 3 and run.get("train.lr") == 0.01


def test_json_round_trip_keeps_the_hash():
    run = tiny_run()
    back = Run.from_json(run.to_json())
    assert back == run and back.hash == run.hash


def test_toml_round_trip_keeps_the_hash():
    run = tiny_run(**{"train.grad_clip": 1.0, "evaluate.splits": ["valid"]})
    text = run.to_toml()
    back = Run.from_toml(text)
    assert back.hash == run.hash and back.to_dict() == run.to_dict()
    assert "grad_clip = 1.0" in text and "weight_decay" not in text  # defaults left out


@given(lr=st.floats(1e-5, 1.0), seed=st.integers(0, 2**31), width=st.integers(1, 64),
       steps=st.integers(1, 10**6))
def test_round_trips_property(lr, seed, width, steps):
    run = tiny_run(**{"train.lr": lr, "seed": seed, "model.width": width,
                      "train.steps": steps})
    assert Run.from_json(run.to_json()).hash == run.hash
    assert Run.from_toml(run.to_toml()).hash == run.hash


def test_hash_is_identity():
    run = tiny_run()
    assert len(run.hash) == 64 and run.short == run.hash[:12]
    # filled-in defaults and integer-valued floats are the same run
    assert tiny_run(**{"train.lr": 1}).hash == tiny_run(**{"train.lr": 1.0}).hash
    explicit = run.to_dict()
    explicit["evaluate"]["perturbation"] = {"n_betas": 3, "repeats": 2, "n_eval": 16,
                                            "scope": "recurrent", "norm": "spectral"}
    assert Run.from_dict(explicit).hash == run.hash
    # resources are not part of the identity; everything else is
    assert tiny_run(**{"resources.num_cpus": 2}).hash == run.hash
    for change in ({"seed": 1}, {"train.lr": 0.02}, {"model.width": 4},
                   {"task.length": 13}, {"evaluate.perturbation.repeats": 3}):
        assert tiny_run(**change).hash != run.hash, change
    assert run.identity()["result_format"] == RESULT_FORMAT


def test_hash_is_the_same_in_another_process():
    run = tiny_run()
    code = ("import sys; from rnnmem.experiments import Run; "
            "print(Run.from_json(sys.stdin.read()).hash)")
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    out = subprocess.run([sys.executable, "-c", code], input=run.to_json(), text=True,
                         capture_output=True, env=env, timeout=120, check=True)
    assert out.stdout.strip() == run.hash


def test_hash_covers_the_canonical_json():
    import hashlib

    run = tiny_run()
    text = json.dumps(run.identity(), sort_keys=True, separators=(",", ":"))
    assert hashlib.sha256(text.encode()).hexdigest() == run.hash


@pytest.mark.parametrize("change, named", [
    ({"train": {"lrr": 0.1}}, "train.lrr"),
    ({"train": {"lr": -1.0}}, "train.lr"),
    ({"evaluate": {"perturbation": {"repeat": 2}}}, "evaluate.perturbation.repeat"),
    ({"evaluate": {"perturbation": {"betas": [0.1, 0.01]}}}, "evaluate.perturbation.betas"),
    ({"resources": {"num_gpus": -1}}, "resources.num_gpus"),
    ({"seed": -3}, "seed"),
    ({"extra": 1}, "extra"),
    ({"model": {"width": 3}}, "model.name"),
    ({"model": {"name": "rnn", "dtype": "float32"}}, "model"),
])
def test_bad_fields_are_named(change, named):
    d = tiny_run().to_dict()
    d.update(change)
    with pytest.raises(InvalidParameterError) as info:
        Run.from_dict(d)
    assert str(info.value).startswith(named + ":"), str(info.value)
    assert info.value.field == named


def test_none_option_cannot_go_to_toml():
    run = tiny_run(**{"model.decay_range": None})
    with pytest.raises(InvalidParameterError, match="model.decay_range"):
        run.to_toml()


def test_the_code_is_part_of_the_identity(monkeypatch):
    from rnnmem.experiments import code_digest

    monkeypatch.delenv("RNNMEM_RUN_CODE", raising=False)
    run = tiny_run()
    assert run.identity()["code"] == code_digest()
    assert code_digest().startswith("sha256:")
    before = run.hash
    monkeypatch.setenv("RNNMEM_RUN_CODE", "my-build")
    assert code_digest() == "my-build" and tiny_run().hash != before


def test_the_code_digest_follows_the_numerics_sources_only(tmp_path):
    """Sources that compute a run (models, C kernels, ...) change the digest, by content
    and by name; the command line, proofs_check and testing do not."""
    from rnnmem.experiments.run import _digest_of

    pkg = tmp_path / "rnnmem"
    for rel in ("models/a.py", "_native/k.c", "proofs_check/claims.py", "commands/x.py",
                "cli.py", "testing/s.py", "README.txt"):
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text("x = 1\n")
    base = _digest_of(pkg)
    assert _digest_of(pkg) == base
    for rel in ("proofs_check/claims.py", "commands/x.py", "cli.py", "testing/s.py",
                "README.txt"):
        (pkg / rel).write_text("x = 2\n")
        assert _digest_of(pkg) == base, rel
    for rel in ("models/a.py", "_native/k.c"):
        (pkg / rel).write_text("x = 2\n")
        changed = _digest_of(pkg)
        assert changed != base, rel
        base = changed
    (pkg / "models/a.py").rename(pkg / "models/b.py")
    assert _digest_of(pkg) != base
