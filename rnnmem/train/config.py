"""The training configuration: one frozen dataclass, validated field by field.

In the style of nanoGPT, every knob of a run lives in one flat, immutable
:class:`TrainConfig`; the training loop (:func:`rnnmem.train.train`) reads it once at the
top. The configuration round-trips through JSON (:meth:`TrainConfig.to_json`,
:meth:`TrainConfig.from_json`) and is stored in every checkpoint, so that a run can be
resumed or reproduced from its output directory alone.

Every field is checked in ``__post_init__``; a bad value raises
:class:`rnnmem.errors.InvalidParameterError` whose message starts with the field's name.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from ..errors import ConflictingOptionsError, InvalidParameterError
from ..errors import ResourceLimitError
from ..limits import MAX_COUNT, SEED_MAX

__all__ = ["TrainConfig", "OPTIMIZERS", "SCHEDULES", "DTYPE_NAMES", "FREEZE_MODES",
           "DEFAULT_STEPS"]

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("constant", "cosine", "plateau")
DTYPE_NAMES = ("float32", "float64", "float16", "bfloat16")
PRECISIONS = ("mixed", "pure")
FREEZE_MODES = ("none", "memory", "controller", "all_but_classifier")
#: number of optimisation steps when neither ``steps`` nor ``epochs`` is given
DEFAULT_STEPS = 1000

_JSON_SCALARS = (str, int, float, bool, type(None))


def _bad(name: str, msg: str) -> InvalidParameterError:
    return InvalidParameterError(f"{name}: {msg}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_int(name, v, *, minimum, optional=False):
    if v is None and optional:
        return
    if not _is_int(v) or v < minimum:
        raise _bad(name, f"must be an integer >= {minimum}{' or None' if optional else ''}, "
                         f"got {v!r}")
    if v > MAX_COUNT:  # rnnmem.limits: every count is bounded
        raise ResourceLimitError(f"TrainConfig.{name}: {v} is above the limit {MAX_COUNT}")


def _check_real(name, v, *, positive=False, nonneg=False, optional=False, below=None):
    if v is None and optional:
        return
    if not _is_real(v) or not math.isfinite(v):
        raise _bad(name, f"must be a finite number{' or None' if optional else ''}, got {v!r}")
    if positive and not v > 0:
        raise _bad(name, f"must be > 0, got {v!r}")
    if nonneg and not v >= 0:
        raise _bad(name, f"must be >= 0, got {v!r}")
    if below is not None and not v < below:
        raise _bad(name, f"must be < {below}, got {v!r}")


def _check_choice(name, v, choices):
    if v not in choices:
        raise _bad(name, f"must be one of {', '.join(choices)}; got {v!r}")


def _check_jsonable(name, v, path=""):
    """Model/task options must be JSON-like (they are stored in checkpoints)."""
    where = f"{name}{path}"
    if isinstance(v, _JSON_SCALARS):
        if isinstance(v, float) and not math.isfinite(v):
            raise _bad(where, f"must be finite, got {v!r}")
        return
    if isinstance(v, (list, tuple)):
        for i, x in enumerate(v):
            _check_jsonable(name, x, f"{path}[{i}]")
        return
    if isinstance(v, Mapping):
        for k, x in v.items():
            if not isinstance(k, str):
                raise _bad(where, f"keys must be strings, got {k!r}")
            _check_jsonable(name, x, f"{path}.{k}")
        return
    raise _bad(where, f"must be JSON-like (numbers, strings, bools, lists, dicts), "
                      f"got {type(v).__name__}")


def _thaw(v):
    """A plain (JSON) copy of nested mappings/tuples."""
    if isinstance(v, Mapping):
        return {k: _thaw(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_thaw(x) for x in v]
    return v


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run.

    Parameters
    ----------
    model, model_kwargs
        A model name registered in :data:`rnnmem.models.registry.MODELS` and its
        constructor options. ``input_dim``/``output_dim`` default to what the task needs;
        ``dtype`` and ``device`` are set by the loop from this config.
    task, task_kwargs
        A task name from :data:`rnnmem.tasks.registry.TASK_BUILDERS` and its options.
    steps, epochs
        Length of the run, in optimiser steps or in passes over a finite training set (only
        for tasks with a finite training split). At most one may be given; if neither is,
        :data:`DEFAULT_STEPS` steps are taken.
    batch_size : int
    lr, weight_decay, momentum
        Learning rate, decoupled (AdamW) or L2 (SGD) weight decay, SGD momentum.
    optimizer : {"adamw", "sgd"}
    schedule : {"constant", "cosine", "plateau"}
        Learning-rate schedule after ``warmup`` linear warm-up steps. ``cosine`` decays from
        ``lr`` to ``min_lr`` over the remaining steps; ``plateau`` multiplies the rate by
        ``plateau_factor`` when the validation loss has not improved (relative
        ``plateau_threshold``) for ``plateau_patience`` evaluations, never below ``min_lr``.
    grad_clip : float or None
        Clip the global gradient 2-norm to this value.
    target_loss : float or None
        Stop early as soon as a training batch's loss is ``<= target_loss``.
    dtype : {"float32", "float64", "float16", "bfloat16"}
        Precision. ``float32``/``float64`` are the parameter dtype; ``float16`` and
        ``bfloat16`` keep float32 parameters and run the forward pass under
        :func:`torch.autocast` (with a gradient scaler for ``float16``) unless
        ``precision="pure"``.
    adam_eps : float
        The :math:`\\epsilon` of AdamW (default 1e-8, torch's). With ``precision="pure"`` and
        ``float16`` it must be a normal float16 number (>= 6.1e-5): 1e-8 rounds to 0 there
        and AdamW's first step divides 0 by 0 (measured: NaN at step 1).
    precision : {"mixed", "pure"}
        For ``float16``/``bfloat16`` only: ``"mixed"`` (default) is autocast with float32
        parameters (on CPU, autocast leaves some ops such as the LSTM cell in float32);
        ``"pure"`` stores the parameters, optimizer state and every operation in that dtype
        (no autocast, no scaler): the precision study of Das & Mali. Ignored for
        ``float32``/``float64``.
    device : str
        ``"auto"`` (CUDA if present), ``"cpu"``, ``"cuda:0"``, ...
    threads : int or None
        CPU threads for the run (:func:`torch.set_num_threads`, restored afterwards);
        ``None`` keeps torch's setting. Step-by-step recurrences are made of many small
        operations, and waking a second thread for each can cost more than it saves: the
        fused stack-LSTM/LSTM node and the stack RNN's forward loop run steps smaller than
        :data:`rnnmem.models._device.SERIAL_STEP_WORK` on one thread whatever this says.
        Larger steps gain from threads on a quiet machine and lose on a loaded one: a
        stack-LSTM training step (batch 128, hidden 256, length 40) on a 2-vCPU VM took
        0.16 s on one thread, 0.08 s (spinning) or 0.13-0.15 s (``OMP_WAIT_POLICY=PASSIVE``)
        on two when quiet, and 0.45 s (spinning) or 0.17 s (passive) on two beside a busy
        process (``benchmarks``, section e; an earlier VM: 223 ms on one, 346 ms on two).
    seed : int
        Seeds torch, numpy, Python's ``random`` and the data stream.
    temporal_weighting : float
        Exponent :math:`p \\ge 0` of the temporally weighted squared error of regression
        tasks (see :func:`rnnmem.tasks.interface.temporal_weights`); 0 is the plain MSE.
    eval_every, checkpoint_every : int
        Evaluate / write ``last.pt`` every so many steps (0: only at the end).
    log_every : int
        Refresh the progress bar's loss every so many steps.
    out_dir : str or None
        Where ``metrics.csv``, ``metrics.json``, ``config.json``, ``last.pt`` and ``best.pt``
        go. ``None`` trains in memory (no files, no resume).
    freeze : {"none", "memory", "controller", "all_but_classifier"}
    freeze_after : int
        From step ``freeze_after`` on, freeze the named part of the model with
        :func:`rnnmem.models.freezing.apply_freeze`.
    bptt : int or None
        Truncated back-propagation length, passed to language-model tasks as an option.
    margin_penalty, margin_target : float
        Add :math:`c\\,\\mathrm{relu}(\\mu^* - \\mu(\\theta))` to the training loss, with
        :math:`c` = ``margin_penalty`` (0: off), :math:`\\mu^*` = ``margin_target`` and
        :math:`\\mu` the model's ``stability_margin()`` (the eigenvalue penalty of the
        curse-of-memory code, ``src/models/lf_module.py`` on ``main``: :math:`c = 0.01`,
        :math:`\\mu^* = 1`). The logged training loss excludes it, as there.
    stop_below : float or None
        Stop as soon as an evaluation's validation loss is ``< stop_below`` (the early
        stopping threshold of the original's "ensure approximation" scripts); needs
        evaluations (``eval_every > 0``) on a task with a validation split.
    stop_below_after : int
        Apply ``stop_below`` only from this step on (the original's ``min_epochs``).
    restore_best : bool
        At the end, put the weights of the best validation loss back into the model
        (in memory; ``best.pt`` holds them on disk); needs ``eval_every > 0``.
    """

    model: str
    task: str
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    task_kwargs: Mapping[str, Any] = field(default_factory=dict)
    steps: int | None = None
    epochs: int | None = None
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.0
    optimizer: str = "adamw"
    schedule: str = "constant"
    warmup: int = 0
    min_lr: float = 0.0
    plateau_factor: float = 0.5
    plateau_patience: int = 5
    plateau_threshold: float = 1e-4
    grad_clip: float | None = None
    target_loss: float | None = None
    dtype: str = "float32"
    precision: str = "mixed"
    adam_eps: float = 1e-8
    device: str = "auto"
    threads: int | None = None
    seed: int = 0
    temporal_weighting: float = 0.0
    eval_every: int = 100
    checkpoint_every: int = 100
    log_every: int = 10
    out_dir: str | None = None
    freeze: str = "none"
    freeze_after: int = 0
    bptt: int | None = None
    margin_penalty: float = 0.0
    margin_target: float = 1.0
    stop_below: float | None = None
    stop_below_after: int = 0
    restore_best: bool = False

    # ------------------------------------------------------------------ validation
    def __post_init__(self):
        for name in ("model", "task"):
            v = getattr(self, name)
            if not isinstance(v, str) or not v.strip():
                raise _bad(name, f"must be a non-empty name, got {v!r}")
        for name in ("model_kwargs", "task_kwargs"):
            v = getattr(self, name)
            if not isinstance(v, Mapping):
                raise _bad(name, f"must be a mapping of options, got {type(v).__name__}")
            _check_jsonable(name, v)
            object.__setattr__(self, name, MappingProxyType(_thaw(v)))
        from ..models.registry import canonical_model_options

        # deprecated option names (e.g. state_dim for width) are stored under the new name
        object.__setattr__(self, "model_kwargs", MappingProxyType(
            canonical_model_options(self.model, dict(self.model_kwargs))))
        reserved = {"dtype", "device"} & set(self.model_kwargs)
        if reserved:
            raise _bad("model_kwargs", f"{sorted(reserved)} are set from the config's own "
                                       "dtype/device fields")
        _check_int("steps", self.steps, minimum=1, optional=True)
        _check_int("epochs", self.epochs, minimum=1, optional=True)
        if self.steps is not None and self.epochs is not None:
            raise _bad("steps", "give either steps or epochs, not both")
        _check_int("batch_size", self.batch_size, minimum=1)
        _check_real("lr", self.lr, positive=True)
        _check_real("weight_decay", self.weight_decay, nonneg=True)
        _check_real("momentum", self.momentum, nonneg=True, below=1.0)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_int("warmup", self.warmup, minimum=0)
        _check_real("min_lr", self.min_lr, nonneg=True)
        if self.min_lr > self.lr:
            raise _bad("min_lr", f"must be <= lr ({self.lr}), got {self.min_lr}")
        _check_real("plateau_factor", self.plateau_factor, positive=True, below=1.0)
        _check_int("plateau_patience", self.plateau_patience, minimum=0)
        _check_real("plateau_threshold", self.plateau_threshold, nonneg=True)
        _check_real("grad_clip", self.grad_clip, positive=True, optional=True)
        _check_real("target_loss", self.target_loss, optional=True)
        _check_choice("dtype", self.dtype, DTYPE_NAMES)
        _check_choice("precision", self.precision, PRECISIONS)
        _check_real("adam_eps", self.adam_eps, positive=True)
        if (self.precision == "pure" and self.dtype == "float16" and self.optimizer == "adamw"
                and self.adam_eps < 2.0**-14):
            raise _bad("adam_eps", f"{self.adam_eps:g} underflows in float16 (smallest normal "
                                   "6.1e-05), so AdamW would divide 0 by 0 on its first step; "
                                   "use e.g. adam_eps=1e-4 with precision='pure'")
        if not isinstance(self.device, str) or not self.device:
            raise _bad("device", f"must be a device string such as 'auto' or 'cpu', "
                                 f"got {self.device!r}")
        _check_int("threads", self.threads, minimum=1, optional=True)
        if not _is_int(self.seed) or not 0 <= self.seed <= SEED_MAX:
            raise _bad("seed", f"must be an integer in [0, 2**63 - 1], got {self.seed!r}")
        _check_real("temporal_weighting", self.temporal_weighting, nonneg=True)
        _check_int("eval_every", self.eval_every, minimum=0)
        _check_int("checkpoint_every", self.checkpoint_every, minimum=0)
        _check_int("log_every", self.log_every, minimum=1)
        if self.out_dir is not None and (not isinstance(self.out_dir, str) or not self.out_dir):
            raise _bad("out_dir", f"must be a path string or None, got {self.out_dir!r}")
        _check_choice("freeze", self.freeze, FREEZE_MODES)
        _check_int("freeze_after", self.freeze_after, minimum=0)
        _check_int("bptt", self.bptt, minimum=1, optional=True)
        _check_real("margin_penalty", self.margin_penalty, nonneg=True)
        _check_real("margin_target", self.margin_target)
        _check_real("stop_below", self.stop_below, positive=True, optional=True)
        _check_int("stop_below_after", self.stop_below_after, minimum=0)
        if not isinstance(self.restore_best, bool):
            raise _bad("restore_best", f"must be a bool, got {self.restore_best!r}")
        for name, on in (("stop_below", self.stop_below is not None),
                         ("restore_best", self.restore_best)):
            if on and self.eval_every == 0:
                raise ConflictingOptionsError(
                    name, "eval_every=0", "the rule reads the validation loss, which is "
                    "never evaluated during the run; set eval_every > 0")

    # ------------------------------------------------------------------ derived
    def total_steps(self, steps_per_epoch: int | None = None) -> int:
        """Number of optimiser steps of the run (``epochs`` needs ``steps_per_epoch``)."""
        if self.steps is not None:
            return self.steps
        if self.epochs is not None:
            if not steps_per_epoch:
                raise _bad("epochs", f"task {self.task!r} has no finite epoch; give steps")
            return self.epochs * int(steps_per_epoch)
        return DEFAULT_STEPS

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict:
        """A plain-dict copy (JSON-serialisable)."""
        return {f.name: _thaw(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        if not isinstance(d, Mapping):
            raise InvalidParameterError(f"config must be a mapping, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InvalidParameterError(f"{unknown[0]}: unknown TrainConfig field; "
                                        f"known: {', '.join(sorted(known))}")
        missing = [n for n in ("model", "task") if n not in d]
        if missing:
            raise InvalidParameterError(f"{missing[0]}: required TrainConfig field missing")
        return cls(**dict(d))

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        try:
            d = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise InvalidParameterError(f"config: not valid JSON ({exc})") from None
        return cls.from_dict(d)

    def replace(self, **changes) -> "TrainConfig":
        """A validated copy with some fields changed (:func:`dataclasses.replace`)."""
        return dataclasses.replace(self, **changes)

    def differences(self, other: "TrainConfig") -> list[str]:
        """Names of the fields whose values differ."""
        a, b = self.to_dict(), other.to_dict()
        return [k for k in a if a[k] != b[k]]
