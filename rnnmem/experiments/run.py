"""``Run``: one unit of work, described completely, as data.

A :class:`Run` is what a worker needs to produce a result and nothing else: the model (a
registered name and its options), the task (a registered name and its options), the
training configuration (:class:`rnnmem.train.TrainConfig`, reused, not copied), what is
evaluated once training ends (:class:`Evaluation`), the seed, and the resources it asks a
scheduler for (:class:`Resources`). Nothing is read from globals.

Its canonical form is a nested dict whose sections mirror its TOML file::

    seed = 0
    [model]                 # name + the model's options, flat
    name = "rnn"
    width = 8
    [task]                  # name + the task's options
    name = "lf:exponential"
    length = 20
    [train]                 # TrainConfig fields (model/task/options/seed/out_dir excluded)
    steps = 200
    lr = 0.01
    [evaluate.perturbation] # optional evaluations
    repeats = 4
    [resources]             # what a scheduler reserves; not part of the identity
    num_cpus = 1

so a field is named by a *dotted path* (``model.width``, ``train.lr``, ``seed``,
``evaluate.perturbation.repeats``), the names protocols vary.

Identity: :attr:`Run.hash` is the SHA-256 of the canonical JSON (sorted keys, no spaces) of
everything but ``resources``, together with :data:`RESULT_FORMAT`, the version of the
result layout; two runs with the same hash produce the same result, so a store keeps one.
Defaults are filled in before hashing (``evaluate.perturbation = {}`` and the same table
written out in full have one hash), and integer values of float fields of the training
configuration are read as floats (``lr = 1`` and ``lr = 1.0`` are one run).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any, Mapping

from ..errors import InvalidParameterError
from ..train.config import TrainConfig
from ..train.config import _thaw as _plain  # mappings and tuples to plain dicts and lists

__all__ = ["Run", "Evaluation", "Resources", "RESULT_FORMAT", "TRAIN_FIELDS",
           "get_path", "set_path", "flatten", "code_digest"]

#: version of the layout of a run's results (bump when a result of the same Run changes)
RESULT_FORMAT = 1

#: parts of the package that do not change what a run trains or measures (the command
#: line, the claims and their report, the test kit for users): left out of code_digest
_NOT_NUMERICS = ("cli.py", "__main__.py", "commands", "proofs_check", "testing")
#: versions that change a run's numbers with rnnmem's own code unchanged
_NUMERIC_PACKAGES = ("torch", "numpy", "scipy", "sympy")
#: environment variable naming a run's code explicitly instead of code_digest()
CODE_ENV = "RNNMEM_RUN_CODE"


@functools.lru_cache(maxsize=1)
def _source_digest() -> str:
    from pathlib import Path

    return _digest_of(Path(__file__).resolve().parents[1])


def _digest_of(root) -> str:
    """:func:`code_digest` of the package at ``root`` (a Path)."""
    import importlib.metadata as md
    import platform

    h = hashlib.sha256()
    files = sorted(p for p in root.rglob("*") if p.suffix in (".py", ".c", ".h")
                   and p.relative_to(root).parts[0] not in _NOT_NUMERICS)
    for p in files:
        h.update(p.relative_to(root).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(p.read_bytes()).digest())
    for name in _NUMERIC_PACKAGES:
        try:
            v = md.version(name)
        except md.PackageNotFoundError:
            v = "absent"
        h.update(f"{name}=={v}\0".encode())
    h.update(f"python=={platform.python_version()}".encode())
    return "sha256:" + h.hexdigest()


def code_digest() -> str:
    """The code a run's numbers come from, part of every run's identity (:meth:`Run.hash`).

    SHA-256 over every source file of the rnnmem package (``.py``, ``.c``, ``.h``, by
    path and content) except the command line, ``proofs_check``, and ``testing``, which
    do not change what a run trains or measures, and over the installed versions of
    torch, numpy, scipy, sympy and Python. So a run store never hands back a run trained
    by other code as if it were this code's: after any change of the numerics the runs are
    trained again (the old ones stay in the store under their own hashes). Why: a store
    filled 61 commits earlier was found serving runs whose weights differed from today's
    in rounding, and one filled by the builds with the use-after-free in the stack-LSTM
    backward (d9b8e10..8f7a6d1) would have kept serving their corrupted runs.

    ``$RNNMEM_RUN_CODE``, when set, is used instead (the string itself): a label for
    code you know to compute the same numbers (e.g. after an edit of a docstring). It is
    recorded in each run's provenance like the digest."""
    import os

    return os.environ.get(CODE_ENV) or _source_digest()


