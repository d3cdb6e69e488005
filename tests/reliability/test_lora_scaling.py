"""A trained LoRA loads back at its own strength: every loader call the LoRA module documents gives the
peft layers scale alpha/r and the trained model's output; attach_lora refuses anything but safetensors."""

from __future__ import annotations

import pickle
import re

import pytest
import torch
from diffusers import WanPipeline

from tests.models.model_builders import cond, perturbed, wan_ti2v
from videogpa.engine.models import TINY, adapter_class, get_adapter, lora
from videogpa.engine.models.lora import LORA_WEIGHT_NAME, apply_lora, lora_scalings, save_lora_weights
from videogpa.engine.models.pipelines import attach_lora
from videogpa.engine.types import Conditioning

RANK, ALPHA = 4, 16.0  # alpha ≠ rank: a loader that drops alpha (alpha = r) loads it at a quarter strength


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(trained tiny model, its export folder, inputs, trained output, base output)."""
    adapter = get_adapter("tiny")
    model = perturbed(
        apply_lora(adapter.load_transformer(None, torch.float32), RANK, ALPHA, adapter.default_lora_targets)
    )
    folder = tmp_path_factory.mktemp("lora")
    save_lora_weights(model, folder)
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(2, *TINY.latent_shape, generator=gen)
    inputs = (x, torch.tensor([20, 800]), Conditioning(torch.randn(2, *TINY.text_shape, generator=gen)))
    with torch.no_grad():
        out = adapter.predict(model, *inputs)
        base = adapter.predict(adapter.load_transformer(None, torch.float32), *inputs)
    return model, folder, inputs, out, base


def documented_calls() -> list[str]:
    """The loader calls engine.models.lora's docstring recommends for one transformer (a call written with
    `...` is a warning; the two-expert call is run by tests/models/test_model_wan14b.py on a two-expert
    pipeline)."""
    calls = re.findall(r"(?:pipe|transformer)\.load_lora_\w+\([^()]*\)", lora.__doc__)
    return [c for c in calls if "..." not in c and "load_into_transformer_2" not in c]


def test_the_docstring_documents_loader_calls():
    assert any(c.startswith("pipe.") for c in documented_calls())
    assert any(c.startswith("transformer.") for c in documented_calls())


@pytest.mark.parametrize("call", documented_calls())
def test_every_documented_loader_call_restores_scale_and_output(trained, call):
    model, folder, inputs, out, base = trained
    adapter = get_adapter("tiny")
    pipe = adapter_class("tiny").builtin_pipeline()
    names = {
        "pipe": pipe,
        "transformer": pipe.transformer,
        "folder": str(folder),
        "file": str(folder / LORA_WEIGHT_NAME),
    }
    eval(call, {}, names)  # the call exactly as documented
    assert lora_scalings(pipe.transformer) == lora_scalings(model) == {ALPHA / RANK}, call
    with torch.no_grad():
        loaded = adapter.predict(pipe.transformer, *inputs)
    torch.testing.assert_close(loaded, out)  # fp32 tolerance, not bit equality
    assert (loaded - base).abs().max() > 10 * (loaded - out).abs().max()  # and the LoRA is really on


@pytest.mark.parametrize("which", ["folder", "file"])
def test_attach_lora_restores_scale_and_output(trained, which):
    model, folder, inputs, out, _ = trained
    pipe = adapter_class("tiny").builtin_pipeline()
    attach_lora(pipe, folder if which == "folder" else folder / LORA_WEIGHT_NAME)
    assert lora_scalings(pipe.transformer) == {ALPHA / RANK}
    with torch.no_grad():
        torch.testing.assert_close(get_adapter("tiny").predict(pipe.transformer, *inputs), out)


@pytest.mark.parametrize("source", ["folder", "file"])
def test_wan_pipeline_loader_restores_scale_and_output(tmp_path, source):
    adapter = get_adapter("wan2.2-ti2v")
    torch.manual_seed(0)
    model = perturbed(apply_lora(wan_ti2v(), 2, 8.0, adapter.default_lora_targets))
    path = save_lora_weights(model, tmp_path)
    x, t = torch.randn(1, 4, 3, 8, 8), torch.tensor([400.0])
    torch.manual_seed(0)
    pipe = WanPipeline(tokenizer=None, text_encoder=None, transformer=wan_ti2v(), vae=None, scheduler=None)
    pipe.load_lora_weights(str(tmp_path if source == "folder" else path))
    assert lora_scalings(pipe.transformer) == {8.0 / 2}
    with torch.no_grad():
        torch.testing.assert_close(
            adapter.predict(pipe.transformer, x, t, cond(1)), adapter.predict(model, x, t, cond(1))
        )


class _Marker:
    """Unpickling it creates a file: proof that a loader ran pickle."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


@pytest.mark.parametrize("name", ["pytorch_lora_weights.bin", "lora.pt", "lora"])
def test_attach_lora_refuses_anything_but_safetensors(tmp_path, name):
    marker = tmp_path / "unpickled"
    path = tmp_path / name
    path.write_bytes(pickle.dumps(_Marker(marker)))
    with pytest.raises(ValueError) as err:
        attach_lora(adapter_class("tiny").builtin_pipeline(), path)
    assert re.fullmatch(
        rf"LoRA {re.escape(str(path))}: expected a \.safetensors file; refusing .*", str(err.value)
    )
    assert not marker.exists()


def test_attach_lora_refuses_a_folder_without_the_safetensors_export(tmp_path):
    (tmp_path / "pytorch_lora_weights.bin").write_bytes(pickle.dumps(_Marker(tmp_path / "unpickled")))
    (tmp_path / "other.safetensors").write_bytes(b"")
    with pytest.raises(
        ValueError, match=rf"^LoRA folder {re.escape(str(tmp_path))} holds no {LORA_WEIGHT_NAME}"
    ):
        attach_lora(adapter_class("tiny").builtin_pipeline(), tmp_path)
    assert not (tmp_path / "unpickled").exists()
