"""Matplotlib figures to PNG files, headless and atomically."""

from __future__ import annotations

import os

from videogpa.engine.io.atomic import atomic_path


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike, dpi: int = 80) -> None:
    """Write the figure atomically and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi)
    pyplot().close(fig)