#: TrainConfig fields that live elsewhere in a Run (or nowhere: out_dir is the store's)
_NOT_TRAIN = ("model", "task", "model_kwargs", "task_kwargs", "seed", "out_dir")
#: the fields of the ``train`` section
TRAIN_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name not in _NOT_TRAIN)
_TRAIN_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)
                   if f.name in TRAIN_FIELDS}
_FLOAT_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)
                 if str(f.type).startswith("float")}
_SECTIONS = ("seed", "model", "task", "train", "evaluate", "resources")


def _bad(path: str, msg: str) -> InvalidParameterError:
    err = InvalidParameterError(f"{path}: {msg}")
    err.field = path
    return err


def _freeze(v):
    if isinstance(v, Mapping):
        return MappingProxyType({k: _freeze(x) for k, x in v.items()})
    if isinstance(v, (list, tuple)):
        return tuple(_freeze(x) for x in v)
    return v


def _unknown(section: str, given: Mapping, known) -> None:
    extra = sorted(set(given) - set(known))
    if extra:
        raise _bad(f"{section}.{extra[0]}" if section else extra[0],
                   f"unknown field; known: {', '.join(sorted(known))}")


def _real(path, v, *, positive=False, nonneg=False):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise _bad(path, f"must be a finite number, got {v!r}")
    if positive and not v > 0:
        raise _bad(path, f"must be > 0, got {v!r}")
    if nonneg and not v >= 0:
        raise _bad(path, f"must be >= 0, got {v!r}")
    return float(v)


def _int(path, v, minimum):
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise _bad(path, f"must be an integer >= {minimum}, got {v!r}")
    return v


def _choice(path, v, choices):
    if v not in choices:
        raise _bad(path, f"must be one of {', '.join(map(str, choices))}; got {v!r}")
    return v


# ====================================================================== evaluations
_MEMORY_DEFAULTS = {"t_max": 20.0, "n": 21, "options": {}}
_PERTURB_DEFAULTS = {"betas": None, "beta_min": 1e-3, "beta_max": 1.0, "n_betas": 13,
                     "repeats": 4, "scope": "recurrent", "norm": "spectral", "n_eval": 128,
                     "method": "loop", "shared_directions": False,
                     "distribution": "gaussian", "distribution_by_name": {},
                     "evaluation_form": False, "parameters": None}
#: perturbation options left out of the canonical form while at their defaults, so that
#: runs written before these options existed keep their hashes (and their stored results)
_PERTURB_OMIT_AT_DEFAULT = ("distribution_by_name", "evaluation_form", "parameters")
_LENGTH_DEFAULTS = {"language": None, "options": {}}


def _section(path, given, defaults) -> dict | None:
    if given is None:
        return None
    if not isinstance(given, Mapping):
        raise _bad(path, f"must be a table of options (or absent), got {type(given).__name__}")
    _unknown(path, given, defaults)
    return {**_plain(defaults), **_plain(given)}


