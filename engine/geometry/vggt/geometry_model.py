"""VGGTGeometryModel: VGGT behind the GeometryModel interface of the scorer."""

from __future__ import annotations

import contextlib
import os

import torch

from videogpa.engine.geometry.base import Geometry, GeometryModel
from videogpa.engine.geometry.vggt.loading import load_vggt
from videogpa.engine.types import default_device, resolve_compute_dtype


def geometry_from_outputs(out: dict[str, torch.Tensor], index: int) -> Geometry:
    """The `index`-th video of a VGGT output dict as a Geometry (batch dimension dropped)."""
    return Geometry(
        depth=out["depth"][index, ..., 0],
        depth_conf=out["depth_conf"][index],
        intrinsics=out["intrinsic"][index],
        extrinsics=out["extrinsic"][index],
        world_points=out["world_points"][index],
        world_points_conf=out["world_points_conf"][index],
    )


class VGGTGeometryModel(GeometryModel):
    """Loads VGGT weights from a local file; the trunk runs under `dtype` autocast, the heads in float32."""

    name = "vggt"

    def __init__(
        self,
        weights_path: str | os.PathLike,
        device: torch.device | str | None = None,
        dtype: torch.dtype | str | None = None,
    ) -> None:
        self.device = torch.device(device or default_device())
        self.dtype = resolve_compute_dtype(dtype, self.device)
        self.model = load_vggt(weights_path, device=self.device)
        self.input_size = self.model.config.img_size

    def _autocast(self):
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    @torch.inference_mode()
    def predict(self, videos: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw model outputs for videos [B, T, 3, H, W] (or one video [T, 3, H, W]) in [0, 1]."""
        if not videos.is_floating_point():
            raise ValueError(f"frames must be floating point in [0, 1], got dtype {videos.dtype}")
        with self._autocast():
            return self.model(videos.to(self.device, torch.float32))

    def reconstruct_batch(self, videos: torch.Tensor) -> list[Geometry]:
        """Several videos [B, T, 3, H, W] in one call → one Geometry each."""
        if videos.ndim != 5:
            raise ValueError(f"videos must be [B, T, 3, H, W], got {tuple(videos.shape)}")
        out = self.predict(videos)
        return [geometry_from_outputs(out, i) for i in range(videos.shape[0])]

    def reconstruct(self, frames: torch.Tensor) -> Geometry:
        if frames.ndim != 4:
            raise ValueError(f"frames must be [T, 3, H, W], got {tuple(frames.shape)}")
        return self.reconstruct_batch(frames[None])[0]
