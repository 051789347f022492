"""Length-generalisation evaluation: oracle models with known accuracy per bin, padded vs
per-length reference, determinism, precision copies, seed aggregation, stack drift."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnmem.errors import InvalidParameterError, NonFiniteError, RnnmemError, ShapeError
from rnnmem.models.stack_rnn import StackRNN
from rnnmem.numerics import tolerance
from rnnmem.train import evaluate as E
from rnnmem.train.evaluate import (LengthReport, aggregate_seeds, autocast_coverage,
                                   evaluate_lengths, model_in_dtype, stack_drift)


pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------ oracle models
class Dyck1Oracle(torch.nn.Module):
    """Exact logits for Dyck-1 from the running depth (one-hot '(' = 0, ')' = 1).

    next_symbol: ('(' always, ')' iff depth > 0, '$' iff depth == 0) as +-1 logits;
    recognition (width 1 or 2): accept iff depth ends at 0 and never went negative.
    ``break_after``: every position from that index on gets the wrong '$' logit, so exactly
    the strings longer than ``break_after`` are wrong. ``nan_after``: NaN logits there.
    """

    def __init__(self, mode="next_symbol", width=None, break_after=None, nan_after=None):
        super().__init__()
        self.mode, self.break_after, self.nan_after = mode, break_after, nan_after
        self.width = width or (3 if mode == "next_symbol" else 1)
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.input_dim = 2

    def forward(self, x):  # (B, T, 2) -> (B, T, k)
        depth = torch.cumsum(x[..., 0] - x[..., 1], dim=1)  # (B, T)
        lowest = torch.cummin(depth, dim=1).values
        ok = (depth == 0) & (lowest >= 0)
        sgn = lambda c: 2.0 * c.to(x.dtype) - 1.0  # noqa: E731
        if self.mode == "next_symbol":
            out = torch.stack([torch.ones_like(depth), sgn(depth > 0), sgn(ok)], -1)
            if self.break_after is not None:
                out[:, self.break_after:, 2] *= -1
        else:
            s = sgn(ok)
            out = s[..., None] if self.width == 1 else torch.stack([-s / 2, s / 2], -1)
        if self.nan_after is not None:
            out[:, self.nan_after:] = float("nan")
        return out * self.scale


BINS = "41:60,61:100"


def test_oracle_is_right_everywhere_and_retains_everything():
    for mode, width in (("next_symbol", None), ("recognition", 1), ("recognition", 2)):
        r = evaluate_lengths(Dyck1Oracle(mode, width), "dyck1", mode=mode, bins=BINS,
                             per_bin=12, lengths_per_bin=4, batch_size=5)
        assert r.train_accuracy == 1.0 and r.bin_accuracy == {"41:60": 1.0, "61:100": 1.0}
        assert r.retained == {"41:60": 1.0, "61:100": 1.0} and r.retained_mean == 1.0
        assert all(v == 1.0 for v in r.length_accuracy.values())
        assert r.bin_n == {"41:60": 12, "61:100": 12} and r.train_n == 12
        if mode == "next_symbol":
            assert r.position_accuracy == {"train": 1.0, "41:60": 1.0, "61:100": 1.0}


@pytest.mark.parametrize("padded", [True, False])
def test_a_model_broken_beyond_n_is_wrong_exactly_on_longer_strings(padded):
    n = 70
    r = evaluate_lengths(Dyck1Oracle(break_after=n), "dyck1", bins="41:60,61:100,101:120",
                         per_bin=20, lengths_per_bin=10, padded=padded)
    for length, acc in r.length_accuracy.items():
        assert acc == (1.0 if length <= n else 0.0), length
    assert r.bin_accuracy["41:60"] == 1.0 and r.bin_accuracy["101:120"] == 0.0
    expect = np.mean([r.length_accuracy[k] for k in r.length_accuracy if 61 <= k <= 100
                      for _ in range(r.length_n[k])])
    assert r.bin_accuracy["61:100"] == pytest.approx(expect)
    assert 0 < r.bin_accuracy["61:100"] < 1
    assert r.long_accuracy == pytest.approx(np.mean(list(r.bin_accuracy.values())))
    # a wrong '$' logit at position >= n breaks exactly one of the three targets there
    pos = r.position_accuracy["101:120"]
    assert 0.5 < pos < 1.0


def test_nonfinite_logits_count_as_wrong_and_are_counted():
    r = evaluate_lengths(Dyck1Oracle(nan_after=60), "dyck1", bins=BINS, per_bin=10,
                         lengths_per_bin=10)
    assert r.bin_accuracy == {"41:60": 1.0, "61:100": 0.0}
    assert r.nonfinite == r.bin_n["61:100"] and r.train_accuracy == 1.0
    assert "non-finite" in r.table()


def _stack_model(dtype="float64", symbols=2, **kw):
    kw = {"controller": "lstm", "stack": "superposition", "width": 8, "stack_width": 3,
          "seed": 3, "dtype": dtype, "device": "cpu", **kw}
    return StackRNN(symbols, symbols + 1, **kw)


class Perturbed(torch.nn.Module):
    """The oracle plus a random stack RNN's squashed logits: right at some positions only,
    depending on the stack RNN's whole history (and so on its stack capacity)."""

    def __init__(self, stack_model):
        super().__init__()
        self.oracle, self.noise, self.input_dim = Dyck1Oracle(), stack_model, 2

    def forward(self, x):
        return self.oracle(x) + 1.5 * torch.tanh(4 * self.noise(x))


