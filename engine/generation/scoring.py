"""The score stage of the loop: every video of a generation manifest scored by a geometry model
(engine.geometry), one row per video appended to a scores JSONL (resumable, bad videos get error rows)."""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from videogpa.engine.data.records import read_jsonl

log = logging.getLogger(__name__)

RANDOM_WEIGHTS_NOTE = "geometry model with random weights: these scores are NOT meaningful (mechanics only)"


@dataclass
class ScoreConfig:
    geometry: str = "vggt"  # "vggt" (weights needed) or "oracle" (videos with stored geometry sidecars)
    weights: str | None = None  # local VGGT weights file
    random_weights: bool = False  # the weights are random (tiny loop): rows and summaries say so
    num_frames: int = 10  # frames sampled uniformly per video (the paper: 10)
    size: int | None = None  # square crop size (None: the model's input size)
    batch_size: int = 1
    device: str | None = None  # None: cuda when available, else cpu
    dtype: str | None = None
    conf_thres: float = 0.0
    vgg_weights: str | None = None  # LPIPS-VGG from local files (both or neither)
    lpips_weights: str | None = None
    lpips_weight: float = 1.0


@dataclass
class Scorer:
    """A loaded geometry model (None: oracle) and LPIPS (None: off) with their settings."""

    cfg: ScoreConfig
    model: object | None
    lpips: object | None

    @classmethod
    def build(cls, cfg: ScoreConfig) -> Scorer:
        from videogpa.engine.generation.pipelines import default_device
        from videogpa.engine.geometry.registry import build_geometry_model

        cfg = dataclasses.replace(cfg, device=cfg.device or default_device())
        if cfg.geometry == "vggt" and not cfg.weights:
            raise ValueError("score: geometry 'vggt' needs weights (a local VGGT safetensors file)")
        model = None
        if cfg.geometry != "oracle":
            model = build_geometry_model(
                cfg.geometry, weights_path=cfg.weights, device=cfg.device, dtype=cfg.dtype
            )
        if bool(cfg.vgg_weights) != bool(cfg.lpips_weights):
            raise ValueError("score: give both vgg_weights and lpips_weights for LPIPS, or neither")
        lpips = None
        if cfg.vgg_weights:
            from videogpa.engine.geometry.lpips import LPIPS

            lpips = LPIPS.from_files(cfg.vgg_weights, cfg.lpips_weights).to(cfg.device).eval()
        else:
            log.warning("LPIPS is off (no vgg_weights/lpips_weights): 3DCS = reprojection MSE only")
        if cfg.random_weights:
            log.warning(RANDOM_WEIGHTS_NOTE)
        return cls(cfg, model, lpips)

    def score(self, manifest: str | os.PathLike, out: str | os.PathLike, progress: bool = True) -> list[dict]:
        """Score the manifest's videos not yet in `out`; returns the new rows."""
        from videogpa.engine.geometry.runner import list_videos, score_videos

        cfg = self.cfg
        size = cfg.size if cfg.size is not None else getattr(self.model, "input_size", None)
        info = {"backend": cfg.geometry, "geometry_weights": cfg.weights, "n_frames": cfg.num_frames}
        if cfg.random_weights:
            info["note"] = RANDOM_WEIGHTS_NOTE
        return score_videos(
            list_videos(manifest), out, model=self.model, n_frames=cfg.num_frames, size=size,
            batch_size=cfg.batch_size, device=cfg.device, conf_thres=cfg.conf_thres, lpips=self.lpips,
            lpips_weight=cfg.lpips_weight, row_info=info, progress=progress,
        )  # fmt: skip


def unscored(manifest: str | os.PathLike, scores: str | os.PathLike) -> list[str]:
    """Videos of the manifest without any score row (ok or error) in `scores`."""
    manifest = Path(manifest)
    wanted = [str(manifest.parent / r["video"]) for r in read_jsonl(manifest)]
    have = {r.get("video") for r in read_jsonl(scores)} if Path(scores).is_file() else set()
    return [v for v in wanted if v not in have]


def score_summary(rows: list[dict]) -> str:
    ok = [r for r in rows if r.get("status") == "ok"]
    mean = f", mean 3DCS {sum(r['score'] for r in ok) / len(ok):.5f}" if ok else ""
    note = " [random-weights geometry: not meaningful]" if any(r.get("note") for r in rows) else ""
    return f"{len(ok)} videos scored, {len(rows) - len(ok)} errors{mean}{note}"
