"""The training loop: learning, early stop, bitwise resume, divergence, checkpoints, config."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from rnnmem.errors import (CheckpointError, RunDirectoryConflictError, InvalidParameterError, NonFiniteError, ShapeError,
                           TrainingDivergedError, UnknownNameError)
from rnnmem.models.base import RecurrentModel, check_input
from rnnmem.models.recurrence import linear_recurrence
from rnnmem.models.registry import MODELS, load, load_checkpoint, register_model
from rnnmem.numerics.tolerances import tolerance
from rnnmem.train import (ArrayRegressionTask, LRSchedule, TrainConfig, TrainTask, build_task,
                          load_train_state, temporal_weights, train, weighted_mse)
from rnnmem.train.loop import _rng_state, _set_rng_state
from rnnmem.train.tasks import TASK_BUILDERS, register_task

# ------------------------------------------------------------------ a tiny model and task
TINY = "_test_tiny_rnn"


class TinyRNN(RecurrentModel):
    """Diagonal linear RNN h_t = a*h_{t-1} + U x_t, y_t = C h_t (optional input dropout).

    The parts sit in submodules named as rnnmem.models.freezing expects: ``memory.a``,
    ``controller.U``, ``classifier.C``.
    """

    def __init__(self, state_dim=3, input_dim=1, output_dim=1, dropout=0.0, seed=None,
                 dt=1.0, time="discrete", dtype="float32", device="auto"):
        super().__init__(input_dim=input_dim, output_dim=output_dim, dt=dt, time=time, dtype=dtype,
                         device=device, config=dict(state_dim=state_dim, dropout=dropout,
                                                    seed=seed))
        g = torch.Generator().manual_seed(0 if seed is None else seed)
        fk = self.factory
        self.dropout = dropout
        self.memory, self.controller, self.classifier = nn.Module(), nn.Module(), nn.Module()
        self.memory.a = nn.Parameter(torch.linspace(0.2, 0.8, state_dim).to(**fk))  # (N,)
        self.controller.U = nn.Parameter(torch.randn(state_dim, input_dim, generator=g).to(**fk))
        self.classifier.C = nn.Parameter(
            (torch.randn(output_dim, state_dim, generator=g) / 3).to(**fk))  # (p, N)

    def forward(self, x):
        x = check_input(x, self.input_dim).to(self.dtype)
        u = x @ self.controller.U.T  # (B, T, N)
        if self.training and self.dropout:
            u = F.dropout(u, self.dropout)  # uses the global torch RNG
        return linear_recurrence(self.memory.a, u) @ self.classifier.C.T  # (B, T, p)


if TINY not in MODELS:
    register_model(TINY)(TinyRNN)
else:  # re-imported (e.g. pytest --lf): keep the first registration
    TinyRNN = MODELS[TINY]  # noqa: F811


def _toeplitz(T, decay):
    rho = decay ** np.arange(T)
    return np.array([[rho[t - s] if t >= s else 0.0 for s in range(T)] for t in range(T)])


class StreamTask(TrainTask):
    """Endless stream: x ~ N(0,1) from the loop's generator, y = exponential-memory filter."""

    name = "stream"
    supports_temporal_weighting = True

    def __init__(self, T=10, decay=0.6, nan_at=None):
        super().__init__()
        self.T, self.nan_at = T, nan_at
        self.K = torch.as_tensor(0.5 * _toeplitz(T, decay))  # (T, T)

    def _pair(self, gen, n):
        x = torch.randn(n, self.T, 1, generator=gen, dtype=torch.float64)  # (n, T, 1)
        y = torch.einsum("ts,bsd->btd", self.K, x)
        return x.to(self.device, self.dtype), y.to(self.device, self.dtype)

    def batch(self, split, step, generator):
        x, y = self._pair(generator, self.batch_size)
        if self.nan_at is not None and step == self.nan_at:
            y = y.clone()
            y[0, 0, 0] = float("nan")
        return x, y, None

    def eval_batches(self, split):
        g = torch.Generator().manual_seed(1234)
        for _ in range(2):
            yield (*self._pair(g, self.batch_size), None)

    def loss(self, outputs, targets, mask=None):
        return weighted_mse(outputs, targets, mask, self.temporal_weighting)


@register_task("_test_stream")
def _stream_builder(**kw):
    return StreamTask(**kw)


