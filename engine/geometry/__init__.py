"""Geometry scoring: geometry models (GFM backends), point clouds, reprojection metrics.

Knows nothing of training: imports videogpa.kernels, never models or the trainer. Backends are built by
name with build_geometry_model ("oracle", "vggt", "da3"; VGGT and DA3 are imported only when asked for).
"""

from videogpa.engine.geometry.base import Geometry, GeometryModel
from videogpa.engine.geometry.io import load_geometry, save_geometry, sidecar_path
from videogpa.engine.geometry.lpips import LPIPS
from videogpa.engine.geometry.metrics import consistency_score, psnr, reprojection_mse, ssim
from videogpa.engine.geometry.motion import motion_score
from videogpa.engine.geometry.mvcs import mvcs
from videogpa.engine.geometry.oracle import OracleGeometryModel
from videogpa.engine.geometry.pointcloud import (
    colored_point_cloud,
    confidence_mask,
    geometry_point_cloud,
    unproject_depth,
)
from videogpa.engine.geometry.registry import build_geometry_model
from videogpa.engine.geometry.scoring import VideoScore, score_reconstruction

__all__ = [
    "LPIPS",
    "Geometry",
    "GeometryModel",
    "OracleGeometryModel",
    "VideoScore",
    "build_geometry_model",
    "colored_point_cloud",
    "confidence_mask",
    "consistency_score",
    "geometry_point_cloud",
    "load_geometry",
    "motion_score",
    "mvcs",
    "psnr",
    "reprojection_mse",
    "save_geometry",
    "score_reconstruction",
    "sidecar_path",
    "ssim",
    "unproject_depth",
]
