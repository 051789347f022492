"""The curse-of-memory claims: run at the smoke budget through a run store, check the
evidence's structure and the parts that are deterministic, that runs shared by claims and
by invocations are trained once, and test the helpers the verdicts rest on."""

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rnnmem.numerics import classify_decay, tolerance
from rnnmem.experiments import RunStore
from rnnmem.proofs_check import registry as R
from rnnmem.proofs_check.curse import common as C
from rnnmem.proofs_check.curse import lr as LR
from rnnmem.proofs_check.curse import rate as RATE
from rnnmem.proofs_check.curse import table as TABLE
from rnnmem.proofs_check.report import write_report

IDS = ["approximation-rate", "curse-of-memory-table", "activations-no-relief",
       "inverse-approximation", "stable-reparam-lr-robustness"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return RunStore(tmp_path_factory.mktemp("curse-store"))


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, store):
    out = tmp_path_factory.mktemp("curse")
    results = R.run_claims(IDS, "smoke", out, seed=0, store=store)
    return out, {r.id: r for r in results}


def _claim_runs(ids, budget="smoke"):
    """Hashes of the runs each claim reads at ``budget``."""
    ctx = R.Context(budget, Path("."))
    out = {}
    for i in ids:
        c = R.get_claim(i)
        out[i] = {r.hash for p in (c.protocols(ctx) if c.protocols else []) for r in p.runs()}
    return out


def test_shared_runs_are_trained_once(smoke, store):
    """The table, inverse approximation and activations read overlapping runs: the store
    holds each once, and every claim saw its runs trained in this invocation."""
    res = smoke[1]
    runs = _claim_runs(IDS)
    union = set().union(*runs.values())
    assert set(store.hashes()) == union
    assert sum(len(v) for v in runs.values()) > len(union)  # shared runs exist
    assert runs["inverse-approximation"] <= runs["curse-of-memory-table"] | \
        runs["activations-no-relief"]
    for i in IDS:
        if runs[i]:
            assert res[i].runs == {"total": len(runs[i]), "trained": len(runs[i])}, i
        else:
            assert res[i].runs is None  # approximation-rate trains nothing at smoke


def test_second_invocation_trains_nothing(smoke, store, tmp_path):
    """Same store, second invocation: every run is read from the store, none trained, and
    the measured verdicts are those of the first invocation (the stored models)."""
    ids = ["activations-no-relief", "inverse-approximation"]
    again = {r.id: r for r in R.run_claims(ids, "smoke", tmp_path, store=store)}
    first = smoke[1]
    for i in ids:
        assert again[i].error is None, again[i].error
        assert again[i].runs["trained"] == 0 and again[i].runs["total"] > 0
        assert again[i].summary == first[i].summary
    assert again["inverse-approximation"].metrics["records"] == \
        first["inverse-approximation"].metrics["records"]


def test_claims_registered():
    ids = {c.id for c in R.all_claims()}
    assert set(IDS) <= ids
    for i in IDS:
        c = R.get_claim(i)
        assert c.source and c.statement and not c.must_hold


def test_smoke_runs_and_reports(smoke):
    out, res = smoke
    for i in IDS:
        r = res[i]
        assert r.error is None, r.error
        assert r.verdict in R.VERDICTS
        assert r.summary and r.details
        assert r.figures, i
        for f in r.figures:
            p = out / f
            assert p.is_file() and p.stat().st_size > 1000
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "sizes" in r.metrics
    md, js = write_report(list(res.values()), out, budget="smoke")
    data = json.loads(js.read_text())
    assert {d["id"] for d in data} >= set(IDS)


def test_approximation_rate_least_squares(smoke):
    r = smoke[1]["approximation-rate"]
    ls = r.metrics["ls"]
    # deterministic construction: the verdict is reproducible at any budget
    assert r.verdict == "confirmed", r.details
    ex, an, po = ls["exponential"], ls["exp_sum"], ls["polynomial"]
    assert ex["error_sup"][0] <= ex["floor"]
    e_an = np.array(an["error_sup"])
    assert np.all(np.diff(e_an) < 0)  # every added unit helps the analytic target
    # the polynomial target needs growing coefficients (Li et al.: the curse)
    assert po["coef_l1"][-1] > 100 * po["coef_l1"][0]
    assert po["reduction_factor"] < an["reduction_factor"]


