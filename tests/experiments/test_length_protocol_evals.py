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
