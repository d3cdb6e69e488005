"""DA3 weights: read a local safetensors file or folder (offline), check every key, load; save with the
config.

The key names are the official DepthAnything3Net ones; the hub's `model.` prefix (the PyTorchModelHubMixin
wrapper) is accepted, and the ray head's shared LayerNorm may be stored under one of its four names or all.
Which architecture: an explicit `config` wins, then a DA3Config stored in the metadata under "da3_config"
(save_da3 writes it), then the released size whose ViT width, depth and camera token the weights have.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from videogpa.engine.geometry.da3.config import SIZES, DA3Config, describe, resolve_config
from videogpa.engine.geometry.da3.model import DepthAnything3Net
from videogpa.engine.io.atomic import atomic_path

HUB_PREFIX = "model."
CONFIG_METADATA_KEY = "da3_config"
BLOCK_PREFIX = "backbone.pretrained.blocks."


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def weight_files(path: str | os.PathLike) -> list[Path]:
    """The .safetensors files at `path`: the file itself, or every one in the folder (a sharded
    checkpoint)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.safetensors"))
        if not files:
            raise ValueError(f"DA3 weights folder {path} holds no .safetensors file")
        return files
    if not path.is_file():
        raise ValueError(f"DA3 weights {path} do not exist")
    return [path]


def read_weights(
    path: str | os.PathLike, device: torch.device | str = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, str], dict[str, Path]]:
    """(state dict with the hub prefix removed, metadata, file of each key) of a file or folder."""
    state, metadata, origin = {}, {}, {}
    for file in weight_files(path):
        try:
            with safe_open(str(file), framework="pt", device=str(device)) as f:
                metadata.update(f.metadata() or {})
                for key in f.keys():
                    if key in state:
                        raise ValueError(f"DA3 weights: key {key} is in both {origin[key]} and {file}")
                    state[key], origin[key] = f.get_tensor(key), file
        except (SafetensorError, OSError) as exc:
            raise ValueError(
                f"DA3 weights file {file} is not a valid safetensors file: {_one_line(exc)}"
            ) from exc
    if state and all(k.startswith(HUB_PREFIX) for k in state):
        state = {k.removeprefix(HUB_PREFIX): v for k, v in state.items()}
        origin = {k.removeprefix(HUB_PREFIX): v for k, v in origin.items()}
    return state, metadata, origin


def infer_config(state: dict[str, torch.Tensor], source: str) -> DA3Config:
    """The released size whose ViT width, block count and camera token match the weights."""
    cls = state.get("backbone.pretrained.cls_token")
    if cls is None:
        raise ValueError(f"{source}: missing key backbone.pretrained.cls_token (is this a DA3 checkpoint?)")
    depth = len({k[len(BLOCK_PREFIX) :].split(".")[0] for k in state if k.startswith(BLOCK_PREFIX)})
    cameras = "backbone.pretrained.camera_token" in state
    for config in SIZES.values():  # mono and metric share one architecture: either fits
        if (config.embed_dim, config.depth, config.cameras) == (cls.shape[-1], depth, cameras):
            return config
    raise ValueError(
        f"{source}: no released DA3 size has a ViT of width {cls.shape[-1]} with {depth} blocks "
        f"(camera token: {cameras}); pass config= (a size name, a config dict or a DA3Config)"
    )


def tied_groups(model: torch.nn.Module) -> list[list[str]]:
    """State-dict names that are one parameter (the ray head's shared LayerNorm), in groups."""
    groups: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(param), []).append(name)
    return [names for names in groups.values() if len(names) > 1]


def fill_tied(state: dict, groups: list[list[str]], source: str) -> dict:
    """Every name of a tied group from whichever are present; ValueError when two stored copies differ."""
    state = dict(state)
    for group in groups:
        present = [k for k in group if k in state]
        for key in present[1:]:
            if not torch.equal(state[key], state[present[0]]):
                raise ValueError(
                    f"{source}: {key} differs from {present[0]}, but they are one shared parameter"
                )
        for key in group:
            if present:
                state.setdefault(key, state[present[0]])
    return state


def _first(keys: list[str], what: str) -> str:
    return f"{what} {keys[0]}" + (f" (and {len(keys) - 1} more)" if len(keys) > 1 else "")


def check_state_dict(model: DepthAnything3Net, state: dict, source: str) -> None:
    """One-line ValueError naming the first missing, unexpected, mis-shaped or non-float key and `source`."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshaped = [
        f"{k} (expected {list(shape)}, got {list(state[k].shape)})"
        for k, shape in expected.items()
        if k in state and tuple(state[k].shape) != shape
    ]
    not_float = [k for k in expected if k in state and not state[k].is_floating_point()]
    problems = [(missing, "missing key"), (unexpected, "unexpected key"), (misshaped, "mis-shaped key")]
    problems.append((not_float, "non-floating-point tensor"))
    report = [_first(keys, what) for keys, what in problems if keys]
    if report:
        raise ValueError(f"{source} do not fit {describe(model.config)}: " + "; ".join(report))


def load_da3(
    path: str | os.PathLike,
    config: str | dict | DA3Config | None = None,
    device: torch.device | str = "cpu",
) -> DepthAnything3Net:
    """A float32 DepthAnything3Net in eval mode with the weights of a local .safetensors file or folder."""
    state, metadata, origin = read_weights(path, device)
    files = sorted({str(f) for f in origin.values()}) or [str(path)]
    source = f"DA3 weights {', '.join(files)}"
    if config is not None:
        config = resolve_config(config)
    elif CONFIG_METADATA_KEY in metadata:
        config = DA3Config.from_json(
            metadata[CONFIG_METADATA_KEY], f"{source} metadata '{CONFIG_METADATA_KEY}'"
        )
    else:
        config = infer_config(state, source)
    with torch.device("meta"):
        model = DepthAnything3Net(config)
    state = fill_tied(state, tied_groups(model), source)
    check_state_dict(model, state, source)
    model.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=True, assign=True)
    return model.eval()


def save_da3(model: DepthAnything3Net, path: str | os.PathLike) -> Path:
    """Write every official key (the shared LayerNorm under all four names) and the config, atomically."""
    path = Path(path)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={CONFIG_METADATA_KEY: model.config.to_json(), "format": "pt"})
    return path
