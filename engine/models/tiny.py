"""The built-in tiny model: a 2-layer CogVideoXTransformer3DModel built in code from a fixed seed, and the
tiny but real CogVideoX pipeline around it.

The adapter is the CogVideoX T2V one with a tiny config (rotary embeddings on, CogVideoX-2B's schedule), so
the embedded default and the tests exercise the real model class and the real adapter logic, with no files.
`build_tiny_pipeline` / `write_tiny_pipeline(folder)` make CogVideoXPipeline (or
CogVideoXImageToVideoPipeline) from that transformer (the same weights), a tiny AutoencoderKLCogVideoX, a tiny
T5EncoderModel and a word-level T5Tokenizer made in code (nothing downloaded); the loop loads the written
folder exactly like a real checkpoint. What it generates is noise-like: it exercises the machinery, its
videos' scores mean nothing.
"""

from __future__ import annotations

import os
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from diffusers import CogVideoXTransformer3DModel
from torch import nn

from videogpa.engine.models.base import PipelineClasses, SamplerSettings
from videogpa.engine.models.cogvideox import CogVideoXAdapter
from videogpa.engine.models.registry import register_adapter


@dataclass(frozen=True)
class TinySpec:
    """The tiny model's sizes, all in one place.

    Training samples (the embedded default's synthetic pairs): latents [F, C, H, W] (BFCHW layout) and text
    embeddings [L, D]; their scene prompts ("a room, the camera pans") fit in 8 tokens. Generated videos
    (the tiny loop): 17 frames of 64x64 → latents [5, 4, 8, 8] (with rotary embeddings the frame count is
    free; an odd number of latent frames makes the CogVideoX VAE decode back to the same 17 frames), from
    prompts of up to 64 tokens (the camera-motion prompts are long).
    """

    latent_shape: tuple[int, int, int, int] = (4, 4, 8, 8)
    text_shape: tuple[int, int] = (8, 32)
    video_frames: int = 17
    video_size: int = 64
    prompt_tokens: int = 64
    seed: int = 0  # the built-in weights are drawn from this seed


TINY = TinySpec()


def tiny_transformer_config(spec: TinySpec = TINY) -> dict[str, Any]:
    """The CogVideoXTransformer3DModel config of the tiny model: 2 layers, 2 heads × 16 dims."""
    frames, channels, height, width = spec.latent_shape
    length, dim = spec.text_shape
    return {
        "num_attention_heads": 2,
        "attention_head_dim": 16,
        "in_channels": channels,
        "out_channels": channels,
        "time_embed_dim": 32,
        "text_embed_dim": dim,
        "num_layers": 2,
        "sample_width": width,
        "sample_height": height,
        "sample_frames": (frames - 1) * 4 + 1,
        "patch_size": 2,
        "max_text_seq_length": length,
        "use_rotary_positional_embeddings": True,
    }


