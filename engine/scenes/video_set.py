"""Write a synthetic scoring set: per scene a clean clip and its corrupted versions, each video with its
stored oracle geometry (`<stem>.geometry.safetensors`) and one JSONL manifest row."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from tqdm import tqdm

from videogpa.engine.geometry.base import Geometry
from videogpa.engine.geometry.io import save_geometry, sidecar_path
from videogpa.engine.io.video import write_video
from videogpa.engine.scenes.procedural import (
    CAMERA_PATHS,
    CORRUPTIONS,
    Clip,
    corrupt,
    make_scene,
    render_clip,
)

MANIFEST = "manifest.jsonl"
STRENGTH_RANGE = (0.3, 1.0)


def clip_geometry(clip: Clip) -> Geometry:
    """The oracle geometry of a clip: its true depth (confidence 1) and cameras."""
    return Geometry(
        depth=clip.depth,
        depth_conf=torch.ones_like(clip.depth),
        intrinsics=clip.intrinsics,
        extrinsics=clip.extrinsics,
    )


def write_synthetic_set(
    out_dir: str | os.PathLike,
    n_scenes: int,
    *,
    n_frames: int = 10,
    size: int = 64,
    kinds: tuple[str, ...] = CORRUPTIONS,
    seed: int = 0,
    video_suffix: str = ".mp4",
    progress: bool = True,
) -> Path:
    """Render n_scenes scenes (camera path cycling pan/dolly/orbit) plus one corruption per kind, strength
    drawn from STRENGTH_RANGE; returns the manifest path. Rows: video, geometry (relative paths), group
    (scene index), scene_seed, camera_path, corruption (None = clean), strength, n_frames, height, width."""
    if n_scenes < 1:
        raise ValueError(f"write_synthetic_set: n_scenes must be ≥ 1, got {n_scenes}")
    unknown = [k for k in kinds if k not in CORRUPTIONS]
    if unknown:
        raise ValueError(f"write_synthetic_set: unknown corruption kind(s) {unknown}; known: {CORRUPTIONS}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in tqdm(range(n_scenes), desc="synthetic scenes", disable=not progress):
        scene_seed = int(torch.randint(2**31 - 1, (1,), generator=g))
        path = CAMERA_PATHS[i % len(CAMERA_PATHS)]
        clean = render_clip(make_scene(scene_seed), path, n_frames, size, size)
        variants: list[tuple[str | None, float, Clip]] = [(None, 0.0, clean)]
        for j, kind in enumerate(kinds):
            lo, hi = STRENGTH_RANGE
            strength = round(lo + (hi - lo) * float(torch.rand(1, generator=g)), 3)
            variants.append((kind, strength, corrupt(clean, kind, strength, seed=scene_seed + j + 1)))
        for kind, strength, clip in variants:
            video = out / f"scene{i:04d}_{kind or 'clean'}{video_suffix}"
            write_video(video, clip.frames)
            save_geometry(sidecar_path(video), clip_geometry(clip))
            rows.append(
                {
                    "video": video.name,
                    "geometry": sidecar_path(video).name,
                    "group": i,
                    "scene_seed": scene_seed,
                    "camera_path": path,
                    "corruption": kind,
                    "strength": strength,
                    "n_frames": n_frames,
                    "height": size,
                    "width": size,
                }
            )
    manifest = out / MANIFEST
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest
