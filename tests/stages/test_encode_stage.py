"""The encode stage: VAE conventions checked against the pipelines' own code, shards in the trainer's format,
latent reuse, re-encoding, resume and bad inputs."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.stages.stage_helpers import build_pairs, load_recipe, write_rows
from videogpa.engine.data.preference import INDEX_NAME, PreferenceDataset
from videogpa.engine.data.prompts import PromptItem
from videogpa.engine.io.records import read_jsonl
from videogpa.engine.models import adapter_class, get_adapter
from videogpa.engine.models.base import SamplerSettings
from videogpa.engine.models.pipeline_encoder import PipelineEncoder
from videogpa.engine.models.pipelines import load_pipeline
from videogpa.engine.models.tiny import build_tiny_pipeline, write_tiny_pipeline
from videogpa.engine.stages.encode import SOURCE_FILE, encode_pairs, split_pairs
from videogpa.engine.stages.generate import MANIFEST, generate_candidates
from videogpa.engine.stages.pairs import PAIRS_FILE

SAMPLER = SamplerSettings(num_frames=9, height=64, width=64, steps=2, max_sequence_length=48)

COGVIDEOX = adapter_class("cogvideox-t2v").latent_convention
WAN = adapter_class("wan2.2-ti2v").latent_convention


def _near_deterministic_posterior(vae_encoder_conv_out, latent_channels):
    """Make the VAE posterior's std ~3e-7 (logvar clamped at -30), so the pipelines' sampled latents equal
    the mode to ~1e-6 and can be compared with the encoder's (mode) latents."""
    conv = getattr(vae_encoder_conv_out, "conv", vae_encoder_conv_out)
    with torch.no_grad():
        conv.weight[latent_channels:] = 0
        conv.bias[latent_channels:] = -30


