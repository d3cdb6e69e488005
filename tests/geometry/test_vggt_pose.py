"""Pose encoding ↔ cameras, quaternion conversions and depth unprojection, checked by geometry."""

import math

import pytest
import torch

from videogpa.engine.geometry.vggt import (
    cameras_to_pose_encoding,
    depth_to_world_points,
    pose_encoding_to_cameras,
)
from videogpa.engine.geometry.vggt.pose import matrix_to_quaternion, quaternion_to_matrix


def random_pose_encoding(n, generator):
    translation = torch.randn(n, 3, generator=generator, dtype=torch.float64)
    quat = torch.nn.functional.normalize(torch.randn(n, 4, generator=generator, dtype=torch.float64), dim=-1)
    quat = torch.where(quat[:, 3:] < 0, -quat, quat)
    fov = 0.3 + 1.5 * torch.rand(n, 2, generator=generator, dtype=torch.float64)
    return torch.cat([translation, quat, fov], dim=-1)


def test_rotations_are_orthonormal_and_ignore_the_quaternion_scale():
    quat = torch.randn(16, 4, generator=torch.Generator().manual_seed(0)).double()
    rot = quaternion_to_matrix(quat)
    eye = torch.eye(3, dtype=torch.float64).expand(16, 3, 3)
    torch.testing.assert_close(rot @ rot.transpose(-1, -2), eye)
    torch.testing.assert_close(torch.linalg.det(rot), torch.ones(16, dtype=torch.float64))
    torch.testing.assert_close(quaternion_to_matrix(3.7 * quat), rot)


def test_quaternion_of_a_known_rotation():
    angle = 0.4  # about z: x_new = cos·x − sin·y
    quat = torch.tensor([0.0, 0.0, math.sin(angle / 2), math.cos(angle / 2)], dtype=torch.float64)
    expected = torch.tensor(
        [[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0], [0, 0, 1]],
        dtype=torch.float64,
    )
    torch.testing.assert_close(quaternion_to_matrix(quat), expected)


def test_matrix_to_quaternion_inverts_including_half_turns():
    generator = torch.Generator().manual_seed(1)
    quat = random_pose_encoding(64, generator)[:, 3:7]
    half_turns = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0]], dtype=torch.float64)
    quat = torch.cat([quat, half_turns])
    recovered = matrix_to_quaternion(quaternion_to_matrix(quat))
    # q and −q are the same rotation; half turns have w = 0 so either sign is valid.
    same = torch.minimum((recovered - quat).abs().amax(-1), (recovered + quat).abs().amax(-1))
    assert same.max() < 1e-9


def test_pose_encoding_round_trips_through_cameras():
    pose = random_pose_encoding(20, torch.Generator().manual_seed(2)).reshape(2, 10, 9)
    extrinsics, intrinsics = pose_encoding_to_cameras(pose, (70, 98))
    assert extrinsics.shape == (2, 10, 3, 4) and intrinsics.shape == (2, 10, 3, 3)
    torch.testing.assert_close(intrinsics[..., 0, 2], torch.full((2, 10), 49.0, dtype=torch.float64))
    torch.testing.assert_close(intrinsics[..., 1, 2], torch.full((2, 10), 35.0, dtype=torch.float64))
    # the vertical field of view is the angle between the top and bottom image edges
    torch.testing.assert_close(2 * torch.atan(35.0 / intrinsics[..., 1, 1]), pose[..., 7])
    torch.testing.assert_close(cameras_to_pose_encoding(extrinsics, intrinsics, (70, 98)), pose)


def test_unprojected_points_project_back_to_their_pixels():
    generator = torch.Generator().manual_seed(3)
    s, h, w = 3, 6, 9
    extrinsics, intrinsics = pose_encoding_to_cameras(random_pose_encoding(s, generator), (h, w))
    depth = 0.5 + torch.rand(s, h, w, 1, generator=generator, dtype=torch.float64)
    points = depth_to_world_points(depth, extrinsics, intrinsics)
    assert points.shape == (s, h, w, 3) and points.dtype == torch.float64
    cam = torch.einsum("sij,shwj->shwi", extrinsics[:, :, :3], points) + extrinsics[:, None, None, :, 3]
    torch.testing.assert_close(cam[..., 2], depth[..., 0], rtol=1e-6, atol=1e-6)
    pixels = torch.einsum("sij,shwj->shwi", intrinsics, cam)
    pixels = pixels[..., :2] / pixels[..., 2:]
    v, u = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    torch.testing.assert_close(pixels, torch.stack([u, v], -1).double().expand(s, h, w, 2), rtol=0, atol=1e-5)


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="pose_enc"):
        pose_encoding_to_cameras(torch.zeros(2, 8), (4, 4))
    with pytest.raises(ValueError, match="extrinsics"):
        cameras_to_pose_encoding(torch.zeros(2, 4, 4), torch.zeros(2, 3, 3), (4, 4))
    with pytest.raises(ValueError, match="depth"):
        depth_to_world_points(torch.zeros(2, 4), torch.zeros(2, 3, 4), torch.zeros(2, 3, 3))
    with pytest.raises(ValueError, match="expected intrinsics"):
        depth_to_world_points(torch.zeros(2, 4, 4), torch.zeros(3, 3, 4), torch.zeros(2, 3, 3))
