"""Perturbing trained models: the perturbation error :math:`E_m(\\beta)` of a torch model.

Wang, Li & Li (*Inverse approximation theory for nonlinear recurrent neural networks*,
ICLR 2024, Def. 3.4) define the perturbation error of weights :math:`\\theta_m` as

.. math::

    E_m(\\beta) = \\sup_{\\|\\tilde\\theta - \\theta_m\\| \\le \\beta}
        \\big\\|H - \\hat H(\\cdot;\\tilde\\theta)\\big\\| ,

with the perturbation on the *recurrent* weights; :func:`perturbation_curve` estimates it
for a model and a loss on a fixed evaluation set, and returns the numpy
:class:`rnnmem.numerics.perturbation.PerturbationCurve` that
:func:`~rnnmem.numerics.perturbation.crossing_point` and
:func:`~rnnmem.numerics.perturbation.stability_verdict` read.

The perturbations
-----------------
For each radius :math:`\\beta` and each repeat :math:`k`, every perturbed parameter tensor
:math:`P` gets :math:`P + \\beta D/\\|D\\|` with a Gaussian direction :math:`D` of its shape, so
that *each perturbed tensor's perturbation has norm exactly* :math:`\\beta` (a point on the
sphere, not inside the ball: the supremum over the ball is approached by the running
maximum over radii, the curve's ``envelope``). Norms, per tensor:

``"spectral"`` (default)
    matrices: the largest singular value (tensors with more than two axes are read as the
    matrix ``(shape[0], -1)``); vectors and diagonal weights :math:`v`: the spectral norm of
    :math:`\\operatorname{diag}(v)`, i.e. :math:`\\max_i |v_i|`; scalars: :math:`|v|`.
``"frobenius"``
    the Euclidean norm of all entries.
``"max"``
    :math:`\\max |P_{ij}|` over all entries (the choice of the original code,
    ``radarFudan/Curse-of-memory`` ``src/perturb.py``, which normalises by
    ``torch.norm(noise, p=inf)``).
``"inf"``
    the original's name for the same number: ``torch.norm(P, p=inf)`` with no ``dim``
    flattens the tensor, so it is :math:`\\max |P_{ij}|`, not the operator norm. Its
    spectral size on an :math:`m \\times m` Gaussian direction grows like
    :math:`\\sqrt{m / \\log m}`.
``"operator_inf"``
    the operator :math:`\\infty`-norm :math:`\\max_i \\sum_j |P_{ij}|` (matrices and
    vectors read as diagonal matrices only; a tensor with more axes is refused).

Directions (``distribution``): ``"gaussian"`` entries, ``"rademacher"`` random signs, or
``"deterministic"``: :math:`-1` in every entry (scaled to norm :math:`\\beta`), i.e. every
entry moved by :math:`-\\beta` under the max norm: the September-2023 branches of the
original (``LRU_SSM_S4``, ``SSM_SoftplusSSM_S4``, ``src/perturb.py``) perturb the recurrent
weight ``W`` that way and the other parameters with Gaussian noise, which
``distribution_by_name={"W": "deterministic"}`` expresses. A deterministic direction has
one repeat. ``evaluation_form=True`` perturbs ``model.evaluation_form()`` (the relu models of
:mod:`rnnmem.models.curse_original` then use their eigenvalues directly, as the original
evaluates them).

``scope="recurrent"`` perturbs :meth:`RecurrentModel.recurrent_parameters` only (Def. 3.4);
``"all"`` every floating-point parameter (what the original code does). Directions are
drawn in float64 on the CPU from a generator seeded by ``(seed, radius index, repeat)``
(``(seed, repeat)`` with ``shared_directions=True``, as the original code, which reseeds
with the repeat index at every radius), so the batched and the loop evaluations see the
same perturbations on every device.

Evaluation
----------
The loss is evaluated on one :class:`EvalSet` built *once* (the original code re-runs its
test loader for every sample). Two methods with the same result:

``"loop"`` (the reference)
    writes each perturbed parameter set into the model and calls the evaluation;
``"batched"``
    evaluates a chunk of perturbed parameter sets in one call with
    :func:`torch.func.functional_call` under :func:`torch.func.vmap` over the stacked
    parameters (chunks bounded by ``max_chunk_elements``);
``"auto"``
    when the evaluation is an :class:`EvalSet` and the model's forward can be vmapped:
    the first chunk batched and the next one in the loop, both timed, and the rest with
    the faster of the two (``meta["method"]`` and ``meta["timing"]`` say which and why);
    else the loop (the reason is recorded in ``meta["batched_error"]``, e.g. a forward
    through an operation without a vmap rule such as ``lstm_cell``;
    :func:`rnnmem.models.recurrence.linear_recurrence` has one). Measured on a 2-core CPU, batching over perturbations
    gains little or loses when one evaluation already fills the machine (1000 sequences
    of length 100, width 64), and wins on small evaluation sets where per-call overhead
    dominates (on CPU, tensors above 32 MiB are much slower to allocate unless
    ``THP_MEM_ALLOC_ENABLE=1``); on a GPU the balance shifts towards batching.

A perturbed model whose loss is NaN or infinite counts as an infinite error.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from ..errors import (CheckpointError, ConflictingOptionsError, InvalidParameterError,
                      RnnmemError, ShapeError, UnknownNameError, exception_text)
from ..limits import check_count, check_memory, check_seed
from ..models.base import model_outputs
from ..numerics.perturbation import PerturbationCurve, check_betas

__all__ = ["EvalSet", "perturbation_curve", "perturbation_directions", "perturbed_parameters",
           "check_direction_options",
           "eval_set_from_checkpoint", "SCOPES", "NORMS", "METHODS", "DISTRIBUTIONS"]

SCOPES = ("recurrent", "all")
NORMS = ("spectral", "frobenius", "max", "inf", "operator_inf")
METHODS = ("auto", "batched", "loop")
DISTRIBUTIONS = ("gaussian", "rademacher", "deterministic")
#: default bound on the activations of one batched chunk (numbers), see _chunk_size
MAX_CHUNK_ELEMENTS = 2**25




def _mse(outputs, targets, mask=None):
    err = (outputs - targets).square()
    if mask is None:
        return err.mean()
    m = mask.to(err.dtype)
    while m.dim() < err.dim():
        m = m[..., None]
    m = m.expand_as(err)
    return (err * m).sum() / m.sum().clamp_min(1)


# --------------------------------------------------------------------------------------
# the fixed evaluation set
# --------------------------------------------------------------------------------------
@dataclass
class EvalSet:
    """A fixed evaluation set: batches ``(inputs, targets, mask or None)`` and a loss.

    The loss of a model is the batch-size-weighted mean of ``loss(model(x), y, mask)``
    over the batches (the convention of :meth:`rnnmem.tasks.interface.Task.evaluate`).
    Calling the set on a model (``evalset(model)``) evaluates it in eval mode without
    gradients: the reference evaluation.
    """

    batches: list
    loss: Callable = _mse
    name: str = "eval"

    def __post_init__(self):
        if not self.batches:
            raise InvalidParameterError("an evaluation set needs at least one batch")
        fixed = []
        for b in self.batches:
            if not isinstance(b, (tuple, list)) or len(b) not in (2, 3):
                raise ShapeError("each batch must be (inputs, targets) or (inputs, targets, "
                                 "mask)")
            x, y = b[0], b[1]
            mask = b[2] if len(b) == 3 else None
            if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
                raise ShapeError("batch inputs and targets must be torch tensors")
            if x.shape[0] != y.shape[0] or x.shape[0] == 0:
                raise ShapeError(f"a batch has {x.shape[0]} inputs and {y.shape[0]} targets")
            fixed.append((x, y, mask))
        self.batches = fixed
        if not callable(self.loss):
            raise InvalidParameterError("loss must be callable (outputs, targets, mask)")

    @property
    def n_samples(self) -> int:
        return int(sum(b[0].shape[0] for b in self.batches))

    @torch.no_grad()
    def target_scale(self) -> float:
        """The loss of the zero output, :math:`\\mathcal L(0, y)`: the squared
        :math:`L^2` norm of the targets in the set's own loss (weights and mask included),
        the scale against which a perturbed model's error counts as blown up."""
        total = 0.0
        for x, y, mask in self.batches:
            total += float(self.loss(torch.zeros_like(y), y, mask)) * x.shape[0]
        return total / self.n_samples

    @classmethod
    def from_arrays(cls, inputs, targets, *, loss: Callable | None = None,
                    batch_size: int | None = None, dtype=None, device=None,
                    name: str = "arrays") -> "EvalSet":
        """From arrays (N, T, d) and (N, T, k) (numpy or torch), with the MSE by default."""
        x = torch.as_tensor(np.asarray(inputs) if not isinstance(inputs, torch.Tensor)
                            else inputs)
        y = torch.as_tensor(np.asarray(targets) if not isinstance(targets, torch.Tensor)
                            else targets)
        if dtype is not None:
            x, y = x.to(dtype), y.to(dtype)
        if device is not None:
            x, y = x.to(device), y.to(device)
        if x.shape[0] != y.shape[0]:
            raise ShapeError(f"inputs {tuple(x.shape)} and targets {tuple(y.shape)} differ in N")
        if x.is_floating_point() and not torch.isfinite(x).all():
            raise InvalidParameterError("inputs contain NaN or inf")
        n = x.shape[0]
        bs = n if batch_size is None else batch_size
        if isinstance(bs, bool) or not isinstance(bs, int) or bs < 1:
            raise InvalidParameterError(f"batch_size must be a positive integer, got {bs!r}")
        batches = [(x[i:i + bs], y[i:i + bs], None) for i in range(0, n, bs)]
        return cls(batches, loss or _mse, name)

    @classmethod
    def from_task(cls, task, split: str | None = None, *, max_samples: int | None = None
                  ) -> "EvalSet":
        """The held-out ``split`` (default: the task's first evaluation split) of a
        configured :class:`rnnmem.tasks.interface.Task`, materialised once, with the
        task's loss. ``max_samples`` keeps only the first that many samples."""
        split = split or task.eval_splits[0]
        batches, n = [], 0
        for x, y, mask in task.eval_batches(split):
            if max_samples is not None and n >= max_samples:
                break
            if max_samples is not None and n + x.shape[0] > max_samples:
                k = max_samples - n
                x, y = x[:k], y[:k]
                mask = None if mask is None else mask[:k]
            batches.append((x, y, mask))
            n += x.shape[0]
        if not batches:
            raise InvalidParameterError(f"split {split!r} of task {task.name!r} is empty")
        return cls(batches, task.loss, f"{task.name}/{split}")

    @torch.no_grad()
    def __call__(self, model: torch.nn.Module) -> float:
        was = model.training
        model.eval()
        try:
            total = 0.0
            for x, y, mask in self.batches:
                total += float(self.loss(model_outputs(model, x), y, mask)) * x.shape[0]
        finally:
            model.train(was)
        return total / self.n_samples


