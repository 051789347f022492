"""``python -m benchmarks.gpu_check`` (``make gpu-check``): do the CUDA paths agree with the CPU?

On a machine with CUDA it

1. runs the ``gpu``-marked tests (``pytest -m gpu tests``);
2. runs each case below once on the CPU and once on the GPU, from the same inputs and the
   same initial parameters (drawn on the CPU, then moved), in float64, and times both;
3. compares every output (values, losses, gradients) with the bound of
   :func:`rnnmem.numerics.tolerance` -- ``tolerance("float64", n_ops=..., cond=...,
   scale=max|CPU output|)`` with the case's chain length and conditioning stated in the
   table -- and reports the largest violation (``<= 1`` agrees);
4. writes the table as JSON (default ``benchmarks/results/gpu_check.json``) and exits 1
   if the tests fail or any output disagrees, else 0.

Cases: ``linear_recurrence`` forward + backward (B=128, N=256, T=1024, time-invariant and
time-varying), a curse-of-memory training step (the residual tanh RNN with the softplus
recurrence, Li, Han, E & Li 2021; forward, MSE, backward), a stack-RNN training step
(LSTM + superposition stack, Joulin & Mikolov 2015), the same with the nondeterministic
stack (DuSell & Chiang 2020) when :mod:`rnnmem.models` registers one, and a perturbation
sweep (:func:`rnnmem.train.perturbation_curve`, whose directions are drawn on the CPU in
float64, so both devices evaluate the same perturbations).

Without CUDA it prints one line and exits 0 (``--force-cpu`` runs the cases CPU against
CPU, for the smoke test). No timing is judged: the GPU/CPU ratios are information.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "gpu_check.json"


# ------------------------------------------------------------------------------ timing
def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn, device: str, repeats: int):
    """(result of the last call, median seconds of ``repeats`` calls after one warm-up)."""
    out = fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    times.sort()
    return out, times[len(times) // 2]


def _to_cpu(out: dict) -> dict:
    import numpy as np

    return {k: np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v,
                          dtype=float) for k, v in out.items()}


# ------------------------------------------------------------------------------- cases
# Each case: ``make(device, tiny) -> (fn, tol_args)``; ``fn()`` returns {name: tensor}
# computed on ``device`` from inputs drawn on the CPU; ``tol_args`` maps an output name
# (or "*") to the tolerance's n_ops and cond.

def case_linear_recurrence(time_varying: bool):
    def make(device, tiny):
        import torch

        from rnnmem.models import linear_recurrence

        B, T, N = (4, 64, 8) if tiny else (128, 1024, 256)
        g = torch.Generator().manual_seed(0)
        shape = (B, T, N) if time_varying else (N,)
        a = (0.5 + 0.49 * torch.rand(shape, generator=g, dtype=torch.float64)).to(device)
        x = torch.randn(B, T, N, generator=g, dtype=torch.float64).to(device)
        w = torch.randn(B, T, N, generator=g, dtype=torch.float64).to(device)

        def fn():
            a_, x_ = a.clone().requires_grad_(), x.clone().requires_grad_()
            h = linear_recurrence(a_, x_)
            ga, gx = torch.autograd.grad(h, (a_, x_), w)
            return {"h": h, "grad_a": ga, "grad_x": gx}

        cond = min(1.0 / (1.0 - 0.99), T)
        sums = B * T if not time_varying else 1  # grad_a of a shared a sums B*T terms
        return fn, {"*": dict(n_ops=T, cond=cond),
                    "grad_a": dict(n_ops=T + sums, cond=cond)}
    return make


def case_curse_step(device, tiny):
    import torch

    from rnnmem.models import build_model

    B, T, H = (4, 12, 8) if tiny else (512, 100, 64)
    m = build_model("rnn", width=H, activation="tanh", recurrence="softplus",
                    dtype="float64", device=device, seed=0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, T, m.input_dim, generator=g, dtype=torch.float64).to(device)
    y = torch.randn(B, T, m.output_dim, generator=g, dtype=torch.float64).to(device)
    names = [n for n, p in m.named_parameters() if p.requires_grad]

    def fn():
        m.zero_grad(set_to_none=True)
        loss = (m(x) - y).square().mean()
        grads = torch.autograd.grad(loss, [dict(m.named_parameters())[n] for n in names])
        return {"loss": loss, **{f"grad:{n}": gr for n, gr in zip(names, grads)}}

    # a contractive recurrence of T steps; a gradient sums B*T contributions
    return fn, {"*": dict(n_ops=T * H + B * T, cond=T)}


def _stack_step(stack: str):
    def make(device, tiny):
        import torch

        from rnnmem.models import StackRNN

        B, T, H, V = (3, 10, 8, 4) if tiny else (32, 40, 64, 10)
        m = StackRNN(V, controller="lstm", stack=stack, width=H, stack_width=8,
                     dtype="float64", device=device, seed=0)
        g = torch.Generator().manual_seed(2)
        x = torch.randint(0, V, (B, T), generator=g).to(device)
        y = torch.randint(0, V, (B, T), generator=g).to(device)
        params = [(n, p) for n, p in m.named_parameters() if p.requires_grad]

        def fn():
            logits = m(x)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), y.reshape(-1))
            grads = torch.autograd.grad(loss, [p for _, p in params])
            return {"loss": loss, "logits": logits,
                    **{f"grad:{n}": gr for (n, _), gr in zip(params, grads)}}

        return fn, {"*": dict(n_ops=T * H + B * T, cond=T)}
    return make


def nondeterministic_stack_kind() -> str | None:
    """The registered name of a nondeterministic stack (DuSell & Chiang), if any."""
    try:
        from rnnmem.models import stack_rnn
    except ImportError:  # pragma: no cover
        return None
    kinds = getattr(stack_rnn, "STACK_KINDS", ())
    for name in ("nondeterministic", "rns", "nd"):
        if name in kinds:
            return name
    return None


def case_perturbation(device, tiny):
    import numpy as np
    import torch

    from rnnmem.models import build_model
    from rnnmem.train import EvalSet, perturbation_curve

    B, T, H = (4, 10, 4) if tiny else (64, 100, 32)
    m = build_model("rnn", width=H, activation="tanh", recurrence="softplus",
                    dtype="float64", device=device, seed=0)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(B, T, m.input_dim, generator=g, dtype=torch.float64).to(device)
    y = torch.randn(B, T, m.output_dim, generator=g, dtype=torch.float64).to(device)
    evalset = EvalSet([(x, y)])
    betas = 1e-3 * 2.0 ** (np.arange(5 if tiny else 11) / 2)

    def fn():
        c = perturbation_curve(m, evalset, betas, repeats=2 if tiny else 5, seed=0)
        return {"samples": torch.as_tensor(np.asarray(c.samples)),
                "e0": torch.as_tensor(float(c.e0))}

    return fn, {"*": dict(n_ops=T * H + B * T, cond=T)}


def cases():
    """(name, make) of every case, the nondeterministic stack only when registered."""
    out = [("linear_recurrence time-invariant", case_linear_recurrence(False)),
           ("linear_recurrence time-varying", case_linear_recurrence(True)),
           ("curse-of-memory training step", case_curse_step),
           ("stack-RNN training step (superposition)", _stack_step("superposition"))]
    nd = nondeterministic_stack_kind()
    if nd is not None:
        out.append((f"RNS training step ({nd})", _stack_step(nd)))
    out.append(("perturbation sweep", case_perturbation))
    return out


# --------------------------------------------------------------------------- compare
def compare(name: str, make, devices: tuple[str, str], *, tiny: bool = False,
            repeats: int = 3) -> dict:
    """Run one case on both devices; the row with times and the largest violation."""
    from rnnmem.numerics import tolerance

    results, times, tol_args = [], [], None
    try:
        for dev in devices:
            fn, tol_args = make(dev, tiny)
            out, sec = _timed(fn, dev, repeats)
            results.append(_to_cpu(out))
            times.append(sec)
    except Exception as exc:  # reported as a failure of this case, the others still run
        return {"case": name, "ok": False, "error": f"{type(exc).__name__}: {exc}",
                "devices": list(devices)}
    ref, got = results
    worst, worst_name, per_output = 0.0, None, {}
    for key, r in ref.items():
        args = tol_args.get(key) or next((v for k, v in tol_args.items()
                                          if k != "*" and key.startswith(k)), tol_args["*"])
        scale = float(abs(r).max()) if r.size else 0.0
        tol = tolerance("float64", scale=max(scale, 1e-300), **args)
        if got[key].shape != r.shape:
            v = math.inf
        else:
            v = tol.max_violation(got[key], r)
        per_output[key] = v
        if not (v <= worst):
            worst, worst_name = v, key
    a, b = times
    return {"case": name, "ok": bool(worst <= 1.0), "max_violation": worst,
            "worst_output": worst_name, "violations": per_output,
            "tolerance_args": tol_args, "devices": list(devices),
            "seconds": [a, b], "speedup": (a / b) if b > 0 else None}


def run_gpu_tests() -> dict:
    """``pytest -m gpu tests``: return code and the last line."""
    r = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:randomly",
                        str(ROOT / "tests")], capture_output=True, text=True, cwd=ROOT)
    lines = [ln for ln in (r.stdout + r.stderr).strip().splitlines() if ln.strip()]
    # 5: nothing collected (no gpu test in this tree): not a failure
    return {"returncode": r.returncode, "ok": r.returncode in (0, 5),
            "summary": lines[-1] if lines else "", "tail": lines[-30:]}


def format_rows(rows: list[dict]) -> str:
    head = f"{'case':<44} {'ok':<4} {'max viol.':>10} {'dev A':>10} {'dev B':>10} {'A/B':>7}"
    out = [head, "-" * len(head)]
    for r in rows:
        if "error" in r:
            out.append(f"{r['case']:<44} {'FAIL':<4} error: {r['error']}")
            continue
        s = r["seconds"]
        out.append(f"{r['case']:<44} {'yes' if r['ok'] else 'NO':<4} "
                   f"{r['max_violation']:>10.3g} {s[0] * 1e3:>8.1f}ms {s[1] * 1e3:>8.1f}ms "
                   f"{(r['speedup'] or float('nan')):>7.2f}")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check",
                                description=__doc__.splitlines()[0])
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write the table")
    p.add_argument("--skip-tests", action="store_true", help="do not run the gpu-marked tests")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--tiny", action="store_true", help="small sizes (smoke test)")
    p.add_argument("--force-cpu", action="store_true",
                   help="compare CPU with CPU when there is no GPU (smoke test of the code)")
    args = p.parse_args(argv)
    # idle OpenMP workers sleep instead of spinning (read when torch loads; measured on the
    # 2-core project VM: spinning made tiny per-step ops 100x slower); a user's value is kept
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    if torch.cuda.is_available():
        devices = ("cpu", "cuda")
    elif args.force_cpu:
        devices = ("cpu", "cpu")
    else:
        print(f"gpu-check: no CUDA device (torch {torch.__version__}, "
              f"torch.cuda.is_available() is False): nothing to check")
        return 0
    tests = None if args.skip_tests or devices[1] == "cpu" else run_gpu_tests()
    rows = [compare(name, make, devices, tiny=args.tiny, repeats=args.repeats)
            for name, make in cases()]
    ok = all(r["ok"] for r in rows) and (tests is None or tests["ok"])
    header = {"torch": torch.__version__, "devices": list(devices),
              "gpu": torch.cuda.get_device_name(0) if devices[1] == "cuda" else None,
              "cpu_threads": torch.get_num_threads(), "tiny": args.tiny,
              "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "ok": ok}
    print(format_rows(rows))
    if tests is not None:
        print(f"gpu-marked tests: {'ok' if tests['ok'] else 'FAILED'} ({tests['summary']})")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.json.with_suffix(".tmp")
    tmp.write_text(json.dumps({"header": header, "tests": tests, "rows": rows}, indent=1,
                              default=str))
    os.replace(tmp, args.json)
    print(f"gpu-check: {'agreement' if ok else 'DISAGREEMENT or failure'}; table: {args.json}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
