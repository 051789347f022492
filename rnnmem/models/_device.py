"""Device and dtype resolution, chosen once at the top (nanoGPT style)."""

from __future__ import annotations

import torch

from ..errors import InvalidParameterError

__all__ = ["resolve_device", "resolve_dtype", "DTYPES"]

DTYPES = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
}


def resolve_device(device="auto") -> torch.device:
    """``"auto"`` picks CUDA when present, else CPU; anything else is passed to torch."""
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, (str, torch.device)):
        raise InvalidParameterError(f"device must be a string such as 'cpu' or 'cuda:0', got "
                                    f"{type(device).__name__} {device!r}")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InvalidParameterError(f"bad device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidParameterError(f"device {device!r} requested but CUDA is not available")
    return dev


def resolve_dtype(dtype="float32") -> torch.dtype:
    """A torch dtype from a dtype or its name (``"float64"``)."""
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise InvalidParameterError(f"unsupported dtype {dtype}; use one of {list(DTYPES)}")
        return dtype
    name = str(dtype).replace("torch.", "")
    try:
        return DTYPES[name]
    except KeyError:
        raise InvalidParameterError(
            f"unknown dtype {dtype!r}; use one of {list(DTYPES)}") from None
