"""Smoke test of the benchmark suite: every section runs in its tiny mode and returns
well-formed rows; the table, the JSON and the section (a) adapter hold together.

No timing is asserted (timings on a shared machine are not test material)."""

from __future__ import annotations

import argparse
import importlib
import json
import math

import pytest

from benchmarks import _common as C
from benchmarks.__main__ import _recurrence_row, main

MODULES = {"b": "bench_memory", "c": "bench_training", "d": "bench_perturb",
           "e": "bench_stacks", "f": "bench_verify"}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("section", sorted(MODULES))
def test_each_module_runs_tiny_and_returns_well_formed_rows(section):
    mod = importlib.import_module(f"benchmarks.{MODULES[section]}")
    rows = mod.run(tiny=True)
    assert rows, "no rows"
    for r in rows:
        C.check_row(r)
        assert r["section"] == section
        assert r["status"] != "error", r["note"]
    ok = [r for r in rows if r["status"] == "ok"]
    assert ok, [r["note"] for r in rows]
    for r in ok:
        assert r["seconds"] is None or r["seconds"] > 0
    json.dumps(rows)
    table = C.format_table(rows)
    assert all(r["name"] in table for r in rows)


def test_tiny_agreements_are_at_rounding_level():
    """The closed form and the estimate agree on the same system (sampled forms)."""
    import numpy as np

    from benchmarks import bench_memory

    for r in bench_memory.run(tiny=True):
        v = r["values"]
        assert v["max_abs_diff"] <= 1e3 * np.finfo(float).eps * max(1.0, v["max_abs_M"]), r


def test_check_row_rejects_malformed_rows():
    good = C.row("b", "x", seconds=1.0)
    for bad in ({**good, "section": "z"}, {**good, "seconds": -1.0},
                {**good, "seconds": math.nan}, {k: v for k, v in good.items() if k != "met"},
                {**good, "status": "fine"}, {**good, "seconds": None}):
        with pytest.raises(ValueError):
            C.check_row(bad)


def test_recurrence_rows_are_adapted():
    rows = [
        {"bench": "recurrence", "row": "bandwidth", "bytes": 8, "copy_GBps": 10.0,
         "alloc_copy_GBps": 2.0, "threads": 2},
        {"bench": "recurrence", "row": "target", "system": "time_invariant", "method": "chunked",
         "B": 1, "T": 2, "N": 3, "dtype": "float32", "fwd_s": 0.1, "fwd_bwd_s": 0.2,
         "speedup_vs_loop": 12.0, "fwd_speedup_vs_loop": 3.0, "floor_s": 0.1, "vs_floor": 2.0,
         "vs_alloc_floor": 1.0, "meets_10x_loop": True, "within_4x_floor": True},
        {"bench": "recurrence", "row": "exponent", "method": "scan", "B": 1, "N": 2,
         "T": [10, 100], "fwd_bwd_s": [0.1, 1.0], "exponent": 1.0, "exponent_le_1.1": True},
        {"bench": "recurrence", "row": "crossover", "system": "time_varying", "B": 1, "N": 2,
         "T": 4, "fastest": "loop", "fwd_bwd_s": {"loop": 1.0}, "chunked_vs_fastest": 1.5},
        {"bench": "recurrence", "row": "something new", "x": 1},
    ]
    out = [_recurrence_row(r) for r in rows]
    for r in out:
        C.check_row(r)
        assert r["section"] == "a"
    assert out[1]["met"] is True and out[1]["ratio"] == 12.0
    assert out[2]["ratio"] == 1.0 and "T^1.00" in C.format_table(out)


def test_main_writes_one_table_and_json(tmp_path, capsys):
    path = tmp_path / "out.json"
    assert main(["--tiny", "--only", "b", "f", "--threads", "1", "--json", str(path)]) == 0
    data = json.loads(path.read_text())
    head = data["header"]
    assert head["torch_threads"] == 1 and head["cpu"] and head["copy_bandwidth_GBps"] > 0
    assert {r["section"] for r in data["rows"]} == {"b", "f"}
    for r in data["rows"]:
        C.check_row(r)
    printed = capsys.readouterr().out
    assert sum(ln.startswith("sec ") for ln in printed.splitlines()) == 1  # one table


def test_verify_command_is_accepted_by_the_cli():
    from benchmarks.bench_verify import verify_command
    from rnnmem.commands import verify

    p = argparse.ArgumentParser()
    verify.add_arguments(p)
    cmd = verify_command("quick", "somewhere")
    assert cmd[1:4] == ["-m", "rnnmem", "verify"]
    args = p.parse_args(cmd[4:])
    assert args.budget == "quick" and args.quiet and args.out == "somewhere"


def test_fit_exponent_and_measure():
    assert C.fit_exponent([1, 10, 100], [2.0, 2e2, 2e4]) == pytest.approx(2.0)
    calls = []
    t = C.measure(lambda: calls.append(1) or len(calls), repeats=3, warmup=2)
    assert len(calls) == 5 and t.repeats == 3 and t.result == 5
    assert t.seconds >= 0 and len(t.all_seconds) == 3