@dataclass(frozen=True)
class Evaluation:
    """What is evaluated on the trained model (each ``None``: not evaluated).

    Parameters
    ----------
    memory_function : mapping, optional
        ``{t_max, n, options}``: the model's memory function (Wang, Li & Li, ICLR 2024,
        Def. 3.1) :math:`M(t)` at ``n`` times ``linspace(0, t_max, n)``, by
        ``model.memory_function(t, **options)``.
    perturbation : mapping, optional
        ``{betas | beta_min, beta_max, n_betas; repeats, scope, norm, n_eval, method,
        shared_directions, distribution, distribution_by_name, evaluation_form,
        parameters}`` (the choices of ``scope``, ``norm``, ``method`` and
        ``distribution`` are :data:`rnnmem.train.perturb.SCOPES`, ``NORMS``, ``METHODS``,
        ``DISTRIBUTIONS``; ``betas = "original"`` is the original code's grid
        :func:`rnnmem.numerics.perturbation.original_betas`, :math:`10^{-3}\\cdot 2^{i/2}`,
        :math:`i = 0..20`; ``parameters``: glob patterns overriding ``scope``): the
        perturbation error :math:`E_m(\\beta)`
        (Def. 3.4) by :func:`rnnmem.train.perturb.perturbation_curve` on the first
        ``n_eval`` samples of the task's first evaluation split, seeded with the run's
        seed. ``method="loop"`` (the default) is the reference evaluation, the same bits on
        every machine.
    lengths : mapping, optional
        ``{language, options}``: :func:`rnnmem.train.evaluate.evaluate_lengths` (language
        defaults to the task's, for ``lang:<name>`` tasks).
    splits : sequence of str
        Extra task splits to evaluate with ``task.evaluate(model, split)`` (e.g.
        ``["test"]``: the test perplexity of a language model).
    dm : mapping, optional
        ``{lengths, train_lengths, k, depths, overflow, batch_size}``: DeepMind's protocol
        (Delétang et al., ICLR 2023) for a ``dm:<name>`` task, by
        :func:`rnnmem.train.evaluate_dm_depths` at every stack depth of ``depths``
        (``"sequence"`` or an int; default ``["sequence", 30]``) on every valid length of
        ``lengths`` (``"lo:hi"`` or a list; default ``"41:500"``) and of ``train_lengths``
        (default ``"1:40"``, for the retained ratio), ``k`` strings per length, seeded with
        the run's seed. See :data:`DM_DEFAULTS`.
    ns : mapping, optional
        ``{lengths, k, batch_size}``: DuSell & Chiang's protocol for an ``ns:<name>`` task,
        by :func:`rnnmem.train.evaluate_ns` (``lengths = "test"``: the task's test range).
    """

    memory_function: Mapping[str, Any] | None = None
    perturbation: Mapping[str, Any] | None = None
    lengths: Mapping[str, Any] | None = None
    splits: tuple[str, ...] = ()
    dm: Mapping[str, Any] | None = None
    ns: Mapping[str, Any] | None = None

    def __post_init__(self):
        _check_length_protocols(self)
        mf = _section("evaluate.memory_function", self.memory_function, _MEMORY_DEFAULTS)
        if mf is not None:
            mf["t_max"] = _real("evaluate.memory_function.t_max", mf["t_max"], positive=True)
            _int("evaluate.memory_function.n", mf["n"], 2)
            if not isinstance(mf["options"], Mapping):
                raise _bad("evaluate.memory_function.options", "must be a table")
        pt = _section("evaluate.perturbation", self.perturbation, _PERTURB_DEFAULTS)
        if pt is not None:
            p = "evaluate.perturbation"
            # the choices are perturbation_curve's own (one source of truth)
            from ..train.perturb import DISTRIBUTIONS, METHODS, NORMS, SCOPES

            if pt["betas"] == "original":
                pass  # the original code's grid, rnnmem.numerics.perturbation.original_betas
            elif isinstance(pt["betas"], str):
                raise _bad(f"{p}.betas", f"must be a list of radii or \"original\", "
                                         f"got {pt['betas']!r}")
            elif pt["betas"] is None:
                lo = _real(f"{p}.beta_min", pt["beta_min"], positive=True)
                hi = _real(f"{p}.beta_max", pt["beta_max"], positive=True)
                n = _int(f"{p}.n_betas", pt["n_betas"], 1)
                if not hi > lo and n > 1:
                    raise _bad(f"{p}.beta_max", f"must be > beta_min ({lo}), got {hi}")
                pt["beta_min"], pt["beta_max"] = lo, hi
            else:
                if not isinstance(pt["betas"], (list, tuple)) or not pt["betas"]:
                    raise _bad(f"{p}.betas", "must be a non-empty list of radii")
                pt["betas"] = [_real(f"{p}.betas[{i}]", b, positive=True)
                               for i, b in enumerate(pt["betas"])]
                if any(b >= c for b, c in zip(pt["betas"], pt["betas"][1:])):
                    raise _bad(f"{p}.betas", "must be strictly increasing")
            _int(f"{p}.repeats", pt["repeats"], 1)
            _int(f"{p}.n_eval", pt["n_eval"], 1)
            _choice(f"{p}.scope", pt["scope"], SCOPES)
            _choice(f"{p}.norm", pt["norm"], NORMS)
            _choice(f"{p}.method", pt["method"], METHODS)
            _choice(f"{p}.distribution", pt["distribution"], DISTRIBUTIONS)
            for flag in ("shared_directions", "evaluation_form"):
                if not isinstance(pt[flag], bool):
                    raise _bad(f"{p}.{flag}", "must be true or false")
            by_name = pt["distribution_by_name"]
            if not isinstance(by_name, Mapping):
                raise _bad(f"{p}.distribution_by_name", "must be a table parameter name "
                           f"(or glob pattern) -> distribution, got {by_name!r}")
            for key, dist in by_name.items():
                if not isinstance(key, str) or not key:
                    raise _bad(f"{p}.distribution_by_name", f"keys must be parameter names, "
                                                            f"got {key!r}")
                _choice(f"{p}.distribution_by_name.{key}", dist, DISTRIBUTIONS)
            pats = pt["parameters"]
            if isinstance(pats, str):
                pats = pt["parameters"] = [pats]
            if pats is not None and (not isinstance(pats, (list, tuple)) or not pats or not all(
                    isinstance(x, str) and x for x in pats)):
                raise _bad(f"{p}.parameters", "must be a glob pattern or a non-empty list of "
                                              f"them (or absent), got {pats!r}")
            if pt["repeats"] > 1 and pt["distribution"] == "deterministic" \
                    and all(d == "deterministic" for d in by_name.values()):
                from ..errors import ConflictingOptionsError

                err = ConflictingOptionsError(
                    f"{p}.distribution='deterministic'", f"{p}.repeats={pt['repeats']}",
                    "a deterministic direction gives the same perturbation every time; use "
                    "repeats = 1")
                err.field = f"{p}.repeats"
                raise err
        ln = _section("evaluate.lengths", self.lengths, _LENGTH_DEFAULTS)
        if ln is not None and not isinstance(ln["options"], Mapping):
            raise _bad("evaluate.lengths.options", "must be a table")
        splits = self.splits
        if isinstance(splits, str) or not isinstance(splits, (list, tuple)) \
                or not all(isinstance(s, str) and s for s in splits):
            raise _bad("evaluate.splits", f"must be a list of split names, got {splits!r}")
        for name, v in (("memory_function", mf), ("perturbation", pt), ("lengths", ln)):
            object.__setattr__(self, name, None if v is None else _freeze(v))
        object.__setattr__(self, "splits", tuple(splits))

    def betas(self) -> list[float]:
        """The perturbation radii (the explicit list, or the geometric grid)."""
        import numpy as np

        pt = self.perturbation
        if pt is None:
            return []
        if pt["betas"] == "original":
            from ..numerics.perturbation import original_betas

            return [float(b) for b in original_betas()]
        if pt["betas"] is not None:
            return list(pt["betas"])
        return [float(b) for b in np.geomspace(pt["beta_min"], pt["beta_max"], pt["n_betas"])]

    def to_dict(self) -> dict:
        out = {}
        for name in ("memory_function", "perturbation", "lengths", "dm", "ns"):
            v = getattr(self, name)
            if v is not None:
                out[name] = _plain(v)
        if "perturbation" in out:
            out["perturbation"] = {k: v for k, v in out["perturbation"].items()
                                   if k not in _PERTURB_OMIT_AT_DEFAULT
                                   or v != _PERTURB_DEFAULTS[k]}
        if self.splits:
            out["splits"] = list(self.splits)
        return out

    @classmethod
    def from_dict(cls, d: Mapping | None) -> "Evaluation":
        d = {} if d is None else d
        if not isinstance(d, Mapping):
            raise _bad("evaluate", f"must be a table, got {type(d).__name__}")
        _unknown("evaluate", d, [f.name for f in dataclasses.fields(cls)])
        return cls(**{k: (tuple(v) if k == "splits" and isinstance(v, list) else v)
                      for k, v in d.items()})


