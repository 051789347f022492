"""``Protocol``: a named family of runs, its budgets and its analysis.

A protocol is a base :class:`~rnnmem.experiments.run.Run`, a *grid* (ordered axes, each a
dotted field path and its values; the runs are the Cartesian product, first axis slowest),
*budgets* (named sizes: ``smoke``, ``quick``, ``full``, or any other name such as
``medium``; each sets fields of the base run and may replace or add grid axes) and the name
of a registered *analysis* (a function of the results: tables, figures, verdicts).

From Python::

    p = Protocol("widths", base=Run.make("rnn", "lf:exponential", ...),
                 grid={"model.width": [8, 16, 32, 64], "seed": [0, 1]},
                 budgets={"smoke": {"set": {"train.steps": 20}},
                          "full": {"set": {"train.steps": 6000}, "grid": {"seed": [0, 1, 2]}}})
    p.at("smoke").runs()                     # the runs at a budget
    p.vary(train__lr=[1e-3, 1e-2])           # the ablation of one factor (a new axis)
    p.vary(**{"model.activation": "tanh"})   # one factor changed everywhere

From a TOML file (:func:`load_protocol`)::

    name = "widths"
    description = "memory of trained linear RNNs by width"
    analysis = "summary"
    default_budget = "smoke"

    [run]                       # the base run (sections as in a Run's TOML)
    seed = 0
    [run.model]
    name = "rnn"
    width = 8
    [run.task]
    name = "lf:exponential"
    [run.train]
    steps = 50

    [grid]                      # axes: dotted path = [values]
    "model.width" = [8, 16, 32, 64]
    seed = [0, 1]

    [budgets.full.set]          # fields of the base run at this budget
    "train.steps" = 6000
    [budgets.full.grid]         # axes replaced (or added) at this budget
    seed = [0, 1, 2]

A *joint axis* names several fields joined by ``+`` and takes their values together, one
list per grid point: ``"model.stack+train.freeze" = [["superposition", "none"],
["superposition", "memory"], ["none", "none"]]`` (variants that are not a product of
fields; a whole ``model`` or ``task`` table may be one of the fields).

A mistyped or unknown field is reported with its line (``widths.toml:12: run.train.lrr:
unknown field; ...``) before any run starts.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..errors import InvalidParameterError, UnknownNameError
from .run import Run, _plain, flatten, set_path

__all__ = ["Protocol", "load_protocol", "locate", "STANDARD_BUDGETS"]

STANDARD_BUDGETS = ("smoke", "quick", "full")
_PROTOCOL_KEYS = ("name", "description", "analysis", "default_budget", "run", "grid",
                  "budgets")
_BUDGET_KEYS = ("set", "grid")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+:=,\-]*$")


def _bad(path: str, msg: str) -> InvalidParameterError:
    err = InvalidParameterError(f"{path}: {msg}")
    err.field = path
    return err


def _axes(grid, where: str) -> tuple[tuple[str, tuple], ...]:
    if grid is None:
        return ()
    items = grid.items() if isinstance(grid, Mapping) else grid
    out = []
    try:
        items = list(items)
    except TypeError:
        raise _bad(where, "must map dotted field paths to lists of values") from None
    for item in items:
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise _bad(where, "must map dotted field paths to lists of values")
        path, values = item
        path = str(path).replace("__", ".")
        if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple)):
            raise _bad(f"{where}.{path}", f"a grid axis needs a list of values, got {values!r}")
        if not values:
            raise _bad(f"{where}.{path}", "a grid axis needs at least one value")
        if "+" in path:  # a joint axis: each value sets every field it names
            k = len(path.split("+"))
            for v in values:
                if isinstance(v, (str, bytes)) or not isinstance(v, (list, tuple)) \
                        or len(v) != k:
                    raise _bad(f"{where}.{path}", f"a joint axis of {k} fields needs "
                                                  f"lists of {k} values, got {v!r}")
        out.append((path, tuple(_plain(v) for v in values)))
    paths = [p for p, _ in out]
    dup = sorted({p for p in paths if paths.count(p) > 1})
    if dup:
        raise _bad(f"{where}.{dup[0]}", "axis given twice")
    return tuple(out)


def _budget(name: str, spec) -> dict:
    where = f"budgets.{name}"
    if not isinstance(spec, Mapping):
        raise _bad(where, "must be a table with 'set' and/or 'grid'")
    extra = sorted(set(spec) - set(_BUDGET_KEYS))
    if extra:
        raise _bad(f"{where}.{extra[0]}", "unknown field; known: grid, set")
    sets = spec.get("set") or {}
    if not isinstance(sets, Mapping):
        raise _bad(f"{where}.set", "must map dotted field paths to values")
    return {"set": {k.replace("__", "."): _plain(v) for k, v in sets.items()},
            "grid": _axes(spec.get("grid"), f"{where}.grid")}


@dataclass(frozen=True)
class Protocol:
    """A named family of runs: base run, grid, budgets, analysis. See the module docstring.

    Parameters
    ----------
    name : str
    base : Run
    grid : mapping or sequence of ``(dotted path, values)``
        Axes in order (the first varies slowest).
    analysis : str
        Name of a registered analysis (:func:`register_analysis`), default ``"summary"``.
    budgets : mapping ``name -> {"set": {path: value}, "grid": {path: values}}``
    description : str
    default_budget : str, optional
        The budget :meth:`runs` uses when none was applied (``None``: the base as is).
    budget : str, optional
        The budget already applied (set by :meth:`at`).
    source : str, optional
        The file the protocol was read from (for messages).
    """

    name: str
    base: Run
    grid: Any = ()
    analysis: str = "summary"
    budgets: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    default_budget: str | None = None
    budget: str | None = None
    source: str | None = field(default=None, compare=False)

    def __post_init__(self):
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise _bad("name", f"must be a name of letters, digits and -_.+:=, "
                               f"got {self.name!r}")
        if not isinstance(self.base, Run):
            raise _bad("run", f"must be a Run, got {type(self.base).__name__}")
        object.__setattr__(self, "grid", _axes(self.grid, "grid"))
        if not isinstance(self.analysis, str) or not self.analysis:
            raise _bad("analysis", f"must be the name of a registered analysis, "
                                   f"got {self.analysis!r}")
        if not isinstance(self.budgets, Mapping):
            raise _bad("budgets", "must be a table of budgets")
        budgets = {}
        for name, spec in self.budgets.items():
            if not isinstance(name, str) or not _NAME.match(name):
                raise _bad("budgets", f"bad budget name {name!r}")
            budgets[name] = _budget(name, spec)
        object.__setattr__(self, "budgets", budgets)
        if self.default_budget is not None and self.default_budget not in budgets:
            raise _bad("default_budget", f"{self.default_budget!r} is not one of the "
                                         f"budgets ({', '.join(budgets) or 'none'})")
        if self.budget is not None and self.budget not in budgets:
            raise _bad("budget", f"{self.budget!r} is not a budget of {self.name!r}")
        # every axis value must give a valid run: fail before anything runs
        for path, values in self.grid:
            for v in values:
                self._apply(self.base.to_dict(), {path: v}, where="grid")

    # ------------------------------------------------------------------ sizes
    def at(self, budget: str) -> "Protocol":
        """This protocol at a budget: the budget's fields set on the base run and its axes
        replacing (or joining) the grid's."""
        if budget == self.budget:
            return self
        if self.budget is not None:
            raise _bad("budget", f"{self.name!r} is already at budget {self.budget!r}")
        if budget not in self.budgets:
            raise UnknownNameError(f"budget of protocol {self.name!r}", budget,
                                   list(self.budgets))
        spec = self.budgets[budget]
        base = self._apply(self.base.to_dict(), spec["set"], where=f"budgets.{budget}.set")
        grid = dict(self.grid)
        grid.update(dict(spec["grid"]))
        return Protocol(self.name, base, tuple(grid.items()), self.analysis, self.budgets,
                        self.description, self.default_budget, budget, self.source)

    def budget_names(self) -> list[str]:
        return list(self.budgets)

    # ------------------------------------------------------------------ ablations
    def vary(self, **fields) -> "Protocol":
        """The protocol with one factor (or a few) changed.

        A list value makes (or replaces) a grid axis; any other value sets the field on
        the base run (and drops an axis over it). Dotted paths are written with ``__`` in
        keywords (``vary(model__width=[8, 16])``) or passed as ``**{"a.b": v}``. The
        name records the change (``name+train.lr=0.1``)."""
        if not fields:
            raise _bad("vary", "give at least one field")
        base = self.base.to_dict()
        grid = dict(self.grid)
        tags = []
        for key, value in fields.items():
            path = key.replace("__", ".")
            if isinstance(value, (list, tuple)):
                grid[path] = tuple(_plain(v) for v in value)
                tags.append(f"{path}=[{','.join(map(str, value))}]")
            else:
                set_path(base, path, value)
                grid.pop(path, None)
                tags.append(f"{path}={value}")
        name = f"{self.name}+{'+'.join(tags)}"
        if not _NAME.match(name):
            name = re.sub(r"[^A-Za-z0-9_.+:=,\-]", "_", name)
        return Protocol(name, self._apply(base, {}, where="vary"), tuple(grid.items()),
                        self.analysis, self.budgets, self.description, self.default_budget,
                        self.budget, self.source)

    # ------------------------------------------------------------------ expansion
    def runs(self) -> list[Run]:
        """Every run of the grid (at the default budget if no budget was applied), first
        axis slowest; repeated runs (same hash) kept once."""
        p = self if self.budget is not None or self.default_budget is None \
            else self.at(self.default_budget)
        base = p.base.to_dict()
        paths = [a for a, _ in p.grid]
        out, seen = [], set()
        for combo in itertools.product(*[v for _, v in p.grid]):
            run = p._apply(base, dict(zip(paths, combo)), where="grid")
            if run.hash not in seen:
                seen.add(run.hash)
                out.append(run)
        return out

    def __len__(self) -> int:
        return len(self.runs())

    def axes(self) -> list[str]:
        """The dotted paths of the grid (at the default budget)."""
        p = self if self.budget is not None or self.default_budget is None \
            else self.at(self.default_budget)
        return [a for a, _ in p.grid]

    def _apply(self, base: dict, values: Mapping[str, Any], *, where: str) -> Run:
        import copy

        d = copy.deepcopy(base)
        for path, v in values.items():
            parts = list(zip(path.split("+"), v)) if "+" in path else [(path, v)]
            for part, x in parts:
                if part in ("model", "task") and isinstance(x, Mapping):
                    d[part] = _plain(x)  # a whole variant (name and options) replaces it
                else:
                    set_path(d, part, x)
        try:
            return Run.from_dict(d)
        except InvalidParameterError as exc:
            fld = getattr(exc, "field", None)
            if where.startswith("budgets") or where == "grid":
                for path in values:
                    if fld and (fld == path or fld.startswith(path + ".")
                                or path.startswith(fld + ".")):
                        err = _bad(f"{where}.{path}", str(exc).split(": ", 1)[-1])
                        err.field = f"{where}.{path}" if fld == path else f"{where}.{path}"
                        err.run_field = fld
                        raise err from None
            err = _bad(f"run.{fld}" if fld else "run", str(exc).split(": ", 1)[-1])
            err.run_field = fld
            raise err from None

    # ------------------------------------------------------------------ results
    def execute(self, *, budget: str | None = None, store=None, executor="local",
                jobs: int = 1, progress: bool = True):
        """Run every run not yet in ``store`` and return the
        :class:`~rnnmem.experiments.store.Results` (see :func:`rnnmem.experiments.execute`)."""
        from .executors import execute

        p = self.at(budget) if budget is not None else self
        return execute(p, store=store, executor=executor, jobs=jobs, progress=progress)

    def check(self) -> None:
        """Build every distinct model configuration of every budget (on the CPU) so that a
        bad model option fails now, named (``exc.option``), not when its run starts."""
        from .executors import validate_runs

        for budget in [None] + list(self.budgets):
            p = self if budget is None else self.at(budget) if self.budget is None else None
            if p is not None:
                validate_runs(p.runs())

    def analyse(self, results):
        """The registered analysis applied to ``results``."""
        from .analyses import get_analysis

        return get_analysis(self.analysis)(results)

    # ------------------------------------------------------------------ TOML
    def to_dict(self) -> dict:
        d: dict[str, Any] = {"name": self.name}
        if self.description:
            d["description"] = self.description
        d["analysis"] = self.analysis
        if self.default_budget is not None:
            d["default_budget"] = self.default_budget
        d["run"] = self.base.to_toml_dict()
        d["grid"] = {p: list(v) for p, v in self.grid}
        if self.budgets:
            d["budgets"] = {n: {**({"set": dict(b["set"])} if b["set"] else {}),
                                **({"grid": {p: list(v) for p, v in b["grid"]}}
                                   if b["grid"] else {})}
                            for n, b in self.budgets.items()}
        return d

    def to_toml(self) -> str:
        """The protocol as a TOML file (:func:`load_protocol` reads it back). A protocol
        already at a budget is written with that budget applied and no budgets."""
        import tomli_w

        d = self.to_dict()
        if self.budget is not None:
            d.pop("budgets", None)
            d.pop("default_budget", None)
        return tomli_w.dumps(_toml_ready(d))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, source: str | None = None) -> "Protocol":
        if not isinstance(d, Mapping):
            raise _bad("protocol", "must be a table")
        extra = sorted(set(d) - set(_PROTOCOL_KEYS))
        if extra:
            raise _bad(extra[0], f"unknown protocol field; known: {', '.join(_PROTOCOL_KEYS)}")
        if "run" not in d:
            raise _bad("run", "required table missing (the base run)")
        try:
            base = Run.from_dict(d["run"])
        except InvalidParameterError as exc:
            fld = getattr(exc, "field", None)
            err = _bad(f"run.{fld}" if fld else "run", str(exc).split(": ", 1)[-1])
            raise err from None
        budgets = d.get("budgets") or {}
        if not isinstance(budgets, Mapping):
            raise _bad("budgets", "must be a table of budgets")
        grid = d.get("grid") or {}
        if not isinstance(grid, Mapping):
            raise _bad("grid", "must map dotted field paths to lists of values")
        return cls(name=d.get("name", ""), base=base, grid=_grid_from_toml(grid, "grid"),
                   analysis=d.get("analysis", "summary"),
                   budgets={n: _budget_from_toml(n, b) for n, b in budgets.items()},
                   description=d.get("description", ""),
                   default_budget=d.get("default_budget"), source=source)

    @classmethod
    def from_toml(cls, text: str, *, source: str = "<protocol>",
                  check_models: bool = True) -> "Protocol":
        """Read a protocol from TOML text; errors carry ``source:LINE``. With
        ``check_models`` every distinct model configuration of every budget is built once
        (:meth:`check`), so that a mistyped model option is found with its line too."""
        from .run import _tomllib

        tomllib = _tomllib()

        try:
            d = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise InvalidParameterError(f"{source}: not valid TOML: {exc}") from None
        try:
            p = cls.from_dict(d, source=source)
            if check_models:
                p.check()
            return p
        except InvalidParameterError as exc:
            fld = getattr(exc, "field", None)
            line = locate(text, fld) if fld else None
            if getattr(exc, "option", None):
                line = _option_line(text, exc.option, getattr(exc, "value", None)) or line
            if line is None and getattr(exc, "run_field", None):
                line = locate(text, f"run.{exc.run_field}")
            where = f"{source}:{line}" if line else source
            err = InvalidParameterError(f"{where}: {exc}")
            err.field, err.line = fld, line
            raise err from None


