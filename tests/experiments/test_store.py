"""RunStore and the local executor: atomic run directories, manifests, resume, frames,
TensorBoard curves, concurrent invocations (real processes)."""

import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from exp_helpers import tiny_run
from rnnmem.errors import (CorruptCheckpointError, CorruptFileError, ExecutorError,
                           InvalidParameterError, StorageError)
from rnnmem.experiments import RunStore, execute, export_frame
from rnnmem.models import _device

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[2]
_FILES = {"run.json", "metrics.json", "curve.json", "evaluations.json", "model.pt",
          "provenance.json", "manifest.json"}


def test_a_run_directory_holds_everything(tiny_protocol, store):
    res = execute(tiny_protocol, store=store, progress=False)
    assert res.report["trained"] == 2 and not res.failed and len(res) == 2
    r = res[0]
    assert r.dir == store.path(r.run) and _FILES <= {p.name for p in r.dir.iterdir()}
    assert json.loads((r.dir / "run.json").read_text())["hash"] == r.hash
    prov = r.provenance()
    for key in ("versions", "git_commit", "device", "threads", "seed", "command", "host",
                "started", "ended"):
        assert key in prov, key
    assert set(prov["versions"]) >= {"rnnmem", "python", "torch", "numpy", "scipy", "sympy"}
    assert prov["threads"] == 1 and prov["seed"] == r.run.seed
    # the processor (another one, or another thread count, may round products otherwise)
    assert set(prov["cpu"]) == {"model", "machine", "capability", "serial_step_work"}
    assert prov["cpu"]["serial_step_work"] == _device.SERIAL_STEP_WORK
    assert prov["cpu"]["machine"] == platform.machine()
    assert prov["cpu"]["capability"] == torch.backends.cpu.get_cpu_capability()
    # the stored results are what the model gives: memory function, perturbation E(0)
    model = r.model()
    t, m = r.memory_function()
    assert np.array_equal(m, np.asarray(model.memory_function(t), dtype=float))
    curve = r.perturbation_curve()
    assert curve.samples.shape == (3, 2) and curve.e0 >= 0
    # the evaluation set rebuilt from the run gives the stored unperturbed error
    assert r.eval_set(max_samples=16)(model) == pytest.approx(curve.e0, rel=1e-12)
    assert curve.meta["method"] == "loop" and "time_s" not in curve.meta
    c = r.curve()
    assert c["step"] == list(range(1, 9)) and [h["step"] for h in c["history"]] == [4, 8]


def test_second_invocation_runs_nothing(tiny_protocol, store):
    execute(tiny_protocol, store=store, progress=False)
    stamps = {p: p.stat().st_mtime_ns for p in store.root.rglob("runs/*/*") if p.is_file()}
    again = execute(tiny_protocol, store=store, progress=False)
    assert again.report["trained"] == 0 and again.report["cached"] == 2
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert [r.hash for r in again] == [r.hash for r in tiny_protocol.runs()]


def test_results_are_bit_for_bit_reproducible(tiny_protocol, tmp_path):
    a = execute(tiny_protocol, store=RunStore(tmp_path / "a"), progress=False)
    b = execute(tiny_protocol, store=RunStore(tmp_path / "b"), progress=False)
    for ra, rb in zip(a, b):
        assert ra.evaluations() == rb.evaluations()
        untimed = [{k: v for k, v in r.metrics["final"].items() if k != "time_s"}
                   for r in (ra, rb)]
        assert untimed[0] == untimed[1] and len(untimed[0]) > 3
        sa, sb = ra.model().state_dict(), rb.model().state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_changed_file_is_refused_by_name(tiny_protocol, store):
    r = execute(tiny_protocol, store=store, progress=False)[0]
    ckpt = r.dir / "model.pt"
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2] ^= 0x01
    ckpt.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError, match="model.pt"):
        store.load(r.run)
    with pytest.raises(CorruptCheckpointError, match="model.pt"):
        r.model()
    (r.dir / "metrics.json").write_text("{}")
    with pytest.raises(CorruptFileError, match="metrics.json"):
        store.load(r.run)


def test_newer_format_is_refused(store, tiny_protocol):
    execute(tiny_protocol, store=store, progress=False)
    (store.root / "store.json").write_text(json.dumps({"format": "rnnmem-run-store",
                                                       "version": 99}))
    with pytest.raises(StorageError, match="newer rnnmem"):
        RunStore(store.root)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root writes into read-only directories")
def test_unwritable_store_is_named(tmp_path, tiny_protocol):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(StorageError, match=str(ro)):
            execute(tiny_protocol, store=RunStore(ro / "store"), progress=False)
    finally:
        ro.chmod(0o755)


def test_gpu_request_without_gpu_fails_before_anything(tiny_protocol, store):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    gpu = tiny_protocol.vary(**{"resources.num_gpus": 0.5})
    with pytest.raises(ExecutorError, match="num_gpus"):
        execute(gpu, store=store, progress=False)
    assert store.hashes() == []


