"""Scoring one video: sidecar geometry I/O, the oracle backend, the registry, image metrics."""

import math

import pytest
import torch

from videogpa.engine.geometry.base import Geometry
from videogpa.engine.geometry.io import (
    crop_resize_geometry,
    load_geometry,
    save_geometry,
    select_frames,
    sidecar_path,
)
from videogpa.engine.geometry.metrics import consistency_score, psnr, ssim
from videogpa.engine.geometry.oracle import OracleGeometryModel
from videogpa.engine.geometry.pointcloud import unproject_depth
from videogpa.engine.geometry.registry import build_geometry_model
from videogpa.engine.geometry.scoring import score_reconstruction
from videogpa.engine.scenes.procedural import corrupt, make_scene, render_clip
from videogpa.engine.scenes.video_set import clip_geometry


@pytest.fixture(scope="module")
def clip():
    return render_clip(make_scene(11), "orbit", 6, 32, 40)


def test_sidecar_round_trip_and_errors(tmp_path, clip):
    geometry = clip_geometry(clip)
    path = sidecar_path(tmp_path / "clip.mp4")
    assert path.name == "clip.geometry.safetensors"
    save_geometry(path, geometry)
    loaded = load_geometry(path)
    for name in ("depth", "depth_conf", "intrinsics", "extrinsics"):
        assert torch.equal(getattr(loaded, name), getattr(geometry, name))
    assert loaded.world_points is None
    with pytest.raises(ValueError, match="does not exist"):
        load_geometry(tmp_path / "missing.geometry.safetensors")
    (tmp_path / "junk.geometry.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="junk.geometry.safetensors"):
        load_geometry(tmp_path / "junk.geometry.safetensors")
    from safetensors.torch import save_file

    save_file({"depth": geometry.depth}, str(tmp_path / "partial.geometry.safetensors"))
    with pytest.raises(ValueError, match="depth_conf"):
        load_geometry(tmp_path / "partial.geometry.safetensors")


def test_select_and_crop_geometry(clip):
    geometry = clip_geometry(clip)
    picked = select_frames(geometry, [0, 2, 5])
    assert torch.equal(picked.depth, geometry.depth[[0, 2, 5]])
    # A pure crop (side == size) keeps every world point of the cropped pixels.
    cropped = crop_resize_geometry(geometry, top=0, left=4, side=32, size=32)
    before = unproject_depth(geometry.depth, geometry.intrinsics, geometry.extrinsics)[:, :, 4:36]
    after = unproject_depth(cropped.depth, cropped.intrinsics, cropped.extrinsics)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)
    half = crop_resize_geometry(geometry, top=0, left=4, side=32, size=16)
    assert half.depth.shape == (6, 16, 16)
    torch.testing.assert_close(half.intrinsics[:, 0, 0], geometry.intrinsics[:, 0, 0] / 2)
    # Pixel centre u' of the half-size image sits at original column 4 + 2u' + 0.5.
    torch.testing.assert_close(half.intrinsics[:, 0, 2], (geometry.intrinsics[:, 0, 2] - 4 - 0.5) / 2)


def test_oracle_and_registry(tmp_path, clip):
    oracle = build_geometry_model("oracle", geometry=clip_geometry(clip))
    assert isinstance(oracle, OracleGeometryModel)
    assert oracle.reconstruct(clip.frames).depth is oracle.geometry.depth
    with pytest.raises(ValueError, match="do not match"):
        oracle.reconstruct(clip.frames[:3])
    with pytest.raises(ValueError, match="exactly one"):
        OracleGeometryModel()
    with pytest.raises(ValueError, match="backend must be one of"):
        build_geometry_model("colmap")
    save_geometry(tmp_path / "g.geometry.safetensors", clip_geometry(clip))
    from_file = build_geometry_model("oracle", geometry_path=tmp_path / "g.geometry.safetensors")
    assert torch.equal(from_file.reconstruct(clip.frames).extrinsics, clip.extrinsics)


