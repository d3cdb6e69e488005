"""The true keypoint matches of a synthetic clip, corrupted or not: where the surface point a pixel of frame i
shows is seen in frame j, following the clip's perturbed rays and moving boxes (what a perfect feature
matcher would find). Unlike the depth-and-camera oracle, these matches break epipolar geometry exactly as
the corruption does."""

from __future__ import annotations

import torch

from videogpa.engine.geometry.matching import PairMatches, pad_matches
from videogpa.engine.scenes.procedural import Clip, _yaw_matrix, pixel_grid

NEWTON_STEPS = 6


def _bilinear(field: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """field [H, W, C] interpolated at continuous pixel coordinates uv [N, 2] (extrapolated linearly past the
    outermost pixel centres)."""
    height, width = field.shape[:2]
    u, v = uv[:, 0], uv[:, 1]
    u0 = u.floor().clamp(0, width - 2).long()
    v0 = v.floor().clamp(0, height - 2).long()
    fu, fv = (u - u0)[:, None], (v - v0)[:, None]
    top = field[v0, u0] * (1 - fu) + field[v0, u0 + 1] * fu
    bottom = field[v0 + 1, u0] * (1 - fu) + field[v0 + 1, u0 + 1] * fu
    return top * (1 - fv) + bottom * fv


def _invert_rays(coords: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pixels p [N, 2] whose ray goes through image points target [N, 2]: coords(p) = target (Newton steps on
    the bilinear interpolation of coords [H, W, 2], started from the nearest grid pixel)."""
    height, width = coords.shape[:2]
    flat = coords.reshape(-1, 2)
    start = torch.cdist(target, flat).argmin(dim=1)
    p = torch.stack([start % width, start // width], dim=1).float()
    du = coords[:, 1:] - coords[:, :-1]  # d coords / du
    dv = coords[1:] - coords[:-1]
    du = torch.cat([du, du[:, -1:]], dim=1)
    dv = torch.cat([dv, dv[-1:]], dim=0)
    for _ in range(NEWTON_STEPS):
        jac = torch.stack([_bilinear(du, p), _bilinear(dv, p)], dim=-1)  # [N, 2 (coord), 2 (u, v)]
        step = torch.linalg.solve(jac, (target - _bilinear(coords, p))[..., None])[..., 0]
        p = p + step
    return p


def _on_box(clip: Clip, points: torch.Tensor, frame: int) -> torch.Tensor:
    """Index of the box each world point [N, 3] lies on in `frame` (-1: the room)."""
    scene = clip.scene
    offsets = clip.box_offsets[frame] if clip.box_offsets is not None else torch.zeros_like(scene.centers)
    yaw = _yaw_matrix(scene.yaws)
    owner = torch.full((points.shape[0],), -1, dtype=torch.long)
    for b in range(scene.centers.shape[0]):
        local = (points - scene.centers[b] - offsets[b]) @ yaw[b]
        inside = (local.abs() <= scene.halves[b] * (1 + 1e-3) + 1e-4).all(dim=1)
        owner = torch.where(inside & (owner < 0), b, owner)
    return owner


def true_matches(
    clip: Clip, pairs: list[tuple[int, int]], grid_stride: int = 4, depth_tolerance: float = 0.01
) -> PairMatches:
    """Matches of grid pixels of frame i to the sub-pixel positions in frame j that show the same surface
    point, kept where that point is inside frame j and visible there. Needs a clip from
    render_clip/corrupt."""
    if clip.scene is None:
        raise ValueError("true_matches: needs the clip's scene (a clip from render_clip or corrupt)")
    n_frames, _, height, width = clip.frames.shape
    coords = (
        clip.pixel_coords
        if clip.pixel_coords is not None
        else pixel_grid(height, width).expand(n_frames, -1, -1, -1)
    )
    k = clip.intrinsics
    rot, trans = clip.extrinsics[:, :, :3], clip.extrinsics[:, :, 3]
    s = grid_stride
    v, u = torch.meshgrid(torch.arange(s // 2, height, s), torch.arange(s // 2, width, s), indexing="ij")
    v, u = v.reshape(-1), u.reshape(-1)
    grid = torch.stack([u, v], dim=1).float()
    found = []
    for i, j in pairs:
        through = coords[i][v, u]  # where each grid pixel's ray went through
        d = clip.depth[i][v, u]
        cam = (
            torch.cat([(through - k[i, :2, 2]) / k[i].diagonal()[:2], torch.ones_like(d)[:, None]], 1)
            * d[:, None]
        )
        world = (cam - trans[i]) @ rot[i]  # Rᵀ(x − t)
        if clip.box_offsets is not None:
            owner = _on_box(clip, world, i)
            moved = clip.box_offsets[j] - clip.box_offsets[i]
            world = world + torch.where(owner[:, None] >= 0, moved[owner.clamp(min=0)], 0.0)
        cam_j = world @ rot[j].T + trans[j]
        z = cam_j[:, 2]
        seen_at = (cam_j[:, :2] / z.clamp(min=1e-8)[:, None]) * k[j].diagonal()[:2] + k[j, :2, 2]
        p = _invert_rays(coords[j], seen_at)
        px = p.round().long()
        inside = (z > 0) & (px[:, 0] >= 0) & (px[:, 0] < width) & (px[:, 1] >= 0) & (px[:, 1] < height)
        depth_j = clip.depth[j][px[:, 1].clamp(0, height - 1), px[:, 0].clamp(0, width - 1)]
        keep = inside & ((depth_j - z).abs() <= depth_tolerance * z.abs()) & torch.isfinite(p).all(1)
        found.append((grid[keep], p[keep]))
    return pad_matches(pairs, found)
