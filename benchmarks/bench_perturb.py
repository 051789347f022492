"""(d) Perturbation sweep of one checkpoint: batched (vmap) vs one perturbation at a time.

A checkpoint of the curse-of-memory model (residual RNN, diagonal softplus recurrence,
tanh, hidden 64, float64) is written and reloaded, then
:func:`rnnmem.train.perturb.perturbation_curve` sweeps 21 radii x 30 repeats of its
recurrent weights on a fixed evaluation set (256 sequences of length 100), once with
``method="batched"`` (:func:`torch.func.vmap` over stacked parameter sets) and once with
``method="loop"`` (the reference). Target: the sweep in at most 1 minute. The row also
gives the agreement of the two methods (max abs diff of the 630 losses).

A second row sweeps the *linear* model of the same size with ``method="auto"``, which
falls back to the loop when the forward cannot be vmapped (the custom autograd function of
:func:`rnnmem.models.recurrence.linear_recurrence`); the method actually used is recorded.

If :mod:`rnnmem.train.perturb` is missing, the section reports "not available".

Run alone: ``python -m benchmarks.bench_perturb [--quick]``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from ._common import measure, row, unavailable

SECTION = "d"
TARGET_S = 60.0


def _checkpoint_model(activation: str, hidden: int, tmp: Path):
    from rnnmem.models import build_model, load, save_checkpoint

    m = build_model("rnn", width=hidden, activation=activation, recurrence="softplus",
                    dtype="float64", device="cpu", seed=0)
    path = save_checkpoint(tmp / f"rnn-{activation}.pt", m)
    return load(path, device="cpu")


def _eval_set(model, n: int, T: int):
    from rnnmem.train.perturb import EvalSet

    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, T, 1, generator=g, dtype=torch.float64)
    with torch.no_grad():
        y = model(x) + 0.01 * torch.randn(n, T, 1, generator=g, dtype=torch.float64)
    return EvalSet.from_arrays(x, y, name="bench")


def run(quick: bool = False, *, tiny: bool = False) -> list[dict]:
    try:
        from rnnmem.train.perturb import perturbation_curve
    except ImportError as exc:
        return [unavailable(SECTION, "perturbation sweep batched vs loop",
                            f"rnnmem.train.perturb not available ({exc})",
                            target=f"21 radii x 30 repeats <= {TARGET_S:g} s")]
    if tiny:
        n_beta, K, H, n, T, reps = 3, 2, 4, 4, 5, 1
    else:
        n_beta, K, H, n, T, reps = 21, 30, 64, 256, 100, 1
    betas = np.linspace(0.0, 0.2, n_beta + 1)[1:]  # (n_beta,) positive, increasing
    cfg = dict(model="rnn", activation="tanh", recurrence="softplus", hidden=H,
               dtype="float64", radii=n_beta, repeats=K, eval_n=n, eval_T=T)
    rows = []
    with tempfile.TemporaryDirectory(prefix="rnnmem-bench-") as d:
        model = _checkpoint_model("tanh", H, Path(d))
        es = _eval_set(model, n, T)
        sweep = lambda method: perturbation_curve(model, es, betas, repeats=K, method=method,
                                                  seed=0)
        try:
            tb = measure(lambda: sweep("batched"), repeats=reps, warmup=0)
        except Exception as exc:
            rows.append(unavailable(SECTION, "perturbation sweep batched vs loop",
                                    f"batched failed: {type(exc).__name__}: {exc}",
                                    status="error"))
            tb = None
        tl = measure(lambda: sweep("loop"), repeats=reps, warmup=0)
        if tb is not None:
            diff = float(np.max(np.abs(tb.result.samples - tl.result.samples)))
            best = min(tb.seconds, tl.seconds)
            judge = not tiny
            rows.append(row(SECTION, "perturbation sweep batched vs loop", config=cfg,
                            timing=tb, ratio=tl.seconds / tb.seconds,
                            ratio_label="speed-up of batched",
                            target=f"<= {TARGET_S:g} s" if judge else None,
                            met=(best <= TARGET_S) if judge else None,
                            values=dict(loop_s=tl.seconds, batched_s=tb.seconds,
                                        max_abs_diff=diff,
                                        evaluations=n_beta * K + 1)))
        lin = _checkpoint_model("linear", H, Path(d))
        es_lin = _eval_set(lin, n, T)
        ta = measure(lambda: perturbation_curve(lin, es_lin, betas, repeats=K, method="auto"),
                     repeats=reps, warmup=0)
        rows.append(row(SECTION, "perturbation sweep, linear model, auto",
                        config=dict(cfg, activation="linear"), timing=ta,
                        ratio=ta.seconds / TARGET_S, ratio_label="of the 60 s target",
                        values=dict(method_used=ta.result.meta.get("method"),
                                    batched_error=ta.result.meta.get("batched_error", "")),
                        note=f"auto used {ta.result.meta.get('method')}"))
    return rows


if __name__ == "__main__":  # pragma: no cover
    import sys

    from ._common import format_table, set_threads

    set_threads(2)
    print(format_table(run(quick="--quick" in sys.argv)))
