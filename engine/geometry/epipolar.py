"""The epipolar score ("Epi"): per frame pair a robust fundamental-matrix fit to the keypoint matches and the
mean Sampson distance of its inliers. Needs no reconstruction, so it does not depend on the geometry model.

Normalisation: a pair's error is the mean Sampson distance (not squared) of its inlier matches in pixels,
divided by the frame's longer side max(H, W), so that videos of any resolution compare (the Sampson distance
scales linearly with the image); `epi_px` keeps the pixel value. The video's Epi is the mean over the pairs
that had at least `min_matches` matches; the others are reported (None in `pair_errors`), never counted as 0.

The robust fit is a batched MSAC over all pairs of a video at once: `hypotheses` random 8-point samples per
pair drawn from a seeded torch.Generator (deterministic), each solved by kornia's 8-point solver and scored by
kornia's Sampson distance; the best is refitted on its inliers with Sampson-reweighted 8-point iterations.
`robust="kornia"` instead runs kornia's own RANSAC (seeded, one pair per call) on each pair.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from kornia.geometry.epipolar import find_fundamental, sampson_epipolar_distance

from videogpa.engine.geometry.base import Geometry
from videogpa.engine.geometry.epipolar_config import ROBUST_FITS, SAMPLE
from videogpa.engine.geometry.matching import FeatureMatcher, PairMatches, frame_pairs


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
    """F [..., 3, 3] with x2ᵀ F x1 = 0 from intrinsics [..., 3, 3] and world-to-camera extrinsics [..., 3, 4]:
    R = R2 R1ᵀ, t = t2 − R t1, F = K2⁻ᵀ [t]× R K1⁻¹ (zero when the cameras share their centre)."""
    r1, t1, r2, t2 = e1[..., :3], e1[..., 3], e2[..., :3], e2[..., 3]
    rot = r2 @ r1.transpose(-1, -2)
    t = t2 - (rot @ t1[..., None])[..., 0]
    return torch.linalg.inv(k2).transpose(-1, -2) @ skew(t) @ rot @ torch.linalg.inv(k1)


def sampson_distance(points1: torch.Tensor, points2: torch.Tensor, fundamental: torch.Tensor) -> torch.Tensor:
    """Sampson distances [..., N] in pixels (not squared) of matches [..., N, 2] under F [..., 3, 3]; inf where
    F is degenerate."""
    d = sampson_epipolar_distance(points1, points2, fundamental, squared=False)
    return torch.nan_to_num(d, nan=torch.inf)


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
    return find_fundamental(x1, x2, weights=weights)


def fit_fundamental_batched(
    points1: torch.Tensor,
    points2: torch.Tensor,
    valid: torch.Tensor,
    *,
    threshold: float,
    hypotheses: int = 256,
    refits: int = 3,
    min_matches: int = 16,
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
    min_matches: int = 16,
    seed: int = 0,
    **_: object,
) -> FundamentalFit:
    """kornia's RANSAC (fundamental, local optimisation, seeded) on each pair in turn."""
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
class EpipolarScore:
    """epi: mean over scored pairs of the inlier Sampson distance / max(H, W); lower is more consistent."""

    epi: float | None  # None when no pair had enough matches
    epi_px: float | None
    epi_pairs: int
    epi_pairs_scored: int
    epi_pair_errors: list[float | None]  # per pair, normalised; None = too few matches
    epi_pair_matches: list[int]
    epi_inlier_ratio: float | None

    def as_dict(self) -> dict:
        return asdict(self)


def score_matches(
    matches: PairMatches,
    height: int,
    width: int,
    *,
    inlier_threshold: float = 0.004,
    min_matches: int = 16,
    robust: str = "batched",
    hypotheses: int = 256,
    seed: int = 0,
) -> EpipolarScore:
    """The epipolar score of one video's matches; inlier_threshold is a fraction of max(H, W)."""
    if robust not in ROBUST_FITS:
        raise ValueError(f"epipolar: robust must be one of {ROBUST_FITS}, got {robust!r}")
    side = float(max(height, width))
    threshold = inlier_threshold * side
    fit = (fit_fundamental_batched if robust == "batched" else fit_fundamental_kornia)(
        matches.points1,
        matches.points2,
        matches.valid,
        threshold=threshold,
        min_matches=min_matches,
        seed=seed,
        hypotheses=hypotheses,
    )
    d = sampson_distance(matches.points1.float(), matches.points2.float(), fit.fundamental)
    n_in = fit.inliers.sum(-1)
    mean_px = torch.where(fit.inliers, d, 0.0).sum(-1) / n_in.clamp(min=1)
    scored = fit.fitted & (n_in >= SAMPLE)
    errors = [float(e) / side if ok else None for e, ok in zip(mean_px.tolist(), scored.tolist())]
    counts = matches.counts.tolist()
    good = [e for e in errors if e is not None]
    total = sum(c for c, ok in zip(counts, scored.tolist()) if ok)
    return EpipolarScore(
        epi=sum(good) / len(good) if good else None,
        epi_px=side * sum(good) / len(good) if good else None,
        epi_pairs=len(errors),
        epi_pairs_scored=len(good),
        epi_pair_errors=errors,
        epi_pair_matches=[int(c) for c in counts],
        epi_inlier_ratio=float(n_in[scored].sum()) / total if total else None,
    )


class EpipolarScorer:
    """A matcher and the fit settings: frames [T, 3, H, W] (and the known geometry for the oracle matcher)
    -> EpipolarScore of the pairs frame_pairs(T, stride)."""

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