@pytest.mark.gpu
def test_fractional_gpu_runs_on_cuda(tiny_protocol, store):
    gpu = tiny_protocol.vary(**{"resources.num_gpus": 0.5, "train.device": "cuda"})
    res = execute(gpu, store=store, progress=False)
    assert res.report["trained"] == 2 and res[0].provenance()["device"].startswith("cuda")


def test_frame_csv_parquet(tiny_protocol, store, tmp_path):
    import pandas as pd

    execute(tiny_protocol, store=store, progress=False)
    df = store.frame(tiny_protocol)
    assert len(df) == 2 and list(df["seed"]) == [0, 1]
    for col in ("hash", "status", "model.name", "model.width", "train.lr",
                "metrics.valid_loss", "eval.perturbation.e0",
                "eval.memory_function.max"):
        assert col in df.columns, col
    assert (df["status"] == "ok").all()
    back = pd.read_csv(export_frame(df, tmp_path / "r.csv"))
    assert list(back["hash"]) == list(df["hash"])
    assert np.array_equal(back["metrics.valid_loss"], df["metrics.valid_loss"])
    pq = pd.read_parquet(export_frame(df, tmp_path / "r.parquet"))
    assert list(pq.columns) == list(df.columns) and len(pq) == 2
    assert store.frame(tiny_protocol.at("quick")).shape[0] == 0  # not run yet


def test_tensorboard_events_parse(tiny_protocol, store):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    r = execute(tiny_protocol.vary(**{"train.log_every": 3}), store=store,
                progress=False)[0]
    acc = EventAccumulator(str(r.dir / "tensorboard"))
    acc.Reload()
    events = acc.Scalars("train/loss_step")
    curve = dict(zip(r.curve()["step"], r.curve()["loss"]))
    every = r.run.config.log_every
    assert [e.step for e in events] == [s for s in curve if s % every == 0 or s == max(curve)]
    assert [e.value for e in events] == pytest.approx([curve[e.step] for e in events],
                                                     rel=1e-6)  # stored as float32
    assert [e.step for e in acc.Scalars("eval/valid_loss")] == [4, 8]


def _spawn(args, **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def test_killed_run_leaves_nothing_readable(store):
    run = tiny_run(**{"train.steps": 100000, "train.eval_every": 0})
    code = ("import sys; from rnnmem.experiments.worker import run_one; "
            "run_one(sys.stdin.read(), sys.argv[1])")
    proc = _spawn(["-c", code, str(store.root)], stdin=subprocess.PIPE)
    proc.stdin.write(run.to_json())
    proc.stdin.close()
    deadline = time.monotonic() + 60
    while not (store.root / ".attempts" / run.hash).exists():
        assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()
        time.sleep(0.1)
    time.sleep(0.5)  # training
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not store.has(run) and store.hashes() == []
    with pytest.raises(InvalidParameterError, match="not in store"):
        store.load(run)
    # the next invocation trains (a short run: the same path)
    short = tiny_run()
    assert execute([short], store=store, progress=False).report["trained"] == 1


def test_half_written_directory_is_never_read_and_is_cleaned(store):
    run = tiny_run()
    store.ensure_writable()
    orphan = store.root / ".tmp" / f"{run.hash}.999999.0"  # a writer killed mid-write
    orphan.mkdir()
    (orphan / "run.json").write_text("{")
    assert not store.has(run) and store.hashes() == []
    res = execute([run], store=store, progress=False)
    assert res.report["trained"] == 1 and not orphan.exists()
    assert res[0].run == run


def test_two_invocations_train_each_run_once(tmp_path, tiny_protocol):
    proto = tiny_protocol.vary(seed=[0, 1, 2, 3])
    f = tmp_path / "p.toml"
    f.write_text(proto.to_toml())
    root = tmp_path / "store"
    runs = proto.runs()
    # this test holds the first run's lock until the others are done, so that both
    # processes meet a run that another process is training (and must wait for it)
    held = RunStore(root).ensure_writable().lock(runs[0]).acquire()
    procs = [_spawn(["-m", "rnnmem", "run", str(f), "--store", str(root), "-q"])
             for _ in range(2)]
    deadline = time.monotonic() + 300
    while not all(RunStore(root).has(r) for r in runs[1:]):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.2)
    assert not RunStore(root).has(runs[0])
    held.release()
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    trained = [int(o[0].split(" trained")[0].rsplit(" ", 1)[-1]) for o in outs]
    assert sum(trained) == 4, outs
    store = RunStore(root)
    assert len(store.hashes()) == 4
    assert all(store.attempts(h) == 1 for h in store.hashes())


@pytest.mark.slow  # two spawned interpreters import torch: ~30 s on a busy 2-core machine
def test_process_pool_gives_the_same_results(tiny_protocol, tmp_path):
    seq = execute(tiny_protocol, store=RunStore(tmp_path / "a"), progress=False)
    pool = execute(tiny_protocol, store=RunStore(tmp_path / "b"), jobs=2, progress=False)
    assert pool.report["trained"] == 2 and not pool.failed
    assert {r.provenance()["pid"] for r in pool}.isdisjoint({os.getpid()})
    for ra, rb in zip(seq, pool):
        assert ra.hash == rb.hash and ra.evaluations() == rb.evaluations()


