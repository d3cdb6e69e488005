"""DepthAnything3Net: backbone, head and cameras, with the official state-dict names; build_da3 by size
or config."""

from __future__ import annotations

import math

import torch
from torch import nn

from videogpa.engine.geometry.da3.cameras import CameraDec, CameraEnc, pose_encoding_to_cameras
from videogpa.engine.geometry.da3.config import DA3Config, resolve_config
from videogpa.engine.geometry.da3.dpt import GaussianHeadWeights, MonoDPT
from videogpa.engine.geometry.da3.dual_dpt import DualDPT
from videogpa.engine.geometry.da3.vit import Backbone


class DepthAnything3Net(nn.Module):
    """Normalised images [B, S, 3, H, W] (H, W multiples of 14) → depth, cameras and rays (any-view models)
    or depth and sky (mono, metric). See forward."""

    def __init__(self, config: DA3Config) -> None:
        super().__init__()
        c = self.config = config
        self.backbone = Backbone(c)
        head = DualDPT if c.head == "dualdpt" else MonoDPT
        self.head = head(c.head_dim_in, c.head_features, c.head_out_channels, c.head_output_dim)
        if c.cameras:
            self.cam_dec = CameraDec(c.head_dim_in)
            self.cam_enc = CameraEnc(c.embed_dim, c.cam_enc_depth, c.cam_enc_heads)
        if c.gs_head:
            self.gs_head = GaussianHeadWeights(
                c.head_dim_in, c.head_features, c.head_out_channels, c.gs_output_dim
            )

    def forward(
        self,
        images: torch.Tensor,
        extrinsics: torch.Tensor | None = None,
        intrinsics: torch.Tensor | None = None,
        ref_view_strategy: str = "saddle_balanced",
    ) -> dict[str, torch.Tensor]:
        """Any-view models: `depth`, `depth_conf` [B, S, H, W]; `extrinsics` world-to-camera [B, S, 3, 4] and
        `intrinsics` [B, S, 3, 3] in pixels, decoded from the features; `pose_enc` [B, S, 9]; `ray` [B, S,
        8h, 8w, 6] and `ray_conf`; `ref_view` [B]. Mono/metric models: `depth` and `sky`.

        Known cameras (world-to-camera [B, S, 3 or 4, 4] and K [B, S, 3, 3], normalised as the official API
        hands them over: view 0 at identity) replace the camera tokens and skip the reference-view choice.
        The backbone runs under the caller's autocast; the camera encoder, heads and decoder in float32.
        """
        self._check_inputs(images, extrinsics, intrinsics)
        image_hw = (images.shape[-2], images.shape[-1])
        camera_tokens = None
        with torch.autocast(images.device.type, enabled=False):
            if extrinsics is not None:
                camera_tokens = self.cam_enc(extrinsics, intrinsics, image_hw)
        features, tokens, reference = self.backbone(images, camera_tokens, ref_view_strategy)
        with torch.autocast(images.device.type, enabled=False):
            out = self.head([f.float() for f in features], image_hw, self.config.patch_size)
            if self.config.cameras:
                pose_enc = self.cam_dec(tokens[-1].float())
                out["extrinsics"], out["intrinsics"] = pose_encoding_to_cameras(pose_enc, image_hw)
                out["pose_enc"], out["ref_view"] = pose_enc, reference
        return out

    def _check_inputs(
        self, images: torch.Tensor, extrinsics: torch.Tensor | None, intrinsics: torch.Tensor | None
    ) -> None:
        """ValueError for images that are not [B, S, 3, H, W] on the patch grid, or unusable cameras."""
        patch = self.config.patch_size
        if images.ndim != 5 or images.shape[2] != 3 or images.shape[-1] % patch or images.shape[-2] % patch:
            raise ValueError(
                f"images must be [B, S, 3, H, W] with H and W multiples of {patch}, got {tuple(images.shape)}"
            )
        if extrinsics is None and intrinsics is None:
            return
        if not self.config.cameras:
            raise ValueError("this DA3 model (mono/metric) has no camera encoder: pass no cameras")
        b, s = images.shape[:2]
        if (
            extrinsics is None
            or intrinsics is None
            or tuple(extrinsics.shape) not in ((b, s, 3, 4), (b, s, 4, 4))
            or tuple(intrinsics.shape) != (b, s, 3, 3)
        ):
            raise ValueError(
                f"cameras must be given together: extrinsics [{b}, {s}, 3 or 4, 4] and intrinsics "
                f"[{b}, {s}, 3, 3], got {None if extrinsics is None else tuple(extrinsics.shape)} and "
                f"{None if intrinsics is None else tuple(intrinsics.shape)}"
            )


def build_da3(config: str | dict | DA3Config) -> DepthAnything3Net:
    """The network for a size name (da3-small … da3metric-large), an official or derived config dict, or a
    DA3Config; its weights are freshly initialised (build under torch.device("meta") to skip that)."""
    return DepthAnything3Net(resolve_config(config))


RANDOM_FOV = math.pi / 3  # 60°: both fields of view of random_da3's cameras


def random_da3(config: str | dict | DA3Config) -> DepthAnything3Net:
    """Random weights (from the torch seed) with scorable cameras: the decoder's field-of-view layer is set to
    a constant RANDOM_FOV (random weights send about half of them through the ReLU to 0). For mechanics
    (tests, benchmarks) only: its geometry means nothing."""
    model = build_da3(config)
    if model.config.cameras:
        fov = model.cam_dec.fc_fov[0]
        with torch.no_grad():
            fov.weight.zero_()
            fov.bias.fill_(RANDOM_FOV)
    return model
