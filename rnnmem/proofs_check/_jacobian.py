"""Temporal Jacobian profiles of stack RNNs and their decay rate, shared by the bins and the
``dm`` readings of ``stack-memory-function`` (:mod:`.claims_stack`, :mod:`.claims_stack_dm`)."""

from __future__ import annotations

import math

import numpy as np


def _slope(x, y) -> tuple[float, float]:
    """Least-squares slope of y on x and its standard error."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    xm = x - x.mean()
    sxx = float(np.sum(xm**2))
    b = float(np.sum(xm * (y - y.mean())) / sxx)
    res = y - y.mean() - b * xm
    se = math.sqrt(float(np.sum(res**2)) / max(x.size - 2, 1) / sxx)
    return b, se


def temporal_jacobian(model, x, chunk: int | None = None) -> np.ndarray:
    r"""Mean Frobenius norm of :math:`\partial h_T / \partial x_{T-\tau}`, :math:`\tau = 0..T-1`.

    .. math::

        J(\tau) = \frac{1}{B}\sum_{b=1}^{B}
            \Big\| \frac{\partial h_T^{(b)}}{\partial x^{(b)}_{T-\tau}} \Big\|_F

    for float input codes ``x`` (B, T, vocab) in the model's dtype, with :math:`h_T` the
    controller's hidden state after the last step. All :math:`H` rows of the Jacobian come
    from one backward pass per chunk of ``chunk`` strings (default: ``max(1, 256 // H)``;
    the chunk is repeated :math:`H` times and row :math:`i` is read from copy :math:`i`).
    """
    import torch

    B, T, A = x.shape
    H = model.controller.hidden_size
    chunk = max(1, 256 // H) if chunk is None else int(chunk)
    device = next(model.parameters()).device
    fro = []
    for i in range(0, B, chunk):
        xb = x[i:i + chunk].detach().to(device)
        b = xb.shape[0]
        X = xb.repeat(H, 1, 1).requires_grad_(True)  # (H b, T, A)
        _, state = model(X, return_state=True)
        ctrl = state.controller
        h = ctrl[0] if isinstance(ctrl, tuple) else ctrl  # (H b, H)
        rows = h.reshape(H, b, H)
        picked = rows[torch.arange(H), :, torch.arange(H)]  # (H, b): row i of copy i
        (g,) = torch.autograd.grad(picked.sum(), X)
        g = g.reshape(H, b, T, A).double()
        fro.append(g.square().sum(dim=(0, 3)).sqrt())  # (b, T)
    return torch.cat(fro).mean(dim=0).flip(0).cpu().numpy()  # index tau = T - 1 - t


def jacobian_decay_rate(curve) -> float | None:
    """The exponential decay rate of a Jacobian profile: -slope of ln J(tau) on the
    positive J(tau) with tau >= 1 (None with fewer than 3 such points)."""
    c = np.asarray(curve, dtype=float)
    tau = np.arange(c.size)
    sel = (tau >= 1) & (c > 0)
    return -_slope(tau[sel], np.log(c[sel]))[0] if sel.sum() >= 3 else None