def eval_set_from_checkpoint(path, model=None, *, task: str | None = None,
                             task_kwargs: dict | None = None, split: str | None = None,
                             max_samples: int | None = None) -> tuple["EvalSet", dict]:
    """The evaluation set of the task a checkpoint was trained on.

    :func:`rnnmem.train.train` stores its :class:`~rnnmem.train.TrainConfig` in the
    checkpoint (``extra["train"]["config"]``, read by
    :func:`rnnmem.train.load_train_state`); the task is rebuilt from
    ``config.task``/``config.task_kwargs`` and configured with the run's seed, batch size
    and temporal weighting, so its held-out split is the one evaluated during training.
    ``task`` (and ``task_kwargs``) override it, and are required for a checkpoint without
    training state.

    Returns
    -------
    (EvalSet, info) with ``info = {"task": name, "task_kwargs": {...}, "split": ...,
    "from": "checkpoint" | "option"}``.
    """
    from .loop import load_train_state
    from ..tasks.registry import build_task

    cfg = None
    try:
        cfg, _ = load_train_state(path)
    except CheckpointError:
        if task is None:
            raise CheckpointError(f"{str(path)!r} holds no training state, so its task is "
                                  "unknown; pass a task (--task)") from None
    if task is not None:
        name, kwargs, source = task, dict(task_kwargs or {}), "option"
    else:
        name, kwargs, source = cfg.task, dict(cfg.task_kwargs), "checkpoint"
        if cfg.bptt is not None:
            kwargs["bptt"] = cfg.bptt
    t = build_task(name, **kwargs)
    dtype = model.dtype if model is not None and hasattr(model, "dtype") else None
    device = model.device if model is not None and hasattr(model, "device") else None
    t.configure(device=device, dtype=dtype,
                batch_size=cfg.batch_size if cfg else None,
                seed=cfg.seed if cfg else 0,
                temporal_weighting=cfg.temporal_weighting if (cfg and source == "checkpoint")
                else 0.0)
    es = EvalSet.from_task(t, split, max_samples=max_samples)
    return es, {"task": name, "task_kwargs": kwargs, "split": split or t.eval_splits[0],
                "from": source, "n_samples": es.n_samples}


