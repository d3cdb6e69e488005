"""Wan 2.2 A14B (T2V, I2V): two experts behind one trainable module, each sample routed by its timestep.

As diffusers' WanPipeline / WanImageToVideoPipeline sample it, `transformer` denoises timesteps
t ≥ boundary_ratio · 1000 (high noise) and `transformer_2` those below; boundary_ratio comes from the
pipeline folder's model_index.json. `WanExperts` holds both as one diffusers model, so the DeepSpeed engine,
checkpoints, resume, LoRA (on both experts), activation checkpointing (the blocks of both) and the DPO step
see a single module; its forward takes the transformer's arguments with one timestep per sample and runs
each expert on its samples (a pair shares t, so a pair never spans experts).

Under data parallelism (ZeRO-3 gathers parameters by collectives as modules run; ZeRO-1/2 reduce gradients
in buckets) every rank must run the same experts in the same order: the ranks agree with an all_reduce which
experts the call needs, and a rank without a sample for a needed expert runs it on a one-frame slice whose
output is multiplied by 0. With gradients on, an expert with trainable parameters runs in every call (on
that slice when no rank needs it): ZeRO-3 overwrites a gradient partition in a step's first micro-step and
adds to it in the later ones, so a parameter without a gradient in micro-step 0 would add a later one to the
previous step's stale gradient (a resumed run then differs from an uninterrupted one; tested).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import ClassVar

import torch
import torch.distributed as dist
from diffusers import ModelMixin, WanTransformer3DModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from torch import nn

from videogpa.engine.models.base import PipelineClasses, SamplerSettings
from videogpa.engine.models.common import base_module, load_diffusers_model
from videogpa.engine.models.registry import register_adapter
from videogpa.engine.models.wan21 import Wan21I2VAdapter, Wan21T2VAdapter
from videogpa.engine.models.wan22_ti2v import NUM_TRAIN_TIMESTEPS

EXPERTS = ("transformer", "transformer_2")  # the pipeline's component names: high noise, low noise
SHARED_CONFIG = ("patch_size", "in_channels", "out_channels", "text_dim", "image_dim")


class WanExperts(ModelMixin, ConfigMixin):
    """`transformer` (t ≥ boundary_ratio · 1000) and `transformer_2` (below) as one module."""

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(self, boundary_ratio: float, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS):
        super().__init__()
        if not 0 < boundary_ratio < 1:
            raise ValueError(f"boundary_ratio: expected a value in (0, 1), got {boundary_ratio!r}")

    @classmethod
    def of(cls, transformer: nn.Module, transformer_2: nn.Module, boundary_ratio: float) -> WanExperts:
        """The two experts (diffusers WanTransformer3DModels of one family) as one module."""
        different = [k for k in SHARED_CONFIG if transformer.config.get(k) != transformer_2.config.get(k)]
        if different:
            raise ValueError(f"the two Wan experts differ in {different}: expected one model family")
        experts = cls(boundary_ratio=float(boundary_ratio))
        experts.transformer, experts.transformer_2 = transformer, transformer_2
        return experts

    @property
    def boundary(self) -> float:
        """The boundary timestep: `transformer` takes t ≥ it, `transformer_2` t < it."""
        return self.config.boundary_ratio * self.config.num_train_timesteps

    def components(self) -> list[tuple[str, nn.Module]]:
        """(pipeline component name, expert), high-noise expert first."""
        return [(name, getattr(self, name)) for name in EXPERTS]

    def experts_needed(self, high: torch.Tensor) -> list[bool]:
        """Which experts any rank needs this call (an all_reduce when several ranks run)."""
        needed = torch.stack([high.any(), (~high).any()]).to(torch.int32)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(needed, op=dist.ReduceOp.MAX)
        return [bool(n) for n in needed.tolist()]

    @staticmethod
    def _frame_slice(expert: nn.Module, hidden_states: torch.Tensor, timestep: torch.Tensor, kwargs: dict):
        """Sample 0 cut to its first latent frame: every parameter takes part, at a frame's compute (one
        frame, not one token: sequence parallelism splits these tokens over its ranks too)."""
        sliced = {k: v[:1] if torch.is_tensor(v) else v for k, v in kwargs.items()}
        return hidden_states[:1, :, : expert.config.patch_size[0]], timestep[:1], sliced

    def forward(
        self, hidden_states: torch.Tensor, timestep: torch.Tensor, return_dict: bool = False, **kwargs
    ):
        """The transformer's call with one timestep per sample ([B]); each sample goes to its expert."""
        if timestep.ndim != 1 or timestep.shape[0] != hidden_states.shape[0]:
            raise ValueError(
                f"timestep: the Wan experts take one per sample [B], got {tuple(timestep.shape)}"
            )
        high = timestep >= self.boundary
        out = hidden_states.new_zeros(
            hidden_states.shape[0], self.transformer.config.out_channels, *hidden_states.shape[2:]
        )
        for (_, expert), select, needed in zip(self.components(), (high, ~high), self.experts_needed(high)):
            trains = torch.is_grad_enabled() and any(p.requires_grad for p in expert.parameters())
            idx = select.nonzero().flatten()
            if idx.numel():
                sliced = {k: v.index_select(0, idx) if torch.is_tensor(v) else v for k, v in kwargs.items()}
                pred = expert(
                    hidden_states=hidden_states.index_select(0, idx),
                    timestep=timestep.index_select(0, idx),
                    return_dict=False,
                    **sliced,
                )[0]
                out = out.index_copy(0, idx, pred.to(out.dtype))
            elif needed or trains:  # another rank needs it, or its parameters need a (zero) gradient
                x, t, sliced = self._frame_slice(expert, hidden_states, timestep, kwargs)
                out = out + 0 * expert(hidden_states=x, timestep=t, return_dict=False, **sliced)[0].sum()
        return (out,)


