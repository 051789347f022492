"""The recurrent-model interface every rnnmem model shares.

A :class:`RecurrentModel` maps inputs ``(B, T, input_dim)`` to outputs
``(B, T, output_dim)``, knows its time step ``dt`` and whether it is a ``"continuous"``-time
model (discretised at ``dt``) or a ``"discrete"``-time one, stores its constructor arguments in
:attr:`config` (JSON-serialisable, for checkpoints), and provides :meth:`memory_function`.
The default memory function is the black-box estimator of Wang, Li & Li (ICLR 2024,
Def. 3.1) from :mod:`rnnmem.numerics`; linear models override it with the exact formula.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import NonFiniteError, ShapeError
from ._device import resolve_device, resolve_dtype

__all__ = ["RecurrentModel", "check_input", "map_tensors"]


def check_input(x: torch.Tensor, input_dim: int) -> torch.Tensor:
    """Validate a ``(B, T, input_dim)`` input (a ``(T, input_dim)`` one gets a batch axis)."""
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(x)
    if x.dim() == 2:
        x = x.unsqueeze(0)
    if x.dim() != 3 or x.shape[-1] != input_dim:
        raise ShapeError(f"expected input of shape (B, T, {input_dim}), got {tuple(x.shape)}")
    if x.is_floating_point() and not torch.isfinite(x).all():
        raise NonFiniteError("input contains NaN or inf")
    return x


def map_tensors(fn, obj, error):
    """``obj`` with ``fn`` applied to every tensor of its nested tuples, lists and
    NamedTuples (a recurrent state), structure and ``None`` kept; any other object raises
    ``error(obj)``."""
    if obj is None:
        return None
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(map_tensors(fn, o, error) for o in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(map_tensors(fn, o, error) for o in obj)
    raise error(obj)


class RecurrentModel(nn.Module):
    """Base class: config bookkeeping, device/dtype, numpy system view, memory function."""

    model_name: str = ""
    #: names (prefixes) of the recurrent parameters, for "recurrent-only" perturbations
    recurrent_parameter_names: tuple[str, ...] = ()

    def __init__(self, *, input_dim: int = 1, output_dim: int = 1, dt: float = 1.0,
                 time: str = "discrete", dtype: Any = "float32", device: Any = "auto",
                 config: dict | None = None):
        super().__init__()
        from ..errors import InvalidParameterError

        for nm, v in (("input_dim", input_dim), ("output_dim", output_dim)):
            if not isinstance(v, int) or v < 1:
                raise InvalidParameterError(f"{nm} must be a positive integer, got {v!r}")
        if not (isinstance(dt, (int, float)) and np.isfinite(dt) and dt > 0):
            raise InvalidParameterError(f"dt must be a positive finite number, got {dt!r}")
        if time not in ("continuous", "discrete"):
            raise InvalidParameterError(f"time must be 'continuous' or 'discrete', got {time!r}")
        self.input_dim, self.output_dim = input_dim, output_dim
        self.dt, self.time = float(dt), time
        self.factory = {"dtype": resolve_dtype(dtype), "device": resolve_device(device)}
        cfg = dict(config or {})
        cfg.update(input_dim=input_dim, output_dim=output_dim, dt=float(dt), time=time,
                   dtype=str(self.factory["dtype"]).replace("torch.", ""))
        self._config = cfg

    @property
    def config(self) -> dict:
        """Constructor arguments (JSON-serialisable); ``device`` is not stored."""
        return dict(self._config)

    @property
    def dtype(self) -> torch.dtype:
        p = next(self.parameters(), None)
        return p.dtype if p is not None else self.factory["dtype"]

    @property
    def device(self) -> torch.device:
        p = next(self.parameters(), None)
        return p.device if p is not None else self.factory["device"]

    def recurrent_parameters(self) -> dict[str, nn.Parameter]:
        """The parameters that define the recurrence (for perturbation tests)."""
        names = self.recurrent_parameter_names
        return {n: p for n, p in self.named_parameters()
                if any(n == r or n.startswith(r + ".") for r in names)}

    def evaluation_form(self) -> "RecurrentModel":
        """The model as it is evaluated and perturbed after training: ``self`` unless a
        model's training and evaluation forms differ (the relu-parameterised models of
        :mod:`rnnmem.models.curse_original` use their eigenvalues directly at evaluation)."""
        return self

    # ---- a numpy view of the model, for the black-box estimators --------------------
    def as_system(self):
        """A numpy callable ``x (B, T, input_dim) -> y (B, T, output_dim)`` (no grad)."""

        def system(x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                xt = torch.as_tensor(np.asarray(x), dtype=self.dtype, device=self.device)
                return self(xt).detach().cpu().double().numpy()

        return system

    def memory_function(self, t, **kwargs) -> np.ndarray:
        """Memory function at times ``t`` (Def. 3.1), estimated black-box by default."""
        from ..numerics import memory_function as _mf

        return _mf(self.as_system(), np.asarray(t, dtype=float), dt=self.dt,
                   input_dim=self.input_dim, **kwargs)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self._config.items())
