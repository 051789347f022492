"""``evaluate.dm`` / ``evaluate.ns``: DeepMind's and DuSell-Chiang's protocols computed by
the worker and stored with the run (tiny sizes: seconds)."""

import numpy as np
import pytest

from rnnmem.errors import InvalidParameterError
from rnnmem.experiments import Evaluation, Run, execute
from rnnmem.train import evaluate_dm

_TRAIN = {"steps": 2, "batch_size": 4, "lr": 0.01, "device": "cpu", "threads": 1,
          "eval_every": 0, "checkpoint_every": 0}


def _dm_run(stack, **dm):
    return Run.make({"name": "stack_rnn", "controller": "lstm", "stack": stack, "width": 4,
                     "stack_width": 2}, {"name": "dm:reverse_string", "valid_size": 4},
                    seed=3, train=_TRAIN,
                    evaluate={"dm": {"lengths": "41:43", "train_lengths": "1:3", "k": 3,
                                     **dm}})


def test_dm_evaluation_defaults_and_toml_round_trip():
    ev = Evaluation(dm={})
    assert ev.dm["lengths"] == "41:500" and ev.dm["k"] == 512
    assert list(ev.dm["depths"]) == ["sequence", 30]
    run = _dm_run("superposition")
    assert Run.from_toml(run.to_toml()).hash == run.hash
    # a run without dm/ns evaluations keeps its hash (nothing added to its dict)
    assert "dm" not in Run.make("rnn", "lf:exponential").to_dict()["evaluate"]


@pytest.mark.parametrize("bad, field", [({"k": 0}, "evaluate.dm.k"),
                                        ({"lengths": "50:41"}, "evaluate.dm.lengths"),
                                        ({"lengths": []}, "evaluate.dm.lengths"),
                                        ({"depths": ["sequence", 0]}, "evaluate.dm.depths[1]"),
                                        ({"depths": [30, 30]}, "evaluate.dm.depths"),
                                        ({"kk": 1}, "evaluate.dm.kk")])
def test_dm_evaluation_bad_input_names_the_field(bad, field):
    with pytest.raises(InvalidParameterError, match=field.replace("[", r"\[")):
        Evaluation(dm=bad)


def test_dm_and_ns_need_their_task_family():
    with pytest.raises(InvalidParameterError, match="evaluate.dm"):
        Run.make("rnn", "lf:exponential", evaluate={"dm": {}})
    with pytest.raises(InvalidParameterError, match="evaluate.ns"):
        Run.make("rnn", "dm:reverse_string", evaluate={"ns": {}})


def test_worker_stores_dm_reports_at_both_depths(store):
    runs = [_dm_run("superposition"), _dm_run("none"), _dm_run("nondeterministic")]
    res = execute(runs, store=store, progress=False)
    assert not res.failed
    sup, none, nd = (res.get(r) for r in runs)
    reps = sup.dm_reports()
    assert sorted(reps) == ["30", "sequence"]
    assert reps["sequence"].lengths == [41, 42, 43] and reps["sequence"].k == 3
    assert sorted(sup.dm_reports("train")["sequence"].lengths) == [1, 2, 3]
    # the stored sequence-depth curve is evaluate_dm of the stored model, bit for bit
    direct = evaluate_dm(sup.model(), "reverse_string", [41, 42, 43], 3, seed=3)
    assert reps["sequence"].accuracy == direct.accuracy
    ev = sup.metrics["evaluation"]["dm"]
    for d in ("sequence", "30"):
        assert np.isclose(ev[f"retained_{d}"], ev[f"score_{d}"] / ev[f"train_score_{d}"])
        r = reps[d]
        assert all(lo <= a <= hi for lo, a, hi in zip(r.band_lo, r.accuracy, r.band_hi))
    assert list(none.dm_reports()) == ["none"]
    assert list(nd.dm_reports()) == ["sequence"]  # no depth limit to fix
    assert nd.evaluations()["dm"]["not_applicable"] == [30]


def test_worker_stores_ns_report(store):
    run = Run.make({"name": "stack_rnn", "controller": "lstm", "stack": "superposition",
                    "width": 4, "stack_width": 2}, "ns:marked_reversal", seed=1, train=_TRAIN,
                   evaluate={"ns": {"lengths": "41:44", "k": 2}})
    r = execute([run], store=store, progress=False).get(run)
    rep = r.ns_report()
    assert rep.lengths and all(41 <= n <= 44 for n in rep.lengths) and rep.k == 2
    assert np.isclose(rep.score, np.mean(rep.ce_diff))
    assert r.metrics["evaluation"]["ns"]["score"] == rep.score
    with pytest.raises(InvalidParameterError, match="evaluate.dm"):
        r.dm_reports()


@pytest.mark.parametrize("name", ["dm", "ns"])
def test_dm_ns_protocols_registered_and_toml_printable(name):
    from rnnmem.experiments import Protocol, get_protocol, protocol_names

    assert name in protocol_names()
    p = get_protocol(name)
    q = Protocol.from_toml(p.to_toml())
    for b in ("smoke", "quick", "medium", "full"):
        assert [r.hash for r in q.at(b).runs()] == [r.hash for r in p.at(b).runs()]
    runs = p.at("quick").runs()
    cells = {(r.model_options["stack"], r.config.freeze) for r in runs}
    assert cells == {("none", "none")} | {(s, f) for s in ("superposition", "stratification",
                                                           "nondeterministic")
                                          for f in ("none", "memory")}
    assert len({r.task for r in runs}) == (4 if name == "dm" else 5)
    assert all(getattr(r.evaluate, name) is not None for r in runs)
    full = p.at("full").runs()[0]
    if name == "dm":
        assert full.evaluate.dm["lengths"] == "41:500" and full.evaluate.dm["k"] == 512
        assert full.evaluate.dm["train_lengths"] == "1:40"


def test_dm_protocol_smoke_runs_in_seconds(store):
    from rnnmem.experiments import get_protocol

    res = get_protocol("dm").at("smoke").execute(store=store, progress=False)
    # 7 memory x freezing cells, the 4 with a stack depth also trained at 30
    assert not res.failed and len(res) == 11
    assert sum(r.run.model_options["stack_depth"] == 30 for r in res) == 4
    for r in res:
        reps = r.dm_reports()
        assert all(rep.lengths == [41, 42] for rep in reps.values())


def test_ns_protocol_smoke_runs_in_seconds(store):
    from rnnmem.experiments import get_protocol

    res = get_protocol("ns").at("smoke").execute(store=store, progress=False)
    assert not res.failed and len(res) == 7
    for r in res:
        rep = r.ns_report()
        assert rep.lengths and all(40 <= n <= 41 for n in rep.lengths)
        assert all(np.isfinite(rep.ce_diff))
