"""Procedural static 3D scenes filmed by a moving camera, with exact depth and cameras, and their
geometry-corrupted versions (ground truth for scoring and the embedded default's preference data).

A scene is a textured room (floor, walls, ceiling) holding a few yawed boxes. Textures are smooth solid
textures of the object-local position and shading is Lambertian from a fixed light, so every surface point
has one colour in every view: a clean clip is exactly 3D-consistent. Rendering is vectorised ray casting
(all frames and pixels at once). Cameras use OpenCV axes (x right, y down, z forward), world-to-camera
extrinsics, principal point (W/2, H/2) with integer pixel coordinates at pixel centres (VGGT's convention).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

CAMERA_PATHS = ("pan", "dolly", "orbit")
CORRUPTIONS = ("warp", "drift", "scale", "jitter")
ROOM_LOW = (-4.0, 0.0, -4.0)
ROOM_HIGH = (4.0, 3.0, 4.0)
LIGHT = (0.4, 0.8, 0.3)
EYE_HEIGHT = 1.6
ORBIT_RADIUS = 3.2
FOV_DEGREES = 60.0
DRIFT = 0.8  # scene units the drifting box has moved by the last frame at strength 1


@dataclass
class Scene:
    """Boxes [B] (centre [B, 3], half-size [B, 3], yaw [B]), per-surface colours and texture frequencies."""

    seed: int
    centers: torch.Tensor  # [B, 3]
    halves: torch.Tensor  # [B, 3]
    yaws: torch.Tensor  # [B]
    colors: torch.Tensor  # [B + 1, 3]: boxes, then the room
    frequencies: torch.Tensor  # [B + 1, 3]
    phases: torch.Tensor  # [B + 1, 3]
    path_angle: float  # where the camera path starts, radians around the room's vertical axis


@dataclass
class Clip:
    """A rendered clip: frames [T, 3, H, W] in [0, 1], depth [T, H, W], intrinsics [T, 3, 3], extrinsics
    [T, 3, 4]."""

    frames: torch.Tensor
    depth: torch.Tensor
    intrinsics: torch.Tensor
    extrinsics: torch.Tensor
    scene: Scene | None = None
    pixel_coords: torch.Tensor | None = None  # [T, H, W, 2]: the image point each pixel's ray went through
    box_offsets: torch.Tensor | None = None  # [T, B, 3]: how far each box had moved in each frame

    def __iter__(self):
        """`frames, depth, intrinsics, extrinsics = render_clip(...)`."""
        return iter((self.frames, self.depth, self.intrinsics, self.extrinsics))


def make_scene(seed: int, n_boxes: int | None = None) -> Scene:
    """A random room with 2-5 boxes standing on the floor, deterministic in seed."""
    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(2, 6, (1,), generator=g)) if n_boxes is None else n_boxes
    radius = 1.6 * torch.rand(n, generator=g).sqrt()
    angle = 2 * math.pi * torch.rand(n, generator=g)
    halves = 0.25 + 0.35 * torch.rand(n, 3, generator=g)
    centers = torch.stack([radius * angle.cos(), halves[:, 1], radius * angle.sin()], dim=1)
    return Scene(
        seed=seed,
        centers=centers,
        halves=halves,
        yaws=math.pi * torch.rand(n, generator=g),
        colors=0.15 + 0.75 * torch.rand(n + 1, 3, generator=g),
        frequencies=1.0 + 3.0 * torch.rand(n + 1, 3, generator=g),
        phases=2 * math.pi * torch.rand(n + 1, 3, generator=g),
        path_angle=float(2 * math.pi * torch.rand(1, generator=g)),
    )


def look_at(eye: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """World-to-camera [T, 3, 4] for eyes/targets [T, 3] (world y up, camera y down)."""
    forward = F.normalize(target - eye, dim=-1)
    up = torch.tensor([0.0, 1.0, 0.0]).expand_as(forward)
    right = F.normalize(torch.linalg.cross(forward, up), dim=-1)
    down = torch.linalg.cross(forward, right)
    rot = torch.stack([right, down, forward], dim=1)
    return torch.cat([rot, -(rot @ eye[..., None])], dim=2)


def camera_path(scene: Scene, kind: str, n_frames: int) -> torch.Tensor:
    """Extrinsics [T, 3, 4]: "pan" (turning in place), "dolly" (moving in), "orbit" (circling the boxes)."""
    if kind not in CAMERA_PATHS:
        raise ValueError(f"camera_path: kind must be one of {CAMERA_PATHS}, got {kind!r}")
    s = torch.linspace(0.0, 1.0, n_frames)
    a0 = scene.path_angle
    centre = torch.tensor([0.0, 0.6, 0.0]).expand(n_frames, 3)
    if kind == "orbit":
        a = a0 + math.radians(40.0) * s
        eye = torch.stack(
            [ORBIT_RADIUS * a.cos(), torch.full_like(a, EYE_HEIGHT), ORBIT_RADIUS * a.sin()], dim=1
        )
        return look_at(eye, centre)
    if kind == "dolly":
        r = 3.5 - 0.9 * s
        eye = torch.stack([r * math.cos(a0), torch.full_like(r, EYE_HEIGHT), r * math.sin(a0)], dim=1)
        return look_at(eye, centre)
    eye = torch.tensor([ORBIT_RADIUS * math.cos(a0), EYE_HEIGHT, ORBIT_RADIUS * math.sin(a0)]).expand(
        n_frames, 3
    )
    a = a0 + math.pi + math.radians(30.0) * (s - 0.5)  # look back across the room, turning 30°
    target = eye + torch.stack([a.cos(), torch.full_like(a, -0.25), a.sin()], dim=1)
    return look_at(eye, target)


def intrinsics_for(height: int, width: int, n_frames: int) -> torch.Tensor:
    """Pinhole [T, 3, 3] with a 60° horizontal field of view and principal point (W/2, H/2)."""
    focal = (width / 2) / math.tan(math.radians(FOV_DEGREES) / 2)
    k = torch.tensor([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]])
    return k.expand(n_frames, 3, 3).clone()


def _yaw_matrix(yaws: torch.Tensor) -> torch.Tensor:
    c, s, z, o = yaws.cos(), yaws.sin(), torch.zeros_like(yaws), torch.ones_like(yaws)
    return torch.stack(
        [torch.stack([c, z, s], -1), torch.stack([z, o, z], -1), torch.stack([-s, z, c], -1)], -2
    )


def _slabs(origin, direction, low, high):
    """Per-axis entry/exit ray parameters of an axis-aligned box."""
    inv = 1.0 / torch.where(direction.abs() < 1e-12, torch.full_like(direction, 1e-12), direction)
    t1, t2 = (low - origin) * inv, (high - origin) * inv
    return torch.minimum(t1, t2), torch.maximum(t1, t2)


def _texture(local: torch.Tensor, normal: torch.Tensor, surface: torch.Tensor, scene: Scene) -> torch.Tensor:
    """Colour [..., 3] of a surface point: smooth solid texture × Lambertian shading, in [0, 1]."""
    freq, phase, base = scene.frequencies[surface], scene.phases[surface], scene.colors[surface]
    waves = torch.sin(local * freq + phase)
    pattern = 0.65 + 0.2 * waves[..., 0] * waves[..., 1] + 0.15 * torch.sin(2.3 * waves.sum(-1))
    light = F.normalize(torch.tensor(LIGHT), dim=0)
    shade = 0.55 + 0.45 * (normal * light).sum(-1).abs()
    return (base * (pattern * shade)[..., None]).clamp(0.0, 1.0)


def render_clip(
    scene: Scene,
    path: str | torch.Tensor,
    n_frames: int,
    height: int,
    width: int,
    box_offsets: torch.Tensor | None = None,
    pixel_coords: torch.Tensor | None = None,
) -> Clip:
    """Ray-cast the scene from every camera of `path` (a CAMERA_PATHS name or extrinsics [T, 3, 4]).

    box_offsets [T, B, 3] moves the boxes per frame ("drift"); pixel_coords [T, H, W, 2] casts each pixel's
    ray through another image point (u, v) ("warp", "scale", "jitter"). Depth is the hit point's camera z.
    """
    if n_frames < 1 or height < 1 or width < 1:
        raise ValueError(
            f"render_clip: need positive n_frames/height/width, got {n_frames}, {height}, {width}"
        )
    extr = camera_path(scene, path, n_frames) if isinstance(path, str) else path.float()
    if extr.shape != (n_frames, 3, 4):
        raise ValueError(f"render_clip: path extrinsics must be [{n_frames}, 3, 4], got {tuple(extr.shape)}")
    intr = intrinsics_for(height, width, n_frames)
    if pixel_coords is None:
        pixel_coords = pixel_grid(height, width).expand(n_frames, height, width, 2)
    k = intr[0]
    u, v = pixel_coords.unbind(-1)
    cam_dir = torch.stack([(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1], torch.ones_like(u)], -1)  # z = 1
    rot, trans = extr[:, :, :3], extr[:, :, 3]
    origin = -(rot.transpose(1, 2) @ trans[..., None])[..., 0]  # [T, 3] camera centres
    direction = torch.einsum("tji,thwj->thwi", rot, cam_dir)  # world directions, camera-z component 1
    origin = origin[:, None, None, :].expand_as(direction)
    # Room seen from inside: the ray leaves it at the nearest exit plane.
    _, far = _slabs(origin, direction, torch.tensor(ROOM_LOW), torch.tensor(ROOM_HIGH))
    depth, axis = far.min(dim=-1)
    normal = -F.one_hot(axis, 3).float() * torch.sign(direction)
    n_boxes = scene.centers.shape[0]
    surface = torch.full(depth.shape, n_boxes, dtype=torch.long)
    local_hit = origin + depth[..., None] * direction
    offsets = torch.zeros(n_frames, n_boxes, 3) if box_offsets is None else box_offsets
    yaw = _yaw_matrix(scene.yaws)
    for b in range(n_boxes):
        centre = scene.centers[b] + offsets[:, b]  # [T, 3]
        o_local = torch.einsum("ji,thwj->thwi", yaw[b], origin - centre[:, None, None, :])
        d_local = torch.einsum("ji,thwj->thwi", yaw[b], direction)
        near, far = _slabs(o_local, d_local, -scene.halves[b], scene.halves[b])
        t_in, axis = near.max(dim=-1)
        hits = (t_in <= far.min(dim=-1).values) & (t_in > 1e-4) & (t_in < depth)
        depth = torch.where(hits, t_in, depth)
        surface = torch.where(hits, b, surface)
        local_normal = -F.one_hot(axis, 3).float() * torch.sign(d_local)
        world_normal = torch.einsum("ij,thwj->thwi", yaw[b], local_normal)
        normal = torch.where(hits[..., None], world_normal, normal)
        local_hit = torch.where(hits[..., None], o_local + t_in[..., None] * d_local, local_hit)
    frames = _texture(local_hit, normal, surface, scene).permute(0, 3, 1, 2).contiguous()
    return Clip(
        frames=frames,
        depth=depth,
        intrinsics=intr,
        extrinsics=extr,
        scene=scene,
        pixel_coords=pixel_coords,
        box_offsets=offsets,
    )


def pixel_grid(height: int, width: int) -> torch.Tensor:
    """[H, W, 2] pixel-centre coordinates (u = column, v = row)."""
    v, u = torch.meshgrid(
        torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32), indexing="ij"
    )
    return torch.stack([u, v], dim=-1)


def _growing(n_frames: int) -> torch.Tensor:
    """0 at the first frame, 1 at the last."""
    return torch.linspace(0.0, 1.0, n_frames)


def _perturbed_pixels(kind: str, strength: float, n_frames: int, height: int, width: int, g: torch.Generator):
    """Where each pixel's ray goes through, [T, H, W, 2], for the image-space corruptions."""
    base = pixel_grid(height, width).expand(n_frames, height, width, 2)
    size = float(max(height, width))
    if kind == "warp":  # smooth non-rigid field whose amplitude grows over time
        x, y = (base[0] / size).unbind(-1)
        freq = 3.0 + 6.0 * torch.rand(2, 3, 2, generator=g)
        phase = 2 * math.pi * torch.rand(2, 3, generator=g)
        field = (
            torch.stack(
                [
                    sum(torch.sin(freq[c, i, 0] * x + freq[c, i, 1] * y + phase[c, i]) for i in range(3))
                    for c in range(2)
                ],
                dim=-1,
            )
            / 3
        )
        return base + 0.06 * size * strength * _growing(n_frames)[:, None, None, None] * field
    if kind == "scale":  # zoom flicker about the image centre
        sign = torch.where(torch.arange(n_frames) % 2 == 0, 1.0, -1.0)
        factor = 1.0 + 0.12 * strength * sign * (0.5 + 0.5 * torch.rand(n_frames, generator=g))
        factor[0] = 1.0
        centre = torch.tensor([width / 2, height / 2])
        return centre + (base - centre) / factor[:, None, None, None]
    shift = 0.04 * size * strength * (2 * torch.rand(n_frames, 1, 1, 2, generator=g) - 1)  # "jitter"
    shift[0] = 0.0
    return base + shift


