"""Wan 2.1 T2V / I2V and Wan 2.2 A14B adapters: per-sample timesteps, the I2V pipeline's conditioning, expert
routing by timestep, a LoRA DPO step each, and the two-expert LoRA export in diffusers' Wan pipeline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from diffusers import WanPipeline, WanTransformer3DModel

from tests.models import model_builders as builders
from videogpa.engine.models import get_adapter
from videogpa.engine.models.lora import (
    LORA_WEIGHT_NAME,
    apply_lora,
    enable_gradient_checkpointing,
    save_lora_weights,
)
from videogpa.engine.models.pipelines import attach_lora
from videogpa.engine.models.wan22_a14b import WanExperts
from videogpa.engine.runtime.distributed import child_env
from videogpa.engine.train import reference as R
from videogpa.engine.train.dpo_step import LossSettings, build_inputs, dpo_forward
from videogpa.engine.types import Conditioning

SECOND = "pytorch_lora_weights_transformer_2.safetensors"
TOL = dict(rtol=1e-4, atol=1e-5)  # fp32 regroupings of (x·A)·B·s, far below the LoRA's own effect


def _long_text(batch: int) -> torch.Tensor:
    """512 text tokens: Wan's image cross-attention splits its context at 512 text tokens."""
    return torch.randn(batch, 512, builders.TEXT_DIM, generator=torch.Generator().manual_seed(2))


def _image_cond(batch: int, frames: int = 3, embeds: bool = True, size: int = 8) -> Conditioning:
    gen = torch.Generator().manual_seed(5)
    image = torch.randn(batch, 4, frames, size, size, generator=gen)
    clip = torch.randn(batch, builders.IMAGE_LEN, builders.IMAGE_DIM, generator=gen) if embeds else None
    return Conditioning(_long_text(batch), image, clip)


def _pipeline_mask(batch: int, num_frames: int, h: int, w: int) -> torch.Tensor:
    """The mask as WanImageToVideoPipeline.prepare_latents builds it from pixel frames (4 per latent
    frame)."""
    mask = torch.ones(batch, 1, num_frames, h, w)
    mask[:, :, 1:] = 0
    mask = torch.cat([mask[:, :, :1].repeat_interleave(4, dim=2), mask[:, :, 1:]], dim=2)
    return mask.view(batch, -1, 4, h, w).transpose(1, 2)


def test_wan21_t2v_takes_one_timestep_per_sample():
    adapter, model = get_adapter("wan2.1-t2v", shift=3.0), builders.wan_ti2v()
    x, t = torch.randn(2, 4, 3, 8, 8), torch.tensor([100.0, 800.0])
    with torch.no_grad():
        pred = adapter.predict(model, x, t, builders.cond(2))
        direct = model(
            hidden_states=x, timestep=t, encoder_hidden_states=builders.text(2), return_dict=False
        )[0]
    torch.testing.assert_close(pred, direct)
    assert adapter.loss_mask(x, builders.cond(2)) is None
    with pytest.raises(ValueError, match="image_latents.*text-to-video"):
        adapter.predict(model, x, t, builders.cond(2, torch.randn(2, 4, 1, 8, 8)))


def test_wan21_i2v_input_is_latents_mask_and_image_latents_with_clip_embeddings():
    adapter, model = get_adapter("wan2.1-i2v", shift=3.0), builders.wan21_i2v()
    x, t, c = torch.randn(2, 4, 3, 8, 8), torch.tensor([300.0, 700.0]), _image_cond(2)
    with torch.no_grad():
        pred = adapter.predict(model, x, t, c)
        # independent construction: the pipeline's mask of 9 pixel frames, concatenated on channels
        hidden = torch.cat([x, _pipeline_mask(2, 9, 8, 8), c.image_latents], dim=1)
        direct = model(
            hidden_states=hidden,
            timestep=t,
            encoder_hidden_states=c.text_embeds,
            encoder_hidden_states_image=c.image_embeds,
            return_dict=False,
        )[0]
        torch.testing.assert_close(pred, direct)
        other = Conditioning(c.text_embeds, c.image_latents, c.image_embeds + 1)
        assert not torch.allclose(adapter.predict(model, x, t, other), pred)  # the CLIP embeddings are used
    assert pred.shape == x.shape and adapter.loss_mask(x, c) is None  # every frame counts


