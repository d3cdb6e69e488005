"""DA3GeometryModel: the `da3` backend behind the GeometryModel interface, scoring its processed frames."""

import pytest
import torch

from videogpa.engine.geometry import Geometry, GeometryModel
from videogpa.engine.geometry.da3 import TINY_CONFIG, TINY_MONO_CONFIG, DA3GeometryModel, random_da3, save_da3
from videogpa.engine.geometry.da3.preprocess import normalise
from videogpa.engine.geometry.registry import build_geometry_model
from videogpa.engine.geometry.scoring import score_reconstruction

SIZE = 56  # process_res of the tiny backend: frames of 56 px on the longest side are left as they are


@pytest.fixture(scope="module")
def gfm(tmp_path_factory, single_thread):
    torch.manual_seed(13)
    path = save_da3(random_da3(TINY_CONFIG), tmp_path_factory.mktemp("da3") / "tiny.safetensors")
    return build_geometry_model("da3", weights_path=path, device="cpu", process_res=SIZE)


def frames(t, h, w, seed):
    return torch.rand(t, 3, h, w, generator=torch.Generator().manual_seed(seed))


def test_reconstruct_is_the_networks_output_on_normalised_frames(gfm):
    assert isinstance(gfm, DA3GeometryModel) and isinstance(gfm, GeometryModel) and gfm.name == "da3"
    assert gfm.input_size == SIZE and gfm.dtype == torch.float32
    video = frames(4, SIZE, SIZE, 0)
    geometry = gfm.reconstruct(video)
    assert isinstance(geometry, Geometry) and geometry.world_points is None  # scoring unprojects the depth
    assert geometry.depth.shape == (4, SIZE, SIZE) and geometry.extrinsics.shape == (4, 3, 4)
    with torch.no_grad():
        expected = gfm.model(normalise(video)[None])
    for field in ("depth", "depth_conf", "extrinsics", "intrinsics"):
        torch.testing.assert_close(getattr(geometry, field), expected[field][0], rtol=0, atol=0)


def test_several_videos_per_call_equal_one_at_a_time(gfm):
    videos = torch.stack([frames(3, 42, SIZE, 1), frames(3, 42, SIZE, 2)])  # not square: still processed size
    together = gfm.reconstruct_batch(videos)
    for video, geometry in zip(videos, together):
        alone = gfm.reconstruct(video)
        for field in ("depth", "depth_conf", "intrinsics", "extrinsics"):
            torch.testing.assert_close(getattr(geometry, field), getattr(alone, field), rtol=1e-5, atol=1e-5)


def test_its_geometry_scores(gfm):
    video = frames(3, SIZE, SIZE, 3)
    score = score_reconstruction(video, gfm.reconstruct(video), image_metrics=False)
    assert score.n_points == 3 * SIZE * SIZE and score.mse >= 0


def test_frames_not_at_the_processed_size_are_refused(gfm):
    with pytest.raises(ValueError, match=r"got \(70, 70\), which it would resize to \(56, 56\)"):
        gfm.reconstruct(frames(2, 70, 70, 4))
    with pytest.raises(ValueError, match=r"frames must be \[T, 3, H, W\]"):
        gfm.reconstruct(frames(2, SIZE, SIZE, 5)[None])


def test_a_mono_model_is_not_a_geometry_backend(tmp_path):
    path = save_da3(random_da3(TINY_MONO_CONFIG), tmp_path / "mono.safetensors")
    with pytest.raises(ValueError, match="needs an any-view model with cameras"):
        DA3GeometryModel(path, device="cpu")
