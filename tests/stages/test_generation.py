"""Candidate generation through a tiny but real CogVideoX pipeline saved to and loaded from a local folder."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from tests.stages.stage_helpers import load_recipe, write_rows
from videogpa.engine.core.config import GenerationConfig
from videogpa.engine.data.prompts import PromptItem
from videogpa.engine.io.records import read_jsonl
from videogpa.engine.io.video import read_frames
from videogpa.engine.models import get_adapter
from videogpa.engine.models.base import SamplerSettings
from videogpa.engine.models.lora import apply_lora, save_lora_weights
from videogpa.engine.models.pipelines import attach_lora, load_pipeline
from videogpa.engine.models.tiny import write_tiny_pipeline
from videogpa.engine.stages import generate
from videogpa.engine.stages.generate import FAILURES, MANIFEST, candidate_seeds

TINY = get_adapter("tiny")


def generate_candidates(pipe, items, out_dir, **kwargs):
    """The generate stage's loop with the tiny family's adapter."""
    return generate.generate_candidates(pipe, TINY, items, out_dir, **kwargs)


SAMPLER = SamplerSettings(num_frames=9, height=64, width=64, steps=2, max_sequence_length=48)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    torch.set_num_threads(2)
    return write_tiny_pipeline(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="module")
def pipe(tiny_folder):
    return load_pipeline("tiny", tiny_folder)


def latents_of(folder, stem):
    return load_file(str(folder / "latents" / f"{stem}.safetensors"))["latents"]


def test_tiny_pipeline_folder_is_a_real_pipeline_holding_the_builtin_tiny_transformer(tiny_folder, pipe):
    index = json.loads((tiny_folder / "model_index.json").read_text())
    assert (
        index["_class_name"] == "CogVideoXPipeline"
        and index["transformer"][1] == "CogVideoXTransformer3DModel"
    )
    builtin = get_adapter("tiny").load_transformer(None, torch.float32).state_dict()
    saved = pipe.transformer.state_dict()
    assert saved.keys() == builtin.keys() and all(torch.equal(saved[k], builtin[k]) for k in builtin)
    with pytest.raises(ValueError, match="already holds a pipeline"):
        write_tiny_pipeline(tiny_folder)
    with pytest.raises(ValueError, match="no model_index.json"):
        load_pipeline("tiny", tiny_folder.parent)
    with pytest.raises(ValueError, match="unknown model 'sd15': expected one of"):
        load_pipeline("sd15", tiny_folder)


def test_candidates_save_video_final_latents_and_rows(pipe, tmp_path):
    items = [PromptItem("barn", "a red barn"), PromptItem("bridge", "a stone bridge")]
    summary = generate_candidates(
        pipe, items, tmp_path, seeds=[3, 4], sampler=SAMPLER, model="tiny", batch_size=2, progress=False
    )
    assert (summary.generated, summary.skipped, summary.failed) == (4, 0, [])
    rows = read_jsonl(tmp_path / MANIFEST)
    assert sorted((r["prompt_id"], r["seed"]) for r in rows) == [
        ("barn", 3),
        ("barn", 4),
        ("bridge", 3),
        ("bridge", 4),
    ]
    row = rows[0]
    assert row["prompt"] == "a red barn" and row["model"] == "tiny" and row["sampler"]["steps"] == 2
    frames = read_frames(tmp_path / row["video"])
    assert tuple(frames.shape) == (9, 64, 64, 3)
    latents = latents_of(tmp_path, "barn_s3")
    assert tuple(latents.shape) == (3, 4, 8, 8)  # CogVideoX layout [F, C, H, W]
    # the stored latents are the video's: decoding them gives the saved frames (up to 8-bit rounding)
    decoded = pipe.video_processor.postprocess_video(pipe.decode_latents(latents[None]), output_type="pt")[0]
    assert (decoded - frames.permute(0, 3, 1, 2).float() / 255).abs().max() < 1.5 / 255
    assert not torch.equal(latents, latents_of(tmp_path, "barn_s4"))  # seeds differ


def test_same_seed_same_candidate_and_batching_does_not_change_it(pipe, tmp_path):
    items = [PromptItem("barn", "a red barn"), PromptItem("bridge", "a stone bridge")]
    run = lambda name, its, seeds, batch: generate_candidates(
        pipe,
        its,
        tmp_path / name,
        seeds=seeds,
        sampler=SAMPLER,
        model="tiny",
        batch_size=batch,
        progress=False,
    )
    run("a", items, [0, 1], 3)  # batches [barn 0, barn 1, bridge 0] and [bridge 1]
    run("b", items[1:], [0], 1)
    run("c", items[1:], [0], 1)
    assert torch.equal(latents_of(tmp_path / "b", "bridge_s0"), latents_of(tmp_path / "c", "bridge_s0"))
    torch.testing.assert_close(
        latents_of(tmp_path / "a", "bridge_s0"), latents_of(tmp_path / "b", "bridge_s0"), atol=1e-4, rtol=1e-4
    )
    rows = read_jsonl(tmp_path / "a" / MANIFEST)
    assert [(r["prompt_id"], r["seed"]) for r in rows] == [
        ("barn", 0),
        ("barn", 1),
        ("bridge", 0),
        ("bridge", 1),
    ]
    assert rows[2]["prompt"] == "a stone bridge"


def test_resume_skips_done_candidates_and_refuses_other_settings(pipe, tmp_path):
    items = [PromptItem("barn", "a red barn")]
    generate_candidates(pipe, items, tmp_path, seeds=[0], sampler=SAMPLER, model="tiny", progress=False)
    first = (tmp_path / "videos/barn_s0.mp4").read_bytes()
    with open(tmp_path / MANIFEST, "a") as f:
        f.write('{"video": "videos/barn_s1.mp4", "lat')  # a run killed while appending the next row
    summary = generate_candidates(
        pipe, items, tmp_path, seeds=[0, 1], sampler=SAMPLER, model="tiny", progress=False
    )
    assert (summary.generated, summary.skipped) == (1, 1)
    assert (tmp_path / "videos/barn_s0.mp4").read_bytes() == first
    assert [r["seed"] for r in read_jsonl(tmp_path / MANIFEST)] == [0, 1]
    other = SamplerSettings(num_frames=9, height=64, width=64, steps=3, max_sequence_length=48)
    with pytest.raises(ValueError, match=r"barn_s0 was generated with other \['sampler'\]"):
        generate_candidates(pipe, items, tmp_path, seeds=[0], sampler=other, model="tiny", progress=False)
    with pytest.raises(ValueError, match=r"other \['prompt'\]"):
        generate_candidates(
            pipe,
            [PromptItem("barn", "a blue barn")],
            tmp_path,
            seeds=[0],
            sampler=SAMPLER,
            model="tiny",
            progress=False,
        )
    (tmp_path / "latents/barn_s1.safetensors").unlink()
    with pytest.raises(ValueError, match="barn_s1's latents file .* is missing"):
        generate_candidates(pipe, items, tmp_path, seeds=[1], sampler=SAMPLER, model="tiny", progress=False)


def test_lora_changes_generation_and_scale_zero_is_the_base(tiny_folder, tmp_path):
    transformer = get_adapter("tiny").load_transformer(tiny_folder, torch.float32)
    apply_lora(transformer, rank=4, alpha=4, targets=["to_q", "to_v"])
    with torch.no_grad():
        for name, p in transformer.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.5)
    lora = save_lora_weights(transformer, tmp_path / "lora").parent
    items = [PromptItem("barn", "a red barn")]
    runs = {}
    for name, scale in (("base", None), ("zero", 0.0), ("full", 1.0)):
        pipe = load_pipeline("tiny", tiny_folder)
        if scale is not None:
            attach_lora(pipe, lora, scale)
        generate_candidates(
            pipe,
            items,
            tmp_path / name,
            seeds=[0],
            sampler=SAMPLER,
            model="tiny",
            lora=scale is not None and str(lora) or None,
            lora_scale=scale or 0.0,
            progress=False,
        )
        runs[name] = latents_of(tmp_path / name, "barn_s0")
    torch.testing.assert_close(runs["zero"], runs["base"], atol=1e-5, rtol=1e-5)
    assert (runs["full"] - runs["base"]).abs().max() > 1e-2
    assert read_jsonl(tmp_path / "full" / MANIFEST)[0]["lora"] == str(lora)
    with pytest.raises(ValueError, match="does not exist"):
        attach_lora(load_pipeline("tiny", tiny_folder), tmp_path / "nope")


def test_non_finite_latents_are_reported_not_saved(tiny_folder, tmp_path):
    pipe = load_pipeline("tiny", tiny_folder)
    with torch.no_grad():
        pipe.transformer.proj_out.weight.fill_(float("nan"))
    summary = generate_candidates(
        pipe,
        [PromptItem("barn", "a red barn")],
        tmp_path,
        seeds=[0],
        sampler=SAMPLER,
        model="tiny",
        progress=False,
    )
    assert summary.failed == ["barn_s0"] and summary.generated == 0
    assert not (tmp_path / MANIFEST).exists() and not (tmp_path / "videos/barn_s0.mp4").exists()
    assert read_jsonl(tmp_path / FAILURES)[0]["candidate"] == "barn_s0"


def test_image_to_video_generation_and_missing_images(tmp_path, monkeypatch):
    folder = write_tiny_pipeline(tmp_path / "tiny_i2v", image_to_video=True)
    Image.fromarray((np.random.default_rng(0).random((80, 96, 3)) * 255).astype("uint8")).save(
        tmp_path / "first.png"
    )
    prompts = write_rows(tmp_path / "p.jsonl", [{"prompt": "a kitchen", "image": "first.png", "id": "k"}])
    cfg = GenerationConfig(
        model="cogvideox-i2v",
        pipeline=str(folder),
        prompts=str(prompts),
        num_candidates=2,
        num_frames=9,
        height=64,
        width=64,
        steps=2,
        max_sequence_length=48,
    )
    monkeypatch.chdir(tmp_path)  # a relative prompt file: its image is relative to the working folder
    cfg.prompts = "p.jsonl"
    summary = generate.run(cfg, None, tmp_path / "gen", progress=False)
    assert summary.generated == 2
    row = read_jsonl(tmp_path / "gen" / MANIFEST)[0]
    assert row["image"] == str((tmp_path / "first.png").resolve()) and row["model"] == "cogvideox-i2v"
    # resumes with the same image
    assert generate.run(cfg, None, tmp_path / "gen", progress=False).skipped == 2
    write_rows(prompts, [{"prompt": "a kitchen", "image": "gone.png"}])
    with pytest.raises(ValueError, match=r"p.jsonl:1: field 'image': file .*gone.png does not exist"):
        generate.run(cfg, None, tmp_path / "gen2", progress=False)


def test_recipe_builds_tiny_pipeline_and_generates_camera_motion_prompts(tmp_path, capsys):
    (tmp_path / "p.txt").write_text("a red barn\n")
    argv = [
        "--pipeline",
        str(tmp_path / "tiny"),
        "--build-tiny",
        "--prompts",
        str(tmp_path / "p.txt"),
        "--out-dir",
        str(tmp_path / "gen"),
        "--num-candidates",
        "2",
        "--camera-motion",
        "--steps",
        "2",
        "--num-frames",
        "9",
    ]
    assert load_recipe("generate").main(argv) == 0
    out = capsys.readouterr().out
    assert "wrote the built-in random pipeline" in out and "2 generated" in out
    rows = read_jsonl(tmp_path / "gen" / MANIFEST)
    assert [r["seed"] for r in rows] == candidate_seeds(2, 0)
    assert all(
        r["prompt"].startswith("A completely static scene") and "a red barn" in r["prompt"] for r in rows
    )
    assert load_recipe("generate").main(argv) == 0
    assert "0 generated, 2 already done" in capsys.readouterr().out
