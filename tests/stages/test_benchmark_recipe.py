"""recipes/benchmark.py, the authors' benchmark protocol, on the tiny model with a random tiny Depth Anything
3 on a CPU: captions JSON in, base and LoRA videos at one seed, both scored by DA3, the paper's table out."""

import json

import pytest
import torch

from tests.models.model_builders import perturbed
from tests.stages.stage_helpers import load_recipe
from videogpa.engine.geometry.da3 import TINY_CONFIG, random_da3, save_da3
from videogpa.engine.models import get_adapter
from videogpa.engine.models.lora import apply_lora, save_lora_weights
from videogpa.engine.models.tiny import write_tiny_pipeline
from videogpa.engine.stages.benchmark import read_captions


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("benchmark")
    torch.manual_seed(0)
    pipeline = write_tiny_pipeline(root / "pipeline")
    adapter = get_adapter("tiny")
    lora = perturbed(
        apply_lora(adapter.load_transformer(None, torch.float32), 4, 8.0, adapter.default_lora_targets)
    )
    save_lora_weights(lora, root / "lora")
    weights = save_da3(random_da3(TINY_CONFIG), root / "da3_tiny.safetensors")
    captions = root / "captions.json"
    captions.write_text(json.dumps([{"id": "scene-1", "caption": "a room"}, {"caption": "a street at dusk"}]))
    return root, pipeline, weights, captions


def test_the_benchmark_writes_the_papers_table_scored_by_da3(inputs, tmp_path, one_thread):
    root, pipeline, weights, captions = inputs
    out = tmp_path / "bench"
    args = [
        "--model",
        "tiny",
        "--pipeline",
        str(pipeline),
        "--captions",
        str(captions),
        "--lora",
        str(root / "lora"),
    ]
    args += ["--lora-scale", "0.2", "--weights", str(weights), "--num-frames", "3", "--device", "cpu"]
    args += ["--out-dir", str(out)]
    assert load_recipe("benchmark").main(args) == 0
    result = json.loads((out / "evaluation.json").read_text())
    assert result["geometry"]["backend"] == "da3" and result["lora_scale"] == 0.2 and result["seeds"] == [456]
    assert result["prompts"] == 2 and result["videos"] == 2
    manifest = [
        json.loads(line) for line in (out / "eval" / "lora" / "manifest.jsonl").read_text().splitlines()
    ]
    assert {row["prompt_id"] for row in manifest} == {"scene-1", "c00001"}
    assert all(row["seed"] == 456 and row["lora_scale"] == 0.2 for row in manifest)
    table = (out / "evaluation.md").read_text()
    for label in ("PSNR", "SSIM", "LPIPS", "MVCS", "3DCS", "Epi"):
        assert f"| {label} |" in table
    assert "| LPIPS | n/a | n/a |" in table  # no LPIPS weights given: shown as n/a, never blank
    assert "scored by da3 (da3_tiny.safetensors)" in table


def test_captions_in_every_accepted_shape_and_bad_ones_named(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"a/1": "one", "b": "two"}))
    assert read_captions(path) == [("a_1", "one"), ("b", "two")]
    path.write_text(json.dumps(["one", {"prompt": "two", "id": "x"}]))
    assert read_captions(path) == [("c00000", "one"), ("x", "two")]
    for bad, message in (
        ([], "non-empty"),
        ([{"id": 3}], "no caption"),
        (["a", {"caption": "b", "id": "c00000"}], "twice"),
    ):
        path.write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=message):
            read_captions(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="c.json.*not valid JSON"):
        read_captions(path)
