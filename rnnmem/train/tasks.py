"""Training tasks: the small protocol the loop needs, and adapters to rnnmem's data.

The loop (:func:`rnnmem.train.train`) knows nothing about regression or languages; it talks
to a task through this protocol:

``task.configure(device=, dtype=, batch_size=, seed=, temporal_weighting=)``
    called once by the loop, before anything else, with the run's settings;
``task.model_defaults() -> dict``
    constructor options the model needs to fit the task (``input_dim``, ``output_dim``);
``task.steps_per_epoch -> int | None``
    number of training batches in one pass, ``None`` for an endless stream;
``task.batch(split, step, generator) -> (inputs, targets, mask or None)``
    torch tensors on the configured device and dtype; the training batch of ``step`` must
    depend only on ``step``, the configured seed and ``generator`` (a CPU
    :class:`torch.Generator` owned and checkpointed by the loop), so that a resumed run sees
    the same data as an uninterrupted one;
``task.loss(outputs, targets, mask) -> scalar tensor``
``task.evaluate(model, split) -> dict[str, float]``
    metrics on a held-out split (always including ``"loss"``);
``task.eval_splits -> tuple[str, ...]``
    the splits the loop evaluates (the first one's ``"loss"`` selects ``best.pt``).

Stateful tasks (truncated back-propagation through time, e.g. language modelling with
:class:`rnnmem.train.lm.PTBTask`) set ``task.stateful = True``: consecutive training batches
continue each other, and the loop carries the model's recurrent state from one batch to
the next:

``task.forward(model, inputs, state) -> (outputs, new_state)``
    the forward pass from ``state`` (``None``: the model's initial state);
``task.detach_state(state)``
    the state cut from the autograd graph (applied by the loop after every step);
``task.initial_state(model)``
    a template of the carried state (shapes and structure), used to restore it;
``task.pack_state(state) -> list[tensor]`` / ``task.unpack_state(model, packed)``
    the state as a flat list of tensors for checkpoints (``weights_only``-loadable) and back.

The loop passes ``state=None`` at the first step of every epoch (``step % steps_per_epoch
== 0``, the data start again from the beginning) and stores the carried state in
``last.pt``, so that a resumed run continues bit for bit.

:class:`TrainTask` implements the bookkeeping; subclasses write ``batch`` and ``loss``.

Registered names (:data:`TASK_BUILDERS`, :func:`build_task`):

``"npz"``
    an :class:`ArrayRegressionTask` from a ``.npz`` file with arrays ``inputs`` (N, T, d) and
    ``targets`` (N, T, k) (optionally ``valid_inputs``/``valid_targets``).
``"lf:<target>"``
    a linear-functional regression task :math:`y_t = \\int_0^\\infty \\rho(s)\\, x_{t-s}\\,ds`
    from :mod:`rnnmem.tasks.functional` (``<target>`` one of its memory families:
    exponential, polynomial, shift, two_parts, airy, sine, ...).
``"lang:<language>"``
    a formal-language task from :mod:`rnnmem.tasks.languages`; option ``mode`` is
    ``"recognition"`` (binary cross-entropy on the last step) or ``"next_symbol"`` (multi-label
    binary cross-entropy over the set of allowed next symbols, masked).

New families register with :func:`register_task` (exact names) or
:func:`register_task_prefix` (``"prefix:<rest>"`` names).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import (CheckpointError, DatasetError, InvalidParameterError, NonFiniteError,
                      ShapeError, UnknownNameError)
from ..models.base import map_tensors

__all__ = ["TrainTask", "ArrayRegressionTask", "LanguageTask", "TASK_BUILDERS", "TASK_PREFIXES",
           "register_task", "register_task_prefix", "build_task", "task_names",
           "temporal_weights", "weighted_mse", "numpy_rng_from"]

TRAIN, VALID, TEST = "train", "valid", "test"


# ============================================================================ helpers
def temporal_weights(T: int, p: float, *, dtype=torch.float64, device=None) -> torch.Tensor:
    """Temporal weights that emphasise late time steps, normalised to sum to ``T``.

    .. math::

        w_t = T\\,\\frac{((t+1)/(T+1))^{p}}{\\sum_{s=0}^{T-1} ((s+1)/(T+1))^{p}},
        \\qquad t = 0, \\dots, T-1.

    This is the weighting of the temporally weighted error used in the curse-of-memory
    experiments (Wang, Li & Li, ICLR 2024; code radarFudan/Curse-of-memory,
    ``src/utils/temporally_weighted_error.py``): late outputs, which depend on a longer
    input history, count more, so that a model cannot reach a low loss by fitting only the
    short-memory start of each sequence. ``p = 0`` gives ``w = 1`` (the plain MSE). The
    weights are computed in log space (a softmax of :math:`p \\log((t+1)/(T+1))`) so that
    large ``p`` cannot overflow or leave every weight zero.
    """
    if not (isinstance(p, (int, float)) and math.isfinite(p) and p >= 0):
        raise InvalidParameterError(f"temporal_weighting: exponent must be finite and >= 0, "
                                    f"got {p!r}")
    if T < 1:
        raise ShapeError(f"temporal weights need T >= 1, got {T}")
    t = torch.arange(1, T + 1, dtype=torch.float64)  # (T,)
    logw = float(p) * torch.log(t / (T + 1))
    w = T * torch.softmax(logw, dim=0)  # (T,), sums to T
    return w.to(dtype=dtype, device=device)


def weighted_mse(outputs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None,
                 p: float = 0.0) -> torch.Tensor:
    """Temporally weighted mean squared error of ``(B, T, k)`` tensors.

    .. math::

        L = \\frac{1}{|\\Omega|} \\sum_{(b,t,j)\\in\\Omega}
            \\big(w_t\\,(\\hat y_{btj} - y_{btj})\\big)^2,

    with :math:`w_t` from :func:`temporal_weights` (the weight multiplies the error before
    squaring, as in the curse-of-memory code, so the squared error at step ``t`` carries
    :math:`w_t^2`) and :math:`\\Omega` the positions where ``mask`` (B, T) is true (all of
    them without a mask).
    """
    if outputs.shape != targets.shape:
        raise ShapeError(f"outputs {tuple(outputs.shape)} and targets {tuple(targets.shape)} "
                         "differ in shape")
    err = outputs - targets  # (B, T, k)
    if p:
        w = temporal_weights(err.shape[1], p, dtype=err.dtype, device=err.device)  # (T,)
        err = err * w[None, :, None]
    sq = err.square()
    if mask is None:
        return sq.mean()
    m = mask.to(sq.dtype)[..., None].expand_as(sq)  # (B, T, k)
    return (sq * m).sum() / m.sum().clamp_min(1)


def numpy_rng_from(generator: torch.Generator) -> np.random.Generator:
    """A numpy generator seeded by one draw of the loop's torch generator (resumable)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
    return np.random.default_rng(seed)


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


