"""Speed and scaling benchmarks of rnnmem, printed as ratios measured in one run.

``python -m benchmarks [--quick] [--only SECTION ...] [--json FILE]`` (``make bench``) runs
the sections of issue "Speed" and prints one table; see :mod:`benchmarks.__main__`.
Each ``bench_*`` module exposes ``run(quick=False, *, tiny=False) -> list[dict]`` (rows,
:func:`benchmarks._common.row`) and can be run alone with ``python -m benchmarks.bench_X``.
"""