# ====================================================================== length protocols
#: defaults of ``evaluate.dm`` (DeepMind: test 41..500, 512 strings, stack depths)
DM_DEFAULTS = {"lengths": "41:500", "train_lengths": "1:40", "k": 512,
               "depths": ["sequence", 30], "overflow": "drop", "batch_size": 256}
#: defaults of ``evaluate.ns`` (``"test"``: the task's own test range)
NS_DEFAULTS = {"lengths": "test", "k": 512, "batch_size": 256}


def _check_lengths(path, v, *, allow_test=False):
    """``"lo:hi"`` (1 <= lo <= hi), a non-empty list of positive ints, or ``"test"``."""
    if allow_test and v == "test":
        return v
    if isinstance(v, str):
        lo, sep, hi = v.partition(":")
        try:
            a, b = int(lo), int(hi if sep else lo)
        except ValueError:
            raise _bad(path, f"must look like 'lo:hi' or be a list of lengths, got {v!r}") \
                from None
        if not 1 <= a <= b:
            raise _bad(path, f"needs 1 <= lo <= hi, got {v!r}")
        return v
    if not isinstance(v, (list, tuple)) or not v:
        raise _bad(path, f"must be 'lo:hi' or a non-empty list of lengths, got {v!r}")
    return [_int(f"{path}[{i}]", n, 1) for i, n in enumerate(v)]


