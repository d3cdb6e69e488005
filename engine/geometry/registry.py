"""Geometry backends by name: build_geometry_model("oracle" | "vggt" | "da3", **kwargs)."""

from __future__ import annotations

import importlib

from videogpa.engine.geometry.base import GeometryModel

# name -> (module, class); modules are imported only when that backend is built.
BACKENDS = {
    "oracle": ("videogpa.engine.geometry.oracle", "OracleGeometryModel"),
    "vggt": ("videogpa.engine.geometry.vggt", "VGGTGeometryModel"),
    "da3": ("videogpa.engine.geometry.da3", "DA3GeometryModel"),
}


def build_geometry_model(name: str, **kwargs) -> GeometryModel:
    """oracle: geometry= or geometry_path=; vggt and da3: weights_path=, device=, dtype= (da3 also config=,
    process_res=, ref_view_strategy=)."""
    if name not in BACKENDS:
        raise ValueError(f"geometry backend must be one of {sorted(BACKENDS)}, got {name!r}")
    module, cls = BACKENDS[name]
    return getattr(importlib.import_module(module), cls)(**kwargs)
