"""(c) One training step (forward, loss, backward, optimizer step) of every model family.

Families from the :data:`rnnmem.models.MODELS` registry at one stated configuration, plus
the curse-of-memory reference configuration (Li, Han, E & Li, ICLR 2021; Wang, Li & Li,
ICLR 2024): the residual RNN with a diagonal softplus-parameterised recurrence and tanh,
hidden 64, batch 512, length 100, float64; target at most 0.1 s per step (the original
code took 1.1 s, most of it in the backward of per-step input slices).

Each row's ratio is its time over the fastest family's time in the same run. The
reference row's ratio is the issue's 1.1 s over the measured step (the speed-up); the
row after it runs the same step with ``compile=True`` (:func:`torch.compile` of the
per-sample step), ratio compiled / eager, its first call (compilation) in ``values``.

Run alone: ``python -m benchmarks.bench_training [--quick]``.
"""

from __future__ import annotations

import torch

from ._common import compiled_vs_eager, measure, row, unavailable

SECTION = "c"
#: the reference step time quoted in the issue (original code, s)
ORIGINAL_REFERENCE_S = 1.1
REFERENCE_TARGET_S = 0.1


def _regression_families(hidden: int) -> list[tuple[str, str, dict]]:
    """(label, registry name, constructor arguments) for the real-valued sequence models."""
    return [
        ("diagonal_ssm softplus", "diagonal_ssm", dict(width=hidden)),
        ("rnn tanh vanilla", "rnn", dict(width=hidden, activation="tanh",
                                         recurrence="vanilla")),
        ("rnn tanh softplus", "rnn", dict(width=hidden, activation="tanh",
                                          recurrence="softplus")),
        ("rnn linear softplus", "rnn", dict(width=hidden, activation="linear",
                                            recurrence="softplus")),
        ("ssm tanh vanilla", "ssm", dict(width=hidden, activation="tanh",
                                         recurrence="vanilla")),
        ("ssm tanh diagonal", "ssm", dict(width=hidden, activation="tanh",
                                          recurrence="diagonal")),
        ("stable_ssm tanh exp", "stable_ssm", dict(width=hidden, activation="tanh",
                                                   parameterisation="exp")),
        ("lru", "lru", dict(width=hidden)),
        ("s4d", "s4d", dict(width=hidden)),
    ]


def _loop_threads(model, x):
    """The thread rule of ``rnnmem.train``'s loop (its own helper) for a step of
    ``model`` on the batch ``x``: forward and backward of a small step loop on one
    thread."""
    from rnnmem.train.loop import _step_threads

    return _step_threads(model, x, next(model.parameters()).device)


def regression_step(model, batch: int, length: int, dtype, seed: int = 0):
    """A closure doing one Adam step of mean-squared error on random data (with the
    training loop's thread rule)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, length, model.input_dim, generator=g, dtype=dtype)
    y = torch.randn(batch, length, model.output_dim, generator=g, dtype=dtype)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        with _loop_threads(model, x):
            loss = (model(x) - y).square().mean()
            loss.backward()
        opt.step()
        return float(loss.detach())

    return step


def token_step(model, batch: int, length: int, seed: int = 0):
    """A closure doing one Adam step of next-symbol cross-entropy on random tokens (with
    the training loop's thread rule)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, model.vocab_size, (batch, length), generator=g)
    y = torch.randint(0, model.output_size, (batch, length), generator=g)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        with _loop_threads(model, x):
            logits = model(x)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                     y.reshape(-1))
            loss.backward()
        opt.step()
        return float(loss.detach())

    return step


