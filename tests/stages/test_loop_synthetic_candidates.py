"""loop.candidates = synthetic: procedural scenes as the candidates, scored by the oracle (exact geometry), so
every pair prefers a clean clip; their latents come from the tiny pipeline's VAE. Stops before training."""

import pytest
import torch

from tests.stages.stage_helpers import load_recipe
from videogpa.engine.data.preference import PreferenceDataset
from videogpa.engine.io.records import read_jsonl


@pytest.mark.slow
def test_synthetic_candidates_through_encode(tmp_path, capsys):
    torch.set_num_threads(2)
    out = tmp_path / "loop"
    argv = ["--output-dir", str(out)] + [
        f"--set={s}"
        for s in (
            "loop.candidates=synthetic",
            "loop.synthetic.scenes=2",
            "loop.synthetic.kinds=[jitter]",
            "loop.generation.num_frames=9",
            "loop.train_launcher=['python3', '-c', 'raise SystemExit(3)']",  # stop before training
        )
    ]
    with pytest.raises(RuntimeError, match="train: .* failed"):
        load_recipe("pipeline").main(argv)
    log = capsys.readouterr().out
    assert "[generate] 4 synthetic candidates of 2 scenes" in log
    scores = read_jsonl(out / "generated" / "scores.jsonl")
    assert len(scores) == 4 and all(r["backend"] == "oracle" and "note" not in r for r in scores)
    pairs = read_jsonl(out / "pairs" / "pairs.jsonl")
    assert [p["prompt_id"] for p in pairs] == ["scene0000", "scene0001"]
    assert all(
        p["winner"]["extra"]["corruption"] is None and p["loser"]["extra"]["corruption"] == "jitter"
        for p in pairs
    )
    assert "latents: 0 reused from generation, 4 encoded with the VAE" in log
    data = PreferenceDataset(out / "shards" / "train")
    assert len(data) == 2  # round(0.25 · 2) = 0 held out
    assert tuple(data[0].latents_w.shape) == (3, 4, 8, 8)  # 9 frames of 64² through the tiny VAE
    with pytest.raises(RuntimeError):  # a rerun resumes at the failed stage: nothing before it is redone
        load_recipe("pipeline").main(argv)
    assert "synthetic candidates complete; skipped" in capsys.readouterr().out
