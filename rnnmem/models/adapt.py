"""The researcher's own torch model as a sequence map: memory functions with no glue code.

:func:`memory_function` is ``rnnmem.memory_function``: it accepts an ``nn.Module`` (plain
``nn.RNN``/``nn.GRU``/``nn.LSTM``, a module of your own, an rnnmem model), a torch
callable, or a numpy callable, and returns the checked estimate of Def. 3.1 of Wang, Li &
Li (ICLR 2024) from :func:`rnnmem.numerics.estimate_memory` (amplitude search, baseline,
warm-up, causality and time-invariance checks; see :mod:`rnnmem.numerics.memory`).

The adaptation (:class:`TorchSystem`, :func:`adapt`):

* numpy (B, T, d) float64 probes become tensors of the module's own dtype and device (its
  first floating parameter or buffer; a complex one gives the matching real dtype);
* the module runs in eval mode under ``torch.no_grad()`` (restored afterwards);
* ``layout="BTD"`` (batch, time, features) or ``"TBD"``; for ``nn.RNN/GRU/LSTM`` it is
  read from ``batch_first``, and a contradicting ``layout`` is refused;
* a tuple output (``(output, h)`` of the torch RNNs) is read at index 0, or at
  ``readout=i``; ``readout=module_or_callable`` is applied to that output (e.g. a Linear
  head);
* the input size is read from ``input_dim``/``input_size``/``in_features`` of the module,
  else of its first ``nn.RNNBase``/``nn.Linear`` submodule, else it must be passed; a
  trial call on a (1, 2, d) input turns torch's shape errors into a
  :class:`rnnmem.errors.ShapeError` that names ``input_dim``.

:func:`jacobian_memory` is the memory of a differentiable model *along a given input
sequence*: :math:`\\|\\partial y_t / \\partial x_{t-\\tau}\\|` as a function of the lag
:math:`\\tau`. For a linear time-invariant model it equals the Heaviside memory (Def. 3.1)
on the grid; for input-dependent (gated, selective) models it depends on the input.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..errors import InvalidParameterError, NonFiniteError, ShapeError, SystemCheckError
from ..numerics import _validate as V
from ..numerics.memory import MemoryEstimate, estimate_memory

__all__ = ["TorchSystem", "adapt", "memory_function", "jacobian_memory",
           "jacobian_memory_reference", "JacobianMemory", "infer_input_dim", "LAYOUTS",
           "JACOBIAN_REDUCTIONS"]

LAYOUTS = ("BTD", "TBD")
JACOBIAN_REDUCTIONS = ("max", "mean", "last")
_SIZE_ATTRS = ("input_dim", "input_size", "in_features", "d_input")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def infer_input_dim(module) -> int | None:
    """The input size of ``module``: an ``input_dim``/``input_size``/``in_features``
    attribute of the module, else of its first ``nn.RNNBase``/``nn.Linear`` submodule."""
    for attr in _SIZE_ATTRS:
        v = getattr(module, attr, None)
        if isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0:
            return int(v)
    if isinstance(module, nn.Module):
        for sub in module.modules():
            if sub is not module and isinstance(sub, (nn.RNNBase, nn.Linear)):
                return infer_input_dim(sub)
    return None


def _module_dtype_device(module) -> tuple[torch.dtype, torch.device]:
    tensors = list(module.parameters()) + list(module.buffers()) \
        if isinstance(module, nn.Module) else []
    for p in tensors:
        if p.is_floating_point() or p.is_complex():
            dt = p.dtype
            if p.is_complex():
                dt = torch.float64 if dt == torch.complex128 else torch.float32
            return dt, p.device
    return torch.get_default_dtype(), torch.device("cpu")


def _rnn_batch_first(module) -> bool | None:
    return bool(module.batch_first) if isinstance(module, nn.RNNBase) else None


class TorchSystem:
    """A torch module or callable seen as a numpy map ``x (B, T, d) -> y (B, T, p)``.

    See the module docstring. ``forward_torch`` is the same map on tensors, with gradients
    (for :func:`jacobian_memory`).
    """

    def __init__(self, model, *, input_dim: int | None = None, layout: str | None = None,
                 readout=None, dtype=None, device=None):
        if not callable(model):
            raise InvalidParameterError(f"model must be an nn.Module or a callable, got "
                                        f"{type(model).__name__}")
        self.model, self.name = model, type(model).__name__
        bf = _rnn_batch_first(model)
        if layout is None:
            layout = "TBD" if bf is False else "BTD"
        if layout not in LAYOUTS:
            raise InvalidParameterError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        if bf is not None and (layout == "BTD") != bf:
            raise InvalidParameterError(
                f"layout={layout!r} contradicts the module's batch_first={bf}")
        self.layout = layout
        if readout is not None and not (callable(readout) or (
                isinstance(readout, (int, np.integer)) and not isinstance(readout, bool))):
            raise InvalidParameterError(f"readout must be an output index or a module/"
                                        f"callable, got {readout!r}")
        self.readout = readout
        mdt, mdev = _module_dtype_device(model)
        self.dtype = mdt if dtype is None else dtype
        self.device = mdev if device is None else torch.device(device)
        d = infer_input_dim(model) if input_dim is None else input_dim
        if d is None:
            raise InvalidParameterError(
                f"input_dim: cannot read the input size of {self.name} (no input_dim/"
                f"input_size/in_features attribute and no nn.RNN/GRU/LSTM/Linear inside); "
                f"pass input_dim=")
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1:
            raise InvalidParameterError(f"input_dim must be a positive integer, got {d!r}")
        self.input_dim = int(d)
        self.output_dim = self._trial()

    # ---- torch level -----------------------------------------------------------------
    def _select(self, out):
        if isinstance(out, (tuple, list)):
            idx = 0 if not isinstance(self.readout, (int, np.integer)) else int(self.readout)
            if not -len(out) <= idx < len(out):
                raise ShapeError(f"readout={self.readout}: {self.name} returns a tuple of "
                                 f"{len(out)} outputs")
            out = out[idx]
        elif isinstance(self.readout, (int, np.integer)):
            raise ShapeError(f"readout={self.readout}: {self.name} returns one tensor, not "
                             f"a tuple")
        if callable(self.readout):
            try:
                out = self.readout(out)
            except RuntimeError as exc:
                raise ShapeError(f"readout {type(self.readout).__name__} does not accept "
                                 f"the model's output of shape {tuple(out.shape)}: "
                                 f"{_first_line(exc)}") from None
        return out

    def forward_torch(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, d) tensor -> (B, T, p) tensor (layout and readout applied)."""
        B, T = x.shape[0], x.shape[1]
        xin = x.transpose(0, 1) if self.layout == "TBD" else x
        out = self._select(self.model(xin))
        if not isinstance(out, torch.Tensor):
            raise ShapeError(f"{self.name} returned {type(out).__name__}, not a tensor "
                             f"(use readout= to pick one)")
        if self.layout == "TBD" and out.dim() >= 2:
            out = out.transpose(0, 1)
        if out.dim() == 2 and tuple(out.shape) == (B, T):
            out = out[..., None]
        if out.dim() != 3 or tuple(out.shape[:2]) != (B, T):
            raise ShapeError(f"{self.name}: inputs (B, T, d) = {(B, T, x.shape[2])} "
                             f"({self.layout}) gave outputs of shape {tuple(out.shape)}; "
                             f"expected one output per step, (B, T, p) (a readout that "
                             f"does not match, or the wrong layout?)")
        if out.is_complex():
            out = out.real
        return out

    @contextlib.contextmanager
    def eval_mode(self):
        """The module in eval mode (no dropout), its training flag restored after."""
        was = getattr(self.model, "training", None)
        if was is not None:
            self.model.eval()
        try:
            yield
        finally:
            if was:
                self.model.train(True)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        xt = torch.as_tensor(np.asarray(x), dtype=self.dtype, device=self.device)
        with self.eval_mode(), torch.no_grad():
            y = self.forward_torch(xt)
        y = y.detach().to("cpu", torch.float64).numpy()
        if not np.all(np.isfinite(y)):
            raise NonFiniteError(f"{self.name} returned NaN or inf for a probe input of "
                                 f"shape {tuple(x.shape)}")
        return y

    def _trial(self) -> int:
        x = np.zeros((1, 2, self.input_dim))
        try:
            y = self(x)
        except (ShapeError, NonFiniteError, InvalidParameterError):
            raise
        except (RuntimeError, TypeError, ValueError, IndexError) as exc:
            raise ShapeError(f"input_dim={self.input_dim}: {self.name} rejects inputs of "
                             f"shape (1, 2, {self.input_dim}) in layout {self.layout}: "
                             f"{type(exc).__name__}: {_first_line(exc)}") from None
        return int(y.shape[-1])

    def hint(self) -> str:
        """A layout hint for check failures: an inner torch RNN whose ``batch_first``
        contradicts the layout used."""
        if isinstance(self.model, nn.Module):
            for sub in self.model.modules():
                if isinstance(sub, nn.RNNBase) and sub is not self.model \
                        and sub.batch_first != (self.layout == "BTD"):
                    other = "BTD" if sub.batch_first else "TBD"
                    return (f"; note: {self.name} contains a {type(sub).__name__} with "
                            f"batch_first={sub.batch_first}, read with layout="
                            f"{self.layout!r} (layout={other!r}?)")
        return ""

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).replace("torch.", "")


