"""Nearest-point reprojection: Triton kernel (interpreter on a CPU) vs PyTorch reference vs the authors'
fixture.

Tensors live on the GPU when there is one (the compiled kernel), else on the CPU (the interpreter). On a GPU,
FMA contraction may move a point lying within an ulp of a rounding boundary, so random-input comparisons there
allow a handful of differing pixels; on the CPU they are exact.
"""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from videogpa.kernels.reproject import render_point_cloud, reprojection_error
from videogpa.kernels.reproject.reference import project

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
MAX_DIFFERING_PIXELS = 1e-4 if DEVICE.type == "cuda" else 0.0


def random_scene(n_points: int, n_views: int, height: int, width: int, seed: int):
    """Points in front of slightly moving cameras, with some behind, far outside, NaN, and exact
    duplicates."""
    g = torch.Generator().manual_seed(seed)
    depth = 2.0 + torch.rand(n_points, generator=g) * 2.0
    focal = 0.9 * width
    u = torch.rand(n_points, generator=g) * width * 1.2 - 0.1 * width
    v = torch.rand(n_points, generator=g) * height * 1.2 - 0.1 * height
    points = torch.stack([(u - width / 2) * depth / focal, (v - height / 2) * depth / focal, depth], dim=1)
    points[:5, 2] = -1.0  # behind every camera
    points[5:8, 0] = 1e6  # far outside
    points[8, 1] = float("nan")
    points[20:40] = points[40:60]  # exact duplicates: same depth, lower index must win
    colors = torch.rand(n_points, 3, generator=g) * 1.1 - 0.05  # some outside [0, 1]: clamped
    intr = torch.tensor([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]]).repeat(
        n_views, 1, 1
    )
    angle = torch.randn(n_views, generator=g) * 0.05
    extr = torch.zeros(n_views, 3, 4)
    extr[:, 0, 0], extr[:, 0, 2], extr[:, 1, 1] = angle.cos(), angle.sin(), 1.0
    extr[:, 2, 0], extr[:, 2, 2] = -angle.sin(), angle.cos()
    extr[:, :, 3] = torch.randn(n_views, 3, generator=g) * 0.05
    return points.to(DEVICE), colors.to(DEVICE), intr.to(DEVICE), extr.to(DEVICE)


def brute_force_winners(points, intr, extr, height, width) -> torch.Tensor:
    """[T, H, W] winner index by lexicographic sort on (pixel, depth, index): an independent z-buffer."""
    z, u, v = (x.cpu() for x in project(points.cpu(), intr.cpu(), extr.cpu()))
    winners = torch.full((intr.shape[0], height * width), -1, dtype=torch.int64)
    for t in range(intr.shape[0]):
        ok = ((z[t] > 0) & (u[t] >= 0) & (u[t] < width) & (v[t] >= 0) & (v[t] < height)).numpy()
        idx = np.nonzero(ok)[0]
        pix = (v[t].numpy()[idx] * width + u[t].numpy()[idx]).astype(np.int64)
        order = np.lexsort((idx, z[t].numpy()[idx], pix))
        first = np.ones(len(order), dtype=bool)
        first[1:] = pix[order][1:] != pix[order][:-1]
        winners[t, pix[order][first]] = torch.from_numpy(idx[order][first])
    return winners.view(-1, height, width)


def assert_same_render(images, hit, ref_images, ref_hit):
    differing = ((images != ref_images).any(dim=1) | (hit != ref_hit)).float().mean().item()
    assert differing <= MAX_DIFFERING_PIXELS


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_matches_fixture(fixtures_dir, backend):
    data = {k: v.to(DEVICE) for k, v in load_file(fixtures_dir / "reproj_a" / "reproj.safetensors").items()}
    n_views, _, height, width = data["reprojected"].shape
    points, colors = data["kept_vertices"], data["kept_colors"] / 255.0
    cameras = (data["intrinsic"], data["extrinsic"])
    images, hit = render_point_cloud(points, colors, *cameras, height, width, backend=backend)
    if DEVICE.type == "cuda":  # a point within an ulp of a rounding boundary may move (FMA contraction)
        assert_same_render(images, hit, data["reprojected"], data["winner_index"] >= 0)
    else:
        torch.testing.assert_close(images, data["reprojected"], rtol=0, atol=0)
        assert torch.equal(hit, data["winner_index"] >= 0)
    frames = data["gt_frames"].permute(0, 3, 1, 2).float() / 255.0
    errors = reprojection_error(points, colors, *cameras, frames, backend=backend)
    assert errors.shape == (n_views,)
    meta = json.loads((fixtures_dir / "reproj_a" / "meta.json").read_text())
    rel = 1e-3 if DEVICE.type == "cuda" else 1e-5
    assert errors.mean().item() == pytest.approx(meta["results"]["mse"], rel=rel)