def _most_central_box(clip: Clip) -> int:
    """The box whose centre the middle camera sees nearest the image centre (so that its drift is seen)."""
    middle = clip.frames.shape[0] // 2
    rot, trans = clip.extrinsics[middle, :, :3], clip.extrinsics[middle, :, 3]
    cam = clip.scene.centers @ rot.T + trans
    off_axis = torch.linalg.vector_norm(cam[:, :2], dim=1) / cam[:, 2].clamp(min=1e-6)
    return int(torch.where(cam[:, 2] > 0, off_axis, torch.inf).argmin())


def corrupt(clip: Clip, kind: str, strength: float, seed: int) -> Clip:
    """A geometry-corrupted re-render of `clip` (needs clip.scene), with the depth of what it shows.

    warp: a smooth non-rigid image warp growing from nothing at the first frame to 6%·strength of the image
    size at the last; drift: the box nearest the view centre slides on its own (0.8·strength units by the
    last frame); scale: per-frame zoom flicker of 6-12%·strength; jitter: per-frame image shifts of up to
    4%·strength. Every corruption is rendered exactly (perturbed rays or moved boxes, no resampling blur);
    the cameras stay the clean clip's. strength 0 gives the clean clip.
    """
    if kind not in CORRUPTIONS:
        raise ValueError(f"corrupt: kind must be one of {CORRUPTIONS}, got {kind!r}")
    if not strength >= 0:
        raise ValueError(f"corrupt: strength must be ≥ 0, got {strength!r}")
    if clip.scene is None:
        raise ValueError("corrupt: re-renders the scene, but clip.scene is None")
    g = torch.Generator().manual_seed(seed)
    n_frames, _, height, width = clip.frames.shape
    if kind == "drift":
        n_boxes = clip.scene.centers.shape[0]
        box = _most_central_box(clip)
        angle = 2 * math.pi * float(torch.rand(1, generator=g))
        offsets = torch.zeros(n_frames, n_boxes, 3)
        offsets[:, box, 0] = DRIFT * strength * _growing(n_frames) * math.cos(angle)
        offsets[:, box, 2] = DRIFT * strength * _growing(n_frames) * math.sin(angle)
        return render_clip(clip.scene, clip.extrinsics, n_frames, height, width, box_offsets=offsets)
    coords = _perturbed_pixels(kind, strength, n_frames, height, width, g)
    return render_clip(clip.scene, clip.extrinsics, n_frames, height, width, pixel_coords=coords)