def _check_length_protocols(ev) -> None:
    """Validate and complete ``evaluate.dm`` / ``evaluate.ns`` (see :class:`Evaluation`)."""
    dm = _section("evaluate.dm", ev.dm, DM_DEFAULTS)
    if dm is not None:
        p = "evaluate.dm"
        dm["lengths"] = _check_lengths(f"{p}.lengths", dm["lengths"])
        dm["train_lengths"] = _check_lengths(f"{p}.train_lengths", dm["train_lengths"])
        _int(f"{p}.k", dm["k"], 1)
        _int(f"{p}.batch_size", dm["batch_size"], 1)
        _choice(f"{p}.overflow", dm["overflow"], ("drop", "error"))
        ds = dm["depths"]
        if not isinstance(ds, (list, tuple)) or not ds:
            raise _bad(f"{p}.depths", f"must be a non-empty list of 'sequence' or ints, "
                                      f"got {ds!r}")
        for i, d in enumerate(ds):
            if d != "sequence":
                _int(f"{p}.depths[{i}]", d, 1)
        if len(set(map(str, ds))) != len(ds):
            raise _bad(f"{p}.depths", f"has a repeated depth: {ds!r}")
        object.__setattr__(ev, "dm", _freeze(dm))
    ns = _section("evaluate.ns", ev.ns, NS_DEFAULTS)
    if ns is not None:
        p = "evaluate.ns"
        ns["lengths"] = _check_lengths(f"{p}.lengths", ns["lengths"], allow_test=True)
        _int(f"{p}.k", ns["k"], 1)
        _int(f"{p}.batch_size", ns["batch_size"], 1)
        object.__setattr__(ev, "ns", _freeze(ns))


def _check_protocol_task(run) -> None:
    """``evaluate.dm`` needs a ``dm:<name>`` task, ``evaluate.ns`` an ``ns:<name>`` task
    (refused when the run is made, before anything trains)."""
    for name in ("dm", "ns"):
        if getattr(run.evaluate, name) is not None and \
                not run.config.task.startswith(f"{name}:"):
            raise _bad(f"evaluate.{name}", f"needs a task {name}:<name>, the run's task is "
                                           f"{run.config.task!r}")