def test_wan_i2v_shape_errors():
    adapter, model = get_adapter("wan2.1-i2v", shift=3.0), builders.wan21_i2v()
    x, t, c = torch.randn(2, 4, 3, 8, 8), torch.tensor([300.0, 700.0]), _image_cond(2)
    first_only = Conditioning(c.text_embeds, c.image_latents[:, :, :1], c.image_embeds)
    with pytest.raises(ValueError, match=r"image_latents: expected \[B, C, F, H, W\]"):
        adapter.predict(model, x, t, first_only)
    with pytest.raises(ValueError, match="image_embeds: expected CLIP image embeddings"):
        adapter.predict(model, x, t, Conditioning(c.text_embeds, c.image_latents))
    with pytest.raises(ValueError, match="expected 512"):
        adapter.predict(model, x, t, Conditioning(builders.text(2), c.image_latents, c.image_embeds))
    with pytest.raises(ValueError, match="fewer latent channels"):
        adapter.predict(model, torch.randn(2, 8, 3, 8, 8), t, c)
    a14b = get_adapter("wan2.2-i2v-a14b", shift=5.0)
    with pytest.raises(ValueError, match="no image_dim"):
        a14b.predict(builders.wan_experts(i2v=True), x, t, c)


def test_i2v_image_latents_match_the_wan_i2v_pipeline():
    """PipelineEncoder's image condition and the adapter's mask equal
    WanImageToVideoPipeline.prepare_latents'."""
    from diffusers import AutoencoderKLWan, WanImageToVideoPipeline

    from videogpa.engine.models.pipeline_encoder import PipelineEncoder
    from videogpa.engine.models.wan21 import I2V_LATENTS, first_frame_mask

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
    )
    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(3))
    encoder = PipelineEncoder(pipe, I2V_LATENTS, 16)
    ours = encoder.encode_image(image, num_frames=9)
    _, theirs = pipe.prepare_latents(
        image[None] * 2 - 1, 1, 4, 32, 32, 9, torch.float32, "cpu", torch.Generator().manual_seed(0)
    )
    assert tuple(ours.shape) == (4, 3, 4, 4) and tuple(theirs.shape) == (1, 8, 3, 4, 4)
    torch.testing.assert_close(ours, theirs[0, 4:], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(first_frame_mask(ours[None], 4), theirs[:, :4])
    assert not encoder.has_image_encoder
    with pytest.raises(ValueError, match="num_frames"):
        encoder.encode_image(image)


def test_image_embeds_are_the_pipelines_clip_states():
    from diffusers import AutoencoderKLWan, WanImageToVideoPipeline
    from PIL import Image
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    from videogpa.engine.models.pipeline_encoder import PipelineEncoder
    from videogpa.engine.models.wan21 import I2V_LATENTS

    torch.manual_seed(0)
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
    vae = AutoencoderKLWan(base_dim=4, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1)
    pipe = WanImageToVideoPipeline(
        tokenizer=None,
        text_encoder=None,
        vae=vae,
        scheduler=None,
        image_processor=processor,
        image_encoder=clip,
        transformer=None,
    )
    encoder = PipelineEncoder(pipe, I2V_LATENTS, 16)
    pixels = torch.randint(0, 256, (40, 48, 3), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    ours = encoder.encode_image_embeds(pixels.permute(2, 0, 1).float() / 255)
    with torch.no_grad():
        theirs = pipe.encode_image(Image.fromarray(pixels.numpy()), "cpu")
    assert encoder.has_image_encoder and tuple(ours.shape) == (17, 16)  # 4×4 patches + the class token
    torch.testing.assert_close(ours, theirs[0])


def _expert_calls(experts: WanExperts) -> list[tuple[str, int]]:
    calls = []
    for name, expert in experts.components():
        expert.register_forward_pre_hook(
            lambda m, args, kwargs, name=name: calls.append((name, kwargs["hidden_states"].shape[0])),
            with_kwargs=True,
        )
    return calls


def test_a14b_routes_each_sample_to_the_expert_of_its_timestep():
    adapter, experts = get_adapter("wan2.2-t2v-a14b", shift=12.0), builders.wan_experts(boundary_ratio=0.875)
    assert experts.boundary == 875.0
    calls = _expert_calls(experts)
    x, c = torch.randn(3, 4, 3, 8, 8), builders.cond(3)
    t = torch.tensor([950.0, 100.0, 875.0])  # high, low, exactly at the boundary (high, as the pipeline)
    with torch.no_grad():
        pred = adapter.predict(experts, x, t, c)
        for i, expert in enumerate([experts.transformer, experts.transformer_2, experts.transformer]):
            alone = expert(
                hidden_states=x[i : i + 1],
                timestep=t[i : i + 1],
                encoder_hidden_states=c.text_embeds[i : i + 1],
                return_dict=False,
            )[0]
            torch.testing.assert_close(pred[i : i + 1], alone, atol=1e-5, rtol=1e-5)
    assert calls[:2] == [("transformer", 2), ("transformer_2", 1)]
    calls.clear()
    with torch.no_grad():
        adapter.predict(experts, x[:1], t[:1], Conditioning(c.text_embeds[:1]))
    assert calls == [("transformer", 1)]  # one process, no gradients: the other expert is not run
    calls.clear()
    high = adapter.predict(experts, x[:1], t[:1], Conditioning(c.text_embeds[:1]))
    torch.testing.assert_close(high.detach(), pred[:1])
    high.square().mean().backward()
    # with gradients, the trainable idle expert runs on a one-frame slice: zero gradients, but gradients
    assert calls == [("transformer", 1), ("transformer_2", 1)]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in experts.transformer.blocks.parameters())
    assert all(p.grad is not None and not p.grad.any() for p in experts.transformer_2.parameters())


def test_a14b_loads_both_experts_and_the_boundary_from_the_pipeline_folder(tmp_path):
    experts = builders.wan_experts()
    for name, expert in experts.components():
        expert.save_pretrained(tmp_path / name)
    (tmp_path / "model_index.json").write_text(
        json.dumps({"_class_name": "WanPipeline", "boundary_ratio": 0.9})
    )
    (tmp_path / "scheduler").mkdir()
    (tmp_path / "scheduler" / "scheduler_config.json").write_text(json.dumps({"flow_shift": 12.0}))
    adapter = get_adapter("wan2.2-t2v-a14b", path=tmp_path)
    assert adapter.shift == 12.0
    for path in (tmp_path, tmp_path / "transformer"):
        loaded = adapter.load_transformer(path, torch.float32)
        assert isinstance(loaded, WanExperts) and loaded.boundary == 900.0
        for (_, a), (_, b) in zip(loaded.components(), experts.components()):
            assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline"}))
    with pytest.raises(ValueError, match="boundary_ratio"):
        adapter.load_transformer(tmp_path, torch.float32)
    with pytest.raises(ValueError, match="model_index.json"):
        adapter.load_transformer(tmp_path / "transformer" / "nowhere", torch.float32)
    with pytest.raises(ValueError, match="differ in"):
        WanExperts.of(builders.wan_ti2v(), builders.wan22_i2v_expert(), 0.9)


CASES = {
    "wan2.1-t2v": (builders.wan_ti2v, lambda p: builders.cond(p)),
    "wan2.1-i2v": (builders.wan21_i2v, lambda p: _image_cond(p)),
    "wan2.2-t2v-a14b": (lambda: builders.wan_experts(boundary_ratio=0.6), lambda p: builders.cond(p)),
    "wan2.2-i2v-a14b": (
        lambda: builders.wan_experts(i2v=True, boundary_ratio=0.6),
        lambda p: _image_cond(p, embeds=False),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_lora_dpo_step(name):
    build, make_cond = CASES[name]
    adapter, model, pairs = get_adapter(name, shift=3.0), build(), 4
    apply_lora(model, 4, 8.0, list(adapter.default_lora_targets))
    blocks = adapter.transformer_blocks(model)
    assert len(blocks) == (4 if isinstance(model, WanExperts) else 2)  # both experts' blocks are checkpointed
    enable_gradient_checkpointing(model)
    builders.perturbed(model)
    gen = torch.Generator().manual_seed(7)
    w, lo = torch.randn(2, pairs, 4, 3, 8, 8, generator=gen)
    inputs = build_inputs(
        adapter,
        w,
        lo,
        make_cond(pairs),
        torch.arange(pairs),
        torch.zeros(pairs, dtype=torch.long),
        0,
        torch.device("cpu"),
        torch.float32,
    )
    out = dpo_forward(adapter, model, R.AdaptersOff(adapter, model), inputs, LossSettings(beta=500.0))
    assert torch.isfinite(out.loss)
    out.loss.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n, _ in trainable)
    used = {"transformer.": True, "transformer_2.": True}
    if isinstance(model, WanExperts):
        high = inputs.timesteps >= model.boundary
        used = {"transformer.": bool(high.any()), "transformer_2.": bool((~high).any())}
        assert all(used.values())  # these draws give both experts samples
    for n, p in trainable:
        expert_used = next((u for prefix, u in used.items() if n.startswith(prefix)), True)
        got = p.grad is not None and bool(p.grad.abs().sum() > 0)
        assert got == expert_used, n


def _pipe_with(experts: WanExperts) -> WanPipeline:
    return WanPipeline(
        tokenizer=None,
        text_encoder=None,
        vae=None,
        scheduler=None,
        transformer=experts.transformer,
        transformer_2=experts.transformer_2,
        boundary_ratio=experts.config.boundary_ratio,
    )


def test_a14b_lora_export_loads_into_both_experts_of_the_wan_pipeline(tmp_path):
    adapter = get_adapter("wan2.2-t2v-a14b", shift=12.0)
    model = builders.perturbed(apply_lora(builders.wan_experts(), 2, 4.0, list(adapter.default_lora_targets)))
    assert save_lora_weights(model, tmp_path) == tmp_path / LORA_WEIGHT_NAME
    assert (tmp_path / SECOND).is_file()
    x, c = torch.randn(2, 4, 3, 8, 8), builders.cond(2)
    t = torch.tensor([950.0, 100.0])
    call = lambda m, i: m(
        hidden_states=x[i : i + 1],
        timestep=t[i : i + 1],
        encoder_hidden_states=c.text_embeds[i : i + 1],
        return_dict=False,
    )[0]
    with torch.no_grad():
        trained = adapter.predict(model, x, t, c)
        base_pipe, lora_pipe = _pipe_with(builders.wan_experts()), _pipe_with(builders.wan_experts())
        base = [call(base_pipe.transformer, 0), call(base_pipe.transformer_2, 1)]
        # diffusers' own calls: the first file into `transformer`, the second with load_into_transformer_2
        lora_pipe.load_lora_weights(str(tmp_path), adapter_name="dpo")
        lora_pipe.load_lora_weights(
            str(tmp_path), weight_name=SECOND, adapter_name="dpo", load_into_transformer_2=True
        )
        loaded = [call(lora_pipe.transformer, 0), call(lora_pipe.transformer_2, 1)]
        for i in range(2):
            torch.testing.assert_close(loaded[i], trained[i : i + 1], atol=1e-5, rtol=1e-5)
            assert not torch.allclose(loaded[i], base[i], atol=1e-3)
        lora_pipe.set_adapters(["dpo"], [0.0])
        for i, expert in enumerate([lora_pipe.transformer, lora_pipe.transformer_2]):
            torch.testing.assert_close(call(expert, i), base[i], atol=1e-6, rtol=1e-6)
        # the project's loader (generation with a trained LoRA) finds and loads the second file too
        ours = _pipe_with(builders.wan_experts())
        attach_lora(ours, tmp_path, scale=1.0)
        torch.testing.assert_close(call(ours.transformer_2, 1), loaded[1], atol=1e-6, rtol=1e-6)
        with pytest.raises(ValueError, match="no transformer_2"):
            attach_lora(
                WanPipeline(
                    tokenizer=None,
                    text_encoder=None,
                    vae=None,
                    scheduler=None,
                    transformer=builders.wan_ti2v(),
                ),
                tmp_path,
            )


@pytest.mark.slow
def test_a14b_under_zero3_on_two_ranks_every_rank_runs_the_experts_any_rank_needs(tmp_path):
    """Rank 0 has only a high-noise sample, rank 1 only a low-noise one: under ZeRO-3 both ranks run both
    experts in the same order (no hang), and each rank's prediction equals the one-process one."""
    repo = Path(__file__).resolve().parents[2]
    torchrun = Path(sys.executable).parent / "torchrun"
    env = child_env(OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu", PYTHONPATH=str(repo))
    port = str(29500 + os.getpid() % 2000)
    done = subprocess.run(
        [
            str(torchrun),
            "--nproc-per-node",
            "2",
            "--master-port",
            port,
            str(repo / "tests" / "models" / "wan_experts_ranks.py"),
            str(tmp_path),
        ],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    for rank in range(2):
        result = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert result["ran"] == ["transformer", "transformer_2"] * 2  # reference pass, then the policy pass
        torch.testing.assert_close(
            torch.tensor(result["pred"]), torch.tensor(result["alone"]), atol=1e-5, rtol=1e-5
        )


def test_a14b_run_exports_every_format_for_both_experts(tmp_path):
    """export_run on a two-expert run: the diffusers, ComfyUI and merged exports of each expert compute what
    that trained expert computes (ComfyUI's through diffusers' non-diffusers Wan converter)."""
    import yaml

    from videogpa.engine.train.exports import export_run

    adapter = get_adapter("wan2.2-t2v-a14b", shift=12.0)
    base = builders.wan_experts()
    for name, expert in base.components():
        expert.save_pretrained(tmp_path / "model" / name)
    (tmp_path / "model" / "model_index.json").write_text(json.dumps({"boundary_ratio": 0.875}))
    trained = builders.perturbed(
        apply_lora(builders.wan_experts(), 2, 4.0, list(adapter.default_lora_targets))
    )
    save_lora_weights(trained, tmp_path / "run")
    config = {
        "model": {"name": "wan2.2-t2v-a14b", "path": str(tmp_path / "model")},
        "lora": {"rank": 2, "alpha": 4.0},
        "train": {"precision": "fp32"},
        "data": {"train": str(tmp_path)},
    }
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump(config))
    paths = export_run(tmp_path / "run", ["diffusers", "comfyui", "merged"], out=tmp_path / "out")
    out = tmp_path / "out"
    assert [p.name for p in paths] == [
        LORA_WEIGHT_NAME,
        SECOND,
        "comfyui_lora.safetensors",
        "comfyui_lora_transformer_2.safetensors",
        "transformer_merged",
        "transformer_merged_transformer_2",
    ]
    x, c, t = torch.randn(1, 4, 3, 8, 8), builders.cond(1), torch.tensor([500.0])
    call = lambda m: m(hidden_states=x, timestep=t, encoder_hidden_states=c.text_embeds, return_dict=False)[0]
    with torch.no_grad():
        expected = [call(expert) for _, expert in trained.components()]
        for i, folder in enumerate(paths[4:]):
            torch.testing.assert_close(
                call(WanTransformer3DModel.from_pretrained(folder)), expected[i], **TOL
            )
        for first, second in (paths[0:2], paths[2:4]):  # the diffusers files, the ComfyUI files
            pipe = _pipe_with(builders.wan_experts())
            pipe.load_lora_weights(str(out), weight_name=first.name)
            pipe.load_lora_weights(str(out), weight_name=second.name, load_into_transformer_2=True)
            torch.testing.assert_close(call(pipe.transformer), expected[0], **TOL)
            torch.testing.assert_close(call(pipe.transformer_2), expected[1], **TOL)
    (tmp_path / "run" / SECOND).unlink()
    with pytest.raises(ValueError, match="holds no pytorch_lora_weights_transformer_2"):
        export_run(tmp_path / "run", ["diffusers"], out=tmp_path / "out2")


def _a14b_run_inputs(root: Path) -> tuple[Path, Path]:
    """A two-expert pipeline folder (transformers, model_index.json, scheduler config) and 8 preference
    pairs."""
    from videogpa.engine.data.preference import PreferenceShardWriter

    folder = root / "model"
    for name, expert in builders.wan_experts(boundary_ratio=0.6).components():
        expert.save_pretrained(folder / name)
    (folder / "model_index.json").write_text(
        json.dumps({"_class_name": "WanPipeline", "boundary_ratio": 0.6})
    )
    (folder / "scheduler").mkdir()
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps({"flow_shift": 3.0}))
    gen = torch.Generator().manual_seed(0)
    with PreferenceShardWriter(root / "pairs", shard_size=4) as writer:
        for i in range(8):
            w, lo = torch.randn(2, 4, 3, 8, 8, generator=gen)
            writer.add(
                f"p{i}", w, lo, torch.randn(builders.TEXT_LEN, builders.TEXT_DIM, generator=gen), 1.0, 0.0
            )
    return folder, root / "pairs"


@pytest.mark.slow
def test_a14b_trains_resumes_and_exports_both_experts_under_deepspeed(tmp_path):
    """The trainer (ZeRO-3, one CPU rank) on Wan 2.2 A14B: a killed and resumed run equals the uninterrupted
    one, and both experts' LoRA files are written (the high-noise expert's and the low-noise one's)."""
    from safetensors.torch import load_file

    from tests.trainer.trainer_helpers import tiny_config
    from videogpa.engine.train.run_logs import read_metrics
    from videogpa.engine.train.trainer import Trainer

    folder, pairs = _a14b_run_inputs(tmp_path)
    sections = dict(
        model={"name": "wan2.2-t2v-a14b", "path": str(folder), "gradient_checkpointing": True},
        data={"synthetic": None, "train": str(pairs)},
        train={"max_steps": 4, "checkpoint_every": 2},
        eval={"draws": 1, "batch_size": 4, "plot": False},
    )
    full, killed = tmp_path / "full", tmp_path / "killed"
    result = Trainer(tiny_config(full, **sections)).run()
    records = read_metrics(full)
    assert len(records) == 4 and all(torch.isfinite(torch.tensor(r["loss"])) for r in records)
    assert Trainer(tiny_config(killed, **sections)).run(stop_after=3) is None
    assert Trainer(tiny_config(killed, **sections), resume=True).run() == result
    compared = lambda out: [(r["step"], r["loss"], r["grad_norm"]) for r in read_metrics(out)]
    assert compared(killed) == compared(full)
    for name in (LORA_WEIGHT_NAME, SECOND):
        a, b = (load_file(str(d / name)) for d in (full, killed))
        assert a and a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        assert any(v.abs().sum() > 0 for k, v in a.items() if "lora_B" in k)  # trained away from zero


def test_shards_carry_image_embeds_to_the_step_and_name_what_is_missing(tmp_path):
    from videogpa.engine.data.preference import (
        INDEX_NAME,
        PreferenceDataset,
        PreferenceShardWriter,
        check_preference_set,
        collate_pairs,
    )

    gen = torch.Generator().manual_seed(0)
    latents = lambda: torch.randn(4, 3, 8, 8, generator=gen)
    embeds = [torch.randn(builders.IMAGE_LEN, builders.IMAGE_DIM, generator=gen) for _ in range(3)]
    with PreferenceShardWriter(tmp_path / "set", shard_size=2) as writer:
        for i in range(3):
            writer.add(
                f"p{i}",
                latents(),
                latents(),
                _long_text(1)[0],
                1.0,
                0.0,
                latents(),
                embeds[i] if i < 2 else None,
            )
    data = PreferenceDataset(tmp_path / "set")
    assert [r.get("has_image_embeds", False) for r in data.records] == [True, True, False]
    assert torch.equal(data[1].image_embeds, embeds[1]) and data[2].image_embeds is None
    batch = collate_pairs([data[0], data[1]])
    assert torch.equal(batch.cond.image_embeds, torch.stack(embeds[:2]))
    inputs = build_inputs(
        get_adapter("wan2.1-i2v", shift=3.0),
        batch.latents_w,
        batch.latents_l,
        batch.cond,
        torch.arange(2),
        torch.zeros(2, dtype=torch.long),
        0,
        torch.device("cpu"),
        torch.bfloat16,
    )
    assert inputs.cond.image_embeds.shape == (4, builders.IMAGE_LEN, builders.IMAGE_DIM)  # [w; l]
    assert inputs.cond.image_embeds.dtype == torch.bfloat16
    assert torch.equal(inputs.cond.image_embeds[2:].float(), inputs.cond.image_embeds[:2].float())
    with pytest.raises(ValueError, match="some pairs have image_embeds and some do not"):
        collate_pairs([data[0], data[2]])
    with pytest.raises(ValueError, match=r"pair_id 'p2'.*'image_embeds' is absent, but in pair 0"):
        check_preference_set(data)
    index = tmp_path / "set" / INDEX_NAME
    rows = [json.loads(line) for line in index.read_text().splitlines()]
    rows[2]["has_image_embeds"] = True  # the index promises embeddings the shard does not hold
    index.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match=r"pair_id 'p2'.*missing key 2/image_embeds"):
        PreferenceDataset(tmp_path / "set")
    rows[2]["has_image_embeds"] = "yes"
    index.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match="'has_image_embeds' must be a bool"):
        PreferenceDataset(tmp_path / "set")


