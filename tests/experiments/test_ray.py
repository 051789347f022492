"""The Ray executor, for real: a local Ray instance with 2 CPUs (one module, one instance).

smoke-sweep through Ray equals the local executor bit for bit; a worker killed on its first
attempt is retried and the sweep completes; GPU requests are refused without a GPU."""

import os

import pytest
import torch

from exp_helpers import tiny_run
from rnnmem.errors import ExecutorError
from rnnmem.experiments import RayExecutor, RunStore, execute, get_protocol

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_instance():
    if ray.is_initialized():  # pragma: no cover
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")
    yield ray
    ray.shutdown()


def _same(a, b):
    assert [r.hash for r in a] == [r.hash for r in b]
    for ra, rb in zip(a, b):
        assert ra.evaluations() == rb.evaluations()
        assert ra.curve()["loss"] == rb.curve()["loss"]
        sa, sb = ra.model().state_dict(), rb.model().state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_smoke_sweep_on_ray_equals_local(ray_instance, tmp_path):
    p = get_protocol("smoke-sweep")
    local = execute(p, store=RunStore(tmp_path / "local"), progress=False)
    remote = execute(p, store=RunStore(tmp_path / "ray"), executor=RayExecutor(),
                     progress=False)
    assert local.report["trained"] == remote.report["trained"] == len(p.runs())
    assert not remote.failed
    _same(local, remote)
    assert {r.provenance()["executor"] for r in remote} == {"ray"}
    assert len({r.provenance()["pid"] for r in remote} - {os.getpid()}) >= 1
    again = execute(p, store=RunStore(tmp_path / "ray"), executor="ray", progress=False)
    assert again.report["trained"] == 0  # a second invocation runs nothing


def test_killed_worker_is_retried(ray_instance, tmp_path):
    marker = tmp_path / "died-once"
    runs = [tiny_run(seed=0), tiny_run(seed=1, **{"resources.test_exit_once": str(marker)}),
            tiny_run(seed=2)]
    res = execute(runs, store=RunStore(tmp_path / "s"), executor="ray", progress=False)
    assert marker.exists()  # the worker did die on its first attempt
    assert len(res) == 3 and not res.failed and res.report["trained"] == 3
    assert res.report["retried"] == {runs[1].hash: 2}
    assert RunStore(tmp_path / "s").attempts(runs[0]) == 1


def test_retries_are_bounded(ray_instance, tmp_path):
    marker = tmp_path / "dies"
    # max_retries=0: the one attempt dies, the run is reported failed, the others finish
    bad = tiny_run(seed=5, **{"resources.test_exit_once": str(marker),
                              "resources.max_retries": 0})
    res = execute([tiny_run(seed=4), bad], store=RunStore(tmp_path / "s"), executor="ray",
                  progress=False)
    assert len(res) == 1 and list(res.failed) == [bad.hash]
    assert res.missing == [bad]


def test_gpu_request_without_gpu_is_refused(ray_instance, tmp_path):
    if ray.cluster_resources().get("GPU", 0) > 0:  # pragma: no cover
        pytest.skip("the cluster has a GPU")
    run = tiny_run(**{"resources.num_gpus": 0.25})
    with pytest.raises(ExecutorError, match="num_gpus"):
        execute([run], store=RunStore(tmp_path / "s"), executor="ray", progress=False)


def test_a_code_label_set_by_hand_reaches_the_ray_workers(ray_instance, tmp_path,
                                                           monkeypatch):
    """$RNNMEM_RUN_CODE in the caller: the runs are stored under the caller's hashes,
    although Ray workers do not inherit its environment (they adopt the label passed)."""
    monkeypatch.setenv("RNNMEM_RUN_CODE", "label-by-hand")
    runs = [tiny_run(seed=7)]
    store = RunStore(tmp_path / "s")
    res = execute(runs, store=store, executor="ray", progress=False)
    assert not res.failed and store.hashes() == [runs[0].hash]
    prov = store.load(runs[0]).dir / "provenance.json"
    assert '"code": "label-by-hand"' in prov.read_text()