# ====================================================================== resources
@dataclass(frozen=True)
class Resources:
    """What a scheduler reserves for the run (not part of its identity).

    Parameters
    ----------
    num_cpus : float > 0
        CPU cores (Ray's ``num_cpus``); the run uses ``max(1, int(num_cpus))`` torch
        threads unless ``train.threads`` says otherwise.
    num_gpus : float >= 0
        GPUs, fractional allowed (``0.25``: four small models share one device); a run
        asking for a GPU is refused before anything starts when none is present.
    max_retries : int >= 0
        How often a run whose worker died is started again (Ray executor).
    test_exit_once : str, optional
        Test only: the path of a marker file; the worker creates it and exits at once
        (``os._exit``) on the first attempt, as a killed worker would.
    """

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    max_retries: int = 2
    test_exit_once: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "num_cpus",
                           _real("resources.num_cpus", self.num_cpus, positive=True))
        object.__setattr__(self, "num_gpus",
                           _real("resources.num_gpus", self.num_gpus, nonneg=True))
        _int("resources.max_retries", self.max_retries, 0)
        if self.test_exit_once is not None and not isinstance(self.test_exit_once, str):
            raise _bad("resources.test_exit_once", "must be a path string")

    def to_dict(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, d: Mapping | None) -> "Resources":
        d = {} if d is None else d
        if not isinstance(d, Mapping):
            raise _bad("resources", f"must be a table, got {type(d).__name__}")
        _unknown("resources", d, [f.name for f in dataclasses.fields(cls)])
        return cls(**d)


