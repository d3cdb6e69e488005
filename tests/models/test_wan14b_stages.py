"""Wan 2.1 I2V and Wan 2.2 A14B through the generate and encode stages: tiny pipelines of the real diffusers
classes saved to and loaded from local folders; shards the adapters train on, with the I2V pipeline's own
image conditioning (condition latents of every frame, CLIP image embeddings)."""

import numpy as np
import pytest
import torch
from PIL import Image

from tests.stages.stage_helpers import build_pairs, write_rows
from videogpa.engine.core.config import EncodeConfig, GenerationConfig
from videogpa.engine.data.preference import PreferenceDataset, collate_pairs
from videogpa.engine.io.records import read_jsonl
from videogpa.engine.models import get_adapter
from videogpa.engine.models.pipelines import load_pipeline
from videogpa.engine.models.tiny import tiny_tokenizer
from videogpa.engine.models.wan22_a14b import WanExperts
from videogpa.engine.stages import encode, generate
from videogpa.engine.stages.generate import MANIFEST
from videogpa.engine.stages.pairs import PAIRS_FILE


def _components(in_channels: int, **transformer):
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(0)
    tokenizer = tiny_tokenizer()
    text_encoder = UMT5EncoderModel(
        UMT5Config(
            vocab_size=len(tokenizer),
            d_model=32,
            d_kv=8,
            d_ff=64,
            num_layers=1,
            num_heads=4,
            relative_attention_num_buckets=8,
        )
    ).eval()
    vae = AutoencoderKLWan(
        base_dim=8,
        z_dim=4,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        latents_mean=[0.1, -0.2, 0.0, 0.3],
        latents_std=[0.5, 2.0, 1.0, 1.5],
    )
    build = lambda: WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=in_channels,
        out_channels=4,
        text_dim=32,
        ffn_dim=32,
        num_layers=2,
        rope_max_seq_len=32,
        **transformer,
    )
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0
    )
    return dict(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler), build


@pytest.fixture(scope="module")
def wan21_i2v_folder(tmp_path_factory):
    from diffusers import WanImageToVideoPipeline
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    parts, build = _components(12, image_dim=16, added_kv_proj_dim=24)
    clip = CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        )
    ).eval()
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    pipe = WanImageToVideoPipeline(
        **parts, transformer=build(), image_encoder=clip, image_processor=processor
    )
    folder = tmp_path_factory.mktemp("wan21i2v") / "pipeline"
    pipe.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def a14b_folder(tmp_path_factory):
    from diffusers import WanPipeline

    parts, build = _components(4)
    pipe = WanPipeline(**parts, transformer=build(), transformer_2=build(), boundary_ratio=0.875)
    folder = tmp_path_factory.mktemp("a14b") / "pipeline"
    pipe.save_pretrained(folder)
    return folder


def _generate_and_encode(model: str, folder, tmp_path, prompts) -> PreferenceDataset:
    cfg = GenerationConfig(
        model=model,
        pipeline=str(folder),
        prompts=str(prompts),
        num_candidates=2,
        num_frames=9,
        height=32,
        width=32,
        steps=2,
        max_sequence_length=512,
    )
    assert generate.run(cfg, None, tmp_path / "gen", progress=False).generated == 2
    manifest = read_jsonl(tmp_path / "gen" / MANIFEST)
    scores = [
        {
            "video": str(tmp_path / "gen" / r["video"]),
            "status": "ok",
            "score": 0.1 * (1 + r["seed"]),
            "motion": 1.0,
        }
        for r in manifest
    ]
    write_rows(tmp_path / "scores.jsonl", scores)
    build_pairs(
        tmp_path / "scores.jsonl", tmp_path / "pairs", manifest=tmp_path / "gen" / MANIFEST, plots=False
    )
    summary = encode.run(
        EncodeConfig(model=model, pipeline=str(folder)),
        tmp_path / "pairs" / PAIRS_FILE,
        tmp_path / "shards",
        progress=False,
    )
    assert summary.train == 1 and summary.reused_latents == 2
    return PreferenceDataset(tmp_path / "shards" / "train")


def _trains_on(model: str, folder, data: PreferenceDataset):
    batch = collate_pairs([data[0]])
    adapter = get_adapter(model, path=folder)
    transformer = adapter.load_transformer(folder, torch.float32)
    t = torch.tensor([900.0])
    noisy = adapter.add_noise(batch.latents_w, torch.randn_like(batch.latents_w), t)
    with torch.no_grad():
        out = adapter.predict(transformer, noisy, t, batch.cond)
    assert out.shape == batch.latents_w.shape and torch.isfinite(out).all()
    return transformer


def test_wan21_i2v_generation_and_shards_carry_the_pipelines_image_conditioning(wan21_i2v_folder, tmp_path):
    pixels = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype("uint8")
    Image.fromarray(pixels).save(tmp_path / "f.png")
    prompts = write_rows(tmp_path / "p.jsonl", [{"prompt": "a red barn", "image": "f.png"}])
    data = _generate_and_encode("wan2.1-i2v", wan21_i2v_folder, tmp_path, prompts)
    pair = data[0]
    assert tuple(pair.latents_w.shape) == (4, 3, 4, 4)
    pipe = load_pipeline("wan2.1-i2v", wan21_i2v_folder, image_to_video=True)
    with torch.no_grad():
        image = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 127.5 - 1
        _, condition = pipe.prepare_latents(image, 1, 4, 32, 32, 9, torch.float32, "cpu")
        embeds = pipe.encode_image(Image.fromarray(pixels), "cpu")
    # every latent frame
    torch.testing.assert_close(pair.image_latents, condition[0, 4:], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(pair.image_embeds, embeds[0], atol=1e-5, rtol=1e-5)
    assert data.records[0]["has_image_embeds"] is True
    _trains_on("wan2.1-i2v", wan21_i2v_folder, data)


def test_wan22_a14b_generation_encode_and_both_experts(a14b_folder, tmp_path):
    (tmp_path / "p.txt").write_text("a red barn\n")
    data = _generate_and_encode("wan2.2-t2v-a14b", a14b_folder, tmp_path, tmp_path / "p.txt")
    assert data[0].image_latents is None and data[0].image_embeds is None
    transformer = _trains_on("wan2.2-t2v-a14b", a14b_folder, data)
    assert isinstance(transformer, WanExperts) and transformer.boundary == 875.0
