"""The `oracle` backend: returns the ground-truth geometry stored with a (synthetic) video."""

from __future__ import annotations

import os

import torch

from videogpa.engine.geometry.base import Geometry, GeometryModel
from videogpa.engine.geometry.io import load_geometry


class OracleGeometryModel(GeometryModel):
    """Knows one video's true geometry (given, or read from a sidecar file) and returns it for that video."""

    name = "oracle"
    input_size = None  # any size: the stored geometry is brought to the frames' sampling and crop

    def __init__(
        self, geometry: Geometry | None = None, geometry_path: str | os.PathLike | None = None
    ) -> None:
        if (geometry is None) == (geometry_path is None):
            raise ValueError("OracleGeometryModel: give exactly one of geometry or geometry_path")
        self.geometry = geometry if geometry is not None else load_geometry(geometry_path)

    def reconstruct(self, frames: torch.Tensor) -> Geometry:
        """The stored geometry; frames [T, 3, H, W] must have its T, H, W (ValueError otherwise)."""
        expected = tuple(self.geometry.depth.shape)
        if frames.ndim != 4 or (frames.shape[0], *frames.shape[2:]) != expected:
            raise ValueError(
                f"oracle: frames of shape {tuple(frames.shape)} do not match the stored geometry "
                f"[T, H, W] = {expected}"
            )
        return self.geometry
