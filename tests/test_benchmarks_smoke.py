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
from benchmarks.__main__ import _crossover_summary, _recurrence_row, main

MODULES = {"b": "bench_memory", "c": "bench_training", "d": "bench_perturb",
           "e": "bench_stacks", "f": "bench_verify", "g": "bench_amplitude", "h": "bench_round2",
           "i": "bench_experiments"}


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
         "T": 4, "fastest": "loop", "auto": "scan", "fwd_bwd_s": {"loop": 1.0},
         "auto_vs_fastest": 1.5},
        {"bench": "recurrence", "row": "something new", "x": 1},
    ]
    out = [_recurrence_row(r) for r in rows]
    for r in out:
        C.check_row(r)
        assert r["section"] == "a"
    assert out[1]["met"] is True and out[1]["ratio"] == 12.0
    assert out[2]["ratio"] == 1.0 and "T^1.00" in C.format_table(out)
    assert out[3]["ratio"] == 1.5 and out[3]["values"]["auto"] == "scan"
    summary = _crossover_summary([rows[3], {**rows[3], "T": 8, "auto_vs_fastest": 2.5}])
    assert len(summary) == 1 and summary[0]["ratio"] == 2.5
    C.check_row(summary[0])


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
    if C.cpu_steal() is not None:  # each section's stolen share, from /proc/stat
        assert set(head["steal_fraction_by_section"]) == {"b", "f"}
        assert all(0 <= f <= 1 for f in head["steal_fraction_by_section"].values())


def test_steal_fraction_reads_proc_stat_and_divides_the_differences():
    assert C.steal_fraction((10, 1000), (40, 1100)) == pytest.approx(0.3)
    assert C.steal_fraction(None, (1, 2)) is None
    assert C.steal_fraction((5, 100), (5, 100)) is None  # no time passed
    now = C.cpu_steal()
    if now is not None:
        steal, total = now
        assert isinstance(steal, int) and 0 <= steal <= total


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


# ---------------------------------------------------------------------------------------
# fast paths added for the benchmark targets keep their slow references (compared here)
# ---------------------------------------------------------------------------------------
def _z_cases(n, gen):
    import torch

    return {"positive": 0.05 + 0.9 * torch.rand(n, generator=gen),
            "mixed sign": 2 * torch.rand(n, generator=gen) - 1,
            "complex": torch.polar(0.2 + 0.75 * torch.rand(n, generator=gen),
                                   6.0 * torch.rand(n, generator=gen))}


@pytest.mark.parametrize("kind", ["positive", "mixed sign", "complex"])
@pytest.mark.parametrize("length", [1, 2, 3, 7, 50, 401])
def test_geometric_sums_match_reference(kind, length):
    import torch

    from rnnmem.models._common import geometric_sums, geometric_sums_reference
    from rnnmem.numerics import tolerance

    gen = torch.Generator().manual_seed(length)
    n = 9
    z = _z_cases(n, gen)[kind].to(torch.float64 if kind != "complex" else torch.complex128)
    K = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    fast, ref = geometric_sums(z, K, length), geometric_sums_reference(z, K, length)
    assert fast.shape == ref.shape == (length, 3)
    k = torch.arange(length, dtype=torch.float64)
    scale = float(((z.abs()[None] ** k[:, None]) @ K.abs()).max())
    # powers ~ u k |log z| each, then a sum of n terms
    cond = 1 + float((k.max() * z.abs().log().abs()).max())
    tol = tolerance("float64", n_ops=n + 4, cond=cond, scale=scale)
    assert tol.allclose(fast.numpy(), ref.numpy()), tol.max_violation(fast.numpy(), ref.numpy())


