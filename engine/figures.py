"""Pictures a person judges a run by: frame grids of validation videos (rows = videos, columns = frames,
each row titled with its scores), written as PNGs (engine.io.plots) and handed to the loggers."""

from __future__ import annotations

import os

import torch

from videogpa.engine.io.plots import pyplot, save_figure


def _image(frame: torch.Tensor):
    """A [3, H, W] frame in [0, 1] as an [H, W, 3] array for imshow."""
    return frame.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def score_label(row: dict | None) -> str:
    """'3DCS 0.0123 | MSE … | LPIPS … | motion …' of a score row (the values it has), '' when unscored."""
    if not row or row.get("status") != "ok":
        return "" if not row else f"score error: {row.get('error', '?')}"[:80]
    parts = [("3DCS", "score"), ("MSE", "mse"), ("LPIPS", "lpips"), ("motion", "motion")]
    return " | ".join(f"{name} {row[key]:.4g}" for name, key in parts if row.get(key) is not None)


def frame_grid(rows: list[tuple[str, torch.Tensor]], title: str):
    """A figure with one row per (label, frames [T, 3, H, W] in [0, 1]) and one column per frame."""
    plt = pyplot()
    cols = max(len(frames) for _, frames in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.6 * cols, 1.75 * len(rows) + 0.4), squeeze=False)
    for (label, frames), line in zip(rows, axes):
        for k, ax in enumerate(line):
            ax.set_axis_off()
            if k < len(frames):
                ax.imshow(_image(frames[k]), interpolation="nearest")
        line[0].set_title(label, fontsize=7, loc="left")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def save_frame_grid(
    rows: list[tuple[str, torch.Tensor]], title: str, path: str | os.PathLike, log=None
) -> None:
    """frame_grid written to `path` (PNG); log(fig) first, when given (e.g. a logger's figure method)."""
    fig = frame_grid(rows, title)
    if log is not None:
        log(fig)
    save_figure(fig, path, dpi=100)
