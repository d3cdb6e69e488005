"""recipes/evaluate.py on a folder without a trained LoRA: the base half is generated and scored and kept,
the missing LoRA is a clear error (exit 2), and the folder's lock is released."""

import torch

from tests.stages.stage_helpers import load_recipe
from videogpa.engine.io.records import read_jsonl


def test_evaluate_without_lora_is_a_clear_error_and_keeps_the_base_run(tmp_path, capsys):
    torch.set_num_threads(2)
    (tmp_path / "eval.txt").write_text("a sunlit museum hall\n")
    argv = ["--output-dir", str(tmp_path / "run")] + [
        f"--set={s}"
        for s in (
            f"loop.evaluate.prompts={tmp_path / 'eval.txt'}",
            "loop.evaluate.num_candidates=1",
            "loop.generation.steps=2",
        )
    ]
    assert load_recipe("evaluate").main(argv) == 2
    err = capsys.readouterr().err
    assert "error: LoRA" in err and "does not exist" in err
    base = tmp_path / "run" / "eval" / "base"
    assert [r["prompt_id"] for r in read_jsonl(base / "manifest.jsonl")] == ["p00000"]
    assert read_jsonl(base / "scores.jsonl")[0]["status"] == "ok"
    assert (
        not (tmp_path / "run" / ".loop.lock").exists() and not (tmp_path / "run" / "evaluation.json").exists()
    )
