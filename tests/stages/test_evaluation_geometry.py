"""The evaluation's geometry model can differ from the pairs' (the authors: VGGT-1B for pairs, Depth Anything
3 for the benchmark): `auto` picks the backend a weights file holds, loop.evaluate.score builds the
evaluation's scorer, and the table says which model made its columns."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from videogpa.engine.geometry.da3 import TINY_CONFIG as DA3_TINY
from videogpa.engine.geometry.da3 import random_da3, save_da3
from videogpa.engine.geometry.registry import detect_backend
from videogpa.engine.geometry.vggt import TINY_CONFIG as VGGT_TINY
from videogpa.engine.geometry.vggt import random_vggt, save_vggt
from videogpa.engine.loop.loop import Loop
from videogpa.engine.loop.loop_config import load_loop_config
from videogpa.engine.stages.evaluate import format_table, geometry_description

REPO_RECIPES = Path(__file__).resolve().parents[2] / "recipes"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("geometry")
    torch.manual_seed(0)
    vggt = save_vggt(random_vggt(VGGT_TINY), folder / "vggt.safetensors")
    da3 = save_da3(random_da3(DA3_TINY), folder / "da3.safetensors")
    return vggt, da3


def test_auto_detects_the_backend_from_the_weights(weights, tmp_path):
    vggt, da3 = weights
    assert detect_backend(vggt) == "vggt" and detect_backend(da3) == "da3"
    hub = tmp_path / "hub"
    hub.mkdir()
    save_file({"model.backbone.pretrained.cls_token": torch.zeros(1, 1, 4)}, str(hub / "model.safetensors"))
    assert detect_backend(hub) == "da3"  # a folder with the hub's `model.` prefix
    save_file({"encoder.weight": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="other.safetensors.*neither VGGT"):
        detect_backend(tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="missing.safetensors"):
        detect_backend(tmp_path / "missing.safetensors")


def test_the_loop_evaluates_with_its_own_geometry_model(weights, tmp_path):
    vggt, da3 = weights
    overrides = [
        f"loop.score.weights={vggt}",
        f"loop.evaluate.score.weights={da3}",
        "loop.evaluate.score.device=cpu",
    ]
    cfg = load_loop_config(REPO_RECIPES / "configs" / "tiny.yaml", overrides)
    loop = Loop(cfg, tmp_path / "loop")
    assert loop.scorer().cfg.geometry == "vggt"
    assert loop.evaluation_scorer().cfg.geometry == "da3"
    described = geometry_description(loop.evaluation_scorer().cfg)
    assert described == {"backend": "da3", "weights": "da3.safetensors", "num_frames": 10}


def test_without_an_evaluation_model_the_pairs_model_evaluates(weights, tmp_path):
    vggt, _ = weights
    cfg = load_loop_config(REPO_RECIPES / "configs" / "tiny.yaml", [f"loop.score.weights={vggt}"])
    loop = Loop(cfg, tmp_path / "loop")
    assert loop.evaluation_scorer() is loop.scorer()


def test_the_table_names_the_model_of_its_geometry_columns():
    metric = {"label": "MVCS", "base": 0.5, "lora": 0.6, "lower_is_better": False, "improved": True}
    metric |= {"delta": None, "ci": None, "significant": False, "prompt_win_rate": None}
    result = {
        "metrics": {"mvcs": metric},
        "geometry": {"backend": "da3", "weights": "da3_large.safetensors", "num_frames": 10},
        "prompt_win_rate": 0.5,
        "prompts": 2,
        "video_win_rate": 0.5,
        "videos": 4,
        "notes": [],
    }
    table = format_table(result)
    assert "scored by da3 (da3_large.safetensors) on 10 frames" in table
    assert "MVCS is in that model's depth units" in table
