"""VGGT in-tree: the geometry foundation model, weight-compatible with the public VGGT-1B checkpoint."""

from videogpa.engine.geometry.vggt.config import TINY_CONFIG, VGGTConfig, config_from_official_args
from videogpa.engine.geometry.vggt.geometry_model import VGGTGeometryModel
from videogpa.engine.geometry.vggt.loading import load_vggt, save_vggt
from videogpa.engine.geometry.vggt.model import VGGT, random_vggt
from videogpa.engine.geometry.vggt.pose import cameras_to_pose_encoding, pose_encoding_to_cameras
from videogpa.engine.geometry.vggt.unproject import depth_to_world_points

__all__ = [
    "TINY_CONFIG",
    "VGGT",
    "VGGTConfig",
    "VGGTGeometryModel",
    "cameras_to_pose_encoding",
    "config_from_official_args",
    "depth_to_world_points",
    "load_vggt",
    "pose_encoding_to_cameras",
    "random_vggt",
    "save_vggt",
]