def test_score_reconstruction(clip):
    clean = score_reconstruction(clip.frames, clip_geometry(clip))
    fused = score_reconstruction(clip.frames, clip_geometry(clip), image_metrics=False)
    assert fused.mse == pytest.approx(clean.mse, rel=1e-5)
    assert clean.coverage == 1.0 and clean.n_points == clip.depth.numel() and clean.score == clean.mse
    bad_clip = corrupt(clip, "jitter", 1.0, seed=3)
    bad = score_reconstruction(bad_clip.frames, clip_geometry(bad_clip))
    assert bad.mse > clean.mse and bad.psnr < clean.psnr and bad.ssim < clean.ssim and bad.mvcs < clean.mvcs
    assert bad.motion == clean.motion > 0
    again = score_reconstruction(bad_clip.frames, clip_geometry(bad_clip))
    assert again == bad
    conf = torch.rand_like(clip.depth)
    geometry = Geometry(clip.depth, conf, clip.intrinsics, clip.extrinsics)
    assert score_reconstruction(clip.frames, geometry, conf_thres=50).n_points == math.ceil(
        clip.depth.numel() / 2
    )
    with_lpips = score_reconstruction(
        clip.frames, clip_geometry(clip), lpips=lambda a, b: torch.full((6,), 0.25)
    )
    assert with_lpips.lpips == 0.25 and with_lpips.score == pytest.approx(clean.mse + 0.25)
    with pytest.raises(ValueError, match="do not match"):
        score_reconstruction(clip.frames[:, :, :16], clip_geometry(clip))


def _ssim_direct(x: torch.Tensor, y: torch.Tensor) -> float:
    """SSIM by explicit loops over window positions (independent of the conv implementation)."""
    coords = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-(coords**2) / (2 * 1.5**2))
    w = torch.outer(g, g) / g.sum() ** 2
    values = []
    for c in range(3):
        for i in range(x.shape[-2] - 10):
            for j in range(x.shape[-1] - 10):
                a, b = x[c, i : i + 11, j : j + 11].double(), y[c, i : i + 11, j : j + 11].double()
                ma, mb = (w * a).sum(), (w * b).sum()
                va, vb = (w * a * a).sum() - ma**2, (w * b * b).sum() - mb**2
                cov = (w * a * b).sum() - ma * mb
                c1, c2 = 0.01**2, 0.03**2
                values.append(((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(torch.stack(values).mean())


def test_psnr_ssim_and_3dcs():
    x = torch.rand(2, 3, 13, 14)
    y = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    mse_per_frame = ((x - y) ** 2).flatten(1).mean(1)
    assert psnr(x, y) == pytest.approx(float((10 * torch.log10(1 / mse_per_frame)).mean()), rel=1e-5)
    assert psnr(x, x) == pytest.approx(100.0)
    expected = (_ssim_direct(x[0], y[0]) + _ssim_direct(x[1], y[1])) / 2
    assert ssim(x, y) == pytest.approx(expected, abs=1e-5)
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-6)
    assert consistency_score(0.1, 0.3) == pytest.approx(0.4)
    assert consistency_score(0.1, 0.3, lpips_weight=0.5) == pytest.approx(0.25)
    assert consistency_score(0.1, None) == 0.1
    with pytest.raises(ValueError, match="frames"):
        psnr(x[:, :2], y)


def test_point_sources(clip):
    """auto takes the world points when present; depth always unprojects; pointmap uses the point
    confidence."""
    shifted = unproject_depth(clip.depth, clip.intrinsics, clip.extrinsics) + 0.05
    point_conf = torch.zeros_like(clip.depth)
    point_conf[:, :4] = 1.0  # only four rows are confident
    geometry = Geometry(
        clip.depth, torch.ones_like(clip.depth), clip.intrinsics, clip.extrinsics, shifted, point_conf
    )
    auto = score_reconstruction(clip.frames, geometry)
    depth = score_reconstruction(clip.frames, geometry, points="depth")
    pointmap = score_reconstruction(clip.frames, geometry, points="pointmap")
    assert depth == score_reconstruction(clip.frames, clip_geometry(clip))
    assert auto.mse > depth.mse and auto.n_points == depth.n_points == clip.depth.numel()
    assert pointmap.n_points == 6 * 4 * 40
    with pytest.raises(ValueError, match="source"):
        score_reconstruction(clip.frames, geometry, points="mesh")
    with pytest.raises(ValueError, match="no world_points"):
        score_reconstruction(clip.frames, clip_geometry(clip), points="pointmap")
