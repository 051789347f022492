"""(e) The nondeterministic stack RNN (RNS-RNN, DuSell & Chiang 2021/2022): rows of the
stacks section, run from :mod:`benchmarks.bench_stacks`.

Rows
----
* ``RNS stack-LSTM fwd+bwd``: forward + backward of a
  :class:`~rnnmem.models.StackRNN` with ``stack="nondeterministic"`` (LSTM controller,
  hidden 20, Q = 2 states, S = 3 symbols, batch 32, float32) at T = 40, 100 (and 200 in the
  full run), one torch thread. The ratio is to the peer's time *quoted* in the issue for
  the same sizes on 2 cores (bdusell/nondeterministic-stack-rnn: 2.5 s at T = 40, 38 s at
  T = 100, 328 s at T = 200), or, with ``RNNMEM_BENCH_PEER_SRC`` pointing at the peer's
  ``src`` (and ``torch-semiring-einsum`` importable), to the peer run in a subprocess in
  the same run with the same threads. Target at T = 100: at least 10x.
* ``limited RNS window scaling``: the same model with a window D = 10 (the limited
  RNS-RNN) at T = 100 and T = 200; ratio = time(T=200) / time(T=100). Linear in T means
  about 2 (the full stack's O(T^3) work would give about 8; its ratio is in ``values``
  in the full run).
* ``nondeterministic run vs _reference_run``: the vectorised, taped stack against the
  direct recurrences (float64, loops over i, j, k) on the same weights, forward only.

Run alone: ``python -m benchmarks.bench_nondeterministic [--quick]``.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from ._common import measure, row, unavailable
from .bench_stacks import _fwd_bwd  # one fwd+bwd closure for every stack-RNN row

SECTION = "e"
#: the peer's fwd+bwd seconds quoted in the issue (batch 32, hidden 20, Q=2, S=3, 2 cores)
PEER_QUOTED_S = {40: 2.5, 100: 38.0, 200: 328.0}


@contextmanager
def _threads(n: int):
    """``torch.set_num_threads(n)`` inside, restored after."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _model(V: int, H: int, Q: int, S: int, window: int | None = None):
    from rnnmem.models import StackRNN

    return StackRNN(V, controller="lstm", stack="nondeterministic", width=H,
                    num_states=Q, stack_symbols=S, window=window, dtype="float32",
                    device="cpu", seed=0)


#: the peer harness, run in a subprocess with the peer's ``src`` directory on the path
#: (``RNNMEM_BENCH_PEER_SRC``, as for the stratification row; the peer also needs the
#: ``torch-semiring-einsum`` package importable). The peer's code is never part of rnnmem.
_PEER_HARNESS = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
import torch
import torch_semiring_einsum
from torch_rnn_tools import UnidirectionalLSTM
from stack_rnn_models.nondeterministic_stack import NondeterministicStackRNN
T, B, H, Q, S, V, threads = (int(a) for a in sys.argv[2:9])
torch.set_num_threads(threads)
torch.manual_seed(0)
rnn = NondeterministicStackRNN(V, Q, S, lambda n: UnidirectionalLSTM(n, H))
head = torch.nn.Linear(H, V)
x = torch.nn.functional.one_hot(torch.randint(0, V, (B, T)), V).float()
y = torch.randint(0, V, (B, T))
w0, c0 = time.perf_counter(), time.process_time()
h = rnn(x, block_size=torch_semiring_einsum.AUTOMATIC_BLOCK_SIZE, include_first=False)
loss = torch.nn.functional.cross_entropy(head(h).reshape(-1, V), y.reshape(-1))
rnn.zero_grad()
loss.backward()
print(json.dumps({"wall": time.perf_counter() - w0, "cpu": time.process_time() - c0}))
"""


def peer_nondeterministic(T: int, B: int, H: int, Q: int, S: int, V: int, threads: int,
                          timeout_s: float = 1800.0) -> dict | None:
    """Time the peer's NS-RNN (fwd+bwd, one run) when ``RNNMEM_BENCH_PEER_SRC`` is set;
    ``None`` otherwise (or if it fails)."""
    import json
    import os
    import subprocess
    import sys

    from .bench_stacks import PEER_ENV

    src = os.environ.get(PEER_ENV)
    if not src:
        return None
    cmd = [sys.executable, "-c", _PEER_HARNESS, src] + [str(a) for a in (T, B, H, Q, S, V,
                                                                          threads)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        return json.loads(out.stdout.strip().splitlines()[-1])
    except Exception:  # the peer is optional: any failure means "not measured"
        return None


def peer_rows(lengths, B: int = 32, H: int = 20, Q: int = 2, S: int = 3, V: int = 3,
              reps: int = 3, judge_T: int = 100, threads: int = 1) -> list[dict]:
    """Ours (``threads`` torch threads: the step loop is bound by per-operation overhead,
    and a second thread only adds contention on a shared machine) against the peer: run in
    this process's run when available (same threads), else its time quoted in the issue."""
    rows = []
    m = _model(V, H, Q, S)
    with _threads(threads):
        for T in lengths:
            t = measure(_fwd_bwd(m, B, T), repeats=reps if T <= 100 else 1)
            quoted = PEER_QUOTED_S.get(T)
            peer = peer_nondeterministic(T, B, H, Q, S, V, threads) if quoted else None
            ref_s = peer["wall"] if peer is not None else quoted
            judged = T == judge_T and ref_s is not None
            values = {} if quoted is None else dict(peer_quoted_s=quoted,
                                                   speedup_vs_quoted=quoted / t.seconds,
                                                   cpu_speedup_vs_quoted=quoted / t.cpu_seconds)
            if peer is not None:
                values.update(peer_wall_s=peer["wall"], peer_cpu_s=peer["cpu"],
                              cpu_speedup_vs_peer=peer["cpu"] / t.cpu_seconds)
            rows.append(row(
                SECTION, "RNS stack-LSTM fwd+bwd",
                config=dict(T=T, batch=B, hidden=H, states=Q, symbols=S, dtype="float32",
                            threads=threads),
                timing=t, ratio=None if ref_s is None else ref_s / t.seconds,
                ratio_label=("speed-up vs the peer measured in this run" if peer is not None
                             else "speed-up vs the peer's time quoted in the issue"),
                target=f">= 10x the peer's {ref_s:.3g} s" if judged else None,
                met=(ref_s / t.seconds >= 10.0) if judged else None, values=values,
                note=("peer: bdusell/nondeterministic-stack-rnn NondeterministicStackRNN, "
                      "same sizes, automatic einsum block size" if peer is not None else
                      "peer not run (set RNNMEM_BENCH_PEER_SRC to run it): ratio to the "
                      "time quoted in the issue (2 cores)") if quoted is not None else ""))
    return rows


