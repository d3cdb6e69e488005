"""Pictures a person judges a run by: frame grids of validation videos (rows = videos, columns = frames,
each row titled with its scores), written as PNGs (engine.io.plots) and handed to the loggers."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch

from videogpa.engine.io.plots import pyplot, save_figure


def _image(frame: torch.Tensor):
    """A [3, H, W] frame in [0, 1] as an [H, W, 3] array for imshow."""
    return frame.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def short(text: str, n: int = 64) -> str:
    """text cut in the middle to at most n characters (prompts often differ only at their ends)."""
    return text if len(text) <= n else f"{text[: n // 2 - 1]}…{text[-(n // 2 - 1) :]}"


def score_label(row: dict | None) -> str:
    """'3DCS 0.0123 | MSE … | LPIPS … | motion …' of a score row (the values it has), '' when
    unscored."""
    if not row or row.get("status") != "ok":
        return "" if not row else f"score error: {row.get('error', '?')}"[:80]
    parts = [("3DCS", "score"), ("MSE", "mse"), ("LPIPS", "lpips"), ("motion", "motion")]
    text = " | ".join(f"{name} {row[key]:.4g}" for name, key in parts if row.get(key) is not None)
    return text + (" | LPIPS off" if "mse" in row and row.get("lpips") is None else "")


# The tile pictures (frame grids, pairs): every frame at a readable size whatever the video's size. A tile's
# short side is at least MIN_TILE pixels (a small frame is enlarged by a whole factor, nearest neighbour, so
# its pixels stay sharp squares) and its long side at most MAX_TILE (a large frame is reduced).
DPI = 100
MIN_TILE, MAX_TILE = 96, 192
PAD, GAP, ROW_GAP, GROUP_GAP = 10, 4, 8, 16  # pixels: margin, between tiles, rows, and before a heading
MIN_WIDTH = 420  # pixels inside the margins: room for the labels however few the tiles
TITLE_PT, HEADING_PT, LABEL_PT = 11, 10, 9


@dataclass
class TileRow:
    """One row of a tile picture: its label (written above it) and its images, each [H, W, 3] in [0, 1] or
    [H, W] drawn with `cmap` from vmin to vmax. `heading`: a bold line above the label (a group's title)."""

    label: str
    images: list
    cmap: str | None = None
    vmin: float = 0.0
    vmax: float = 1.0
    heading: str = ""


def enlarge(image: np.ndarray, factor: int) -> np.ndarray:
    """Each pixel as a factor × factor square (nearest neighbour)."""
    return image if factor == 1 else image.repeat(factor, axis=0).repeat(factor, axis=1)


def tile_shape(height: int, width: int) -> tuple[int, int, int]:
    """(whole enlargement factor, tile height, tile width) in pixels of a height × width image."""
    factor = max(1, math.ceil(MIN_TILE / max(1, min(height, width))))
    h, w = height * factor, width * factor
    if factor == 1 and max(h, w) > MAX_TILE:
        scale = MAX_TILE / max(h, w)
        h, w = max(MIN_TILE, round(h * scale)), max(MIN_TILE, round(w * scale))
    return factor, h, w


class _Texts:
    """Text wrapped and measured as matplotlib draws it at DPI (on a scratch figure)."""

    def __init__(self):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.fig = Figure(dpi=DPI)
        self.renderer = FigureCanvasAgg(self.fig).get_renderer()

    def size(self, text: str, points: float, weight: str) -> tuple[float, float]:
        t = self.fig.text(0, 0, text, fontsize=points, weight=weight)
        box = t.get_window_extent(self.renderer)
        t.remove()
        return box.width, box.height

    def wrap(self, text: str, width: float, points: float, weight: str) -> str:
        """text broken at spaces into lines no wider than `width` pixels (a longer word stays whole)."""
        lines: list[str] = []
        for word in text.split(" "):
            if lines and self.size(f"{lines[-1]} {word}", points, weight)[0] <= width:
                lines[-1] = f"{lines[-1]} {word}"
            else:
                lines.append(word)
        return "\n".join(lines)


def tile_figure(rows: list[TileRow], title: str = ""):
    """A figure of rows of image tiles, laid out in pixels (save it at DPI): the title, then per row its
    heading and label (wrapped to the picture's width) above its tiles, of the sizes tile_shape gives."""
    plt = pyplot()
    shapes = [[tile_shape(*np.asarray(im).shape[:2]) for im in row.images] for row in rows]
    tiles = max((sum(w for _, _, w in s) + GAP * (len(s) - 1) for s in shapes if s), default=0)
    width = 2 * PAD + max(tiles, MIN_WIDTH)
    measure, texts = _Texts(), []  # (x, y from the top, text, points, weight)
    y = PAD

    def text(line: str, points: float, weight: str = "normal") -> None:
        nonlocal y
        if line:
            wrapped = measure.wrap(line, width - 2 * PAD, points, weight)
            texts.append((PAD, y, wrapped, points, weight))
            y += measure.size(wrapped, points, weight)[1] + 2

    text(title, TITLE_PT, "bold")
    placed = []  # (x, y from the top, w, h, image, row)
    for row, shape in zip(rows, shapes):
        y += (GROUP_GAP if row.heading else ROW_GAP) if placed or title else 0
        text(row.heading, HEADING_PT, "bold")
        text(row.label, LABEL_PT)
        y = math.ceil(y + 2)
        x = PAD
        for image, (factor, h, w) in zip(row.images, shape):
            placed.append((x, y, w, h, enlarge(np.asarray(image), factor), row))
            x += w + GAP
        y += max((h for _, h, _ in shape), default=0)
    height = math.ceil(y + PAD)
    fig = plt.figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    for x, top, line, points, weight in texts:
        fig.text(x / width, 1 - top / height, line, fontsize=points, weight=weight, va="top", ha="left")
    for x, top, w, h, image, row in placed:
        ax = fig.add_axes((x / width, 1 - (top + h) / height, w / width, h / height))
        ax.set_axis_off()
        kwargs = {} if image.ndim == 3 else {"cmap": row.cmap or "gray", "vmin": row.vmin, "vmax": row.vmax}
        ax.imshow(image, interpolation="nearest", aspect="auto", **kwargs)
    return fig


def frame_grid(rows: list[tuple[str, torch.Tensor]], title: str):
    """A figure with one row per (label, frames [T, 3, H, W] in [0, 1]) and one tile per frame."""
    return tile_figure([TileRow(label, [_image(f) for f in frames]) for label, frames in rows], title)


def save_frame_grid(
    rows: list[tuple[str, torch.Tensor]], title: str, path: str | os.PathLike, log=None
) -> None:
    """frame_grid written to `path` (PNG); log(fig) first, when given (e.g. a logger's figure method)."""
    fig = frame_grid(rows, title)
    if log is not None:
        log(fig)
    save_figure(fig, path, dpi=DPI)


# What the score stage keeps of a figured video (ScoreConfig.figures) for the pictures: a few frames, their
# renders, error maps and hit masks, downscaled (figures/<stem>.safetensors beside the PNG).
FIGURE_FRAMES, FIGURE_SIZE = 5, 128


def _evenly(n: int, k: int) -> list[int]:
    return sorted({round(i * (n - 1) / max(k - 1, 1)) for i in range(min(n, k))})


@torch.no_grad()
def consistency_arrays(
    frames: torch.Tensor, geometry, *, conf_thres: float = 0.0, points: str = "auto", backend: str = "auto"
) -> dict[str, torch.Tensor]:
    """frames [T, 3, H, W] in [0, 1] and their reconstruction → a few frames' {frames, renders, error, hit}:
    the point cloud rendered into each frame's camera (nearest point, empty pixels black, as scored), the
    per-pixel squared error (mean over RGB) and where a point landed, at most FIGURE_SIZE pixels a side."""
    import torch.nn.functional as F

    from videogpa.engine.geometry.pointcloud import geometry_point_cloud
    from videogpa.kernels.reproject import render_point_cloud

    frames = frames.float()
    geometry = type(geometry)(
        **{k: v.to(frames.device) if torch.is_tensor(v) else v for k, v in vars(geometry).items()}
    )
    cloud, colors = geometry_point_cloud(geometry, frames, conf_thres, source=points)
    images, hit = render_point_cloud(
        cloud,
        colors,
        geometry.intrinsics,
        geometry.extrinsics,
        frames.shape[-2],
        frames.shape[-1],
        backend=backend,
    )
    renders = (images + 1.0) / 2.0
    pick = _evenly(frames.shape[0], FIGURE_FRAMES)
    scale = min(1.0, FIGURE_SIZE / max(frames.shape[-2:]))
    size = [max(1, round(s * scale)) for s in frames.shape[-2:]]
    down = lambda x: F.interpolate(x, size=size, mode="area") if scale < 1 else x  # noqa: E731
    error = ((frames - renders) ** 2).mean(1, keepdim=True)
    return {
        "frames": down(frames[pick]).half().cpu(),
        "renders": down(renders[pick]).half().cpu(),
        "error": down(error[pick])[:, 0].half().cpu(),
        "hit": F.interpolate(hit[pick, None].float(), size=size, mode="nearest")[:, 0].bool().cpu(),
    }


def consistency_figure(arrays: dict[str, torch.Tensor], title: str, vmax: float | None = None):
    """Rows: sampled frames, the cloud rendered into their cameras, the per-pixel error, the hit mask."""
    plt = pyplot()
    cols = arrays["frames"].shape[0]
    vmax = vmax or float(arrays["error"].float().max()) or 1.0
    fig, axes = plt.subplots(4, cols, figsize=(1.5 * cols + 0.9, 6.4), squeeze=False, layout="constrained")
    for r, (key, name) in enumerate(
        (
            ("frames", "frame"),
            ("renders", "render"),
            ("error", "error"),
            ("hit", "hit mask\n(white: a point)"),
        )
    ):
        for c, ax in enumerate(axes[r]):
            ax.set_xticks([]), ax.set_yticks([])
            data = arrays[key][c].float()
            if key in ("frames", "renders"):
                ax.imshow(_image(data), interpolation="nearest")
            elif key == "error":
                im = ax.imshow(data.numpy(), cmap="magma", vmin=0, vmax=vmax, interpolation="nearest")
            else:
                ax.imshow(data.numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        axes[r][0].set_ylabel(name, fontsize=10)
    fig.colorbar(im, ax=list(axes[2]), fraction=0.03, pad=0.01)
    fig.suptitle(title, fontsize=10)
    return fig


def save_consistency_figure(arrays: dict[str, torch.Tensor], title: str, png: str | os.PathLike) -> None:
    """The PNG and, beside it, the arrays (safetensors) that the pairs figure reuses."""
    from pathlib import Path

    from safetensors.torch import save_file

    from videogpa.engine.io.atomic import atomic_path

    with atomic_path(Path(png).with_suffix(".safetensors")) as tmp:
        save_file({k: v.contiguous() for k, v in arrays.items()}, str(tmp))
    save_figure(consistency_figure(arrays, title), png, dpi=90)


def load_consistency_arrays(png: str | os.PathLike) -> dict[str, torch.Tensor] | None:
    """The arrays saved beside a video's consistency figure (None when it has none)."""
    from pathlib import Path

    from safetensors.torch import load_file

    path = Path(png).with_suffix(".safetensors")
    return load_file(str(path)) if path.is_file() else None


PAIRS_TITLE = "preference pairs: each prompt's winner (lower 3DCS) above its loser"


def pairs_figure(pairs: list[dict]):
    """A few pairs: per pair the winner's frames and error maps, then the loser's (same colour scale per
    pair). Each pair is {"title", "winner": (label, arrays), "loser": (label, arrays)}; arrays without an
    error map (a video scored without figures) show frames only."""
    rows = []
    for pair in pairs:
        both = [a for _, a in (pair["winner"], pair["loser"]) if "error" in a]
        vmax = max((float(a["error"].float().max()) for a in both), default=1.0) or 1.0
        for side in ("winner", "loser"):
            label, arrays = pair[side]
            heading = pair["title"] if side == "winner" else ""
            rows.append(
                TileRow(f"{side}: {label}", [_image(f.float()) for f in arrays["frames"]], heading=heading)
            )
            if "error" in arrays:
                rows.append(
                    TileRow(
                        f"{side}'s error per pixel against the render (black 0 … bright {vmax:.3g})",
                        [e.float().numpy() for e in arrays["error"]],
                        cmap="magma",
                        vmax=vmax,
                    )
                )
    return tile_figure(rows, PAIRS_TITLE)


def video_arrays(video: str | os.PathLike, figures: str | os.PathLike) -> dict[str, torch.Tensor] | None:
    """A scored video's figure arrays from the score stage's `figures` folder, else a few of its frames (None
    when the video cannot be read)."""
    from pathlib import Path

    from videogpa.engine.io.video import load_video

    arrays = load_consistency_arrays(Path(figures) / f"{Path(video).stem}.png")
    if arrays is not None:
        return arrays
    try:
        frames = load_video(video, FIGURE_FRAMES).frames
    except (OSError, ValueError):
        return None
    scale = min(1.0, FIGURE_SIZE / max(frames.shape[-2:]))
    if scale < 1:
        frames = torch.nn.functional.interpolate(frames, scale_factor=scale, mode="area")
    return {"frames": frames}


def save_pairs_figure(
    pairs: list, figures: str | os.PathLike, path: str | os.PathLike, count: int = 3
) -> None:
    """pairs_figure of the first `count` pairs (engine.stages.pairs.Pair), error maps where the score stage
    drew the videos (ScoreConfig.figures)."""

    def label(v):
        return f"3DCS {v.score:.4g}" + (f", motion {v.motion:.3g}" if v.motion is not None else "")

    shown = []
    for p in pairs:
        winner, loser = video_arrays(p.winner.video, figures), video_arrays(p.loser.video, figures)
        if winner is not None and loser is not None:  # videos that cannot be read are left out
            prompt = p.winner.extra.get("prompt", p.prompt)
            shown.append(
                {
                    "title": f"{short(prompt, 120)} (3DCS\xa0gap\xa0{p.gap:.3g})",
                    "winner": (label(p.winner), winner),
                    "loser": (label(p.loser), loser),
                }
            )
        if len(shown) == count:
            break
    if shown:
        save_figure(pairs_figure(shown), path, dpi=DPI)


def save_before_after_grid(
    base: str | os.PathLike,
    tuned: str | os.PathLike,
    path: str | os.PathLike,
    count: int = 3,
    frames: int = 6,
) -> None:
    """The same prompts and seeds without and with the LoRA: frame rows of the first `count` (prompt, seed)
    generated in both folders (each a generate-stage folder with its scores.jsonl), labelled with their
    3DCS."""
    from pathlib import Path

    from videogpa.engine.io.sharded import read_sharded
    from videogpa.engine.io.video import load_video

    def videos(folder: Path) -> dict:
        scores = {
            Path(r["video"]).name: r for r in read_sharded(folder / "scores.jsonl") if r.get("status") == "ok"
        }
        return {
            (r["prompt_id"], r["seed"]): (folder / r["video"], r["prompt"], scores.get(Path(r["video"]).name))
            for r in read_sharded(folder / "manifest.jsonl")
        }

    before, after = videos(Path(base)), videos(Path(tuned))
    rows = []
    for key in sorted(set(before) & set(after))[:count]:
        for name, (video, prompt, score) in (("before", before[key]), ("after", after[key])):
            label = f"{name}: {key[0]} {short(prompt, 120)} (seed {key[1]})  {score_label(score)}"
            rows.append((label, load_video(video, frames).frames))
    if rows:
        save_frame_grid(rows, "before vs after training: the same prompt and seed", path)