# ====================================================================== the run
@dataclass(frozen=True)
class Run:
    """One unit of work: train ``config`` and evaluate the result; see the module docstring.

    Build one with :meth:`make` (sections as keywords), :meth:`from_dict`,
    :meth:`from_json` or :meth:`from_toml`. ``config.out_dir`` is always ``None`` (the
    store decides where results go).
    """

    config: TrainConfig
    evaluate: Evaluation = field(default_factory=Evaluation)
    resources: Resources = field(default_factory=Resources)

    def __post_init__(self):
        if not isinstance(self.config, TrainConfig):
            raise _bad("config", f"must be a TrainConfig, got {type(self.config).__name__}")
        if not isinstance(self.evaluate, Evaluation):
            raise _bad("evaluate", "must be an Evaluation")
        if not isinstance(self.resources, Resources):
            raise _bad("resources", "must be a Resources")
        _check_protocol_task(self)
        fix = {k: float(getattr(self.config, k)) for k in _FLOAT_FIELDS
               if isinstance(getattr(self.config, k), int)
               and not isinstance(getattr(self.config, k), bool)}
        if self.config.out_dir is not None:
            fix["out_dir"] = None
        if fix:
            object.__setattr__(self, "config", self.config.replace(**fix))

    # ------------------------------------------------------------------ views
    @property
    def model(self) -> str:
        return self.config.model

    @property
    def task(self) -> str:
        return self.config.task

    @property
    def seed(self) -> int:
        return self.config.seed

    @property
    def model_options(self) -> Mapping[str, Any]:
        return self.config.model_kwargs

    @property
    def task_options(self) -> Mapping[str, Any]:
        return self.config.task_kwargs

    # ------------------------------------------------------------------ building
    @classmethod
    def make(cls, model: str | Mapping, task: str | Mapping, *, seed: int = 0,
             model_options: Mapping | None = None, task_options: Mapping | None = None,
             train: Mapping | None = None, evaluate: Mapping | None = None,
             resources: Mapping | None = None) -> "Run":
        """A run from its sections: ``Run.make("rnn", "lf:exponential",
        model_options={"width": 8}, train={"steps": 100}, seed=1)``; ``model`` and
        ``task`` may also be ``{"name": ..., **options}`` tables."""
        m = dict(model) if isinstance(model, Mapping) else {"name": model}
        t = dict(task) if isinstance(task, Mapping) else {"name": task}
        m.update(model_options or {})
        t.update(task_options or {})
        return cls.from_dict({"seed": seed, "model": m, "task": t, "train": dict(train or {}),
                              "evaluate": dict(evaluate or {}),
                              "resources": dict(resources or {})})

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Run":
        """From the canonical dict (see the module docstring); every field is checked and
        a bad one is named by its dotted path (``train.lrr: unknown field; ...``)."""
        if not isinstance(d, Mapping):
            raise _bad("run", f"must be a table, got {type(d).__name__}")
        _unknown("", d, _SECTIONS)
        for key in ("model", "task"):
            sec = d.get(key)
            if not isinstance(sec, Mapping):
                raise _bad(key, "required table missing" if sec is None
                           else f"must be a table with a name, got {sec!r}")
            if not isinstance(sec.get("name"), str) or not sec.get("name"):
                raise _bad(f"{key}.name", f"required (a registered {key} name), "
                                          f"got {sec.get('name')!r}")
        train = d.get("train") or {}
        if not isinstance(train, Mapping):
            raise _bad("train", f"must be a table, got {type(train).__name__}")
        _unknown("train", train, TRAIN_FIELDS)
        seed = d.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise _bad("seed", f"must be an integer >= 0, got {seed!r}")
        model = {k: v for k, v in d["model"].items() if k != "name"}
        task = {k: v for k, v in d["task"].items() if k != "name"}
        try:
            config = TrainConfig(model=d["model"]["name"], task=d["task"]["name"],
                                 model_kwargs=model, task_kwargs=task, seed=seed, **train)
        except InvalidParameterError as exc:
            msg = str(exc)
            name = msg.split(":", 1)[0].split(".", 1)[0].split("[", 1)[0]
            section = {"model_kwargs": "model", "task_kwargs": "task", "model": "model.name",
                       "task": "task.name"}.get(name, f"train.{name}")
            rest = msg.split(":", 1)[1].strip() if ":" in msg else msg
            raise _bad(section, rest) from None
        return cls(config, Evaluation.from_dict(d.get("evaluate")),
                   Resources.from_dict(d.get("resources")))

    def to_dict(self, *, resources: bool = True) -> dict:
        """The canonical dict (every training field, defaults included)."""
        c = self.config.to_dict()
        out = {"seed": c["seed"],
               "model": {"name": c["model"], **c["model_kwargs"]},
               "task": {"name": c["task"], **c["task_kwargs"]},
               "train": {k: c[k] for k in TRAIN_FIELDS},
               "evaluate": self.evaluate.to_dict()}
        if resources:
            out["resources"] = self.resources.to_dict()
        return out

    def identity(self) -> dict:
        """What the hash covers: the canonical dict without resources, the format, and
        the code that computes the run (:func:`code_digest`)."""
        return {"result_format": RESULT_FORMAT, "code": code_digest(),
                "run": self.to_dict(resources=False)}

    @cached_property
    def hash(self) -> str:
        """SHA-256 (hex) of the canonical JSON of :meth:`identity`."""
        text = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"),
                          allow_nan=False, ensure_ascii=True)
        return hashlib.sha256(text.encode("ascii")).hexdigest()

    @cached_property
    def training_hash(self) -> str:
        """SHA-256 (hex) of what *training* depends on: :meth:`identity` without the
        ``evaluate`` section. Two runs with the same training hash train the same weights
        (same model, task, training options and seed), so a store trains them once and
        evaluates each (:meth:`RunStore.trained_by`)."""
        ident = self.identity()
        ident = {**ident, "run": {k: v for k, v in ident["run"].items() if k != "evaluate"}}
        text = json.dumps(ident, sort_keys=True, separators=(",", ":"), allow_nan=False,
                          ensure_ascii=True)
        return hashlib.sha256(("training:" + text).encode("ascii")).hexdigest()

    @property
    def short(self) -> str:
        """The first 12 hex digits of :attr:`hash`."""
        return self.hash[:12]

    # ------------------------------------------------------------------ JSON / TOML
    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> "Run":
        try:
            d = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise InvalidParameterError(f"run: not valid JSON ({exc})") from None
        return cls.from_dict(d)

    def to_toml_dict(self) -> dict:
        """The canonical dict as TOML can hold it: training fields equal to their defaults
        left out (TOML has no null); a model/task option ``None`` is refused by name."""
        d = self.to_dict()
        d["train"] = {k: v for k, v in d["train"].items() if v != _TRAIN_DEFAULTS[k]
                      or type(v) is not type(_TRAIN_DEFAULTS[k])}
        if not d["evaluate"]:
            del d["evaluate"]
        for section in ("model", "task", "evaluate"):
            for path, v in flatten(d.get(section, {}), section).items():
                if v is None:
                    if section == "evaluate" and path.endswith(".betas"):
                        continue
                    raise _bad(path, "None cannot be written to TOML (leave the option out "
                                     "to use the default)")
        return _drop_none(d)

    def to_toml(self) -> str:
        import tomli_w

        return tomli_w.dumps(self.to_toml_dict())

    @classmethod
    def from_toml(cls, text: str) -> "Run":
        tomllib = _tomllib()

        try:
            d = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise InvalidParameterError(f"run: not valid TOML ({exc})") from None
        return cls.from_dict(d)

    # ------------------------------------------------------------------ fields by path
    def get(self, path: str) -> Any:
        """The value at a dotted path (``"model.width"``, ``"train.lr"``, ``"seed"``)."""
        return get_path(self.to_dict(), path)

    def replace(self, **fields) -> "Run":
        """A validated copy with fields changed by dotted path; in keywords write the dots
        as ``__``: ``run.replace(train__lr=0.1, seed=2)`` or
        ``run.replace(**{"model.width": 16})``."""
        d = self.to_dict()
        for key, value in fields.items():
            set_path(d, key.replace("__", "."), value)
        return Run.from_dict(d)

    def label(self, paths=None) -> str:
        """A short human label: the given dotted fields (default model, task, seed)."""
        paths = paths or ("model.name", "task.name", "seed")
        return " ".join(f"{p.rsplit('.', 1)[-1] if p.endswith('.name') else p}="
                        f"{_short_value(self.get(p))}" for p in paths)


