"""recipes/score.py --geometry vggt --weights FILE with a tiny random VGGT checkpoint saved to disk."""

import math

import torch

from tests.stages.stage_helpers import load_recipe
from videogpa.engine.geometry.vggt import TINY_CONFIG, random_vggt, save_vggt
from videogpa.engine.io.records import read_jsonl


def test_score_recipe_runs_vggt_from_a_weights_file(tmp_path):
    torch.manual_seed(5)
    weights = save_vggt(random_vggt(TINY_CONFIG), tmp_path / "vggt_tiny.safetensors")
    workdir = tmp_path / "run"
    args = ["--synthetic", "1", "--num-frames", "4", "--workdir", str(workdir), "--device", "cpu"]
    args += ["--geometry", "vggt", "--weights", str(weights), "--batch-size", "2"]
    assert load_recipe("score").main(args) == 0
    rows = read_jsonl(workdir / "videos" / "scores.jsonl")
    assert len(rows) == 5  # one synthetic scene: the clean clip and its corruptions
    for row in rows:
        assert row["status"] == "ok", row.get("error")
        assert row["backend"] == "vggt"
        assert row["size"] == [TINY_CONFIG.img_size] * 2  # frames resized to the checkpoint's input size
        assert math.isfinite(row["score"]) and 0 <= row["mse"] <= 1 and row["motion"] >= 0
