"""The embedded default's preference set: synthetic scenes, clean vs corrupted, through the tiny pipeline."""

import dataclasses

import pytest
import torch

from videogpa.engine.core.config import SyntheticDataConfig
from videogpa.engine.data.preference import PreferenceDataset
from videogpa.engine.models import adapter_class
from videogpa.engine.models.pipeline_encoder import PipelineEncoder
from videogpa.engine.models.tiny import TINY, build_tiny_pipeline
from videogpa.engine.scenes.preference_pairs import scene_prompt, write_synthetic_pairs
from videogpa.engine.scenes.procedural import corrupt, make_scene, render_clip

# Unit-variance latents re-encoded in a batch of another size: ~1000 fp32 ulps of slack for the summation
# order of the CPU's vector kernels, which depends on the CPU model and thread count.
BATCHING_TOL = dict(atol=1e-4, rtol=1e-4)
CFG = SyntheticDataConfig(
    train_pairs=5, heldout_pairs=3, seed=11, corruptions=["jitter", "scale"], strength=3.0
)


@pytest.fixture(scope="module")
def encoder():
    return PipelineEncoder(build_tiny_pipeline(), adapter_class("tiny").latent_convention, TINY.text_shape[0])


@pytest.fixture(scope="module")
def sets(tmp_path_factory, encoder):
    root = tmp_path_factory.mktemp("synthetic")
    train, heldout = write_synthetic_pairs(
        root, CFG, encoder, TINY.latent_shape, "BFCHW", TINY.text_shape, progress=False
    )
    return PreferenceDataset(train), PreferenceDataset(heldout)


def test_pairs_are_the_encoded_clean_and_corrupted_scene_clips(sets, encoder):
    train, heldout = sets
    assert (len(train), len(heldout)) == (5, 3)
    paths, kinds = [], []
    for data in (train, heldout):
        for i, record in enumerate(data.records):
            split, _, scene, path, kind = record["pair_id"].split("-")
            seed = int(scene.removeprefix("scene"))
            clean = render_clip(make_scene(seed), path, 13, 64, 64)  # the frames and size 4x8x8 latents need
            broken = corrupt(clean, kind, 3.0, seed)
            pair = data[i]
            assert tuple(pair.latents_w.shape) == TINY.latent_shape
            # The set was encoded 8 pairs per VAE call, this re-encodes one clip: the CPU's conv kernels sum
            # in another order (differing by ~1e-5 on some CPUs), so compare at the latents' fp32 rounding
            # scale, not bitwise; clean and corrupted latents differ by > 0.1 (the next test).
            torch.testing.assert_close(pair.latents_w, encoder.encode_video(clean.frames), **BATCHING_TOL)
            torch.testing.assert_close(pair.latents_l, encoder.encode_video(broken.frames), **BATCHING_TOL)
            torch.testing.assert_close(
                pair.text_embeds,
                encoder.encode_text(scene_prompt(path)),
            )
            assert (record["score_w"], record["score_l"]) == (0.0, 3.0)
            paths.append(path)
            kinds.append(kind)
    assert set(paths) == {"pan", "dolly", "orbit"} and set(kinds) == {"jitter", "scale"}


def test_held_out_scenes_are_never_training_scenes(sets):
    train, heldout = sets
    scenes = lambda data: {r["pair_id"].split("-")[2] for r in data.records}
    assert len(scenes(train)) == 5 and len(scenes(heldout)) == 3
    assert not scenes(train) & scenes(heldout)


def test_latents_have_about_unit_variance_and_losers_differ(sets):
    train, _ = sets
    winners = torch.stack([train[i].latents_w for i in range(len(train))])
    losers = torch.stack([train[i].latents_l for i in range(len(train))])
    assert 0.7 < float(winners.std()) < 1.4  # the tiny VAE's scaling factor
    assert all((w - lo).abs().max() > 0.1 for w, lo in zip(winners, losers))


def test_same_seed_same_pairs_and_previous_sets_are_replaced(sets, encoder, tmp_path):
    cfg = dataclasses.replace(CFG, train_pairs=2, heldout_pairs=1)
    write_synthetic_pairs(tmp_path, CFG, encoder, TINY.latent_shape, "BFCHW", TINY.text_shape, progress=False)
    write_synthetic_pairs(tmp_path, cfg, encoder, TINY.latent_shape, "BFCHW", TINY.text_shape, progress=False)
    again = PreferenceDataset(tmp_path / "train")
    assert len(again) == 2
    # 2 pairs per VAE call here against 5 in `sets`: equal up to the summation order
    torch.testing.assert_close(again[1].latents_l, sets[0][1].latents_l, **BATCHING_TOL)


def test_layout_mismatch_is_a_clear_error(encoder, tmp_path):
    with pytest.raises(ValueError, match="VAE gives BFCHW latents, the model takes BCFHW"):
        write_synthetic_pairs(
            tmp_path, CFG, encoder, TINY.latent_shape, "BCFHW", TINY.text_shape, progress=False
        )
