"""DuSell-Chiang protocol: an oracle language model sits on the lower bound, a uniform one
exactly log|V| per symbol above the model-free entropy; the ns:<name> task."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rnnmem.errors import InvalidParameterError, TaskLengthError, UnknownNameError
from rnnmem.numerics import tolerance
from rnnmem.train import build_task
from rnnmem.train.length_protocols_ns import evaluate_ns

pytestmark = pytest.mark.usefixtures("one_thread")

BIG = 1e4


class MarkedReversalOracle(torch.nn.Module):
    """p(next | prefix, n) of marked reversal for the length n read off the input's shape."""

    def __init__(self, uniform=False):
        super().__init__()
        self.uniform = uniform
        self.w = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))

    def forward(self, x):  # (B, n+1, 4): BOS w
        B, T, V = x.shape
        n, m = T - 1, (T - 1) // 2
        out = torch.full((B, T, V), -BIG, dtype=x.dtype)
        if self.uniform:
            return torch.zeros(B, T, V, dtype=x.dtype) + self.w
        ids = x.argmax(-1)[:, 1:]  # (B, n) the string
        out[:, :m, :2] = 0.0  # free half: uniform over 0, 1
        out[:, m, 2] = BIG  # the marker
        for t in range(m + 1, n):
            out[torch.arange(B), t, ids[:, n - 1 - t]] = BIG  # the mirror
        out[:, n, 3] = BIG  # EOS
        return out + self.w


def test_oracle_sits_on_the_lower_bound():
    r = evaluate_ns(MarkedReversalOracle(), "marked_reversal", [41, 51], k=16)
    tol = tolerance("float64", n_ops=16 * 52, scale=1.0)
    assert tol.allclose(r.ce_diff, 0.0)
    assert tol.allclose(r.lower_bound[0], 20 * math.log(2) / 42)


def test_uniform_model_is_log_v_minus_the_bound():
    r = evaluate_ns(MarkedReversalOracle(uniform=True), "marked_reversal", [41], k=8)
    tol = tolerance("float64", n_ops=8 * 42, scale=1.0)
    assert tol.allclose(r.cross_entropy[0], math.log(4))
    assert tol.allclose(r.ce_diff[0], math.log(4) - 20 * math.log(2) / 42)
    assert tol.allclose(r.band_lo[0], r.band_hi[0])  # same bound for every string


def test_bad_input():
    m = MarkedReversalOracle()
    with pytest.raises(InvalidParameterError, match="k"):
        evaluate_ns(m, "marked_reversal", [41], k=0)
    with pytest.raises(TaskLengthError):
        evaluate_ns(m, "marked_reversal", [40], k=1)
    with pytest.raises(UnknownNameError):
        evaluate_ns(m, "reversal", [41], k=1)
    with pytest.raises(UnknownNameError, match="ns:"):
        build_task("ns:copy")


def test_ns_task_batches_and_metrics():
    t = build_task("ns:dyck", lengths="10:14", valid_size=6)
    t.configure(dtype=torch.float64, batch_size=3, seed=0)
    x, y, bound = t.batch("train", 0, torch.Generator().manual_seed(0))
    assert x.shape[:2] == y.shape and x.shape[-1] == 5 and (x[:, 0, 4] == 1).all()
    assert (y[:, -1] == 4).all() and torch.isnan(bound).all()
    model = MarkedReversalOracle(uniform=True)
    metrics = t.evaluate(model)
    assert tolerance("float64", n_ops=6 * 15).allclose(metrics["cross_entropy"], math.log(5))
    assert 0 < metrics["ce_above_bound"] < math.log(5)