# --------------------------------------------------------------------------------------
# perturbations
# --------------------------------------------------------------------------------------
def _check_choice(v, allowed, what):
    if v not in allowed:
        raise UnknownNameError(what, v, list(allowed))
    return v


def _select_by(model: torch.nn.Module, parameters) -> dict:
    """Named parameters chosen by glob pattern(s) on their names or a callable."""
    import fnmatch

    named = dict(model.named_parameters())
    if callable(parameters):
        try:
            return {n: p for n, p in named.items() if parameters(n, p)}
        except TypeError as exc:
            raise InvalidParameterError(f"parameters: the callable must take (name, "
                                        f"parameter) and return a bool ({exc})") from None
    pats = [parameters] if isinstance(parameters, str) else list(parameters)
    if not pats or not all(isinstance(q, str) and q for q in pats):
        raise InvalidParameterError(f"parameters must be a glob pattern, a list of them or a "
                                    f"callable (name, parameter) -> bool, got {parameters!r}")
    return {n: p for n, p in named.items() if any(fnmatch.fnmatchcase(n, q) for q in pats)}


def _no_recurrent_message(model: torch.nn.Module, what: str) -> str:
    names = [n for n, _ in model.named_parameters()]
    hh = [n for n in names if "weight_hh" in n]
    hint = (f"e.g. parameters='*weight_hh*' (the recurrent matrices of torch RNNs: "
            f"{', '.join(hh[:4])})" if hh else "e.g. parameters='rnn.*'")
    shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
    return (f"{type(model).__name__} {what}; choose the perturbed parameters by name "
            f"pattern or callable ({hint}; --params on the command line) or use scope='all'. "
            f"Its parameters: {shown}")