def test_progress_lines_when_not_a_terminal(tiny_protocol, store):
    import io

    buf = io.StringIO()
    execute(tiny_protocol, store=store, progress=True, stream=buf)
    last = buf.getvalue().strip().splitlines()[-1]
    assert last.startswith("[rnnmem] runs 2/2: 2 done (0 from the store), 0 running, "
                           "0 failed"), last


def test_summary_analysis_averages_over_seeds(tiny_protocol, store):
    proto = tiny_protocol.vary(**{"model.width": [2, 3]})
    res = proto.execute(store=store, progress=False)
    table = res.analyse()["table"]
    df = res.frame()
    assert list(table["runs"]) == [2, 2]
    for width, row in zip((2, 3), table.to_dict("records")):
        assert str(row["model.width"]) == str(width)
        want = df[df["model.width"] == width]["metrics.valid_loss"].mean()
        assert row["metrics.valid_loss"] == want


def test_invalid_run_fails_before_any_run_starts(tiny_protocol, store):
    from rnnmem.errors import RnnmemError

    bad = tiny_protocol.vary(**{"model.widht": [3]})
    with pytest.raises(RnnmemError, match="widht"):
        execute(bad, store=store, progress=False)
    with pytest.raises(RnnmemError, match="no-such-task"):
        execute(tiny_protocol.vary(**{"task.name": "lf:no-such-task"}), store=store,
                progress=False)
    assert store.hashes() == []


def test_interrupted_run_is_not_stored(tmp_path, store):
    run = tiny_run(**{"train.steps": 100000, "train.eval_every": 0})
    f = tmp_path / "long.toml"
    from rnnmem.experiments import Protocol

    f.write_text(Protocol("long", run).to_toml())
    # a Ctrl-C reaches the child even where this process was started with SIGINT ignored
    # (a background job of a non-interactive shell): the child starts with the default
    # (-X dev: its slower start makes the SIGINT land in the imports more often, where the
    # flag that __main__ clears is set: 10 of 12 runs ended by SIGINT before the fix)
    proc = _spawn(["-X", "dev", "-m", "rnnmem", "run", str(f), "--store", str(store.root), "-q"],
                  preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not (store.root / ".attempts" / run.hash).exists():
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)  # the first Ctrl-C: training stops after this step
    out, err = proc.communicate(timeout=60)
    # 130, not death by SIGINT: ``python -m`` would end the process by the signal after a
    # caught KeyboardInterrupt that ended a string exec (rnnmem/__main__.py clears that)
    assert proc.returncode == 130, (proc.returncode, out, err)
    assert err.strip().splitlines()[-1] == "rnnmem run: interrupted", err
    assert not store.has(run) and store.hashes() == []


def test_a_run_trained_by_other_code_is_not_served(tiny_protocol, store, monkeypatch):
    """The code is part of a run's identity (experiments.code_digest): a store filled by
    other code (here named by $RNNMEM_RUN_CODE) trains this code's runs again rather than
    handing back the old weights, which stay under their own hashes; the code is in each
    run's provenance."""
    monkeypatch.setenv("RNNMEM_RUN_CODE", "build-a")
    first = execute(tiny_protocol, store=store, progress=False)
    assert first.report["trained"] == 2
    old = set(store.hashes())
    assert {json.loads((store.root / "runs" / h / "provenance.json").read_text())["code"]
            for h in old} == {"build-a"}
    monkeypatch.setenv("RNNMEM_RUN_CODE", "build-b")
    again = execute(tiny_protocol, store=store, progress=False)
    assert again.report["trained"] == 2
    assert old < set(store.hashes()) and len(store.hashes()) == 4
    assert sorted(store.other_code()) == sorted(old)
    stale = store.load(sorted(old)[0])
    assert stale.hash == sorted(old)[0] and stale.code == "build-a"  # as stored
    monkeypatch.setenv("RNNMEM_RUN_CODE", "build-a")  # the old code finds its runs
    assert execute(tiny_protocol, store=store, progress=False).report["trained"] == 0
    monkeypatch.setenv("RNNMEM_RUN_CODE", "build-b")
    assert store.remove(store.other_code()) == 2 and store.remove(old) == 0
    assert not old & set(store.hashes()) and len(store.hashes()) == 2
    assert not any((store.root / "derived" / h).exists() for h in old)
    assert execute(tiny_protocol, store=store, progress=False).report["trained"] == 0


def test_a_worker_with_other_code_refuses_the_run(store):
    """A cluster node with another rnnmem would store the run under another hash: the
    worker compares the caller's code digest with its own and says so instead."""
    from rnnmem.experiments import code_digest
    from rnnmem.experiments.worker import run_one

    run = tiny_run()
    with pytest.raises(ExecutorError, match="other rnnmem code than the caller"):
        run_one(run.to_json(), store.root, code="sha256:" + "0" * 64)
    assert not store.hashes()
    assert run_one(run.to_json(), store.root, code=code_digest()) == "trained"