def boundary_ratio_of(path: str | Path) -> float:
    """boundary_ratio from the pipeline folder's model_index.json (`path` or, for its transformer, its
    parent)."""
    root = Path(path)
    for folder in (root, root.parent):
        index = folder / "model_index.json"
        if index.is_file():
            try:
                ratio = json.loads(index.read_text()).get("boundary_ratio")
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise ValueError(f"{str(index)!r} is not valid JSON: {err}") from err
            if not isinstance(ratio, int | float) or isinstance(ratio, bool):
                raise ValueError(
                    f"{str(index)!r}: expected a numeric 'boundary_ratio' (a two-expert Wan 2.2 "
                    f"pipeline), got {ratio!r}"
                )
            return float(ratio)
    raise ValueError(
        f"model folder {str(root)!r}: no model_index.json in it or its parent (Wan 2.2 A14B needs the "
        "pipeline folder: model_index.json with boundary_ratio, transformer/ and transformer_2/)"
    )


class TwoExpertMixin:
    """Adapter part for the two-expert Wan 2.2 A14B models (before a Wan 2.1-style adapter in the bases)."""

    lora_components: ClassVar[tuple[str, ...]] = EXPERTS  # one exported LoRA file per expert

    @classmethod
    def load_transformer(cls, path: str | Path, dtype: torch.dtype, loader=None) -> nn.Module:
        """Both experts from the pipeline folder (`path`, or its `transformer` folder), offline, each with
        `loader` (ModelAdapter.load_transformer)."""
        if path is None:
            raise ValueError(f"model {cls.name!r}: a local diffusers pipeline folder path is required")
        ratio = boundary_ratio_of(path)
        root = Path(path) if (Path(path) / "model_index.json").is_file() else Path(path).parent
        experts = [
            (loader or load_diffusers_model)(WanTransformer3DModel, root / name, dtype) for name in EXPERTS
        ]
        return WanExperts.of(*experts, ratio)

    def transformer_blocks(self, transformer: nn.Module) -> nn.ModuleList:
        """Both experts' blocks, interleaved (a checkpoint fraction takes the same share of each)."""
        experts = base_module(transformer)
        pairs = zip(experts.transformer.blocks, experts.transformer_2.blocks, strict=True)
        return nn.ModuleList([block for pair in pairs for block in pair])

    def checked_config(self, transformer: nn.Module, noisy, timesteps, cond):
        """The experts' shared transformer config (WanExperts.of checked that they agree)."""
        experts = base_module(transformer)
        if not isinstance(experts, WanExperts):
            raise ValueError(
                f"model {self.name!r}: expected the two Wan experts, got {type(experts).__name__}"
            )
        return super().checked_config(experts.transformer, noisy, timesteps, cond)


# Wan 2.2 A14B's published sampling (the Wan 2.2 release's configs): 81 frames at 720×1280, 40 steps, 16 fps;
# T2V guidance 4.0 for the high-noise expert and 3.0 for the low-noise one, I2V 3.5 for both. SamplerSettings
# carries one scale: the pipeline applies it to both experts (guidance_scale_2 defaults to guidance_scale), so
# T2V samples at 4.0 throughout (an assumption, until the generate stage passes guidance_scale_2).
A14B_T2V_SAMPLER = SamplerSettings(
    num_frames=81, height=720, width=1280, steps=40, guidance_scale=4.0, max_sequence_length=512, fps=16
)
A14B_I2V_SAMPLER = dataclasses.replace(A14B_T2V_SAMPLER, guidance_scale=3.5)


@register_adapter
class Wan22T2VA14BAdapter(TwoExpertMixin, Wan21T2VAdapter):
    """Wan 2.2 T2V A14B: two experts, text-to-video."""

    name: ClassVar[str] = "wan2.2-t2v-a14b"
    sampler_defaults: ClassVar[SamplerSettings] = A14B_T2V_SAMPLER


@register_adapter
class Wan22I2VA14BAdapter(TwoExpertMixin, Wan21I2VAdapter):
    """Wan 2.2 I2V A14B: two experts, latent-concat image conditioning (no CLIP image embeddings)."""

    name: ClassVar[str] = "wan2.2-i2v-a14b"
    pipelines: ClassVar[PipelineClasses] = Wan21I2VAdapter.pipelines
    sampler_defaults: ClassVar[SamplerSettings] = A14B_I2V_SAMPLER
