"""The one training loop.

:func:`train` reads a :class:`~rnnmem.train.config.TrainConfig`, chooses device and
precision once at the top, and runs a single readable loop (nanoGPT style)::

    for step in range(start, total):
        lr      <- schedule(step)                      # warm-up, then constant/cosine/plateau
        x, y, m <- task.batch("train", step, data_rng)
        loss    <- task.loss(model(x), y, m)           # under autocast for float16/bfloat16
                   (stateful tasks: task.forward(model, x, state), the state carried,
                    detached, to the next step and reset at every epoch start)
        stop if loss is NaN/inf                        # TrainingDivergedError, last.pt intact
        backward, clip the global gradient norm, optimizer step
        stop early if loss <= target_loss
        every eval_every steps: evaluate, log metrics.csv/.json, keep best.pt
        every checkpoint_every steps: write last.pt (only if the new parameters are
                                      finite and give a finite loss on the latest batch)

Checkpoints (``last.pt``, ``best.pt``) are :func:`rnnmem.models.registry.save_checkpoint`
files (written atomically, loaded with ``weights_only=True``) whose ``extra["train"]`` holds
everything needed to continue *bit for bit*: optimizer, schedule, gradient-scaler and
all random-number-generator states (as tensors and ints), the step, the metric history,
the configuration as JSON and, for a stateful task (truncated BPTT), the carried recurrent
state (``task.pack_state``). ``train(config, resume=True)`` continues from ``last.pt`` and
reaches the same parameters as an uninterrupted run.

A first SIGINT/SIGTERM (Ctrl-C) finishes the current step, writes ``last.pt`` and returns a
result with ``stopped="interrupted"``; a second one interrupts at once.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import (CheckpointError, CorruptFileError, InvalidParameterError,
                      ResourceLimitError, RnnmemError, RunDirectoryConflictError, StorageError,
                      TrainingDivergedError, exception_text)
from ..limits import check_memory
from ..files import (MANIFEST, DirLock, atomic_write, read_json, remove_stale_temporaries,
                     storage_error, to_jsonable, write_json, write_manifest)
from ..models._device import resolve_device, resolve_dtype, step_threads
from ..models.base import model_outputs
from .config import TrainConfig
from ..tasks.interface import TrainTask
from ..tasks.registry import build_task

__all__ = ["train", "TrainResult", "LRSchedule", "CHECKPOINT_KEY", "RESUMABLE_FIELDS",
           "load_train_state"]

#: key of the training state inside a checkpoint's ``extra``
CHECKPOINT_KEY = "train"
TRAIN_STATE_VERSION = 1
#: config fields that may differ between a checkpoint and the run resuming it
RESUMABLE_FIELDS = frozenset({"steps", "epochs", "out_dir", "eval_every", "checkpoint_every",
                              "log_every", "target_loss", "device", "threads",
                              "stop_below", "stop_below_after", "restore_best"})
_AMP = {"float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class TrainResult:
    """What :func:`train` returns.

    ``stopped`` is ``"completed"``, ``"target_loss"`` (early stop), ``"stop_below"``
    (the validation loss fell below ``config.stop_below``), ``"interrupted"`` (signal) or
    ``"callback"``. ``final_metrics`` is the last evaluation (keys ``step``,
    ``train_loss``, ``<split>_<metric>``); ``history`` every evaluation row;
    ``best_metrics`` the row of the best validation loss and ``restored_best`` whether
    the model holds its weights (``config.restore_best``).
    """

    config: TrainConfig
    model: torch.nn.Module
    steps: int
    total_steps: int
    stopped: str
    final_metrics: dict[str, float]
    history: list[dict[str, float]]
    last_checkpoint: Path | None = None
    best_checkpoint: Path | None = None
    best_loss: float | None = None
    elapsed_s: float = 0.0
    out_dir: Path | None = None
    best_metrics: dict[str, float] | None = None
    restored_best: bool = False

    def summary(self) -> str:
        """A few human-readable lines."""
        m = self.final_metrics
        keys = [k for k in m if k not in ("step", "time_s", "epoch")]
        lines = [f"{self.config.model} on {self.config.task}: {self.stopped} after "
                 f"{self.steps}/{self.total_steps} steps in {self.elapsed_s:.1f}s",
                 "  " + "  ".join(f"{k}={m[k]:.6g}" for k in keys if m[k] is not None)]
        if self.best_loss is not None:
            lines.append(f"  best {self._eval_split()}_loss={self.best_loss:.6g}")
        if self.last_checkpoint:
            lines.append(f"  last checkpoint: {self.last_checkpoint}")
        if self.best_checkpoint:
            lines.append(f"  best checkpoint: {self.best_checkpoint}")
        return "\n".join(lines)

    def _eval_split(self):
        for k in self.final_metrics:
            if k.endswith("_loss") and k != "train_loss":
                return k[:-5]
        return "eval"


# ================================================================== learning-rate schedule
class LRSchedule:
    """Learning rate as a function of the step, plus the plateau state.

    .. math::

        \\eta(s) = \\begin{cases}
          \\eta_0\\,(s+1)/W & s < W \\text{ (warm-up)}\\\\
          \\eta_0 & \\text{constant}\\\\
          \\eta_{\\min} + \\tfrac12(\\eta_0-\\eta_{\\min})(1+\\cos(\\pi\\,\\tfrac{s-W}{S-W}))
            & \\text{cosine}\\\\
          \\max(\\eta_{\\min},\\ \\eta_0\\,\\gamma^{k}) & \\text{plateau}
        \\end{cases}

    with :math:`S` total steps, :math:`W` warm-up steps and :math:`k` the number of
    reductions so far (one each time the validation loss fails to improve by a relative
    ``plateau_threshold`` for more than ``plateau_patience`` evaluations). The state is
    three plain numbers, so it survives ``weights_only`` checkpoint loading.
    """

    def __init__(self, config: TrainConfig, total_steps: int):
        self.c, self.total = config, int(total_steps)
        self.best: float | None = None
        self.bad = 0
        self.scale = 1.0

    def lr(self, step: int) -> float:
        c = self.c
        if step < c.warmup:
            return c.lr * (step + 1) / c.warmup
        if c.schedule == "cosine":
            span = max(self.total - c.warmup, 1)
            progress = min(max((step - c.warmup) / span, 0.0), 1.0)
            return c.min_lr + 0.5 * (c.lr - c.min_lr) * (1.0 + math.cos(math.pi * progress))
        if c.schedule == "plateau":
            return max(c.min_lr, c.lr * self.scale)
        return c.lr

    def observe(self, loss: float) -> None:
        """Feed a validation loss (plateau schedule only)."""
        if self.c.schedule != "plateau" or not math.isfinite(loss):
            return
        if self.best is None or loss < self.best * (1.0 - self.c.plateau_threshold):
            self.best, self.bad = float(loss), 0
        else:
            self.bad += 1
            if self.bad > self.c.plateau_patience:
                self.scale *= self.c.plateau_factor
                self.bad = 0

    def state_dict(self) -> dict:
        return {"best": self.best, "bad": self.bad, "scale": self.scale}

    def load_state_dict(self, d: dict) -> None:
        self.best, self.bad, self.scale = d["best"], int(d["bad"]), float(d["scale"])


# ================================================================== RNG states as tensors
def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def _rng_state(data_gen: torch.Generator) -> dict:
    """Every RNG state as tensors/ints (``weights_only``-loadable)."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64),
                   "gauss": gauss},
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
        "data": data_gen.get_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def _set_rng_state(state: dict, data_gen: torch.Generator) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    npst = state["numpy"]
    np.random.set_state((npst["kind"], npst["keys"].numpy().astype(np.uint32), npst["pos"],
                         npst["has_gauss"], npst["cached"]))
    torch.set_rng_state(state["torch"])
    data_gen.set_state(state["data"])
    if state["cuda"] and torch.cuda.is_available() \
            and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