def build_tiny_transformer(dtype: torch.dtype = torch.float32, spec: TinySpec = TINY) -> nn.Module:
    """The tiny transformer with weights drawn from spec.seed (the global RNG is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = CogVideoXTransformer3DModel(**tiny_transformer_config(spec))
    return model if dtype == torch.float32 else model.to(dtype)


@register_adapter
class TinyAdapter(CogVideoXAdapter):
    """The tiny built-in model (CogVideoX T2V logic); TINY gives its sample shapes."""

    name: ClassVar[str] = "tiny"
    spec: ClassVar[TinySpec] = TINY
    pipelines: ClassVar[PipelineClasses] = PipelineClasses("CogVideoXPipeline", None)
    # short runs on a CPU
    sampler_defaults: ClassVar[SamplerSettings] = SamplerSettings(
        num_frames=TINY.video_frames,
        height=TINY.video_size,
        width=TINY.video_size,
        steps=8,
        guidance_scale=6.0,
        max_sequence_length=TINY.prompt_tokens,
    )

    ships_pipeline: ClassVar[bool] = True

    @classmethod
    def builtin_pipeline(cls, image_to_video: bool = False):
        return build_tiny_pipeline(image_to_video=image_to_video)

    @classmethod
    def load_transformer(cls, path: str | Path | None, dtype: torch.dtype, loader=None) -> nn.Module:
        """path None: the built-in tiny model; otherwise a saved one from a local diffusers folder."""
        if path is None:
            return build_tiny_transformer(dtype)
        return super().load_transformer(path, dtype, loader)


# Whole-word pieces of the tiny tokenizer: the camera-motion builder's words and common scene words; other
# words fall back to characters.
_WORDS = """a an the of in on with and then only where nothing moves moving camera completely static scene
slowly to slow left right up down forward back pans pan tilts tilt dollies dolly pulls pull orbits orbit
around trucks truck sideways cranes crane arcs arc centre center red green blue old stone bridge over river
quiet library
tall shelves lighthouse rocky coast kitchen wooden table narrow street town greenhouse full plants snowy
mountain cabin sunlit museum hall harbour fishing boats desert canyon field barn house room city park forest
lake sea beach garden tree trees road building window door car light sky night day""".split()


def tiny_tokenizer():
    """A T5Tokenizer (Unigram) over whole words of _WORDS, with characters as the fallback."""
    from transformers import T5Tokenizer

    chars = string.ascii_letters + string.digits + ",.;:'!?-()"
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [(c, -3.0) for c in chars] + [("▁" + c, -3.5) for c in chars]
    vocab += [("▁" + w, -1.0) for w in _WORDS] + [("▁" + w.capitalize(), -1.0) for w in _WORDS]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def _text_encoder(vocab_size: int):
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=vocab_size,
        d_model=TINY.text_shape[1],
        d_kv=8,
        d_ff=64,
        num_layers=1,
        num_heads=4,
        relative_attention_num_buckets=8,
        dropout_rate=0.0,
        pad_token_id=0,
        eos_token_id=1,
    )
    return T5EncoderModel(config).eval()


# Chosen as real VAEs' scaling factors are: 1 / std of the raw latents, here of the synthetic scenes' clips
# (measured 0.316 over 32 clips of 13 frames, 64x64), so that the diffusion model sees unit-variance latents.
TINY_VAE_SCALING = 3.16


def _vae():
    from diffusers import AutoencoderKLCogVideoX

    return AutoencoderKLCogVideoX(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(8, 8, 8, 8),
        down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4,
        layers_per_block=1,
        norm_num_groups=2,
        temporal_compression_ratio=4,
        sample_height=TINY.video_size,
        sample_width=TINY.video_size,
        scaling_factor=TINY_VAE_SCALING,
    )


def _transformer(image_to_video: bool):
    """The built-in tiny model's transformer; I2V doubles its input channels."""
    if not image_to_video:
        return build_tiny_transformer()
    config = tiny_transformer_config(TINY)
    return CogVideoXTransformer3DModel(**{**config, "in_channels": 2 * config["in_channels"]})


def build_tiny_pipeline(seed: int = 0, image_to_video: bool = False):
    """The tiny pipeline in memory (fp32, CPU), weights drawn from `seed`."""
    from diffusers import CogVideoXDDIMScheduler, CogVideoXImageToVideoPipeline, CogVideoXPipeline

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tokenizer = tiny_tokenizer()
        parts = dict(
            tokenizer=tokenizer,
            text_encoder=_text_encoder(len(tokenizer)),
            vae=_vae(),
            transformer=_transformer(image_to_video),
            scheduler=CogVideoXDDIMScheduler(
                timestep_spacing="trailing",
                prediction_type="v_prediction",
                rescale_betas_zero_snr=True,
                beta_schedule="scaled_linear",
                beta_start=0.00085,
                beta_end=0.012,
                clip_sample=False,
            ),
        )
    cls = CogVideoXImageToVideoPipeline if image_to_video else CogVideoXPipeline
    return cls(**parts)


def write_tiny_pipeline(folder: str | os.PathLike, seed: int = 0, image_to_video: bool = False) -> Path:
    """save_pretrained the tiny pipeline to `folder` (atomically; never over an existing pipeline)."""
    from videogpa.engine.models.pipelines import save_pipeline

    return save_pipeline(build_tiny_pipeline(seed, image_to_video), folder)
