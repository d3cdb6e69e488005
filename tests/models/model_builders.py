"""Tiny random configs of the real diffusers transformers the adapters drive (shared by tests/models)."""

from __future__ import annotations

import torch
from diffusers import CogVideoXTransformer3DModel, WanTransformer3DModel

from videogpa.engine.types import Conditioning

TEXT_LEN, TEXT_DIM = 6, 24
IMAGE_LEN, IMAGE_DIM = 5, 16  # CLIP image embeddings of the Wan 2.1 I2V builder (257 × 1280 at full size)


def cogvideox_t2v(**overrides) -> CogVideoXTransformer3DModel:
    """CogVideoX-2B-like: sincos positional embeddings, no rotary; latents [B, 3, 4, 8, 8]."""
    config = dict(
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=4,
        out_channels=4,
        time_embed_dim=32,
        text_embed_dim=TEXT_DIM,
        num_layers=2,
        sample_width=8,
        sample_height=8,
        sample_frames=9,
        max_text_seq_length=TEXT_LEN,
    )
    config.update(overrides)
    return CogVideoXTransformer3DModel(**config)


def cogvideox_i2v(**overrides) -> CogVideoXTransformer3DModel:
    """CogVideoX-1.5-I2V-like: 2× latent channels in, rotary embeddings, temporal patch 2, ofs embedding."""
    config = dict(
        in_channels=8,
        use_rotary_positional_embeddings=True,
        use_learned_positional_embeddings=False,
        patch_size_t=2,
        ofs_embed_dim=32,  # = time_embed_dim, as in CogVideoX 1.5 I2V
        patch_bias=False,
    )
    config.update(overrides)
    return cogvideox_t2v(**config)


def cogvideox15_t2v(**overrides) -> CogVideoXTransformer3DModel:
    """CogVideoX1.5-5B-like (its public config's distinguishing fields): temporal patch 2, rotary embeddings
    on a sliced grid, no learned positional embeddings, no patch bias, no ofs embedding; latents
    [B, 4, 4, 8, 8]."""
    config = dict(
        use_rotary_positional_embeddings=True,
        use_learned_positional_embeddings=False,
        patch_size_t=2,
        patch_bias=False,
    )
    config.update(overrides)
    return cogvideox_t2v(**config)


def wan_ti2v(**overrides) -> WanTransformer3DModel:
    """Wan-2.2-TI2V-like: patch (1, 2, 2), latents [B, 4, 3, 8, 8]."""
    config = dict(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=4,
        out_channels=4,
        text_dim=TEXT_DIM,
        freq_dim=16,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    )
    config.update(overrides)
    return WanTransformer3DModel(**config)


def wan21_i2v(**overrides) -> WanTransformer3DModel:
    """Wan-2.1-I2V-like: x_t, a 4-channel first-frame mask and the image latents in (4 + 4 + 4 channels), CLIP
    image embeddings of width IMAGE_DIM through the image embedder and add_k/v_proj."""
    return wan_ti2v(**{"in_channels": 12, "image_dim": IMAGE_DIM, "added_kv_proj_dim": 24, **overrides})


def wan22_i2v_expert(**overrides) -> WanTransformer3DModel:
    """Wan-2.2-A14B-I2V-like expert: latent-concat input (12 channels), no CLIP image embeddings."""
    return wan_ti2v(**{"in_channels": 12, **overrides})


def wan_experts(i2v: bool = False, boundary_ratio: float = 0.875, seed: int = 0):
    """Two differently initialised experts as Wan 2.2 A14B's WanExperts."""
    from videogpa.engine.models.wan22_a14b import WanExperts

    build = wan22_i2v_expert if i2v else wan_ti2v
    torch.manual_seed(seed)
    first = build()
    torch.manual_seed(seed + 1)
    return WanExperts.of(first, build(), boundary_ratio)


def text(batch: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, TEXT_LEN, TEXT_DIM, generator=torch.Generator().manual_seed(seed))


def cond(batch: int, image: torch.Tensor | None = None) -> Conditioning:
    return Conditioning(text(batch), image)


def perturbed(model, seed: int = 4):
    """LoRA B starts at zero (adapter = identity): give it weights, as training would."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return model
