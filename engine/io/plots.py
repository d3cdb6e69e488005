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


def tidy_axis(axis, bins: int = 5, integer: bool = False) -> None:
    """A numeric matplotlib axis (ax.xaxis or ax.yaxis) with at most about `bins` ticks (whole numbers when
    `integer`) whose labels stay short: values below 0.01 or from 10,000 up share one power of ten, written
    once at the axis' end (e.g. 1e-3), instead of long decimals that run into each other."""
    from matplotlib.ticker import MaxNLocator, ScalarFormatter

    axis.set_major_locator(MaxNLocator(nbins=bins, integer=integer))
    formatter = ScalarFormatter()
    formatter.set_powerlimits((-2, 4))
    axis.set_major_formatter(formatter)
