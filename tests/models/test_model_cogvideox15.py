"""CogVideoX 1.5 (text-to-video): the cogvideox1.5-t2v family on a tiny random config of the real transformer
class with 1.5's distinguishing fields. Its maths are CogVideoX's (the DPO step is tested with every family in
tests/trainer/test_dpo_step.py, sequence parallelism in tests/trainer/test_sequence_parallel.py); here: its
defaults, the even latent-frame count its temporal patch needs, and its LoRA loading into diffusers'
pipeline."""

import copy

import torch
from diffusers import CogVideoXTransformer3DModel

from tests.models.model_builders import perturbed
from videogpa.engine.models import adapter_class, get_adapter
from videogpa.engine.models.lora import apply_lora, save_lora_weights
from videogpa.engine.models.pipeline_encoder import PipelineEncoder
from videogpa.engine.models.tiny import TINY, build_tiny_pipeline, tiny_transformer_config
from videogpa.engine.types import Conditioning

V15 = dict(
    use_rotary_positional_embeddings=True,
    use_learned_positional_embeddings=False,
    patch_size_t=2,
    patch_bias=False,
)


def _pipelines():
    """(the tiny CogVideoX pipeline, the same pipeline with a CogVideoX-1.5-configured transformer)."""
    base = build_tiny_pipeline()
    v15 = build_tiny_pipeline()
    torch.manual_seed(1)
    v15.transformer = CogVideoXTransformer3DModel(**{**tiny_transformer_config(TINY), **V15})
    return base, v15


def test_family_facts_are_cogvideox_15s():
    family = adapter_class("cogvideox1.5-t2v")
    defaults = family.sampler_defaults
    assert (defaults.num_frames, defaults.height, defaults.width, defaults.fps) == (81, 768, 1360, 16)
    assert defaults.max_sequence_length == 224
    assert family.pipelines.text_to_video == "CogVideoXPipeline" and family.pipelines.image_to_video is None
    assert family.transformer_class is CogVideoXTransformer3DModel


def test_encoded_videos_get_their_first_latent_frame_repeated_to_an_even_count():
    base, v15 = _pipelines()
    convention = adapter_class("cogvideox1.5-t2v").latent_convention
    frames = torch.rand(1, 9, 3, TINY.video_size, TINY.video_size, generator=torch.Generator().manual_seed(2))
    plain = PipelineEncoder(base, convention, 8).encode_videos(frames)  # CogVideoX 1.0: 3 latent frames
    padded = PipelineEncoder(v15, convention, 8).encode_videos(frames)
    assert plain.shape[1] == 3 and padded.shape[1] == 4
    torch.testing.assert_close(padded[:, 1:], plain)
    torch.testing.assert_close(padded[:, 0], plain[:, 0])


def test_a_trained_lora_loads_into_the_cogvideox_pipeline(tmp_path):
    _, v15 = _pipelines()
    adapter = get_adapter("cogvideox1.5-t2v")
    model = perturbed(apply_lora(copy.deepcopy(v15.transformer), 4, 8.0, adapter.default_lora_targets))
    save_lora_weights(model, tmp_path)
    v15.load_lora_weights(str(tmp_path))
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, *TINY.latent_shape, generator=gen)  # 4 latent frames: even, as 1.5 needs
    c = Conditioning(torch.randn(2, *TINY.text_shape, generator=gen))
    t = torch.tensor([10, 900])
    with torch.no_grad():
        trained = adapter.predict(model, x, t, c)
        loaded = adapter.predict(v15.transformer, x, t, c)
        v15.disable_lora()
        base = adapter.predict(v15.transformer, x, t, c)
    torch.testing.assert_close(loaded, trained)
    assert not torch.allclose(base, trained)