def test_wan21_i2v_lora_loads_into_the_i2v_pipeline_and_scale_0_restores_it(tmp_path):
    from diffusers import WanImageToVideoPipeline

    adapter = get_adapter("wan2.1-i2v", shift=3.0)
    torch.manual_seed(0)
    model = builders.perturbed(apply_lora(builders.wan21_i2v(), 2, 4.0, list(adapter.default_lora_targets)))
    save_lora_weights(model, tmp_path)
    x, t, c = torch.randn(1, 4, 3, 8, 8), torch.tensor([600.0]), _image_cond(1)
    torch.manual_seed(0)
    pipe = WanImageToVideoPipeline(
        tokenizer=None,
        text_encoder=None,
        vae=None,
        scheduler=None,
        image_processor=None,
        image_encoder=None,
        transformer=builders.wan21_i2v(),
    )
    with torch.no_grad():
        base = adapter.predict(pipe.transformer, x, t, c)
        attach_lora(pipe, tmp_path, scale=1.0)
        loaded = adapter.predict(pipe.transformer, x, t, c)
        torch.testing.assert_close(loaded, adapter.predict(model, x, t, c), **TOL)
        assert not torch.allclose(loaded, base, atol=1e-3)
        pipe.set_adapters(["videogpa"], [0.0])
        torch.testing.assert_close(adapter.predict(pipe.transformer, x, t, c), base, atol=1e-6, rtol=1e-6)