def _recount(cells, seed):
    counts = {"match": 0, "differ": 0, "inconclusive": 0}
    for key, c in cells.items():
        row, target = key.split("/")
        assert c["seed"] == seed[row][target]
        if c["verdict"] == "inconclusive":
            counts["inconclusive"] += 1
        elif c["verdict"] == c["seed"]:
            counts["match"] += 1
        else:
            counts["differ"] += 1
    return counts


def _overall(counts):
    if counts["differ"]:
        return "refuted"
    return "inconclusive" if counts["inconclusive"] else "confirmed"


def _measured(r):
    """The verdict a smoke run measured: the reported one is always inconclusive."""
    assert r.verdict == "inconclusive"
    if "verdict_as_measured" in r.metrics:
        assert r.summary.startswith("smoke budget: too small to tell (as measured: "
                                    + r.metrics["verdict_as_measured"])
        return r.metrics["verdict_as_measured"]
    return r.verdict


def test_smoke_guard_only_acts_at_smoke():
    from pathlib import Path

    from rnnmem.proofs_check.registry import Context, Evidence

    check = C.smoke_inconclusive(lambda ctx: Evidence("refuted", summary="x", metrics={}))
    assert check(Context("quick", Path("."))).verdict == "refuted"
    ev = check(Context("smoke", Path(".")))
    assert ev.verdict == "inconclusive" and ev.metrics["verdict_as_measured"] == "refuted"


def test_table_cells_and_verdict_rule(smoke):
    r = smoke[1]["curse-of-memory-table"]
    cells = r.metrics["cells"]
    assert set(cells) == {f"{row}/{t}" for row in C.TABLE_ROWS for t in C.TARGET_NAMES}
    assert r.runs["total"] == len(C.TABLE_ROWS) * len(C.TARGET_NAMES) * len(
        r.metrics["sizes"]["widths"])
    for c in cells.values():
        assert c["verdict"] in ("stable", "unstable", "inconclusive")
        assert set(c["train"]) == {str(m) for m in r.metrics["sizes"]["widths"]}
        lv = c.get("level_sensitivity")
        if lv is not None:  # a definite verdict holds at every level
            assert set(lv) == {f"{th:g}x" for th in TABLE.LEVEL_FACTORS}
            if c["verdict"] != "inconclusive":
                assert {d["verdict"] for d in lv.values()} == {c["verdict"]}
            elif len({d["verdict"] for d in lv.values()}) > 1 and c["e0_loglog_slope"] < 0:
                assert "depends on the level" in c["reason"]
    counts = _recount(cells, C.SEED_TABLE)
    assert counts == r.metrics["counts"]
    assert _measured(r) == _overall(counts) == TABLE.table_verdict(r.metrics["comparison"])
    for key, cmp_ in r.metrics["comparison"].items():
        v, sd = cells[key]["verdict"], cells[key]["seed"]
        assert cmp_ == ("inconclusive" if v == "inconclusive" else
                        "match" if v == sd else "DIFFERS")


def test_table_least_squares_rows(smoke):
    """The closed-form rows: exponential memory stable, polynomial crossing points falling."""
    ls = smoke[1]["curse-of-memory-table"].metrics["least_squares"]
    assert ls["exponential"]["verdict"] == "stable"
    st = ls["polynomial"]["stability"]
    assert st["slope"] < -1.0
    assert st["beta0"][-1] < st["beta0"][0] / 10


def test_activation_cells(smoke):
    r = smoke[1]["activations-no-relief"]
    cells = r.metrics["cells"]
    assert set(cells) == {"tanh_rnn/polynomial", "hardtanh_rnn/polynomial"}
    pol = [c["verdict"] for c in cells.values()]
    expect = ("confirmed" if all(v == "unstable" for v in pol) else
              "refuted" if "stable" in pol else "inconclusive")
    assert _measured(r) == expect