def cfg(tmp_path=None, **kw):
    base = dict(model=TINY, task="_test_stream", steps=30, batch_size=8, lr=0.02,
                dtype="float64", device="cpu", seed=3, eval_every=10, checkpoint_every=7,
                out_dir=None if tmp_path is None else str(tmp_path))
    base.update(kw)
    return TrainConfig(**base)


def params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def strip_time(history):
    return [{k: v for k, v in r.items() if k != "time_s"} for r in history]


# ------------------------------------------------------------------ learning
def test_tiny_model_learns_and_loss_decreases(tmp_path):
    c = cfg(tmp_path, steps=60, eval_every=20, lr=0.03)
    task = build_task("_test_stream")
    task.configure(dtype=torch.float64, batch_size=8)
    untrained = TinyRNN(dtype="float64", device="cpu", seed=3)
    loss0 = task.evaluate(untrained, "valid")["loss"]
    r = train(c, progress=False)
    losses = [h["valid_loss"] for h in r.history]
    assert r.stopped == "completed" and r.steps == 60
    assert [h["step"] for h in r.history] == [20, 40, 60]
    assert losses[-1] < 0.1 * loss0
    assert all(b <= a for a, b in zip(losses, losses[1:]))
    assert r.final_metrics["valid_loss"] == losses[-1]
    # metrics files hold the same history
    rows = json.loads((tmp_path / "metrics.json").read_text())
    assert [row["valid_loss"] for row in rows] == losses
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines[0].split(",")[0] == "step" and len(lines) == 1 + len(losses)
    assert json.loads((tmp_path / "config.json").read_text()) == c.to_dict()
    # best.pt holds the lowest validation loss
    _, st_best = load_train_state(tmp_path / "best.pt")
    assert st_best["best_loss"] == min(losses)


def test_threads_apply_during_the_run_and_are_restored():
    before = torch.get_num_threads()
    want = 1 if before != 1 else 2
    seen = []
    c = cfg(steps=3, eval_every=0, checkpoint_every=0, threads=want)
    r = train(c, progress=False,
              callback=lambda s, loss: seen.append(torch.get_num_threads()) and False)
    assert seen == [want] * 3 and torch.get_num_threads() == before
    # the same run without the setting gives the same numbers on one thread's worth of
    # work (the tiny model's reductions are too small to be split)
    r0 = train(c.replace(threads=None), progress=False)
    assert r.final_metrics["train_loss"] == r0.final_metrics["train_loss"]
    assert torch.get_num_threads() == before


def test_early_stop_at_target_loss():
    c = cfg(steps=400, lr=0.03, eval_every=0, checkpoint_every=0)
    full = train(c, progress=False)
    target = full.history[-1]["train_loss"] * 20  # reachable, well before the end
    seen = []
    r = train(c.replace(target_loss=target), progress=False,
              callback=lambda s, loss: seen.append(loss) and False)
    assert r.stopped == "target_loss" and r.steps < 400
    assert len(seen) == r.steps - 1 and all(v > target for v in seen)  # not earlier
    last = []  # the same run without a target reaches loss <= target at that very step
    train(c.replace(steps=r.steps), progress=False, callback=lambda s, loss: last.append(loss))
    assert last[:-1] == seen and last[-1] <= target
    assert r.history[-1]["step"] == r.steps


def test_array_regression_with_real_diagonal_ssm(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 12, 1))
    Y = np.einsum("ts,bsd->btd", 0.3 * _toeplitz(12, 0.7), X)
    task = ArrayRegressionTask(X, Y, valid_fraction=0.25)
    c = cfg(tmp_path, model="diagonal_ssm", task="arrays", steps=60, lr=0.03, eval_every=30,
            model_kwargs=dict(width=3, dt=1.0))
    r = train(c, task=task, progress=False)
    assert r.history[-1]["valid_rel_mse"] < r.history[0]["valid_rel_mse"] < 1.0
    m = load(r.last_checkpoint)
    assert torch.equal(m.w, r.model.w.detach().cpu())  # a DiagonalSSM


