"""DepthAnything3Net beyond the fixture: input checks, reference strategies, the mono/metric network."""

import pytest
import torch

from videogpa.engine.geometry.da3 import TINY_CONFIG, TINY_MONO_CONFIG, random_da3
from videogpa.engine.geometry.da3.reference_view import reference_first_order


@pytest.fixture(scope="module")
def net(single_thread):
    torch.manual_seed(3)
    return random_da3(TINY_CONFIG).eval()


def images(b, s, h=28, w=42, seed=0):
    return torch.randn(b, s, 3, h, w, generator=torch.Generator().manual_seed(seed))


def test_reference_first_order_moves_the_reference_to_the_front():
    order = reference_first_order(torch.tensor([2, 0, 3]), 4)
    assert order.tolist() == [[2, 0, 1, 3], [0, 1, 2, 3], [3, 0, 1, 2]]


def test_strategies_and_view_counts(net):
    with torch.no_grad():
        assert net(images(2, 4), ref_view_strategy="middle")["ref_view"].tolist() == [2, 2]
        assert net(images(1, 2))["ref_view"].tolist() == [0]  # fewer than 3 views: view 0
        one = net(images(1, 1))
    assert one["depth"].shape == (1, 1, 28, 42) and one["ray"].shape == (1, 1, 16, 24, 6)
    with pytest.raises(ValueError, match="ref_view_strategy must be one of"):
        net(images(1, 3), ref_view_strategy="saddle_sim_range")


def test_each_video_of_a_batch_is_its_own(net):
    """Videos of one batch do not see each other, even when their reference views differ."""
    batch = images(2, 4, seed=1)
    with torch.no_grad():
        together = net(batch)
        alone = [net(batch[i : i + 1]) for i in range(2)]
    for i in range(2):
        for key in ("depth", "depth_conf", "extrinsics", "intrinsics", "ref_view"):
            torch.testing.assert_close(together[key][i], alone[i][key][0], rtol=1e-5, atol=1e-5)


def test_bad_inputs_are_named(net):
    with pytest.raises(ValueError, match=r"images must be \[B, S, 3, H, W\] with H and W multiples of 14"):
        net(images(1, 2, h=30))
    with pytest.raises(ValueError, match="cameras must be given together"):
        net(images(1, 2), extrinsics=torch.eye(4).expand(1, 2, 4, 4))
    with pytest.raises(ValueError, match="cameras must be given together"):
        net(
            images(1, 2),
            extrinsics=torch.eye(4).expand(1, 3, 4, 4),
            intrinsics=torch.eye(3).expand(1, 3, 3, 3),
        )


def test_the_mono_network_predicts_depth_and_sky_without_cameras(single_thread):
    torch.manual_seed(4)
    mono = random_da3(TINY_MONO_CONFIG).eval()
    assert not hasattr(mono, "cam_dec") and not hasattr(mono.backbone.pretrained, "camera_token")
    with torch.no_grad():
        out = mono(images(1, 3))
    assert sorted(out) == ["depth", "sky"]
    assert out["depth"].shape == out["sky"].shape == (1, 3, 28, 42)
    assert (out["depth"] > 0).all() and (out["sky"] >= 0).all()
    with pytest.raises(ValueError, match="has no camera encoder"):
        mono(images(1, 2), torch.eye(4).expand(1, 2, 4, 4), torch.eye(3).expand(1, 2, 3, 3))


def test_under_bf16_autocast_the_heads_and_cameras_still_run_in_float32(net):
    cameras = (
        torch.eye(4).expand(1, 3, 4, 4),
        torch.tensor([[40.0, 0, 21], [0, 40, 14], [0, 0, 1]]).expand(1, 3, 3, 3),
    )
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for out in (net(images(1, 3)), net(images(1, 3), *cameras)):
            for key in ("depth", "depth_conf", "extrinsics", "intrinsics", "ray", "ray_conf"):
                assert out[key].dtype == torch.float32 and torch.isfinite(out[key]).all(), key
