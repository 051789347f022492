"""(g) Your own model: the cost of the amplitude search of Def. 3.1.

``rnnmem.memory_function(module, t, dt=1.0)`` takes the supremum of Wang, Li & Li (ICLR
2024, Def. 3.1) over amplitudes as well as directions: the default grid
(:data:`rnnmem.numerics.DEFAULT_AMPLITUDES`, 10 thirds of a decade) in one batched call and
one refinement round around each arg-sup (one more call). This measures, in one run and on
the same module, that estimate against the single-amplitude one (``amplitudes=[1.0]``),
both with the warm-up, baseline and checks, and reports their ratio of CPU times (the
headline: :func:`time.process_time` of this process, which the other processes sharing
the machine disturb far less than the wall clock; the wall ratio is in the values). The
literal estimator (:func:`rnnmem.numerics.memory_function` on the adapted module: no
warm-up, no checks) is timed too. The cost is linear in the probe rows for a cheap model
(nn.LSTM's fused kernel) and closer to linear in the calls for a slower one.

Target (issue 12): at T = 1024 with the default grid, at most 3x the single-amplitude
estimate. Models: ``nn.GRU``, ``nn.LSTM`` and ``nn.RNN(tanh)`` with a Linear readout
(d = 1, hidden 32, float32, as a user builds them).

Run alone: ``python -m benchmarks.bench_amplitude [--quick]``.
"""

from __future__ import annotations

import numpy as np

from ._common import measure, row

SECTION = "g"
TARGET_T = 1024
TARGET_RATIO = 3.0


def _model(kind: str, hidden: int, seed: int = 0):
    import torch

    class Headed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = getattr(torch.nn, kind)(1, hidden, batch_first=True,
                                               dtype=torch.float32)
            self.head = torch.nn.Linear(hidden, 1, dtype=torch.float32)

        def forward(self, x):
            return self.head(self.rnn(x)[0])

    torch.manual_seed(seed)
    return Headed()


def rows_for(kinds, T: int, hidden: int, reps: int, budget_s: float) -> list[dict]:
    import rnnmem
    from rnnmem.models.adapt import adapt
    from rnnmem.numerics import memory_function as literal

    rows = []
    t = np.arange(float(T))
    for kind in kinds:
        m = _model(kind, hidden)
        system = adapt(m)
        single = measure(lambda: rnnmem.memory_function(m, t, dt=1.0, amplitudes=[1.0]),
                         repeats=reps, budget_s=budget_s)
        search = measure(lambda: rnnmem.memory_function(m, t, dt=1.0), repeats=reps,
                         budget_s=budget_s)
        lit = measure(lambda: literal(system, t, dt=1.0, input_dim=1), repeats=reps,
                      budget_s=budget_s)
        ratio = search.cpu_seconds / single.cpu_seconds
        est, one = search.result, single.result
        ok = one.values > 1e-6 * one.values.max()
        target, met = None, None
        if T == TARGET_T:
            target, met = f"<= {TARGET_RATIO:g}x one amplitude", ratio <= TARGET_RATIO
        rows.append(row(
            SECTION, f"amplitude search: nn.{kind} + Linear",
            config=dict(T=T, hidden=hidden, d=1, dtype="float32",
                        grid=f"{len(rnnmem.numerics.DEFAULT_AMPLITUDES)}+1 round"),
            timing=search, ratio=ratio, ratio_label="CPU cost vs one amplitude", target=target,
            met=met,
            values=dict(single_s=single.seconds, search_s=search.seconds,
                        wall_ratio=search.seconds / single.seconds,
                        single_cpu_s=single.cpu_seconds, search_cpu_s=search.cpu_seconds,
                        literal_s=lit.seconds, search_vs_literal=search.seconds / lit.seconds,
                        calls_search=est.n_calls, calls_single=one.n_calls,
                        probes_search=est.n_probes, probes_single=one.n_probes,
                        warmup_steps=est.warmup_steps,
                        max_gain_over_one_amplitude=float(np.max(est.values[ok] /
                                                                 one.values[ok])))))
    return rows


def run(quick: bool = False, *, tiny: bool = False) -> list[dict]:
    if tiny:
        return rows_for(["GRU"], 16, 4, 1, 1.0)
    if quick:
        return rows_for(["GRU", "LSTM", "RNN"], TARGET_T, 32, 3, 10.0)
    return rows_for(["GRU", "LSTM", "RNN"], TARGET_T, 32, 5, 20.0)


if __name__ == "__main__":  # pragma: no cover
    import sys

    from ._common import format_table, set_threads

    set_threads(2)
    print(format_table(run(quick="--quick" in sys.argv)))