# ============================================================================ protocol
class TrainTask:
    """Base class of training tasks (see the module docstring for the protocol)."""

    name: str = "task"
    input_dim: int = 1
    output_dim: int = 1
    steps_per_epoch: int | None = None
    eval_splits: tuple[str, ...] = (VALID,)
    supports_temporal_weighting: bool = False
    #: consecutive training batches continue each other (see the module docstring)
    stateful: bool = False

    def __init__(self):
        self.device = torch.device("cpu")
        self.dtype = torch.get_default_dtype()
        self.batch_size = 32
        self.seed = 0
        self.temporal_weighting = 0.0

    def configure(self, *, device=None, dtype=None, batch_size: int | None = None,
                  seed: int | None = None, temporal_weighting: float = 0.0) -> "TrainTask":
        """Receive the run's settings (called once by the loop before training)."""
        if device is not None:
            self.device = torch.device(device)
        if dtype is not None:
            self.dtype = dtype
        if batch_size is not None:
            self.batch_size = int(batch_size)
        if seed is not None:
            self.seed = int(seed)
        if temporal_weighting and not self.supports_temporal_weighting:
            raise InvalidParameterError(
                f"temporal_weighting: task {self.name!r} has no temporally weighted loss")
        self.temporal_weighting = float(temporal_weighting)
        self._configured()
        return self

    def _configured(self) -> None:
        """Hook: move data to ``self.device``/``self.dtype``."""

    def model_defaults(self) -> dict[str, Any]:
        return {"input_dim": int(self.input_dim), "output_dim": int(self.output_dim)}

    def batch(self, split: str, step: int, generator: torch.Generator):
        raise NotImplementedError

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor,
             mask: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def metrics(self, outputs, targets, mask) -> dict[str, tuple[float, float]]:
        """Per-batch sums ``{name: (sum, count)}`` aggregated by :meth:`evaluate`."""
        return {}

    def eval_batches(self, split: str):
        """Yield the batches of a held-out ``split`` (fixed, no randomness)."""
        raise NotImplementedError

    # ---- stateful tasks (truncated BPTT); the defaults describe a stateless task ----------
    def forward(self, model: torch.nn.Module, inputs, state=None):
        """``(outputs, new_state)`` of ``model`` on ``inputs`` from ``state``.

        Stateless default: the model's outputs from its initial state, and ``None``.
        """
        return _forward(model, inputs), None

    def detach_state(self, state):
        """``state`` with every tensor detached from the autograd graph."""
        return _tree_map(torch.Tensor.detach, state)

    def initial_state(self, model: torch.nn.Module):
        """A template of the carried state (``None`` for a stateless task)."""
        return None

    def pack_state(self, state) -> list[torch.Tensor]:
        """The tensors of ``state`` in a fixed order (``[]`` for ``None``), for checkpoints."""
        return _tree_leaves(state)

    def unpack_state(self, model: torch.nn.Module, packed):
        """The inverse of :meth:`pack_state`: ``packed`` tensors in the structure of
        :meth:`initial_state` (``None`` when nothing was packed)."""
        if not packed:
            return None
        template = self.initial_state(model)
        if template is None:
            raise CheckpointError(f"task {self.name!r} carries no recurrent state but the "
                                  f"checkpoint stores {len(packed)} state tensors")
        return _tree_rebuild(template, list(packed))

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, split: str = VALID) -> dict[str, float]:
        """Average loss and metrics of ``model`` over ``split``."""
        was_training = model.training
        model.eval()
        try:
            sums: dict[str, list[float]] = {}
            for x, y, mask in self.eval_batches(split):
                out = _forward(model, x)
                n = float(x.shape[0])
                acc = {"loss": (float(self.loss(out, y, mask)) * n, n)}
                acc.update(self.metrics(out, y, mask))
                for k, (s, c) in acc.items():
                    cur = sums.setdefault(k, [0.0, 0.0])
                    cur[0] += s
                    cur[1] += c
        finally:
            model.train(was_training)
        if not sums:
            raise DatasetError(f"task {self.name!r}: split {split!r} is empty")
        return {k: s / c if c else float("nan") for k, (s, c) in sums.items()}