def test_geometric_sums_gradient_matches_reference():
    import torch

    from rnnmem.models._common import geometric_sums, geometric_sums_reference
    from rnnmem.numerics import tolerance

    gen = torch.Generator().manual_seed(0)
    z = (0.1 + 0.8 * torch.rand(5, generator=gen, dtype=torch.float64)).requires_grad_()
    K = torch.randn(5, 2, generator=gen, dtype=torch.float64).requires_grad_()
    g = torch.randn(30, 2, generator=gen, dtype=torch.float64)
    gf = torch.autograd.grad((geometric_sums(z, K, 30) * g).sum(), (z, K))
    gr = torch.autograd.grad((geometric_sums_reference(z, K, 30) * g).sum(), (z, K))
    tol = tolerance("float64", n_ops=60, cond=30.0, scale=float(max(a.abs().max() for a in gr)))
    for a, b in zip(gf, gr):
        assert tol.allclose(a.numpy(), b.numpy())


@pytest.mark.parametrize("time", ["continuous", "discrete"])
@pytest.mark.parametrize("grid", ["uniform", "uniform offset", "irregular", "short"])
def test_diagonal_memory_function_matches_reference(time, grid):
    import numpy as np

    from rnnmem.models._common import (diagonal_memory_function,
                                       diagonal_memory_function_reference)
    from rnnmem.numerics import tolerance

    rng = np.random.default_rng(3)
    n, d, p = 6, 2, 3
    if time == "continuous":
        lam = -np.exp(rng.uniform(-3, 0.5, n)) + 1j * rng.uniform(-2, 2, n)
        step = 0.05
    else:
        lam = rng.uniform(0.1, 0.97, n) * np.exp(1j * rng.uniform(-2, 2, n))
        step = 1.0
    t = {"uniform": step * np.arange(300), "uniform offset": 7 * step + step * np.arange(97),
         "irregular": np.sort(rng.uniform(0, 40, 50)) if time == "continuous"
         else np.sort(rng.choice(200, 50, replace=False)).astype(float),
         "short": step * np.arange(2)}[grid]
    U, C = rng.standard_normal((n, d)), rng.standard_normal((p, n))
    fast = diagonal_memory_function(lam, U, C, t, time)
    ref = diagonal_memory_function_reference(lam, U, C, t, time)
    assert fast.shape == ref.shape == (t.size, p)
    cond = 1 + float(np.max(np.abs(np.log(np.abs(lam if time == "discrete" else np.exp(lam))))
                            * t.max()))
    tol = tolerance("float64", n_ops=n * d + 4, cond=cond,
                    scale=float(np.abs(C).sum(1).max() * np.abs(U).max()))
    assert tol.allclose(fast, ref), tol.max_violation(fast, ref)


def test_diagonal_ssm_impulse_response_matches_reference():
    import torch

    from rnnmem.models import DiagonalSSM
    from rnnmem.numerics import tolerance

    for time, par in (("continuous", "softplus"), ("discrete", "lru")):
        m = DiagonalSSM(7, input_dim=2, output_dim=3, parameterisation=par, time=time,
                        dtype="float64", device="cpu", seed=1)
        with torch.no_grad():
            fast, ref = m.impulse_response(123), m._impulse_response_reference(123)
        assert fast.shape == ref.shape == (123, 3, 2)
        tol = tolerance("float64", n_ops=20, cond=123.0, scale=float(ref.abs().max()))
        assert tol.allclose(fast.detach().numpy(), ref.detach().numpy())


@pytest.mark.parametrize("grow", [False, True])
def test_superposition_update_matches_reference(grow):
    """The update used by step/grow_step against the loop reference on the padded state."""
    import torch

    from rnnmem.models.stacks import (SuperpositionControls, SuperpositionStack,
                                      _superposition_update)
    from rnnmem.numerics import tolerance

    gen = torch.Generator().manual_seed(5)
    B, K, d, W = 3, 2, 5, 4
    dn = d + 1 if grow else d
    f64 = dict(generator=gen, dtype=torch.float64)
    state = torch.randn(B, K, d, W, **f64)
    actions = torch.softmax(torch.randn(B, K, 3, **f64), -1)
    values = torch.rand(B, K, W, **f64)
    out = _superposition_update(state, actions, values, dn)
    stack = SuperpositionStack(None, W, n_stacks=K)
    ref = stack._reference_step(stack.pad(state, dn), SuperpositionControls(actions, values))
    tol = tolerance("float64", n_ops=4, scale=float(state.abs().max() + 1))
    assert out.shape == ref.shape == (B, K, dn, W)
    assert tol.allclose(out.numpy(), ref.numpy())


