"""Depth Anything 3 in-tree: the network, weight-compatible with the public DA3 checkpoints, and its
backend."""

from videogpa.engine.geometry.da3.config import (
    SIZES,
    TINY_CONFIG,
    TINY_MONO_CONFIG,
    DA3Config,
    config_from_official,
)
from videogpa.engine.geometry.da3.geometry_model import DA3GeometryModel
from videogpa.engine.geometry.da3.loading import load_da3, save_da3
from videogpa.engine.geometry.da3.model import DepthAnything3Net, build_da3, random_da3
from videogpa.engine.geometry.da3.preprocess import preprocess

__all__ = [
    "SIZES",
    "TINY_CONFIG",
    "TINY_MONO_CONFIG",
    "DA3Config",
    "DA3GeometryModel",
    "DepthAnything3Net",
    "build_da3",
    "config_from_official",
    "load_da3",
    "preprocess",
    "random_da3",
    "save_da3",
]