def _forward(model, x):
    out = model(x)
    if isinstance(out, (tuple, list)):  # (outputs, state)
        out = out[0]
    return out


def _tree_map(fn, obj):
    """Apply ``fn`` to every tensor of nested tuples/lists/NamedTuples (``None`` kept)."""
    return map_tensors(fn, obj, lambda o: InvalidParameterError(
        f"a recurrent state holds tensors, tuples and None, got {type(o).__name__}"))


def _tree_leaves(obj) -> list[torch.Tensor]:
    """The tensors of a nested state, depth first (``None`` skipped)."""
    out: list[torch.Tensor] = []
    _tree_map(out.append, obj)
    return out


def _tree_rebuild(template, leaves: list):
    """``template``'s structure with its tensors replaced, in order, by ``leaves``."""
    it = iter(leaves)
    n_used = 0

    def take(t: torch.Tensor):
        nonlocal n_used
        try:
            new = next(it)
        except StopIteration:
            raise CheckpointError(f"stored recurrent state has {len(leaves)} tensors; the "
                                  "model's state has more") from None
        if not isinstance(new, torch.Tensor) or tuple(new.shape) != tuple(t.shape):
            raise CheckpointError(f"stored recurrent state tensor {n_used} has shape "
                                  f"{tuple(getattr(new, 'shape', ()))}, the model's "
                                  f"{tuple(t.shape)}")
        n_used += 1
        return new.to(device=t.device, dtype=t.dtype)

    out = _tree_map(take, template)
    if n_used != len(leaves):
        raise CheckpointError(f"stored recurrent state has {len(leaves)} tensors; the "
                              f"model's state has {n_used}")
    return out