def _short_value(v) -> str:
    if isinstance(v, Mapping):
        name = v.get("name")
        rest = ",".join(f"{k}={x}" for k, x in v.items() if k != "name")
        return f"{name}({rest})" if name else rest
    return str(v)


def _tomllib():
    """The TOML reader: :mod:`tomllib` (Python >= 3.11), else the ``tomli`` package."""
    try:
        import tomllib
    except ImportError:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    return tomllib


def _drop_none(v):
    if isinstance(v, Mapping):
        return {k: _drop_none(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [_drop_none(x) for x in v]
    return v


_MISSING = object()


def get_path(d: Mapping, path: str, default=_MISSING):
    """``d["a"]["b"]`` for ``"a.b"``; a missing key is an error naming the path."""
    cur: Any = d
    for part in path.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            if default is not _MISSING:
                return default
            raise _bad(path, "no such field")
        cur = cur[part]
    return cur


def set_path(d: dict, path: str, value) -> None:
    """Set ``d["a"]["b"] = value`` for ``"a.b"`` (creating tables on the way)."""
    if not isinstance(path, str) or not path or any(not p for p in path.split(".")):
        raise _bad(str(path), "not a dotted field path")
    parts = path.split(".")
    cur = d
    for i, part in enumerate(parts[:-1]):
        nxt = cur.get(part)
        if nxt is None:
            nxt = cur[part] = {}
        if not isinstance(nxt, dict):
            raise _bad(path, f"{'.'.join(parts[:i + 1])} is a value, not a table")
        cur = nxt
    cur[parts[-1]] = _plain(value)


def flatten(d: Mapping, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists are values)."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key))
        else:
            out[key] = _plain(v)
    return out