def perturbed_parameters(model: torch.nn.Module, scope: str = "recurrent",
                         parameters=None) -> dict:
    """The parameters a perturbation touches: ``{name: parameter}`` (floating point).

    ``parameters`` (a glob pattern such as ``"rnn.weight_hh*"``, a list of patterns, or a
    callable ``(name, parameter) -> bool``) selects them by name and overrides ``scope``.
    """
    _check_choice(scope, SCOPES, "perturbation scope")
    if parameters is not None:
        params = _select_by(model, parameters)
        if not params:
            raise InvalidParameterError(
                _no_recurrent_message(model, f"has no parameter matching {parameters!r}"))
    elif scope == "recurrent":
        if not hasattr(model, "recurrent_parameters"):
            raise InvalidParameterError(
                _no_recurrent_message(model, "does not declare its recurrent parameters "
                                             "(no recurrent_parameters())"))
        params = dict(model.recurrent_parameters())
        if not params:
            raise InvalidParameterError(
                _no_recurrent_message(model, "declares no recurrent parameters"))
    else:
        params = dict(model.named_parameters())
    params = {k: p for k, p in params.items() if p.is_floating_point() or p.is_complex()}
    if not params:
        raise InvalidParameterError("the model has no floating-point parameters to perturb")
    return dict(sorted(params.items()))