# ============================================================================ arrays
class ArrayRegressionTask(TrainTask):
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
    test_fraction : float in [0, 1)
        Without ``test_inputs``, hold out this fraction of the samples as the ``test``
        split (taken from the same permutation, after the validation samples; the
        original curse-of-memory data are split 128000/12800/12800).
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

    def __init__(self, inputs, targets, *, valid_inputs=None, valid_targets=None,
                 test_inputs=None, test_targets=None, valid_fraction: float = 0.2,
                 shuffle: bool = True, split_seed: int = 0, name: str = "array",
                 model_defaults: dict | None = None, test_fraction: float = 0.0):
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
        if not (isinstance(test_fraction, (int, float)) and 0 <= test_fraction < 1):
            raise InvalidParameterError(f"test_fraction must be in [0, 1), got {test_fraction!r}")
        if test_fraction > 0 and test_inputs is not None:
            from ..errors import ConflictingOptionsError

            raise ConflictingOptionsError("test_fraction", "test_inputs",
                                          "the test split is either given or held out")
        if test_fraction > 0:
            n_test = int(round(test_fraction * X.shape[0]))
            if n_test < 1 or n_test >= X.shape[0]:
                raise InvalidParameterError(
                    f"test_fraction={test_fraction} leaves an empty split of {X.shape[0]} "
                    "samples")
            perm = np.random.default_rng([split_seed, 1]).permutation(X.shape[0])
            test_inputs, test_targets = X[perm[:n_test]], Y[perm[:n_test]]
            X, Y = X[perm[n_test:]], Y[perm[n_test:]]
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


# ============================================================================ registry
TASK_BUILDERS: dict[str, Callable[..., TrainTask]] = {}
TASK_PREFIXES: dict[str, Callable[..., TrainTask]] = {}
#: per prefix, a callable listing the names it accepts (for error messages)
_PREFIX_LISTERS: dict[str, Callable[[], list[str]]] = {}


def register_task(name: str):
    """Decorator: ``@register_task("npz")`` on a builder ``f(**options) -> TrainTask``."""

    def deco(fn):
        if name in TASK_BUILDERS and TASK_BUILDERS[name] is not fn:
            raise ValueError(f"task {name!r} registered twice")
        TASK_BUILDERS[name] = fn
        return fn

    return deco


def register_task_prefix(prefix: str, lister: Callable[[], list[str]] | None = None):
    """Decorator for a builder ``f(rest, **options)`` of the names ``"<prefix>:<rest>"``."""

    def deco(fn):
        TASK_PREFIXES[prefix] = fn
        if lister is not None:
            _PREFIX_LISTERS[prefix] = lister
        return fn

    return deco


def task_names() -> list[str]:
    """Every task name currently buildable (prefixed families expanded when known)."""
    names = list(TASK_BUILDERS)
    for prefix in TASK_PREFIXES:
        try:
            rest = _PREFIX_LISTERS[prefix]() if prefix in _PREFIX_LISTERS else []
        except ImportError:
            rest = []
        names += [f"{prefix}:{r}" for r in rest] or [f"{prefix}:<name>"]
    return sorted(names)


def build_task(name: str, **options) -> TrainTask:
    """Build a registered task by name with its options (see the module docstring)."""
    if not isinstance(name, str):
        raise UnknownNameError("task", name, task_names())
    if name in TASK_BUILDERS:
        return TASK_BUILDERS[name](**options)
    prefix, sep, rest = name.partition(":")
    if sep and prefix in TASK_PREFIXES and rest:
        return TASK_PREFIXES[prefix](rest, **options)
    raise UnknownNameError("task", name, task_names())


def _check_options(task: str, options: dict, allowed: set[str]) -> None:
    extra = sorted(set(options) - allowed)
    if extra:
        raise InvalidParameterError(f"task {task!r}: unknown option {extra[0]!r}; "
                                    f"allowed: {', '.join(sorted(allowed))}")


@register_task("npz")
def _npz_task(path: str | None = None, **options) -> ArrayRegressionTask:
    """Regression on arrays stored in a ``.npz`` file (loaded with ``allow_pickle=False``)."""
    if not path:
        raise InvalidParameterError("task 'npz' needs option path=<file.npz>")
    _check_options("npz", options, {"valid_fraction", "shuffle", "split_seed"})
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


# ============================================================================ lf:<target>
_ARRAY_OPTIONS = ("valid_fraction", "shuffle", "split_seed", "test_fraction")


def _functional_names() -> list[str]:
    from ..tasks.functional import FUNCTIONAL_TASKS

    return list(FUNCTIONAL_TASKS)