def window_rows(D: int = 10, lengths=(100, 200), B: int = 32, H: int = 20, Q: int = 2,
                S: int = 3, V: int = 3, reps: int = 3, with_full: bool = False,
                threads: int = 1) -> list[dict]:
    T1, T2 = lengths
    m = _model(V, H, Q, S, window=D)
    with _threads(threads):
        t1 = measure(_fwd_bwd(m, B, T1), repeats=reps)
        t2 = measure(_fwd_bwd(m, B, T2), repeats=reps)
        values = dict(t_short_s=t1.seconds, t_long_s=t2.seconds,
                      cpu_ratio=t2.cpu_seconds / t1.cpu_seconds)
        if with_full:
            full = _model(V, H, Q, S)
            f1 = measure(_fwd_bwd(full, B, T1), repeats=1)
            f2 = measure(_fwd_bwd(full, B, T2), repeats=1)
            values.update(full_ratio=f2.seconds / f1.seconds,
                          full_cpu_ratio=f2.cpu_seconds / f1.cpu_seconds)
    ratio = t2.seconds / t1.seconds
    return [row(SECTION, "limited RNS window scaling",
                config=dict(window=D, T=f"{T2} vs {T1}", batch=B, hidden=H, states=Q,
                            symbols=S, threads=threads),
                timing=t2, ratio=ratio, ratio_label=f"time(T={T2}) / time(T={T1})",
                target=f"linear in T: about {T2 / T1:g}",
                met=ratio <= 1.25 * T2 / T1, values=values)]


def reference_rows(T: int = 12, B: int = 2, Q: int = 2, S: int = 3,
                   budget_s: float = 5.0) -> list[dict]:
    from rnnmem.models.nondeterministic import NondeterministicControls, NondeterministicStack

    N = Q * S
    g = torch.Generator().manual_seed(0)
    stack = NondeterministicStack(Q, S, dtype=torch.float64)
    cs = []
    for _ in range(T):
        w = torch.randn(B, N, 2 * N + Q, generator=g, dtype=torch.float64).exp()
        cs.append(NondeterministicControls(*w.split([N, N, Q], dim=-1)))
    with torch.no_grad(), _threads(1):
        tf = measure(lambda: stack.run(cs), repeats=5)
        tr = measure(lambda: stack._reference_run(cs), repeats=3, budget_s=budget_s)
        diff = float((tf.result[0] - tr.result[0]).abs().max())
    return [row(SECTION, "nondeterministic run vs _reference_run",
                config=dict(T=T, batch=B, states=Q, symbols=S, dtype="float64"), timing=tf,
                ratio=tr.seconds / tf.seconds, ratio_label="speed-up",
                values=dict(reference_s=tr.seconds, max_abs_diff=diff))]


def rows(quick: bool = False, *, tiny: bool = False) -> list[dict]:
    """The rows above (``tiny``: smoke sizes, meaningless numbers)."""
    if tiny:
        parts = [("RNS vs peer", lambda: peer_rows([6], B=2, H=3, reps=1, judge_T=-1)),
                 ("RNS window", lambda: window_rows(2, (5, 10), B=2, H=3, reps=1)),
                 ("RNS reference", lambda: reference_rows(T=4, B=1, budget_s=1.0))]
    else:
        parts = [("RNS vs peer", lambda: peer_rows([40, 100] if quick else [40, 100, 200],
                                                   reps=2 if quick else 3)),
                 ("RNS window", lambda: window_rows(reps=2 if quick else 3,
                                                    with_full=not quick)),
                 ("RNS reference", lambda: reference_rows())]
    out: list[dict] = []
    for name, part in parts:
        try:
            out.extend(part())
        except Exception as exc:  # reported in the table, not raised
            out.append(unavailable(SECTION, name, f"{type(exc).__name__}: {exc}",
                                   status="error"))
    return out


def run(quick: bool = False, *, tiny: bool = False) -> list[dict]:
    return rows(quick, tiny=tiny)


if __name__ == "__main__":  # pragma: no cover
    import sys

    from ._common import format_table, set_threads

    set_threads(2)
    print(format_table(run(quick="--quick" in sys.argv)))