def _tensor_norm(d: torch.Tensor, norm: str) -> torch.Tensor:
    if norm == "frobenius":
        return torch.linalg.vector_norm(d)
    if norm == "operator_inf" and d.dim() == 2:
        return d.abs().sum(dim=1).max()
    if norm in ("max", "inf", "operator_inf") or d.dim() <= 1:
        return d.abs().max() if d.numel() else torch.zeros((), dtype=d.real.dtype)
    return torch.linalg.matrix_norm(d.reshape(d.shape[0], -1), ord=2)


def _sample_seed(seed: int, i: int, k: int) -> int:
    s = np.random.SeedSequence([int(seed), int(i), int(k)]).generate_state(2, dtype=np.uint32)
    return int(s[0]) << 31 | int(s[1]) >> 1


def _check_norm_fits(shapes: dict, norm: str) -> None:
    """A norm defined for every perturbed tensor's shape, else a ConflictingOptionsError."""
    if norm != "operator_inf":
        return
    for name, (shape, _) in shapes.items():
        if len(shape) > 2:
            raise ConflictingOptionsError(
                f"norm={norm!r}", f"parameter {name!r} of shape {tuple(shape)}",
                "the operator inf-norm is defined for matrices and vectors only")


def _distribution_of(name: str, distribution: str, by_name) -> str:
    """The direction distribution of parameter ``name``: the entry of ``by_name`` whose key
    is the name or a dotted component of it (``"W"`` matches ``"W"``, ``"net.W"`` and
    ``"net.W.weight"``), else ``distribution``."""
    if by_name:
        parts = name.split(".")
        for key, dist in by_name.items():
            if name == key or key in parts or name.startswith(key + "."):
                return dist
    return distribution


def check_direction_options(shapes: dict, *, norm: str, distribution: str, repeats: int,
                            distribution_by_name=None) -> dict[str, str]:
    """Validate the direction options together; the distribution of each parameter.

    Raises :class:`~rnnmem.errors.ConflictingOptionsError` (naming both options) when
    every perturbed tensor is deterministic but ``repeats > 1``, when a key of
    ``distribution_by_name`` matches no parameter, or when ``norm`` is undefined for a
    parameter's shape.
    """
    _check_choice(norm, NORMS, "perturbation norm")
    _check_choice(distribution, DISTRIBUTIONS, "distribution")
    by_name = dict(distribution_by_name or {})
    for key, dist in by_name.items():
        if not isinstance(key, str) or not key:
            raise InvalidParameterError(f"distribution_by_name: keys must be parameter "
                                        f"names, got {key!r}")
        _check_choice(dist, DISTRIBUTIONS, "distribution")
        if not any(_distribution_of(n, "", {key: dist}) == dist for n in shapes):
            raise ConflictingOptionsError(
                f"distribution_by_name[{key!r}]", f"the perturbed parameters "
                f"({', '.join(sorted(shapes))})", "the name matches none of them")
    _check_norm_fits(shapes, norm)
    dists = {n: _distribution_of(n, distribution, by_name) for n in shapes}
    if repeats > 1 and all(d == "deterministic" for d in dists.values()):
        what = "distribution='deterministic'" if not by_name else \
            "distribution_by_name (every perturbed tensor deterministic)"
        raise ConflictingOptionsError(what, f"repeats={repeats}", "a deterministic "
                                      "direction gives the same perturbation every time; "
                                      "use repeats=1")
    return dists