# ================================================================== files
#: files of a run directory (what --force removes; what the run manifest records)
RUN_FILES = ("config.json", "metrics.csv", "metrics.json", "last.pt", "best.pt", MANIFEST)


class _MetricsLog:
    """``metrics.csv`` and ``metrics.json`` (the whole history), each rewritten atomically
    after every evaluation (a crash leaves the previous complete file, never a torn row)."""

    def __init__(self, out: Path | None):
        self.out = out

    def rewrite(self, history: list[dict]) -> None:
        if self.out is None:
            return
        cols: list[str] = []
        for row in history:
            cols += [k for k in row if k not in cols]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        for row in history:
            w.writerow({k: to_jsonable(row.get(k)) for k in cols})
        atomic_write(self.out / "metrics.csv", buf.getvalue() if cols else "")
        write_json(self.out / "metrics.json", history, indent=1)

    append = rewrite


def _run_manifest(out: Path) -> None:
    """``out/manifest.json``: the SHA-256 and size of every file of the run."""
    write_manifest(out, [f for f in RUN_FILES[:-1] if (out / f).is_file()])


def _stored_config(out: Path) -> "TrainConfig | None":
    """The configuration of the run already in ``out`` (from last.pt, else config.json),
    or None when ``out`` holds no run."""
    last = out / "last.pt"
    if last.exists():
        return load_train_state(last)[0]
    cj = out / "config.json"
    if cj.exists():
        data = read_json(cj)
        try:
            return TrainConfig.from_dict(data)
        except (RnnmemError, TypeError, AttributeError) as exc:
            raise CorruptFileError(f"{cj}: not a training configuration ({exception_text(exc)})",
                                   path=str(cj)) from None
    return None


def _out_of_memory(exc: BaseException) -> bool:
    """An allocation that failed (numpy's MemoryError, torch's allocator or CUDA OOM)."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc)
    return "can't allocate memory" in text or "out of memory" in text.lower()


#: model options read as the width of the recurrent state, for the memory estimate
_WIDTH_KEYS = ("state_dim", "hidden_dim", "hidden_size", "width", "d_model", "embedding_dim",
               "stack_width")


def _check_run_memory(config: TrainConfig, task: TrainTask) -> None:
    """Estimate, before the model is built, what one training step allocates: the states of
    a batch, ``batch x length x width`` values, kept for backpropagation with their
    gradients (x 8 bytes x 8 copies); refused (:func:`rnnmem.limits.check_memory`) when it
    exceeds the available memory or ``RNNMEM_MAX_BYTES``. The batch shape comes from one
    probe batch drawn with its own generator (the run's random streams are untouched)."""
    widths = [v for k, v in dict(config.model_kwargs).items()
              if k in _WIDTH_KEYS and isinstance(v, int) and not isinstance(v, bool)]
    if not widths:
        return
    x = task.batch("train", 0, torch.Generator().manual_seed(0))[0]
    b = int(x.shape[0]) if x.dim() >= 1 else 1
    length = int(x.shape[1]) if x.dim() >= 2 else 1
    width = max(widths)
    check_memory(8.0 * 8 * b * length * width,
                 f"a training step with batch_size={b} x length={length} x width={width}",
                 "use a smaller batch_size, sequence length or model width")


def _describe(cfg: TrainConfig) -> str:
    kw = ", ".join(f"{k}={v!r}" for k, v in dict(cfg.model_kwargs).items())
    return f"{cfg.model}{f'({kw})' if kw else ''} on {cfg.task}, seed {cfg.seed}"


def _claim_run_dir(out: Path, config: TrainConfig, resume: bool, force: bool) -> None:
    """Check what ``out`` holds before this run writes into it (the lock is held).

    Another run (a different configuration, apart from :data:`RESUMABLE_FIELDS`) is refused
    with :class:`RunDirectoryConflictError` naming it; the same configuration is refused
    without ``resume`` (it would be overwritten); ``force`` removes the old run's files."""
    if force:
        for f in RUN_FILES:
            p = out / f
            if p.is_dir() and not p.is_symlink():
                raise StorageError(f"cannot replace {p}: it is a directory; remove it yourself",
                                   path=str(p))
            try:
                p.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise storage_error(exc, p, "remove") from None
        return
    last = out / "last.pt"
    if last.exists() and not last.is_file():
        raise CheckpointError(f"{str(last)!r} is a directory, not a checkpoint; remove it or "
                              "use --force (nothing was trained)")
    stored = _stored_config(out)
    if stored is None:
        return
    diff = [k for k in stored.differences(config) if k not in RESUMABLE_FIELDS]
    if diff:
        raise RunDirectoryConflictError(
            f"{out} holds another run ({_describe(stored)}; differs in {', '.join(diff)}); "
            "choose another --out, or --force to replace it")
    if not resume:
        raise RunDirectoryConflictError(
            f"{out} already holds this run ({_describe(stored)}); --resume continues it, "
            "--force replaces it")


# ================================================================== signals
class _StopOnSignal:
    """First SIGINT/SIGTERM sets ``requested``; a second one raises KeyboardInterrupt."""

    def __init__(self):
        self.requested = False
        self._old: dict = {}

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:
                    self._old[sig] = signal.signal(sig, self._handler)
                except (ValueError, OSError):  # pragma: no cover
                    pass
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


# ================================================================== building blocks
#: option names that mean the same thing for different model families; a user setting one
#: of a group in ``model_kwargs`` replaces the task's defaults for the whole group
_SYNONYMS = (("input_dim", "vocab_size"), ("output_dim", "output_size"))


def _build_model(config: TrainConfig, task: TrainTask, device, param_dtype):
    from ..models.registry import MODELS, _ensure_models_loaded, build_model

    _ensure_models_loaded()
    cls = MODELS.get(config.model)
    user = dict(config.model_kwargs)
    defaults = dict(task.model_defaults())
    defaults.setdefault("seed", config.seed)
    for group in _SYNONYMS:
        if any(k in user for k in group):
            for k in group:
                defaults.pop(k, None)
    if cls is not None:  # unknown names fall through to build_model's error
        ok = cls.options() if hasattr(cls, "options") else set(defaults)
        defaults = {k: v for k, v in defaults.items() if k in ok}
    kwargs = {**defaults, **user}
    dtype_name = str(param_dtype).replace("torch.", "")
    try:
        return build_model(config.model, **kwargs, dtype=dtype_name, device=str(device))
    except TypeError as exc:
        raise InvalidParameterError(f"model_kwargs: {config.model!r} rejects its options: "
                                    f"{exc}") from None


def _make_optimizer(config: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters()]
    if not params:
        raise InvalidParameterError(f"model: {config.model!r} has no parameters to train")
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay,
                                 eps=config.adam_eps)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                           weight_decay=config.weight_decay)


