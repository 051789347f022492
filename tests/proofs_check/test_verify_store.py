"""``rnnmem verify`` through a run store: a second invocation trains nothing, the claims'
protocols are listed and runnable alone, a bad executor is one line and exit 2."""

import json
from pathlib import Path

import pytest

from rnnmem.cli import main
from rnnmem.experiments import RunStore


def _verify(store, out, *extra):
    return main(["verify", "--budget", "smoke", "--only", "activations-no-relief",
                 "--store", str(store), "--out", str(out), "-q", *extra])


def test_second_verify_on_the_same_store_trains_nothing(tmp_path, capsys):
    store = tmp_path / "store"
    assert _verify(store, tmp_path / "a") == 0
    first = json.loads((tmp_path / "a" / "results.json").read_text())[0]
    n = len(RunStore(store).hashes())
    assert first["runs"] == {"total": n, "trained": n} and n > 0
    assert _verify(store, tmp_path / "b", "--jobs", "2") == 0
    second = json.loads((tmp_path / "b" / "results.json").read_text())[0]
    assert second["runs"] == {"total": n, "trained": 0}
    assert len(RunStore(store).hashes()) == n
    assert second["summary"] == first["summary"]
    assert second["metrics"]["cells"] == first["metrics"]["cells"]  # the same stored runs


def test_claim_protocols_are_listed_and_run_alone(tmp_path, capsys):
    assert main(["protocols"]) == 0
    listed = capsys.readouterr().out
    for name in ("curse-of-memory-table", "activations-no-relief", "inverse-approximation",
                 "approximation-rate", "stable-reparam-lr-robustness",
                 "frozen-memory-length-generalisation", "precision-dependence",
                 "frozen-memory-ptb"):
        assert name in listed
    store = tmp_path / "store"
    args = ["run", "activations-no-relief", "--budget", "smoke", "--store", str(store), "-q"]
    assert main(args) == 0
    assert "6 runs: 6 trained" in capsys.readouterr().out
    assert main(args) == 0
    assert "0 trained, 0 evaluated on shared weights, 6 already in the store" in capsys.readouterr().out
    # verify reads exactly those runs: nothing left to train
    assert _verify(store, tmp_path / "out") == 0
    res = json.loads((tmp_path / "out" / "results.json").read_text())[0]
    assert res["runs"] == {"total": 6, "trained": 0}


@pytest.mark.parametrize("bad", [["--executor", "slurm"], ["--jobs", "0"]])
def test_bad_executor_is_one_line_exit_2(tmp_path, capsys, bad):
    assert _verify(tmp_path / "store", tmp_path / "out", *bad) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "store").exists()


def test_a_claim_is_its_protocols_analysis(tmp_path):
    """``protocol.execute(...).analyse()`` is the claim's check on the same runs."""
    from rnnmem.experiments import get_protocol
    from rnnmem.proofs_check.registry import load_claims, run_claims

    load_claims()
    p = get_protocol("activations-no-relief")
    assert p.analysis == "activations-no-relief"
    results = p.execute(budget="smoke", store=tmp_path / "store", progress=False)
    out = results.analyse()
    assert results.report["trained"] == len(results) == 6
    (claimed,) = run_claims(["activations-no-relief"], "smoke", tmp_path / "out",
                            store=tmp_path / "store")
    assert claimed.runs == {"total": 6, "trained": 0}
    assert out["verdict"] == claimed.verdict and out["summary"] == claimed.summary
    assert out["figures"] and all(Path(f).is_file() for f in out["figures"])


def test_claim_protocols_round_trip_through_toml():
    """``rnnmem protocols NAME`` prints a file that gives the same runs at every budget."""
    from rnnmem.experiments import Protocol, get_protocol, protocol_names
    from rnnmem.proofs_check.registry import load_claims

    load_claims()
    for name in protocol_names():
        p = get_protocol(name)
        q = Protocol.from_toml(p.to_toml(), check_models=False)
        for b in p.budget_names():
            assert [r.hash for r in q.at(b).runs()] == [r.hash for r in p.at(b).runs()], \
                (name, b)


@pytest.mark.slow
def test_verify_on_ray_gives_the_local_results(tmp_path):
    """``--executor ray`` trains the runs in Ray tasks (a local instance) into the store;
    the claims' numbers are those of the local executor."""
    pytest.importorskip("ray")
    assert _verify(tmp_path / "ray", tmp_path / "a", "--executor", "ray", "--jobs", "2") == 0
    assert _verify(tmp_path / "local", tmp_path / "b") == 0
    a = json.loads((tmp_path / "a" / "results.json").read_text())[0]
    b = json.loads((tmp_path / "b" / "results.json").read_text())[0]
    assert a["runs"]["trained"] == b["runs"]["trained"] == a["runs"]["total"]
    assert a["summary"] == b["summary"]

    def cells(r):  # the measurements, not the timings
        return {k: (c["verdict"], c["reason"], c["stability"],
                    {m: t["valid_loss"] for m, t in c["train"].items()})
                for k, c in r["metrics"]["cells"].items()}

    assert cells(a) == cells(b)
    assert sorted(RunStore(tmp_path / "ray").hashes()) == sorted(
        RunStore(tmp_path / "local").hashes())