def test_trained_weights_of_both_experts_are_exported(tmp_path):
    """The trainer's final export: one LoRA file per expert, or (full fine-tuning) one diffusers folder
    each."""
    from videogpa.engine.models.lora import export_trained_weights

    adapter = get_adapter("wan2.2-i2v-a14b", shift=5.0)
    full = builders.wan_experts(i2v=True)
    export_trained_weights(full, tmp_path / "full", lora=False)
    for name, expert in full.components():
        reloaded = WanTransformer3DModel.from_pretrained(tmp_path / "full" / name)
        assert all(torch.equal(p, q) for p, q in zip(reloaded.parameters(), expert.parameters()))
    lora = builders.perturbed(
        apply_lora(builders.wan_experts(i2v=True), 2, 4.0, list(adapter.default_lora_targets))
    )
    export_trained_weights(lora, tmp_path / "lora", lora=True)
    assert sorted(p.name for p in (tmp_path / "lora").iterdir()) == [LORA_WEIGHT_NAME, SECOND]


@pytest.mark.slow
def test_sequence_parallel_split_equals_unsplit_for_the_new_wan_families():
    """2 gloo ranks, 27 video tokens split unevenly: Wan 2.1 T2V / I2V (CLIP, 512 text tokens) and Wan 2.2
    A14B (both experts busy; one idle, on its one-frame slice) give the unsplit loss, logits and LoRA
    gradients."""
    families = ["wan2.1-t2v", "wan2.1-i2v", "wan2.2-t2v-a14b", "wan2.2-t2v-a14b-idle"]
    repo = Path(__file__).resolve().parents[2]
    env = child_env(OMP_NUM_THREADS="1", PYTHONPATH=str(repo))
    cmd = [
        str(Path(sys.executable).parent / "torchrun"),
        "--nproc-per-node",
        "2",
        "--master-port",
        str(29500 + (os.getpid() + 1) % 2000),
        "-m",
        "tests.models.wan14b_sp_worker",
        *families,
    ]
    done = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    for family in families:  # (the two ranks' lines may interleave)
        assert all(f"ok {family} @{r}" in done.stdout for r in range(2)), (family, done.stdout[-2000:])