def test_inverse_approximation_evidence(smoke):
    r = smoke[1]["inverse-approximation"]
    m = r.metrics
    assert m["targets"]["exponential"]["kind"] == "exponential"
    assert m["targets"]["polynomial"]["kind"] == "polynomial"
    recs = [x for x in m["records"] if x["status"] == "ok"]
    assert recs
    c = m["counts"]
    assert c["exponential"] + c["polynomial"] + c["not_decaying"] == len(recs)
    expect = "refuted" if c["polynomial"] else ("confirmed" if c["exponential"] else
                                                "inconclusive")
    assert _measured(r) == expect
    for x in recs:  # the grid reaches 40 time constants of the slowest mode (or its cap)
        if x["slowest_rate"] > 0 and x["memory"] == "closed form":
            assert x["grid_steps"] >= min(20000, 40 / x["slowest_rate"] - 1)


def test_lr_metrics_structure(smoke):
    r = smoke[1]["stable-reparam-lr-robustness"]
    m = r.metrics
    assert set(m["diverged_at"]) == set(LR.LR_PARAMETERISATIONS)
    for run in m["runs"]:
        assert run["status"] in ("ok", "nan", "blow-up")
        assert run["diverged"] == (run["status"] != "ok")
    assert m["part_a"] in R.VERDICTS and m["part_b"] in R.VERDICTS
    parts = {m["part_a"], m["part_b"]}
    expect = ("refuted" if "refuted" in parts else
              "confirmed" if parts == {"confirmed"} else "inconclusive")
    assert _measured(r) == expect


# ---------------------------------------------------------------------- helpers
def test_initial_gradients_follow_the_chain_rule():
    """Same eigenvalues and read-in/out for every map at initialisation, so
    |dL/dw| / G_f(w) = |dL/dlambda| lambda^2 must not depend on the parameterisation."""
    task, evalset = LR.lr_evalset("lf:polynomial", {"n_samples": 60, "length": 16,
                                                    "seed": 0}, 12, 0, 12)
    dt = float(task.model_defaults()["dt"])
    runs = {p: LR.initial_gradients(p, 4, 0, dt, evalset) for p in LR.LR_PARAMETERISATIONS}
    ref_g = np.array(runs["direct"]["init_grad"])
    ref_G = np.array(runs["direct"]["init_G"])
    tol = tolerance("float64", n_ops=16 * 12)
    for p, run in runs.items():
        assert run["initial_loss"] == pytest.approx(runs["direct"]["initial_loss"],
                                                   rel=tol.rtol)
        g, G = np.array(run["init_grad"]), np.array(run["init_G"])
        ok = G > 0  # "best" has G = 0 at w = 0, where f'(0) = 0 and the gradient vanishes
        assert tol.allclose(g[ok] / G[ok], ref_g[ok] / ref_G[ok]), p
        assert np.all(g[~ok] <= tol.atol * np.max(g))


def test_lr_initial_model_is_the_one_training_started_from(smoke, store):
    """The analysis rebuilds the initial model from the run's seed: it must be the model
    training started from (a run of 0 steps would leave it unchanged)."""
    from rnnmem.experiments import execute
    from rnnmem.models import build_model

    run = LR._protocols(R.Context("smoke", Path(".")))[0].runs()[0]
    res = execute([run], store=store, progress=False)[0]
    trained = res.model()
    p, m = run.model_options["parameterisation"], run.model_options["width"]
    task, _ = LR.lr_evalset(run.task, dict(run.task_options), run.config.batch_size,
                            run.seed, 4)
    zero = run.replace(train__steps=1, train__lr=1e-300)
    z = execute([zero], store=store, progress=False)[0].model()
    m0 = build_model("diagonal_ssm", width=m, parameterisation=p,
                     dt=float(task.model_defaults()["dt"]), dtype="float64", device="cpu",
                     seed=run.seed)
    tol = tolerance("float64", n_ops=4)
    assert tol.allclose(z.w.detach().numpy(), m0.w.detach().numpy())
    assert not np.allclose(trained.w.detach().numpy(), m0.w.detach().numpy())


def test_rate_fits_recover_known_rates():
    ms = np.arange(1, 11)
    geo = RATE._rate_fits(ms, 3.0 * 2.5 ** (-ms.astype(float)), floor=0.0)
    tol = tolerance("float64", n_ops=10, cond=float(ms.max()))
    assert geo["kind"] == "geometric"
    assert tol.allclose(geo["geometric_ratio"], 2.5)
    alg = RATE._rate_fits(ms, 0.7 * ms.astype(float) ** -1.5, floor=0.0)
    assert alg["kind"] == "algebraic"
    assert tol.allclose(alg["algebraic_order"], 1.5)
    exact = RATE._rate_fits(ms, np.full(ms.shape, 1e-17), floor=1e-15)
    assert exact["kind"] == "exact"