def test_padded_batches_match_the_per_length_reference():
    m = Perturbed(_stack_model())
    kw = dict(bins="41:52,53:70", per_bin=9, lengths_per_bin=3, seed=5, batch_size=4)
    fast = evaluate_lengths(m, "dyck1", padded=True, **kw)
    ref = evaluate_lengths(m, "dyck1", padded=False, **kw)
    assert fast.to_dict() == ref.to_dict()
    assert 0 < fast.position_accuracy["41:52"] < 1  # the comparison is not vacuous


def test_deterministic_and_bins_independent_of_each_other():
    m = Perturbed(_stack_model())
    a = evaluate_lengths(m, "dyck1", bins="41:60", per_bin=6, seed=2)
    b = evaluate_lengths(m, "dyck1", bins="41:60,61:100", per_bin=6, seed=2)
    assert a.to_dict() == evaluate_lengths(m, "dyck1", bins="41:60", per_bin=6, seed=2).to_dict()
    assert a.bin_accuracy["41:60"] == b.bin_accuracy["41:60"]
    assert a.position_accuracy["41:60"] == b.position_accuracy["41:60"]
    # a different seed draws different strings (dyck1 has many members per length)
    pa = [evaluate_lengths(m, "dyck1", bins="41:60", per_bin=16, seed=s).position_accuracy
          for s in (0, 1)]
    assert pa[0] != pa[1]


def test_report_round_trips_through_json_and_csv():
    r = evaluate_lengths(Dyck1Oracle(break_after=50), "dyck1", bins=BINS, per_bin=6)
    d = json.loads(r.to_json())
    assert LengthReport.from_dict(d).to_dict() == r.to_dict()
    rows = r.to_csv().strip().splitlines()
    assert rows[0].startswith("kind,range,n,accuracy,retained")
    assert sum(row.startswith("test,") for row in rows) == 2
    assert sum(row.startswith("length,") for row in rows) == len(r.length_accuracy)


def test_zero_training_accuracy_leaves_retention_undefined():
    r = evaluate_lengths(Dyck1Oracle(break_after=0), "dyck1", bins="41:60", per_bin=4)
    assert r.train_accuracy == 0.0 and r.retained == {"41:60": None}
    assert r.retained_mean is None and json.loads(r.to_json())["retained_mean"] is None


