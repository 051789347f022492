"""Linear recurrences :math:`h_t = a_t \\odot h_{t-1} + x_t`.

This module holds the reference method ``loop``; faster methods are added beside it and
tested against it.
"""

from __future__ import annotations

import torch

from ..errors import ShapeError

__all__ = ["linear_recurrence"]


def _loop(a: torch.Tensor, x: torch.Tensor, h0: torch.Tensor | None) -> torch.Tensor:
    B, T, N = x.shape
    h = torch.zeros(B, N, dtype=x.dtype, device=x.device) if h0 is None else h0
    out = []
    tv = a.dim() == 3
    for i in range(T):
        h = (a[:, i] if tv else a) * h + x[:, i]
        out.append(h)
    return torch.stack(out, dim=1)  # (B, T, N)


def linear_recurrence(a: torch.Tensor, x: torch.Tensor, *, h0: torch.Tensor | None = None,
                      method: str = "auto") -> torch.Tensor:
    """Compute :math:`h_t = a_t \\odot h_{t-1} + x_t`, :math:`h_{-1} = h_0` (zero by default).

    Parameters
    ----------
    a : tensor (N,) time-invariant or (B, T, N) time-varying; real or complex
    x : tensor (B, T, N)
    h0 : tensor (B, N), optional
    method : {"auto", "loop"}

    Returns
    -------
    h : tensor (B, T, N)
    """
    if x.dim() != 3:
        raise ShapeError(f"x must be (B, T, N), got shape {tuple(x.shape)}")
    if a.dim() not in (1, 3) or a.shape[-1] != x.shape[-1] or (a.dim() == 3 and a.shape != x.shape):
        raise ShapeError(f"a must be (N,) or (B, T, N) matching x {tuple(x.shape)}, "
                         f"got {tuple(a.shape)}")
    if method not in ("auto", "loop"):
        from ..errors import InvalidParameterError

        raise InvalidParameterError(f"unknown method {method!r}")
    dtype = torch.promote_types(a.dtype, x.dtype)
    return _loop(a.to(dtype), x.to(dtype), None if h0 is None else h0.to(dtype))