def test_loglog_slope_and_log_corr():
    x = np.array([2.0, 4.0, 8.0, 16.0])
    tol = tolerance("float64", n_ops=4, cond=10.0)
    assert tol.allclose(C.loglog_slope(x, 5 * x**-0.75), -0.75)
    assert math.isnan(C.loglog_slope([2.0], [1.0]))
    g = np.geomspace(1e-3, 1e2, 9)
    r, n = LR._log_corr(3 * g, g)
    assert n == 9 and tol.allclose(r, 1.0)
    assert math.isnan(LR._log_corr(np.array([1.0, 0.0]), np.array([1.0, 1.0]))[0])


def test_slowest_rate_matches_the_memory_decay():
    """_slowest_rate reads the spectrum; a one-mode model's closed-form memory decays at it."""
    from rnnmem.models import build_model

    mdl = build_model("diagonal_ssm", width=1, parameterisation="softplus", dt=0.5,
                      decay_range=(0.3, 0.3), dtype="float64", device="cpu", seed=1)
    r = C.slowest_rate(SimpleNamespace(model=mdl))
    assert tolerance("float64", cond=10.0).allclose(r, 0.3)
    t = 0.5 * np.arange(200)
    fit = classify_decay(t, mdl.memory_function(t), tail=0.5)
    assert fit.kind == "exponential"
    assert tolerance("float64", n_ops=t.size, cond=float(t.max())).allclose(fit.rate, r)
    # discrete residual RNN: A = 1 + dt w, rate -log|A|/dt
    rnn = build_model("rnn", width=3, recurrence="diagonal", dt=1.0, dtype="float64",
                      device="cpu", seed=0)
    with torch.no_grad():
        w = rnn.w.detach().numpy()
    expect = -np.log(np.max(np.abs(1 + w)))
    assert tolerance("float64").allclose(
        C.slowest_rate(SimpleNamespace(model=rnn)), expect)


def test_sizes_by_budget():
    for b in R.BASE_BUDGETS:
        s = C.sizes(R.Context(b, Path(".")))
        assert len(s.widths) >= 3  # a slope with an error needs three widths
        assert list(s.betas) == sorted(s.betas)
        assert s.to_dict()["widths"] == list(s.widths)
        # the protocol's runs are these sizes
        run = TABLE.table_protocol().at(b).runs()[0]
        assert run.config.steps == s.steps and run.task_options["length"] == s.length
        assert run.evaluate.betas() == pytest.approx(list(s.betas), rel=1e-12)
        assert run.evaluate.perturbation["repeats"] == s.repeats
    q = C.sizes(R.Context("quick", Path(".")))
    assert q.widths == (2, 4, 8, 16)
    # these claims have no medium size of their own: medium is quick
    assert C.sizes(R.Context("medium", Path("."))) == q
    assert TABLE.table_protocol().budgets.keys() >= {"smoke", "quick", "full"}


def test_claim_protocols_are_registered_and_cover_the_claims():
    """Every training claim's runs are runs of registered protocols at the same budget, so
    ``rnnmem run NAME --budget B`` trains what ``rnnmem verify --budget B`` reads."""
    from rnnmem.experiments import get_protocol, protocol_names

    R.load_claims()
    names = set(protocol_names())
    assert {"curse-of-memory-table", "activations-no-relief", "inverse-approximation",
            "approximation-rate", "stable-reparam-lr-robustness",
            "frozen-memory-length-generalisation", "precision-dependence",
            "frozen-memory-ptb"} <= names
    for b in R.BASE_BUDGETS:  # medium: tests/test_budget_medium.py
        registered = set()
        for n in names - {"smoke-sweep"}:
            registered |= {r.hash for r in get_protocol(n).at(b).runs()}
        ctx = R.Context(b, Path("."))
        for c in R.all_claims():
            if c.protocols is None:
                continue
            got = {r.hash for p in c.protocols(ctx) for r in p.runs()}
            assert got <= registered, (c.id, b)
