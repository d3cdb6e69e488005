"""LPIPS-VGG (Zhang et al. 2018) in-tree: VGG16 features loaded from a local torchvision-format state dict,
the linear calibration layers from a local LPIPS weight file. Nothing is downloaded."""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# torchvision's vgg16().features layout: conv indices and the max-pools before each stage.
VGG16_CONVS = (
    (0, 3, 64),
    (2, 64, 64),
    (5, 64, 128),
    (7, 128, 128),
    (10, 128, 256),
    (12, 256, 256),
    (14, 256, 256),
    (17, 256, 512),
    (19, 512, 512),
    (21, 512, 512),
    (24, 512, 512),
    (26, 512, 512),
    (28, 512, 512),
)
POOL_BEFORE = (5, 10, 17, 24)
TAPS = (2, 7, 14, 21, 28)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 follow these convs
TAP_CHANNELS = (64, 128, 256, 512, 512)
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
EPS = 1e-10


def _load_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"LPIPS: weight file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"LPIPS: weight file {path} could not be read: {err}") from err
    if not isinstance(state, dict):
        raise ValueError(f"LPIPS: weight file {path} must hold a state dict, got {type(state).__name__}")
    return state


class LPIPS(nn.Module):
    """d(x, y) = Σ_l mean_hw ( w_l · (φ̂_l(x) − φ̂_l(y))² ), φ̂ = channel-unit-normalised VGG16
    features at relu1_2..relu5_3, inputs [T, 3, H, W] in [0, 1]; returns one distance per frame [T]."""

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleDict(
            {str(i): nn.Conv2d(cin, cout, 3, padding=1) for i, cin, cout in VGG16_CONVS}
        )
        self.lins = nn.ParameterList([nn.Parameter(torch.zeros(1, c, 1, 1)) for c in TAP_CHANNELS])
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)

    @classmethod
    def from_files(cls, vgg_path: str | os.PathLike, lin_path: str | os.PathLike) -> LPIPS:
        """vgg_path: torchvision vgg16 state dict (`features.N.weight/bias`; classifier keys ignored);
        lin_path: LPIPS vgg weights (`linK.model.*.weight`, K = 0..4, shape [1, C, 1, 1])."""
        model = cls()
        vgg = _load_state(vgg_path)
        for i, cin, cout in VGG16_CONVS:
            for name, shape in (("weight", (cout, cin, 3, 3)), ("bias", (cout,))):
                key = f"features.{i}.{name}"
                if key not in vgg:
                    raise ValueError(
                        f"LPIPS: {vgg_path} lacks {key} (expected a torchvision vgg16 state dict)"
                    )
                if tuple(vgg[key].shape) != shape:
                    raise ValueError(
                        f"LPIPS: {vgg_path} {key} has shape {tuple(vgg[key].shape)}, expected {shape}"
                    )
                getattr(model.convs[str(i)], name).copy_(vgg[key])
        lins = _load_state(lin_path)
        for k, channels in enumerate(TAP_CHANNELS):
            keys = [key for key in lins if re.fullmatch(rf"lin{k}\.model\.\d+\.weight", key)]
            if len(keys) != 1:
                raise ValueError(f"LPIPS: {lin_path} needs exactly one lin{k}.model.*.weight, found {keys}")
            if tuple(lins[keys[0]].shape) != (1, channels, 1, 1):
                raise ValueError(
                    f"LPIPS: {lin_path} {keys[0]} has shape {tuple(lins[keys[0]].shape)}, "
                    f"expected (1, {channels}, 1, 1)"
                )
            model.lins[k].copy_(lins[keys[0]])
        for name, tensor in model.state_dict().items():
            if not torch.isfinite(tensor).all():
                source = lin_path if name.startswith("lins") else vgg_path
                raise ValueError(
                    f"LPIPS: {source} holds non-finite values (NaN/inf) in the weights of {name}"
                )
        return model

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Unit-normalised features at the five taps of frames x in [0, 1]."""
        h = ((x * 2.0 - 1.0) - self.shift) / self.scale
        taps = []
        for i, _, _ in VGG16_CONVS:
            if i in POOL_BEFORE:
                h = F.max_pool2d(h, 2)
            h = F.relu(self.convs[str(i)](h))
            if i in TAPS:
                taps.append(h / (torch.sqrt((h * h).sum(dim=1, keepdim=True)) + EPS))
        return taps

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(
                f"LPIPS: inputs must be two [T, 3, H, W] tensors, got {tuple(x.shape)} and {tuple(y.shape)}"
            )
        dtype = self.lins[0].dtype
        fx, fy = self.features(x.to(dtype)), self.features(y.to(dtype))
        return sum(((a - b) ** 2 * w).sum(dim=1).mean(dim=(1, 2)) for a, b, w in zip(fx, fy, self.lins))