def run(quick: bool = False, *, tiny: bool = False) -> list[dict]:
    from rnnmem.models import build_model

    if tiny:
        B, T, H, reps = 4, 6, 4, 1
        ref = dict(B=4, T=6, H=4)
    else:
        B, T, H, reps = 128, 100, 64, (3 if quick else 5)
        ref = dict(B=512, T=100, H=64)
    rows: list[dict] = []
    results = []
    # --- the curse-of-memory reference configuration ---------------------------------
    cfg = dict(model="rnn", activation="tanh", recurrence="softplus", hidden=ref["H"],
               batch=ref["B"], length=ref["T"], dtype="float64")
    try:
        m = build_model("rnn", width=ref["H"], activation="tanh", recurrence="softplus",
                        dtype="float64", device="cpu", seed=0)
        t = measure(regression_step(m, ref["B"], ref["T"], torch.float64), repeats=reps,
                    warmup=1)
        judge = not tiny
        rows.append(row(SECTION, "curse-of-memory reference step", config=cfg, timing=t,
                        ratio=ORIGINAL_REFERENCE_S / t.seconds,
                        ratio_label=f"vs original {ORIGINAL_REFERENCE_S} s",
                        target=f"<= {REFERENCE_TARGET_S} s" if judge else None,
                        met=(t.seconds <= REFERENCE_TARGET_S) if judge else None,
                        values={"cpu_met": t.cpu_seconds <= REFERENCE_TARGET_S}))
        if not tiny:  # torch.compile of the per-sample step, measured against this row

            def make(compile_):
                mc = build_model("rnn", width=ref["H"], activation="tanh",
                                 recurrence="softplus", dtype="float64", device="cpu", seed=0,
                                 compile=compile_)
                return regression_step(mc, ref["B"], ref["T"], torch.float64), mc

            rows.append(compiled_vs_eager(SECTION, "curse-of-memory reference step, compiled",
                                          make, config=cfg, eager_s=t.seconds, repeats=reps))
    except Exception as exc:  # pragma: no cover - reported, not raised
        rows.append(unavailable(SECTION, "curse-of-memory reference step",
                                f"{type(exc).__name__}: {exc}", status="error"))
    # --- every family at one configuration -------------------------------------------
    for label, name, kw in _regression_families(H):
        cfg = dict(model=name, **{k: v for k, v in kw.items() if k != "width"},
                   hidden=H, batch=B, length=T, dtype="float32")
        try:
            m = build_model(name, dtype="float32", device="cpu", seed=0, **kw)
            t = measure(regression_step(m, B, T, torch.float32), repeats=reps, warmup=1)
            results.append((label, cfg, t))
        except Exception as exc:
            rows.append(unavailable(SECTION, label, f"{type(exc).__name__}: {exc}",
                                    status="error"))
    TS = T if tiny else 40
    for stack in ("superposition", "stratification", "none"):
        label = f"stack_rnn lstm {stack}"
        cfg = dict(model="stack_rnn", controller="lstm", stack=stack, hidden=H, batch=B,
                   length=TS, vocab=3, dtype="float32")
        try:
            m = build_model("stack_rnn", vocab_size=3, controller="lstm", stack=stack,
                            width=H, dtype="float32", device="cpu", seed=0)
            t = measure(token_step(m, B, TS), repeats=reps, warmup=1)
            results.append((label, cfg, t))
        except Exception as exc:
            rows.append(unavailable(SECTION, label, f"{type(exc).__name__}: {exc}",
                                    status="error"))
    if results:
        fastest = min(t.seconds for _, _, t in results)
        for label, cfg, t in results:
            rows.append(row(SECTION, label, config=cfg, timing=t, ratio=t.seconds / fastest,
                            ratio_label="vs fastest family"))
    return rows


def profile_reference(top: int = 15) -> str:
    """torch.profiler table of one reference step (for reports)."""
    from torch.profiler import profile

    from rnnmem.models import build_model

    m = build_model("rnn", width=64, activation="tanh", recurrence="softplus",
                    dtype="float64", device="cpu", seed=0)
    step = regression_step(m, 512, 100, torch.float64)
    step()
    with profile() as prof:
        step()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top)


if __name__ == "__main__":  # pragma: no cover
    from ._common import format_table, set_threads
    import sys

    set_threads(2)
    print(format_table(run(quick="--quick" in sys.argv)))
    if "--profile" in sys.argv:
        print(profile_reference())
