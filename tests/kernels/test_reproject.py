"""Nearest-point reprojection: Triton kernel (interpreter on CPU) vs PyTorch reference vs the authors' fixture."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from videogpa.kernels.reproject import render_point_cloud, reprojection_error
from videogpa.kernels.reproject.reference import project


def random_scene(n_points: int, n_views: int, height: int, width: int, seed: int):
    """Points in front of slightly moving cameras, with some behind, far outside, NaN, and exact duplicates."""
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
    return points, colors, intr, extr


def brute_force_winners(points, intr, extr, height, width) -> torch.Tensor:
    """[T, H, W] winner index by lexicographic sort on (pixel, depth, index): an independent z-buffer."""
    z, u, v = project(points, intr, extr)
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


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_matches_fixture(fixtures_dir, backend):
    data = load_file(fixtures_dir / "reproj_a" / "reproj.safetensors")
    n_views, _, height, width = data["reprojected"].shape
    colors = data["kept_colors"] / 255.0
    images, hit = render_point_cloud(
        data["kept_vertices"], colors, data["intrinsic"], data["extrinsic"], height, width, backend=backend
    )
    torch.testing.assert_close(images, data["reprojected"], rtol=0, atol=0)
    assert torch.equal(hit, data["winner_index"] >= 0)
    frames = data["gt_frames"].permute(0, 3, 1, 2).float() / 255.0
    errors = reprojection_error(
        data["kept_vertices"], colors, data["intrinsic"], data["extrinsic"], frames, backend=backend
    )
    assert errors.shape == (n_views,)
    meta = json.loads((fixtures_dir / "reproj_a" / "meta.json").read_text())
    assert errors.mean().item() == pytest.approx(meta["results"]["mse"], rel=1e-5)


@pytest.mark.parametrize("color_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n_points,n_views,height,width,seed", [(1237, 3, 17, 23, 1), (3001, 2, 31, 40, 2)])
def test_kernel_matches_reference_and_brute_force(n_points, n_views, height, width, seed, color_dtype):
    points, colors, intr, extr = random_scene(n_points, n_views, height, width, seed)
    colors = colors.to(color_dtype)
    ref_images, ref_hit = render_point_cloud(points, colors, intr, extr, height, width, backend="torch")
    out_images = torch.full((n_views, 3, height, width), float("nan"))
    out_hit = torch.ones((n_views, height, width), dtype=torch.bool)
    images, hit = render_point_cloud(
        points, colors, intr, extr, height, width, backend="triton", out_images=out_images, out_hit=out_hit
    )
    assert images.data_ptr() == out_images.data_ptr() and hit.data_ptr() == out_hit.data_ptr()
    torch.testing.assert_close(images, ref_images, rtol=0, atol=0)
    assert torch.equal(hit, ref_hit)
    winners = brute_force_winners(points, intr, extr, height, width)
    assert torch.equal(hit, winners >= 0)
    assert 0 < hit.float().mean() < 1
    levels = torch.floor(torch.clamp(colors.float() * 255, 0, 255))
    expected = torch.where(winners[:, None] >= 0, levels[winners.clamp(min=0)].permute(0, 3, 1, 2), 0.0)
    torch.testing.assert_close((images + 1) / 2 * 255, expected, rtol=0, atol=1e-4)


def test_ties_go_to_lower_index():
    points = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, 2.0], [0.0, 0.0, 3.0]]).flip(0)  # index 1 and 2 tie
    colors = torch.tensor([[1.0, 1.0, 1.0], [0.2, 0.2, 0.2], [0.6, 0.6, 0.6]])
    intr = torch.tensor([[[4.0, 0.0, 2.0], [0.0, 4.0, 2.0], [0.0, 0.0, 1.0]]])
    extr = torch.eye(4)[None]
    for backend in ("torch", "triton"):
        images, hit = render_point_cloud(points, colors, intr, extr, 5, 5, backend=backend)
        assert hit.sum() == 1 and hit[0, 2, 2]
        assert images[0, :, 2, 2].tolist() == pytest.approx([51 / 255 * 2 - 1] * 3)
        assert (images[0, :, ~hit[0]] == -1).all()


@pytest.mark.parametrize("frame_dtype", [torch.float32, torch.bfloat16])
def test_fused_error_matches_reference(frame_dtype):
    n_views, height, width = 3, 19, 26
    points, colors, intr, extr = random_scene(2000, n_views, height, width, seed=5)
    frames = torch.rand(n_views, 3, height, width).to(frame_dtype)
    ref = reprojection_error(points, colors, intr, extr, frames, backend="torch")
    images, _ = render_point_cloud(points, colors, intr, extr, height, width, backend="torch")
    direct = (((images + 1) / 2 - frames.float()) ** 2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(ref, direct, rtol=1e-6, atol=1e-7)
    fused = reprojection_error(points, colors, intr, extr, frames, backend="triton")
    torch.testing.assert_close(fused, ref, rtol=1e-5, atol=1e-7)
    again = reprojection_error(points, colors, intr, extr, frames, backend="triton")
    assert torch.equal(fused, again)


def test_4x4_extrinsics_empty_cloud_and_determinism():
    points, colors, intr, extr = random_scene(500, 2, 9, 11, seed=3)
    square = torch.cat([extr, torch.tensor([0.0, 0.0, 0.0, 1.0]).expand(2, 1, 4)], dim=1)
    a = render_point_cloud(points, colors, intr, extr, 9, 11, backend="triton")
    b = render_point_cloud(points, colors, intr, square, 9, 11, backend="triton")
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    for backend in ("torch", "triton"):
        images, hit = render_point_cloud(
            torch.zeros(0, 3), torch.zeros(0, 3), intr, extr, 9, 11, backend=backend
        )
        assert (images == -1).all() and not hit.any()


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
