"""The exported LoRA formats compute what the trained model computes: the ComfyUI-format Wan file through
diffusers' own non-diffusers Wan converter (WanPipeline.load_lora_weights), the CogVideoX one as ComfyUI's
CogVideoX wrapper loads it (CogVideoXPipeline.load_lora_weights), and the merged transformer reloaded with
from_pretrained — each at the LoRA's own scale alpha/r (alpha ≠ r here)."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import CogVideoXPipeline, CogVideoXTransformer3DModel, WanPipeline, WanTransformer3DModel
from safetensors import safe_open

from tests.models.model_builders import cogvideox_t2v, cond, perturbed, wan_ti2v
from videogpa.engine.core.config import Config
from videogpa.engine.models import get_adapter
from videogpa.engine.models.lora import LORA_WEIGHT_NAME, METADATA_KEY, apply_lora, save_lora_weights
from videogpa.engine.models.lora_formats import LoraFile, read_lora
from videogpa.engine.train.exports import INFO_KEY, FinishedRun, write_comfyui, write_diffusers, write_merged

RANK, ALPHA = 4, 16.0  # scale 4: a format that loses alpha loads at a quarter (or 4×) strength
# fp32 (ε ≈ 1.2e-7): the loaders regroup (x·A)·B·s as (x·sA)·B or x·(W + sBA), a reordering whose
# round-off, grown over two small blocks, stays orders of magnitude below 1e-4 of the output; the LoRA's own
# effect is checked to be far larger than this tolerance, so a wrong scale cannot pass.
TOL = dict(rtol=1e-4, atol=1e-5)
FAMILIES = {
    "wan2.2-ti2v": (wan_ti2v, WanPipeline, WanTransformer3DModel, dict(shift=5.0), (2, 4, 3, 8, 8)),
    "cogvideox-t2v": (cogvideox_t2v, CogVideoXPipeline, CogVideoXTransformer3DModel, {}, None),
}


def _inputs(model: str, adapter, transformer):
    gen = torch.Generator().manual_seed(7)
    if model == "cogvideox-t2v":
        c = transformer.config
        shape = (2, 3, c.in_channels, c.sample_height, c.sample_width)
    else:
        shape = FAMILIES[model][4]
    return torch.randn(shape, generator=gen), torch.tensor([100, 700]), cond(2)


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def run(request, tmp_path_factory):
    """(model name, a finished run's view over a trained tiny model, inputs, trained and base outputs)."""
    model = request.param
    build, _, _, kwargs, _ = FAMILIES[model]
    adapter = get_adapter(model, **kwargs)
    root = tmp_path_factory.mktemp(model)
    torch.manual_seed(0)
    build().save_pretrained(root / "base")
    base = adapter.load_transformer(root / "base", torch.float32)
    trained = perturbed(
        apply_lora(
            adapter.load_transformer(root / "base", torch.float32), RANK, ALPHA, adapter.default_lora_targets
        )
    )
    save_lora_weights(trained, root / "run")
    cfg = Config()
    cfg.model.name, cfg.model.path = model, str(root / "base")
    cfg.lora.rank, cfg.lora.alpha, cfg.train.precision = RANK, ALPHA, "fp32"
    finished = FinishedRun(root / "run", cfg, read_lora(root / "run" / LORA_WEIGHT_NAME), None)
    inputs = _inputs(model, adapter, base)
    with torch.no_grad():
        out, base_out = adapter.predict(trained, *inputs), adapter.predict(base, *inputs)
    assert (out - base_out).abs().max() > 1e3 * TOL["atol"]  # the LoRA matters far beyond the tolerance
    return model, finished, inputs, out, root


def _through_pipeline(model: str, root, file, inputs):
    """The file loaded by the family's diffusers pipeline (load_lora_weights), the pipeline's output."""
    _, pipeline, transformer_class, kwargs, _ = FAMILIES[model]
    transformer = transformer_class.from_pretrained(root / "base")
    pipe = pipeline(tokenizer=None, text_encoder=None, vae=None, scheduler=None, transformer=transformer)
    pipe.load_lora_weights(str(file.parent), weight_name=file.name, local_files_only=True)
    with torch.no_grad():
        return get_adapter(model, **kwargs).predict(pipe.transformer, *inputs)


def test_comfyui_file_loads_through_diffusers_converter_at_the_trained_strength(run, tmp_path):
    model, finished, inputs, out, root = run
    info = {"marker": model}
    (path,) = write_comfyui(finished, info, tmp_path)
    with safe_open(str(path), "pt") as f:
        keys, metadata = list(f.keys()), f.metadata()
    assert json.loads(metadata[INFO_KEY]) == info
    if model == "wan2.2-ti2v":
        # ComfyUI's native names and an alpha per module; diffusers' LoRA config dropped (else alpha/r twice)
        assert all(k.startswith("diffusion_model.blocks.") for k in keys)
        assert "diffusion_model.blocks.1.self_attn.o.lora_A.weight" in keys
        assert "diffusion_model.blocks.0.cross_attn.q.alpha" in keys and METADATA_KEY not in metadata
    else:  # ComfyUI's CogVideoX wrapper reads the diffusers names and metadata
        assert all(k.startswith("transformer.transformer_blocks.") for k in keys)
        assert METADATA_KEY in metadata
    torch.testing.assert_close(_through_pipeline(model, root, path, inputs), out, **TOL)


def test_diffusers_file_keeps_its_lora_config_and_loads_at_the_trained_strength(run, tmp_path):
    model, finished, inputs, out, root = run
    (path,) = write_diffusers(finished, {"marker": 1}, tmp_path)
    lora = read_lora(path)
    assert (lora.rank, lora.alpha) == (RANK, ALPHA) and json.loads(lora.metadata[INFO_KEY]) == {"marker": 1}
    torch.testing.assert_close(_through_pipeline(model, root, path, inputs), out, **TOL)


def test_merged_transformer_reloads_with_from_pretrained_as_base_plus_lora(run, tmp_path):
    model, finished, inputs, out, _ = run
    _, _, transformer_class, kwargs, _ = FAMILIES[model]
    (folder,) = write_merged(finished, {"marker": 2}, tmp_path)
    assert json.loads((tmp_path / f"{folder.name}.json").read_text()) == {"marker": 2}
    merged = transformer_class.from_pretrained(folder)
    assert not any("lora" in name for name, _ in merged.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(get_adapter(model, **kwargs).predict(merged, *inputs), out, **TOL)


def test_a_module_comfyui_cannot_name_for_wan_is_refused():
    lora = LoraFile(
        {
            "transformer.proj_out.lora_A.weight": torch.zeros(RANK, 8),
            "transformer.proj_out.lora_B.weight": torch.zeros(8, RANK),
        },
        RANK,
        ALPHA,
        {},
    )
    with pytest.raises(ValueError, match=r"'proj_out' has no ComfyUI name for model 'wan2.2-ti2v'"):
        get_adapter("wan2.2-ti2v", shift=5.0).comfyui_lora_keys(lora)
