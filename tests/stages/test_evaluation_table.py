"""The before/after comparison and the loop config."""

import json

import pytest
import yaml

from tests.stages.stage_helpers import REPO, write_rows
from videogpa.engine.loop.demo import BUILTIN_LOOP
from videogpa.engine.loop.loop_config import load_loop_config
from videogpa.engine.stages.evaluate import compare_scores, format_table, plot_comparison


def _rows(scores, note=None):
    rows = []
    for (pid, seed), score in scores.items():
        row = {
            "video": f"{pid}_{seed}.mp4",
            "status": "ok",
            "prompt_id": pid,
            "seed": seed,
            "score": score,
            "mse": score,
            "lpips": None,
            "psnr": -10 * score,
            "ssim": 1 - score,
            "mvcs": 0.5,
            "motion": 0.1,
        }
        if note:
            row["note"] = note
        rows.append(row)
    return rows


def test_side_by_side_means_and_win_rates(tmp_path):
    base = _rows({("a", 0): 0.4, ("a", 1): 0.2, ("b", 0): 0.3, ("c", 0): 0.5})
    tuned = _rows({("a", 0): 0.1, ("a", 1): 0.4, ("b", 0): 0.35, ("c", 0): 0.5})
    tuned.append({"video": "x.mp4", "status": "error", "error": "bad"})
    result = compare_scores(write_rows(tmp_path / "b.jsonl", base), write_rows(tmp_path / "t.jsonl", tuned))
    m = result["metrics"]
    assert m["score"]["base"] == pytest.approx(0.35) and m["score"]["lora"] == pytest.approx(1.35 / 4)
    assert m["score"]["improved"] and m["psnr"]["improved"] and m["ssim"]["improved"]
    assert m["lpips"]["base"] is None and m["lpips"]["improved"] is None and m["motion"]["improved"] is None
    # a: mean 0.3 -> 0.25 (win), b: 0.3 -> 0.35 (loss), c: tie (half)
    assert result["per_prompt"]["a"]["win"] == 1.0 and result["per_prompt"]["b"]["win"] == 0.0
    assert result["prompt_win_rate"] == pytest.approx(1.5 / 3)
    assert result["video_win_rate"] == pytest.approx(1.5 / 4)
    assert result["skipped"] == {"base": 0, "lora": 1}
    table = format_table(result)
    assert "| 3DCS | 0.35 | 0.3375 ✓ | lower |" in table and "50.0% of 3 prompts" in table
    plot_comparison(result, tmp_path / "bars.png")
    assert (tmp_path / "bars.png").read_bytes()[:4] == b"\x89PNG"


def test_comparison_needs_common_candidates_and_carries_notes(tmp_path):
    with pytest.raises(ValueError, match="no video was scored in both"):
        compare_scores(_rows({("a", 0): 0.1}), _rows({("a", 1): 0.1}))
    with pytest.raises(ValueError, match="lacks 'prompt_id'/'seed'"):
        compare_scores([{"video": "v", "status": "ok", "score": 0.1}], _rows({("a", 1): 0.1}))
    result = compare_scores(_rows({("a", 0): 0.1}, note="random"), _rows({("a", 0): 0.1}, note="random"))
    assert result["notes"] == ["random"] and "NOTE: random" in format_table(result)


def test_loop_config_tiny_defaults_overrides_and_errors(tmp_path):
    tiny = REPO / "recipes" / "configs" / "tiny.yaml"
    setup = load_loop_config(tiny)
    assert setup.loop.generation.model == "tiny"
    assert setup.loop.pairs.min_gap == BUILTIN_LOOP["pairs"]["min_gap"] and setup.loop.score.random_weights
    setup = load_loop_config(tiny, ["loop.pairs.min_gap=0.2", "loop.generation.num_candidates=5"])
    assert setup.loop.pairs.min_gap == 0.2 and setup.loop.generation.num_candidates == 5
    assert setup.loop.generation.camera_motion  # the other tiny defaults stay
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['loop.pairs.gap'\]"):
        load_loop_config(tiny, ["loop.pairs.gap=0.2"])
    real = yaml.safe_load((REPO / "recipes" / "configs" / "cogvideox_5b_t2v.yaml").read_text())
    path = tmp_path / "real.yaml"
    path.write_text(yaml.safe_dump(real))
    with pytest.raises(ValueError, match="placeholder path.*model.path"):
        load_loop_config(path)
    real["model"]["path"] = str(tmp_path / "CogVideoX-5b")
    path.write_text(yaml.safe_dump(real))
    with pytest.raises(ValueError, match="section 'loop' is missing"):
        load_loop_config(path)
    real["loop"] = {"generation": {"prompts": "p.txt"}, "score": {"weights": "vggt.safetensors"}}
    path.write_text(yaml.safe_dump(real))
    setup = load_loop_config(path)
    assert setup.loop.pairs.min_gap == 0.05 and setup.loop.pairs.min_motion == 0.001  # the paper's filters
    assert setup.loop.generation.model == setup.loop.encode.model == real["model"]["name"]
    assert json.loads(json.dumps(setup.to_dict()))["model"]["name"] == real["model"]["name"]
