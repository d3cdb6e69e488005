"""VGGTGeometryModel behind the GeometryModel interface."""

import pytest
import torch

from videogpa.engine.geometry import Geometry, GeometryModel
from videogpa.engine.geometry.registry import build_geometry_model
from videogpa.engine.geometry.scoring import score_reconstruction
from videogpa.engine.geometry.vggt import TINY_CONFIG, VGGTGeometryModel, random_vggt, save_vggt
from videogpa.engine.types import resolve_compute_dtype


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(11)
    return save_vggt(random_vggt(TINY_CONFIG), tmp_path_factory.mktemp("vggt") / "tiny.safetensors")


@pytest.fixture(scope="module")
def gfm(weights):
    return VGGTGeometryModel(weights)


def test_reconstruct_returns_the_models_geometry_without_the_batch_dim(gfm):
    assert isinstance(gfm, GeometryModel) and gfm.name == "vggt"
    assert gfm.input_size == TINY_CONFIG.img_size
    assert gfm.device.type == "cpu" and gfm.dtype == torch.float32
    size = gfm.input_size
    frames = torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(0))
    geometry = gfm.reconstruct(frames)
    assert isinstance(geometry, Geometry)
    assert geometry.depth.shape == (3, size, size) and geometry.world_points.shape == (3, size, size, 3)
    with torch.no_grad():
        expected = gfm.model(frames)
    torch.testing.assert_close(geometry.depth, expected["depth"][0, ..., 0])
    torch.testing.assert_close(geometry.depth_conf, expected["depth_conf"][0])
    torch.testing.assert_close(geometry.extrinsics, expected["extrinsic"][0])
    torch.testing.assert_close(geometry.intrinsics, expected["intrinsic"][0])
    torch.testing.assert_close(geometry.world_points, expected["world_points"][0])
    torch.testing.assert_close(geometry.world_points_conf, expected["world_points_conf"][0])
    assert (geometry.depth > 0).all() and (geometry.depth_conf > 1).all()


def test_several_videos_per_call_equal_one_at_a_time(gfm):
    videos = torch.rand(2, 3, 3, 28, 42, generator=torch.Generator().manual_seed(1))
    together = gfm.reconstruct_batch(videos)
    for video, geometry in zip(videos, together):
        alone = gfm.reconstruct(video)
        for field in ("depth", "depth_conf", "intrinsics", "extrinsics", "world_points", "world_points_conf"):
            torch.testing.assert_close(getattr(geometry, field), getattr(alone, field), rtol=1e-5, atol=1e-5)


def test_bf16_autocast_stays_close_to_float32(weights, gfm):
    bf16 = VGGTGeometryModel(weights, device="cpu", dtype="bf16")
    assert bf16.dtype == torch.bfloat16
    frames = torch.rand(2, 3, 28, 28, generator=torch.Generator().manual_seed(2))
    low, full = bf16.reconstruct(frames), gfm.reconstruct(frames)
    assert low.depth.dtype == torch.float32  # heads run in float32
    torch.testing.assert_close(low.depth, full.depth, rtol=0.05, atol=0.05)


def test_compute_dtype_resolution():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_compute_dtype(None, cpu) == torch.float32
    assert resolve_compute_dtype("fp16", cuda) == torch.float16
    assert resolve_compute_dtype(torch.bfloat16, cpu) == torch.bfloat16
    with pytest.raises(ValueError, match="dtype"):
        resolve_compute_dtype("int8", cpu)
    with pytest.raises(ValueError, match="dtype"):
        resolve_compute_dtype(torch.float64, cpu)


def test_bad_frames_are_rejected(gfm):
    with pytest.raises(ValueError, match=r"frames must be \[T, 3, H, W\]"):
        gfm.reconstruct(torch.rand(3, 28, 28))
    with pytest.raises(ValueError, match="floating point"):
        gfm.reconstruct(torch.zeros(2, 3, 28, 28, dtype=torch.uint8))
    with pytest.raises(ValueError, match="multiples of 14"):
        gfm.reconstruct(torch.rand(2, 3, 30, 28))


def test_the_registry_builds_it_and_its_geometry_scores(weights):
    gfm = build_geometry_model("vggt", weights_path=weights, device="cpu", dtype="fp32")
    assert isinstance(gfm, VGGTGeometryModel)
    frames = torch.rand(3, 3, 28, 28, generator=torch.Generator().manual_seed(4))
    result = score_reconstruction(frames, gfm.reconstruct(frames))
    assert result.n_points == 3 * 28 * 28  # depth confidence 1 + exp(·) > 1e-5 keeps every point
    assert 0 <= result.mse <= 1 and result.motion >= 0
