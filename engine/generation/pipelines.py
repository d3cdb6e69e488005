"""Loading the diffusers pipeline of a model family from a local folder, optionally with a trained LoRA.

The model names are the adapter registry's (engine.models). A folder is a `save_pretrained` pipeline
(model_index.json + component folders); nothing is downloaded.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from videogpa.engine.generation.tiny import TINY_FRAMES, TINY_SIZE, TINY_TEXT_LEN

LORA_ADAPTER = "videogpa"


@dataclass(frozen=True)
class PipelineSpec:
    """Which diffusers pipeline class generates for a model name, and whether it takes a first frame."""

    text_to_video: str | None  # diffusers class name (None: the family has no T2V pipeline)
    image_to_video: str | None
    requires_image: bool  # I2V-only families


PIPELINES: dict[str, PipelineSpec] = {
    "tiny": PipelineSpec("CogVideoXPipeline", None, False),
    "cogvideox-t2v": PipelineSpec("CogVideoXPipeline", None, False),
    "cogvideox-i2v": PipelineSpec(None, "CogVideoXImageToVideoPipeline", True),
    "wan2.2-ti2v": PipelineSpec("WanPipeline", "WanImageToVideoPipeline", False),
}


# Per-model sampler defaults (the published settings; the tiny model's keep CPU runs short).
SAMPLER_DEFAULTS: dict[str, dict] = {
    "tiny": {"num_frames": TINY_FRAMES, "height": TINY_SIZE, "width": TINY_SIZE, "steps": 8, "guidance_scale": 6.0,
             "max_sequence_length": TINY_TEXT_LEN},
    "cogvideox-t2v": {"num_frames": 49, "height": 480, "width": 720, "steps": 50, "guidance_scale": 6.0,
                      "max_sequence_length": 226},
    "cogvideox-i2v": {"num_frames": 49, "height": 480, "width": 720, "steps": 50, "guidance_scale": 6.0,
                      "max_sequence_length": 226},
    "wan2.2-ti2v": {"num_frames": 121, "height": 704, "width": 1280, "steps": 50, "guidance_scale": 5.0,
                    "max_sequence_length": 512},
}  # fmt: skip


def pipeline_spec(model: str) -> PipelineSpec:
    if model not in PIPELINES:
        raise ValueError(f"no generation pipeline for model {model!r}: expected one of {sorted(PIPELINES)}")
    return PIPELINES[model]


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


def default_device() -> str:
    """Where pipelines and geometry models run when no device is given."""
    return "cuda" if torch.cuda.is_available() else "cpu"


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

    spec = pipeline_spec(model)
    name = spec.image_to_video if image_to_video or spec.requires_image else spec.text_to_video
    if name is None:
        raise ValueError(f"model {model!r} has no {'image' if image_to_video else 'text'}-to-video pipeline")
    folder = pipeline_folder(path)
    if name == "WanImageToVideoPipeline":
        import importlib.util

        if importlib.util.find_spec("ftfy") is None:
            raise ValueError(
                "Wan image-to-video needs the 'ftfy' package (pip install ftfy): diffusers' "
                "WanImageToVideoPipeline cleans every prompt with it"
            )
    try:
        pipe = getattr(diffusers, name).from_pretrained(folder, dtype=dtype, local_files_only=True)
    except (OSError, ValueError, TypeError, json.JSONDecodeError) as err:
        raise ValueError(f"could not load a {name} from {folder}: {err}") from err
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def takes_image_list(pipe) -> bool:
    """CogVideoX's I2V pipeline encodes one first frame per video (a list); Wan's takes one image for the
    whole batch."""
    return type(pipe).__name__.startswith("CogVideoX")


def image_argument(pipe, images: list):
    """The pipeline's `image` argument for a batch with these first frames (one per video)."""
    return images if takes_image_list(pipe) else images[0]


def attach_lora(pipe, lora: str | os.PathLike, scale: float = 1.0) -> None:
    """Load a diffusers-format LoRA (a folder with pytorch_lora_weights.safetensors, or the file) into the
    pipeline's transformer at `scale` (0 = the base model)."""
    lora = Path(lora)
    folder, weight_name = (lora, None) if lora.is_dir() else (lora.parent, lora.name)
    if not (lora.is_file() or any(folder.glob("*.safetensors"))):
        raise ValueError(
            f"LoRA {lora} does not exist (expected pytorch_lora_weights.safetensors or its folder)"
        )
    kwargs = {"weight_name": weight_name} if weight_name else {}
    try:
        pipe.load_lora_weights(str(folder), adapter_name=LORA_ADAPTER, local_files_only=True, **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise ValueError(f"could not load the LoRA {lora} into {type(pipe).__name__}: {err}") from err
    pipe.set_adapters([LORA_ADAPTER], [scale])
