"""VGGT weights: read (safetensors or weights-only torch.load), check key by key, load; save with the config.

Which architecture a file holds: an explicit `config` argument wins; otherwise the JSON of a
VGGTConfig stored in the safetensors metadata under "vggt_config" (save_vggt writes it); otherwise a
`vggt_config.json` next to the weights; otherwise the VGGT-1B defaults (the public checkpoint has none).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from videogpa.engine.geometry.vggt.config import VGGTConfig
from videogpa.engine.geometry.vggt.model import VGGT
from videogpa.engine.io.atomic import atomic_path

CONFIG_METADATA_KEY = "vggt_config"
SIDECAR_CONFIG_NAME = "vggt_config.json"
SAFETENSORS_SUFFIXES = (".safetensors",)
DROPPED_PREFIXES = ("track_head.",)  # the public checkpoint's track head is not built
MAX_LISTED_KEYS = 20


def read_weights(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[dict, dict]:
    """(state dict, metadata) from a .safetensors file or a plain PyTorch state dict (weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"VGGT weights file {path} does not exist")
    if path.suffix in SAFETENSORS_SUFFIXES:
        try:
            with safe_open(str(path), framework="pt", device=str(device)) as f:
                return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
        except (SafetensorError, OSError) as exc:
            raise ValueError(f"VGGT weights file {path} is not a valid safetensors file: {exc}") from exc
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        raise ValueError(
            f"VGGT weights file {path} is neither safetensors nor a weights-only PyTorch state dict: {exc}"
        ) from exc
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()
    ):
        raise ValueError(
            f"VGGT weights file {path} must hold a dict of name → tensor, got {type(state).__name__}"
        )
    return state, {}


def resolve_config(path: str | os.PathLike, metadata: dict, config: VGGTConfig | None = None) -> VGGTConfig:
    """The architecture of the weights at `path` (see the module docstring for the order)."""
    if config is not None:
        return config
    if CONFIG_METADATA_KEY in metadata:
        return VGGTConfig.from_json(metadata[CONFIG_METADATA_KEY], f"{path} metadata '{CONFIG_METADATA_KEY}'")
    sidecar = Path(path).with_name(SIDECAR_CONFIG_NAME)
    if sidecar.is_file():
        return VGGTConfig.from_json(sidecar.read_text(), str(sidecar))
    return VGGTConfig()


def _listed(keys: list[str]) -> str:
    shown = ", ".join(keys[:MAX_LISTED_KEYS])
    return shown + (f", … ({len(keys) - MAX_LISTED_KEYS} more)" if len(keys) > MAX_LISTED_KEYS else "")


def check_state_dict(model: torch.nn.Module, state_dict: dict, source: str) -> dict:
    """Drop the track-head keys; raise ValueError naming every missing, unexpected or mis-shaped key."""
    kept = {k: v for k, v in state_dict.items() if not k.startswith(DROPPED_PREFIXES)}
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in kept]
    unexpected = sorted(k for k in kept if k not in expected)
    misshaped = [
        f"{k} (expected {list(shape)}, got {list(kept[k].shape)})"
        for k, shape in expected.items()
        if k in kept and tuple(kept[k].shape) != shape
    ]
    not_float = sorted(k for k in kept if k in expected and not kept[k].is_floating_point())
    problems = [
        (missing, "missing keys"),
        (unexpected, "unexpected keys"),
        (misshaped, "mis-shaped keys"),
        (not_float, "non-floating-point tensors"),
    ]
    report = [f"{len(keys)} {what}: {_listed(keys)}" for keys, what in problems if keys]
    if report:
        raise ValueError(
            f"{source} does not match VGGT({model.config}) (a different architecture needs its config: "
            f"the '{CONFIG_METADATA_KEY}' metadata, a {SIDECAR_CONFIG_NAME} beside it, or config=):\n  "
            + "\n  ".join(report)
        )
    non_finite = [k for k, v in kept.items() if not v.is_meta and not torch.isfinite(v).all()]
    if non_finite:  # else every video it scores would be an error row, and none would name the weights
        raise ValueError(
            f"{source}: {len(non_finite)} tensor(s) hold non-finite values (NaN/inf): {_listed(non_finite)}"
        )
    return kept


def load_vggt(
    path: str | os.PathLike, config: VGGTConfig | None = None, device: torch.device | str = "cpu"
) -> VGGT:
    """A float32 VGGT in eval mode with the weights at `path` (no random init of the full model is made)."""
    state_dict, metadata = read_weights(path, device)
    config = resolve_config(path, metadata, config)
    with torch.device("meta"):
        model = VGGT(config)
    kept = check_state_dict(model, state_dict, f"VGGT weights file {path}")
    model.load_state_dict({k: v.to(torch.float32) for k, v in kept.items()}, strict=True, assign=True)
    model.aggregator.patch_embed.mask_token.requires_grad_(False)
    return model.eval()


def save_vggt(model: VGGT, path: str | os.PathLike) -> Path:
    """Write the state dict as safetensors with the config in its metadata (atomically)."""
    path = Path(path)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={CONFIG_METADATA_KEY: model.config.to_json(), "format": "pt"})
    return path
