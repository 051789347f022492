"""The task interface and registry (rnnmem.tasks.interface, rnnmem.tasks.registry)."""

import numpy as np
import pytest
import torch

import rnnmem.train
from rnnmem.errors import InvalidParameterError, NotApplicableError, UnknownNameError
from rnnmem.tasks import build_task, task_names
from rnnmem.tasks.datasets import FUNCTIONAL_TASKS
from rnnmem.tasks.functional import apply_linear_functional
from rnnmem.tasks.interface import TEST, TRAIN, VALID, Task
from rnnmem.tasks.lf import held_out_seed
from rnnmem.tasks.registry import TASK_BUILDERS, TASK_PREFIXES, register_task_prefix

#: cheap instances of each family (name, options)
SMALL = [
    ("lf:exponential", dict(n_samples=20, length=8)),
    ("lf:polynomial", dict(n_samples=20, length=8, dt=0.5, test_size=3)),
    ("lf:teacher_linear", dict(n_samples=20, length=8, hidden=3)),
    ("lang:dyck1", dict(lengths="2:6", valid_size=8, test_bins="8:10", test_size=4)),
    ("lang:parity", dict(mode="recognition", lengths="2:6", valid_size=8)),
]


def _configured(name, options):
    return build_task(name, **options).configure(dtype=torch.float64, batch_size=4, seed=1)


def test_one_registry_behind_the_old_names():
    assert rnnmem.train.build_task is build_task and rnnmem.train.task_names is task_names
    assert rnnmem.train.TrainTask is Task
    assert {"npz", "ptb"} <= set(TASK_BUILDERS) and {"lf", "lang"} <= set(TASK_PREFIXES)
    names = task_names()
    assert "lf:exponential" in names and "lang:dyck1" in names and "ptb" in names
    with pytest.raises(UnknownNameError, match="lf:nope"):
        build_task("lf:nope")


def test_a_prefix_registered_elsewhere_is_built():
    """The mechanism other families (e.g. transductions) use: register_task_prefix from
    their own module, also through the old rnnmem.train.tasks name."""
    from rnnmem.train.tasks import register_task_prefix as old_name

    assert old_name is register_task_prefix

    @register_task_prefix("contracttest", lambda: ["a"])
    def _build(rest, **options):
        return build_task("lf:exponential", **options)

    try:
        assert "contracttest:a" in task_names()
        t = build_task("contracttest:a", n_samples=10, length=4)
        assert isinstance(t, Task)
    finally:
        del TASK_PREFIXES["contracttest"]


@pytest.mark.parametrize("name,options", SMALL)
def test_interface(name, options):
    t = _configured(name, options)
    assert isinstance(t, Task)
    assert t.splits[0] == TRAIN and set(t.eval_splits) <= set(t.splits)
    rng = np.random.default_rng(0)
    x, y, mask = t.sample(rng)
    assert x.shape[0] == y.shape[0] == 4 and x.dtype == torch.float64
    assert mask is None or (mask.dtype == torch.bool and mask.shape == x.shape[:2])
    x2, _, _ = t.sample(np.random.default_rng(0))
    assert torch.equal(x, x2)  # a function of the rng
    for split in t.eval_splits:
        got = list(t.batches(split))
        assert got and all(b[0].shape[0] <= 4 for b in got)
    assert isinstance(t.metric, str)


@pytest.mark.parametrize("name,options", SMALL)
def test_metric_is_reported(name, options):
    t = _configured(name, options)
    model = rnnmem.models.build_model("diagonal_ssm", width=2, **{
        k: v for k, v in t.model_defaults().items() if k in ("input_dim", "output_dim", "dt")},
        dtype="float64", device="cpu", seed=0)
    res = t.evaluate(model, t.eval_splits[0])
    assert t.metric in res and np.isfinite(res[t.metric]) and "loss" in res


def test_lf_test_split_is_independent_and_leaves_train_valid_alone():
    with_test = _configured("lf:exponential", dict(n_samples=30, length=6, seed=4))
    without = _configured("lf:exponential", dict(n_samples=30, length=6, seed=4, test_size=0))
    assert with_test.splits == (TRAIN, VALID, TEST) and without.splits == (TRAIN, VALID)
    assert with_test.n(TEST) == with_test.n(VALID) == 6
    for s in (TRAIN, VALID):
        a, b = with_test.batch(s, 0), without.batch(s, 0)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    Xt = with_test._np[TEST][0]
    Xtr = with_test._np[TRAIN][0]
    assert not np.any(np.all(Xt[:, None] == Xtr[None, :], axis=(2, 3)))  # no shared sample
    assert held_out_seed(4) != held_out_seed(5) and held_out_seed(4) != 4
    with pytest.raises(InvalidParameterError, match="test_size"):
        build_task("lf:exponential", n_samples=10, length=4, test_size=-1)


def test_lf_solve_is_the_data_and_a_function_of_the_input():
    t = _configured("lf:polynomial", dict(n_samples=20, length=8, dt=0.5))
    assert t.is_transduction
    for s in t.splits:
        X, Y, _ = next(t.batches(s))
        assert torch.equal(t.solve(X), Y)  # the data were made by the same sum
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 8, 1))
    spec = FUNCTIONAL_TASKS["polynomial"]
    tgt = dict(spec.options)
    from rnnmem.theory.targets import get_target

    target = get_target("polynomial").with_params(
        **{k: tgt[k] for k in get_target("polynomial").param_values})
    ref = apply_linear_functional(target, x, 0.5).outputs
    assert np.array_equal(t.solve(torch.as_tensor(x)).numpy(), ref)
    assert not np.array_equal(t.solve(torch.as_tensor(2 * x)).numpy(), ref)


def test_non_transductions_refuse_solve():
    t = _configured("lf:teacher_linear", dict(n_samples=20, length=8, hidden=3))
    assert not t.is_transduction
    with pytest.raises(NotApplicableError, match="teacher"):
        t.solve(torch.zeros(1, 8, 1))
    lang = _configured("lang:parity", dict(mode="recognition", lengths="2:6", valid_size=8))
    with pytest.raises(NotApplicableError):
        lang.solve(torch.zeros(1, 3, 2))