def test_lora_on_one_expert_trains_exports_and_loads_only_that_expert(tmp_path):
    """lora.experts: [transformer_2]: LoRA layers and gradients in the low-noise expert only, one exported
    file (the second expert's), which the project's loader puts into the pipeline's transformer_2; scale 0
    restores."""
    from videogpa.engine.models.lora import trained_lora_file

    adapter = get_adapter("wan2.2-t2v-a14b", shift=12.0)
    model = apply_lora(
        builders.wan_experts(), 2, 4.0, list(adapter.default_lora_targets), components=["transformer_2"]
    )
    builders.perturbed(model)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("transformer_2.") and "lora_" in n for n in trainable)
    x, c, t = torch.randn(2, 4, 3, 8, 8), builders.cond(2), torch.tensor([950.0, 100.0])
    adapter.predict(model, x, t, c).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters() if p.requires_grad)
    assert save_lora_weights(model, tmp_path) == tmp_path / SECOND
    assert not (tmp_path / LORA_WEIGHT_NAME).exists() and trained_lora_file(tmp_path) == tmp_path / SECOND
    call = lambda m, i: m(
        hidden_states=x[i : i + 1],
        timestep=t[i : i + 1],
        encoder_hidden_states=c.text_embeds[i : i + 1],
        return_dict=False,
    )[0]
    with torch.no_grad():
        trained = adapter.predict(model, x, t, c)
        pipe, base = _pipe_with(builders.wan_experts()), _pipe_with(builders.wan_experts())
        attach_lora(pipe, tmp_path, scale=1.0)
        torch.testing.assert_close(call(pipe.transformer_2, 1), trained[1:], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(call(pipe.transformer, 0), call(base.transformer, 0))  # untouched expert
        assert not torch.allclose(call(pipe.transformer_2, 1), call(base.transformer_2, 1), atol=1e-3)
        zero = _pipe_with(builders.wan_experts())
        attach_lora(zero, tmp_path, scale=0.0)
        torch.testing.assert_close(
            call(zero.transformer_2, 1), call(base.transformer_2, 1), atol=1e-6, rtol=1e-6
        )
    with pytest.raises(ValueError, match="lora components"):
        apply_lora(builders.wan_experts(), 2, 4.0, ["to_q"], components=["transformer_3"])


def test_lora_experts_config_names_the_components_it_allows(tmp_path):
    from videogpa.engine.core.config_loading import config_from_dict

    base = {"output_dir": str(tmp_path), "data": {"train": str(tmp_path)}}
    config_from_dict({**base, "model": {"name": "wan2.2-t2v-a14b"}, "lora": {"experts": ["transformer_2"]}})
    for name, experts in (
        ("wan2.2-t2v-a14b", ["transformer_3"]),
        ("wan2.2-t2v-a14b", []),
        ("cogvideox-t2v", ["transformer_2"]),
    ):
        with pytest.raises(ValueError, match="lora.experts"):
            config_from_dict({**base, "model": {"name": name}, "lora": {"experts": experts}})
