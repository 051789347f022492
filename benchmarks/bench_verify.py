"""(f) Wall time of ``rnnmem verify --budget quick`` (a subprocess; minutes).

The command runs in a fresh interpreter (``python -m rnnmem verify --budget quick --quiet
--out <tmp>``), so the time includes imports and every claim of the quick budget. Part of
``make bench``; skipped by ``python -m benchmarks --quick``. The tiny mode (smoke test)
times an empty interpreter instead (the same subprocess plumbing, in a fraction of a
second); the smoke test checks the verify command line against the CLI's parser.

Run alone: ``python -m benchmarks.bench_verify``.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time

from ._common import row, unavailable

SECTION = "f"


def _tail(text: str, n: int = 3) -> str:
    lines = [ln for ln in (text or "").strip().splitlines() if ln.strip()]
    return " | ".join(lines[-n:])[:300]


def verify_command(budget: str, out: str) -> list[str]:
    """The command line timed by :func:`run`."""
    return [sys.executable, "-m", "rnnmem", "verify", "--budget", budget, "--quiet",
            "--out", out]


def run(quick: bool = False, *, tiny: bool = False, budget: str = "quick",
        timeout_s: float = 3600.0) -> list[dict]:
    """Time the verify subprocess (``tiny``: an empty interpreter, to test the plumbing)."""
    if quick and not tiny:
        return [unavailable(SECTION, f"rnnmem verify --budget {budget}",
                            "skipped with --quick", status="skipped")]
    with tempfile.TemporaryDirectory(prefix="rnnmem-bench-verify-") as out:
        if tiny:
            name, cmd = "empty interpreter (tiny mode)", [sys.executable, "-c", "pass"]
        else:
            name, cmd = f"rnnmem verify --budget {budget}", verify_command(budget, out)
        w0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return [unavailable(SECTION, name, f"timed out after {timeout_s:g} s",
                                status="error")]
        wall = time.perf_counter() - w0
    # exit 1 means a must-hold claim failed: the time is still measured, the row says so
    status = "ok" if proc.returncode in (0, 1) else "error"
    note = "" if proc.returncode == 0 else f"exit {proc.returncode}: {_tail(proc.stderr)}"
    return [row(SECTION, name, config=dict(budget=None if tiny else budget),
                seconds=wall, repeats=1, values=dict(returncode=proc.returncode),
                status=status, note=note)]


if __name__ == "__main__":  # pragma: no cover
    from ._common import format_table

    print(format_table(run()))