# ------------------------------------------------------------------ resume
@pytest.mark.parametrize("opt", [
    dict(optimizer="adamw", schedule="cosine", warmup=4, weight_decay=0.01, grad_clip=0.5),
    dict(optimizer="sgd", momentum=0.9, schedule="plateau", plateau_patience=0, lr=0.05,
         plateau_threshold=0.5),
])
def test_resume_is_bitwise_identical(tmp_path, opt):
    c = dict(steps=40, model_kwargs={"dropout": 0.2}, temporal_weighting=1.5, **opt)
    a = train(cfg(tmp_path / "a", **c), progress=False)
    # interrupted run: stop at 17 (not a checkpoint or eval step), then resume
    b1 = train(cfg(tmp_path / "b", **c), progress=False, callback=lambda s, _: s == 17)
    assert b1.stopped == "callback" and b1.steps == 17
    b = train(cfg(tmp_path / "b", **c), progress=False, resume=True)
    # a crash (exception at step 19) loses only the steps after the last checkpoint (14)

    def crash(s, _):
        if s == 19:
            raise RuntimeError("crash")
    with pytest.raises(RuntimeError):
        train(cfg(tmp_path / "c", **c), progress=False, callback=crash)
    assert load_train_state(tmp_path / "c" / "last.pt")[1]["step"] == 14
    cc = train(cfg(tmp_path / "c", **c), progress=False, resume=True)
    for other in (b, cc):
        assert other.steps == a.steps == 40
        pa, po = params(a.model), params(other.model)
        assert all(torch.equal(pa[k], po[k]) for k in pa)
        assert strip_time(other.history) == strip_time(a.history)
        rows = json.loads((tmp_path / ("b" if other is b else "c") / "metrics.json").read_text())
        assert strip_time(rows) == strip_time(a.history)
    if opt["schedule"] == "plateau":  # the plateau state was really exercised
        assert a.history[-1]["lr"] < opt["lr"]


def test_sigint_stops_cleanly_and_resume_matches(tmp_path):
    c = cfg(tmp_path / "a")
    a = train(c, progress=False)
    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN in a
    # background job of a non-interactive shell: training restores whichever it was

    def interrupt(s, _):
        if s == 12:
            os.kill(os.getpid(), signal.SIGINT)
        return False
    b1 = train(cfg(tmp_path / "b"), progress=False, callback=interrupt)
    assert b1.stopped == "interrupted" and b1.steps == 12
    assert load_train_state(tmp_path / "b" / "last.pt")[1]["step"] == 12
    assert signal.getsignal(signal.SIGINT) is before
    b = train(cfg(tmp_path / "b"), progress=False, resume=True)
    assert all(torch.equal(v, params(b.model)[k]) for k, v in params(a.model).items())