def test_skipped_bins_and_errors():
    m3 = _stack_model(symbols=3)
    r = evaluate_lengths(m3, "anbncn", bins="41:41,42:44", per_bin=2)
    assert r.bins == ["42:44"] and r.skipped_bins == ["41:41"]
    # two strings per bin, at the ends of the valid lengths (3 and 39 for training)
    assert r.length_n == {3: 1, 39: 1, 42: 2}
    with pytest.raises(InvalidParameterError, match="no member"):
        evaluate_lengths(m3, "anbncn", bins="41:41", per_bin=2)
    m = _stack_model()
    with pytest.raises(InvalidParameterError, match="mode"):
        evaluate_lengths(m, "dyck1", mode="parse", per_bin=2)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(InvalidParameterError, match="per_bin"):
            evaluate_lengths(m, "dyck1", per_bin=bad)
    with pytest.raises(InvalidParameterError):
        evaluate_lengths(m, "dyck1", bins="60:41", per_bin=2)
    with pytest.raises(ShapeError, match="input symbols"):
        evaluate_lengths(m, "dyck2", bins="41:44", per_bin=2)
    with pytest.raises(ShapeError, match="logits"):  # 3 logits, recognition wants 1 or 2
        evaluate_lengths(m, "dyck1", mode="recognition", bins="41:44", per_bin=2)
    with pytest.raises(RnnmemError):
        evaluate_lengths(m, "klingon", per_bin=2)


def test_precision_copy_leaves_the_model_alone():
    m = _stack_model("float32")
    m.train()
    assert model_in_dtype(m, "float32") is m
    c = model_in_dtype(m, "bfloat16")
    assert c is not m and not c.training
    for (n, p), q in zip(m.named_parameters(), c.parameters()):
        assert p.dtype == torch.float32 and q.dtype == torch.bfloat16
        assert torch.equal(q, p.to(torch.bfloat16)), n
    r = evaluate_lengths(m, "dyck1", bins="41:50", per_bin=4, dtype="bfloat16")
    assert r.dtype == "bfloat16" and m.training
    assert all(p.dtype == torch.float32 for p in m.parameters())
    assert evaluate_lengths(m, "dyck1", bins="41:50", per_bin=4).dtype == "float32"
    with pytest.raises(InvalidParameterError, match="dtype"):
        evaluate_lengths(m, "dyck1", bins="41:50", per_bin=4, dtype="int8")


def test_a_dtype_the_device_cannot_run_is_reported_not_upcast(monkeypatch):
    m = _stack_model("float32")
    real = E.model_in_dtype

    class Refuses(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x, **kw):
            raise RuntimeError('"addmm" not implemented for \'Half\'')

    monkeypatch.setattr(E, "model_in_dtype",
                        lambda mod, dt: Refuses(real(mod, dt)) if str(dt) == "float16"
                        else real(mod, dt))
    with pytest.raises(InvalidParameterError, match="float16 does not run on cpu"):
        evaluate_lengths(m, "dyck1", bins="41:50", per_bin=4, dtype="float16")
    d = stack_drift(m, torch.randint(0, 2, (2, 12)), ["float16", "float32"])
    assert "float16" in d.unsupported and "not implemented" in d.unsupported["float16"]
    assert list(d.stack_max) == ["float32"]


# ------------------------------------------------------------------ seeds
def _fake(seed, train, bins, language="dyck1"):
    ba = {f"{41 + 10 * i}:{50 + 10 * i}": v for i, v in enumerate(bins)}
    ret = {k: (v / train if train else None) for k, v in ba.items()}
    long = float(np.mean(bins))
    return LengthReport("dyck1" if language == "dyck1" else language, "next_symbol",
                        "float32", seed, 8, "1:40", train, 8, list(ba), ba,
                        {k: 8 for k in ba}, ret, long, long / train if train else None,
                        {}, {})


acc = st.floats(0.0, 1.0, allow_nan=False, allow_subnormal=False)


