"""recipes/pipeline.py end to end with the tiny model: every stage's outputs exist and agree with each other,
a failed stage resumes, a finished loop reruns as a no-op."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.stages.stage_helpers import load_recipe
from videogpa.engine.data.preference import PreferenceDataset
from videogpa.engine.io.records import read_jsonl
from videogpa.engine.models.pipelines import attach_lora, load_pipeline


@pytest.mark.slow
def test_tiny_loop_runs_resumes_and_is_consistent(tmp_path, capsys):
    torch.set_num_threads(2)
    (tmp_path / "train.txt").write_text(
        "a red barn\nan old stone bridge\na quiet library\na snowy mountain cabin\n"
    )
    (tmp_path / "eval.txt").write_text("a sunlit museum hall\na desert canyon\n")
    out = tmp_path / "loop"
    argv = ["--output-dir", str(out)] + [
        f"--set={s}"
        for s in (
            f"loop.generation.prompts={tmp_path / 'train.txt'}",
            f"loop.evaluate.prompts={tmp_path / 'eval.txt'}",
            "loop.generation.num_candidates=2",
            "loop.generation.steps=2",
            "loop.evaluate.num_candidates=1",
            "loop.train_overrides=[train.max_steps=3, train.checkpoint_every=0, train.log_every=1]",
        )
    ]
    pipeline = load_recipe("pipeline")

    # a stage that dies (here: the training launcher) leaves everything before it in place
    with pytest.raises(RuntimeError, match="train: .* failed"):
        pipeline.main([*argv, "--set=loop.train_launcher=['python3', '-c', 'raise SystemExit(3)']"])
    assert (out / "shards" / "train" / "index.jsonl").is_file() and not (out / "train").exists()
    manifest_before = (out / "generated" / "manifest.jsonl").read_text()

    assert pipeline.main(argv) == 0
    log = capsys.readouterr().out
    assert "[generate] 8 candidates for 4 prompts: 0 generated, 8 already done" in log
    assert "[score] complete; skipped" in log and "[encode] shards already complete" in log
    assert (out / "generated" / "manifest.jsonl").read_text() == manifest_before

    # consistency: pairs ⊂ scored videos, shard rows ⊂ pairs with the generation's latents, LoRA loads
    scores = {r["video"]: r for r in read_jsonl(out / "generated" / "scores.jsonl")}
    assert len(scores) == 8 and all(
        r["status"] == "ok" and "NOT meaningful" in r["note"] for r in scores.values()
    )
    scored = {str(Path(v).resolve()) for v in scores}
    pairs = {p["pair_id"]: p for p in read_jsonl(out / "pairs" / "pairs.jsonl")}
    assert len(pairs) == 4
    for p in pairs.values():
        assert {p["winner"]["video"], p["loser"]["video"]} <= scored
        assert p["winner"]["score"] <= p["loser"]["score"]
    shard_ids = []
    for split in ("train", "heldout"):
        data = PreferenceDataset(out / "shards" / split)
        shard_ids += [r["pair_id"] for r in data.records]
        pair = data[0]
        latents = load_file(pairs[pair.pair_id]["winner"]["extra"]["latents"])["latents"]
        assert torch.equal(pair.latents_w, latents)
    assert sorted(shard_ids) == sorted(pairs)
    train_cfg = (out / "train_config.yaml").read_text()
    assert str(out / "shards" / "train") in train_cfg
    pipe = load_pipeline("tiny", out / "models" / "pipeline")
    attach_lora(pipe, out / "train")
    assert any("lora_A" in name for name, _ in pipe.transformer.named_parameters())

    evaluation = json.loads((out / "evaluation.json").read_text())
    assert evaluation["videos"] == 2 and evaluation["prompts"] == 2
    metrics = {"score", "mse", "lpips", "psnr", "ssim", "mvcs", "epi", "epi_robust", "motion"}
    assert set(evaluation["metrics"]) == metrics
    assert 0 <= evaluation["prompt_win_rate"] <= 1 and evaluation["notes"]
    base = read_jsonl(out / "eval" / "base" / "manifest.jsonl")
    lora = read_jsonl(out / "eval" / "lora" / "manifest.jsonl")
    assert [(r["prompt"], r["seed"]) for r in base] == [(r["prompt"], r["seed"]) for r in lora]
    assert all(r["lora"] is None for r in base) and all(r["lora"] for r in lora)
    assert (out / "evaluation.png").is_file() and "| 3DCS |" in (out / "evaluation.md").read_text()

    # a finished loop: every stage skipped, nothing rewritten
    stamp = (out / "evaluation.json").stat().st_mtime_ns
    assert pipeline.main(argv) == 0
    log = capsys.readouterr().out
    assert "[train] complete; skipped" in log and "[evaluate] complete; skipped" in log
    assert (out / "evaluation.json").stat().st_mtime_ns == stamp
