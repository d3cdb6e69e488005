"""Keypoint matches between frame pairs, and the matchers that make them (pluggable): the learned
SuperPoint + LightGlue (engine.geometry.lightglue) or the oracle below, which knows a video's true
geometry."""

from __future__ import annotations

import abc
import importlib
from dataclasses import dataclass

import torch

from videogpa.engine.geometry.base import Geometry
from videogpa.engine.geometry.pointcloud import unproject_depth


def frame_pairs(n_frames: int, stride: int | None = None) -> list[tuple[int, int]]:
    """Consecutive frame pairs (i, i + 1), plus (i, i + stride) when stride > 1 is given."""
    if n_frames < 2:
        raise ValueError(f"frame_pairs: need at least 2 frames, got {n_frames}")
    if stride is not None and stride < 1:
        raise ValueError(f"frame_pairs: stride must be ≥ 1, got {stride}")
    pairs = [(i, i + 1) for i in range(n_frames - 1)]
    if stride is not None and stride > 1:
        pairs += [(i, i + stride) for i in range(n_frames - stride)]
    return pairs


@dataclass
class PairMatches:
    """Matches of P frame pairs, padded to N per pair. Pixel coordinates (x = column, y = row), integer
    values at pixel centres; padding entries are 0 with valid False."""

    pairs: torch.Tensor  # [P, 2] long: (i, j) frame indices
    points1: torch.Tensor  # [P, N, 2] in frame i
    points2: torch.Tensor  # [P, N, 2] in frame j
    valid: torch.Tensor  # [P, N] bool

    def __post_init__(self) -> None:
        p, n = self.valid.shape if self.valid.ndim == 2 else (None, None)
        if p is None or self.pairs.shape != (p, 2):
            raise ValueError(
                f"PairMatches: valid must be [P, N] and pairs [P, 2], got {tuple(self.valid.shape)} and "
                f"{tuple(self.pairs.shape)}"
            )
        for name in ("points1", "points2"):
            if tuple(getattr(self, name).shape) != (p, n, 2):
                raise ValueError(
                    f"PairMatches.{name} must be [{p}, {n}, 2], got {tuple(getattr(self, name).shape)}"
                )

    @property
    def counts(self) -> torch.Tensor:
        """Matches per pair [P]."""
        return self.valid.sum(dim=1)


class FeatureMatcher(abc.ABC):
    """Frames [T, 3, H, W] in [0, 1] and frame pairs -> PairMatches (all pairs of a video in one call)."""

    name: str = "matcher"
    needs_geometry: bool = False  # True: match() needs the video's known geometry (the oracle)

    @abc.abstractmethod
    def match(
        self, frames: torch.Tensor, pairs: list[tuple[int, int]], geometry: Geometry | None = None
    ) -> PairMatches:
        """Matches of every pair (i, j) of `pairs`."""


def pad_matches(pairs: list[tuple[int, int]], found: list[tuple[torch.Tensor, torch.Tensor]]) -> PairMatches:
    """PairMatches from per-pair (points1 [n_p, 2], points2 [n_p, 2]), padded to the largest n_p."""
    n = max([1] + [a.shape[0] for a, _ in found])
    device = found[0][0].device if found else torch.device("cpu")
    p1 = torch.zeros(len(pairs), n, 2, device=device)
    p2 = torch.zeros_like(p1)
    valid = torch.zeros(len(pairs), n, dtype=torch.bool, device=device)
    for k, (a, b) in enumerate(found):
        p1[k, : a.shape[0]], p2[k, : b.shape[0]], valid[k, : a.shape[0]] = a, b, True
    return PairMatches(torch.tensor(pairs, dtype=torch.long, device=device).reshape(-1, 2), p1, p2, valid)


class GeometryMatcher(FeatureMatcher):
    """The oracle: grid pixels of frame i unprojected with the true depth and cameras, projected into frame j,
    kept where they land inside it and are visible there (the depth there agrees within depth_tolerance)."""

    name = "oracle"
    needs_geometry = True

    def __init__(self, grid_stride: int = 4, depth_tolerance: float = 0.01) -> None:
        if grid_stride < 1:
            raise ValueError(f"GeometryMatcher: grid_stride must be ≥ 1, got {grid_stride}")
        self.grid_stride, self.depth_tolerance = grid_stride, depth_tolerance

    def match(
        self, frames: torch.Tensor, pairs: list[tuple[int, int]], geometry: Geometry | None = None
    ) -> PairMatches:
        if geometry is None:
            raise ValueError("oracle matcher: needs the video's geometry (a stored .geometry.safetensors)")
        depth = geometry.depth.to(frames.device).float()
        if (frames.shape[0], *frames.shape[2:]) != tuple(depth.shape):
            raise ValueError(
                f"oracle matcher: frames {tuple(frames.shape)} do not match the geometry's [T, H, W] = "
                f"{tuple(depth.shape)}"
            )
        k = geometry.intrinsics.to(depth).float()
        e = geometry.extrinsics.to(depth).float()
        height, width = depth.shape[-2:]
        world = unproject_depth(depth, k, e)  # [T, H, W, 3]
        s = self.grid_stride
        rows = torch.arange(s // 2, height, s, device=depth.device)
        cols = torch.arange(s // 2, width, s, device=depth.device)
        v, u = torch.meshgrid(rows, cols, indexing="ij")
        grid = torch.stack([u, v], dim=-1).reshape(-1, 2).float()
        found = []
        for i, j in pairs:
            points = world[i][v, u].reshape(-1, 3)
            ok = depth[i][v, u].reshape(-1) > 0
            cam = points @ e[j, :, :3].T + e[j, :, 3]
            z = cam[:, 2]
            proj = cam @ k[j].T
            uv = proj[:, :2] / proj[:, 2:].clamp(min=1e-8)
            px = uv.round().long()
            inside = (px[:, 0] >= 0) & (px[:, 0] < width) & (px[:, 1] >= 0) & (px[:, 1] < height) & (z > 0)
            seen = depth[j][px[:, 1].clamp(0, height - 1), px[:, 0].clamp(0, width - 1)]
            visible = (seen - z).abs() <= self.depth_tolerance * z.abs()
            keep = ok & inside & visible
            found.append((grid[keep], uv[keep]))
        return pad_matches(pairs, found)


# name -> (module, class); the learned matcher's module (transformers) is imported only when asked for.
MATCHERS = {
    "oracle": ("videogpa.engine.geometry.matching", "GeometryMatcher"),
    "lightglue": ("videogpa.engine.geometry.lightglue", "LightGlueMatcher"),
}


def build_matcher(name: str, **kwargs) -> FeatureMatcher:
    """oracle: grid_stride=, depth_tolerance=; lightglue: lightglue_path=, superpoint_path=, device=, size=,
    max_keypoints=, keypoint_threshold=."""
    if name not in MATCHERS:
        raise ValueError(f"matcher must be one of {sorted(MATCHERS)}, got {name!r}")
    module, cls = MATCHERS[name]
    klass = getattr(importlib.import_module(module), cls)
    return klass.from_folders(**kwargs) if hasattr(klass, "from_folders") else klass(**kwargs)