def _freeze_schedule(config: TrainConfig):
    """A :class:`rnnmem.models.freezing.FreezeSchedule`, or None without freezing."""
    if config.freeze == "none":
        return None
    try:
        from ..models.freezing import FreezeSchedule
    except ImportError:
        raise InvalidParameterError(f"freeze: {config.freeze!r} needs rnnmem.models.freezing, "
                                    "which is not available") from None
    return FreezeSchedule(config.freeze, config.freeze_after)


def _params_finite(model) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def load_train_state(path) -> tuple[TrainConfig, dict]:
    """The config and the training state stored in a checkpoint written by :func:`train`."""
    from ..models.registry import load_checkpoint

    obj = load_checkpoint(path)
    st = obj.get("extra", {}).get(CHECKPOINT_KEY)
    if not isinstance(st, dict) or st.get("version") != TRAIN_STATE_VERSION:
        raise CheckpointError(f"{str(path)!r} holds no rnnmem training state")
    try:
        cfg = TrainConfig.from_json(st["config"])
    except (RnnmemError, KeyError) as exc:
        raise CheckpointError(f"{str(path)!r}: bad stored config: {exc}") from None
    return cfg, {**st, "state_dict": obj["state_dict"], "model": obj["model"]}


# ================================================================== the loop
def train(config: TrainConfig, *, model: torch.nn.Module | None = None,
          task: TrainTask | None = None, resume: bool = False, progress: bool = True,
          callback: Callable[[int, float], bool] | None = None,
          force: bool = False,
          eval_callback: Callable[[int, dict], bool] | None = None) -> TrainResult:
    """Train ``config.model`` on ``config.task`` (or the given ``model``/``task``).

    Parameters
    ----------
    config : TrainConfig
    model : torch.nn.Module, optional
        Use this model instead of building ``config.model`` (it is moved to the run's
        device; its floating parameters must already have the run's dtype). Checkpoints
        need a registered model (``model_name`` and ``config``).
    task : TrainTask, optional
        Use this task instead of building ``config.task``.
    resume : bool
        Continue from ``out_dir/last.pt`` (if it exists; otherwise start fresh). The stored
        configuration must equal ``config`` except for :data:`RESUMABLE_FIELDS`.
    force : bool
        Replace the run that ``out_dir`` holds (its files are removed first).
    progress : bool
        Show a tqdm bar (only when stderr is a terminal).
    callback : callable ``(step, loss) -> bool``, optional
        Called after every step; returning ``True`` stops the run like an interruption
        (``last.pt`` written, ``stopped="callback"``).
    eval_callback : callable ``(step, metrics) -> bool``, optional
        Called after every evaluation with its row (``train_loss``, ``valid_loss``, ...);
        returning ``True`` stops the run the same way.

    Returns
    -------
    TrainResult

    Raises
    ------
    TrainingDivergedError
        When the loss or the gradient norm becomes NaN/inf; ``.step``, ``.loss`` and
        ``.checkpoint`` (the untouched last good ``last.pt``, or ``None``) are attached.
    DirectoryLockedError
        When another process is writing ``out_dir`` (an exclusive ``flock`` is held on
        ``out_dir/.lock`` for the whole run; the kernel drops it when a run dies).
    RunDirectoryConflictError
        When ``out_dir`` holds another run (named in the message), or this run without
        ``resume``; ``force=True`` replaces it.
    CorruptCheckpointError
        When ``last.pt`` does not match its SHA-256 (on resume).
    StorageError
        When ``out_dir`` cannot be created or written (no space, read-only, a file, ...).

    Notes
    -----
    The run directory holds ``config.json``, ``metrics.csv``, ``metrics.json``,
    ``last.pt``, ``best.pt`` and ``manifest.json`` (SHA-256 and size of each), every one
    written atomically through :mod:`rnnmem.files`; temporaries left by a killed writer
    are removed when the directory is next opened.
    """
    if not isinstance(config, TrainConfig):
        raise InvalidParameterError(f"config must be a TrainConfig, got {type(config).__name__}")
    out = Path(config.out_dir) if config.out_dir else None
    if resume and out is None:
        raise InvalidParameterError("out_dir: resume=True needs an output directory")
    if resume and force:
        raise InvalidParameterError("resume and force exclude each other (continue the run in "
                                    "out_dir, or replace it)")
    lock = None
    if out is not None:
        if out.exists() and not out.is_dir():
            raise StorageError(f"out_dir {str(out)!r} exists and is not a directory; choose "
                               "another path", path=str(out))
        lock = DirLock(out).acquire(blocking=False)
    try:
        if out is not None:
            remove_stale_temporaries(out)
            _claim_run_dir(out, config, resume, force)
        old_threads = torch.get_num_threads()
        if config.threads is not None:
            torch.set_num_threads(config.threads)
        try:
            return _train(config, model, task, resume, progress, callback, eval_callback)
        except (MemoryError, RuntimeError) as exc:
            if not _out_of_memory(exc):
                raise
            raise ResourceLimitError(
                f"training {config.model} on {config.task} needs more memory than is "
                f"available ({exception_text(exc)}); use a smaller batch_size, sequence length "
                "or model width") from None
        finally:
            torch.set_num_threads(old_threads)
    finally:
        if lock is not None:
            lock.release()