@settings(max_examples=30)
@given(st.lists(st.tuples(st.floats(0.05, 1.0), acc, acc), min_size=1, max_size=6))
def test_aggregate_matches_numpy(rows):
    reps = [_fake(i, t, [a, b]) for i, (t, a, b) in enumerate(rows)]
    agg = aggregate_seeds(reps)
    for key, vals in (("train_accuracy", [r[0] for r in rows]),
                      ("long_accuracy", [(r[1] + r[2]) / 2 for r in rows])):
        s = getattr(agg, key)
        tol = tolerance("float64", n_ops=len(rows))
        assert tol.allclose(s["mean"], np.mean(vals))
        want_std = np.std(vals, ddof=1) if len(vals) > 1 else 0.0
        assert tol.allclose(s["std"], want_std)
        assert s["min"] == min(vals) and s["max"] == max(vals) and s["n"] == len(vals)
    b = agg.best
    assert reps[b].long_accuracy == max(r.long_accuracy for r in reps)
    assert agg.seeds == list(range(len(rows)))
    json.dumps(agg.to_dict())


def test_aggregate_skips_undefined_retention_and_checks_consistency():
    agg = aggregate_seeds([_fake(0, 0.0, [0.0, 0.0]), _fake(1, 0.5, [0.25, 0.5])])
    assert agg.retained_mean["n"] == 1 and agg.retained_mean["mean"] == pytest.approx(0.75)
    assert agg.retained["41:50"]["values"] == [0.5] and agg.best == 1
    with pytest.raises(InvalidParameterError, match="at least one"):
        aggregate_seeds([])
    with pytest.raises(InvalidParameterError, match="language"):
        aggregate_seeds([_fake(0, 1, [1, 1]), _fake(1, 1, [1, 1], language="anbn")])
    with pytest.raises(InvalidParameterError, match="bins"):
        aggregate_seeds([_fake(0, 1, [1, 1]), _fake(1, 1, [1, 1, 1])])


# ------------------------------------------------------------------ precision
def test_stack_drift_orders_by_unit_roundoff_and_vanishes_in_float64():
    m = _stack_model("float32", width=8)
    x = torch.randint(0, 2, (3, 60), generator=torch.Generator().manual_seed(0))
    d = stack_drift(m, x, ["float64", "float32", "float16", "bfloat16"])
    assert d.steps.tolist() == list(range(1, 61)) and not d.unsupported
    assert np.all(d.stack_max["float64"] == 0) and np.all(d.logits_max["float64"] == 0)
    med = {k: float(np.median(v)) for k, v in d.stack_rms.items()}
    assert med["float32"] < med["float16"] < med["bfloat16"]
    # float32: within the rounding a length-60 recurrence can accumulate (cells are in (0,1))
    tol = tolerance("float32", n_ops=60 * 8, scale=1.0, worst_case=True)
    assert float(d.stack_max["float32"].max()) <= tol.atol
    assert np.all(d.reference_scale <= 1.0) and np.all(d.reference_scale > 0)
    json.dumps(d.to_dict())
    # float codes give the same drift as ids
    codes = torch.nn.functional.one_hot(x, 2).double()
    d2 = stack_drift(m, codes, ["bfloat16"])
    np.testing.assert_array_equal(d2.stack_max["bfloat16"], d.stack_max["bfloat16"])


def test_stack_drift_validation():
    with pytest.raises(InvalidParameterError, match="no stack"):
        stack_drift(_stack_model(stack="none"), torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ShapeError):
        stack_drift(_stack_model(), torch.zeros(4, dtype=torch.long))
    with pytest.raises(NonFiniteError):
        stack_drift(_stack_model(), torch.full((1, 3, 2), math.nan))
    with pytest.raises(InvalidParameterError):
        stack_drift(_stack_model(), torch.zeros(1, 4, dtype=torch.long), [])


def test_autocast_coverage_names_what_stays_in_float32():
    m = _stack_model("float32")
    x = torch.randint(0, 2, (2, 5))
    cov = autocast_coverage(m, x, "bfloat16")
    assert {"controller.cell", "classifier"} <= set(cov)
    assert set(cov.values()) <= {"bfloat16", "float32"}
    assert cov["classifier"] == "bfloat16"  # a linear layer is lowered on every device
    # whatever autocast does to the recurrent cell, the map reports what really ran
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        h = m.controller.cell(torch.zeros(2, m.controller.cell.input_size, dtype=torch.float32))
    assert cov["controller.cell"] == str(h[0].dtype).replace("torch.", "")
