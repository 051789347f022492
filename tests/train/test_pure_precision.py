"""precision='pure': parameters, optimizer state and arithmetic in float16/bfloat16."""

import pytest
import torch

from rnnmem.errors import InvalidParameterError
from rnnmem.models import load
from rnnmem.train import TrainConfig, train


def _cfg(tmp_path, dtype, **kw):
    return TrainConfig(model="stack_rnn", task="lang:dyck1",
                       model_kwargs={"width": 8, "stack_width": 4},
                       task_kwargs={"valid_size": 16}, steps=20, batch_size=8, dtype=dtype,
                       precision="pure", eval_every=10, checkpoint_every=10, device="cpu",
                       out_dir=str(tmp_path / dtype), **kw)


@pytest.mark.parametrize("dtype,kw", [("bfloat16", {}), ("float16", {"adam_eps": 1e-4})])
def test_pure_precision_keeps_parameters_in_dtype(tmp_path, dtype, kw):
    res = train(_cfg(tmp_path, dtype, **kw), progress=False)
    assert {p.dtype for p in res.model.parameters()} == {getattr(torch, dtype)}
    assert torch.isfinite(torch.tensor(res.best_loss))
    m = load(res.last_checkpoint)
    assert {p.dtype for p in m.parameters()} == {getattr(torch, dtype)}


def test_mixed_precision_keeps_float32_parameters(tmp_path):
    cfg = _cfg(tmp_path, "bfloat16").replace(precision="mixed")
    res = train(cfg, progress=False)
    assert {p.dtype for p in res.model.parameters()} == {torch.float32}


def test_float16_adamw_eps_that_underflows_is_refused(tmp_path):
    with pytest.raises(InvalidParameterError, match="adam_eps.*underflows in float16"):
        _cfg(tmp_path, "float16")
    # the same eps is fine where it does not apply
    _cfg(tmp_path, "bfloat16")
    _cfg(tmp_path, "float16", optimizer="sgd")


def test_bad_precision_name(tmp_path):
    with pytest.raises(InvalidParameterError, match="precision"):
        TrainConfig(model="rnn", task="lf:exponential", precision="half-ish")