def _check_rules(config: TrainConfig, task, model) -> None:
    """Options that contradict the task or the model, refused before the first step."""
    from ..errors import ConflictingOptionsError
    from .tasks import VALID

    for name, on in (("stop_below", config.stop_below is not None),
                     ("restore_best", config.restore_best)):
        if on and VALID not in tuple(task.eval_splits):
            raise ConflictingOptionsError(
                name, f"task {getattr(task, 'name', config.task)!r}",
                f"the task has no validation split (it evaluates "
                f"{', '.join(task.eval_splits)}); give it one (e.g. valid_fraction > 0)")
    if config.margin_penalty > 0 and not callable(getattr(model, "stability_margin", None)):
        raise ConflictingOptionsError(
            "margin_penalty", f"model {config.model!r}",
            "the model has no stability_margin() for the penalty to act on")


def _penalty(config: TrainConfig, model) -> torch.Tensor | float:
    """:math:`c\\,\\mathrm{relu}(\\mu^* - \\mu(\\theta))` (0 when ``margin_penalty`` is 0)."""
    if not config.margin_penalty:
        return 0.0
    return config.margin_penalty * torch.relu(config.margin_target - model.stability_margin())


def _step_threads(model, x, device):
    """:func:`~rnnmem.models._device.step_threads` for a training step of ``model`` (its
    ``step_work`` hook, :meth:`~rnnmem.models.base.RecurrentModel.step_work`) on the batch
    ``x``: forward and backward of a small step loop on one thread; a model without the
    hook, or whose hook says ``None``, keeps the configured threads."""
    fn = getattr(model, "step_work", None)
    return step_threads(fn(int(x.shape[0])) if callable(fn) and getattr(x, "ndim", 0)
                        else None, device)


