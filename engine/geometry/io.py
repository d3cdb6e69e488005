"""Geometry sidecar files: one video's Geometry as safetensors next to it
(`<video stem>.geometry.safetensors`)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from videogpa.engine.geometry.base import Geometry
from videogpa.engine.io.atomic import atomic_path

FORMAT = "videogpa.geometry"
SUFFIX = ".geometry.safetensors"
_FIELDS = ("depth", "depth_conf", "intrinsics", "extrinsics", "world_points", "world_points_conf")
_REQUIRED = _FIELDS[:4]


def sidecar_path(video: str | os.PathLike) -> Path:
    """Where a video's stored geometry lives: clip.mp4 -> clip.geometry.safetensors (folders:
    <dir>.geometry...)."""
    video = Path(video)
    return video.with_name(video.stem + SUFFIX) if video.suffix else video.with_name(video.name + SUFFIX)


def save_geometry(path: str | os.PathLike, geometry: Geometry) -> None:
    """Write atomically (temporary file, then rename)."""
    path = Path(path)
    tensors = {
        k: getattr(geometry, k).detach().float().contiguous().cpu()
        for k in _FIELDS
        if getattr(geometry, k) is not None
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT})


def load_geometry(path: str | os.PathLike, device: torch.device | str = "cpu") -> Geometry:
    """Read a sidecar; ValueError naming the file when it is missing, unreadable or lacks a field."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"geometry file {path} does not exist")
    try:
        tensors = load_file(str(path), device=str(device))
    except (SafetensorError, OSError) as err:
        raise ValueError(f"geometry file {path} is not a readable safetensors file: {err}") from err
    missing = [k for k in _REQUIRED if k not in tensors]
    if missing:
        raise ValueError(f"geometry file {path} lacks the field(s) {missing} (needs {list(_REQUIRED)})")
    try:
        return Geometry(**{k: tensors[k] for k in _FIELDS if k in tensors})
    except ValueError as err:
        raise ValueError(f"geometry file {path}: {err}") from err


def select_frames(geometry: Geometry, indices: list[int]) -> Geometry:
    """The geometry of frames `indices` only."""
    picked = {k: getattr(geometry, k) for k in _FIELDS}
    return Geometry(**{k: None if v is None else v[indices] for k, v in picked.items()})


def crop_resize_geometry(geometry: Geometry, top: int, left: int, side: int, size: int) -> Geometry:
    """Geometry of the square crop [top:top+side, left:left+side] resized to size×size (maps: nearest).

    A pixel centre u of the resized image sits at left − 0.5 + (u + 0.5)·side/size in the original, so
    f' = f·s and c' = (c − left + 0.5)·s − 0.5 with s = size/side.
    """
    scale = size / side
    k = geometry.intrinsics.clone()
    k[:, 0, 0] *= scale
    k[:, 1, 1] *= scale
    k[:, 0, 2] = (k[:, 0, 2] - left + 0.5) * scale - 0.5
    k[:, 1, 2] = (k[:, 1, 2] - top + 0.5) * scale - 0.5

    def resample(x: torch.Tensor | None) -> torch.Tensor | None:
        if x is None:
            return None
        crop = x[:, top : top + side, left : left + side]
        channels_last = crop.ndim == 4
        grid = crop.permute(0, 3, 1, 2) if channels_last else crop[:, None]
        out = torch.nn.functional.interpolate(grid.float(), size=(size, size), mode="nearest-exact")
        return out.permute(0, 2, 3, 1) if channels_last else out[:, 0]

    return Geometry(
        depth=resample(geometry.depth),
        depth_conf=resample(geometry.depth_conf),
        intrinsics=k,
        extrinsics=geometry.extrinsics,
        world_points=resample(geometry.world_points),
        world_points_conf=resample(geometry.world_points_conf),
    )
