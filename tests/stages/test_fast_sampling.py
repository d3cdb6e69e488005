"""The generation's fast-sampling keys: validated with errors naming the key, each really applied to the
pipeline, the neutral ones leaving the sampled latents bitwise unchanged, the step cache in every row."""

import pytest
import torch
from safetensors.torch import load_file

from videogpa.engine.core.config import GenerationConfig
from videogpa.engine.data.prompts import PromptItem
from videogpa.engine.io.records import read_jsonl
from videogpa.engine.models import get_adapter
from videogpa.engine.models.base import SamplerSettings
from videogpa.engine.models.tiny import build_tiny_pipeline, write_tiny_pipeline
from videogpa.engine.stages import generate
from videogpa.engine.stages.fast_sampling import apply_sampling_options

SAMPLER = SamplerSettings(num_frames=9, height=64, width=64, steps=2, max_sequence_length=16)
TINY = get_adapter("tiny")


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("attention_backend", "fastest", r"'loop.generation.attention_backend': expected one of"),
        ("step_cache", "taylor", r"'loop.generation.step_cache': expected one of \('first_block',\)"),
        ("step_cache_threshold", 0.0, r"'loop.generation.step_cache_threshold': expected a positive value"),
    ],
)
def test_bad_keys_are_errors_naming_them(key, value, message):
    cfg = GenerationConfig(
        **{key: value, **({"step_cache": "first_block"} if key == "step_cache_threshold" else {})}
    )
    with pytest.raises(ValueError, match=message):
        cfg.check("loop.generation")


@pytest.mark.parametrize(
    "options, message",
    [
        (
            {"compile": "no-such-backend"},
            r"'loop.generation.compile': unknown torch.compile backend 'no-such-backend'",
        ),
        (
            {"attention_backend": "cudnn"},
            r"'loop.generation.attention_backend': SDPA's cudnn kernel needs a CUDA",
        ),
        ({"attention_backend": "diffusers:flash"}, r"model 'tiny' calls PyTorch SDPA directly"),
        (
            {"cpu_offload": True},
            r"'loop.generation.cpu_offload': model CPU offload needs a CUDA device, not cpu",
        ),
    ],
)
def test_an_option_the_machine_or_model_lacks_is_a_clear_error(options, message):
    with pytest.raises(ValueError, match=message):
        apply_sampling_options(build_tiny_pipeline(0), TINY, GenerationConfig(**options), "cpu")


def sample(pipe, out_dir):
    items = [PromptItem("barn", "a red barn")]
    generate.generate_candidates(
        pipe, TINY, items, out_dir, seeds=[0, 1], sampler=SAMPLER, model="tiny", batch_size=2, progress=False
    )
    rows = read_jsonl(out_dir / generate.MANIFEST)
    return {r["seed"]: load_file(str(out_dir / r["latents"]))["latents"] for r in rows}


def test_compile_tiling_and_slicing_are_applied_and_leave_the_latents_unchanged(tmp_path):
    torch.set_num_threads(1)
    plain, fast = build_tiny_pipeline(0), build_tiny_pipeline(0)
    apply_sampling_options(
        fast, TINY, GenerationConfig(compile="eager", vae_tiling=True, vae_slicing=True), "cpu"
    )
    assert fast.vae.use_tiling and fast.vae.use_slicing and not plain.vae.use_tiling
    blocks = fast.transformer.transformer_blocks
    assert len(blocks) > 0 and all(b._compiled_call_impl is not None for b in blocks)
    assert all(b._compiled_call_impl is None for b in plain.transformer.transformer_blocks)
    ours, theirs = sample(fast, tmp_path / "fast"), sample(plain, tmp_path / "plain")
    assert ours.keys() == theirs.keys() == {0, 1}
    assert all(torch.equal(ours[s], theirs[s]) for s in ours)


def test_the_step_cache_is_recorded_in_every_row_and_not_mixed_with_plain_samples(tmp_path):
    torch.set_num_threads(1)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red barn\n")
    cfg = GenerationConfig(
        pipeline=str(write_tiny_pipeline(tmp_path / "tiny")),
        num_candidates=2,
        steps=3,
        num_frames=9,
        step_cache="first_block",
        step_cache_threshold=0.2,
        device="cpu",
    )
    pipe = build_tiny_pipeline(0)
    apply_sampling_options(pipe, TINY, cfg, "cpu")
    assert pipe.transformer.is_cache_enabled  # diffusers' cache hooks on the transformer
    generate.run(cfg, prompts, tmp_path / "cached", progress=False)
    rows = read_jsonl(tmp_path / "cached" / generate.MANIFEST)
    assert len(rows) == 2 and all(r["step_cache"] == {"kind": "first_block", "threshold": 0.2} for r in rows)
    plain = GenerationConfig(**{**cfg.__dict__, "step_cache": None})
    with pytest.raises(ValueError, match=r"generated with other \['step_cache'\]"):
        generate.run(plain, prompts, tmp_path / "cached", progress=False)
    generate.run(plain, prompts, tmp_path / "plain", progress=False)
    assert all("step_cache" not in r for r in read_jsonl(tmp_path / "plain" / generate.MANIFEST))