@register_task_prefix("lf", _functional_names)
def _functional_task(target: str, **options) -> ArrayRegressionTask:
    """``"lf:<name>"``: a data set of :data:`rnnmem.tasks.functional.FUNCTIONAL_TASKS`.

    Options ``valid_fraction``/``test_fraction``/``shuffle``/``split_seed`` go to
    :class:`ArrayRegressionTask` (``split_seed`` defaults to the data ``seed``); every
    other option (``n_samples``, ``length``, ``dt``, ``seed``, the target's parameters,
    ...) to :func:`rnnmem.tasks.functional.get_task`. The model's ``dt`` defaults to the
    data's.
    """
    try:
        from ..tasks.functional import get_task
    except ImportError as exc:  # pragma: no cover - the module ships with rnnmem
        raise DatasetError(f"linear-functional tasks unavailable: {exc}") from None
    if target not in _functional_names():
        raise UnknownNameError("task", f"lf:{target}", task_names())
    array_opts = {k: options.pop(k) for k in _ARRAY_OPTIONS if k in options}
    options.pop("bptt", None)  # a language-model option; meaningless here
    spec = get_task(target, **options)
    data = spec.build()
    array_opts.setdefault("split_seed", int(spec.options.get("seed", 0) or 0))
    return ArrayRegressionTask(data.inputs, data.outputs, name=f"lf:{target}",
                               model_defaults={"dt": float(data.dt)}, **array_opts)


# ============================================================================ lang:<language>
def _language_names() -> list[str]:
    from ..tasks.languages import LANGUAGES

    return list(LANGUAGES)