def adapt(model, *, input_dim=None, layout=None, readout=None, dtype=None, device=None):
    """``model`` as a numpy sequence map: a :class:`TorchSystem` for an ``nn.Module`` or a
    torch callable (see the module docstring)."""
    if isinstance(model, TorchSystem):
        return model
    return TorchSystem(model, input_dim=input_dim, layout=layout, readout=readout,
                       dtype=dtype, device=device)


def _numpy_callable_works(f, d: int) -> bool:
    try:
        y = f(np.zeros((1, 2, d)))
    except Exception:  # noqa: BLE001 - any failure means "not a numpy callable"
        return False
    return isinstance(y, np.ndarray) or hasattr(y, "detach")


def memory_function(model, t, *, dt: float | None = None, input_dim: int | None = None,
                    layout: str | None = None, readout=None, **kwargs) -> MemoryEstimate:
    """The memory function (Wang, Li & Li, ICLR 2024, Def. 3.1) of your own model.

    .. math::

        \\mathcal M(H)(t) = \\sup_{x \\ne 0}
            \\frac{|\\frac{d}{dt} H_t(x\\mathbf 1_{[0,\\infty)}) - \\frac{d}{dt}H_t(0)|}
                 {|x|_\\infty}

    Parameters
    ----------
    model : nn.Module, torch callable or numpy callable
        Maps inputs (B, T, d) (or (T, B, d) with ``layout="TBD"``) to outputs per step.
    t : (L,) times >= 0
    dt : float, optional
        Sampling step; default the model's ``dt`` attribute (required otherwise).
    input_dim : int, optional
        Read from the module where possible (module docstring).
    layout : {"BTD", "TBD"}, optional
    readout : int or module/callable, optional
    **kwargs
        Options of :func:`rnnmem.numerics.estimate_memory` (``amplitudes``, ``check``,
        ``warmup``, ``baseline``, ``directions``, ``derivative``, ...).

    Returns
    -------
    MemoryEstimate
        ``np.asarray(result)`` is the memory function at ``t``; the result also records
        the arg-sup amplitude and direction per t, the checks, warm-up and drift.
    """
    if dt is None:
        dt = getattr(model, "dt", None)
        if dt is None:
            raise InvalidParameterError(f"dt: {type(model).__name__} has no dt attribute; "
                                        f"pass the sampling step dt=")
    if not isinstance(model, (nn.Module, TorchSystem)):
        d = infer_input_dim(model) if input_dim is None else input_dim
        if d is None:
            raise InvalidParameterError("input_dim: pass the input size of the callable")
        if layout is None and readout is None and _numpy_callable_works(model, int(d)):
            return estimate_memory(model, t, dt=dt, input_dim=int(d), **kwargs)
        input_dim = d
    system = adapt(model, input_dim=input_dim, layout=layout, readout=readout)
    kwargs.setdefault("dtype", system.dtype_name)
    try:
        return estimate_memory(system, t, dt=dt, input_dim=system.input_dim, **kwargs)
    except SystemCheckError as exc:
        hint = system.hint()
        if hint:
            raise type(exc)(str(exc) + hint, check=exc.check, violation=exc.violation,
                            threshold=exc.threshold) from None
        raise