def perturbation_directions(shapes: dict, beta: float, *, seed: int, index: int, repeat: int,
                            norm: str = "spectral", distribution: str = "gaussian",
                            distribution_by_name=None) -> dict[str, torch.Tensor]:
    """The perturbation of sample ``(index, repeat)``: ``{name: float64 CPU tensor}``, each of
    norm exactly ``beta`` in ``norm`` (module docstring). ``shapes`` maps names to
    ``(shape, is_complex)``; the names are visited in sorted order. ``distribution``:
    ``"gaussian"`` entries, or ``"rademacher"`` random signs (for a vector under the
    spectral/max norm: a random vertex of the ball; complex entries get
    :math:`(\\pm 1 \\pm i)/\\sqrt 2`), or ``"deterministic"`` (:math:`-1` everywhere);
    ``distribution_by_name`` overrides it per parameter (see
    :func:`check_direction_options`)."""
    _check_choice(norm, NORMS, "perturbation norm")
    _check_choice(distribution, DISTRIBUTIONS, "distribution")
    _check_norm_fits(shapes, norm)
    gen = torch.Generator(device="cpu").manual_seed(_sample_seed(seed, index, repeat))
    out = {}
    for name in sorted(shapes):
        shape, cplx = shapes[name]
        dist = _distribution_of(name, distribution, distribution_by_name)
        if dist == "deterministic":
            d = -torch.ones(shape, dtype=torch.complex128 if cplx else torch.float64)
        elif dist == "gaussian":
            d = torch.randn(shape, generator=gen,
                            dtype=torch.complex128 if cplx else torch.float64)
        else:
            d = torch.randint(0, 2, shape, generator=gen, dtype=torch.float64) * 2 - 1
            if cplx:
                im = torch.randint(0, 2, shape, generator=gen, dtype=torch.float64) * 2 - 1
                d = torch.complex(d, im) / math.sqrt(2)
        n = float(_tensor_norm(d, norm))
        out[name] = d * (beta / n) if n > 0 else d
    return out


