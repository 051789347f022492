"""``rnnmem memory/perturb --model SPEC --weights``: the researcher's own model on the
command line (issue 12); bad input is one line and exit status 2."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import rnnmem
from rnnmem.cli import main
from rnnmem.numerics import tolerance

PNG = b"\x89PNG\r\n\x1a\n"
MODEL_PY = """
import torch


class Net(torch.nn.Module):
    def __init__(self, hidden=6):
        super().__init__()
        self.rnn = torch.nn.GRU(1, hidden, batch_first=True)
        self.head = torch.nn.Linear(hidden, 1)

    def forward(self, x):
        return self.head(self.rnn(x)[0])


def make_rnn(hidden=5):
    return torch.nn.RNN(1, hidden, batch_first=True)


class Broken(torch.nn.Module):
    def __init__(self):
        raise ValueError("no")
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("own")
    (root / "mymodel.py").write_text(textwrap.dedent(MODEL_PY))
    torch.manual_seed(0)
    import importlib.util

    spec = importlib.util.spec_from_file_location("mymodel_for_weights", root / "mymodel.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    net = mod.Net(hidden=6).double()
    torch.save(net.state_dict(), root / "w.pt")
    from safetensors.torch import save_file

    save_file(net.state_dict(), str(root / "w.safetensors"))
    torch.save({"code": print}, root / "pickled.pt")  # a pickled global: must be refused
    return {"root": root, "file": root / "mymodel.py", "net": net}


def _err(capsys, argv, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    for n in needles:
        assert n in err, err


def test_memory_of_a_file_model_with_weights_plot_and_json(files, capsys, tmp_path):
    out, png = tmp_path / "m.json", tmp_path / "m.png"
    argv = ["memory", "--model", f"{files['file']}:Net", "--weights", str(files["root"] /
            "w.pt"), "--model-arg", "hidden=6", "--t-max", "20", "--n-points", "21",
            "--plot", str(png), "--json", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "Net" in text and "warm-up" in text and "checks:" in text
    assert png.read_bytes()[:8] == PNG
    d = json.loads(out.read_text())
    assert d["estimate"]["warmup_steps"] >= 0 and len(d["estimate"]["amplitude"]) == 21
    assert d["decay"]["parameter_name"] in ("rate", "exponent", None)
    # the same numbers as the API on the same weights (float64 weights kept)
    t = np.array(d["t"])
    api = rnnmem.memory_function(files["net"], t, dt=1.0)
    tol = tolerance("float64", n_ops=200, cond=100.0, scale=float(api.values.max()))
    assert tol.allclose(d["memory"], api.values)
    # safetensors weights give the same
    st = ["memory", "--model", f"{files['file']}:Net", "--weights",
          str(files["root"] / "w.safetensors"), "--t-max", "20", "--n-points", "21",
          "--json"]
    assert main(st) == 0
    assert tol.allclose(json.loads(capsys.readouterr().out)["memory"], d["memory"])


def test_memory_of_a_package_factory_with_layout_and_readout(files, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(files["root"]))
    argv = ["memory", "--model", "mymodel:make_rnn", "--model-arg", "hidden=3",
            "--readout", "0", "--t-max", "5", "--n-points", "6", "--json"]
    assert main(argv) == 0
    d = json.loads(capsys.readouterr().out)
    assert np.array(d["memory"]).shape == (6, 3)  # one memory per hidden unit
    argv = ["memory", "--model", f"{files['file']}:Net", "--readout", "head", "--t-max",
            "3", "--n-points", "4", "--no-check", "--json"]
    # head applied again to the 1-wide output: a readout that does not match
    _err(capsys, argv, "readout", "Linear")


def test_bad_user_model_input_is_one_line(files, capsys, tmp_path):
    f = files["file"]
    w = str(files["root"] / "w.pt")
    _err(capsys, ["memory", "--model", "nocolon"], "--model", "pkg.module:factory")
    _err(capsys, ["memory", "--model", f"{tmp_path}/none.py:Net"], "no such file")
    _err(capsys, ["memory", "--model", f"{f}:Nope"], "no callable 'Nope'")
    _err(capsys, ["memory", "--model", "no_such_pkg_xyz:f"], "cannot import")
    _err(capsys, ["memory", "--model", f"{f}:Broken"], "ValueError: no")
    _err(capsys, ["memory", "--model", f"{f}:Net", "--model-arg", "width=3"], "TypeError")
    _err(capsys, ["memory", "--model", f"{f}:Net", "--weights", w, "--model-arg",
                  "hidden=4"], "--weights", "does not fit Net", "size mismatch")
    _err(capsys, ["memory", "--model", f"{f}:Net", "--weights",
                  str(files["root"] / "pickled.pt")], "--weights", "weights_only",
         "torch.save(model)", "state_dict()")
    # files that are no state dict at all, each named for what it is
    good = Path(w).read_bytes()
    for name, content, why in (("empty.pt", b"", "empty (0 bytes)"),
                               ("notes.pt", b"hello\n", "not a torch file"),
                               ("half.pt", good[:len(good) // 2], "truncated or damaged")):
        (tmp_path / name).write_bytes(content)
        _err(capsys, ["memory", "--model", f"{f}:Net", "--weights", str(tmp_path / name)],
             "--weights", why)
    _err(capsys, ["memory", "--model", f"{f}:Net", "--input-dim", "3"], "input_dim=3")
    _err(capsys, ["memory", "--model", f"{f}:Net", "--readout", "tail"], "--readout")
    _err(capsys, ["memory", "--model", f"{f}:Net", "--amplitudes", "0,1"], "--amplitudes")
    _err(capsys, ["memory", "--model", f"{f}:Net", "--layout", "BDT"], "layout")
    _err(capsys, ["memory", "--model", f"{f}:Net", "--layout", "TBD"], "batch_first=True")
    _err(capsys, ["memory", "--weights", w], "CKPT or --model")
    _err(capsys, ["memory", str(w), "--model", f"{f}:Net"], "exactly one")


def test_perturb_a_file_model_on_a_task(files, capsys):
    base = ["perturb", "--model", f"{files['file']}:Net", "--weights",
            str(files["root"] / "w.pt"), "--task", "lf:exponential", "--task-arg",
            "n_samples=20", "--task-arg", "length=8", "--betas", "1e-3:1e-1:3",
            "--repeats", "2", "--method", "loop"]
    _err(capsys, base, "recurrent_parameters", "--params", "rnn.weight_hh_l0")
    assert main(base + ["--params", "rnn.weight_hh*", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    c = d["curves"][0]
    assert c["meta"]["parameters"] == ["rnn.weight_hh_l0"] and len(c["betas"]) == 3
    assert np.all(np.isfinite(c["samples"]))
    _err(capsys, base[:5], "--task")
    _err(capsys, ["perturb", "--params", "x*"], "checkpoint(s) CKPT or --model")
