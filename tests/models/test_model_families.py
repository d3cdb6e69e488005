"""Every registered model family is one complete object: training maths, LoRA targets, generation pipelines,
sampler defaults, image passing, the final-latents hook, the VAE latent convention, and a config in
recipes/configs/ that validates."""

import inspect
from pathlib import Path

import diffusers
import pytest
import torch

from videogpa.engine.core.config_loading import load_config
from videogpa.engine.models import adapter_class, adapter_names
from videogpa.engine.models.base import ModelAdapter, PipelineClasses, SamplerSettings
from videogpa.engine.models.latents import LatentConvention

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "recipes" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("name", adapter_names())
def test_family_defines_every_fact(name):
    cls = adapter_class(name)
    assert issubclass(cls, ModelAdapter) and cls.name == name and not inspect.isabstract(cls)
    assert isinstance(cls.pipelines, PipelineClasses) and isinstance(cls.sampler_defaults, SamplerSettings)
    for pipeline in (cls.pipelines.text_to_video, cls.pipelines.image_to_video):
        assert pipeline is None or hasattr(diffusers, pipeline), pipeline
    assert cls.pipelines.text_to_video or cls.pipelines.image_to_video
    convention = cls.latent_convention
    assert isinstance(convention, LatentConvention) and hasattr(diffusers, convention.vae_class)
    assert convention.layout in ("BFCHW", "BCFHW")
    assert cls.default_lora_targets and all(isinstance(t, str) and t for t in cls.default_lora_targets)
    assert isinstance(cls.image_per_video, bool) and isinstance(cls.ships_pipeline, bool)
    assert cls.finalize_latents is not None and cls.image_argument is not None


@pytest.mark.parametrize("name", adapter_names())
def test_family_has_a_validated_config(name):
    configs = [load_config(p) for p in CONFIGS]
    assert any(cfg.model.name == name for cfg in configs), (
        f"no recipes/configs/*.yaml with model.name {name!r}"
    )


@pytest.mark.parametrize(
    ("name", "vae_config", "latent_shape", "clip"),
    [
        (
            "cogvideox-t2v",
            {"temporal_compression_ratio": 4, "block_out_channels": (1, 1, 1, 1)},
            (13, 16, 60, 90),
            (49, 480, 720),
        ),
        (
            "wan2.2-ti2v",
            {"scale_factor_temporal": 4, "scale_factor_spatial": 16},
            (48, 31, 44, 80),
            (121, 704, 1280),
        ),
    ],
)
def test_latent_convention_sizes_the_clips_of_the_published_models(name, vae_config, latent_shape, clip):
    """CogVideoX-5B: 49 frames of 480x720 → 13 latent frames of 60x90; Wan 2.2 TI2V-5B: 121 frames of
    704x1280 → 31 of 44x80 (its VAE compresses 16× in space)."""
    vae = type("VAE", (), {"config": type("Config", (), vae_config)})()
    assert adapter_class(name).latent_convention.clip_size(vae, latent_shape) == clip


def test_image_argument_and_default_hooks():
    cog, wan = adapter_class("cogvideox-i2v")(), adapter_class("wan2.2-ti2v")()
    assert cog.image_argument(["a", "b"]) == ["a", "b"] and wan.image_argument(["a", "a"]) == "a"
    latents = torch.randn(2, 4, 3, 2, 2)
    assert cog.finalize_latents(None, latents, [], None) is latents  # CogVideoX keeps its final latents
    with pytest.raises(ValueError, match="ships no built-in pipeline"):
        adapter_class("cogvideox-t2v").builtin_pipeline()