# --------------------------------------------------------------------------------------
# Jacobian memory along an input sequence
# --------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class JacobianMemory:
    """Result of :func:`jacobian_memory`.

    ``values`` (L,) or (L, p): the reduced memory at the lags ``t``; ``by_position``
    (T_w, n_grid[, p]): :math:`\\sum_i |\\partial y_{b,o} / \\partial x_{b-j,i}| / \\Delta t`
    for every output position ``b`` of the window (nan where ``b - j`` precedes it);
    ``reduce``, ``warmup``, ``dt`` as given. ``np.asarray(result)`` gives ``values``.
    """

    t: np.ndarray
    values: np.ndarray
    by_position: np.ndarray
    reduce: str
    warmup: int
    dt: float

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.values, dtype=dtype)

    def __len__(self) -> int:
        return len(self.values)


def _jacobian_inputs(system, t, dt, x, warmup):
    t = V.times(t, "t")
    dt = V.positive_step(dt, "dt")
    if isinstance(warmup, bool) or not isinstance(warmup, (int, np.integer)) or warmup < 0:
        raise InvalidParameterError(f"warmup must be an integer >= 0, got {warmup!r}")
    n_grid = int(math.ceil((float(t.max()) if t.size else 0.0) / dt)) + 1
    if x is None:
        x = np.zeros((int(warmup) + n_grid, system.input_dim))
    x = torch.as_tensor(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else
                        np.asarray(x, dtype=float))
    if x.dim() != 2 or x.shape[1] != system.input_dim:
        raise ShapeError(f"x must have shape (T, {system.input_dim}), got {tuple(x.shape)}")
    if x.shape[0] < int(warmup) + n_grid:
        raise ShapeError(f"x has {x.shape[0]} steps; warmup + lags need "
                         f"{int(warmup) + n_grid} (t up to {float(t.max())} at dt {dt})")
    if not torch.isfinite(x).all():
        raise NonFiniteError("x contains NaN or inf")
    return t, dt, x.to(system.dtype).to(system.device), n_grid


