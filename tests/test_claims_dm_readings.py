"""Das & Mali's precision and memory claims read under DeepMind's ``dm`` protocol: the two
readings of ``claims_stack_dm`` on the smoke ``dm`` runs (trained into a temporary store)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from rnnmem.errors import InvalidParameterError
from rnnmem.experiments import RunStore
from rnnmem.experiments.builtin_dm import MEMORY_CELLS
from rnnmem.proofs_check import claims_stack_dm as D
from rnnmem.proofs_check.registry import Context, get_claim, load_claims

pytestmark = pytest.mark.usefixtures("one_thread")

STACKS = {m for m, _ in MEMORY_CELLS}


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    root = tmp_path_factory.mktemp("dm")
    return Context("smoke", root / "out", store=RunStore(root / "store"))


@pytest.fixture(scope="module")
def precision(ctx):
    return D.dm_precision_reading(ctx, "precision-dependence", "smoke")


@pytest.fixture(scope="module")
def memory(ctx):
    return D.dm_memory_reading(ctx, "stack-memory-function", "smoke")


def test_every_nth_keeps_first_and_last():
    assert D.every_nth(range(41, 61), 5) == (41, 46, 51, 56, 60)
    assert D.every_nth(range(41, 62), 5) == (41, 46, 51, 56, 61)
    assert D.every_nth([42, 41], 5) == (41, 42)
    assert D.every_nth(range(1, 41, 2), 1) == tuple(range(1, 41, 2))
    with pytest.raises(InvalidParameterError):
        D.every_nth([], 5)
    with pytest.raises(InvalidParameterError):
        D.every_nth([41], 0)


def test_precision_reading_is_the_stored_score_in_float32(ctx, precision):
    metrics, lines, figs, summary = precision
    assert metrics["protocol"] == "dm" and metrics["budget"] == "smoke"
    table = metrics["per_task"]["reverse_string"]
    assert set(table) == STACKS  # the fully trained cells only, the memory-less one included
    chosen = metrics["evaluated"]["lengths"]["reverse_string"]
    runs = [r for r in ctx.results(D.dm_cells_at("smoke", "none", "sequence"))]
    assert {r.run.config.freeze for r in runs} == {"none"}
    for r in runs:
        depth = "none" if r.run.model_options["stack"] == "none" else "sequence"
        test, train = r.dm_reports("test")[depth], r.dm_reports("train")[depth]
        # every 5th length, first and last kept: at smoke every test length (41, 42) and
        # training lengths 1 and 3 of 1..3; k is the run's own (2)
        assert chosen["test"] == test.lengths == [41, 42] and chosen["train"] == [1, 3]
        assert chosen["k"] == test.k == 2
        row = table[r.run.model_options["stack"]]
        # the float32-trained weights run in float32 give exactly the run's stored
        # per-length accuracies (the same strings: default_rng([seed, n]))
        assert row["float32"]["score"]["mean"] == test.score
        stored = float(np.mean([train.accuracy[train.lengths.index(n)] for n in (1, 3)]))
        assert row["float32"]["train_score"]["mean"] == stored
        assert set(row) == set(D.PRECISION_DTYPES)
        assert row["float64"]["drop"]["mean"] == 0.0
        for dt in ("bfloat16", "float16"):
            d = row[dt]["drop"]["mean"]
            assert math.isfinite(d) and -1 <= d <= 1
            assert math.isclose(d, row["float64"]["score"]["mean"] - row[dt]["score"]["mean"])
    assert not metrics["unsupported_on_cpu"]
    assert "k = min(k, 16) = 2" in "\n".join(lines) and "dm protocol (smoke, 1 seed" in summary
    assert metrics["solved"] == [f"reverse_string/{c}" for c, row in table.items()
                                 if row["float64"]["train_score"]["mean"] >= D.SOLVED]
    assert all((ctx.out_dir / f).is_file() for f in figs)


def test_memory_reading_profiles_every_cell(ctx, memory):
    metrics, lines, figs, summary = memory
    cells = metrics["per_task"]["reverse_string"]
    assert set(cells) == {f"{m}+frozen_{f}" if f != "none" else m for m, f in MEMORY_CELLS}
    runs = ctx.results(D.dm_cells_at("smoke", train_depth="sequence"))
    table = D.dm_memory_table(runs, strings=2)
    for v in table["reverse_string"].values():
        c = np.asarray(v["curve"])
        # tapes at the longest training length (3): 3 inputs then 3 blanks
        assert v["length"] == 3 and c.shape == (6,) == (v["steps"],)
        assert np.all(np.isfinite(c)) and np.all(c > 0)
        assert math.isfinite(v["rate"]["mean"]) and v["rate"]["n"] == 1
    comps = metrics["comparisons"]
    frozen = {m for m, f in MEMORY_CELLS if f == "memory"}
    assert set(comps) == {f"reverse_string/{m}" for m in frozen}
    for c in comps.values():
        assert c["seeds"] == 1 and c["spread"] == 0.0  # one seed: no spread invented
        assert c["slower"] == (c["rate_frozen"] < c["rate_full"])
        assert isinstance(c["learned"], bool)
    assert metrics["slower"] == sum(c["slower"] for c in comps.values())
    assert f"in {metrics['slower']} of {len(comps)} task/memory pairs" in summary
    assert "1 seed, no seed spread" in "\n".join(lines)
    assert all((ctx.out_dir / f).is_file() for f in figs)


def test_claims_list_the_dm_runs_they_read():
    load_claims()
    ctx = Context("smoke", Path("."))
    prec = get_claim("precision-dependence").protocols(ctx)
    mem = get_claim("stack-memory-function").protocols(ctx)
    frozen_claim = get_claim("frozen-memory-length-generalisation").protocols(ctx)
    # the precision and memory readings use the cells trained at the sequence length; the
    # freezing claim reads every cell, both training depths
    dm_prec = {r.hash for r in D.dm_cells_at("smoke", "none", "sequence").runs()}
    dm_seq = {r.hash for r in D.dm_cells_at("smoke", train_depth="sequence").runs()}
    dm_all = {r.hash for r in D.dm_cells_at("smoke").runs()}
    assert len(dm_prec) == 4 and len(dm_seq) == 7 and len(dm_all) == 11
    assert dm_prec <= {r.hash for p in prec for r in p.runs()}
    assert dm_seq <= {r.hash for p in mem for r in p.runs()}
    assert dm_all <= {r.hash for p in frozen_claim for r in p.runs()}


def test_readings_are_kept_in_the_store_and_read_back(ctx, precision, memory):
    """The second reading reads what the first computed (RunResult.derived): same numbers,
    no model evaluated again."""
    from rnnmem.proofs_check.claims_stack_dm import dm_memory_reading, dm_precision_reading

    root = ctx.run_store().root / "derived"
    assert list(root.glob("*/dm-precision-*.json")) and list(root.glob("*/dm-jacobian-*.json"))
    again_p = dm_precision_reading(ctx, "precision-dependence", "smoke")[0]
    again_m = dm_memory_reading(ctx, "stack-memory-function", "smoke")[0]
    assert again_p["per_task"] == precision[0]["per_task"]
    assert again_m["per_task"] == memory[0]["per_task"]


def test_dm_trains_the_stacks_with_a_depth_at_both_training_depths():
    from rnnmem.experiments.builtin_dm import DM_AXIS, DM_CELLS, TRAIN_DEPTHS

    assert TRAIN_DEPTHS == ("sequence", 30)
    for m, f in MEMORY_CELLS:
        depths = {d for m2, f2, d in DM_CELLS if (m2, f2) == (m, f)}
        # DeepMind trains and tests at 30; the nondeterministic stack has no depth to fix
        assert depths == ({"sequence", 30} if m in ("superposition", "stratification")
                          else {"sequence"})
    runs = D.dm_protocol_at("smoke").runs()
    assert len(runs) == len(DM_CELLS) == 11
    got = {(r.model_options["stack"], r.config.freeze, r.model_options["stack_depth"])
           for r in runs}
    assert got == set(DM_CELLS)
    assert DM_AXIS in D.dm_protocol_at("smoke").to_toml()  # a TOML-writable axis


def test_cell_names_carry_a_fixed_training_depth():
    from rnnmem.experiments import Run

    def run(stack, freeze, depth):
        opts = {"name": "stack_rnn", "stack": stack, "width": 4, "stack_width": 2}
        if depth is not None:
            opts["stack_depth"] = depth
        return Run.make(opts, "dm:reverse_string", train={"freeze": freeze, "steps": 1})

    assert D._cell(run("superposition", "none", None)) == "superposition"
    assert D._cell(run("superposition", "none", "sequence")) == "superposition"
    assert D._cell(run("superposition", "none", 30)) == "superposition@30"
    assert D._cell(run("stratification", "memory", 30)) == "stratification@30+frozen_memory"
    assert D._cell(run("none", "none", "sequence")) == "none"


def test_the_freezing_reading_pairs_cells_within_one_training_depth(ctx):
    results = ctx.results(D.dm_protocol_at("smoke"))
    table = D.dm_table(results)["reverse_string"]
    assert {"superposition@30", "superposition@30+frozen_memory", "stratification@30",
            "stratification@30+frozen_memory"} <= set(table)
    _, comps = D.dm_verdict({"reverse_string": table})
    # every frozen cell against the fully trained cell of its own memory and training depth
    assert {k.rsplit("/", 1)[0] for k in comps} == {
        f"reverse_string/{m}" for m in ("superposition", "superposition@30", "stratification",
                                        "stratification@30", "nondeterministic")}
    # at smoke the strings (training lengths 1..3, test 41..42: tapes far below 30 on the
    # training side) never fill a depth-30 stack in training, so training at 30 equals
    # training at the sequence length: the same losses to the last bit
    by = {(r.run.model_options["stack"], r.run.config.freeze,
           r.run.model_options["stack_depth"]): r for r in results}
    for m in ("superposition", "stratification"):
        for f in ("none", "memory"):
            a, b = by[(m, f, "sequence")], by[(m, f, 30)]
            fa, fb = a.metrics["final"], b.metrics["final"]
            for k in ("train_loss", "valid_loss", "grad_norm"):
                assert fa[k] == fb[k], (m, f, k)
            assert a.dm_reports("test")["30"].accuracy == b.dm_reports("test")["30"].accuracy