def _train(config, model, task, resume, progress, callback, eval_callback=None
           ) -> TrainResult:
    out = Path(config.out_dir) if config.out_dir else None
    last_path = out / "last.pt" if out else None
    best_path = out / "best.pt" if out else None

    # ---- device and precision, chosen once --------------------------------------------
    device = resolve_device(config.device)
    amp_dtype = _AMP.get(config.dtype) if config.precision == "mixed" else None
    param_dtype = torch.float32 if amp_dtype is not None else resolve_dtype(config.dtype)
    autocast = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if amp_dtype \
        else contextlib.nullcontext
    _seed_everything(config.seed)

    # ---- task, model, optimiser, schedule ---------------------------------------------
    if task is None:
        extra = {"bptt": config.bptt} if config.bptt is not None else {}
        task = build_task(config.task, **dict(config.task_kwargs), **extra)
    task.configure(device=device, dtype=param_dtype, batch_size=config.batch_size,
                   seed=config.seed, temporal_weighting=config.temporal_weighting)
    total = config.total_steps(task.steps_per_epoch)
    if model is None:
        _check_run_memory(config, task)
        model = _build_model(config, task, device, param_dtype)
    else:
        model = model.to(device)
        wrong = {p.dtype for p in model.parameters() if p.is_floating_point()} - {param_dtype}
        if wrong:
            raise InvalidParameterError(f"dtype: the given model has {sorted(map(str, wrong))} "
                                        f"parameters but the run uses {param_dtype}")
    if out is not None and (not getattr(model, "model_name", None)
                            or not hasattr(model, "config")):
        raise InvalidParameterError(f"model: {type(model).__name__} is not a registered rnnmem "
                                    "model, so it cannot be checkpointed (set out_dir=None)")
    _check_rules(config, task, model)
    model.train()
    optimizer = _make_optimizer(config, model)
    schedule = LRSchedule(config, total)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype is torch.float16)
    data_gen = torch.Generator().manual_seed(config.seed)
    log = _MetricsLog(out)

    step, history, elapsed0 = 0, [], 0.0
    best_loss: float | None = None
    best_state: dict | None = None  # in-memory best weights (restore_best)
    best_row: dict | None = None
    acc_sum, acc_n, last_lr, last_gnorm = 0.0, 0, config.lr, float("nan")
    # stateful tasks (truncated BPTT): the recurrent state carried from batch to batch
    stateful = bool(getattr(task, "stateful", False))
    carried = None

    # frozen parameters leave the optimizer (so neither weight decay nor momentum moves
    # them); on resume this happens before the optimizer state is loaded, so that the
    # parameter groups match the stored ones
    freezer = _freeze_schedule(config)

    def maybe_freeze(at_step: int) -> None:
        if freezer is not None and not freezer.applied:
            freezer.maybe_apply(model, at_step, optimizer)

    # ---- resume -----------------------------------------------------------------------
    if resume and last_path.is_file():
        stored, st = load_train_state(last_path)
        diff = [k for k in stored.differences(config) if k not in RESUMABLE_FIELDS]
        if diff:
            raise RunDirectoryConflictError(
                f"{str(last_path)!r} was written with a different configuration "
                f"({_describe(stored)}; fields: {', '.join(diff)})")
        if st["model"] != getattr(model, "model_name", None):
            raise CheckpointError(f"{str(last_path)!r} holds model {st['model']!r}")
        maybe_freeze(int(st["step"]))
        try:
            model.load_state_dict(st["state_dict"])
            optimizer.load_state_dict(st["optimizer"])
            schedule.load_state_dict(st["schedule"])
            if st["scaler"]:
                scaler.load_state_dict(st["scaler"])
            _set_rng_state(st["rng"], data_gen)
            if stateful:
                carried = task.unpack_state(model, st.get("task_state") or [])
        except (RuntimeError, KeyError, ValueError, TypeError) as exc:
            raise CheckpointError(f"{str(last_path)!r}: cannot restore the training state: "
                                  f"{exception_text(exc)}") from None
        step, history = int(st["step"]), [dict(r) for r in st["history"]]
        best_loss, elapsed0 = st["best_loss"], float(st["elapsed_s"])
        acc_sum, acc_n = float(st["acc_sum"]), int(st["acc_n"])
        last_lr, last_gnorm = float(st["last_lr"]), float(st["last_gnorm"])
        log.rewrite(history)  # drop rows logged after this checkpoint
    if out is not None:
        atomic_write(out / "config.json", config.to_json() + "\n")
        _run_manifest(out)
    maybe_freeze(step)
    t0 = time.perf_counter()

    def elapsed():
        return elapsed0 + time.perf_counter() - t0

    def save(path: Path) -> Path:
        from ..models.registry import save_checkpoint

        # a checkpoint is written only if it is good: finite parameters that give a finite
        # loss on the latest training batch (eval mode: no dropout, no RNG consumed)
        if not _params_finite(model):
            raise _diverged(step, float("nan"), "parameters became non-finite")
        if recent is not None:
            was = model.training
            model.eval()
            try:
                with torch.no_grad(), autocast():
                    out_check = task.forward(model, recent[0], recent[3])[0] if stateful \
                        else model_outputs(model, recent[0])
                    check = float(task.loss(out_check, *recent[1:3]))
            finally:
                model.train(was)
            if not math.isfinite(check):
                raise _diverged(step, check, "the updated parameters give a non-finite loss")
        st = {"version": TRAIN_STATE_VERSION, "config": config.to_json(), "step": step,
              "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
              "scaler": scaler.state_dict() if scaler.is_enabled() else {},
              "rng": _rng_state(data_gen), "history": history, "best_loss": best_loss,
              "elapsed_s": elapsed(), "acc_sum": acc_sum, "acc_n": acc_n,
              "last_lr": last_lr, "last_gnorm": last_gnorm,
              "task_state": task.pack_state(carried) if stateful else []}
        written = save_checkpoint(path, model, {CHECKPOINT_KEY: st})
        _run_manifest(out)
        return written

    def _diverged(at, value, what="loss became non-finite"):
        good = last_path if last_path is not None and last_path.is_file() else None
        where = f"last good checkpoint: {good}" if good else "no checkpoint was written"
        err = TrainingDivergedError(f"training diverged at step {at}: {what} "
                                    f"(loss={value}); {where}")
        err.step, err.loss, err.checkpoint = at, value, good
        return err

    def evaluate() -> dict[str, float]:
        row: dict[str, float] = {"step": step}
        if task.steps_per_epoch:
            row["epoch"] = step / task.steps_per_epoch
        row["lr"] = last_lr
        row["train_loss"] = acc_sum / acc_n if acc_n else float("nan")
        row["grad_norm"] = last_gnorm
        with autocast():
            for split in task.eval_splits:
                for k, v in task.evaluate(model, split).items():
                    row[f"{split}_{k}"] = float(v)
        row["time_s"] = elapsed()
        return row

    def log_eval(row) -> None:
        nonlocal best_loss, acc_sum, acc_n, best_state, best_row
        history.append(row)
        log.append(history)
        acc_sum, acc_n = 0.0, 0
        key = f"{task.eval_splits[0]}_loss"
        v = row.get(key, float("nan"))
        if math.isfinite(v) and (best_loss is None or v < best_loss):
            best_loss, best_row = v, dict(row)
            if config.restore_best:
                best_state = {k: t.detach().clone() for k, t in model.state_dict().items()}
            if best_path is not None:
                save(best_path)

    # ---- the loop -----------------------------------------------------------------------
    from tqdm.auto import tqdm

    show = progress and sys.stderr.isatty()
    bar = tqdm(total=total, initial=step, disable=not show, dynamic_ncols=True, leave=False,
               desc=f"{config.model}/{config.task}")
    stopped = "completed"
    params = list(model.parameters())
    recent = None  # the latest training batch, to check parameters before saving them
    try:
        with _StopOnSignal() as signals:
            while step < total:
                if signals.requested:
                    stopped = "interrupted"
                    break
                maybe_freeze(step)
                last_lr = schedule.lr(step)
                for group in optimizer.param_groups:
                    group["lr"] = last_lr
                if stateful and task.steps_per_epoch and step % task.steps_per_epoch == 0:
                    carried = None  # a new pass over the data starts from a fresh state
                x, y, mask = task.batch("train", step, data_gen)
                recent = (x, y, mask, carried)
                with _step_threads(model, x, device):
                    with autocast():
                        if stateful:
                            outputs, new_state = task.forward(model, x, carried)
                        else:
                            outputs = model_outputs(model, x)
                        loss = task.loss(outputs, y, mask)
                        objective = loss + _penalty(config, model)
                    loss_value = float(loss.detach())
                    if not math.isfinite(loss_value):
                        raise _diverged(step, loss_value)
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(objective).backward()
                grads = [p.grad for p in params if p.grad is not None]
                if scaler.is_enabled():
                    scaler.unscale_(optimizer)
                if config.grad_clip is not None:
                    gnorm = torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
                else:
                    gnorm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())
                last_gnorm = float(gnorm)
                if not scaler.is_enabled() and not math.isfinite(last_gnorm):
                    raise _diverged(step, loss_value, "gradient norm became non-finite")
                scaler.step(optimizer)
                scaler.update()
                if stateful:
                    carried = task.detach_state(new_state)
                step += 1
                acc_sum += loss_value
                acc_n += 1
                bar.update(1)
                if show and step % config.log_every == 0:
                    bar.set_postfix(loss=f"{loss_value:.4g}", lr=f"{last_lr:.3g}")
                if config.target_loss is not None and loss_value <= config.target_loss:
                    stopped = "target_loss"
                    break
                if config.eval_every and step % config.eval_every == 0:
                    row = evaluate()
                    log_eval(row)
                    v_loss = row.get(f"{task.eval_splits[0]}_loss", float("nan"))
                    schedule.observe(v_loss)
                    if config.stop_below is not None and step >= config.stop_below_after \
                            and v_loss < config.stop_below:
                        stopped = "stop_below"
                        break
                    if eval_callback is not None and eval_callback(step, dict(row)):
                        stopped = "callback"
                        break
                if out is not None and config.checkpoint_every \
                        and step % config.checkpoint_every == 0:
                    save(last_path)
                if callback is not None and callback(step, loss_value):
                    stopped = "callback"
                    break
    finally:
        bar.close()

    # ---- the end: final evaluation and checkpoint ------------------------------------------
    if stopped in ("completed", "target_loss", "stop_below"):
        if not history or history[-1]["step"] != step:
            log_eval(evaluate())
        final = dict(history[-1])
    else:  # an interrupted run keeps its history identical to an uninterrupted one
        final = evaluate()
    if out is not None:
        save(last_path)
    restored = False
    if config.restore_best and best_state is None and best_path is not None \
            and best_path.is_file() and best_loss is not None:  # a resumed run
        from ..models.registry import load_checkpoint

        best_state = load_checkpoint(best_path)["state_dict"]
    if config.restore_best and best_state is not None:
        model.load_state_dict(best_state)  # after last.pt, which must match the optimizer
        restored = True
    return TrainResult(config=config, model=model, steps=step, total_steps=total,
                       stopped=stopped, final_metrics=final, history=history,
                       last_checkpoint=last_path,
                       best_checkpoint=best_path if best_path and best_path.is_file() else None,
                       best_loss=best_loss, elapsed_s=elapsed(), out_dir=out,
                       best_metrics=best_row, restored_best=restored)