def _chunk_size(evalset: EvalSet, params: dict, model, budget: int) -> int:
    """Perturbed parameter sets per vmapped call: activations of one set are estimated as
    (number of input positions) x (largest parameter dimension), a heuristic."""
    positions = sum(x[0].numel() // max(1, x[0].shape[-1]) if x[0].dim() > 2
                    else x[0].numel() for x in evalset.batches)
    widest = max([max(p.shape) for p in model.parameters() if p.dim() > 0] + [1])
    per_set = max(1, positions * widest)
    return max(1, budget // per_set)


def _check_int(v, name, lo):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise InvalidParameterError(f"{name} must be an integer >= {lo}, got {v!r}")
    return int(v)


def perturbation_curve(model: torch.nn.Module, evaluate, betas, *, repeats: int = 30,
                       scope: str = "recurrent", norm: str = "spectral", seed: int = 0,
                       method: str = "auto", chunk_size: int | None = None,
                       max_chunk_elements: int = MAX_CHUNK_ELEMENTS,
                       shared_directions: bool = False,
                       distribution: str = "gaussian", distribution_by_name=None,
                       evaluation_form: bool = False, parameters=None) -> PerturbationCurve:
    """Estimate the perturbation error :math:`E_m(\\beta)` of ``model`` on a grid of radii.

    .. math::

        E(\\beta_i, k) = \\mathcal L\\big(\\theta + \\Delta_{ik}\\big), \\qquad
        \\|\\Delta_{ik}^{(P)}\\| = \\beta_i \\ \\text{for each perturbed tensor } P ,

    (Wang, Li & Li, ICLR 2024, Def. 3.4; see the module docstring for the norms, the scope
    and the random numbers), for ``repeats`` draws :math:`k` at each radius
    :math:`\\beta_i`, plus the unperturbed loss :math:`E(0)`.

    Parameters
    ----------
    model : torch.nn.Module
        Left unchanged (parameters restored even on error).
    evaluate : EvalSet or callable ``model -> float``
        The loss on a fixed evaluation set. A plain callable allows only the loop.
    betas : (n_beta,) positive, strictly increasing radii
    repeats : int >= 1
    scope : {"recurrent", "all"}
    norm : {"spectral", "frobenius", "max"}
    seed : int
    method : {"auto", "batched", "loop"}
    chunk_size : int, optional
        Perturbed parameter sets per vmapped call (default from ``max_chunk_elements``).
    max_chunk_elements : int
        Bound on the estimated activations of one vmapped call.
    shared_directions : bool
        Use the same direction for repeat ``k`` at every radius (as the original code).
    distribution : {"gaussian", "rademacher", "deterministic"}
        Entries of the directions before scaling (see :func:`perturbation_directions`).
    distribution_by_name : mapping name -> distribution, optional
        Per-parameter override (``{"W": "deterministic"}``: the original's Sept.-2023 rule).
    evaluation_form : bool
        Perturb ``model.evaluation_form()`` instead of ``model`` (the original evaluates
        its relu models with the eigenvalues used directly).
    parameters : str, list of str or callable, optional
        Perturb the parameters whose names match these glob patterns (e.g.
        ``"rnn.weight_hh*"`` for a user's ``nn.GRU``), or those for which
        ``parameters(name, parameter)`` is true; overrides ``scope`` (for modules without
        ``recurrent_parameters()``). Evaluations run under ``torch.no_grad()``.

    Returns
    -------
    PerturbationCurve
        ``samples`` (n_beta, repeats) holds every raw loss; ``meta`` the settings, the
        perturbed parameter names, the method actually used and the wall time.
    """
    b = check_betas(betas)
    K = _check_int(repeats, "repeats", 1)
    _check_choice(scope, SCOPES, "perturbation scope")
    _check_choice(norm, NORMS, "perturbation norm")
    _check_choice(method, METHODS, "evaluation method")
    _check_choice(distribution, DISTRIBUTIONS, "distribution")
    if not isinstance(evaluation_form, bool):
        raise InvalidParameterError(f"evaluation_form must be a bool, got {evaluation_form!r}")
    if evaluation_form:
        form = getattr(model, "evaluation_form", None)
        model = form() if callable(form) else model
    seed = check_seed(seed, "seed")
    check_count(K, "repeats")
    # the (n_beta, repeats) loss table and one parameter copy per draw in flight
    check_memory(8.0 * b.size * K, f"{b.size} radii x repeats={K}",
                 "use fewer radii or repeats")
    _check_int(max_chunk_elements, "max_chunk_elements", 1)
    if chunk_size is not None:
        _check_int(chunk_size, "chunk_size", 1)
    is_set = isinstance(evaluate, EvalSet)
    if not is_set and not callable(evaluate):
        raise InvalidParameterError("evaluate must be an EvalSet or a callable model -> loss")
    if method == "batched" and not is_set:
        raise InvalidParameterError("method='batched' needs an EvalSet (a plain callable can "
                                    "only be evaluated in the loop)")
    params = perturbed_parameters(model, scope, parameters)
    shapes = {n: (tuple(p.shape), p.is_complex()) for n, p in params.items()}
    dists = check_direction_options(shapes, norm=norm, distribution=distribution, repeats=K,
                                    distribution_by_name=distribution_by_name)
    base = {n: p.detach().clone() for n, p in params.items()}
    samples_idx = [(i, k) for i in range(b.size) for k in range(K)]

    def delta(i, k):
        dirs = perturbation_directions(shapes, float(b[i]), seed=seed,
                                       index=0 if shared_directions else i, repeat=k,
                                       norm=norm, distribution=distribution,
                                       distribution_by_name=distribution_by_name)
        return {n: d.to(dtype=base[n].dtype, device=base[n].device) for n, d in dirs.items()}

    t0 = time.perf_counter()
    e0 = _evaluate_loop(model, evaluate)
    used, why, timing = "loop", None, {}
    values = None
    if method in ("auto", "batched") and is_set:
        P = chunk_size or _chunk_size(evaluate, params, model, max_chunk_elements)
        first = samples_idx if method == "batched" else samples_idx[:P]
        try:
            tb = time.perf_counter()
            values = _run_batched(model, evaluate, base, first, delta, P)
            timing["batched_s_per_sample"] = (time.perf_counter() - tb) / len(first)
            used = "batched"
        except RnnmemError:
            raise
        except Exception as exc:  # vmap cannot trace this model's forward
            if method == "batched":
                raise InvalidParameterError(
                    f"batched evaluation failed ({type(exc).__name__}: "
                    f"{exception_text(exc)}); use method='loop'") from None
            why = f"{type(exc).__name__}: {exception_text(exc)}"
        if values is not None and len(values) < len(samples_idx):
            # auto: time the loop on the next chunk, finish with the faster method
            second = samples_idx[P:2 * P]
            tl = time.perf_counter()
            values += _run_loop(model, evaluate, params, base, second, delta)
            timing["loop_s_per_sample"] = (time.perf_counter() - tl) / len(second)
            rest = samples_idx[2 * P:]
            if timing["loop_s_per_sample"] < timing["batched_s_per_sample"]:
                used = "loop (measured faster)"
                values += _run_loop(model, evaluate, params, base, rest, delta)
            else:
                used = "batched (measured faster)"
                values += _run_batched(model, evaluate, base, rest, delta, P) if rest else []
    if values is None:
        values = _run_loop(model, evaluate, params, base, samples_idx, delta)
    elapsed = time.perf_counter() - t0
    meta: dict[str, Any] = {
        "source": "torch model", "model": getattr(model, "model_name", type(model).__name__),
        "scope": scope if parameters is None else "selected", "norm": norm, "repeats": K,
        "seed": seed, "method": used,
        "shared_directions": bool(shared_directions), "distribution": distribution,
        "parameters": list(params),
        "n_perturbed": int(sum(p.numel() for p in params.values())), "time_s": elapsed,
        "perturbation": "each perturbed tensor has norm exactly beta"}
    if why:
        meta["batched_error"] = why
    if timing:
        meta["timing"] = timing
    if distribution_by_name:
        meta["distributions"] = dists
    if evaluation_form:
        meta["evaluation_form"] = True
    if is_set:
        meta["eval"] = evaluate.name
        meta["n_eval"] = evaluate.n_samples
        meta["target_scale"] = evaluate.target_scale()
    return PerturbationCurve.from_samples(b, np.asarray(values).reshape(b.size, K), e0, meta)


def _evaluate_loop(model, evaluate) -> float:
    with torch.no_grad():
        v = evaluate(model)
    try:
        v = float(v)
    except (TypeError, ValueError):
        raise InvalidParameterError(f"evaluate returned {type(v).__name__}, not a number") \
            from None
    return v if math.isfinite(v) else float("inf")


def _run_loop(model, evaluate, params, base, samples_idx, delta) -> list[float]:
    """Reference: perturb the model's parameters in place, evaluate, restore."""
    out = []
    try:
        for i, k in samples_idx:
            d = delta(i, k)
            with torch.no_grad():
                for n, p in params.items():
                    p.copy_(base[n] + d[n])
            out.append(_evaluate_loop(model, evaluate))
    finally:
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(base[n])
    return out


def _run_batched(model, evalset: EvalSet, base, samples_idx, delta, P: int) -> list[float]:
    """Chunks of P perturbed parameter sets through functional_call under vmap."""
    from torch.func import functional_call, vmap

    fixed = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    fixed = {n: v.detach() for n, v in fixed.items() if n not in base}
    loss = evalset.loss

    def one(pset, x, y, mask):
        out = functional_call(model, {**fixed, **pset}, (x,))
        out = out[0] if isinstance(out, (tuple, list)) else out
        return loss(out, y, mask)

    batched = vmap(one, in_dims=(0, None, None, None))
    was = model.training
    model.eval()
    out: list[float] = []
    try:
        with torch.no_grad():
            for a in range(0, len(samples_idx), P):
                chunk = samples_idx[a:a + P]
                ds = [delta(i, k) for i, k in chunk]
                pset = {n: base[n][None] + torch.stack([d[n] for d in ds])
                        for n in base}  # (P, *shape)
                tot = torch.zeros(len(chunk), dtype=torch.float64)
                for x, y, mask in evalset.batches:
                    tot += batched(pset, x, y, mask).detach().double().cpu() * x.shape[0]
                vals = (tot / evalset.n_samples).tolist()
                out.extend(v if math.isfinite(v) else float("inf") for v in vals)
    finally:
        model.train(was)
    return out
