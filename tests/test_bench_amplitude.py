"""Smoke test of benchmark section (g), the cost of the amplitude search (no timing is
asserted: timings on a shared machine are not test material)."""

import json

from benchmarks import _common as C
from benchmarks import bench_amplitude


def test_section_g_runs_tiny_and_returns_well_formed_rows():
    rows = bench_amplitude.run(tiny=True)
    assert rows
    for r in rows:
        C.check_row(r)
        assert r["section"] == "g" and r["status"] == "ok"
        v = r["values"]
        assert v["calls_search"] > v["calls_single"] >= 1  # the search costs extra calls
        assert v["probes_search"] > v["probes_single"]
        assert v["max_gain_over_one_amplitude"] >= 1.0 - 1e-9  # amplitude 1 is on the grid
    json.dumps(rows)
    assert "amplitude search" in C.format_table(rows)
