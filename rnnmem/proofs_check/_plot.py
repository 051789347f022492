"""Matplotlib set-up for report figures (Agg backend, no display needed).

Figures are written through :func:`rnnmem.files.atomic_writer` (a reader never sees half a
PNG); the format comes from the file's extension (none: PNG), and an extension matplotlib
cannot write is a named :class:`rnnmem.errors.InvalidParameterError`.
"""

from __future__ import annotations

from pathlib import Path


def pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def figure_format(fig, path) -> str:
    """The format of ``path`` (its extension, default ``png``), checked against what the
    figure's canvas can write."""
    from ..errors import InvalidParameterError

    fmt = Path(path).suffix[1:].lower() or "png"
    supported = fig.canvas.get_supported_filetypes()
    if fmt not in supported:
        raise InvalidParameterError(f"figure {str(path)!r}: cannot write format {fmt!r}; "
                                    f"use one of {', '.join(sorted(supported))}")
    return fmt


def save(fig, path) -> None:
    """Write ``fig`` to ``path`` atomically and close it (closed on error too)."""
    from ..files import atomic_writer

    import matplotlib.pyplot as plt

    try:
        fmt = figure_format(fig, path)
        fig.tight_layout()
        with atomic_writer(path) as fh:
            fig.savefig(fh, dpi=110, format=fmt)
    finally:
        plt.close(fig)