def test_resume_rejects_changed_config_and_corrupt_checkpoint(tmp_path):
    train(cfg(tmp_path, steps=8), progress=False)
    with pytest.raises(RunDirectoryConflictError, match="lr"):
        train(cfg(tmp_path, steps=8, lr=0.5), progress=False, resume=True)
    r = train(cfg(tmp_path, steps=12), progress=False, resume=True)  # steps may change
    assert r.steps == 12
    (tmp_path / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        train(cfg(tmp_path, steps=12), progress=False, resume=True)
    with pytest.raises(InvalidParameterError, match="out_dir"):
        train(cfg(None), resume=True)


def test_rng_state_round_trip():
    gen = torch.Generator().manual_seed(5)
    state = _rng_state(gen)
    draws = (np.random.rand(3), torch.rand(3), torch.rand(3, generator=gen),
             __import__("random").random())
    _set_rng_state(state, gen)
    again = (np.random.rand(3), torch.rand(3), torch.rand(3, generator=gen),
             __import__("random").random())
    assert np.array_equal(draws[0], again[0]) and torch.equal(draws[1], again[1])
    assert torch.equal(draws[2], again[2]) and draws[3] == again[3]


# ------------------------------------------------------------------ divergence
def test_injected_nan_keeps_last_good_checkpoint(tmp_path):
    c = cfg(tmp_path, steps=30)
    good = train(cfg(tmp_path / "ref", steps=14), progress=False)  # the same run up to 14
    task = StreamTask(nan_at=16)
    with pytest.raises(TrainingDivergedError) as info:
        train(c, task=task, progress=False)
    err = info.value
    assert err.step == 16 and math.isnan(err.loss)
    assert err.checkpoint == tmp_path / "last.pt" and str(err.checkpoint) in str(err)
    _, st = load_train_state(err.checkpoint)
    assert st["step"] == 14  # checkpoint_every=7
    m = load(err.checkpoint)
    assert all(torch.isfinite(p).all() for p in m.parameters())
    ref = params(good.model)
    assert all(torch.equal(v, ref[k]) for k, v in m.state_dict().items())


def test_huge_learning_rate_diverges_without_writing_nan_weights(tmp_path):
    c = cfg(tmp_path, steps=50, optimizer="sgd", lr=1e10, checkpoint_every=1, eval_every=0)
    with pytest.raises(TrainingDivergedError) as info:
        train(c, progress=False)
    assert "diverged" in str(info.value) and info.value.step < 50
    if info.value.checkpoint is not None:
        m = load(info.value.checkpoint)
        assert all(torch.isfinite(p).all() for p in m.parameters())


# ------------------------------------------------------------------ checkpoints
def test_checkpoints_load_with_weights_only_and_tampering_is_detected(tmp_path):
    r = train(cfg(tmp_path, steps=8), progress=False)
    obj = torch.load(r.last_checkpoint, weights_only=True)  # plain containers only
    st = obj["extra"]["train"]
    assert st["step"] == 8 and isinstance(st["optimizer"], dict)
    assert TrainConfig.from_json(st["config"]) == r.config
    raw = r.last_checkpoint.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "trunc.pt")

    class Evil:  # a pickled object that weights_only must refuse
        def __reduce__(self):
            return (print, ("pwned",))
    torch.save({"format": "rnnmem-checkpoint", "evil": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "evil.pt")
    with pytest.raises(CheckpointError):
        load_train_state(tmp_path / "evil.pt")
    with pytest.raises(CheckpointError):
        load_train_state(tmp_path / "missing.pt")


def test_no_out_dir_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = train(cfg(None, steps=5), progress=False)
    assert r.last_checkpoint is None and r.best_checkpoint is None
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ freezing, precision
@pytest.mark.parametrize("mode,frozen,trained", [
    ("memory", ["memory.a"], ["controller.U", "classifier.C"]),
    ("all_but_classifier", ["memory.a", "controller.U"], ["classifier.C"]),
])
def test_freeze_after_keeps_frozen_parameters_fixed(tmp_path, mode, frozen, trained):
    # AdamW with weight decay and momentum would still move a parameter whose gradient is
    # merely zero; the frozen ones must not move at all after step 5
    c = dict(steps=12, freeze=mode, freeze_after=5, weight_decay=0.1, checkpoint_every=4)
    model = TinyRNN(dtype="float64", device="cpu", seed=3)
    seen = {}
    r = train(cfg(tmp_path / "a", **c), model=model, progress=False,
              callback=lambda s, _: seen.__setitem__(s, params(model)))
    assert r.steps == 12
    for k in frozen:
        assert not torch.equal(seen[4][k], seen[5][k])  # the 5th update still trains it
        assert all(torch.equal(seen[5][k], seen[s][k]) for s in range(6, 13))
    for k in trained:
        assert not torch.equal(seen[11][k], seen[12][k])
    # resuming before and after the freeze reproduces the run bit for bit
    for stop in (3, 7):
        d = tmp_path / f"stop{stop}"
        train(cfg(d, **c), progress=False, callback=lambda s, _, stop=stop: s == stop)
        b = train(cfg(d, **c), progress=False, resume=True)
        assert all(torch.equal(v, params(b.model)[k]) for k, v in params(model).items())


def test_freeze_without_module_is_reported(monkeypatch):
    monkeypatch.setitem(sys.modules, "rnnmem.models.freezing", None)
    with pytest.raises(InvalidParameterError, match="freez"):
        train(cfg(None, steps=3, freeze="memory"), progress=False)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
def test_low_precision_runs_with_float32_parameters(dtype):
    r = train(cfg(None, steps=20, dtype=dtype, eval_every=10), progress=False)
    assert all(p.dtype == torch.float32 for p in r.model.parameters())
    assert r.history[-1]["valid_loss"] < r.history[0]["valid_loss"]


def test_given_model_must_match_dtype():
    with pytest.raises(InvalidParameterError, match="dtype"):
        train(cfg(None, steps=2, dtype="float64"), model=TinyRNN(dtype="float32", device="cpu"))


# ------------------------------------------------------------------ schedule
def test_lr_schedule_shapes():
    c = cfg(None, lr=1.0, min_lr=0.1, warmup=4, schedule="cosine", steps=24)
    s = LRSchedule(c, 24)
    lrs = [s.lr(i) for i in range(24)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    tol = tolerance("float64", n_ops=4)
    assert tol.allclose(lrs[4], 1.0) and tol.allclose(s.lr(24), 0.1)
    assert tol.allclose(s.lr(14), 0.55)  # half-way: (1 + 0.1) / 2
    assert all(b <= a for a, b in zip(lrs[3:], lrs[4:]))
    p = LRSchedule(c.replace(schedule="plateau", plateau_patience=1, plateau_factor=0.5), 24)
    for loss in (1.0, 1.0, 1.0, 0.5, 0.6, 0.6, 0.6, 0.6, 0.6):
        p.observe(loss)
    assert p.lr(10) == 0.125  # halved after the 3rd, 6th and 8th loss
    p.observe(0.6)
    p.observe(0.6)
    assert p.lr(10) == 0.1  # the next halving is capped at min_lr
    q = LRSchedule(c.replace(schedule="plateau", plateau_patience=1), 24)
    q.load_state_dict(p.state_dict())
    assert q.state_dict() == p.state_dict()


# ------------------------------------------------------------------ tasks
def test_temporal_weights_match_definition():
    T, p = 9, 2.0
    w = temporal_weights(T, p)
    direct = np.array([((t + 1) / (T + 1)) ** p for t in range(T)])
    direct = T * direct / direct.sum()
    assert tolerance("float64", n_ops=T).allclose(w.numpy(), direct)
    assert torch.equal(temporal_weights(T, 0.0), torch.ones(T))
    big = temporal_weights(50, 1e4)  # log-space: no overflow, no all-zero weights
    assert torch.isfinite(big).all() and float(big.sum()) == pytest.approx(50, rel=1e-12)
    with pytest.raises(InvalidParameterError):
        temporal_weights(T, -1.0)


@given(st.integers(1, 12), st.floats(0, 8), st.integers(1, 3))
def test_weighted_mse_properties(T, p, k):
    g = torch.Generator().manual_seed(T * 7 + k)
    o, y = torch.randn(2, T, k, generator=g), torch.randn(2, T, k, generator=g)
    tol = tolerance("float64", n_ops=2 * T * k)
    assert tol.allclose(float(weighted_mse(o, y, None, 0.0)), float(F.mse_loss(o, y)))
    w = temporal_weights(T, p)
    manual = ((o - y) * w[None, :, None]).square().mean()
    assert tol.allclose(float(weighted_mse(o, y, None, p)), float(manual))
    mask = torch.zeros(2, T, dtype=torch.bool)
    mask[:, -1] = True
    last = ((o - y)[:, -1] * w[-1]).square().mean()
    assert tol.allclose(float(weighted_mse(o, y, mask, p)), float(last))


def test_array_task_epochs_visit_every_sample_once():
    X = np.arange(10 * 3, dtype=float).reshape(10, 3)  # sample i has x[i, 0] = 3 i
    t = ArrayRegressionTask(X, X, valid_fraction=0.0)
    t.configure(batch_size=4, seed=1)
    assert t.steps_per_epoch == 3 and t.eval_splits == ("train",)
    for epoch in range(2):
        seen = torch.cat([t.batch("train", epoch * 3 + i, None)[0][:, 0, 0] for i in range(3)])
        assert sorted((seen / 3).long().tolist()) == list(range(10))
    e0 = [t.batch("train", i, None)[0] for i in range(3)]
    e1 = [t.batch("train", 3 + i, None)[0] for i in range(3)]
    assert not all(torch.equal(a, b) for a, b in zip(e0, e1))  # reshuffled
    assert torch.equal(t.batch("train", 4, None)[0], t.batch("train", 4, None)[0])


def test_array_task_rejects_bad_data():
    X = np.zeros((4, 5, 1))
    with pytest.raises(ShapeError):
        ArrayRegressionTask(X, np.zeros((4, 6, 1)))
    with pytest.raises(NonFiniteError):
        ArrayRegressionTask(X, np.full((4, 5, 1), np.nan))
    with pytest.raises(ShapeError):
        ArrayRegressionTask(np.zeros(4), np.zeros(4))
    with pytest.raises(InvalidParameterError):
        ArrayRegressionTask(X, X, valid_fraction=1.5)
    with pytest.raises(InvalidParameterError, match="temporal_weighting"):
        train(cfg(None, steps=2, temporal_weighting=1.0),
              task=_NoWeights(), progress=False)


class _NoWeights(StreamTask):
    supports_temporal_weighting = False


def test_unknown_task_and_model_names():
    with pytest.raises(UnknownNameError, match="_test_stream"):
        build_task("no_such_task")
    with pytest.raises(UnknownNameError, match=TINY):
        train(cfg(None, model="no_such_model", steps=2), progress=False)
    assert "npz" in TASK_BUILDERS


# ------------------------------------------------------------------ config
@pytest.mark.parametrize("field,value", [
    ("steps", 0), ("steps", 1.5), ("epochs", -1), ("batch_size", 0), ("lr", 0.0),
    ("lr", float("nan")), ("weight_decay", -1.0), ("momentum", 1.0), ("optimizer", "adam"),
    ("schedule", "step"), ("warmup", -1), ("grad_clip", 0.0), ("target_loss", float("inf")),
    ("dtype", "float8"), ("device", ""), ("seed", -1), ("temporal_weighting", -0.5),
    ("eval_every", -1), ("checkpoint_every", 1.0), ("freeze", "everything"),
    ("freeze_after", -2), ("bptt", 0), ("plateau_factor", 1.0), ("model", ""),
    ("model_kwargs", {"x": object()}), ("task_kwargs", [1, 2]), ("batch_size", True),
    ("model_kwargs", {"dtype": "float64"}), ("out_dir", ""), ("threads", 0),
    ("threads", 1.5),
])
def test_config_validation_names_the_field(field, value):
    with pytest.raises(InvalidParameterError, match=field):
        TrainConfig(**{"model": "m", "task": "t", field: value})


def test_config_steps_epochs_and_json():
    with pytest.raises(InvalidParameterError, match="steps"):
        TrainConfig(model="m", task="t", steps=3, epochs=2)
    c = TrainConfig(model="m", task="t", epochs=2, model_kwargs={"a": [1, 2], "b": {"c": 1.5}})
    assert c.total_steps(5) == 10
    with pytest.raises(InvalidParameterError, match="epochs"):
        c.total_steps(None)
    assert TrainConfig.from_json(c.to_json()) == c
    with pytest.raises(InvalidParameterError, match="bogus"):
        TrainConfig.from_dict({**c.to_dict(), "bogus": 1})
    with pytest.raises(InvalidParameterError, match="JSON"):
        TrainConfig.from_json("{")
    with pytest.raises(TypeError):
        c.model_kwargs["a"] = 3  # frozen all the way down


@given(st.fixed_dictionaries({
    "lr": st.floats(1e-6, 1.0), "batch_size": st.integers(1, 512),
    "schedule": st.sampled_from(["constant", "cosine", "plateau"]),
    "seed": st.integers(0, 2**31), "temporal_weighting": st.floats(0, 10),
    "grad_clip": st.none() | st.floats(0.01, 100),
    "model_kwargs": st.dictionaries(st.text(min_size=1, max_size=4),
                                    st.integers(-5, 5) | st.booleans() | st.text(max_size=3),
                                    max_size=3)}))
def test_config_json_round_trip(d):
    c = TrainConfig(model="m", task="t", **d)
    assert TrainConfig.from_json(c.to_json()) == c
    assert c.differences(TrainConfig.from_json(c.to_json())) == []


# ------------------------------------------------------------------ the real task families
def test_linear_functional_task_sets_model_dt():
    task = build_task("lf:exponential", n_samples=40, length=10, dt=0.5, valid_fraction=0.25)
    assert task.model_defaults()["dt"] == 0.5
    task.configure(batch_size=8, dtype=torch.float64)
    assert task.n("train") == 30 and task.n("valid") == 10 and task.steps_per_epoch == 4
    r = train(cfg(None, model="diagonal_ssm", task="lf:exponential", epochs=2, steps=None,
                  task_kwargs=dict(n_samples=40, length=10, dt=0.5),
                  model_kwargs=dict(width=2)), progress=False)
    assert r.model.dt == 0.5 and r.steps == 2 * 4
    with pytest.raises(UnknownNameError, match="lf:exponential"):
        build_task("lf:nope")


def test_language_task_losses_and_accuracy():
    ns = build_task("lang:dyck1", mode="next_symbol", lengths="2:6", valid_size=16)
    ns.configure(batch_size=8, dtype=torch.float64, seed=0)
    x, y, mask = ns.batch("train", 0, torch.Generator().manual_seed(0))
    assert x.shape[-1] == 2 and y.shape[-1] == 3 and mask.dtype == torch.bool
    assert torch.equal(x.sum(-1), torch.ones(x.shape[:2], dtype=x.dtype))  # one-hot
    perfect = 20.0 * (2 * y - 1)  # logits with the right sign everywhere
    m = ns.metrics(perfect, y, mask)
    assert m["accuracy"][0] == m["accuracy"][1] == x.shape[0]
    manual = F.binary_cross_entropy_with_logits(perfect.float(), y.float())
    assert float(ns.loss(perfect, y, mask)) == pytest.approx(float(manual), rel=1e-6)
    assert ns.metrics(-perfect, y, mask)["accuracy"][0] == 0
    rec = build_task("lang:anbn", mode="recognition", lengths="2:8", valid_size=16)
    rec.configure(batch_size=8, dtype=torch.float64, seed=0)
    x, y, _ = rec.batch("train", 0, torch.Generator().manual_seed(1))
    assert y.shape == (8,) and set(y.tolist()) <= {0.0, 1.0}
    one = (2 * y - 1)[:, None, None].expand(8, x.shape[1], 1) * 20  # (B, T, 1)
    two = torch.cat([-one, one], dim=-1)  # (B, T, 2): class-1 logit minus class-0 logit
    for out in (one, two):
        assert rec.metrics(out, y, None)["accuracy"] == (8.0, 8.0)
        assert float(rec.loss(out, y, None)) < 1e-6
    with pytest.raises(ShapeError):
        rec.loss(torch.zeros(8, x.shape[1], 3), y, None)


def test_language_task_resume_is_bitwise_identical(tmp_path):
    c = dict(task="lang:dyck1", task_kwargs=dict(lengths="2:6", valid_size=16,
                                                 test_bins="8:10", test_size=8),
             steps=12, eval_every=4, checkpoint_every=5, model_kwargs={"state_dim": 4})
    a = train(cfg(tmp_path / "a", **c), progress=False)
    assert {"valid_accuracy", "test_8:10_accuracy", "valid_position_accuracy"} <= set(a.history[-1])
    train(cfg(tmp_path / "b", **c), progress=False, callback=lambda s, _: s == 6)
    b = train(cfg(tmp_path / "b", **c), progress=False, resume=True)
    assert all(torch.equal(v, params(b.model)[k]) for k, v in params(a.model).items())
    assert strip_time(a.history) == strip_time(b.history)


#: trains a small stack-LSTM on Dyck-1 and returns the SHA-256 of its weights; run here
#: and in a fresh process
_STACK_LSTM_DIGEST = """
def digest():
    import hashlib
    from rnnmem.train import TrainConfig, train
    cfg = TrainConfig(model="stack_rnn", task="lang:dyck1", seed=0, steps=30, batch_size=16,
                      lr=1e-2, grad_clip=1.0, eval_every=0, checkpoint_every=0,
                      device="cpu", threads=1,
                      task_kwargs={"lengths": "1:4", "valid_size": 8},
                      model_kwargs={"controller": "lstm", "stack": "superposition",
                                    "width": 8, "stack_width": 2})
    h = hashlib.sha256()
    for k, v in sorted(train(cfg, progress=False).model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().numpy().tobytes())
    return h.hexdigest()
"""


def test_stack_lstm_training_is_the_same_bits_in_another_process():
    """A stack-LSTM trained on Dyck-1 lengths 1..4 (often batches of length 2: the case of
    the use-after-free at 5e14880, see test_lstm_sequence's shortest-sequence test) has
    the same weights here and in a fresh process with another hash seed. With the stale
    read the two differed (or one diverged), as the stack claims of ``rnnmem verify`` did
    from one run to the next."""
    ns: dict = {}
    exec(_STACK_LSTM_DIGEST, ns)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
           "PYTHONHASHSEED": "12345"}
    r = subprocess.run([sys.executable, "-c", _STACK_LSTM_DIGEST + "print(digest())"],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-800:]
    assert r.stdout.strip() == ns["digest"]()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_cuda_training_and_cpu_loadable_checkpoint(tmp_path, dtype):
    r = train(cfg(tmp_path, steps=20, dtype=dtype, device="cuda"), progress=False)
    assert all(p.device.type == "cuda" for p in r.model.parameters())
    assert r.history[-1]["valid_loss"] < r.history[0]["valid_loss"]
    m = load(r.last_checkpoint, device="cpu")
    assert all(torch.equal(v, r.model.state_dict()[k].cpu()) for k, v in m.state_dict().items())
