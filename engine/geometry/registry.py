"""Geometry backends by name: build_geometry_model("oracle" | "vggt" | "da3", **kwargs)."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from videogpa.engine.geometry.base import GeometryModel

# name -> (module, class); modules are imported only when that backend is built.
BACKENDS = {
    "oracle": ("videogpa.engine.geometry.oracle", "OracleGeometryModel"),
    "vggt": ("videogpa.engine.geometry.vggt", "VGGTGeometryModel"),
    "da3": ("videogpa.engine.geometry.da3", "DA3GeometryModel"),
}


def detect_backend(weights: str | os.PathLike) -> str:
    """The backend a local weights file (or folder of safetensors files) is for, from its tensor names:
    "vggt" (aggregator.*; also a non-safetensors VGGT state dict) or "da3" (backbone.*, the hub's model.*)."""
    path = Path(weights)
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
    if not files or not files[0].is_file():
        raise ValueError(f"geometry weights {str(path)!r}: no such file (or no .safetensors in the folder)")
    if files[0].suffix != ".safetensors":
        return "vggt"
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(files[0]), "pt") as f:
            names = list(f.keys())
    except (SafetensorError, OSError) as err:
        raise ValueError(
            f"geometry weights {str(files[0])!r} are not a readable safetensors file: {err}"
        ) from err
    if any(n.startswith("aggregator.") for n in names):
        return "vggt"
    if any(n.startswith(("backbone.", "model.backbone.")) for n in names):
        return "da3"
    raise ValueError(
        f"geometry weights {str(files[0])!r}: neither VGGT (aggregator.*) nor Depth Anything 3 (backbone.*) "
        "tensors; set the geometry backend explicitly"
    )


def build_geometry_model(name: str, **kwargs) -> GeometryModel:
    """oracle: geometry= or geometry_path=; vggt and da3: weights_path=, device=, dtype= (da3 also config=,
    process_res=, ref_view_strategy=)."""
    if name not in BACKENDS:
        raise ValueError(f"geometry backend must be one of {sorted(BACKENDS)}, got {name!r}")
    module, cls = BACKENDS[name]
    return getattr(importlib.import_module(module), cls)(**kwargs)
