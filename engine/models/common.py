"""Helpers shared by every adapter: local diffusers loading, scheduler configs, latent checks, unwrapping."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, ClassVar

import torch
from diffusers.configuration_utils import ConfigMixin
from torch import nn

from videogpa.engine.io.safetensors_ranges import read_header

SCHEDULER_CONFIG = Path("scheduler") / "scheduler_config.json"
ATTENTION_PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0")  # diffusers Attention: the default LoRA targets


def base_module(model: nn.Module) -> nn.Module:
    """The diffusers model inside DeepSpeed / DDP wrappers (they keep it as `.module`; a DeepSpeed engine
    has a `.config` of its own, so unwrapping stops only at a diffusers ConfigMixin)."""
    while not isinstance(model, ConfigMixin) and isinstance(getattr(model, "module", None), nn.Module):
        model = model.module
    if not isinstance(model, ConfigMixin):
        raise ValueError(f"expected a diffusers transformer (a ConfigMixin), got {type(model).__name__}")
    return model


def transformer_folder(path: str | Path) -> Path:
    """The folder holding the transformer's config.json: `path/transformer` or `path` itself."""
    root = Path(path)
    if not root.is_dir():
        raise ValueError(f"model folder {str(root)!r} does not exist (expected a local diffusers folder)")
    for folder in (root / "transformer", root):
        if (folder / "config.json").is_file():
            return folder
    raise ValueError(
        f"model folder {str(root)!r} has no transformer: "
        f"expected {str(root / 'transformer' / 'config.json')!r} "
        f"or {str(root / 'config.json')!r}"
    )


def checked_transformer_folder(cls: type[nn.Module], path: str | Path) -> Path:
    """The transformer folder of `path` (see transformer_folder), checked to describe a `cls`."""
    folder = transformer_folder(path)
    config_file = folder / "config.json"
    try:
        class_name = json.loads(config_file.read_text()).get("_class_name")
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{str(config_file)!r} is not valid JSON: {err}") from err
    if class_name is not None and class_name != cls.__name__:
        raise ValueError(f"{str(config_file)!r} describes a {class_name}, expected a {cls.__name__}")
    return folder


def load_diffusers_model(cls: type[nn.Module], path: str | Path, dtype: torch.dtype) -> nn.Module:
    """`cls.from_pretrained` offline from a local folder; a ValueError naming the path if it is unusable."""
    folder = checked_transformer_folder(cls, path)
    try:
        model = cls.from_pretrained(folder, torch_dtype=dtype, local_files_only=True)
    except (OSError, RuntimeError, ValueError) as err:
        raise ValueError(
            f"could not load a {cls.__name__} from {str(folder)!r} (missing or incomplete weights?): {err}"
        ) from err
    return model


def safetensors_weight_files(folder: Path) -> dict[str, Path]:
    """Each weight's safetensors file in a diffusers model folder: the one file, or the shards its index
    names; a ValueError when the folder has no safetensors weights."""
    from diffusers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFETENSORS_WEIGHTS_NAME

    index = folder / SAFE_WEIGHTS_INDEX_NAME
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
            raise ValueError(
                f"{str(index)!r} is not a safetensors index (a JSON 'weight_map'): {err}"
            ) from None
        return {name: folder / file for name, file in weight_map.items()}
    single = folder / SAFETENSORS_WEIGHTS_NAME
    if single.is_file():
        return dict.fromkeys(read_header(single), single)
    raise ValueError(
        f"model folder {str(folder)!r} has no {SAFETENSORS_WEIGHTS_NAME} (nor {SAFE_WEIGHTS_INDEX_NAME}); "
        "only safetensors weights are loaded"
    )


def find_scheduler_config(path: str | Path | None, family: str) -> dict[str, Any] | None:
    """The scheduler config of a diffusers folder (`path/scheduler/...` or, for a transformer folder, its
    parent's); None with a warning when the folder has none (the family's published defaults apply)."""
    if path is None:
        return None
    root = Path(path)
    for candidate in (root / SCHEDULER_CONFIG, root.parent / SCHEDULER_CONFIG):
        if candidate.is_file():
            try:
                return json.loads(candidate.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise ValueError(f"{str(candidate)!r} is not valid JSON: {err}") from err
    warnings.warn(
        f"no {SCHEDULER_CONFIG} in {str(root)!r} or its parent: using the default {family} noise schedule",
        stacklevel=3,
    )
    return None


def per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[B] values viewed as [B, 1, 1, 1, 1] in like's dtype, for broadcasting over 5-D latents."""
    return values.to(device=like.device, dtype=like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def check_latents(latents: torch.Tensor, name: str, layout: str) -> None:
    """A ValueError unless `latents` is a finite floating 5-D batch in the given native layout."""
    if not isinstance(latents, torch.Tensor) or latents.ndim != 5:
        shape = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
        raise ValueError(f"{name}: expected 5-D latents [B, {', '.join(layout[1:])}], got {shape}")
    if not latents.is_floating_point():
        raise ValueError(f"{name}: expected floating-point latents, got {latents.dtype}")
    if not torch.isfinite(latents).all():
        raise ValueError(f"{name}: latents contain NaN or infinite values")


def check_timesteps(timesteps: torch.Tensor, batch: int, low: float, high: float) -> None:
    """A ValueError unless `timesteps` is [batch] with values in [low, high)."""
    if timesteps.ndim != 1 or timesteps.shape[0] != batch:
        raise ValueError(f"timesteps: expected shape [{batch}], got {tuple(timesteps.shape)}")
    if timesteps.numel() and (timesteps.min() < low or timesteps.max() >= high):
        raise ValueError(f"timesteps: expected values in [{low}, {high}), got {timesteps.tolist()}")


class DiffusersAdapterMixin:
    """load_transformer for adapters whose transformer is one diffusers model class."""

    transformer_class: ClassVar[type[nn.Module]]

    @classmethod
    def load_transformer(cls, path: str | Path, dtype: torch.dtype, loader=None) -> nn.Module:
        """Load `transformer_class` from a local diffusers folder (`path/transformer` or `path`), offline,
        with `loader` (ModelAdapter.load_transformer; default load_diffusers_model)."""
        if path is None:
            raise ValueError(f"model {cls.name!r}: a local diffusers folder path is required")
        return (loader or load_diffusers_model)(cls.transformer_class, path, dtype)
