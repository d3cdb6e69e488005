"""The score stage's metrics (ScoreConfig.metrics): what `score(frames, geometry)` puts in a video's row —
the reprojection scores (3DCS etc., from a reconstruction), the epipolar score (Epi, from keypoint matches;
no reconstruction needed), or both."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch

from videogpa.engine.core.config import ScoreConfig
from videogpa.engine.geometry.base import Geometry, GeometryModel
from videogpa.engine.geometry.epipolar import FRAME_SIZE, build_epipolar_scorer


class NoGeometry(GeometryModel):
    """The geometry model when no metric needs a reconstruction: every video's geometry is None. Its input
    size is the authors' Epi frames': the sampled frames centre-cropped to a square and resized to 518."""

    name = "none"
    input_size = FRAME_SIZE

    def reconstruct(self, frames: torch.Tensor) -> None:
        return None


@dataclass
class VideoScores:
    """One video's scores of all its metrics (what score_videos writes into the row)."""

    values: dict

    def as_dict(self) -> dict:
        return self.values


def build_epipolar(cfg: ScoreConfig):
    """The EpipolarScorer of a resolved config (engine.stages.score.resolve_geometry), or None when its
    metrics leave "epipolar" out; ValueError naming the setting or folder that is wrong."""
    if "epipolar" not in cfg.metrics:
        return None
    if cfg.epipolar.matcher == "oracle" and "reprojection" in cfg.metrics and cfg.geometry != "oracle":
        raise ValueError(
            "score: epipolar matcher 'oracle' matches through each video's stored geometry; with the "
            f"reprojection metric it needs geometry 'oracle', got {cfg.geometry!r}"
        )
    return build_epipolar_scorer(cfg.device, **dataclasses.asdict(cfg.epipolar))


def metric_scores(
    reprojection: Callable[[torch.Tensor, Geometry], object] | None, epipolar
) -> Callable[[torch.Tensor, Geometry | None], VideoScores]:
    """score(frames, geometry) of score_videos: `reprojection(frames, geometry)` (None: off) and/or the
    EpipolarScorer `epipolar` (None: off; its oracle matcher gets the geometry, the stored one)."""

    def score(frames: torch.Tensor, geometry: Geometry | None) -> VideoScores:
        values = {} if reprojection is None else dict(reprojection(frames, geometry).as_dict())
        if epipolar is not None:
            values.update(epipolar(frames, geometry if epipolar.needs_geometry else None).as_dict())
        return VideoScores(values)

    return score
