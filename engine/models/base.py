"""The model-adapter contract: everything that differs between video model families, in one object.

A family's adapter says how to load, noise, target and call its transformer and which modules take LoRA
(training), which diffusers pipelines generate for it, their sampler defaults, how a first frame is passed to
them and how their final latents are fixed up (generation), and its VAE's latent convention (encoding). The
DPO step, reference strategies, ZeRO-3, checkpointing, logging and the stages are shared; they talk to a
model only through its adapter, and never branch on the model's name or class.

Latents are kept in the family's native layout everywhere (shards, batches, predictions):
CogVideoX [B, F, C, H, W], Wan [B, C, F, H, W]; `ModelAdapter.latent_layout` names it.
"""

from __future__ import annotations

import abc
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

from videogpa.engine.models.latents import LatentConvention
from videogpa.engine.types import Conditioning

if TYPE_CHECKING:
    from videogpa.engine.models.lora_formats import ComfyUILoraFormat, LoraFile


# loads one diffusers model class from a local folder in a dtype (engine.models.common.load_diffusers_model)
ModelLoader = Callable[[type[nn.Module], str | Path, torch.dtype], nn.Module]


@dataclass(frozen=True)
class PipelineClasses:
    """The diffusers pipeline classes that generate for a family (None: the family has no such pipeline)."""

    text_to_video: str | None
    image_to_video: str | None
    image_to_video_needs: tuple[str, ...] = ()  # packages the image-to-video pipeline imports at call time

    @property
    def requires_image(self) -> bool:
        """An image-to-video-only family."""
        return self.text_to_video is None

    def class_name(self, image_to_video: bool) -> str:
        """The pipeline class for text- or image-to-video; a ValueError if the family has none, or if a
        package that pipeline needs is missing."""
        name = self.image_to_video if image_to_video or self.requires_image else self.text_to_video
        if name is None:
            raise ValueError(f"no {'image' if image_to_video else 'text'}-to-video pipeline for this model")
        if name == self.image_to_video:
            for package in self.image_to_video_needs:
                if importlib.util.find_spec(package) is None:
                    raise ValueError(
                        f"{name} needs the {package!r} package (pip install {package}; the 'wan' extra)"
                    )
        return name


@dataclass(frozen=True)
class SamplerSettings:
    """How candidate videos are sampled; each family's `sampler_defaults` are its published settings."""

    num_frames: int
    height: int
    width: int
    steps: int = 50
    guidance_scale: float = 6.0
    max_sequence_length: int = 226
    negative_prompt: str | None = None
    fps: int = 8

    def __post_init__(self):
        for name in ("num_frames", "height", "width", "steps", "max_sequence_length", "fps"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) > 0):
                raise ValueError(
                    f"sampler setting {name!r}: expected a positive integer, got {getattr(self, name)!r}"
                )


@dataclass(frozen=True)
class SequenceParallelPlan:
    """Where a family's transformer blocks take, and give back, their video tokens (for sequence parallelism:
    engine/runtime/sequence_parallel.py splits them before the first block and gathers them after the
    last)."""

    hidden_states: str  # the blocks' argument holding the video tokens [B, L, D]
    token_args: tuple[
        tuple[str, int, int], ...
    ]  # (argument, token dim, its ndim): per-token tensors split alike
    output_index: int | None  # the video tokens' place in a block's output tuple (None: the output itself)
    self_attention: str  # each block's attention over the video tokens (the one made Ulysses)
    # that attention's argument of replicated tokens it prepends (CogVideoX's text), None if it has none
    replicated_prefix: str | None = None


class ModelAdapter(abc.ABC):
    """How to load, noise, target, call and LoRA-wrap one family of video transformers."""

    name: ClassVar[str]
    latent_convention: ClassVar[LatentConvention]  # VAE class, native layout, compression, normalisation
    default_lora_targets: ClassVar[tuple[str, ...]]  # module-name suffixes that take LoRA
    pipelines: ClassVar[PipelineClasses]
    sampler_defaults: ClassVar[SamplerSettings]
    # the I2V pipeline takes one first frame per video (else one per call)
    image_per_video: ClassVar[bool] = True

    @property
    def latent_layout(self) -> str:
        """The native layout of the latents everywhere (shards, batches, predictions)."""
        return self.latent_convention.layout

    blocks_attribute: ClassVar[
        str
    ]  # the transformer's ModuleList of repeated blocks (checkpointed, compiled)
    dispatches_attention: ClassVar[bool] = False  # its attention goes through diffusers' backend dispatch
    sequence_parallel_plan: ClassVar[SequenceParallelPlan | None] = None  # None: no sequence parallelism
    # the pipeline components a trained LoRA is exported for, one file each (two-expert models: two)
    lora_components: ClassVar[tuple[str, ...]] = ("transformer",)
    # how ComfyUI names this family's LoRA keys (None: no ComfyUI format)
    comfyui_lora: ClassVar[ComfyUILoraFormat | None] = None

    @classmethod
    def comfyui_lora_keys(cls, lora: LoraFile) -> dict[str, torch.Tensor]:
        """The trained LoRA's state dict in the key format ComfyUI loads for this family."""
        if cls.comfyui_lora is None:
            raise ValueError(f"model {cls.name!r} has no ComfyUI LoRA format")
        return cls.comfyui_lora.convert(lora, cls.name)

    ships_pipeline: ClassVar[bool] = False  # the family builds its whole pipeline in code (the tiny model)

    @classmethod
    def builtin_pipeline(cls, image_to_video: bool = False):
        """The pipeline built in code, for families that ship one (ships_pipeline)."""
        raise ValueError(
            f"model {cls.name!r} ships no built-in pipeline: give a local diffusers pipeline folder"
        )

    def transformer_blocks(self, transformer: nn.Module) -> nn.ModuleList:
        """The repeated blocks of the (possibly wrapped) transformer."""
        from videogpa.engine.models.common import base_module

        return getattr(base_module(transformer), self.blocks_attribute)

    def image_argument(self, images: list):
        """The pipeline's `image` argument for a batch with these first frames (one per video)."""
        return images if self.image_per_video else images[0]

    def finalize_latents(self, pipe, latents: torch.Tensor, images: list, encode_image) -> torch.Tensor:
        """The pipeline's final latents as they decode to its video (a hook for pipelines that change them
        after their last step callback); `encode_image(pil_image)` gives a first frame's clean latent."""
        return latents

    @classmethod
    @abc.abstractmethod
    def load_transformer(
        cls, path: str | Path, dtype: torch.dtype, loader: ModelLoader | None = None
    ) -> nn.Module:
        """Load the transformer from a local diffusers folder (offline; clear error if missing). `loader(cls,
        folder, dtype)` loads each diffusers model it is made of (default: whole, from_pretrained; under
        ZeRO-3 the trainer passes one that builds it partitioned)."""

    @abc.abstractmethod
    def sample_timesteps(self, n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
        """Training timesteps for n samples (one per pair: winner and loser share it)."""

    @abc.abstractmethod
    def add_noise(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """x_t from clean latents x_0 and noise ε at the given timesteps."""

    @abc.abstractmethod
    def target(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """What the model's output is regressed onto (v, ε − x_0, ...)."""

    @abc.abstractmethod
    def predict(
        self, transformer: nn.Module, noisy: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning
    ) -> torch.Tensor:
        """Call the (possibly peft/DeepSpeed-wrapped) transformer; returns a prediction shaped like noisy."""

    def loss_mask(self, latents: torch.Tensor, cond: Conditioning) -> torch.Tensor | None:
        """Per-element loss weights broadcastable to the latents (None = every element counts)."""
        return None
