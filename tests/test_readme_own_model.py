"""The README section "Your own model" runs as written (under 25 lines)."""

import re
import warnings
from pathlib import Path

import numpy as np
import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def _snippet() -> str:
    text = README.read_text()
    section = text.split("## Your own model", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_own_model_snippet_runs(capsys):
    code = _snippet()
    assert len(code.strip().splitlines()) < 25
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)  # as a user runs it
    try:
        ns: dict = {}
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # e.g. gradients leaking into numpy
            exec(compile(code, str(README), "exec"), ns)
    finally:
        torch.set_default_dtype(old)
    out = capsys.readouterr().out
    assert out.split(",")[0] in ("exponential", "polynomial")  # a decay was found
    mem, curve = ns["mem"], ns["curve"]
    assert mem.values.shape == (20,) and np.all(np.isfinite(mem.values))
    assert all(v <= mem.check_rtol for v in mem.checks.values())
    assert curve.meta["parameters"] == ["rnn.weight_hh_l0"] and np.isfinite(curve.e0)
