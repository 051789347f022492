"""Model registry and checkpoints.

Every trainable model class is registered by name with :func:`register_model` and exposes
``config`` (a JSON-serialisable dict of constructor arguments), so that a checkpoint can be
rebuilt with ``MODELS[name](**config)``.

Checkpoint format (one file, ``torch.save`` of plain containers): ``{"format":
"rnnmem-checkpoint", "version": 2, "model": name, "config": {...}, "state_dict": {...},
"extra": {...}, "sha256": digest}``. It is written through :func:`rnnmem.files.atomic_writer`
(temporary file, fsync, rename, directory fsync) and loaded with
``torch.load(weights_only=True)``, which refuses to execute pickled code.

Integrity: ``digest`` is :func:`content_digest` of everything else in the file (keys,
numbers, strings, and the dtype, shape and bytes of every tensor, so the parameters, the
optimizer state and the stored random-number-generator states). Every load recomputes it
and raises :class:`rnnmem.errors.CorruptCheckpointError` naming the file on a mismatch, so
one flipped byte is never used. The digest lives inside the file, so a copied checkpoint
stays checkable on its own. (zip CRCs are not checked by torch's reader.)
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Mapping
from pathlib import Path

import torch

from ..errors import CheckpointError, CorruptCheckpointError, UnknownNameError, exception_text
from ..files import atomic_writer, storage_error

__all__ = ["MODELS", "register_model", "build_model", "save_checkpoint", "load_checkpoint",
           "load", "CHECKPOINT_FORMAT", "canonical_model_options", "content_digest"]

MODELS: dict[str, type] = {}
CHECKPOINT_FORMAT = "rnnmem-checkpoint"
#: 2: the content's SHA-256 is stored under ``"sha256"`` and checked on every load
CHECKPOINT_VERSION = 2
DIGEST_KEY = "sha256"
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive


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
    except (KeyError, TypeError):  # TypeError: an unhashable name
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


def _feed(h, obj) -> None:
    """Feed ``obj`` (the containers and leaves a checkpoint holds) to the hash ``h`` in a
    canonical, type-tagged, length-prefixed encoding (device-independent for tensors)."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous().reshape(-1)
        head = f"{t.dtype}|{tuple(obj.shape)}".encode()
        data = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
        h.update(b"T" + struct.pack("<QQ", len(head), len(data)) + head)
        h.update(data)
    elif isinstance(obj, Mapping):
        h.update(b"D" + struct.pack("<Q", len(obj)))
        for k, v in obj.items():
            _feed(h, k)
            _feed(h, v)
    elif isinstance(obj, (list, tuple)):
        h.update((b"L" if isinstance(obj, list) else b"U") + struct.pack("<Q", len(obj)))
        for v in obj:
            _feed(h, v)
    elif isinstance(obj, bool) or obj is None:
        h.update(b"B" + repr(obj).encode())
    elif isinstance(obj, int):
        b = str(obj).encode()
        h.update(b"I" + struct.pack("<Q", len(b)) + b)
    elif isinstance(obj, float):
        h.update(b"F" + struct.pack("<d", obj))
    elif isinstance(obj, (str, bytes)):
        b = obj.encode("utf-8", "surrogatepass") if isinstance(obj, str) else obj
        h.update((b"S" if isinstance(obj, str) else b"Y") + struct.pack("<Q", len(b)) + b)
    else:  # torch.dtype, torch.Size, ...: whatever weights_only can load has a stable repr
        b = f"{type(obj).__name__}:{obj!r}".encode()
        h.update(b"O" + struct.pack("<Q", len(b)) + b)