def test_cogvideox_image_latent_matches_the_i2v_pipeline_own_encoding():
    """[-1, 1] input, × scaling_factor and the [F, C, H, W] layout, as CogVideoXImageToVideoPipeline does."""
    pipe = build_tiny_pipeline(image_to_video=True)
    _near_deterministic_posterior(pipe.vae.encoder.conv_out, pipe.vae.config.latent_channels)
    image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(1))
    encoder = PipelineEncoder(pipe, COGVIDEOX, 48)
    ours = encoder.encode_image(image)
    _, theirs = pipe.prepare_latents(
        image[None] * 2 - 1, 1, 4, 9, 64, 64, torch.float32, "cpu", torch.Generator().manual_seed(0)
    )
    assert tuple(ours.shape) == (1, 4, 8, 8)
    torch.testing.assert_close(ours, theirs[0, :1], atol=1e-5, rtol=1e-4)
    assert (theirs[0, :1] - ours / pipe.vae.config.scaling_factor).abs().max() > 1e-2  # the factor matters
    pipe.vae.register_to_config(invert_scale_latents=True)  # CogVideoX 1.5 I2V: image latents ÷ factor
    _, theirs = pipe.prepare_latents(
        image[None] * 2 - 1, 1, 4, 9, 64, 64, torch.float32, "cpu", torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(encoder.encode_image(image), theirs[0, :1], atol=1e-5, rtol=1e-4)


def test_cogvideox_video_latents_are_the_vae_mode_of_minus_one_to_one_frames_times_the_factor():
    pipe = build_tiny_pipeline()
    frames = torch.rand(9, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    ours = PipelineEncoder(pipe, COGVIDEOX, 48).encode_video(frames)
    with torch.no_grad():
        raw = lambda x: pipe.vae.encode(x.permute(1, 0, 2, 3)[None]).latent_dist.mode()[0].permute(1, 0, 2, 3)
        expected = raw(frames * 2 - 1) * pipe.vae.config.scaling_factor
        wrong_range = raw(frames) * pipe.vae.config.scaling_factor
    assert tuple(ours.shape) == (3, 4, 8, 8)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)
    assert (ours - wrong_range).abs().max() > 1e-2 and (
        ours - expected / pipe.vae.config.scaling_factor
    ).abs().max() > 1e-2
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        PipelineEncoder(pipe, COGVIDEOX, 48).encode_video(frames * 2 - 1)


def test_batched_encoding_equals_one_clip_at_a_time():
    encoder = PipelineEncoder(build_tiny_pipeline(), COGVIDEOX, 48)
    clips = torch.rand(3, 5, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    batched = encoder.encode_videos(clips)
    assert tuple(batched.shape) == (3, 2, 4, 8, 8)
    for clip, latent in zip(clips, batched):
        # one clip alone sums in another order than the batch on the CPU's conv kernels (CPU-dependent ~1e-5):
        # compare unit-variance latents at ~1000 fp32 ulps, far below the differences between clips
        torch.testing.assert_close(latent, encoder.encode_video(clip), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match=r"expected frames \[B, T, 3, H, W\]"):
        encoder.encode_videos(clips[0])


def test_wan_image_latent_matches_the_wan_i2v_pipeline_normalisation():
    from diffusers import AutoencoderKLWan, WanImageToVideoPipeline

    torch.manual_seed(0)
    vae = AutoencoderKLWan(
        base_dim=4,
        z_dim=4,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        latents_mean=[0.1, -0.2, 0.3, 0.0],
        latents_std=[0.5, 2.0, 1.5, 1.0],
    )
    pipe = WanImageToVideoPipeline(
        tokenizer=None,
        text_encoder=None,
        vae=vae,
        scheduler=None,
        image_processor=None,
        image_encoder=None,
        transformer=None,
        expand_timesteps=True,
    )
    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(3))
    ours = PipelineEncoder(pipe, WAN, 16).encode_image(image)
    _, theirs, _ = pipe.prepare_latents(
        image[None] * 2 - 1, 1, 4, 32, 32, 9, torch.float32, "cpu", torch.Generator().manual_seed(0)
    )
    assert tuple(ours.shape) == (4, 1, 4, 4)  # Wan layout [C, F, H, W]
    torch.testing.assert_close(ours, theirs[0], atol=1e-5, rtol=1e-4)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """A tiny pipeline folder, 3 prompts × 2 candidates, hand-made scores and the pair index from them."""
    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("encode")
    folder = write_tiny_pipeline(root / "model")
    items = [PromptItem(f"p{i}", f"prompt number {i}") for i in range(3)]
    generate_candidates(
        load_pipeline("tiny", folder),
        get_adapter("tiny"),
        items,
        root / "gen",
        seeds=[0, 1],
        sampler=SAMPLER,
        model="tiny",
        batch_size=2,
        progress=False,
    )
    manifest = read_jsonl(root / "gen" / MANIFEST)
    scores = [
        {
            "video": str(root / "gen" / r["video"]),
            "status": "ok",
            "score": 0.1 + 0.3 * r["seed"] + 0.01 * i,
            "motion": 0.5,
        }
        for i, r in enumerate(manifest)
    ]
    write_rows(root / "gen" / "scores.jsonl", scores)
    build_pairs(root / "gen" / "scores.jsonl", root / "pairs", manifest=root / "gen" / MANIFEST, plots=False)
    return folder, root


def test_shards_reuse_generation_latents_and_match_the_pair_index(generated, tmp_path):
    folder, root = generated
    rows = read_jsonl(root / "pairs" / PAIRS_FILE)
    assert len(rows) == 3
    encoder = PipelineEncoder(load_pipeline("tiny", folder), COGVIDEOX, 48)
    summary = encode_pairs(rows, tmp_path, encoder, heldout_fraction=1 / 3, seed=0, progress=False)
    assert (summary.train, summary.heldout, summary.reused_latents, summary.encoded_videos) == (2, 1, 6, 0)
    train, heldout = PreferenceDataset(tmp_path / "train"), PreferenceDataset(tmp_path / "heldout")
    by_id = {r["pair_id"]: r for r in rows}
    assert {r["pair_id"] for r in train.records + heldout.records} == set(by_id)
    pair = train[0]
    row = by_id[pair.pair_id]
    assert torch.equal(pair.latents_w, load_file(row["winner"]["extra"]["latents"])["latents"])
    assert torch.equal(pair.latents_l, load_file(row["loser"]["extra"]["latents"])["latents"])
    assert (pair.score_w, pair.score_l) == (row["winner"]["score"], row["loser"]["score"])
    pipe = load_pipeline("tiny", folder)
    text = pipe.encode_prompt(row["prompt"], do_classifier_free_guidance=False, max_sequence_length=48)[0][0]
    torch.testing.assert_close(pair.text_embeds, text)
    assert pair.image_latents is None
    again = encode_pairs(rows, tmp_path, encoder, heldout_fraction=1 / 3, seed=0, progress=False)
    assert again.skipped
    with pytest.raises(ValueError, match="holds shards of another pair index or split"):
        encode_pairs(rows[:2], tmp_path, encoder, heldout_fraction=0.0, progress=False)


def test_missing_latents_are_encoded_from_the_video_and_bad_latents_are_named(generated, tmp_path):
    folder, root = generated
    rows = read_jsonl(root / "pairs" / PAIRS_FILE)[:1]
    encoder = PipelineEncoder(load_pipeline("tiny", folder), COGVIDEOX, 48)
    rows[0]["winner"]["extra"]["latents"] = str(tmp_path / "gone.safetensors")
    summary = encode_pairs(rows, tmp_path / "a", encoder, progress=False)
    assert (summary.reused_latents, summary.encoded_videos) == (1, 1)
    from videogpa.engine.io.video import read_frames

    frames = read_frames(rows[0]["winner"]["video"]).permute(0, 3, 1, 2).float() / 255
    torch.testing.assert_close(
        PreferenceDataset(tmp_path / "a" / "train")[0].latents_w, encoder.encode_video(frames)
    )
    bad = tmp_path / "nan.safetensors"
    save_file({"latents": torch.full((3, 4, 8, 8), float("nan"))}, str(bad))
    rows[0]["winner"]["extra"]["latents"] = str(bad)
    with pytest.raises(
        ValueError, match=r"generation latents .*nan.safetensors: tensor 'latents' is not finite"
    ):
        encode_pairs(rows, tmp_path / "b", encoder, progress=False)
    assert not (tmp_path / "b" / "train").exists()


def test_killed_run_resumes_from_the_cache(generated, tmp_path):
    folder, root = generated
    rows = read_jsonl(root / "pairs" / PAIRS_FILE)
    for r in rows:  # force VAE encoding of every video
        r["winner"]["extra"].pop("latents")
        r["loser"]["extra"].pop("latents")
    encoder = PipelineEncoder(load_pipeline("tiny", folder), COGVIDEOX, 48)
    broken = [*rows[:2], {**rows[2], "winner": {**rows[2]["winner"], "video": str(tmp_path / "missing.mp4")}}]
    with pytest.raises(ValueError, match="missing.mp4 does not exist"):
        encode_pairs(broken, tmp_path, encoder, progress=False)
    assert not (tmp_path / "train" / INDEX_NAME).exists()
    (tmp_path / SOURCE_FILE).unlink()  # the index changes between the runs
    summary = encode_pairs(rows, tmp_path, encoder, progress=False)
    assert len(PreferenceDataset(tmp_path / "train")) == 3
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 6 + 3  # 6 videos + 3 prompts
    assert summary.encoded_videos == 6


def test_split_is_seeded_and_complete():
    rows = [{"pair_id": str(i)} for i in range(10)]
    a, b = split_pairs(rows, 0.3, seed=1)
    assert len(b) == 3 and sorted(r["pair_id"] for r in a + b) == sorted(r["pair_id"] for r in rows)
    assert split_pairs(rows, 0.3, seed=1) == (a, b)
    with pytest.raises(ValueError, match="heldout_fraction"):
        split_pairs(rows, 1.0, seed=1)


def test_recipe_writes_trainer_shards(generated, tmp_path, capsys):
    folder, root = generated
    argv = [
        "--pipeline",
        str(folder),
        "--pairs",
        str(root / "pairs" / PAIRS_FILE),
        "--out-dir",
        str(tmp_path),
    ]
    assert load_recipe("encode").main(argv) == 0
    assert "3 training + 0 held-out pairs; latents: 6 reused" in capsys.readouterr().out
    assert json.loads((tmp_path / SOURCE_FILE).read_text())["split"]["train"] == [
        r["pair_id"] for r in read_jsonl(root / "pairs" / PAIRS_FILE)
    ]
    assert len(PreferenceDataset(tmp_path / "train")) == 3
