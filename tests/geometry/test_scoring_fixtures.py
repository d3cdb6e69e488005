"""Point cloud, reprojection MSE, motion score and MVCS against the authors' fixtures (read generically)."""

import json

import pytest
import torch
from safetensors.torch import load_file

from videogpa.engine.geometry.metrics import reprojection_mse
from videogpa.engine.geometry.motion import motion_score
from videogpa.engine.geometry.mvcs import mvcs
from videogpa.engine.geometry.pointcloud import colored_point_cloud, confidence_mask
from videogpa.kernels.reproject import render_point_cloud


@pytest.fixture(scope="module")
def reproj(fixtures_dir):
    folder = fixtures_dir / "reproj_a"
    return load_file(folder / "reproj.safetensors"), json.loads((folder / "meta.json").read_text())


def test_point_cloud_matches_kept_vertices_and_colors(reproj):
    data, meta = reproj
    points, colors = colored_point_cloud(
        data["world_points"], data["images"], data["depth_conf"], conf_thres=0
    )
    assert points.shape[0] == meta["stats"]["n_points_kept"]
    assert torch.equal(points, data["kept_vertices"])
    torch.testing.assert_close(colors * 255.0, data["kept_colors"], rtol=0, atol=0)


@pytest.mark.parametrize(
    "conf_thres,image_key,mse_key", [(0, "reprojected", "mse"), (50, "reprojected_conf50", "mse_conf50")]
)
def test_reprojection_and_mse_match(reproj, conf_thres, image_key, mse_key):
    data, meta = reproj
    points, colors = colored_point_cloud(data["world_points"], data["images"], data["depth_conf"], conf_thres)
    if conf_thres == 50:
        assert points.shape[0] == meta["stats"]["n_points_kept_conf50"]
    n_views, _, height, width = data["images"].shape
    images, _ = render_point_cloud(points, colors, data["intrinsic"], data["extrinsic"], height, width)
    torch.testing.assert_close(images, data[image_key], rtol=0, atol=0)
    frames = data["gt_frames"].permute(0, 3, 1, 2).float() / 255.0
    assert reprojection_mse(frames, (images + 1) / 2) == pytest.approx(meta["results"][mse_key], rel=1e-5)


def test_motion_score_matches(reproj):
    data, meta = reproj
    assert motion_score(data["extrinsic"]) == pytest.approx(meta["results"]["motion_score"], rel=1e-6)
    square = torch.cat(
        [data["extrinsic"], torch.tensor([0.0, 0.0, 0.0, 1.0]).expand(len(data["extrinsic"]), 1, 4)], 1
    )
    assert motion_score(square) == motion_score(data["extrinsic"])


def test_mvcs_matches(fixtures_dir):
    folder = fixtures_dir / "mvcs_a"
    data = load_file(folder / "mvcs.safetensors")
    score, per_pair = mvcs(data["depths"], data["intrinsics"], data["extrinsics"])
    assert score == pytest.approx(data["mvcs"].item(), rel=1e-5)
    torch.testing.assert_close(
        torch.tensor(per_pair, dtype=torch.float64), data["per_pair_mse"], rtol=1e-5, atol=1e-7
    )


def test_confidence_rule():
    conf = torch.tensor([0.0, 1e-6, 1e-5, -1.0, float("nan"), float("inf"), 1.1e-5, 2e-5, 3.0, 2.0, 5.0])
    valid = confidence_mask(conf, 0)
    assert valid.tolist() == [False] * 6 + [True] * 5
    # 5 valid points, p = 50: k = ceil(2.5) = 3 -> threshold = third largest = 2.0
    assert confidence_mask(conf, 50).tolist() == [False] * 8 + [True, True, True]
    assert confidence_mask(conf, 100).sum() == 1  # k = max(1, 0)
    assert not confidence_mask(torch.full((4,), float("nan")), 30).any()


def test_motion_score_static_and_single_frame():
    still = torch.eye(4)[:3].expand(5, 3, 4)
    assert motion_score(still) == 0.0
    assert motion_score(still[:1]) == 0.0
    moved = still.clone()
    moved[1:, 0, 3] = 1.0  # one unit step between frame 0 and 1, then still
    assert motion_score(moved) == pytest.approx(0.25)
