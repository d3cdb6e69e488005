"""The loop's score stage over a generation manifest: a random-weights VGGT flagged in every row, an
unreadable video becomes an error row naming it, completeness is tracked per video."""

import pytest
import torch

from tests.stages.stage_helpers import write_rows
from videogpa.engine.core.config import ScoreConfig
from videogpa.engine.geometry.vggt import TINY_CONFIG, random_vggt, save_vggt
from videogpa.engine.io.records import read_jsonl
from videogpa.engine.io.video import write_video
from videogpa.engine.stages.score import Scorer, resolve_geometry, summarize_scores, unscored


def test_score_stage_rows_errors_and_completeness(tmp_path):
    torch.manual_seed(0)
    weights = save_vggt(random_vggt(TINY_CONFIG), tmp_path / "vggt.safetensors")
    gen = tmp_path / "gen"
    gen.mkdir()
    write_video(gen / "a_s0.mp4", torch.rand(9, 3, 32, 32, generator=torch.Generator().manual_seed(1)))
    (gen / "a_s1.mp4").write_bytes(b"not a video")
    manifest = write_rows(
        gen / "manifest.jsonl",
        [
            {"video": "a_s0.mp4", "prompt_id": "a", "seed": 0},
            {"video": "a_s1.mp4", "prompt_id": "a", "seed": 1},
        ],
    )
    scores = gen / "scores.jsonl"
    assert unscored(manifest, scores) == [str(gen / "a_s0.mp4"), str(gen / "a_s1.mp4")]
    scorer = Scorer.build(ScoreConfig(weights=str(weights), random_weights=True, num_frames=4, device="cpu"))
    scorer.score(manifest, scores, progress=False)
    rows = {r["video"]: r for r in read_jsonl(scores)}
    ok, bad = rows[str(gen / "a_s0.mp4")], rows[str(gen / "a_s1.mp4")]
    assert ok["status"] == "ok" and ok["prompt_id"] == "a" and "NOT meaningful" in ok["note"]
    assert ok["size"] == [TINY_CONFIG.img_size] * 2 and len(ok["frames_used"]) == 4
    assert bad["status"] == "error" and "a_s1.mp4" in bad["error"]
    assert unscored(manifest, scores) == []
    summary = str(summarize_scores(scores))
    assert summary.startswith("1 videos scored, 1 errors") and "not meaningful" in summary


def test_score_stage_configuration_errors(tmp_path):
    weights = save_vggt(random_vggt(TINY_CONFIG), tmp_path / "vggt.safetensors")
    with pytest.raises(ValueError, match="'vggt' needs weights"):
        Scorer.build(ScoreConfig(geometry="vggt"))
    assert resolve_geometry(ScoreConfig()).geometry == "oracle"  # auto: no weights, the stored geometry
    # auto with weights: the backend the file holds, a missing file named
    assert resolve_geometry(ScoreConfig(weights=str(weights))).geometry == "vggt"
    with pytest.raises(ValueError, match="w.safetensors"):
        resolve_geometry(ScoreConfig(weights="w.safetensors"))
    with pytest.raises(ValueError, match="both vgg_weights and lpips_weights"):
        Scorer.build(ScoreConfig(geometry="oracle", vgg_weights=str(tmp_path / "vgg.pth")))
