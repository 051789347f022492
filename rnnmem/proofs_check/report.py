"""The report writer: ``REPORT.md`` for people, ``results.json`` for programs."""

from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from pathlib import Path

from ..files import atomic_write, to_jsonable
from .registry import Result

__all__ = ["summary_table", "write_report", "to_jsonable"]

#: longest metrics JSON shown inline in REPORT.md (longer ones are referred to results.json)
_MAX_INLINE_METRICS = 20_000


def summary_table(results: list[Result]) -> str:
    """A fixed-width table: id, verdict, seconds, summary."""
    w_id = max([len("claim")] + [len(r.id) for r in results])
    lines = [f"{'claim':<{w_id}}  {'verdict':<12}  {'time':>7}  summary",
             f"{'-' * w_id}  {'-' * 12}  {'-' * 7}  {'-' * 40}"]
    for r in results:
        mark = " (!)" if r.failed_must_hold and not r.errored else ""
        lines.append(f"{r.id:<{w_id}}  {r.verdict + mark:<12}  {r.seconds:>6.1f}s  {r.summary}")
    return "\n".join(lines)


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
        refuted = r.failed_must_hold and not r.errored
        md.append(f"| `{r.id}` | **{r.verdict}**{' (must hold!)' if refuted else ''}"
                  f" | {r.seconds:.1f} | {r.summary.replace('|', '/')} |")
    for r in results:
        md += ["", f"## `{r.id}`: {r.title}", "", f"*Source:* {r.source}", "",
               f"*Statement:* {r.statement}", "", f"*Verdict:* **{r.verdict}** — {r.summary}", ""]
        if r.details:
            md += [r.details, ""]
        if r.metrics:
            text = json.dumps(to_jsonable(r.metrics), indent=1, allow_nan=False)
            if len(text) > _MAX_INLINE_METRICS:  # never a cut (invalid) JSON: point to the file
                text = (f'{{"note": "{len(text)} characters of metrics; see results.json, '
                        f'entry {r.id}"}}')
            md += ["<details><summary>metrics</summary>", "", "```json", text, "```",
                   "</details>", ""]
        for f in r.figures:
            md += [f"![{r.id}]({f})", ""]
        if r.error:
            md += ["```", r.error, "```", ""]
    report = out_dir / "REPORT.md"
    results_json = out_dir / "results.json"
    # results.json first: a crash between the two leaves the machine-readable file current
    atomic_write(results_json, json.dumps([to_jsonable(r.to_json()) for r in results],
                                          indent=1, allow_nan=False) + "\n")
    atomic_write(report, "\n".join(md) + "\n")
    return report, results_json
