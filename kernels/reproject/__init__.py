"""Deterministic nearest-point reprojection of a coloured point cloud: Triton kernel and PyTorch reference."""

from videogpa.kernels.reproject.api import render_point_cloud, reprojection_error
from videogpa.kernels.reproject.reference import reference_render, reference_view_errors

__all__ = ["reference_render", "reference_view_errors", "render_point_cloud", "reprojection_error"]
