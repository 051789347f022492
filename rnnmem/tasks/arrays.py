"""Regression on in-memory arrays (:class:`ArrayRegressionTask`) and the ``"npz"`` task.

The adapter of every data set that is a pair of arrays ``inputs`` (N, T, d), ``targets``
(N, T, k): ``.npz`` files here, the linear functionals and teachers in
:mod:`rnnmem.tasks.lf`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..errors import DatasetError, InvalidParameterError, NonFiniteError, ShapeError
from .interface import TEST, TRAIN, VALID, Task, weighted_mse
from .registry import check_options, register_task

__all__ = ["ArrayRegressionTask"]


def _as_array(x, name: str, ndim_min=2) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.dtype == object or not (np.issubdtype(a.dtype, np.floating)
                                 or np.issubdtype(a.dtype, np.integer)):
        raise DatasetError(f"{name} must be a numeric array, got dtype {a.dtype}")
    a = a.astype(np.float64)
    if a.ndim == 2:
        a = a[..., None]  # (N, T) -> (N, T, 1)
    if a.ndim != 3:
        raise ShapeError(f"{name} must have shape (N, T, d) or (N, T), got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise NonFiniteError(f"{name} contains NaN or inf")
    return a



class ArrayRegressionTask(Task):
    """Sequence-to-sequence regression on in-memory arrays, with the (weighted) MSE loss.

    Parameters
    ----------
    inputs : array (N, T, d) or (N, T)
    targets : array (N, T, k) or (N, T)
    valid_inputs, valid_targets : arrays, optional
        A held-out split; without them a fraction ``valid_fraction`` of the samples, chosen
        by a permutation seeded with ``split_seed``, is held out.
    test_inputs, test_targets : arrays, optional
    valid_fraction : float in [0, 1)
        ``0`` evaluates on the training set.
    shuffle : bool
        Reshuffle the training set every epoch. The permutation of epoch ``e`` is drawn from
        ``numpy.random.default_rng([seed, e])`` so the batch at any step is a function of
        the step alone (resumable without extra state).
    name : str
    model_defaults : dict, optional
        Extra model options that fit the data (e.g. ``{"dt": 0.1}``), used when the model
        accepts them and the run does not set them.

    The loss is :func:`weighted_mse` with the run's ``temporal_weighting`` exponent; the
    evaluation reports ``loss``, the unweighted ``mse`` and ``rel_mse``
    :math:`= \\sum (\\hat y - y)^2 / \\sum y^2`.
    """

    supports_temporal_weighting = True
    metric = "rel_mse"

    def __init__(self, inputs, targets, *, valid_inputs=None, valid_targets=None,
                 test_inputs=None, test_targets=None, valid_fraction: float = 0.2,
                 shuffle: bool = True, split_seed: int = 0, name: str = "array",
                 model_defaults: dict | None = None):
        super().__init__()
        self.name = name
        self._model_defaults = dict(model_defaults or {})
        X, Y = _as_array(inputs, "inputs"), _as_array(targets, "targets")
        if X.shape[:2] != Y.shape[:2]:
            raise ShapeError(f"inputs {X.shape} and targets {Y.shape} differ in (N, T)")
        if not (isinstance(valid_fraction, (int, float)) and 0 <= valid_fraction < 1):
            raise InvalidParameterError(f"valid_fraction must be in [0, 1), got {valid_fraction!r}")
        if (valid_inputs is None) != (valid_targets is None):
            raise InvalidParameterError("give both valid_inputs and valid_targets, or neither")
        if (test_inputs is None) != (test_targets is None):
            raise InvalidParameterError("give both test_inputs and test_targets, or neither")
        splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if valid_inputs is not None:
            splits[VALID] = (_as_array(valid_inputs, "valid_inputs"),
                             _as_array(valid_targets, "valid_targets"))
            splits[TRAIN] = (X, Y)
        elif valid_fraction > 0:
            n_valid = int(round(valid_fraction * X.shape[0]))
            if n_valid < 1 or n_valid >= X.shape[0]:
                raise InvalidParameterError(
                    f"valid_fraction={valid_fraction} leaves an empty split of {X.shape[0]} "
                    "samples")
            perm = np.random.default_rng(split_seed).permutation(X.shape[0])
            tr, va = perm[n_valid:], perm[:n_valid]
            splits[TRAIN], splits[VALID] = (X[tr], Y[tr]), (X[va], Y[va])
        else:
            splits[TRAIN] = (X, Y)
        if test_inputs is not None:
            splits[TEST] = (_as_array(test_inputs, "test_inputs"),
                            _as_array(test_targets, "test_targets"))
        for s, (a, b) in splits.items():
            if a.shape[0] == 0:
                raise DatasetError(f"split {s!r} is empty")
            if a.shape[0] != b.shape[0] or a.shape[2] != X.shape[2] or b.shape[2] != Y.shape[2]:
                raise ShapeError(f"split {s!r}: inputs {a.shape} / targets {b.shape} do not "
                                 f"match (N, T, {X.shape[2]}) / (N, T, {Y.shape[2]})")
        self._np = splits
        self.input_dim, self.output_dim = X.shape[2], Y.shape[2]
        self.shuffle = bool(shuffle)
        self.eval_splits = (VALID,) if VALID in splits else (TRAIN,)
        self._data: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._configured()

    def model_defaults(self) -> dict[str, Any]:
        return {**self._model_defaults, **super().model_defaults()}

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self._np)

    def _configured(self) -> None:
        self._data = {s: (torch.as_tensor(a, dtype=self.dtype, device=self.device),
                          torch.as_tensor(b, dtype=self.dtype, device=self.device))
                      for s, (a, b) in self._np.items()}
        self.steps_per_epoch = math.ceil(self.n(TRAIN) / self.batch_size)

    def n(self, split: str) -> int:
        return self._np[self._split(split)][0].shape[0]

    def _split(self, split):
        if split not in self._np:
            raise InvalidParameterError(f"split {split!r} not in task {self.name!r} "
                                        f"(has {', '.join(self._np)})")
        return split

    def batch(self, split: str, step: int, generator: torch.Generator | None = None):
        X, Y = self._data[self._split(split)]
        n, bs = X.shape[0], self.batch_size
        per_epoch = math.ceil(n / bs)
        epoch, i = divmod(int(step), per_epoch)
        if split == TRAIN and self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(n)
            idx = torch.as_tensor(order[i * bs:(i + 1) * bs], device=X.device)
            return X[idx], Y[idx], None  # (b, T, d), (b, T, k)
        return self._plain(split, i)

    def eval_batches(self, split: str):
        n = self.n(split)
        for i in range(math.ceil(n / self.batch_size)):
            yield self._plain(split, i)

    def _plain(self, split, i):
        X, Y = self._data[self._split(split)]
        bs = self.batch_size
        return X[i * bs:(i + 1) * bs], Y[i * bs:(i + 1) * bs], None

    def loss(self, outputs, targets, mask=None):
        return weighted_mse(outputs, targets, mask, self.temporal_weighting)

    def metrics(self, outputs, targets, mask):
        o, y = outputs.double(), targets.double()
        sq = float((o - y).square().sum())
        return {"mse": (sq, float(y.numel())), "rel_mse": (sq, float(y.square().sum()))}


@register_task("npz")
def _npz_task(path: str | None = None, **options) -> ArrayRegressionTask:
    """Regression on arrays stored in a ``.npz`` file (loaded with ``allow_pickle=False``)."""
    if not path:
        raise InvalidParameterError("task 'npz' needs option path=<file.npz>")
    check_options("npz", options, {"valid_fraction", "shuffle", "split_seed"})
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read {path!r}: {exc}") from None
    for k in ("inputs", "targets"):
        if k not in arrays:
            raise DatasetError(f"{path!r} has no array {k!r} (has {', '.join(arrays) or 'none'})")
    keys = ("valid_inputs", "valid_targets", "test_inputs", "test_targets")
    return ArrayRegressionTask(arrays["inputs"], arrays["targets"],
                               **{k: arrays[k] for k in keys if k in arrays},
                               name=f"npz:{path}", **options)
