"""DA3GeometryModel: Depth Anything 3 behind the GeometryModel interface of the scorer."""

from __future__ import annotations

import contextlib
import os

import torch

from videogpa.engine.geometry.base import Geometry, GeometryModel
from videogpa.engine.geometry.da3.config import DA3Config
from videogpa.engine.geometry.da3.loading import load_da3
from videogpa.engine.geometry.da3.preprocess import PROCESS_RES, preprocess
from videogpa.engine.types import default_device, resolve_compute_dtype


def geometry_from_outputs(out: dict[str, torch.Tensor], index: int) -> Geometry:
    """The `index`-th video of a DA3 output as a Geometry (no world points: scoring unprojects the depth)."""
    return Geometry(
        depth=out["depth"][index],
        depth_conf=out["depth_conf"][index],
        intrinsics=out["intrinsics"][index],
        extrinsics=out["extrinsics"][index],
    )


class DA3GeometryModel(GeometryModel):
    """Any-view DA3 from local weights; the backbone runs under `dtype` autocast, the rest in float32.

    Frame size: it scores DA3's processed frames, 504 px, as the authors do. input_size = process_res (504),
    so the score stage centre-crops and resizes every frame to 504×504, which the official processing
    (longest side to 504, sides to multiples of 14) leaves as it is: depth, cameras and the scored frames
    share one grid. (The authors crop to 518 and let DA3 resize to 504; here the crop goes straight to 504.)
    Frames of another size are a ValueError, since their geometry would not match them pixel for pixel.
    """

    name = "da3"

    def __init__(
        self,
        weights_path: str | os.PathLike,
        device: torch.device | str | None = None,
        dtype: torch.dtype | str | None = None,
        config: str | dict | DA3Config | None = None,
        process_res: int = PROCESS_RES,
        ref_view_strategy: str = "saddle_balanced",
    ) -> None:
        self.device = torch.device(device or default_device())
        self.dtype = resolve_compute_dtype(dtype, self.device)
        self.model = load_da3(weights_path, config, self.device)
        if not self.model.config.cameras:
            raise ValueError(
                f"DA3 weights {weights_path}: the da3 backend needs an any-view model with cameras "
                "(da3-small/-base/-large/-giant), not a mono/metric one"
            )
        self.input_size = process_res
        self.ref_view_strategy = ref_view_strategy

    def _autocast(self):
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    @torch.inference_mode()
    def predict(self, videos: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw network outputs for videos [B, T, 3, H, W] in [0, 1] already at the processed size."""
        if videos.ndim != 5 or not videos.is_floating_point():
            raise ValueError(
                f"videos must be floating point [B, T, 3, H, W] in [0, 1], got {tuple(videos.shape)}"
            )
        images = preprocess(videos.to(self.device, torch.float32), self.input_size)
        if images.shape != videos.shape:
            raise ValueError(
                "da3 scores its processed frames: give frames of the size DA3 processes them to "
                "(longest side "
                f"{self.input_size}, sides multiples of 14, e.g. {self.input_size}²), got "
                f"{tuple(videos.shape[-2:])}, which it would resize to {tuple(images.shape[-2:])}"
            )
        with self._autocast():
            return self.model(images, ref_view_strategy=self.ref_view_strategy)

    def reconstruct_batch(self, videos: torch.Tensor) -> list[Geometry]:
        """Several videos [B, T, 3, H, W] in one call → one Geometry each."""
        out = self.predict(videos)
        return [geometry_from_outputs(out, i) for i in range(videos.shape[0])]

    def reconstruct(self, frames: torch.Tensor) -> Geometry:
        if frames.ndim != 4:
            raise ValueError(f"frames must be [T, 3, H, W], got {tuple(frames.shape)}")
        return self.reconstruct_batch(frames[None])[0]
