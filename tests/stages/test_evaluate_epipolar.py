"""recipes/evaluate.py --metrics reprojection,epipolar on the tiny loop: the evaluation's score stage computes
Epi (a random tiny LightGlue is built, flagged as not meaningful); a bad metric is a one-line error, exit
2."""

import pytest
import torch

from tests.stages.stage_helpers import load_recipe
from videogpa.engine.core.config import ScoreConfig
from videogpa.engine.io.records import read_jsonl
from videogpa.engine.loop.demo import tiny_matcher


def test_evaluate_scores_the_epipolar_metric_too(tmp_path, capsys):
    torch.set_num_threads(2)
    (tmp_path / "eval.txt").write_text("a sunlit museum hall\n")
    sets = [
        f"loop.evaluate.prompts={tmp_path / 'eval.txt'}",
        "loop.evaluate.num_candidates=1",
        "loop.generation.steps=2",
    ]
    argv = ["--output-dir", str(tmp_path / "run"), "--metrics", "reprojection,epipolar"] + [
        f"--set={s}" for s in sets
    ]
    assert load_recipe("evaluate").main(argv) == 2  # no LoRA trained in this folder: the base half is kept
    assert "error: LoRA" in capsys.readouterr().err
    (row,) = read_jsonl(tmp_path / "run" / "eval" / "base" / "scores.jsonl")
    assert row["status"] == "ok" and "score" in row and row["epi_matcher"] == "lightglue"
    assert row["epi_pairs"] == 7 and len(row["epi_pair_errors"]) == 7 and "NOT meaningful" in row["note"]
    assert len(row["epi_robust_pair_errors"]) == 7 and "epi_px" in row and "epi_robust" in row
    assert (tmp_path / "run" / "models" / "lightglue_tiny_random" / "config.json").is_file()


def test_evaluate_bad_metric_is_one_line_exit_2(tmp_path, capsys):
    argv = ["--output-dir", str(tmp_path / "run"), "--metrics", "reprojection,sampson"]
    assert load_recipe("evaluate").main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "metrics': expected a non-empty list" in err and "\n" not in err


def test_tiny_matcher_is_built_once_and_a_real_loop_needs_weights(tmp_path):
    with pytest.raises(ValueError, match="set loop.score.epipolar.lightglue_weights"):
        tiny_matcher(False, ScoreConfig(metrics=["epipolar"]), tmp_path, 0)
    assert tiny_matcher(False, ScoreConfig(), tmp_path, 0) == []  # reprojection only: nothing to build
    cfg = ScoreConfig(metrics=["reprojection", "epipolar"])
    assert tiny_matcher(True, cfg, tmp_path, 0) == ["tiny random LightGlue"] and cfg.random_weights
    assert cfg.epipolar.lightglue_weights == str(tmp_path / "lightglue_tiny_random")
    assert cfg.epipolar.size is None and cfg.epipolar.max_keypoints is None  # fast: at the scored size, 256
    again = ScoreConfig(metrics=["epipolar"])
    assert tiny_matcher(True, again, tmp_path, 0) == []
    assert again.epipolar.lightglue_weights == cfg.epipolar.lightglue_weights
