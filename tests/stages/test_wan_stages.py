"""Wan 2.2 TI2V through the generate and encode stages: a tiny WanPipeline (expand_timesteps, as TI2V-5B)
saved to and loaded from a local folder; latents in the Wan layout; shards the Wan adapter can train on."""

import importlib.util

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from tests.stages.stage_helpers import build_pairs, write_rows
from videogpa.engine.core.config import EncodeConfig, GenerationConfig
from videogpa.engine.data.preference import PreferenceDataset, collate_pairs
from videogpa.engine.io.records import read_jsonl
from videogpa.engine.models import get_adapter
from videogpa.engine.models.pipelines import load_pipeline
from videogpa.engine.models.tiny import tiny_tokenizer
from videogpa.engine.stages import encode, generate
from videogpa.engine.stages.generate import MANIFEST
from videogpa.engine.stages.pairs import PAIRS_FILE


@pytest.fixture(scope="module")
def wan_folder(tmp_path_factory):
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
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
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=4,
        out_channels=4,
        text_dim=32,
        ffn_dim=32,
        num_layers=2,
        rope_max_seq_len=32,
    )
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0
    )
    pipe = WanPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        scheduler=scheduler,
        transformer=transformer,
        expand_timesteps=True,
    )
    folder = tmp_path_factory.mktemp("wan") / "pipeline"
    pipe.save_pretrained(folder)
    return folder


def _config(folder, prompts):
    return GenerationConfig(
        model="wan2.2-ti2v",
        pipeline=str(folder),
        prompts=str(prompts),
        num_candidates=2,
        num_frames=9,
        height=32,
        width=32,
        steps=2,
        max_sequence_length=16,
    )


def test_wan_text_to_video_generation_encode_and_adapter(wan_folder, tmp_path):
    (tmp_path / "p.txt").write_text("a red barn\nan old stone bridge\n")
    assert (
        generate.run(
            _config(wan_folder, tmp_path / "p.txt"), None, tmp_path / "gen", progress=False
        ).generated
        == 4
    )
    manifest = read_jsonl(tmp_path / "gen" / MANIFEST)
    from safetensors.torch import load_file

    latents = load_file(str(tmp_path / "gen" / manifest[0]["latents"]))["latents"]
    assert tuple(latents.shape) == (4, 3, 4, 4)  # Wan layout [C, F, H, W]
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
    cfg = EncodeConfig(model="wan2.2-ti2v", pipeline=str(wan_folder))
    summary = encode.run(cfg, tmp_path / "pairs" / PAIRS_FILE, tmp_path / "shards", progress=False)
    assert summary.train == 2 and summary.reused_latents == 4
    data = PreferenceDataset(tmp_path / "shards" / "train")
    pipe = load_pipeline("wan2.2-ti2v", wan_folder)
    first = read_jsonl(tmp_path / "pairs" / PAIRS_FILE)[0]
    pair = data[[r["pair_id"] for r in data.records].index(first["pair_id"])]
    text = pipe.encode_prompt(first["prompt"], do_classifier_free_guidance=False, max_sequence_length=16)[0][
        0
    ]
    torch.testing.assert_close(pair.text_embeds, text)
    # the trainer's Wan adapter takes these shards as they are
    batch = collate_pairs([data[0], data[1]])
    adapter = get_adapter("wan2.2-ti2v", path=wan_folder)
    transformer = adapter.load_transformer(wan_folder, torch.float32)
    t = adapter.sample_timesteps(2, torch.Generator().manual_seed(0), torch.device("cpu"))
    noisy = adapter.add_noise(batch.latents_w, torch.randn_like(batch.latents_w), t)
    with torch.no_grad():
        out = adapter.predict(transformer, noisy, t, batch.cond)
    assert out.shape == batch.latents_w.shape and torch.isfinite(out).all()


def test_wan_image_to_video(wan_folder, tmp_path):
    Image.fromarray((np.random.default_rng(0).random((32, 32, 3)) * 255).astype("uint8")).save(
        tmp_path / "f.png"
    )
    prompts = write_rows(tmp_path / "p.jsonl", [{"prompt": "a red barn", "image": "f.png"}])
    cfg = _config(wan_folder, prompts)
    assert generate.run(cfg, None, tmp_path / "gen", progress=False).generated == 2
    rows = read_jsonl(tmp_path / "gen" / MANIFEST)
    assert rows[0]["image"] == str((tmp_path / "f.png").resolve())
    # The saved latents are the pipeline's final latents, clean first frame included: its own
    # output_type="latent" run with the same seed gives the same tensor.
    sampler = generate.sampler_settings(cfg)
    pipe = load_pipeline("wan2.2-ti2v", wan_folder, image_to_video=True)
    for row in rows:
        own = pipe(
            prompt=row["prompt"],
            image=Image.open(tmp_path / "f.png").convert("RGB"),
            generator=torch.Generator().manual_seed(row["seed"]),
            num_frames=sampler.num_frames,
            height=sampler.height,
            width=sampler.width,
            num_inference_steps=sampler.steps,
            guidance_scale=sampler.guidance_scale,
            max_sequence_length=sampler.max_sequence_length,
            output_type="latent",
        ).frames[0]
        saved = load_file(tmp_path / "gen" / row["latents"])["latents"]
        torch.testing.assert_close(saved, own, atol=1e-4, rtol=1e-4)
    # The image really conditions the video: same prompt and seeds, another image -> other latents.
    Image.fromarray(np.zeros((32, 32, 3), dtype="uint8")).save(tmp_path / "black.png")
    other = write_rows(tmp_path / "q.jsonl", [{"prompt": "a red barn", "image": "black.png"}])
    assert generate.run(_config(wan_folder, other), None, tmp_path / "gen2", progress=False).generated == 2
    for row, row2 in zip(rows, read_jsonl(tmp_path / "gen2" / MANIFEST)):
        assert row["seed"] == row2["seed"]
        a = load_file(tmp_path / "gen" / row["latents"])["latents"]
        b = load_file(tmp_path / "gen2" / row2["latents"])["latents"]
        assert a.shape == b.shape and not torch.allclose(a, b)


def test_wan_image_to_video_without_ftfy_is_a_clear_error(wan_folder, tmp_path, monkeypatch):
    """diffusers' Wan I2V pipeline cleans prompts with ftfy (the optional `wan` extra)."""
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ftfy" else real_find_spec(name, *a)
    )
    Image.fromarray(np.zeros((32, 32, 3), dtype="uint8")).save(tmp_path / "f.png")
    prompts = write_rows(tmp_path / "p.jsonl", [{"prompt": "a red barn", "image": "f.png"}])
    with pytest.raises(ValueError, match="needs the 'ftfy' package"):
        generate.run(_config(wan_folder, prompts), None, tmp_path / "gen", progress=False)
