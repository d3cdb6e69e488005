"""recipes/score.py --geometry vggt --weights FILE with a tiny random VGGT checkpoint saved to disk."""

import importlib.util
import json
import math
from pathlib import Path

import torch

from videogpa.engine.geometry.vggt import TINY_CONFIG, VGGT, save_vggt

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "score.py"


def load_recipe():
    spec = importlib.util.spec_from_file_location("score_recipe_vggt", RECIPE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_score_recipe_runs_vggt_from_a_weights_file(tmp_path):
    torch.manual_seed(5)
    weights = save_vggt(VGGT(TINY_CONFIG), tmp_path / "vggt_tiny.safetensors")
    workdir = tmp_path / "run"
    args = ["--synthetic", "1", "--num-frames", "4", "--workdir", str(workdir), "--device", "cpu"]
    args += ["--geometry", "vggt", "--weights", str(weights), "--batch-size", "2"]
    assert load_recipe().main(args) == 0
    rows = [json.loads(line) for line in (workdir / "videos" / "scores.jsonl").read_text().splitlines()]
    assert len(rows) == 5  # one synthetic scene: the clean clip and its corruptions
    for row in rows:
        assert row["status"] == "ok", row.get("error")
        assert row["backend"] == "vggt"
        assert row["size"] == [TINY_CONFIG.img_size] * 2  # frames resized to the checkpoint's input size
        assert math.isfinite(row["score"]) and 0 <= row["mse"] <= 1 and row["motion"] >= 0
