"""The epipolar error of a video from keypoint matches between its frames (engine.geometry.matching). It
needs no reconstruction, so it does not depend on the geometry model. Two scores come from the same matches:

`epi` — the authors' Epi (VideoGPA's evaluation; the default everywhere), in pixels of the frames as given:
  - pairs: the pairs the scorer asks the matcher for, by default consecutive sampled frames (i, i + 1);
  - a pair with fewer than `min_matches` (20) matches is skipped;
  - F: kornia's normalised 8-point `find_fundamental` on ALL the pair's matches (no weights, no RANSAC),
    in float32;
  - per match: sqrt(s + 1e-8), s = kornia's `sampson_epipolar_distance(squared=True)`, in pixels (not
    divided by the image size);
  - a pair's error is the mean over all its matches, outliers included; the video's Epi is the mean over
    its valid pairs;
  - a pair with a non-finite match, or whose fit fails or is not finite, is skipped like one with too few
    matches (the authors skip a pair whose fit fails);
  - no valid pair: no value (None), never 0 (the authors' code returns −1.0; ours never does, so no table
    can average it in).
  `epi_px` is the same number, named with its unit.

`epi_robust` — ours, not the authors': per pair a robust fit (MSAC) and the mean Sampson distance (not
squared) of its inliers (threshold `inlier_threshold`·max(H, W)), divided by max(H, W) so that resolutions
compare; `epi_robust_px` keeps pixels. The video's value is the mean over the pairs with ≥ `min_matches`
matches and ≥ 8 inliers. The fit is a batched MSAC over all pairs of a video at once: `hypotheses` random
8-point samples per pair from a seeded torch.Generator (deterministic), each solved by kornia's 8-point
solver and scored by kornia's Sampson distance, the best refitted on its inliers with Sampson-reweighted
8-point iterations; `robust="kornia"` runs kornia's own seeded RANSAC one pair at a time instead.

kornia is imported when a score is computed, not with this module: a missing kornia costs this metric only.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass

import torch

from videogpa.engine.geometry.base import Geometry
from videogpa.engine.geometry.matching import FeatureMatcher, PairMatches, build_matcher, frame_pairs

ROBUST_FITS = ("batched", "kornia")  # epi_robust: batched MSAC over all pairs of a video, or kornia's RANSAC
SAMPLE = 8  # correspondences of the 8-point solver: the fewest matches a pair can be fitted with
MIN_MATCHES = 20  # the authors': a pair with fewer matches is skipped
SAMPSON_EPS = 1e-8  # the authors' per-match distance: sqrt(Sampson² + 1e-8)
FRAME_SIZE = 518  # the authors' Epi frames: centre-cropped to a square and resized to 518 × 518


def kornia_epipolar():
    """kornia.geometry.epipolar, imported on use; ModuleNotFoundError with the fix when kornia is missing."""
    try:
        from kornia.geometry import epipolar
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            f"the epipolar metric needs the kornia package (pip install kornia): {err}", name=err.name
        ) from err
    return epipolar


def skew(t: torch.Tensor) -> torch.Tensor:
    """[t]× for vectors [..., 3]: [t]× v = t × v."""
    z = torch.zeros_like(t[..., 0])
    x, y, w = t.unbind(-1)
    return torch.stack(
        [torch.stack([z, -w, y], -1), torch.stack([w, z, -x], -1), torch.stack([-y, x, z], -1)], -2
    )


def fundamental_from_cameras(
    k1: torch.Tensor, e1: torch.Tensor, k2: torch.Tensor, e2: torch.Tensor
) -> torch.Tensor:
    """F [..., 3, 3] with x2ᵀ F x1 = 0 from intrinsics [..., 3, 3] and world-to-camera extrinsics
    [..., 3, 4]: R = R2 R1ᵀ, t = t2 − R t1, F = K2⁻ᵀ [t]× R K1⁻¹ (zero when the cameras share
    their centre)."""
    r1, t1, r2, t2 = e1[..., :3], e1[..., 3], e2[..., :3], e2[..., 3]
    rot = r2 @ r1.transpose(-1, -2)
    t = t2 - (rot @ t1[..., None])[..., 0]
    return torch.linalg.inv(k2).transpose(-1, -2) @ skew(t) @ rot @ torch.linalg.inv(k1)


def sampson_distance(points1: torch.Tensor, points2: torch.Tensor, fundamental: torch.Tensor) -> torch.Tensor:
    """Sampson distances [..., N] in pixels (not squared) of matches [..., N, 2] under F [..., 3, 3]; inf
    where F is degenerate."""
    d = kornia_epipolar().sampson_epipolar_distance(points1, points2, fundamental, squared=False)
    return torch.nan_to_num(d, nan=torch.inf)


# --- the authors' Epi --------------------------------------------------------------------------------------


def finite_pairs(matches: PairMatches) -> torch.Tensor:
    """[P] bool: every match of the pair has finite coordinates (a pair with one that is not cannot be fitted
    and is skipped by both scores)."""
    ok = torch.isfinite(matches.points1).all(-1) & torch.isfinite(matches.points2).all(-1)
    return (ok | ~matches.valid).all(-1)


def pair_epi_errors(matches: PairMatches, *, min_matches: int = MIN_MATCHES) -> list[float | None]:
    """The authors' error of every pair (pixels; None: skipped): kornia's 8-point F on all the pair's matches,
    then the mean over them of sqrt(Sampson² + 1e-8)."""
    if min_matches < SAMPLE:
        raise ValueError(f"epipolar: min_matches must be ≥ {SAMPLE} (the 8-point fit), got {min_matches}")
    epipolar = kornia_epipolar()
    counts, finite = matches.counts.tolist(), finite_pairs(matches).tolist()
    found: dict[int, torch.Tensor] = {}
    for k, count in enumerate(counts):
        if count < min_matches or not finite[k]:
            continue
        keep = matches.valid[k]
        p1, p2 = matches.points1[k][keep].float()[None], matches.points2[k][keep].float()[None]
        try:
            fundamental = epipolar.find_fundamental(p1, p2)  # normalised 8-point, all matches, no weights
        except torch.linalg.LinAlgError:  # non-finite or degenerate points (a GPU returns NaN instead)
            continue
        squared = epipolar.sampson_epipolar_distance(p1, p2, fundamental, squared=True)
        error = torch.sqrt(squared + SAMPSON_EPS).mean()
        found[k] = torch.where(torch.isfinite(fundamental).all(), error, torch.nan)
    errors: list[float | None] = [None] * len(counts)
    for k, value in zip(found, torch.stack(list(found.values())).tolist() if found else []):
        errors[k] = value if math.isfinite(value) else None  # one device sync for all pairs
    return errors


def mean_or_none(values: list[float | None]) -> float | None:
    """The mean of the values that are not None (None when there are none): no value is never 0."""
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


# --- ours: the robust score ---------------------------------------------------------------------------------


@dataclass
class FundamentalFit:
    fundamental: torch.Tensor  # [P, 3, 3]
    inliers: torch.Tensor  # [P, N] bool
    fitted: torch.Tensor  # [P] bool: the pair had enough matches to fit


def _msac_cost(d: torch.Tensor, valid: torch.Tensor, threshold: float) -> torch.Tensor:
    return torch.where(valid, (d / threshold).square().clamp(max=1.0), 0.0).sum(-1)


def _refit(x1, x2, inliers, fundamental):
    """One Sampson-reweighted 8-point fit on the inliers (the weights approximate Sampson's denominator)."""
    h1 = torch.cat([x1, torch.ones_like(x1[..., :1])], -1)
    h2 = torch.cat([x2, torch.ones_like(x2[..., :1])], -1)
    line2 = h1 @ fundamental.transpose(-1, -2)  # F x1
    line1 = h2 @ fundamental  # Fᵀ x2
    denom = line2[..., :2].square().sum(-1) + line1[..., :2].square().sum(-1)
    scale = denom.masked_fill(~inliers, 0).sum(-1, keepdim=True) / inliers.sum(-1, keepdim=True).clamp(min=1)
    weights = torch.where(inliers, scale / denom.clamp(min=1e-12), 0.0)
    weights = torch.nan_to_num(weights, nan=0.0, posinf=0.0).clamp(max=1e6)
    return kornia_epipolar().find_fundamental(x1, x2, weights=weights)


def fit_fundamental_batched(
    points1: torch.Tensor,
    points2: torch.Tensor,
    valid: torch.Tensor,
    *,
    threshold: float,
    hypotheses: int = 256,
    refits: int = 3,
    min_matches: int = MIN_MATCHES,
    seed: int = 0,
) -> FundamentalFit:
    """MSAC over all pairs at once: points [P, N, 2] (pixels), valid [P, N]; threshold in pixels."""
    if min_matches < SAMPLE:
        raise ValueError(f"fit_fundamental: min_matches must be ≥ {SAMPLE}, got {min_matches}")
    p, n = valid.shape
    fitted = valid.sum(-1) >= min_matches
    if n < SAMPLE or not bool(fitted.any()):
        eye = torch.zeros(p, 3, 3, device=points1.device)
        return FundamentalFit(eye, torch.zeros_like(valid), fitted)
    find_fundamental = kornia_epipolar().find_fundamental
    x1 = torch.where(valid[..., None], points1.float(), 0.0)
    x2 = torch.where(valid[..., None], points2.float(), 0.0)
    g = torch.Generator(device=x1.device).manual_seed(seed)
    keys = torch.rand(p, hypotheses, n, generator=g, device=x1.device).masked_fill(~valid[:, None], -1.0)
    idx = keys.topk(SAMPLE, dim=-1).indices  # [P, H, 8], distinct valid matches
    s1 = torch.gather(x1[:, None].expand(p, hypotheses, n, 2), 2, idx[..., None].expand(-1, -1, -1, 2))
    s2 = torch.gather(x2[:, None].expand(p, hypotheses, n, 2), 2, idx[..., None].expand(-1, -1, -1, 2))
    models = find_fundamental(s1.reshape(-1, SAMPLE, 2), s2.reshape(-1, SAMPLE, 2)).reshape(
        p, hypotheses, 3, 3
    )
    d = sampson_distance(
        x1[:, None].expand(p, hypotheses, n, 2), x2[:, None].expand(p, hypotheses, n, 2), models
    )
    cost = _msac_cost(d, valid[:, None], threshold)  # [P, H]
    best = cost.argmin(-1)  # first of equal costs: deterministic
    pick = torch.arange(p, device=x1.device)
    fundamental, dist, best_cost = models[pick, best], d[pick, best], cost[pick, best]
    for _ in range(refits):
        inliers = (dist < threshold) & valid
        enough = inliers.sum(-1) >= SAMPLE
        candidate = _refit(x1, x2, inliers, fundamental)
        cand_dist = sampson_distance(x1, x2, candidate)
        cand_cost = _msac_cost(cand_dist, valid, threshold)
        better = enough & (cand_cost <= best_cost)
        fundamental = torch.where(better[:, None, None], candidate, fundamental)
        dist = torch.where(better[:, None], cand_dist, dist)
        best_cost = torch.where(better, cand_cost, best_cost)
    inliers = (dist < threshold) & valid & fitted[:, None]
    return FundamentalFit(fundamental, inliers, fitted)


def fit_fundamental_kornia(
    points1: torch.Tensor,
    points2: torch.Tensor,
    valid: torch.Tensor,
    *,
    threshold: float,
    min_matches: int = MIN_MATCHES,
    seed: int = 0,
    **_: object,
) -> FundamentalFit:
    """kornia's RANSAC (fundamental, local optimisation, seeded) on each pair in turn."""
    kornia_epipolar()  # the clear error when kornia is missing
    from kornia.geometry.ransac import RANSAC

    ransac = RANSAC("fundamental", inl_th=threshold, seed=seed)
    p, n = valid.shape
    fundamental = torch.zeros(p, 3, 3, device=points1.device)
    inliers = torch.zeros_like(valid)
    fitted = valid.sum(-1) >= min_matches
    for k in range(p):
        if not bool(fitted[k]):
            continue
        keep = valid[k].nonzero()[:, 0]
        model, mask = ransac(points1[k, keep].float(), points2[k, keep].float())
        fundamental[k] = model
        inliers[k, keep] = mask
    return FundamentalFit(fundamental, inliers, fitted)


@dataclass
class RobustScore:
    errors: list[float | None]  # per pair, / max(H, W); None = not scored
    inlier_ratio: float | None  # inliers / matches over the scored pairs


def robust_pair_errors(
    matches: PairMatches,
    height: int,
    width: int,
    *,
    inlier_threshold: float = 0.004,
    min_matches: int = MIN_MATCHES,
    robust: str = "batched",
    hypotheses: int = 256,
    seed: int = 0,
) -> RobustScore:
    """Our robust error of every pair: the mean Sampson distance of the fit's inliers / max(H, W);
    inlier_threshold is a fraction of max(H, W)."""
    if robust not in ROBUST_FITS:
        raise ValueError(f"epipolar: robust must be one of {ROBUST_FITS}, got {robust!r}")
    side = float(max(height, width))
    valid = matches.valid & finite_pairs(matches)[:, None]
    points1 = torch.where(valid[..., None], matches.points1, 0.0)
    points2 = torch.where(valid[..., None], matches.points2, 0.0)
    fit = (fit_fundamental_batched if robust == "batched" else fit_fundamental_kornia)(
        points1,
        points2,
        valid,
        threshold=inlier_threshold * side,
        min_matches=min_matches,
        seed=seed,
        hypotheses=hypotheses,
    )
    d = sampson_distance(points1.float(), points2.float(), fit.fundamental)
    n_in = fit.inliers.sum(-1)
    mean_px = torch.where(fit.inliers, d, 0.0).sum(-1) / n_in.clamp(min=1)
    scored = (fit.fitted & (n_in >= SAMPLE)).tolist()
    errors = [float(e) / side if ok else None for e, ok in zip(mean_px.tolist(), scored)]
    total = sum(c for c, ok in zip(valid.sum(-1).tolist(), scored) if ok)
    inliers = sum(c for c, ok in zip(n_in.tolist(), scored) if ok)
    return RobustScore(errors, inliers / total if total else None)


# --- both, per video ---------------------------------------------------------------------------------------


@dataclass
class EpipolarScore:
    """One video's epipolar scores (lower is more consistent); None = no value (no valid pair), never 0."""

    epi: (
        float | None
    )  # the authors' Epi: mean over valid pairs of the pair's mean sqrt(Sampson² + 1e-8), pixels
    epi_px: float | None  # the same value (pixels)
    epi_pairs: int  # frame pairs matched
    epi_pairs_scored: int  # pairs with a value (≥ min_matches matches and a finite fit)
    epi_pair_errors: list[float | None]  # per pair, pixels; None = skipped
    epi_pair_matches: list[int]
    epi_robust: float | None  # ours: mean over pairs of the MSAC inliers' mean Sampson distance / max(H, W)
    epi_robust_px: float | None  # the same in pixels
    epi_robust_pairs_scored: int
    epi_robust_pair_errors: list[float | None]  # per pair, / max(H, W)
    epi_inlier_ratio: float | None  # epi_robust's inliers / matches over its scored pairs

    def as_dict(self) -> dict:
        return asdict(self)


def score_matches(
    matches: PairMatches,
    height: int,
    width: int,
    *,
    min_matches: int = MIN_MATCHES,
    inlier_threshold: float = 0.004,
    robust: str = "batched",
    hypotheses: int = 256,
    seed: int = 0,
) -> EpipolarScore:
    """Both epipolar scores of one video's matches (frames of height × width pixels)."""
    errors = pair_epi_errors(matches, min_matches=min_matches)
    ours = robust_pair_errors(
        matches,
        height,
        width,
        inlier_threshold=inlier_threshold,
        min_matches=min_matches,
        robust=robust,
        hypotheses=hypotheses,
        seed=seed,
    )
    epi, robust_epi = mean_or_none(errors), mean_or_none(ours.errors)
    return EpipolarScore(
        epi=epi,
        epi_px=epi,
        epi_pairs=len(errors),
        epi_pairs_scored=sum(e is not None for e in errors),
        epi_pair_errors=errors,
        epi_pair_matches=[int(c) for c in matches.counts.tolist()],
        epi_robust=robust_epi,
        epi_robust_px=None if robust_epi is None else robust_epi * max(height, width),
        epi_robust_pairs_scored=sum(e is not None for e in ours.errors),
        epi_robust_pair_errors=ours.errors,
        epi_inlier_ratio=ours.inlier_ratio,
    )


class EpipolarScorer:
    """A matcher and the score settings: frames [T, 3, H, W] (and the known geometry for the oracle matcher)
    -> EpipolarScore of the pairs frame_pairs(T, stride). The defaults compute the authors' Epi (consecutive
    pairs, ≥ 20 matches) beside our robust score."""

    def __init__(self, matcher: FeatureMatcher, *, stride: int | None = None, **settings) -> None:
        self.matcher, self.stride, self.settings = matcher, stride, settings

    @property
    def needs_geometry(self) -> bool:
        return self.matcher.needs_geometry

    def __call__(self, frames: torch.Tensor, geometry: Geometry | None = None) -> EpipolarScore:
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise ValueError(f"epipolar: frames must be [T, 3, H, W], got {tuple(frames.shape)}")
        pairs = frame_pairs(frames.shape[0], self.stride)
        matches = self.matcher.match(frames, pairs, geometry)
        return score_matches(matches, frames.shape[-2], frames.shape[-1], **self.settings)


def build_epipolar_scorer(
    device: torch.device | str,
    *,
    matcher: str,
    lightglue_weights: str | os.PathLike | None,
    superpoint_weights: str | os.PathLike | None,
    size: int | None,
    max_keypoints: int | None,
    keypoint_threshold: float | None,
    stride: int | None,
    min_matches: int,
    inlier_threshold: float,
    robust: str,
    seed: int,
) -> EpipolarScorer:
    """The scorer of the settings (engine.config.EpipolarConfig's fields); ValueError naming the folder or
    setting that is wrong, ModuleNotFoundError when kornia is missing."""
    kornia_epipolar()
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
            max_keypoints=max_keypoints,
            keypoint_threshold=keypoint_threshold,
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
