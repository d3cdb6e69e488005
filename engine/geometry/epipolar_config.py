"""The epipolar metric's settings: the choices a config may name, and its scorer built from them (this module
imports neither kornia nor transformers; they are imported only when a scorer is built)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from videogpa.engine.geometry.epipolar import EpipolarScorer

ROBUST_FITS = ("batched", "kornia")  # batched MSAC over all pairs of a video, or kornia's RANSAC per pair
SAMPLE = 8  # correspondences per hypothesis (8-point solver): the fewest matches a pair can be scored with


def build_epipolar_scorer(
    device: torch.device | str,
    *,
    matcher: str,
    lightglue_weights: str | None,
    superpoint_weights: str | None,
    size: int | None,
    stride: int | None,
    min_matches: int,
    inlier_threshold: float,
    robust: str,
    seed: int,
) -> EpipolarScorer:
    """The scorer of the settings (engine.config.EpipolarConfig's fields); ValueError naming the folder or
    setting that is wrong."""
    from videogpa.engine.geometry.epipolar import EpipolarScorer
    from videogpa.engine.geometry.matching import build_matcher

    if matcher == "lightglue":
        if not lightglue_weights:
            raise ValueError(
                "epipolar: matcher 'lightglue' needs lightglue_weights (a local LightGlue folder; "
                "nothing is downloaded)"
            )
        found = build_matcher(
            "lightglue",
            lightglue_path=lightglue_weights,
            superpoint_path=superpoint_weights,
            size=size,
            device=device,
        )
    else:
        found = build_matcher(matcher)
    return EpipolarScorer(
        found,
        stride=stride,
        inlier_threshold=inlier_threshold,
        min_matches=min_matches,
        robust=robust,
        seed=seed,
    )