def content_digest(obj: Mapping) -> str:
    """SHA-256 of a checkpoint's content: every key, number, string and the bytes, dtype and
    shape of every tensor (parameters, optimizer moments, RNG states), in order, except the
    ``"sha256"`` entry itself. One flipped bit anywhere in the stored values changes it."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in obj.items() if k != DIGEST_KEY})
    return h.hexdigest()


def save_checkpoint(path, model: torch.nn.Module, extra: dict | None = None) -> Path:
    """Write ``model`` (and JSON-like ``extra``: optimizer state, step, metrics) atomically,
    with the SHA-256 of its content (:func:`content_digest`) stored inside."""
    name = getattr(model, "model_name", None)
    if name is None or not hasattr(model, "config"):
        raise CheckpointError(
            f"{type(model).__name__} is not a registered rnnmem model (no model_name/config)")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    obj = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "model": name,
           "config": dict(model.config), "state_dict": state, "extra": extra or {}}
    obj[DIGEST_KEY] = content_digest(obj)
    with atomic_writer(path) as fh:
        torch.save(obj, fh)
    return Path(path)


def _refuse_unreadable(path: Path) -> None:
    """Named errors for what is not a checkpoint file at all, before torch reads it."""
    if path.is_dir():
        raise CheckpointError(f"checkpoint {str(path)!r} is a directory, not a checkpoint file")
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} is not a regular file")
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise storage_error(exc, path, "read") from None
    if not head:
        raise CorruptCheckpointError(f"cannot read checkpoint {str(path)!r}: it is empty "
                                     "(0 bytes): the write did not finish or the file was "
                                     "truncated; not used",
                                     path=str(path))
    if head != _ZIP_MAGIC:
        raise CorruptCheckpointError(f"cannot read checkpoint {str(path)!r}: not an rnnmem "
                                     "checkpoint (not a torch zip archive; a text file or "
                                     "another format?); not used",
                                     path=str(path))


def refused_pickle(exc: BaseException) -> bool:
    """Whether ``torch.load(weights_only=True)`` failed because the file holds pickled
    objects other than tensors and plain containers (refused without running them)."""
    text = exception_text(exc)
    return "weights_only" in text or "Unsupported global" in text or "WeightsUnpickler" in text


def _why_unloadable(exc: BaseException) -> str:
    text = exception_text(exc)
    if refused_pickle(exc):
        return ("it holds pickled code or objects that a checkpoint never contains, refused "
                f"without running them ({text})")
    return f"truncated or corrupt ({type(exc).__name__}: {text})"


def load_checkpoint(path, map_location="cpu", *, allow_unverified: bool = False) -> dict:
    """Read a checkpoint's dict without executing any pickled code, after checking its
    SHA-256.

    Raises
    ------
    CheckpointError
        Missing, a directory, of another format or version, lacking a field.
    CorruptCheckpointError
        Empty, truncated, unreadable, or its content does not match the SHA-256 stored in it
        (nothing of it is used). ``allow_unverified=True`` accepts a version-1 checkpoint,
        written before digests were stored (it cannot be checked).
    """
    if not isinstance(path, (str, bytes, os.PathLike)) or not os.fspath(path):
        raise CheckpointError(f"checkpoint path must be a non-empty file name, got {path!r}")
    path = Path(os.fsdecode(path))
    _refuse_unreadable(path)
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # corrupt, truncated, or carries code
        raise CorruptCheckpointError(f"cannot read checkpoint {str(path)!r}: "
                                     f"{_why_unloadable(exc)}; not used", path=str(path)) \
            from None
    if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT:
        raise CorruptCheckpointError(f"{str(path)!r} is not an rnnmem checkpoint (no "
                                     f"'format': {CHECKPOINT_FORMAT!r})", path=str(path))
    version = obj.get("version")
    if version not in (1, CHECKPOINT_VERSION):
        raise CheckpointError(f"{str(path)!r} has unsupported version {version!r}")
    for key in ("model", "config", "state_dict"):
        if key not in obj:
            raise CorruptCheckpointError(f"{str(path)!r} lacks {key!r}", path=str(path))
    stored = obj.pop(DIGEST_KEY, None)
    if stored is None:
        if version == 1 and allow_unverified:
            return obj
        raise CorruptCheckpointError(
            f"{str(path)!r} carries no SHA-256 (version {version!r}; written by an older "
            "rnnmem, or its digest entry was damaged), so it cannot be checked; not used "
            "(load_checkpoint(..., allow_unverified=True) reads a trusted version-1 file)",
            path=str(path))
    if content_digest(obj) != stored:
        raise CorruptCheckpointError(
            f"checkpoint {str(path)!r} does not match its SHA-256 (a byte of its tensors, "
            "training state or metadata changed after it was written); not used",
            path=str(path))
    return obj


def load(path, device="cpu", *, allow_unverified: bool = False) -> torch.nn.Module:
    """Rebuild the model stored at ``path`` (see :func:`save_checkpoint`; its SHA-256 is
    checked first). ``allow_unverified=True`` also reads a trusted version-1 checkpoint,
    written before digests were stored; ``save_checkpoint`` of the result re-saves it with
    one."""
    obj = load_checkpoint(path, allow_unverified=allow_unverified)
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
                              f"{exception_text(exc)}") from None
    model.checkpoint_extra = obj.get("extra", {})
    return model
