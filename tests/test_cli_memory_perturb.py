"""``rnnmem memory`` and ``rnnmem perturb``: results, JSON, plots, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from rnnmem.cli import main
from rnnmem.models import build_model, load, save_checkpoint
from rnnmem.numerics import memory_function, tolerance
from rnnmem.theory import TARGETS
from rnnmem.train import TrainConfig, train
from rnnmem.train.perturb import eval_set_from_checkpoint

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    out = {}
    for key, model, task, mk in (
            ("diag", "diagonal_ssm", "lf:polynomial", {"width": 4}),
            ("rnn", "rnn", "lf:exponential", {"width": 4, "activation": "tanh"})):
        cfg = TrainConfig(model=model, task=task, task_kwargs={"n_samples": 30, "length": 12},
                          model_kwargs=mk, steps=2, eval_every=2, checkpoint_every=2,
                          batch_size=8, dtype="float64", device="cpu",
                          out_dir=str(root / key))
        train(cfg, progress=False)
        out[key] = root / key / "last.pt"
    for m in (2, 3, 4):  # untrained, without training state: need --task
        out[f"bare{m}"] = save_checkpoint(root / f"bare{m}.pt", build_model(
            "diagonal_ssm", width=m, dtype="float64", device="cpu", seed=m))
    (root / "corrupt.pt").write_bytes(b"not a checkpoint")
    out["corrupt"] = root / "corrupt.pt"
    out["root"] = root
    return out


def _json(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def _error(capsys, argv, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    for n in needles:
        assert n in err, err
    return err


# ----------------------------------------------------------------------------- memory
def test_memory_exact_with_the_training_target(runs, capsys):
    d = _json(capsys, ["memory", str(runs["diag"]), "--n-points", "25", "--json"])
    t = np.array(d["t"])
    assert d["method"] == "exact" and t.size == 25 and t[-1] == 12.0  # length x dt
    model = load(runs["diag"])
    assert tolerance("float64", n_ops=4).allclose(d["memory"], model.memory_function(t))
    assert d["decay"]["kind"] in ("exponential", "polynomial", "none")
    for key in ("rate", "r2_exp", "r2_pol", "tail_start"):
        assert key in d["decay"]
    tg = d["target"]
    assert tg["name"] == "polynomial" and tg["from"] == "checkpoint"
    assert tolerance("float64").allclose(tg["memory"], TARGETS["polynomial"].memory(t))
    assert tg["max_abs_diff"] == pytest.approx(
        np.max(np.abs(np.array(d["memory"]) - tg["memory"])))


def test_memory_black_box_and_option_target(runs, capsys, tmp_path):
    argv = ["memory", str(runs["rnn"]), "--t-max", "6", "--n-points", "7", "--target",
            "two_parts", "--json", str(tmp_path / "m.json"), "--plot", str(tmp_path / "m.png")]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "black-box" in text and "two_parts" in text
    d = json.loads((tmp_path / "m.json").read_text())
    assert d["method"] == "black-box" and d["target"]["from"] == "option"
    t = np.array(d["t"])
    model = load(runs["rnn"])
    direct = memory_function(model.as_system(), t, dt=model.dt, input_dim=1)
    assert tolerance("float64", n_ops=7).allclose(d["memory"], direct)
    assert tolerance("float64").allclose(d["target"]["memory"], TARGETS["two_parts"].memory(t))
    assert (tmp_path / "m.png").read_bytes()[:8] == PNG


def test_memory_black_box_forced_on_a_linear_model(runs, capsys):
    d = _json(capsys, ["memory", str(runs["diag"]), "--black-box", "--n-points", "5", "--json"])
    assert d["method"] == "black-box"
    model = load(runs["diag"])
    t = np.array(d["t"])
    assert tolerance("float64", n_ops=12).allclose(
        d["memory"], model.memory_function(t, exact=False))


def test_memory_errors(runs, capsys):
    _error(capsys, ["memory", str(runs["root"] / "missing.pt")], "does not exist")
    _error(capsys, ["memory", str(runs["corrupt"])], "cannot read checkpoint")
    _error(capsys, ["memory", str(runs["diag"]), "--t-max", "0"], "--t-max")
    _error(capsys, ["memory", str(runs["diag"]), "--t-max", "abc"], "--t-max")
    _error(capsys, ["memory", str(runs["diag"]), "--n-points", "1"], "--n-points")
    _error(capsys, ["memory", str(runs["diag"]), "--target", "nope"], "unknown target")


def test_unknown_model_in_checkpoint(runs, capsys):
    import torch

    obj = torch.load(runs["bare2"], weights_only=True)
    obj["model"] = "no_such_model"
    from rnnmem.models.registry import content_digest

    obj["sha256"] = content_digest(obj)  # a well-formed checkpoint of an unknown model
    path = runs["root"] / "unknown_model.pt"
    torch.save(obj, path)
    _error(capsys, ["memory", str(path)], "unknown model")


# ----------------------------------------------------------------------------- perturb
def test_perturb_json_and_plot(runs, capsys, tmp_path):
    argv = ["perturb", str(runs["diag"]), "--betas", "1e-3:1:4", "--repeats", "3",
            "--json", "--plot", str(tmp_path / "p.png")]
    d = _json(capsys, argv)
    (c,) = d["curves"]
    assert c["width"] == 4 and c["task"]["task"] == "lf:polynomial"
    assert len(c["betas"]) == 4 and np.array(c["samples"]).shape == (4, 3)
    assert c["meta"]["scope"] == "recurrent" and c["meta"]["norm"] == "spectral"
    model = load(runs["diag"])
    es, _ = eval_set_from_checkpoint(runs["diag"], model)
    assert c["e0"] == pytest.approx(es(model))
    env = np.array(c["envelope"], dtype=float)
    assert np.all(np.diff(env) >= 0) and env[0] >= c["e0"]
    scale = es.target_scale()
    assert c["meta"]["target_scale"] == pytest.approx(scale)
    b = c["blowup"]
    assert b["level"] == pytest.approx(scale)  # --level-factor 1: the target's |y|^2
    first = np.nonzero(env >= b["level"])[0]
    assert (b["censored"] == "right") == (first.size == 0)
    assert c["training"] == "ok"
    assert d["verdict"] is None
    assert (tmp_path / "p.png").read_bytes()[:8] == PNG


def test_perturb_text_summary(runs, capsys):
    assert main(["perturb", str(runs["rnn"]), "--betas", "0.01,0.1", "--repeats", "2",
                 "--scope", "all", "--norm", "max"]) == 0
    out = capsys.readouterr().out
    assert "E(0) =" in out and "blow-up radius" in out and "all weights" in out


def test_perturb_verdict_across_widths(runs, capsys):
    argv = ["perturb", *(str(runs[f"bare{m}"]) for m in (2, 3, 4)), "--task",
            "lf:exponential", "--task-arg", "n_samples=10", "--task-arg", "length=6",
            "--betas", "1e-2:1:3", "--repeats", "2", "--json", "--plot",
            str(runs["root"] / "verdict.png")]
    d = _json(capsys, argv)
    assert (runs["root"] / "verdict.png").read_bytes()[:8] == PNG
    assert [c["width"] for c in d["curves"]] == [2, 3, 4]
    assert all(c["task"]["from"] == "option" for c in d["curves"])
    v = d["verdict"]
    assert v["verdict"] in ("stable", "unstable", "inconclusive") and v["widths"] == [2, 3, 4]
    assert v["ci_method"] == "bootstrap" and len(v["intersections"]) == 2
    assert v["training"] == {"2": "ok", "3": "ok", "4": "ok"}
    assert v["level"] == pytest.approx(d["curves"][0]["meta"]["target_scale"])


def test_perturb_original_protocol_options(runs, capsys, tmp_path):
    """The original's protocol: relu model in its evaluation form, every parameter,
    inf-norm, shared Gaussian directions, the original grid; and the Sept.-2023 -beta rule."""
    cfg = TrainConfig(model="com_diagonal_rnn", task="lf:polynomial",
                      task_kwargs={"n_samples": 30, "length": 10},
                      model_kwargs={"width": 3}, steps=2, eval_every=1, batch_size=8,
                      dtype="float64", device="cpu", out_dir=str(tmp_path / "com"),
                      stop_below=1e-12)  # a rule that cannot hold in 2 steps
    train(cfg, progress=False)
    ck = str(tmp_path / "com" / "last.pt")
    d = _json(capsys, ["perturb", ck, "--betas", "original", "--repeats", "2", "--scope",
                       "all", "--norm", "inf", "--directions", "shared", "--evaluation-form",
                       "--split", "test", "--json"])
    (c,) = d["curves"]
    assert len(c["betas"]) == 21 and c["meta"]["shared_directions"]
    assert c["meta"]["evaluation_form"] and c["meta"]["norm"] == "inf"
    assert c["task"]["split"] == "test"
    assert c["training"].startswith("rule failed")
    d = _json(capsys, ["perturb", ck, "--betas", "0.01,0.1", "--repeats", "2", "--scope",
                       "all", "--norm", "max", "--direction-for", "w=deterministic",
                       "--json"])
    assert d["curves"][0]["meta"]["distributions"]["w"] == "deterministic"
    assert d["curves"][0]["meta"]["distributions"]["decoder.bias"] == "gaussian"
    # a verdict over checkpoints whose rule failed is reported as such
    paths = []
    for m in (2, 3, 4):
        out = tmp_path / f"w{m}"
        train(cfg.replace(model_kwargs={"width": m}, out_dir=str(out)), progress=False)
        paths.append(str(out / "last.pt"))
    d = _json(capsys, ["perturb", *paths, "--betas", "0.01,0.1", "--repeats", "2", "--json"])
    assert d["verdict"]["verdict"] == "training_failed"


def test_perturb_errors(runs, capsys):
    ck = str(runs["diag"])
    _error(capsys, ["perturb", ck, "--betas", "0:1:3"], "betas")
    _error(capsys, ["perturb", ck, "--betas", "1,0.5"], "increasing")
    _error(capsys, ["perturb", ck, "--repeats", "0"], "--repeats")
    _error(capsys, ["perturb", ck, "--scope", "readout"], "unknown perturbation scope")
    _error(capsys, ["perturb", ck, "--norm", "nuclear"], "unknown perturbation norm")
    _error(capsys, ["perturb", ck, "--task-arg", "length=3"], "--task")
    _error(capsys, ["perturb", str(runs["bare2"])], "task")
    _error(capsys, ["perturb", str(runs["corrupt"])], "cannot read checkpoint")
    _error(capsys, ["perturb", ck, "--distribution", "deterministic", "--repeats", "3"],
           "--distribution deterministic", "--repeats 3")
    _error(capsys, ["perturb", ck, "--direction-for", "nothing=gaussian"],
           "distribution_by_name['nothing']", "perturbed parameters")
    _error(capsys, ["perturb", ck, "--direction-for", "w"], "--direction-for")
    _error(capsys, ["perturb", ck, "--directions", "both"], "--directions")
    _error(capsys, ["perturb", ck, "--level-factor", "0"], "--level-factor")


def test_subprocess_error_is_one_line(runs):
    r = subprocess.run([sys.executable, "-m", "rnnmem", "perturb",
                        str(runs["root"] / "missing.pt")], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "does not exist" in r.stderr


def test_perturb_plot_marks_blowups_and_intersections(tmp_path):
    from rnnmem.commands import perturb as P
    from rnnmem.numerics.perturbation import (PerturbationCurve, blowup_radius,
                                              blowup_verdict, original_betas)

    b = original_betas()
    curves = {m: PerturbationCurve.from_samples(b, (1 / m + m * b**2)[:, None], 1 / m,
                                                {"target_scale": 1.0}) for m in (2, 4, 8)}
    v = blowup_verdict(curves, n_boot=100)
    assert {i.kind for i in v.intersections} == {"crossing"}
    res = {"curves": [{"model": "m", "width": m, "curve": c, "blowup": {
        "beta": blowup_radius(c, 1.0).beta, "level": 1.0, "censored": "none"}}
        for m, c in curves.items()], "verdict": v}
    P.plot(res, tmp_path / "x.png")
    assert (tmp_path / "x.png").read_bytes()[:8] == PNG
    assert "intersections of consecutive curves" in P.summary({**res, "curves": []})
