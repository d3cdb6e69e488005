"""Synthetic scenes: exact cameras/depth, deterministic rendering, and oracle scores that rank clean above
corrupted."""

import json
import random

import pytest
import torch

from videogpa.engine.geometry.io import load_geometry
from videogpa.engine.geometry.pointcloud import unproject_depth
from videogpa.engine.geometry.scoring import score_reconstruction
from videogpa.engine.scenes.procedural import CAMERA_PATHS, CORRUPTIONS, corrupt, make_scene, render_clip
from videogpa.engine.scenes.video_set import clip_geometry, write_synthetic_set
from videogpa.kernels.reproject.reference import project

SIZE, FRAMES = 48, 8


pytestmark = pytest.mark.usefixtures("one_thread")


def oracle_mse(clip) -> float:
    return score_reconstruction(clip.frames, clip_geometry(clip), image_metrics=False).mse


@pytest.mark.parametrize("path", CAMERA_PATHS)
def test_render_is_deterministic_and_well_formed(path):
    a = render_clip(make_scene(7), path, FRAMES, SIZE, SIZE + 8)
    b = render_clip(make_scene(7), path, FRAMES, SIZE, SIZE + 8)
    frames, depth, intrinsics, extrinsics = b
    assert (
        frames is b.frames and depth is b.depth and intrinsics is b.intrinsics and extrinsics is b.extrinsics
    )
    assert torch.equal(a.frames, b.frames) and torch.equal(a.depth, b.depth)
    assert a.frames.shape == (FRAMES, 3, SIZE, SIZE + 8) and a.depth.shape == (FRAMES, SIZE, SIZE + 8)
    assert a.frames.min() >= 0 and a.frames.max() <= 1 and a.frames.std() > 0.05
    assert torch.isfinite(a.depth).all() and a.depth.min() > 0.1
    rot = a.extrinsics[:, :, :3]
    torch.testing.assert_close(
        rot @ rot.transpose(1, 2), torch.eye(3).expand(FRAMES, 3, 3), atol=1e-5, rtol=0
    )
    assert not torch.equal(a.frames[0], a.frames[-1])  # the camera moves
    c = render_clip(make_scene(8), path, FRAMES, SIZE, SIZE + 8)
    assert not torch.equal(a.frames, c.frames)


def test_depth_and_cameras_are_exact():
    """Unprojected depth projects back onto its own pixel, and frame 0's points land on frame 3's surfaces."""
    clip = render_clip(make_scene(3), "orbit", FRAMES, SIZE, SIZE)
    points = unproject_depth(clip.depth, clip.intrinsics, clip.extrinsics)
    z, u, v = project(points[0].reshape(-1, 3), clip.intrinsics[:1], clip.extrinsics[:1])
    rows, cols = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    assert torch.equal(u[0].long(), cols.reshape(-1)) and torch.equal(v[0].long(), rows.reshape(-1))
    z, u, v = project(points[0].reshape(-1, 3), clip.intrinsics[3:4], clip.extrinsics[3:4])
    inside = (u[0] >= 0) & (u[0] < SIZE) & (v[0] >= 0) & (v[0] < SIZE) & (z[0] > 0)
    seen = clip.depth[3][v[0][inside].long(), u[0][inside].long()]
    relative = (seen - z[0][inside]) / seen
    assert inside.float().mean() > 0.5 and (relative.abs() < 0.03).float().mean() > 0.75
    # Frame 3 may see something nearer (occlusion), but hardly ever something farther than a visible point.
    assert (relative > 0.03).float().mean() < 0.05


def test_zero_strength_is_the_clean_clip_and_bad_input():
    clip = render_clip(make_scene(1), "dolly", FRAMES, SIZE, SIZE)
    for kind in CORRUPTIONS:
        same = corrupt(clip, kind, 0.0, seed=5)
        torch.testing.assert_close(same.frames, clip.frames, atol=1e-6, rtol=0)
        moved = corrupt(clip, kind, 1.0, seed=5)
        assert torch.equal(moved.frames, corrupt(clip, kind, 1.0, seed=5).frames)
        assert not torch.equal(moved.frames, clip.frames)
    with pytest.raises(ValueError, match="kind"):
        corrupt(clip, "melt", 1.0, seed=0)
    with pytest.raises(ValueError, match="strength"):
        corrupt(clip, "warp", -1.0, seed=0)
    with pytest.raises(ValueError, match="kind"):
        render_clip(make_scene(1), "crane", FRAMES, SIZE, SIZE)


def test_oracle_ranks_clean_above_corrupted():
    rng = random.Random(2024)
    correct, n_pairs = 0, 52
    for i in range(n_pairs):
        clip = render_clip(make_scene(1000 + i), CAMERA_PATHS[i % 3], FRAMES, SIZE, SIZE)
        bad = corrupt(clip, CORRUPTIONS[i % len(CORRUPTIONS)], rng.uniform(0.3, 1.0), seed=i)
        correct += oracle_mse(clip) < oracle_mse(bad)
    assert correct / n_pairs >= 0.95


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_score_grows_with_strength(kind):
    strengths = (0.0, 0.3, 0.6, 1.0)
    totals = torch.zeros(len(strengths))
    for seed in range(3):
        clip = render_clip(make_scene(50 + seed), CAMERA_PATHS[seed], FRAMES, SIZE, SIZE)
        totals += torch.tensor([oracle_mse(corrupt(clip, kind, s, seed=seed)) for s in strengths])
    assert (totals[1:] > totals[:-1]).all(), totals


def test_synthetic_set_writer_is_deterministic(tmp_path):
    first = write_synthetic_set(
        tmp_path / "a", 2, n_frames=4, size=32, kinds=("warp", "drift"), seed=3, progress=False
    )
    second = write_synthetic_set(
        tmp_path / "b", 2, n_frames=4, size=32, kinds=("warp", "drift"), seed=3, progress=False
    )
    rows = [json.loads(line) for line in first.read_text().splitlines()]
    assert first.read_text() == second.read_text() and len(rows) == 6
    assert [r["corruption"] for r in rows[:3]] == [None, "warp", "drift"] and rows[0]["strength"] == 0.0
    assert all(0.3 <= r["strength"] <= 1.0 for r in rows if r["corruption"])
    for row in rows:
        a, b = (load_geometry(tmp_path / d / row["geometry"]) for d in ("a", "b"))
        assert torch.equal(a.depth, b.depth) and a.depth.shape == (4, 32, 32)
        assert (tmp_path / "a" / row["video"]).read_bytes() == (tmp_path / "b" / row["video"]).read_bytes()
    with pytest.raises(ValueError, match="unknown corruption"):
        write_synthetic_set(tmp_path / "c", 1, kinds=("blur",))
