"""A tiny but real CogVideoX pipeline built offline: random weights, real diffusers/transformers classes.

`write_tiny_pipeline(folder)` builds CogVideoXPipeline (or CogVideoXImageToVideoPipeline) from the built-in
tiny model's CogVideoXTransformer3DModel (engine.models.tiny, the same weights), a tiny AutoencoderKLCogVideoX, a tiny T5EncoderModel and a character-level
T5Tokenizer made in code (nothing downloaded), and `save_pretrained`s it, so that the loop loads it from a
local folder exactly like a real checkpoint. What it generates is noise-like: it exercises the machinery,
its videos' scores mean nothing.
"""

from __future__ import annotations

import os
import string
from pathlib import Path

import torch

# Videos of the tiny loop: 17 frames of 64x64 → latents [5, 4, 8, 8] (CogVideoX layout F, C, H, W; the
# built-in tiny transformer's grid, with rotary embeddings the frame count is free). An odd number of latent
# frames makes the CogVideoX VAE decode back to the same 17 frames. Text: TINY_TEXT_LEN tokens of 32 dims.
TINY_FRAMES = 17
TINY_SIZE = 64
TINY_TEXT_LEN = 64


# Whole-word pieces of the tiny tokenizer: the camera-motion builder's words and common scene words; other
# words fall back to characters.
_WORDS = """a an the of in on with and then only where nothing moves moving camera completely static scene slowly
to slow left right up down forward back pans pan tilts tilt dollies dolly pulls pull orbits orbit around trucks
truck sideways cranes crane arcs arc centre center red green blue old stone bridge over river quiet library
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

    from videogpa.engine.models.tiny import TINY

    config = T5Config(
        vocab_size=vocab_size, d_model=TINY.text_shape[1], d_kv=8, d_ff=64, num_layers=1, num_heads=4,
        relative_attention_num_buckets=8, dropout_rate=0.0, pad_token_id=0, eos_token_id=1,
    )  # fmt: skip
    return T5EncoderModel(config).eval()


# Chosen as real VAEs' scaling factors are: 1 / std of the raw latents, here of the synthetic scenes' clips
# (measured 0.316 over 32 clips of 13 frames, 64x64), so that the diffusion model sees unit-variance latents.
TINY_VAE_SCALING = 3.16


def _vae():
    from diffusers import AutoencoderKLCogVideoX

    return AutoencoderKLCogVideoX(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 8, 8),
        down_block_types=("CogVideoXDownBlock3D",) * 4, up_block_types=("CogVideoXUpBlock3D",) * 4,
        layers_per_block=1, norm_num_groups=2, temporal_compression_ratio=4,
        sample_height=TINY_SIZE, sample_width=TINY_SIZE, scaling_factor=TINY_VAE_SCALING,
    )  # fmt: skip


def _transformer(image_to_video: bool):
    """The built-in tiny model's transformer (engine.models.tiny); I2V doubles its input channels."""
    from diffusers import CogVideoXTransformer3DModel

    from videogpa.engine.models.tiny import TINY, build_tiny_transformer, tiny_transformer_config

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
            ),  # fmt: skip
        )
    cls = CogVideoXImageToVideoPipeline if image_to_video else CogVideoXPipeline
    return cls(**parts)


def write_tiny_pipeline(folder: str | os.PathLike, seed: int = 0, image_to_video: bool = False) -> Path:
    """save_pretrained the tiny pipeline to `folder` (atomically: a temporary folder, then a rename)."""
    folder = Path(folder)
    if (folder / "model_index.json").is_file():
        raise ValueError(f"{folder} already holds a pipeline (model_index.json); not overwriting it")
    tmp = folder.with_name(f".{folder.name}.tmp")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    build_tiny_pipeline(seed, image_to_video).save_pretrained(tmp, safe_serialization=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, folder)
    return folder