def _reduce_jacobian(J, t, dt, n_grid, warmup, reduce):
    """J (T, T, p, d) with J[b, s] = dy_b / dx_s  ->  JacobianMemory."""
    if reduce not in JACOBIAN_REDUCTIONS:
        raise InvalidParameterError(
            f"reduce must be one of {JACOBIAN_REDUCTIONS}, got {reduce!r}")
    T = J.shape[0]
    rows = np.arange(warmup, T)  # output positions of the window
    G = np.full((rows.size, n_grid, J.shape[2]), np.nan)
    for j in range(n_grid):
        ok = rows - j >= warmup
        b = rows[ok]
        G[ok, j] = np.abs(J[b, b - j]).sum(axis=-1) / dt  # (., p)
    if reduce == "last":
        grid_M = G[-1]
    elif reduce == "max":
        grid_M = np.nanmax(G, axis=0)
    else:
        grid_M = np.nanmean(G, axis=0)
    grid = dt * np.arange(n_grid)
    M = np.stack([np.interp(t, grid, grid_M[:, o]) for o in range(grid_M.shape[1])], axis=1)
    if M.shape[1] == 1:
        M, G = M[:, 0], G[..., 0]
    return JacobianMemory(t=t, values=M, by_position=G, reduce=reduce, warmup=int(warmup),
                          dt=dt)


