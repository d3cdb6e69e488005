"""recipes/score.py --geometry da3 --weights FILE with a tiny random DA3 checkpoint saved to disk: the second
geometry model scores videos in the score stage as VGGT does (frames at DA3's 504 px processing size)."""

import math

import torch

from tests.stages.stage_helpers import load_recipe
from videogpa.engine.geometry.da3 import TINY_CONFIG, random_da3, save_da3
from videogpa.engine.io.records import read_jsonl


def test_score_recipe_runs_da3_from_a_weights_file(tmp_path, one_thread):
    torch.manual_seed(5)
    weights = save_da3(random_da3(TINY_CONFIG), tmp_path / "da3_tiny.safetensors")
    workdir = tmp_path / "run"
    args = ["--synthetic", "1", "--num-frames", "3", "--workdir", str(workdir), "--device", "cpu"]
    args += ["--geometry", "da3", "--weights", str(weights), "--batch-size", "2"]
    assert load_recipe("score").main(args) == 0
    rows = read_jsonl(workdir / "videos" / "scores.jsonl")
    assert len(rows) == 5  # one synthetic scene: the clean clip and its corruptions
    for row in rows:
        assert row["status"] == "ok", row.get("error")
        assert row["backend"] == "da3"
        assert row["size"] == [504, 504]
        assert math.isfinite(row["score"]) and 0 <= row["mse"] <= 1 and row["motion"] >= 0
