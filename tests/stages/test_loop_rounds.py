"""recipes/pipeline.py --rounds 2 on the tiny model: both rounds run, round 2 generates with round 1's LoRA
(its manifest rows name it, its latents differ from round 1's for the same prompt and seed), trains on round
1's merged transformer, and DIR/evaluation.json holds one before/after row per round."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.stages.stage_helpers import load_recipe
from videogpa.engine.io.records import read_jsonl
from videogpa.engine.models.lora import LORA_WEIGHT_NAME


@pytest.mark.slow
def test_two_rounds_the_second_generating_with_the_first_lora(tmp_path, capsys):
    torch.set_num_threads(2)
    (tmp_path / "train.txt").write_text("a red barn\nan old stone bridge\n")
    (tmp_path / "eval.txt").write_text("a sunlit museum hall\n")
    out = tmp_path / "loop"
    argv = ["--output-dir", str(out), "--rounds", "2"] + [
        f"--set={s}"
        for s in (
            f"loop.generation.prompts={tmp_path / 'train.txt'}",
            f"loop.evaluate.prompts={tmp_path / 'eval.txt'}",
            "loop.generation.num_candidates=2",
            "loop.generation.steps=2",
            "loop.evaluate.num_candidates=1",
            "loop.encode.heldout_fraction=0.0",
            "loop.train_overrides=[train.max_steps=2, train.checkpoint_every=0, train.log_every=1]",
        )
    ]
    assert load_recipe("pipeline").main(argv) == 0
    first, second = out / "round_1", out / "round_2"
    lora_1 = str((first / "train" / LORA_WEIGHT_NAME).resolve())
    rows_1, rows_2 = (read_jsonl(r / "generated" / "manifest.jsonl") for r in (first, second))
    assert (
        len(rows_2) == 4 and {r["lora"] for r in rows_1} == {None} and {r["lora"] for r in rows_2} == {lora_1}
    )

    def latents(folder, row):
        return load_file(str(folder / "generated" / row["latents"]))["latents"]

    by_stem = {Path(r["video"]).stem: r for r in rows_1}
    for row in rows_2:  # the same prompt and seed, another model
        assert not torch.equal(latents(second, row), latents(first, by_stem[Path(row["video"]).stem]))
    trained_on = yaml.safe_load((second / "train_config.yaml").read_text())["model"]["path"]
    assert trained_on == str(second / "models" / "pipeline")
    assert (
        second / "models" / "pipeline" / "transformer"
    ).resolve() == first / "train" / "transformer_merged"
    assert (second / "train" / LORA_WEIGHT_NAME).is_file() and (second / "evaluation.json").is_file()
    table = json.loads((out / "evaluation.json").read_text())["rounds"]
    assert [r["round"] for r in table] == [1, 2]
    assert table[0]["started_from"] is None and table[1]["started_from"] == lora_1
    assert table[1]["lora"] == str(second / "train" / LORA_WEIGHT_NAME)
    assert all(set(r["before"]) >= {"score", "psnr"} and set(r["after"]) == set(r["before"]) for r in table)
    assert "===== round 2 of 2" in capsys.readouterr().out