@pytest.mark.parametrize("color_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n_points,n_views,height,width,seed", [(1237, 3, 17, 23, 1), (3001, 2, 31, 40, 2)])
def test_kernel_matches_reference_and_brute_force(n_points, n_views, height, width, seed, color_dtype):
    points, colors, intr, extr = random_scene(n_points, n_views, height, width, seed)
    colors = colors.to(color_dtype)
    ref_images, ref_hit = render_point_cloud(points, colors, intr, extr, height, width, backend="torch")
    out_images = torch.full((n_views, 3, height, width), float("nan"), device=DEVICE)
    out_hit = torch.ones((n_views, height, width), dtype=torch.bool, device=DEVICE)
    images, hit = render_point_cloud(
        points, colors, intr, extr, height, width, backend="triton", out_images=out_images, out_hit=out_hit
    )
    assert images.data_ptr() == out_images.data_ptr() and hit.data_ptr() == out_hit.data_ptr()
    assert not images.isnan().any()
    assert_same_render(images, hit, ref_images, ref_hit)
    winners = brute_force_winners(points, intr, extr, height, width).to(DEVICE)
    assert torch.equal(ref_hit, winners >= 0)
    assert 0 < ref_hit.float().mean() < 1
    levels = torch.floor(torch.clamp(colors.float() * 255, 0, 255))
    expected = torch.where(winners[:, None] >= 0, levels[winners.clamp(min=0)].permute(0, 3, 1, 2), 0.0)
    torch.testing.assert_close((ref_images + 1) / 2 * 255, expected, rtol=0, atol=1e-4)


def test_ties_go_to_lower_index():
    # 1, 2 tie
    points = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, 2.0], [0.0, 0.0, 3.0]], device=DEVICE).flip(0)
    colors = torch.tensor([[1.0, 1.0, 1.0], [0.2, 0.2, 0.2], [0.6, 0.6, 0.6]], device=DEVICE)
    intr = torch.tensor([[[4.0, 0.0, 2.0], [0.0, 4.0, 2.0], [0.0, 0.0, 1.0]]], device=DEVICE)
    extr = torch.eye(4, device=DEVICE)[None]
    for backend in ("torch", "triton"):
        images, hit = render_point_cloud(points, colors, intr, extr, 5, 5, backend=backend)
        assert hit.sum() == 1 and hit[0, 2, 2]
        assert images[0, :, 2, 2].tolist() == pytest.approx([51 / 255 * 2 - 1] * 3)
        assert (images[0, :, ~hit[0]] == -1).all()


@pytest.mark.parametrize("frame_dtype", [torch.float32, torch.bfloat16])
def test_fused_error_matches_reference(frame_dtype):
    n_views, height, width = 3, 19, 26
    points, colors, intr, extr = random_scene(2000, n_views, height, width, seed=5)
    frames = torch.rand(n_views, 3, height, width, device=DEVICE).to(frame_dtype)
    ref = reprojection_error(points, colors, intr, extr, frames, backend="torch")
    images, _ = render_point_cloud(points, colors, intr, extr, height, width, backend="torch")
    direct = (((images + 1) / 2 - frames.float()) ** 2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(ref, direct, rtol=1e-6, atol=1e-7)
    fused = reprojection_error(points, colors, intr, extr, frames, backend="triton")
    torch.testing.assert_close(fused, ref, rtol=1e-3 if DEVICE.type == "cuda" else 1e-5, atol=1e-7)
    again = reprojection_error(points, colors, intr, extr, frames, backend="triton")
    assert torch.equal(fused, again)


def test_4x4_extrinsics_empty_cloud_and_determinism():
    points, colors, intr, extr = random_scene(500, 2, 9, 11, seed=3)
    bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], device=DEVICE).expand(2, 1, 4)
    a = render_point_cloud(points, colors, intr, extr, 9, 11, backend="triton")
    b = render_point_cloud(points, colors, intr, torch.cat([extr, bottom], dim=1), 9, 11, backend="triton")
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    empty = torch.zeros(0, 3, device=DEVICE)
    for backend in ("torch", "triton"):
        images, hit = render_point_cloud(empty, empty, intr, extr, 9, 11, backend=backend)
        assert (images == -1).all() and not hit.any()


@pytest.mark.gpu
def test_paper_size_on_gpu_is_deterministic():
    """T = 10 views of 518² (2.68 M points): repeated kernel runs are bit-identical and agree with the
    reference."""
    n_views, size = 10, 518
    points, colors, intr, extr = random_scene(n_views * size * size, n_views, size, size, seed=9)
    first = render_point_cloud(points, colors, intr, extr, size, size, backend="triton")
    for _ in range(3):
        again = render_point_cloud(points, colors, intr, extr, size, size, backend="triton")
        assert torch.equal(again[0], first[0]) and torch.equal(again[1], first[1])
    assert_same_render(*first, *render_point_cloud(points, colors, intr, extr, size, size, backend="torch"))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"points": torch.zeros(4, 2)}, "points"),
        ({"colors": torch.zeros(3, 3)}, "colors"),
        ({"intrinsics": torch.zeros(2, 3, 4)}, "intrinsics"),
        ({"extrinsics": torch.zeros(3, 3, 4)}, "extrinsics"),
        ({"height": 0}, "height"),
        ({"width": 2.5}, "width"),
        ({"backend": "cuda"}, "backend"),
        ({"out_images": torch.zeros(2, 3, 4, 4)}, "out_images"),
        ({"points": torch.zeros(4, 3, dtype=torch.int64)}, "floating"),
    ],
)
def test_bad_input_names_the_argument(kwargs, message):
    args = {
        "points": torch.zeros(4, 3),
        "colors": torch.zeros(4, 3),
        "intrinsics": torch.eye(3).repeat(2, 1, 1),
        "extrinsics": torch.zeros(2, 3, 4),
        "height": 5,
        "width": 6,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        render_point_cloud(**args)


def test_fused_error_checks_frames():
    cameras = (torch.eye(3).repeat(2, 1, 1), torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="3 views"):
        reprojection_error(torch.zeros(4, 3), torch.zeros(4, 3), *cameras, torch.zeros(3, 3, 5, 6))
    with pytest.raises(ValueError, match="frames"):
        reprojection_error(torch.zeros(4, 3), torch.zeros(4, 3), *cameras, torch.zeros(2, 5, 6))
