"""Model registry and checkpoints.

Every trainable model class is registered by name with :func:`register_model` and exposes
``config`` (a JSON-serialisable dict of constructor arguments), so that a checkpoint can be
rebuilt with ``MODELS[name](**config)``.

Checkpoint format (one file, ``torch.save`` of plain containers): ``{"format":
"rnnmem-checkpoint", "version": 1, "model": name, "config": {...}, "state_dict": {...},
"extra": {...}}``. It is written atomically (temporary file + ``os.replace``) and loaded
with ``torch.load(weights_only=True)``, which refuses to execute pickled code.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, UnknownNameError

__all__ = ["MODELS", "register_model", "build_model", "save_checkpoint", "load_checkpoint",
           "load", "CHECKPOINT_FORMAT", "canonical_model_options"]

MODELS: dict[str, type] = {}
CHECKPOINT_FORMAT = "rnnmem-checkpoint"
CHECKPOINT_VERSION = 1


def register_model(name: str):
    """Class decorator: ``@register_model("diagonal_ssm")``."""

    def deco(cls):
        if name in MODELS and MODELS[name] is not cls:
            raise ValueError(f"model {name!r} registered twice")
        MODELS[name] = cls
        cls.model_name = name
        return cls

    return deco


def _ensure_models_loaded() -> None:
    from . import _all  # noqa: F401  (imports every model module, registering it)


def build_model(name: str, **config) -> torch.nn.Module:
    """Instantiate a registered model by name."""
    _ensure_models_loaded()
    try:
        cls = MODELS[name]
    except KeyError:
        raise UnknownNameError("model", name, list(MODELS)) from None
    return cls(**config)


def canonical_model_options(name: str, options: dict) -> dict:
    """``options`` of the registered model ``name`` with deprecated option names replaced
    (:func:`rnnmem.models.base.canonical_options`); unchanged for an unknown name."""
    from .base import canonical_options

    _ensure_models_loaded()
    cls = MODELS.get(name) if isinstance(name, str) else None
    if cls is None or not hasattr(cls, "options"):
        return dict(options)
    return canonical_options(options, owner=f"model {name!r}", accepted=cls.options())


def _atomic_torch_save(obj: Any, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; follow the umask like open()
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(path, model: torch.nn.Module, extra: dict | None = None) -> Path:
    """Write ``model`` (and JSON-like ``extra``: optimizer state, step, metrics) atomically."""
    name = getattr(model, "model_name", None)
    if name is None or not hasattr(model, "config"):
        raise CheckpointError(
            f"{type(model).__name__} is not a registered rnnmem model (no model_name/config)")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    obj = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "model": name,
           "config": dict(model.config), "state_dict": state, "extra": extra or {}}
    _atomic_torch_save(obj, Path(path))
    return Path(path)


def load_checkpoint(path, map_location="cpu") -> dict:
    """Read a checkpoint's dict without executing any pickled code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # corrupt, truncated, or carries code
        raise CheckpointError(f"cannot read checkpoint {str(path)!r}: "
                              f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None
    if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{str(path)!r} is not an rnnmem checkpoint")
    if obj.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{str(path)!r} has unsupported version {obj.get('version')!r}")
    for key in ("model", "config", "state_dict"):
        if key not in obj:
            raise CheckpointError(f"{str(path)!r} lacks {key!r}")
    return obj


def load(path, device="cpu") -> torch.nn.Module:
    """Rebuild the model stored at ``path`` (see :func:`save_checkpoint`)."""
    obj = load_checkpoint(path)
    _ensure_models_loaded()
    name = obj["model"]
    if name not in MODELS:
        raise CheckpointError(f"{str(path)!r} holds unknown model {name!r}; "
                              f"known: {', '.join(sorted(MODELS))}")
    config = dict(obj["config"])
    config["device"] = device
    try:
        model = MODELS[name](**config)
        model.load_state_dict(obj["state_dict"])
    except Exception as exc:
        raise CheckpointError(f"{str(path)!r}: state does not fit model {name!r}: "
                              f"{str(exc).splitlines()[0][:200]}") from None
    model.checkpoint_extra = obj.get("extra", {})
    return model
