"""Claims of Das & Mali on stack RNNs: verdict rules on constructed numbers, the temporal
Jacobian against autograd's full Jacobian, the protocols' runs (frozen parameters stay,
pure precision trains in that dtype), smoke runs through a run store."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnmem.models.stack_rnn import StackRNN
from rnnmem.numerics import tolerance
from rnnmem.proofs_check import claims_stack as C
from rnnmem.proofs_check.registry import VERDICTS, Context, get_claim, run_claims
from rnnmem.proofs_check.report import to_jsonable

IDS = ("frozen-memory-length-generalisation", "precision-dependence", "stack-memory-function")


pytestmark = pytest.mark.usefixtures("one_thread")


def _st(mean, std=0.0, lo=None, hi=None, n=2):
    return {"mean": mean, "std": std, "min": mean if lo is None else lo,
            "max": mean if hi is None else hi, "n": n}


def _lang(train_m, ret_m, std_m, train_f, ret_f, std_f, max_m=None):
    return {"frozen_memory": {"train": _st(train_m), "retained": _st(ret_m, std_m, hi=max_m)},
            "full": {"train": _st(train_f), "retained": _st(ret_f, std_f)}}


def test_frozen_memory_verdict_rules():
    good = _lang(0.9, 0.92, 0.02, 0.9, 0.5, 0.1)
    assert C.frozen_memory_verdict({"anbncn": good}, "quick")[0] == "confirmed"
    assert C.frozen_memory_verdict({"anbncn": good}, "smoke")[0] == "inconclusive"
    # within the seed spread of full training: not clearly better
    close = _lang(0.9, 0.92, 0.2, 0.9, 0.7, 0.1, max_m=0.99)
    v, _, per = C.frozen_memory_verdict({"dyck1": close}, "quick")
    assert v == "inconclusive" and per["dyck1"] == "unclear"
    low = _lang(0.9, 0.3, 0.1, 0.9, 0.2, 0.1, max_m=0.4)
    worse = _lang(0.9, 0.9, 0.0, 0.9, 0.95, 0.0)
    assert C.frozen_memory_verdict({"dyck1": low, "anbn": worse}, "full")[0] == "refuted"
    assert C.frozen_memory_verdict({"dyck1": good, "anbn": low}, "full")[0] == "inconclusive"
    unlearned = _lang(0.2, 1.0, 0.0, 0.9, 0.1, 0.0)
    v, _, per = C.frozen_memory_verdict({"dyck1": unlearned}, "quick")
    assert v == "inconclusive" and per["dyck1"] == "not learned"
    # an unlearned language does not dilute a clear result elsewhere
    assert C.frozen_memory_verdict({"dyck1": unlearned, "anbn": low}, "quick")[0] == "refuted"
    # context-sensitive languages decide when present: a context-free contradiction alone
    # does not refute a claim about context-sensitive languages, nor support it
    v, why, _ = C.frozen_memory_verdict({"dyck1": low, "anbncn": unlearned}, "quick")
    assert v == "inconclusive" and "context-sensitive" in why
    assert C.frozen_memory_verdict({"dyck1": good, "copy": low}, "quick")[0] == "refuted"
    assert C.frozen_memory_verdict({"dyck1": low, "copy": good}, "quick")[0] == "confirmed"


def _drop(long, long_std, train):
    return {"long": _st(long, long_std), "train": _st(train)}


def test_precision_verdict_rules():
    grows = {"bfloat16": {"slope": 0.8, "se": 0.05}, "float16": {"slope": 0.5, "se": 0.1}}
    flat = {"bfloat16": {"slope": 0.01, "se": 0.05}, "float16": {"slope": 0.5, "se": 0.1}}
    big = {"a": {"bfloat16": _drop(0.2, 0.05, 0.01), "float16": _drop(0.0, 0.0, 0.0)}}
    assert C.precision_verdict(big, grows, "quick", True)[0] == "confirmed"
    assert C.precision_verdict(big, flat, "quick", True)[0] == "inconclusive"
    assert C.precision_verdict(big, grows, "smoke", True)[0] == "inconclusive"
    assert C.precision_verdict(big, grows, "quick", False)[0] == "inconclusive"
    # a drop no larger than on training lengths is not a long-string effect
    same = {"a": {"bfloat16": _drop(0.2, 0.05, 0.3)}}
    assert C.precision_verdict(same, grows, "quick", True)[0] == "inconclusive"
    none = {"a": {"bfloat16": _drop(0.004, 0.01, 0.0)}, "b": {"float16": _drop(0.05, 0.2, 0.0)}}
    v, why = C.precision_verdict(none, grows, "full", True)
    assert v == "refuted" and "drift grows" in why


def _stab(rate_m, sd_m, disp_m, rate_f, sd_f, disp_f):
    return {"frozen_memory": {"rate": _st(rate_m, sd_m), "dispersion": disp_m},
            "full": {"rate": _st(rate_f, sd_f), "dispersion": disp_f}}


def test_stability_verdict_rules():
    better = _stab(0.1, 0.01, 0.1, 0.3, 0.02, 0.5)
    assert C.stability_verdict({"a": better}, "quick")[0] == "confirmed"
    assert C.stability_verdict({"a": better}, "smoke")[0] == "inconclusive"
    worse = _stab(0.3, 0.01, 0.6, 0.2, 0.02, 0.5)
    assert C.stability_verdict({"a": worse, "b": worse}, "quick")[0] == "refuted"
    slower_only = _stab(0.1, 0.01, 0.9, 0.3, 0.02, 0.5)
    v, _, per = C.stability_verdict({"a": slower_only}, "quick")
    assert v == "inconclusive" and per["a"] == "mixed"
    one_seed = _stab(0.1, 0.0, None, 0.3, 0.0, None)
    assert C.stability_verdict({"a": one_seed}, "quick")[0] != "confirmed"


@pytest.mark.parametrize("controller,stack", [("lstm", "superposition"), ("gru", "none")])
def test_temporal_jacobian_matches_autograd(controller, stack):
    m = StackRNN(3, 4, controller=controller, stack=stack, width=5, stack_width=2,
                 seed=1, dtype="float64", device="cpu")
    ids = torch.randint(0, 3, (2, 9), generator=torch.Generator().manual_seed(0))
    x = torch.nn.functional.one_hot(ids, 3).double()

    def h_last(inp):  # (2, 9, 3) -> (2, 5)
        _, st = m(inp, return_state=True)
        return st.controller[0] if isinstance(st.controller, tuple) else st.controller

    full = torch.autograd.functional.jacobian(h_last, x)  # (2, 5, 2, 9, 3)
    per_b = torch.stack([full[b, :, b] for b in range(2)])  # (2, 5, 9, 3)
    want = per_b.square().sum(dim=(1, 3)).sqrt().mean(0).flip(0).numpy()  # (9,)
    got = C.temporal_jacobian(m, x)
    tol = tolerance("float64", n_ops=9 * 20, scale=float(np.max(want)))
    assert got.shape == (9,) and tol.allclose(got, want)
    assert tol.allclose(C.temporal_jacobian(m, x, chunk=1), want)  # string by string
    # an input after t cannot influence h_T through an earlier step: tau = 0 is not zero
    assert got[0] > 0


def _tiny(run, **fields):
    """A run of the stack protocols at toy sizes."""
    return run.replace(**{"train.steps": 2, "train.batch_size": 4, "model.width": 3,
                          "model.stack_width": 2, **fields})


def test_variants_are_the_joint_axis_and_frozen_memory_stays(tmp_path):
    """The variants axis sets the stack and the freezing together; a frozen-memory run's
    stack interface is its initialisation after training (read back from the store)."""
    from rnnmem.experiments import RunStore, execute

    p = C.lengths_protocol().at("smoke")
    specs = [C.spec_of(r) for r in p.runs()]
    assert [s.variant for s in specs] == list(C.sizes(Context("smoke", Path("."))).variants)
    frozen = next(r for r in p.runs() if C.spec_of(r).variant == "frozen_memory")
    assert frozen.config.freeze == "memory" and frozen.model_options["stack"] == "superposition"
    run = _tiny(frozen)
    res = execute([run], store=RunStore(tmp_path), progress=False)
    model = C.trained(res)[C.spec_of(run)][0]
    init = StackRNN(2, 3, controller="lstm", stack="superposition", width=3,
                    stack_width=2, seed=0, dtype="float32", device="cpu")
    for (n, q), q0 in zip(model.memory.named_parameters(), init.memory.parameters()):
        assert torch.equal(q, q0), n


def test_smoke_runs_report_sizes_figures_and_honest_verdicts(tmp_path):
    results = run_claims(list(IDS), "smoke", tmp_path, store=tmp_path / "store")
    for r in results:
        assert r.error is None, r.error
        assert r.verdict in VERDICTS and r.verdict == "inconclusive"  # smoke: too small
        assert "too small" in r.summary
        sizes = r.metrics["sizes"]
        assert sizes["hidden_size"] >= 1 and sizes["steps"] >= 1 and sizes["seeds"]
        assert r.figures and all((tmp_path / f).is_file() for f in r.figures)
        json.dumps(to_jsonable(r.metrics))
        assert get_claim(r.id).source.startswith("Das & Mali")
    prec = results[1].metrics
    assert set(prec["accuracy"]["dyck1"]) == {"float64", "float32", "bfloat16", "float16"}
    assert not prec["unsupported_on_cpu"]  # every precision runs on CPU
    mf = results[2].metrics["per_language"]["dyck1"]
    assert {"full", "frozen_memory", "memoryless"} <= set(mf)
    assert mf["full"]["memory_function"][0]["kind"] in ("exponential", "polynomial", "none")
    # the frozen-memory claim also reads the dm protocol (7 memory x freezing cells)
    dm = results[0].metrics["dm_protocol"]
    assert dm["protocol"] == "dm" and dm["budget"] == "smoke"
    cells = dm["per_task"]["reverse_string"]
    assert set(cells["superposition"]) == {"sequence", "30"}
    assert set(cells["nondeterministic+frozen_memory"]) == {"sequence"}
    assert set(cells["none"]) == {"none"}
    assert set(cells["superposition@30+frozen_memory"]) == {"sequence", "30"}
    assert "nondeterministic@30" not in cells
    v = cells["superposition+frozen_memory"]["30"]
    assert v["curve"]["lengths"] == [41, 42]
    assert math.isclose(v["retained"]["mean"], v["score"]["mean"] / v["train_score"]["mean"])
    assert "DeepMind's protocol" in results[0].details and "Bins protocol" in results[0].details
    assert results[0].metrics["protocol"] == "bins"
    # the other two claims read the dm runs too (precision: the 4 fully trained cells)
    for r, name in ((results[1], "dm-precision"), (results[2], "dm-jacobian")):
        assert r.metrics["dm_protocol"]["protocol"] == "dm" and r.metrics["protocol"] == "bins"
        assert r.metrics["dm_protocol"]["budget"] == "smoke" and "dm protocol (smoke" in r.summary
        assert "DeepMind's protocol" in r.details and any(name in f for f in r.figures)
    # the three claims read the same models: trained once, in the first sweep
    # (the freezing claim: 3 bins runs and 11 dm cells, 4 of them trained at depth 30; the
    # other two: the cells trained at the sequence length)
    assert [r.runs for r in results] == [{"total": 3 + 11, "trained": 14},
                                         {"total": 1 + 4, "trained": 5},
                                         {"total": 3 + 7, "trained": 10}]
    again = run_claims(["stack-memory-function"], "smoke", tmp_path / "again",
                       store=tmp_path / "store")
    assert again[0].runs == {"total": 10, "trained": 0}
    assert json.dumps(to_jsonable(again[0].metrics["per_language"]["dyck1"])) == \
        json.dumps(to_jsonable(mf))


def test_budgets_scale_up():
    s = {b: C.sizes(Context(b, Path("."))) for b in ("smoke", "quick", "full")}
    for key in ("steps", "per_bin", "hidden_size", "drift_length", "jacobian_length"):
        assert s["smoke"].__dict__[key] < s["quick"].__dict__[key] < s["full"].__dict__[key]
    assert len(s["quick"].seeds) >= 2 and set(s["full"].variants) == set(C.VARIANTS)
    assert {"full", "frozen_memory", "memoryless"} <= set(s["quick"].variants)
    assert any(lang in ("anbncn", "copy") for lang in s["quick"].languages)
    assert s["smoke"].pure_dtypes == () and "bfloat16" in s["quick"].pure_dtypes
    assert set(s["quick"].pure_languages) <= set(s["quick"].languages)


def test_pure_precision_runs_really_train_in_that_dtype(tmp_path):
    """A pure-precision run trains with low-precision parameters (not autocast), and a
    float16 AdamW run gets an epsilon that does not underflow (TrainConfig refuses 1e-8)."""
    from rnnmem.experiments import RunStore, execute

    store = RunStore(tmp_path)
    base = C.precision_protocol().at("quick").runs()[0]
    for dt in ("bfloat16", "float16"):
        run = _tiny(base, **{"train.dtype": dt, "train.precision": "pure",
                             "train.adam_eps": 1e-4 if dt == "float16" else 1e-8})
        cfg = run.config
        assert cfg.precision == "pure" and cfg.dtype == dt
        model, info = C.trained(execute([run], store=store, progress=False))[C.spec_of(run)]
        assert {p.dtype for p in model.parameters()} == {getattr(torch, dt)}
        assert math.isfinite(info["train_loss"])
    mixed = _tiny(base, **{"train.dtype": "bfloat16", "train.precision": "mixed"})
    model = C.trained(execute([mixed], store=store, progress=False))[C.spec_of(mixed)][0]
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    # the full budget's precision axis: mixed bfloat16/float16/float64, pure with eps
    axis = C._precision_axis(C.sizes(Context("full", Path("."))))
    assert ["float16", "pure", 1e-4] in axis and ["float64", "mixed", 1e-8] in axis


def test_full_budget_structure_runs_end_to_end(tmp_path, monkeypatch):
    """Every variant, a context-sensitive language and the extra training precisions, with
    tiny sizes (the real full budget takes hours)."""
    tiny = C.Sizes(languages=("dyck1", "copy"), variants=tuple(C.VARIANTS), seeds=(0, 1),
                   steps=2, batch_size=4, hidden_size=3, stack_width=2, lr=0.01,
                   bins="41:50,51:60", per_bin=4, lengths_per_bin=2,
                   drift_length=12, jacobian_length=10, jacobian_strings=2,
                   memory_horizon=8, train_dtypes=("bfloat16", "float64"),
                   pure_dtypes=("bfloat16", "float16"), pure_languages=("dyck1",))
    monkeypatch.setattr(C, "sizes", lambda ctx: tiny)
    monkeypatch.setitem(C.DM_BUDGET, "full", "smoke")  # the dm reading at smoke sizes
    results = run_claims(list(IDS), "full", tmp_path)
    for r in results:
        assert r.error is None, r.error
        assert r.verdict in VERDICTS
    m = results[0].metrics
    assert set(m["per_language"]["copy"]) == set(C.VARIANTS)
    amp = results[1].metrics["trained_in_precision"]
    assert set(amp) == {"dyck1/bfloat16", "dyck1/float64", "copy/bfloat16", "copy/float64"}
    assert "controller.cell" in results[1].metrics["autocast_kept_float32"]["bfloat16"]
    pure = results[1].metrics["trained_pure"]
    assert set(pure) == {"dyck1/bfloat16", "dyck1/float16"}
    assert all(v["long_position"]["n"] == 2 for v in pure.values())
    assert "| dyck1/float16 |" in results[1].details
    assert results[2].metrics["per_language"]["copy"]["full"]["dispersion"] is not None