def test_stack_rnn_growing_stack_equals_full_depth_run():
    """The model's growing stack (forward from an empty state) gives the logits and the
    final state of a run at full depth from the same empty state, also under vmap."""
    import torch

    from rnnmem.models import StackRNN
    from rnnmem.numerics import tolerance

    for stack in ("superposition", "stratification"):
        m = StackRNN(4, controller="srnn", stack=stack, width=5, stack_width=3,
                     n_stacks=2, stack_depth=6, dtype="float64", device="cpu", seed=2)
        x = torch.randint(0, 4, (3, 9), generator=torch.Generator().manual_seed(0))
        y, st = m(x, return_state=True)  # growing path (fresh state)
        y_full, st_full = m(x, state=m.initial_state(3), return_state=True)  # full depth
        tol = tolerance("float64", n_ops=9 * 30, cond=10.0)
        assert tol.allclose(y.detach().numpy(), y_full.detach().numpy())
        for a, b in zip(torch.utils._pytree.tree_leaves(st.stack),
                        torch.utils._pytree.tree_leaves(st_full.stack)):
            assert a.shape == b.shape and tol.allclose(a.detach().numpy(), b.detach().numpy())
        # vmapped over stacked parameters, as the batched perturbation sweep does
        params = {n: p.detach()[None].expand(2, *p.shape) for n, p in m.named_parameters()}
        yv = torch.func.vmap(lambda ps: torch.func.functional_call(m, ps, (x,)))(params)
        assert tol.allclose(yv[1].detach().numpy(), y.detach().numpy())


def test_the_step_loop_threads_row_times_both_and_names_the_rules_choice():
    import torch

    from benchmarks import bench_stacks
    from rnnmem.models import _device

    assert bench_stacks.step_threads_rows([(2, 3)], 4, rounds=1)[0]["status"] == "not available"
    torch.set_num_threads(2)
    try:
        (r,) = bench_stacks.step_threads_rows([(2, 3)], 4, rounds=1)
    finally:
        torch.set_num_threads(1)
    C.check_row(r)
    v = r["values"]
    # batch 2 x 4H = 12 gate rows x (10 symbols + read 8 + hidden 3)
    assert v["work_per_step"] == 2 * 12 * 21 and v["rule"] == "one thread"
    assert v["threshold"] == _device.SERIAL_STEP_WORK
    assert r["seconds"] == v["one_thread_s"] and v["threaded_s"] > 0
    assert r["ratio"] == pytest.approx(v["threaded_s"] / v["one_thread_s"])


def test_the_user_backward_row_times_the_rule_against_a_threaded_backward():
    import torch

    from benchmarks import bench_stacks
    from rnnmem.models import _device

    cases = bench_stacks._user_cases(2, 3, 4, tiny=True)
    assert bench_stacks.user_backward_rows(cases, rounds=1)[0]["status"] == "not available"
    begin = _device._begin_serial_backward
    torch.set_num_threads(2)
    try:
        rows = bench_stacks.user_backward_rows(cases, rounds=1, judge=False)
    finally:
        torch.set_num_threads(1)
    assert _device._begin_serial_backward is begin  # the "off" side put the hook back
    assert len(rows) == 2
    for r, (_, model, x) in zip(rows, cases):
        C.check_row(r)
        v = r["values"]
        assert r["target"] is None and r["met"] is None
        assert v["work_per_step"] == model.step_work(int(x.shape[0])) > 0
        assert r["ratio"] == pytest.approx(v["threaded_backward_s"] / r["seconds"])
