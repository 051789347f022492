"""``"lf:<name>"``: the training adapter of the linear-functional and teacher data sets.

``build_task("lf:polynomial", n_samples=1024, length=100)`` draws the data set
:data:`rnnmem.tasks.datasets.FUNCTIONAL_TASKS` ``["polynomial"]`` (inputs white noise,
outputs :math:`y = \\rho * x`, Li, Han, E & Li, ICLR 2021; Wang, Li & Li, ICLR 2024) and
splits it:

``train`` / ``valid``
    a fraction ``valid_fraction`` (default 0.2) of the ``n_samples`` samples, chosen by a
    permutation seeded with ``split_seed`` (default: the data ``seed``), is held out;
``test``
    ``test_size`` further samples (default: as many as ``valid``; ``0``: no test split),
    drawn independently of the others from a seed derived from the data ``seed``
    (:func:`held_out_seed`), so that the training and validation data are those of a task
    without a test split.

The loop evaluates ``valid`` (it selects ``best.pt``); ``test`` is for the final numbers.
A linear-functional task is a transduction: :meth:`FunctionalTask.solve` computes the exact
targets of any input batch (the teacher data sets are not: their outputs come from a
random teacher network, see :mod:`rnnmem.tasks.teacher`).
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InvalidParameterError, NotApplicableError, UnknownNameError
from .arrays import ArrayRegressionTask
from .datasets import FUNCTIONAL_TASKS, get_task, linear_functional
from .functional import apply_linear_functional
from .registry import register_task_prefix, task_names

__all__ = ["FunctionalTask", "held_out_seed"]

_ARRAY_OPTIONS = ("valid_fraction", "shuffle", "split_seed")


def held_out_seed(seed: int) -> int:
    """The seed of the ``test`` samples of an ``lf:`` task drawn with data seed ``seed``
    (one 32-bit word of :class:`numpy.random.SeedSequence` ``([seed, 0x7E57])``)."""
    return int(np.random.SeedSequence([int(seed), 0x7E57]).generate_state(1)[0])


def _functional_names() -> list[str]:
    return list(FUNCTIONAL_TASKS)


class FunctionalTask(ArrayRegressionTask):
    """An :class:`~rnnmem.tasks.arrays.ArrayRegressionTask` on an ``lf:`` data set, with a
    ``test`` split and, for a linear functional, :meth:`solve` (module docstring).

    Parameters
    ----------
    name : str
        The data set (a key of :data:`~rnnmem.tasks.datasets.FUNCTIONAL_TASKS`).
    options : dict
        Its options (``n_samples``, ``length``, ``dt``, ``seed``, the target's
        parameters, ...; defaults from the spec).
    test_size : int or None
        Number of test samples; ``None``: the number of validation samples.
    valid_fraction, shuffle, split_seed :
        As :class:`~rnnmem.tasks.arrays.ArrayRegressionTask` (``split_seed`` defaults to
        the data seed).
    """

    def __init__(self, name: str, options: dict | None = None, *, test_size: int | None = None,
                 valid_fraction: float = 0.2, shuffle: bool = True,
                 split_seed: int | None = None):
        spec = get_task(name, **dict(options or {}))
        data = spec.build()
        seed = int(spec.options.get("seed", 0) or 0)
        if test_size is None:
            test_size = int(round(valid_fraction * len(data))) if isinstance(
                valid_fraction, (int, float)) else 0
        if isinstance(test_size, bool) or not isinstance(test_size, int) or test_size < 0:
            raise InvalidParameterError(f"test_size must be an integer >= 0, got {test_size!r}")
        test = {}
        if test_size > 0:
            held = spec.build(n_samples=test_size, seed=held_out_seed(seed))
            test = {"test_inputs": held.inputs, "test_targets": held.outputs}
        super().__init__(data.inputs, data.outputs, valid_fraction=valid_fraction,
                         shuffle=shuffle, split_seed=seed if split_seed is None else split_seed,
                         name=f"lf:{name}", model_defaults={"dt": float(data.dt)}, **test)
        self.data_name, self.data_options = name, dict(spec.options)
        self._functional = (linear_functional(name, **self.data_options)
                            if spec.kind == "linear_functional" else None)
        self.is_transduction = self._functional is not None

    def solve(self, inputs) -> torch.Tensor:
        """The exact targets :math:`y_k = \\sum_j w_j\\, c^\\top x_{k-j}` of ``inputs``
        (B, T, d), as a tensor in the task's dtype and device (the data's own method:
        :func:`rnnmem.tasks.functional.apply_linear_functional`)."""
        f = self._functional
        if f is None:
            raise NotApplicableError(f"task {self.name!r} is not a transduction: a teacher "
                                     "network's outputs are data")
        if isinstance(inputs, torch.Tensor):
            inputs = inputs.detach().cpu().double().numpy()
        out = apply_linear_functional(f.target, inputs, f.dt, method=f.method,
                                      input_weights=f.input_weights).outputs
        return torch.as_tensor(out, dtype=self.dtype, device=self.device)


@register_task_prefix("lf", _functional_names)
def _functional_task(target: str, **options) -> FunctionalTask:
    """``"lf:<name>"``: a :class:`FunctionalTask` of
    :data:`rnnmem.tasks.datasets.FUNCTIONAL_TASKS` ``[name]``.

    Options ``valid_fraction``/``shuffle``/``split_seed``/``test_size`` go to
    :class:`FunctionalTask`; every other option (``n_samples``, ``length``, ``dt``,
    ``seed``, the target's parameters, ...) to the data set
    (:func:`rnnmem.tasks.datasets.get_task`). The model's ``dt`` defaults to the data's.
    """
    if target not in _functional_names():
        raise UnknownNameError("task", f"lf:{target}", task_names())
    kw = {k: options.pop(k) for k in _ARRAY_OPTIONS + ("test_size",) if k in options}
    options.pop("bptt", None)  # a language-model option; meaningless here
    return FunctionalTask(target, options, **kw)