def _budget_from_toml(name: str, b):
    """A budget table as read from TOML: nested ``set`` tables flattened to dotted
    paths, nested ``grid`` tables to axes (other keys kept, so that they are refused)."""
    if not isinstance(b, Mapping):
        return b
    out = dict(b)
    if isinstance(b.get("set"), Mapping):
        out["set"] = flatten(b["set"])
    if isinstance(b.get("grid"), Mapping):
        out["grid"] = _grid_from_toml(b["grid"], f"budgets.{name}.grid")
    return out


def _grid_from_toml(grid: Mapping, where: str) -> list:
    """Nested TOML tables down to lists: ``{"model": {"width": [..]}}`` ->
    ``[("model.width", [..])]``."""
    out = []
    for k, v in grid.items():
        if isinstance(v, Mapping):
            out += [(f"{k}.{p}", x) for p, x in _grid_from_toml(v, f"{where}.{k}")]
        else:
            out.append((k, v))
    return out


def _toml_ready(v):
    if isinstance(v, Mapping):
        return {k: _toml_ready(x) for k, x in v.items() if x is not None}
    if isinstance(v, (list, tuple)):
        return [_toml_ready(x) for x in v]
    return v


# ====================================================================== line numbers
_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*((?:\"[^\"]*\"|'[^']*'|[A-Za-z0-9_\-]+)"
                  r"(?:\s*\.\s*(?:\"[^\"]*\"|'[^']*'|[A-Za-z0-9_\-]+))*)\s*=")
_PART = re.compile(r"\"([^\"]*)\"|'([^']*)'|([A-Za-z0-9_\-]+)")


def _parts(key: str) -> list[str]:
    """Key parts of a TOML dotted key; a quoted part that holds dots is split too (grid
    axes are written ``"model.width" = [...]``)."""
    out = []
    for m in _PART.finditer(key):
        quoted = m.group(1) if m.group(1) is not None else m.group(2)
        out += quoted.split(".") if quoted is not None else [m.group(3)]
    return out


def locate(text: str, path: str) -> int | None:
    """The 1-based line of ``text`` (TOML) that defines the dotted ``path``, or of its
    nearest enclosing key or table; ``None`` when nothing matches."""
    want = path.split(".")
    best, best_len = None, 0
    table: list[str] = []
    for no, line in enumerate(text.splitlines(), 1):
        m = _HEADER.match(line)
        if m and not _KEY.match(line):
            table = _parts(m.group(1))
            full = table
        else:
            k = _KEY.match(line)
            if not k:
                continue
            full = table + _parts(k.group(1))
        n = 0
        while n < min(len(full), len(want)) and full[n] == want[n]:
            n += 1
        if n == len(full) and n > best_len:  # the line's key is a prefix of the path
            best, best_len = no, n
            if n == len(want):
                return no
    return best


def _option_line(text: str, option: str, value=None) -> int | None:
    """The line that sets model option ``option`` (a key, also in an inline table or a
    grid axis ``"model.<option>"``); with ``value``, preferably the line that holds it."""
    pat = re.compile(r"(^|[{,.\s\"'])" + re.escape(option) + r"[\"']?\s*=")
    found = [no for no, line in enumerate(text.splitlines(), 1)
             if pat.search(line.split("#", 1)[0])]
    if value is not None:
        lines = text.splitlines()
        tok = re.compile(r"(?<![\w.])" + re.escape(str(value)) + r"(?![\w.])")
        for no in found:
            if tok.search(lines[no - 1].split("=", 1)[-1]):
                return no
    return found[0] if found else None


def load_protocol(path: str | Path) -> Protocol:
    """Read a protocol file; errors name the file and line."""
    from ..files import storage_error

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise storage_error(exc, path, "read") from None
    return Protocol.from_toml(text, source=str(path))
