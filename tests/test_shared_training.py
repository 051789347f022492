"""Runs that differ only in their evaluation share one training in a store
(Run.training_hash, RunStore.trained_by), and the evaluations of the shared weights equal
those of a fresh training."""

import json

import pytest

from rnnmem.experiments import Run, RunStore, execute


def _run(norm="spectral", **train):
    return Run.make({"name": "com_diagonal_rnn", "width": 3},
                    {"name": "lf:exponential", "length": 8, "n_samples": 32},
                    train={"steps": 4, "batch_size": 8, "dtype": "float64", **train},
                    evaluate={"perturbation": {"betas": [1e-2, 1e-1], "repeats": 2,
                                               "n_eval": 8, "norm": norm}})


def test_training_hash_ignores_only_the_evaluation():
    a, b = _run("spectral"), _run("inf")
    assert a.hash != b.hash
    assert a.training_hash == b.training_hash
    assert _run(steps=5).training_hash != a.training_hash
    assert a.replace(seed=1).training_hash != a.training_hash


def test_second_run_evaluates_the_first_runs_weights(tmp_path):
    a, b = _run("spectral"), _run("inf")
    store = RunStore(tmp_path / "shared")
    res = execute([a, b], store=store, progress=False)
    # one training; the second run evaluates its weights and is counted as such
    assert (res.report["trained"], res.report["reused"], res.report["cached"]) == (1, 1, 0)
    ra, rb = store.load(a), store.load(b)
    assert "weights_from" not in ra.metrics
    assert rb.metrics["weights_from"] == a.hash
    assert rb.provenance()["weights_from"] == a.hash
    assert store.trained_by(b) == a.hash
    sa, sb = ra.model().state_dict(), rb.model().state_dict()
    assert sa.keys() == sb.keys()
    assert all(bool((sa[k] == sb[k]).all()) for k in sa)
    assert rb.curve() == ra.curve()
    # the same run trained alone, in an empty store, evaluates to the same bits
    fresh = RunStore(tmp_path / "fresh")
    execute([b], store=fresh, progress=False)
    rf = fresh.load(b)
    assert "weights_from" not in rf.metrics
    assert json.dumps(rf.evaluations(), sort_keys=True) == \
        json.dumps(rb.evaluations(), sort_keys=True)
    def no_time(d):
        return {k: v for k, v in d.items() if k != "time_s"}

    assert no_time(rf.metrics["final"]) == no_time(rb.metrics["final"])


def test_a_damaged_index_entry_means_training_again(tmp_path):
    a, b = _run("spectral"), _run("inf")
    store = RunStore(tmp_path / "s")
    execute([a], store=store, progress=False)
    idx = store.root / "by-training" / a.training_hash
    idx.write_text("0123456789abcdef" * 4 + "\n")  # a run that is not in the store
    assert store.trained_by(b) is None
    execute([b], store=store, progress=False)
    assert "weights_from" not in store.load(b).metrics


def test_a_diverged_training_is_not_shared(tmp_path):
    a = _run("spectral", lr=1e30)
    store = RunStore(tmp_path / "s")
    execute([a], store=store, progress=False)
    if store.load(a).ok:
        pytest.skip("this lr did not diverge here")
    assert store.trained_by(_run("inf", lr=1e30)) is None


def test_derived_values_are_computed_once_per_store(tmp_path):
    a = _run("spectral")
    store = RunStore(tmp_path / "d")
    execute([a], store=store, progress=False)
    r = store.load(a)
    calls = []

    def compute():
        calls.append(1)
        return {"x": [1.0, 2.5], "n": 3, "nan": float("nan")}

    v1 = r.derived("thing", {"k": 1}, compute)
    v2 = store.load(a).derived("thing", {"k": 1}, compute)
    assert v1 == v2 == {"x": [1.0, 2.5], "n": 3, "nan": None}  # as JSON keeps it
    assert len(calls) == 1
    store.load(a).derived("thing", {"k": 2}, compute)  # other parameters: computed again
    assert len(calls) == 2
    # a damaged file is computed again, not an error
    f = next((store.root / "derived" / a.hash).glob("thing-*.json"))
    f.write_text("{not json")
    assert store.load(a).derived("thing", {"k": 1}, compute)["n"] == 3
    assert len(calls) == 3
