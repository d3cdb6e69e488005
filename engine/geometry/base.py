"""The interface every geometry foundation model backend implements."""

from __future__ import annotations

import abc
from dataclasses import dataclass

import torch


@dataclass
class Geometry:
    """One video's reconstruction. Cameras are world-to-camera (x_cam = R·x + t), OpenCV axes."""

    depth: torch.Tensor  # [T, H, W]
    depth_conf: torch.Tensor  # [T, H, W]
    intrinsics: torch.Tensor  # [T, 3, 3]
    extrinsics: torch.Tensor  # [T, 3, 4]
    world_points: torch.Tensor | None = None  # [T, H, W, 3]
    world_points_conf: torch.Tensor | None = None  # [T, H, W]

    def __post_init__(self) -> None:
        if self.depth.ndim != 3:
            raise ValueError(f"Geometry.depth must be [T, H, W], got shape {tuple(self.depth.shape)}")
        t, h, w = self.depth.shape
        expected = {
            "depth_conf": (self.depth_conf, (t, h, w)),
            "intrinsics": (self.intrinsics, (t, 3, 3)),
            "extrinsics": (self.extrinsics, (t, 3, 4)),
            "world_points": (self.world_points, (t, h, w, 3)),
            "world_points_conf": (self.world_points_conf, (t, h, w)),
        }
        for name, (value, shape) in expected.items():
            if value is not None and tuple(value.shape) != shape:
                raise ValueError(f"Geometry.{name} must have shape {shape}, got {tuple(value.shape)}")


class GeometryModel(abc.ABC):
    """Frames [T, 3, H, W] in [0, 1] -> Geometry (depth, confidence, cameras, optional world points)."""

    name: str = "geometry"
    # Square side the model wants its frames resized/centre-cropped to (518 for VGGT); None = any size.
    input_size: int | None = None

    @abc.abstractmethod
    def reconstruct(self, frames: torch.Tensor) -> Geometry:
        """Reconstruct one video given as frames [T, 3, H, W] in [0, 1]."""