def jacobian_memory(model, t, *, dt: float | None = None, x=None, warmup: int = 0,
                    reduce: str = "max", input_dim: int | None = None,
                    layout: str | None = None, readout=None) -> JacobianMemory:
    """Jacobian memory of a differentiable sequence model along the input sequence ``x``.

    .. math::

        M_J(\\tau_j) = \\operatorname{reduce}_{b}\\ \\frac{1}{\\Delta t}
            \\sum_i \\Big|\\frac{\\partial y_{b}}{\\partial x_{b-j,\\,i}}(x)\\Big| ,
        \\qquad \\tau_j = j\\,\\Delta t,

    over the output positions ``b`` of the window after ``warmup`` (reduce: ``"max"``,
    ``"mean"``, or ``"last"`` = the final output, the sensitivity to the input at lag
    :math:`\\tau`). The sum over inputs is :math:`\\sup_{|x|_\\infty \\le 1}` of the
    linearised response, as in Def. 3.1.

    When it equals the Heaviside memory (Def. 3.1, Wang, Li & Li, ICLR 2024): for a
    *linear time-invariant* model :math:`y_b = \\sum_{s \\le b} K_{b-s} x_s`, the Heaviside
    probe's forward difference is :math:`D_j = K_j x/\\Delta t`, so the estimate of
    :func:`memory_function` with ``derivative="forward"`` is
    :math:`\\sum_i |K_{j,i}|/\\Delta t = M_J(\\tau_j)`, for every ``x`` (tested). For a
    nonlinear model along :math:`x = 0` from its steady state it is the small-amplitude
    limit of the Heaviside estimate; along other inputs (gated, selective models) it is a
    different, input-dependent object, and no Heaviside probe reproduces it.

    Computed by reverse mode with one backward pass per output: the sequence is repeated
    T times along the batch and row b back-propagates :math:`y_b` only (batch rows are
    independent), so no vmap rule is needed (``nn.LSTM`` has none for ``lstm_cell``).
    :func:`jacobian_memory_reference` computes the same with
    :func:`torch.autograd.functional.jacobian`.

    Parameters
    ----------
    model : nn.Module or torch callable (see :func:`memory_function`)
    t : (L,) lags >= 0
    dt : float, optional (default the model's ``dt``)
    x : (T, d) array or tensor, optional
        The input sequence; default zeros of length ``warmup + ceil(max t / dt) + 1``.
    warmup : int
        Leading samples that are not part of the window.
    reduce : {"max", "mean", "last"}

    Returns
    -------
    JacobianMemory
    """
    system, dt = _jacobian_system(model, dt, input_dim, layout, readout)
    t, dt, xs, n_grid = _jacobian_inputs(system, t, dt, x, warmup)
    T, d = xs.shape
    xb = xs[None].expand(T, T, d).clone().requires_grad_(True)  # (T rows, T, d)
    with torch.enable_grad(), system.eval_mode():
        y = system.forward_torch(xb)  # (T, T, p)
        idx = torch.arange(T, device=y.device)
        diag = y[idx, idx]  # (T, p): row b keeps its own output b
        grads = []
        for o in range(diag.shape[1]):
            (g,) = torch.autograd.grad(diag[:, o].sum(), xb, retain_graph=True)
            grads.append(g.detach().to("cpu", torch.float64).numpy())  # (T, T, d)
    J = np.stack(grads, axis=2)  # (T, T, p, d)
    return _reduce_jacobian(J, t, dt, n_grid, int(warmup), reduce)


def jacobian_memory_reference(model, t, *, dt: float | None = None, x=None, warmup: int = 0,
                              reduce: str = "max", input_dim: int | None = None,
                              layout: str | None = None, readout=None) -> JacobianMemory:
    """Reference for :func:`jacobian_memory`: the full Jacobian of one sequence by
    :func:`torch.autograd.functional.jacobian` (same signature, same result)."""
    system, dt = _jacobian_system(model, dt, input_dim, layout, readout)
    t, dt, xs, n_grid = _jacobian_inputs(system, t, dt, x, warmup)
    with torch.enable_grad(), system.eval_mode():
        J = torch.autograd.functional.jacobian(
            lambda z: system.forward_torch(z[None])[0], xs)  # (T, p, T, d)
    J = J.detach().to("cpu", torch.float64).numpy().transpose(0, 2, 1, 3)  # (T, T, p, d)
    return _reduce_jacobian(J, t, dt, n_grid, int(warmup), reduce)


def _jacobian_system(model, dt, input_dim, layout, readout):
    if dt is None:
        dt = getattr(model, "dt", None)
        if dt is None:
            raise InvalidParameterError(f"dt: {type(model).__name__} has no dt attribute; "
                                        f"pass the sampling step dt=")
    return adapt(model, input_dim=input_dim, layout=layout, readout=readout), dt


class AdaptedModule(nn.Module):
    """``model`` with ``layout`` and ``readout`` applied, as a module ``(B, T, d) -> (B, T,
    p)`` (for code that calls modules, e.g. :func:`rnnmem.train.perturb.perturbation_curve`).

    The user's module is the submodule ``inner`` (its parameter names gain the prefix
    ``inner.``); a readout module is ``readout``.
    """

    def __init__(self, model: nn.Module, *, layout: str | None = None, readout=None,
                 input_dim: int | None = None):
        super().__init__()
        self.inner = model
        if isinstance(readout, nn.Module):
            self.readout = readout
        self._system = TorchSystem(model, input_dim=input_dim, layout=layout,
                                   readout=readout)
        self.input_dim = self._system.input_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._system.forward_torch(x)
