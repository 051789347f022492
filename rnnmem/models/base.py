r"""The recurrent-model interface every rnnmem model shares: the model contract.

A :class:`RecurrentModel` maps inputs ``(B, T, input_dim)`` to outputs
``(B, T, output_dim)``, knows its time step ``dt`` and whether it is a ``"continuous"``-time
model (discretised at ``dt``) or a ``"discrete"``-time one, stores its constructor arguments in
:attr:`config` (JSON-serialisable, for checkpoints), and provides :meth:`memory_function`.
The default memory function is the black-box estimator of Wang, Li & Li (ICLR 2024,
Def. 3.1) from :mod:`rnnmem.numerics`; linear models override it with the exact formula.

The contract that code above ``models`` relies on (it never branches on a model's name nor
inspects its signatures), for every registered model:

``width``
    The number of recurrent units: state dimension of an SSM/LRU/S4D (complex modes for
    LRU and S4D), hidden size of an RNN or of a stack RNN's controller. It is the
    constructor option ``width`` of every model and is stored under that name in
    :attr:`~RecurrentModel.config`. The old per-family names (``state_dim``,
    ``hidden_dim``, ``hidden_size``) are accepted in one place, :func:`canonical_options`
    (run on every construction, so also when an old checkpoint is loaded), with a
    :class:`DeprecationWarning`.
``input_dim``, ``output_dim``
    Sizes of the input and output vectors per step (a stack RNN: the vocabulary and the
    number of logits).
``spectrum()``
    A :class:`Spectrum`: the eigenvalues of the model's recurrence (the linearisation at the
    origin, activation slopes :math:`\sigma'(0) = 1`, bias left out, for a nonlinear one) in
    the model's own time: the generator :math:`\lambda` (:math:`\dot h = \lambda h`) of a
    continuous-time model, the per-step multiplier :math:`\mu` (:math:`h_k = \mu h_{k-1}`)
    of a discrete-time one. A model whose recurrence has no fixed linear part (the stack
    RNN: gates and a stack) raises :class:`~rnnmem.errors.NotApplicableError`.
``slowest_decay_rate()``
    The decay rate per unit of time of the slowest mode, :meth:`Spectrum.slowest_decay_rate`:
    :math:`\min_n -\operatorname{Re}\lambda_n` (continuous) or
    :math:`\min_n -\log|\mu_n| / \Delta t` (discrete); non-positive when a mode does not
    decay. Raises :class:`~rnnmem.errors.NotApplicableError` where ``spectrum()`` does.
``recurrent_parameters()``
    ``{name: parameter}`` of the parameters that define the recurrence (perturbation tests).
``memory_function(t, method="auto")``
    The memory function (Wang, Li & Li, ICLR 2024, Def. 3.1) at times ``t``: ``method``
    ``"closed_form"`` (linear models; :class:`~rnnmem.errors.NotApplicableError` otherwise),
    ``"estimator"`` (the black-box estimator, any model) or ``"auto"`` (the closed form when
    the model is linear, else the estimator). Finite and non-negative.

:func:`model_outputs` is the one helper that runs a model on a batch (unwrapping the
``(outputs, state)`` pair some models return); :meth:`RecurrentModel.options` lists the
constructor options of a model class.
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import InvalidParameterError, NonFiniteError, NotApplicableError, ShapeError
from ._device import resolve_device, resolve_dtype

__all__ = ["RecurrentModel", "Spectrum", "check_input", "map_tensors", "model_outputs",
           "canonical_options", "DEPRECATED_OPTIONS", "MEMORY_METHODS"]

#: Old names of model options and the contract's name for each. Accepted only by
#: :func:`canonical_options`, with a :class:`DeprecationWarning`.
DEPRECATED_OPTIONS: dict[str, str] = {"state_dim": "width", "hidden_dim": "width",
                                      "hidden_size": "width"}

#: ``method`` of :meth:`RecurrentModel.memory_function`.
MEMORY_METHODS = ("auto", "closed_form", "estimator")


def canonical_options(options: dict, owner: str = "model",
                      accepted: frozenset[str] | None = None) -> dict:
    """``options`` with every deprecated name (:data:`DEPRECATED_OPTIONS`) replaced by the
    contract's name, one :class:`DeprecationWarning` per old name used.

    This is the only place where the old names are understood: every model construction
    passes through it (also :func:`~rnnmem.models.registry.load` of an old checkpoint,
    whose stored config uses them), and so does
    :class:`~rnnmem.train.TrainConfig`'s ``model_kwargs``. Giving an old name together with
    its new one is an error. With ``accepted`` (the options of a model class), only the old
    names that the class does not itself accept, and whose new name it does, are renamed (a
    user's own model may well call its option ``hidden_size``).
    """
    out = dict(options)
    for old, new in DEPRECATED_OPTIONS.items():
        if old not in out:
            continue
        if accepted is not None and (old in accepted or new not in accepted):
            continue
        if new in out:
            raise InvalidParameterError(f"{owner}: give {new!r} only ({old!r} is its "
                                        "deprecated name)")
        warnings.warn(f"{owner}: option {old!r} is deprecated, use {new!r}",
                      DeprecationWarning, stacklevel=3)
        out[new] = out.pop(old)
    return out


class _ModelMeta(type(nn.Module)):
    """Runs :func:`canonical_options` on the keywords of every model construction."""

    def __call__(cls, *args, **kwargs):
        if set(kwargs) & set(DEPRECATED_OPTIONS):
            kwargs = canonical_options(kwargs, owner=cls.__name__, accepted=cls.options())
        return super().__call__(*args, **kwargs)


def model_outputs(model: nn.Module, x, *, cast: bool = False) -> torch.Tensor:
    """The outputs of ``model`` on the batch ``x``: ``model(x)``, or its first element when
    the model returns ``(outputs, state)``.

    ``cast=True`` first converts ``x`` (a tensor or an array) to the model's device and,
    when floating, to its parameters' dtype (what a numpy probe needs); by default ``x`` is
    passed as it is (the caller chose its dtype and device).
    """
    if cast:
        p = next((q for q in model.parameters() if q.is_floating_point()), None)
        device = p.device if p is not None else None
        if not isinstance(x, torch.Tensor):
            x = torch.as_tensor(np.asarray(x))
        x = x.to(device=device, dtype=p.dtype if (p is not None and x.is_floating_point())
                 else None)
    out = model(x)
    return out[0] if isinstance(out, (tuple, list)) else out


@dataclass(frozen=True, eq=False)
class Spectrum:
    r"""Eigenvalues of a model's recurrence in the model's own time (module docstring).

    Attributes
    ----------
    eigenvalues : complex128 array (N,)
        Generator eigenvalues :math:`\lambda` (``time="continuous"``) or per-step
        multipliers :math:`\mu` (``time="discrete"``).
    time : {"continuous", "discrete"}
    dt : float
        The model's time step (converts per-step rates into rates per unit of time).
    """

    eigenvalues: np.ndarray
    time: str
    dt: float

    def decay_rates(self) -> np.ndarray:
        r"""Decay rate of each mode per unit of time, (N,):
        :math:`-\operatorname{Re}\lambda` (continuous) or :math:`-\log|\mu|/\Delta t`
        (discrete; :math:`+\infty` for :math:`\mu = 0`)."""
        ev = np.asarray(self.eigenvalues)
        if self.time == "continuous":
            return -ev.real
        with np.errstate(divide="ignore"):
            return -np.log(np.abs(ev)) / self.dt

    def slowest_decay_rate(self) -> float:
        r""":math:`\min_n` of :meth:`decay_rates` (non-positive: a mode does not decay)."""
        return float(np.min(self.decay_rates()))

    def is_stable(self) -> bool:
        """Every mode decays (strictly)."""
        return bool(self.eigenvalues.size == 0 or self.slowest_decay_rate() > 0)


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


class RecurrentModel(nn.Module, metaclass=_ModelMeta):
    """Base class: config bookkeeping, device/dtype, numpy system view, the model contract
    (module docstring)."""

    model_name: str = ""
    #: names (prefixes) of the recurrent parameters, for "recurrent-only" perturbations
    recurrent_parameter_names: tuple[str, ...] = ()
    #: number of recurrent units (the constructor option ``width``); set by every model
    width: int = 0
    #: whether the model is linear (then ``memory_function`` has a closed form)
    is_linear: bool = False

    def __init__(self, *, input_dim: int = 1, output_dim: int = 1, dt: float = 1.0,
                 time: str = "discrete", dtype: Any = "float32", device: Any = "auto",
                 config: dict | None = None):
        super().__init__()
        from ..errors import InvalidParameterError

        from ..limits import check_count, check_seed

        for nm, v in (("input_dim", input_dim), ("output_dim", output_dim)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InvalidParameterError(f"{nm} must be a positive integer, got {v!r}")
            check_count(v, nm)
        check_seed((config or {}).get("seed"), "seed", optional=True)
        if not (isinstance(dt, (int, float)) and np.isfinite(dt) and dt > 0):
            raise InvalidParameterError(f"dt must be a positive finite number, got {dt!r}")
        if not isinstance(time, str) or time not in ("continuous", "discrete"):
            raise InvalidParameterError(f"time must be 'continuous' or 'discrete', got {time!r}")
        self.input_dim, self.output_dim = input_dim, output_dim
        self.dt, self.time = float(dt), time
        self.factory = {"dtype": resolve_dtype(dtype), "device": resolve_device(device)}
        cfg = dict(config or {})
        cfg.update(input_dim=input_dim, output_dim=output_dim, dt=float(dt), time=time,
                   dtype=str(self.factory["dtype"]).replace("torch.", ""))
        self._config = cfg

    @classmethod
    def options(cls) -> frozenset[str]:
        """The constructor options of this model class (keyword names).

        A constructor with ``**kwargs`` is followed up the MRO (a subclass forwarding its
        keywords to its parent accepts what the parent accepts); the deprecated names of
        :data:`DEPRECATED_OPTIONS` are not listed.
        """
        found: set[str] = set()
        for klass in cls.__mro__:
            init = klass.__dict__.get("__init__")
            if init is None:
                continue
            params = inspect.signature(init).parameters
            found |= {n for n, p in params.items() if n != "self" and p.kind in (
                inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}
            if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
                break
        return frozenset(found)

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

    # ---- the spectrum of the recurrence ---------------------------------------------
    def _spectrum_eigenvalues(self) -> torch.Tensor:
        """Hook: the eigenvalues :meth:`spectrum` reports (in the model's own time)."""
        raise NotApplicableError(
            f"{type(self).__name__} has no spectrum: its recurrence is not a fixed linear "
            "map; use memory_function(t, method='estimator') to measure its memory")

    def spectrum(self) -> Spectrum:
        """Eigenvalues of the recurrence, :class:`Spectrum` (module docstring)."""
        with torch.no_grad():
            ev = self._spectrum_eigenvalues().detach().cpu()
        ev = ev.to(torch.complex128) if ev.is_complex() else ev.double()
        return Spectrum(np.asarray(ev.numpy(), dtype=complex).ravel(), self.time, self.dt)

    def slowest_decay_rate(self) -> float:
        """Decay rate per unit of time of the slowest mode (module docstring)."""
        return self.spectrum().slowest_decay_rate()

    def recurrent_parameters(self) -> dict[str, nn.Parameter]:
        """The parameters that define the recurrence (for perturbation tests)."""
        names = self.recurrent_parameter_names
        return {n: p for n, p in self.named_parameters()
                if any(n == r or n.startswith(r + ".") for r in names)}

    def step_work(self, batch_size: int) -> int | None:
        """Multiply-adds of one time step's gate product for a batch of ``batch_size``,
        for a model whose forward is a Python loop over the steps; ``None`` (this default)
        for one without such a loop, or whose steps are not counted. The training loop
        (:mod:`rnnmem.train`) runs forward and backward on one torch thread when this is
        below :data:`rnnmem.models._device.SERIAL_STEP_WORK` (:func:`~rnnmem.models.
        _device.step_threads`: waking threads for many small products costs more than it
        saves). rnnmem's own loops also do so in a loop of the user's, through the hooks
        of :class:`~rnnmem.models._device.StepLoop`."""
        return None

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
                return model_outputs(self, x, cast=True).detach().cpu().double().numpy()

        return system

    def memory_function(self, t, method: str = "auto", **kwargs) -> np.ndarray:
        """Memory function at times ``t`` (Def. 3.1): the black-box estimator
        :func:`rnnmem.numerics.memory_function` (``kwargs`` go to it); this model has no
        closed form (``method="closed_form"`` raises
        :class:`~rnnmem.errors.NotApplicableError`)."""
        from ..numerics import memory_function as _mf

        if method not in MEMORY_METHODS:
            raise InvalidParameterError(f"method must be one of {', '.join(MEMORY_METHODS)}, "
                                        f"got {method!r}")
        if method == "closed_form":
            raise NotApplicableError(
                f"{type(self).__name__} has no closed-form memory function; use "
                "method='estimator'")
        return _mf(self.as_system(), np.asarray(t, dtype=float), dt=self.dt,
                   input_dim=self.input_dim, **kwargs)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self._config.items())
