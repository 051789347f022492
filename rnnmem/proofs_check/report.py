"""The report writer: ``REPORT.md`` for people, ``results.json`` for programs."""

from __future__ import annotations

import json
import math
import os
import platform
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from .registry import Result

__all__ = ["summary_table", "write_report", "to_jsonable"]


def to_jsonable(obj):
    """Convert numpy scalars/arrays, tuples and non-finite floats to plain JSON values."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        np = None
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if np is not None and isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if np is not None and isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, float):
        if math.isnan(obj):
            return "nan"
        if math.isinf(obj):
            return "inf" if obj > 0 else "-inf"
        return obj
    if isinstance(obj, (int, str, bool)) or obj is None:
        return obj
    return str(obj)


def summary_table(results: list[Result]) -> str:
    """A fixed-width table: id, verdict, seconds, summary."""
    w_id = max([len("claim")] + [len(r.id) for r in results])
    lines = [f"{'claim':<{w_id}}  {'verdict':<12}  {'time':>7}  summary",
             f"{'-' * w_id}  {'-' * 12}  {'-' * 7}  {'-' * 40}"]
    for r in results:
        mark = " (!)" if r.failed_must_hold else ""
        lines.append(f"{r.id:<{w_id}}  {r.verdict + mark:<12}  {r.seconds:>6.1f}s  {r.summary}")
    return "\n".join(lines)


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_report(results: list[Result], out_dir: Path, *, budget: str) -> tuple[Path, Path]:
    """Write ``REPORT.md`` and ``results.json`` into ``out_dir``; return both paths."""
    out_dir = Path(out_dir)
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    from .. import __version__

    md = [f"# rnnmem verification report", "",
          f"rnnmem {__version__}, budget `{budget}`, {now}, Python {platform.python_version()} "
          f"on {platform.machine()}.", "",
          "## Summary", "", "| claim | verdict | time (s) | summary |", "|---|---|---:|---|"]
    for r in results:
        md.append(f"| `{r.id}` | **{r.verdict}**{' (must hold!)' if r.failed_must_hold else ''}"
                  f" | {r.seconds:.1f} | {r.summary.replace('|', '/')} |")
    for r in results:
        md += ["", f"## `{r.id}`: {r.title}", "", f"*Source:* {r.source}", "",
               f"*Statement:* {r.statement}", "", f"*Verdict:* **{r.verdict}** — {r.summary}", ""]
        if r.runs:
            md += [f"*Runs:* {r.runs['total']} from the run store, {r.runs['trained']} "
                   f"trained by this invocation.", ""]
        if r.details:
            md += [r.details, ""]
        if r.metrics:
            md += ["<details><summary>metrics</summary>", "", "```json",
                   json.dumps(to_jsonable(r.metrics), indent=1)[:20000], "```", "</details>", ""]
        for f in r.figures:
            md += [f"![{r.id}]({f})", ""]
        if r.error:
            md += ["```", r.error, "```", ""]
    report = out_dir / "REPORT.md"
    results_json = out_dir / "results.json"
    _atomic_write(report, "\n".join(md) + "\n")
    _atomic_write(results_json, json.dumps([to_jsonable(r.to_json()) for r in results],
                                           indent=1) + "\n")
    return report, results_json