class LanguageTask(TrainTask):
    """A formal-language task from :mod:`rnnmem.tasks.languages` for the loop.

    Inputs are one-hot symbols ``(B, T, |alphabet|)``; the model reads a string left to
    right.

    ``mode="recognition"`` (:class:`~rnnmem.tasks.languages.RecognitionTask`)
        Read at the last symbol: one logit, loss binary cross-entropy
        :math:`-[y\\log\\sigma(\\ell) + (1-y)\\log(1-\\sigma(\\ell))]`, or two logits
        (a model built with ``output_size=2``), loss cross-entropy; metric ``accuracy``
        (:func:`~rnnmem.tasks.languages.recognition_correct`; for two logits the score is
        :math:`\\ell_1 - \\ell_0`).
    ``mode="next_symbol"`` (:class:`~rnnmem.tasks.languages.NextSymbolTask`)
        ``|alphabet| + 1`` logits per position (END included); loss: multi-label binary
        cross-entropy averaged over the unmasked positions and targets; metrics
        ``accuracy`` (whole strings right, :func:`~rnnmem.tasks.languages.next_symbol_correct`)
        and ``position_accuracy``.

    Parameters
    ----------
    language : str
    mode : {"next_symbol", "recognition"}
    lengths : training lengths (ints or a bin spec such as ``"1:40"``), default 1..40
    neg_ratio : float, recognition only
    valid_size : int
        Number of validation strings, drawn once (seeded) from the training lengths.
    test_bins : bin spec, optional
        Extra evaluation splits ``test_<lo>:<hi>`` (e.g. ``"41:60,61:100"``), each
        ``test_size`` strings at lengths spread over the bin (length generalisation,
        Delétang et al. 2023).
    test_size : int
    """

    def __init__(self, language: str, *, mode: str = "next_symbol", lengths=None,
                 neg_ratio: float = 0.5, valid_size: int = 256, test_bins=None,
                 test_size: int = 64):
        super().__init__()
        from ..tasks import languages as L

        self._L = L
        modes = {"recognition": L.RecognitionTask, "next_symbol": L.NextSymbolTask}
        if mode not in modes:
            raise InvalidParameterError(f"mode must be one of {', '.join(modes)}, got {mode!r}")
        kw = {"neg_ratio": neg_ratio} if mode == "recognition" else {}
        self.task = modes[mode](language, lengths=lengths, **kw)
        self.language, self.mode = self.task.language, mode
        self.name = f"lang:{self.language.name}"
        for nm, v in (("valid_size", valid_size), ("test_size", test_size)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise InvalidParameterError(f"{nm} must be a positive integer, got {v!r}")
        self.valid_size, self.test_size = valid_size, test_size
        self.bins = L.bin_lengths(self.language, test_bins, per_bin=test_size) \
            if test_bins is not None else {}
        self.eval_splits = (VALID,) + tuple(f"test_{b}" for b in self.bins)
        self.input_dim = len(self.language.alphabet)
        self.output_dim = 1 if mode == "recognition" else self.language.n_targets
        self._eval: dict[str, list] = {}

    def model_defaults(self) -> dict[str, Any]:
        # symbol-level models (rnnmem.models.stack_rnn) name the sizes vocab_size/output_size
        return {**super().model_defaults(), "vocab_size": self.input_dim,
                "output_size": self.output_dim, "mode": self.mode}

    def _tensors(self, b: dict):
        x = torch.as_tensor(b["x"], device=self.device)  # (B, T) ids
        inputs = F.one_hot(x, self.input_dim).to(self.dtype)  # (B, T, A)
        y = torch.as_tensor(b["y"], device=self.device).to(self.dtype)  # (B,) or (B, T, V)
        mask = torch.as_tensor(b["mask"], device=self.device)  # (B, T) bool
        return inputs, y, mask

    def _configured(self) -> None:
        # fixed evaluation sets, drawn once from a seed derived from the run's seed
        self._eval = {}
        rng = np.random.default_rng([self.seed, 1])
        n, bs = self.valid_size, self.batch_size
        self._eval[VALID] = [self._tensors(self.task.sample_batch(rng, min(bs, n - i)))
                             for i in range(0, n, bs)]
        for b, lengths in self.bins.items():
            batches = []
            for k, length in enumerate(lengths):
                share = self.test_size // len(lengths) + (k < self.test_size % len(lengths))
                for i in range(0, share, bs):
                    batches.append(self._tensors(
                        self.task.sample_batch(rng, min(bs, share - i), length)))
            self._eval[f"test_{b}"] = batches

    def batch(self, split, step, generator):
        if split != TRAIN:
            raise InvalidParameterError(f"task {self.name!r} samples only the train split; "
                                        f"held-out splits are {', '.join(self._eval)}")
        return self._tensors(self.task.sample_batch(numpy_rng_from(generator),
                                                    self.batch_size))

    def eval_batches(self, split):
        if split not in self._eval:
            raise InvalidParameterError(f"split {split!r} not in task {self.name!r} "
                                        f"(has {', '.join(self._eval)})")
        yield from self._eval[split]

    def _check_width(self, outputs):
        width = outputs.shape[-1]
        ok = (1, 2) if self.mode == "recognition" else (self.output_dim,)
        if outputs.dim() != 3 or width not in ok:
            raise ShapeError(f"task {self.name!r} ({self.mode}) needs model outputs "
                             f"(B, T, {' or '.join(map(str, ok))}), got {tuple(outputs.shape)}")

    def loss(self, outputs, targets, mask):
        self._check_width(outputs)
        if self.mode == "recognition":
            last = outputs[:, -1].float()  # (B, 1) or (B, 2): logits after the whole string
            if last.shape[-1] == 2:  # two classes: cross-entropy
                return F.cross_entropy(last, targets.long())
            return F.binary_cross_entropy_with_logits(last[:, 0], targets.float())
        bce = F.binary_cross_entropy_with_logits(outputs.float(), targets.float(),
                                                 reduction="none")  # (B, T, V)
        m = mask.to(bce.dtype)[..., None].expand_as(bce)
        return (bce * m).sum() / m.sum().clamp_min(1)

    def metrics(self, outputs, targets, mask):
        L = self._L
        o = outputs.detach().float().cpu().numpy()
        y = targets.detach().float().cpu().numpy()  # numpy has no bfloat16
        if self.mode == "recognition":
            last = o[:, -1]  # (B, 1) or (B, 2)
            score = last[:, 0] if last.shape[-1] == 1 else last[:, 1] - last[:, 0]
            ok = L.recognition_correct(score, y.astype(bool))
            return {"accuracy": (float(ok.sum()), float(ok.size))}
        m = mask.cpu().numpy()
        pos = L.next_symbol_position_correct(o, y.astype(bool))  # (B, T)
        ok = L.next_symbol_correct(o, y.astype(bool), m)  # (B,)
        return {"accuracy": (float(ok.sum()), float(ok.size)),
                "position_accuracy": (float(pos[m].sum()), float(m.sum()))}


@register_task_prefix("lang", _language_names)
def _language_task(language: str, **options) -> LanguageTask:
    """``"lang:<language>"``: a :class:`LanguageTask` (options: see its docstring)."""
    try:
        known = _language_names()
    except ImportError as exc:  # pragma: no cover - the module ships with rnnmem
        raise DatasetError(f"formal-language tasks unavailable: {exc}") from None
    if language not in known:
        raise UnknownNameError("task", f"lang:{language}", task_names())
    options.pop("bptt", None)
    return LanguageTask(language, **options)


# ============================================================================ ptb
# the language-modelling task lives in .lm (it registers "ptb"); imported last, once every
# name it needs from this module exists
from . import lm as _lm  # noqa: E402,F401
