"""The learned matcher: SuperPoint keypoints and LightGlue matches (transformers' own models, loaded offline
from local folders), all frame pairs of a video in one batched call. transformers is imported only when a
matcher is loaded or written.

Its defaults are the authors' matching (VideoGPA's Epi, which runs the cvg LightGlue package): 8-bit grey
frames in [0, 1] (uint8 RGB, luma 0.299/0.587/0.114 rounded to 8 bits), the longer side resized to 1024
before SuperPoint (bilinear, antialiased; keypoints mapped back to the frames' pixels), at most 2,048
SuperPoint keypoints above a detection threshold of 0.0005, and LightGlue's own match filtering (mutual best,
score above the folder's filter_threshold, 0.1 by default). One difference remains: LightGlue's adaptive
depth and width (early stop, point pruning) are off, see LightGlueMatcher."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from videogpa.engine.geometry.base import Geometry
from videogpa.engine.geometry.matching import FeatureMatcher, PairMatches, pad_matches

GRAY = (0.299, 0.587, 0.114)  # NTSC luma weights (SuperPoint sees one channel)
MATCH_SIZE = 1024  # the authors' SuperPoint sees the frames with their longer side resized to 1024
MAX_KEYPOINTS = 2048  # the authors' SuperPoint keypoints per frame
KEYPOINT_THRESHOLD = 0.0005  # the authors' SuperPoint detection threshold (transformers' default is 0.005)


def _load(kind: str, path: str | os.PathLike, loader):
    """from_pretrained(path, local_files_only=True) with a one-line error naming the folder."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise ValueError(
            f"{kind} weights folder {path} has no config.json (a local transformers folder: config.json + "
            "model.safetensors; nothing is downloaded)"
        )
    try:
        return loader(str(path), local_files_only=True, output_loading_info=True)
    except (OSError, ValueError, KeyError, TypeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{kind} weights folder {path} could not be loaded: {first}") from err


class LightGlueMatcher(FeatureMatcher):
    """LightGlueForKeypointMatching (its keypoint detector is SuperPoint) on 8-bit grey frames; `size` resizes
    the frames' longer side before matching (None: as given); keypoints come back in the frames' pixels.
    `max_keypoints` and `keypoint_threshold` replace the SuperPoint folder's settings (None: keep them)."""

    name = "lightglue"

    def __init__(
        self,
        model,
        *,
        size: int | None = MATCH_SIZE,
        max_keypoints: int | None = MAX_KEYPOINTS,
        keypoint_threshold: float | None = KEYPOINT_THRESHOLD,
        device: torch.device | str = "cpu",
    ) -> None:
        self.model = model.to(device).eval()
        # Adaptive depth and width off: with several pairs per call, transformers 5.24's early stop raised
        # an IndexError (measured on random tiny weights), and per-pair stopping would tie a pair's matches
        # to the other pairs of its batch.
        self.model.depth_confidence = self.model.width_confidence = -1.0
        decoder = self.model.keypoint_detector.keypoint_decoder
        if max_keypoints is not None:
            decoder.max_keypoints = max_keypoints
        if keypoint_threshold is not None:
            decoder.keypoint_threshold = keypoint_threshold
        self.size, self.device = size, torch.device(device)

    @classmethod
    def from_folders(
        cls,
        lightglue_path: str | os.PathLike | None = None,
        superpoint_path: str | os.PathLike | None = None,
        *,
        size: int | None = MATCH_SIZE,
        max_keypoints: int | None = MAX_KEYPOINTS,
        keypoint_threshold: float | None = KEYPOINT_THRESHOLD,
        device: torch.device | str = "cpu",
    ) -> LightGlueMatcher:
        """LightGlue from its folder; SuperPoint from its own folder when given, else the LightGlue folder
        must hold the keypoint detector's weights too (ValueError naming the folder otherwise)."""
        from transformers import LightGlueForKeypointMatching, SuperPointForKeypointDetection

        if lightglue_path is None:
            raise ValueError(
                "epipolar: the lightglue matcher needs lightglue_weights (a local LightGlue folder)"
            )
        model, info = _load("LightGlue", lightglue_path, LightGlueForKeypointMatching.from_pretrained)
        missing = list(info.get("missing_keys", []))
        if superpoint_path is not None:
            detector, sp_info = _load(
                "SuperPoint", superpoint_path, SuperPointForKeypointDetection.from_pretrained
            )
            if sp_info.get("missing_keys"):
                raise ValueError(
                    f"SuperPoint weights folder {superpoint_path} lacks weights: "
                    f"{sorted(sp_info['missing_keys'])[:3]}"
                )
            model.keypoint_detector = detector
            missing = [k for k in missing if not k.startswith("keypoint_detector.")]
        if missing:
            hint = " (give superpoint_weights, a SuperPoint folder)" if superpoint_path is None else ""
            raise ValueError(
                f"LightGlue weights folder {lightglue_path} lacks weights: {sorted(missing)[:3]}{hint}"
            )
        return cls(
            model,
            size=size,
            max_keypoints=max_keypoints,
            keypoint_threshold=keypoint_threshold,
            device=device,
        )

    def _gray(self, frames: torch.Tensor) -> tuple[torch.Tensor, float, float]:
        """Grey frames [T, 3, h, w] (three equal channels) at the matching size and the pixel scale factors:
        the frames in [0, 1] truncated to 8 bits, their luma rounded to 8 bits, then resized."""
        rgb = (frames.float().clamp(0, 1) * 255).floor()
        luma = (rgb * torch.tensor(GRAY, device=frames.device)[:, None, None]).sum(1, keepdim=True)
        gray = luma.round() / 255
        height, width = frames.shape[-2:]
        if self.size is not None and max(height, width) != self.size:
            scale = self.size / max(height, width)
            new = (max(1, round(height * scale)), max(1, round(width * scale)))
            gray = torch.nn.functional.interpolate(
                gray, size=new, mode="bilinear", antialias=True, align_corners=False
            )
        return gray.expand(-1, 3, -1, -1), width / gray.shape[-1], height / gray.shape[-2]

    @torch.no_grad()
    def match(
        self, frames: torch.Tensor, pairs: list[tuple[int, int]], geometry: Geometry | None = None
    ) -> PairMatches:
        gray, sx, sy = self._gray(frames.to(self.device))
        first = torch.tensor([i for i, _ in pairs], device=self.device)
        second = torch.tensor([j for _, j in pairs], device=self.device)
        dtype = next(self.model.parameters()).dtype
        out = self.model(torch.stack([gray[first], gray[second]], dim=1).to(dtype))
        h, w = gray.shape[-2:]
        size = torch.tensor([w, h], device=self.device, dtype=torch.float32)
        scale = torch.tensor([sx, sy], device=self.device)
        matches = out.matches.reshape(len(pairs), 2, -1)  # [2P, K] without early stopping in transformers 5.x
        found = []
        for k in range(len(pairs)):
            kp0, kp1 = out.keypoints[k, 0].float() * size, out.keypoints[k, 1].float() * size
            partner = matches[k, 0].long()
            keep = (partner >= 0) & out.mask[k, 0].bool()
            # pixel centres of the matching size back to the frames': x = (x' + 0.5)·s − 0.5
            a = (kp0[keep] + 0.5) * scale - 0.5
            b = (kp1[partner[keep]] + 0.5) * scale - 0.5
            found.append((a, b))
        return pad_matches(pairs, found)


def write_random_lightglue(
    folder: str | os.PathLike, seed: int = 0, max_keypoints: int = 256, initializer_range: float = 0.02
) -> Path:
    """A tiny LightGlue + SuperPoint with random weights (for mechanics only: its matches mean nothing)."""
    from transformers import LightGlueConfig, LightGlueForKeypointMatching, SuperPointConfig

    detector = SuperPointConfig(
        encoder_hidden_sizes=[8, 8, 16, 16],
        decoder_hidden_size=32,
        descriptor_decoder_dim=32,
        max_keypoints=max_keypoints,
    )
    config = LightGlueConfig(
        keypoint_detector_config=detector.to_dict(),
        descriptor_dim=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        filter_threshold=0.0,
        initializer_range=initializer_range,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LightGlueForKeypointMatching(config)
    folder = Path(folder)
    model.save_pretrained(str(folder))
    return folder
