"""Geometry scoring: geometry models (GFM backends), point clouds, reprojection metrics.

Knows nothing of training: imports videogpa.kernels, never models or the trainer.
"""

from videogpa.engine.geometry.base import Geometry, GeometryModel

__all__ = ["Geometry", "GeometryModel"]
