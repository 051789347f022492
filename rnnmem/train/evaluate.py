r"""Length-generalisation evaluation of language models, across seeds and precisions.

Train on short strings, test on long ones (Delétang et al. 2023, "Neural Networks and the
Chomsky Hierarchy", ICLR; protocol of google-deepmind/neural_networks_chomsky_hierarchy:
train on lengths :math:`\le 40`, test on 41..500, accuracy reported per length), as used by
Das & Mali (2024, arXiv:2410.03154) to compare fully trained and component-frozen stack RNNs.

* :func:`evaluate_lengths` -- accuracy of one model per length bin and per length, on the
  training lengths, and the *retained performance*

  .. math:: \rho(\text{bin}) = \frac{\mathrm{acc}(\text{bin})}{\mathrm{acc}_{\text{train}}}

  (:func:`rnnmem.tasks.languages.retained_performance`), in the model's dtype or another one.
* :func:`aggregate_seeds` -- mean, spread (standard deviation, min, max) and the best of
  several :class:`LengthReport` (one per training seed).
* :func:`stack_drift` -- how far the stack contents recorded in a low precision drift from
  those of the same weights run in float64, step by step.

Accuracy follows :mod:`rnnmem.tasks.languages` (and the training task
:class:`rnnmem.tasks.language_task.LanguageTask`, whose input encoding is used: one-hot symbols
``(B, T, |alphabet|)``):

* ``"recognition"``: a string is right iff :math:`[s > 0] = y` with :math:`s` the logit read
  after the last symbol (two logits: :math:`s = \ell_1 - \ell_0`);
* ``"next_symbol"``: a string is right iff at every position the predicted set
  :math:`\{v : \ell_v > 0\}` equals the set of valid next symbols; the per-position rate is
  reported too (``position_accuracy``).

A non-finite logit (overflow in a low precision) counts as a wrong answer and is counted
in ``nonfinite``; evaluation never switches to a higher precision behind the caller's back.

Strings of one bin are drawn from a generator seeded by ``(seed, lo, hi)``, so the result is
deterministic given ``seed`` and a bin's strings do not depend on the other bins. The
``per_bin`` strings of a bin are spread evenly over at most ``lengths_per_bin`` valid
lengths (ends included). Strings of different lengths are padded with zero vectors and run
in one batch (the models are causal: padding after a string's end cannot change its
outputs); ``padded=False`` runs each length on its own (the reference path).
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Iterable, Sequence

import numpy as np
import torch

from ..errors import InvalidParameterError, ShapeError, exception_text
from ..files import to_jsonable
from ..limits import check_memory
from ..models.base import model_outputs
from ..tasks import languages as L

__all__ = ["LengthReport", "SeedAggregate", "StackDrift", "evaluate_lengths",
           "aggregate_seeds", "stack_drift", "model_in_dtype", "autocast_coverage", "MODES"]

MODES = ("next_symbol", "recognition")
_TRAIN_TAG, _TEST_TAG = 1, 2


# ============================================================================ reports
def _nan_to_none(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


@dataclass
class LengthReport:
    """Accuracy of one model over length bins (see :func:`evaluate_lengths`).

    Attributes
    ----------
    language, mode, dtype : str
    seed, per_bin : int
    train_bin : str
        The training lengths as ``"lo:hi"``.
    train_accuracy : float
        String accuracy on training lengths.
    train_n : int
    bins : list of str
        The test bins that have members, ``"lo:hi"``, in order.
    bin_accuracy, bin_n : dict bin -> float / int
    retained : dict bin -> float or None
        ``bin_accuracy / train_accuracy`` (None when ``train_accuracy`` is 0).
    long_accuracy : float
        Mean of ``bin_accuracy`` over the bins.
    retained_mean : float or None
        ``long_accuracy / train_accuracy``.
    length_accuracy, length_n : dict length -> float / int
        Per string length (training and test lengths).
    position_accuracy : dict, next-symbol mode only
        Per-position accuracy per bin and ``"train"``.
    nonfinite : int
        Number of strings with a non-finite logit (counted wrong).
    skipped_bins : list of str
        Requested bins without any member of the language.
    """

    language: str
    mode: str
    dtype: str
    seed: int
    per_bin: int
    train_bin: str
    train_accuracy: float
    train_n: int
    bins: list[str]
    bin_accuracy: dict[str, float]
    bin_n: dict[str, int]
    retained: dict[str, float | None]
    long_accuracy: float
    retained_mean: float | None
    length_accuracy: dict[int, float]
    length_n: dict[int, int]
    position_accuracy: dict[str, float] = field(default_factory=dict)
    nonfinite: int = 0
    skipped_bins: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """A JSON-serialisable dict (length keys as strings, NaN as None)."""
        d = asdict(self)
        d["length_accuracy"] = {str(k): v for k, v in self.length_accuracy.items()}
        d["length_n"] = {str(k): v for k, v in self.length_n.items()}
        return {k: (_nan_to_none(v) if not isinstance(v, dict) else
                    {kk: _nan_to_none(vv) for kk, vv in v.items()}) for k, v in d.items()}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(to_jsonable(self.to_dict()), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, d: dict) -> "LengthReport":
        d = dict(d)
        d["length_accuracy"] = {int(k): v for k, v in d["length_accuracy"].items()}
        d["length_n"] = {int(k): v for k, v in d["length_n"].items()}
        return cls(**d)

    def rows(self) -> list[dict]:
        """Table rows: the training lengths, then one per bin."""
        rows = [{"range": self.train_bin, "kind": "train", "n": self.train_n,
                 "accuracy": self.train_accuracy, "retained": 1.0 if self.train_accuracy else None}]
        for b in self.bins:
            rows.append({"range": b, "kind": "test", "n": self.bin_n[b],
                         "accuracy": self.bin_accuracy[b], "retained": self.retained[b]})
        if self.position_accuracy:
            for r in rows:
                key = "train" if r["kind"] == "train" else r["range"]
                r["position_accuracy"] = self.position_accuracy.get(key)
        return rows

    def table(self) -> str:
        """A fixed-width text table of :meth:`rows`."""
        rows = self.rows()
        pos = bool(self.position_accuracy)
        head = f"{'lengths':>9} {'kind':>5} {'n':>6} {'accuracy':>9} {'retained':>9}"
        head += f" {'pos.acc':>8}" if pos else ""
        out = [f"{self.language} ({self.mode}), dtype {self.dtype}, seed {self.seed}", head]
        for r in rows:
            ret = "-" if r["retained"] is None else f"{r['retained']:.3f}"
            line = f"{r['range']:>9} {r['kind']:>5} {r['n']:>6d} {r['accuracy']:>9.3f} {ret:>9}"
            if pos:
                pa = r.get("position_accuracy")
                line += f" {'-' if pa is None else format(pa, '.3f'):>8}"
            out.append(line)
        ret = "-" if self.retained_mean is None else f"{self.retained_mean:.3f}"
        out.append(f"long-string accuracy {self.long_accuracy:.3f}, retained {ret}"
                   + (f"; {self.nonfinite} strings with non-finite logits" if self.nonfinite
                      else "")
                   + (f"; no members in {', '.join(self.skipped_bins)}" if self.skipped_bins
                      else ""))
        return "\n".join(out)

    def to_csv(self) -> str:
        """:meth:`rows` as CSV, then one row per length (kind ``length``)."""
        buf = io.StringIO()
        cols = ["kind", "range", "n", "accuracy", "retained"]
        if self.position_accuracy:
            cols.append("position_accuracy")
        w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n", extrasaction="ignore")
        w.writeheader()
        for r in self.rows():
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})
        for n in sorted(self.length_accuracy):
            w.writerow({"kind": "length", "range": str(n), "n": self.length_n[n],
                        "accuracy": self.length_accuracy[n], "retained": ""})
        return buf.getvalue()


# ============================================================================ helpers
def _check_int(name, v, minimum=1) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise InvalidParameterError(f"{name} must be an integer >= {minimum}, got {v!r}")
    return int(v)


def model_in_dtype(model: torch.nn.Module, dtype) -> torch.nn.Module:
    """``model`` itself if it already has ``dtype``, else a copy with that dtype.

    A registered rnnmem model (``model_name`` and ``config``) is rebuilt from its config with
    the new dtype (so that states and inputs it creates follow it) and given the same
    weights, rounded to ``dtype``; any other module is deep-copied and cast. The copy is in
    eval mode.
    """
    from ..models._device import resolve_dtype

    want = resolve_dtype(dtype)
    have = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
    if have == want:
        return model
    name = getattr(model, "model_name", None)
    if name and hasattr(model, "config"):
        from ..models.registry import build_model

        dev = next(model.parameters()).device
        cfg = {**model.config, "dtype": str(want).replace("torch.", ""), "device": str(dev)}
        new = build_model(name, **cfg)
        new.load_state_dict(model.state_dict())  # copies, rounding to the new dtype
    else:
        new = copy.deepcopy(model).to(want)
    return new.eval()


def _model_dtype(model) -> torch.dtype:
    p = next((p for p in model.parameters() if p.is_floating_point()), None)
    if p is None:
        raise InvalidParameterError(f"{type(model).__name__} has no floating parameters")
    return p.dtype




def _run(model, lang, mode, groups, *, batch_size, dtype, device, padded):
    """Correctness of the strings in ``groups`` (list of sample_batch dicts).

    Returns per-string (correct (N,), lengths (N,), finite (N,)) and, for next-symbol,
    per-string (right positions, positions).
    """
    A = len(lang.alphabet)
    items = []  # (length, ids (T,), targets), one per string
    for g in groups:
        for b in range(g["x"].shape[0]):
            items.append((int(g["lengths"][b]), g["x"][b], g["y"][b]))
    items.sort(key=lambda it: -it[0])
    if padded:
        chunks = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
    else:
        by_len: dict[int, list] = {}
        for it in items:
            by_len.setdefault(it[0], []).append(it)
        chunks = [v[i:i + batch_size] for v in by_len.values()
                  for i in range(0, len(v), batch_size)]
    correct, lengths, finite, pos_ok, pos_n = [], [], [], [], []
    for chunk in chunks:
        B, T = len(chunk), chunk[0][0]
        ids = np.full((B, T), -1, dtype=np.int64)
        for b, (n, x, _) in enumerate(chunk):
            ids[b, :n] = x
        lens = np.array([c[0] for c in chunk])
        onehot = np.zeros((B, T, A))
        bb, tt = np.nonzero(ids >= 0)
        onehot[bb, tt, ids[bb, tt]] = 1.0  # padding stays the zero vector
        x = torch.as_tensor(onehot, dtype=dtype, device=device)  # (B, T, A)
        with torch.no_grad():
            out = model_outputs(model, x)
        if not isinstance(out, torch.Tensor) or out.dim() != 3 or out.shape[:2] != (B, T):
            raise ShapeError(f"model must return logits (B, T, k) = ({B}, {T}, k), got "
                             f"{tuple(getattr(out, 'shape', ()))}")
        o = out.detach().cpu().double().numpy()  # (B, T, k), exact for every dtype
        if mode == "recognition":
            if o.shape[-1] not in (1, 2):
                raise ShapeError(f"recognition needs 1 or 2 logits per step, got {o.shape[-1]}")
            last = o[np.arange(B), lens - 1]  # (B, k)
            score = last[:, 0] if last.shape[-1] == 1 else last[:, 1] - last[:, 0]
            fin = np.isfinite(score)
            y = np.array([c[2] for c in chunk], dtype=bool)
            ok = L.recognition_correct(np.where(fin, score, 0.0), y) & fin
        else:
            V = lang.n_targets
            if o.shape[-1] != V:
                raise ShapeError(f"next-symbol prediction for {lang.name!r} needs {V} logits "
                                 f"per step, got {o.shape[-1]}")
            y = np.zeros((B, T, V), dtype=bool)
            for b, (n, _, yy) in enumerate(chunk):
                y[b, :n] = yy
            mask = np.arange(T)[None, :] < lens[:, None]  # (B, T)
            fin_pos = np.all(np.isfinite(o), axis=-1) | ~mask
            fin = np.all(fin_pos, axis=1)
            o_safe = np.where(np.isfinite(o), o, 0.0)
            pos = L.next_symbol_position_correct(o_safe, y) & fin_pos & mask  # (B, T)
            ok = L.next_symbol_correct(o_safe, y, mask) & fin
            pos_ok.append(pos.sum(axis=1))
            pos_n.append(lens)
        correct.append(ok)
        lengths.append(lens)
        finite.append(fin)
    cat = np.concatenate
    return (cat(correct), cat(lengths), cat(finite),
            (cat(pos_ok), cat(pos_n)) if pos_ok else None)


def _sample(task, lengths, n_strings, rng):
    """``n_strings`` strings spread over ``lengths`` (as even as possible, in order)."""
    k = len(lengths)
    groups = []
    for i, n in enumerate(lengths):
        share = n_strings // k + (i < n_strings % k)
        if share:
            groups.append(task.sample_batch(rng, share, n))
    return groups


def _spread(lengths: Sequence[int], at_most: int | None) -> tuple[int, ...]:
    if at_most is None or len(lengths) <= at_most:
        return tuple(lengths)
    idx = np.unique(np.round(np.linspace(0, len(lengths) - 1, at_most)).astype(int))
    return tuple(lengths[i] for i in idx)


def _train_bin(language, train_lengths) -> tuple[L.LengthBin, tuple[int, ...]]:
    ls = tuple(n for n in L.train_lengths(language, train_lengths) if n >= 1)
    if not ls:
        raise InvalidParameterError(f"no training length >= 1 with members of {language.name!r}")
    return L.LengthBin(ls[0], ls[-1]), ls


# ============================================================================ evaluation
def evaluate_lengths(model: torch.nn.Module, language, *, mode: str = "next_symbol",
                     bins=L.DEFAULT_TEST_BINS, per_bin: int = 64, seed: int = 0,
                     dtype=None, batch_size: int = 64,
                     train_lengths=L.DEFAULT_TRAIN_LENGTHS, train_per_bin: int | None = None,
                     lengths_per_bin: int | None = None, neg_ratio: float = 0.5,
                     padded: bool = True) -> LengthReport:
    r"""Accuracy of ``model`` on ``language`` per length bin, and retained performance.

    .. math::

        \mathrm{acc}(\text{bin}) = \frac{1}{N}\sum_{i=1}^{N} [\text{string } i
        \text{ right}], \qquad
        \rho(\text{bin}) = \frac{\mathrm{acc}(\text{bin})}{\mathrm{acc}_{\text{train}}}

    (Delétang et al. 2023; Das & Mali 2024, arXiv:2410.03154).

    Parameters
    ----------
    model : torch.nn.Module
        Maps one-hot strings ``(B, T, |alphabet|)`` to logits ``(B, T, k)`` causally (as
        trained by ``rnnmem train --task lang:<language>``): ``k`` = 1 or 2 for
        recognition, ``|alphabet| + 1`` for next-symbol prediction.
    language : str or Language
    mode : {"next_symbol", "recognition"}
    bins : bin spec (``"41:60,61:100"`` or pairs), default 41..500 in five bins
        Bins without members of the language are skipped (listed in ``skipped_bins``); if
        none has a member, InvalidParameterError.
    per_bin : int
        Strings per test bin.
    seed : int
    dtype : dtype or name, optional
        Run in this precision (a copy of the model, :func:`model_in_dtype`); default the
        model's own. Never upcast silently: a dtype the device cannot run raises
        InvalidParameterError naming it.
    batch_size : int
    train_lengths : lengths or spec, default 1..40
        The training lengths, for :math:`\mathrm{acc}_{\text{train}}`.
    train_per_bin : int, optional
        Strings on the training lengths (default ``per_bin``).
    lengths_per_bin : int, optional
        At most this many distinct lengths per bin (evenly spaced); default ``per_bin``.
    neg_ratio : float
        Fraction of negatives (recognition).
    padded : bool
        Batch strings of different lengths with zero padding (fast); False runs every
        length separately (reference).

    Returns
    -------
    LengthReport
    """
    lang = L.get_language(language)
    if mode not in MODES:
        raise InvalidParameterError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    per_bin = _check_int("per_bin", per_bin)
    batch_size = _check_int("batch_size", batch_size)
    seed = _check_int("seed", seed, minimum=0)
    train_per_bin = per_bin if train_per_bin is None else _check_int("train_per_bin",
                                                                     train_per_bin)
    if lengths_per_bin is not None:
        lengths_per_bin = _check_int("lengths_per_bin", lengths_per_bin)
    if not isinstance(model, torch.nn.Module):
        raise InvalidParameterError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    width = getattr(model, "input_dim", None)
    if isinstance(width, int) and width != len(lang.alphabet):
        raise ShapeError(f"model reads {width} input symbols but {lang.name!r} has "
                         f"{len(lang.alphabet)} ({''.join(lang.alphabet)})")
    requested = L.length_bins(bins)
    longest = max(b.hi for b in requested)
    # a floor for the allocation: one batch of the longest strings, one-hot inputs, targets
    # and outputs in float64 (before any string is generated)
    check_memory(8.0 * min(per_bin, batch_size) * longest * (len(lang.alphabet) + 1) * 4,
                 f"{min(per_bin, batch_size)} strings of length {longest}",
                 "use shorter length bins or a smaller per_bin/batch_size")
    per = L.bin_lengths(lang, requested)  # bins with members only
    if not per:
        raise InvalidParameterError(
            f"language {lang.name!r} has no member at any length in "
            f"{', '.join(map(str, requested))} ({lang.length_rule})")
    skipped = [str(b) for b in requested if b not in per]
    train_bin, train_ls = _train_bin(lang, train_lengths)

    was_training = model.training
    dtype = _model_dtype(model) if dtype is None else dtype
    run_model = model_in_dtype(model, dtype)
    run_dtype = _model_dtype(run_model)
    device = next(run_model.parameters()).device
    task = (L.RecognitionTask(lang, neg_ratio=neg_ratio) if mode == "recognition"
            else L.NextSymbolTask(lang))
    at_most = per_bin if lengths_per_bin is None else min(per_bin, lengths_per_bin)

    def measure(lengths, n, tag, b):
        rng = np.random.default_rng([seed, tag, b.lo, b.hi])
        groups = _sample(task, _spread(lengths, at_most), n, rng)
        try:
            return _run(run_model, lang, mode, groups, batch_size=batch_size,
                        dtype=run_dtype, device=device, padded=padded)
        except (RuntimeError, NotImplementedError) as exc:
            if run_dtype not in (torch.float16, torch.bfloat16):
                raise
            msg = exception_text(exc)
            raise InvalidParameterError(
                f"dtype {str(run_dtype).replace('torch.', '')} does not run on "
                f"{device.type} for {type(model).__name__}: {msg}") from None

    run_model.eval()
    try:
        tr = measure(train_ls, train_per_bin, _TRAIN_TAG, train_bin)
        te = {b: measure(ls, per_bin, _TEST_TAG, b) for b, ls in per.items()}
    finally:
        model.train(was_training)

    train_acc = float(np.mean(tr[0]))
    bin_acc = {str(b): float(np.mean(r[0])) for b, r in te.items()}
    bin_n = {str(b): int(r[0].size) for b, r in te.items()}
    long_acc = float(np.mean(list(bin_acc.values())))
    if train_acc > 0:
        retained = {k: float(v) for k, v in L.retained_performance(bin_acc, train_acc).items()}
        retained_mean = long_acc / train_acc
    else:
        retained, retained_mean = {k: None for k in bin_acc}, None
    all_ok = np.concatenate([tr[0]] + [r[0] for r in te.values()])
    all_len = np.concatenate([tr[1]] + [r[1] for r in te.values()])
    length_acc, length_n = {}, {}
    for n in np.unique(all_len).tolist():
        sel = all_len == n
        length_acc[int(n)] = float(np.mean(all_ok[sel]))
        length_n[int(n)] = int(sel.sum())
    pos = {}
    if mode == "next_symbol":
        pos["train"] = float(tr[3][0].sum() / tr[3][1].sum())
        for b, r in te.items():
            pos[str(b)] = float(r[3][0].sum() / r[3][1].sum())
    nonfinite = int(sum(int((~r[2]).sum()) for r in [tr, *te.values()]))
    return LengthReport(
        language=lang.name, mode=mode, dtype=str(run_dtype).replace("torch.", ""), seed=seed,
        per_bin=per_bin, train_bin=str(train_bin), train_accuracy=train_acc,
        train_n=int(tr[0].size), bins=list(bin_acc), bin_accuracy=bin_acc, bin_n=bin_n,
        retained=retained, long_accuracy=long_acc, retained_mean=retained_mean,
        length_accuracy=length_acc, length_n=length_n, position_accuracy=pos,
        nonfinite=nonfinite, skipped_bins=skipped)


# ============================================================================ seeds
def _stats(values: Iterable) -> dict:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0, "values": []}
    a = np.asarray(vals)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if a.size > 1 else 0.0,
            "min": float(a.min()), "max": float(a.max()), "n": int(a.size), "values": vals}


@dataclass
class SeedAggregate:
    """Mean and spread over seeds (:func:`aggregate_seeds`).

    Each entry of ``train_accuracy``, ``long_accuracy``, ``retained_mean`` and of the per-bin
    dicts ``bin_accuracy`` / ``retained`` is ``{"mean", "std" (sample, ddof=1; 0 for one
    seed), "min", "max", "n", "values"}`` (undefined values, e.g. retained performance at
    zero training accuracy, are left out and ``n`` says how many remain). ``best`` is the
    index (into the reports) of the model with the highest long-string accuracy, ties
    broken by training accuracy, then by order.
    """

    language: str
    mode: str
    dtype: str
    bins: list[str]
    seeds: list[int]
    train_accuracy: dict
    long_accuracy: dict
    retained_mean: dict
    bin_accuracy: dict[str, dict]
    retained: dict[str, dict]
    best: int
    best_report: dict

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(to_jsonable(self.to_dict()), indent=indent, allow_nan=False)


def aggregate_seeds(reports: Sequence[LengthReport]) -> SeedAggregate:
    """Mean, spread (std, min, max) and best of reports of the same evaluation.

    Raises InvalidParameterError for an empty list or reports of different languages,
    modes or bins.
    """
    reports = list(reports)
    if not reports:
        raise InvalidParameterError("aggregate_seeds needs at least one report")
    for r in reports:
        if not isinstance(r, LengthReport):
            raise InvalidParameterError(f"expected LengthReport, got {type(r).__name__}")
    first = reports[0]
    for r in reports[1:]:
        for key in ("language", "mode", "bins"):
            if getattr(r, key) != getattr(first, key):
                raise InvalidParameterError(
                    f"reports differ in {key}: {getattr(first, key)!r} vs {getattr(r, key)!r}")
    best = max(range(len(reports)),
               key=lambda i: (reports[i].long_accuracy, reports[i].train_accuracy, -i))
    dtypes = sorted({r.dtype for r in reports})
    return SeedAggregate(
        language=first.language, mode=first.mode, dtype=",".join(dtypes),
        bins=list(first.bins), seeds=[r.seed for r in reports],
        train_accuracy=_stats(r.train_accuracy for r in reports),
        long_accuracy=_stats(r.long_accuracy for r in reports),
        retained_mean=_stats(r.retained_mean for r in reports),
        bin_accuracy={b: _stats(r.bin_accuracy[b] for r in reports) for b in first.bins},
        retained={b: _stats(r.retained[b] for r in reports) for b in first.bins},
        best=int(best), best_report=reports[best].to_dict())


# ============================================================================ precision
@dataclass
class StackDrift:
    r"""Drift of low-precision stack contents from float64 (:func:`stack_drift`).

    For each dtype :math:`p` and step :math:`t` (arrays of length ``T``),

    .. math::

        \delta_p(t) = \max_{b,k,d,w} \big|S^{(p)}_t - S^{(64)}_t\big|, \qquad
        \bar\delta_p(t) = \Big(\operatorname{mean}_{b,k,d,w}
        \big(S^{(p)}_t - S^{(64)}_t\big)^2\Big)^{1/2},

    over the stack cells (superposition: the cell values; stratification: the values and
    strengths), likewise ``reads`` (the vector read at each step) and ``logits``.

    Attributes
    ----------
    steps : (T,) int array, 1-based step index
    stack_max, stack_rms, reads_max, logits_max : dict dtype -> (T,) float64 array
    reference_scale : (T,) max |S^(64)_t|
    unsupported : dict dtype -> reason (dtypes that did not run on the device)
    """

    steps: np.ndarray
    stack_max: dict[str, np.ndarray]
    stack_rms: dict[str, np.ndarray]
    reads_max: dict[str, np.ndarray]
    logits_max: dict[str, np.ndarray]
    reference_scale: np.ndarray
    unsupported: dict[str, str]

    def to_dict(self) -> dict:
        conv = {k: {d: v.tolist() for d, v in getattr(self, k).items()}
                for k in ("stack_max", "stack_rms", "reads_max", "logits_max")}
        return {"steps": self.steps.tolist(), **conv,
                "reference_scale": self.reference_scale.tolist(),
                "unsupported": dict(self.unsupported)}


_CONTENT_KEYS = {"superposition": ("stack",), "stratification": ("values", "strengths")}


def stack_drift(model: torch.nn.Module, inputs, dtypes=("float16", "bfloat16", "float32")
                ) -> StackDrift:
    """Run the same weights in each of ``dtypes`` and in float64; compare the stacks.

    Parameters
    ----------
    model : StackRNN with a stack (``record_stack=True`` support)
    inputs : int ids (B, T) or float codes (B, T, vocab) (cast exactly to each dtype)
    dtypes : dtypes or names

    Returns
    -------
    StackDrift
        A dtype the device cannot run is listed in ``unsupported`` with the error, never
        replaced by another precision.
    """
    from ..models._device import resolve_dtype

    kind = getattr(model, "stack_kind", None)
    if kind not in _CONTENT_KEYS or not getattr(model, "has_stack", False):
        raise InvalidParameterError(f"{type(model).__name__} has no stack to record "
                                    f"(stack kind {kind!r})")
    x = inputs if isinstance(inputs, torch.Tensor) else torch.as_tensor(np.asarray(inputs))
    if x.dim() not in (2, 3) or x.shape[1] < 1:
        raise ShapeError(f"inputs must be ids (B, T) or codes (B, T, vocab), got {tuple(x.shape)}")
    if x.is_floating_point() and not torch.isfinite(x).all():
        from ..errors import NonFiniteError

        raise NonFiniteError("inputs contain NaN or inf")
    names = [str(resolve_dtype(d)).replace("torch.", "") for d in dtypes]
    if not names:
        raise InvalidParameterError("give at least one dtype")

    def record(dt):
        m = model_in_dtype(model, dt)
        xx = x.to(resolve_dtype(dt)) if x.is_floating_point() else x
        with torch.no_grad():
            logits, trace = m(xx.to(next(m.parameters()).device), record_stack=True)
        content = torch.cat([trace[k].reshape(trace[k].shape[0], trace[k].shape[1], -1)
                             for k in _CONTENT_KEYS[kind]], dim=-1)  # (B, T, cells)
        return (content.double().cpu(), trace["reads"].double().cpu(),
                logits.double().cpu())

    ref = record("float64")
    T = ref[0].shape[1]

    def per_step_max(a, b):  # (B, T, n) -> (T,)
        return (a - b).abs().amax(dim=(0, 2)).numpy()

    out = {k: {} for k in ("stack_max", "stack_rms", "reads_max", "logits_max")}
    unsupported = {}
    for nm in names:
        try:
            got = record(nm)
        except (RuntimeError, NotImplementedError) as exc:
            unsupported[nm] = exception_text(exc)
            continue
        out["stack_max"][nm] = per_step_max(got[0], ref[0])
        out["stack_rms"][nm] = (got[0] - ref[0]).square().mean(dim=(0, 2)).sqrt().numpy()
        out["reads_max"][nm] = per_step_max(got[1], ref[1])
        out["logits_max"][nm] = per_step_max(got[2], ref[2])
    return StackDrift(steps=np.arange(1, T + 1), **out,
                      reference_scale=ref[0].abs().amax(dim=(0, 2)).numpy(),
                      unsupported=unsupported)


def autocast_coverage(model: torch.nn.Module, inputs, dtype) -> dict[str, str]:
    """The dtype each leaf submodule computes in under :func:`torch.autocast` to ``dtype``.

    Mixed-precision training (:class:`rnnmem.train.TrainConfig` with ``dtype="float16"`` or
    ``"bfloat16"``) keeps float32 parameters and lowers only the operations autocast lists
    for the device; on CPU, for instance, ``LSTMCell`` and ``GRUCell`` stay in float32.
    This runs ``model(inputs)`` once under autocast on the inputs' device and returns, for
    every leaf module that was called, the dtype of its (first) floating output, e.g.
    ``{"controller.cell": "float32", "classifier": "float16", ...}``. Modules whose weights
    are used without calling the module (fused kernels) do not appear.
    """
    from ..models._device import resolve_dtype

    want = resolve_dtype(dtype)
    x = inputs if isinstance(inputs, torch.Tensor) else torch.as_tensor(np.asarray(inputs))
    seen: dict[str, str] = {}
    hooks = []

    def hook(name):
        def fn(mod, args, out):
            o = out[0] if isinstance(out, (tuple, list)) else out
            if isinstance(o, torch.Tensor) and o.is_floating_point() and name not in seen:
                seen[name] = str(o.dtype).replace("torch.", "")
        return fn

    for name, mod in model.named_modules():
        if name and next(mod.children(), None) is None:
            hooks.append(mod.register_forward_hook(hook(name)))
    try:
        with torch.no_grad(), torch.autocast(x.device.type, dtype=want):
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return seen
