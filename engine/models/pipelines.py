"""Loading the diffusers pipeline of a model family from a local folder, optionally with a trained LoRA.

The model names are the adapter registry's (engine.models); each adapter names its pipeline classes. A folder
is a `save_pretrained` pipeline (model_index.json + component folders); nothing is downloaded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from videogpa.engine.io.atomic import atomic_path
from videogpa.engine.models.lora import LORA_WEIGHT_NAME, lora_weight_name, trained_lora_file
from videogpa.engine.models.registry import adapter_class

LORA_ADAPTER = "videogpa"


def pipeline_folder(path: str | os.PathLike) -> Path:
    """The pipeline folder for `path`: itself, or for a `<pipeline>/transformer` folder its parent."""
    path = Path(path)
    for folder in (path, path.parent):
        if (folder / "model_index.json").is_file():
            return folder
    raise ValueError(
        f"{path} is not a local diffusers pipeline folder: no model_index.json in it or its parent "
        "(save_pretrained a pipeline there; nothing is downloaded)"
    )


def save_pipeline(pipe, folder: str | os.PathLike) -> Path:
    """save_pretrained a pipeline to `folder` atomically; an existing pipeline there is never overwritten."""
    folder = Path(folder)
    if (folder / "model_index.json").is_file():
        raise ValueError(f"{folder} already holds a pipeline (model_index.json); not overwriting it")
    with atomic_path(folder) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
    return folder


def load_pipeline(
    model: str,
    path: str | os.PathLike,
    *,
    image_to_video: bool = False,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
):
    """The family's pipeline (T2V, or I2V when image_to_video) from a local folder, on `device`."""
    import diffusers

    try:
        name = adapter_class(model).pipelines.class_name(image_to_video)
    except ValueError as err:
        raise ValueError(f"model {model!r}: {err}") from None
    folder = pipeline_folder(path)
    try:
        pipe = getattr(diffusers, name).from_pretrained(folder, dtype=dtype, local_files_only=True)
    except (OSError, ValueError, TypeError, json.JSONDecodeError) as err:
        raise ValueError(f"could not load a {name} from {folder}: {err}") from err
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def lora_file(lora: str | os.PathLike) -> Path:
    """The LoRA file a path names: the file itself, or a folder's pytorch_lora_weights.safetensors. Only a
    .safetensors file is accepted (a .bin or .pt would be torch.load-ed, i.e. unpickled: it could run code);
    anything else is a one-line ValueError naming it."""
    lora = Path(lora)
    if not lora.exists():
        raise ValueError(f"LoRA {lora} does not exist (expected {LORA_WEIGHT_NAME} or its folder)")
    path = trained_lora_file(lora) if lora.is_dir() else lora
    if lora.is_dir() and not path.is_file():
        raise ValueError(f"LoRA folder {lora} holds no {LORA_WEIGHT_NAME} (the trainer's LoRA export)")
    if path.suffix != ".safetensors":
        raise ValueError(
            f"LoRA {path}: expected a .safetensors file; refusing {path.suffix or 'a file without suffix'} "
            "(it would be unpickled)"
        )
    return path


def attach_lora(pipe, lora: str | os.PathLike, scale: float = 1.0) -> None:
    """Load a diffusers-format LoRA (a folder with pytorch_lora_weights.safetensors, or a .safetensors file)
    into the pipeline's transformer at `scale` (0 = the base model); never unpickles (see lora_file). A
    two-expert export's second file beside it (pytorch_lora_weights_transformer_2.safetensors) goes into the
    pipeline's transformer_2."""
    path = lora_file(lora)
    second = path.parent / lora_weight_name("transformer_2")
    files = [path, second] if path.name == LORA_WEIGHT_NAME and second.is_file() else [path]
    for file in files:
        extra = {"load_into_transformer_2": True} if file.name == second.name else {}
        if extra and getattr(pipe, "transformer_2", None) is None:
            raise ValueError(
                f"LoRA {path.parent} holds a second expert's LoRA ({second.name}), but "
                f"{type(pipe).__name__} has no transformer_2 (expected a Wan 2.2 A14B pipeline)"
            )
        try:
            pipe.load_lora_weights(
                str(file.parent),
                weight_name=file.name,
                adapter_name=LORA_ADAPTER,
                local_files_only=True,
                use_safetensors=True,
                **extra,
            )
        except (OSError, ValueError, KeyError, RuntimeError) as err:
            raise ValueError(f"could not load the LoRA {file} into {type(pipe).__name__}: {err}") from err
    pipe.set_adapters([LORA_ADAPTER], [scale])
