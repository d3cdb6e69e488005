"""Pictures of 3D consistency: the score stage's per-video figure (frames, renders, error map, hit mask), the
pairs stage's winner/loser figure; checked against the scores and the stored geometry."""

import pytest
import torch

from tests.figure_checks import png
from tests.stages.stage_helpers import build_pairs, write_rows
from videogpa.engine.core import figures
from videogpa.engine.core.config import ScoreConfig
from videogpa.engine.core.figures import load_consistency_arrays
from videogpa.engine.io.records import read_jsonl
from videogpa.engine.io.video import load_video
from videogpa.engine.scenes.video_set import write_synthetic_set
from videogpa.engine.stages.score import Scorer

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """Two scenes (clean + jittered) scored by the oracle, pictures for the first 3 videos and one named."""
    out = tmp_path_factory.mktemp("figures")
    manifest = write_synthetic_set(out / "videos", 2, n_frames=5, size=48, kinds=("jitter",), progress=False)
    rows = [{**r, "prompt_id": f"scene{r['group']}", "prompt": "a room"} for r in read_jsonl(manifest)]
    write_rows(manifest, rows)  # one "prompt" per scene: the pairs stage pairs its clean and jittered clips
    cfg = ScoreConfig(
        geometry="oracle", num_frames=5, device="cpu", figures=1, figure_videos=["scene0001_clean"]
    )
    Scorer.build(cfg).score(manifest, out / "scores.jsonl", progress=False)
    return out, manifest, {r["video"].rsplit("/", 1)[-1]: r for r in read_jsonl(out / "scores.jsonl")}


def test_score_stage_draws_the_asked_videos(scored):
    out, _, rows = scored
    drawn = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert drawn == ["scene0000_clean.png", "scene0001_clean.png"]  # the first video and the named one
    assert all((out / "figures" / name).read_bytes()[:8] == PNG for name in drawn)
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows.values())


def test_figure_arrays_are_what_was_scored(scored):
    out, _, rows = scored
    arrays = load_consistency_arrays(out / "figures" / "scene0000_clean.png")
    frames = load_video(out / "videos" / "scene0000_clean.mp4", 5).frames
    assert arrays["frames"].shape == (5, 3, 48, 48)  # every frame (5 sampled), at the scored size
    torch.testing.assert_close(arrays["frames"].float(), frames, atol=2e-3, rtol=0)
    # the error map is the per-pixel squared error against the render: its mean is the row's MSE
    assert float(arrays["error"].float().mean()) == pytest.approx(
        rows["scene0000_clean.mp4"]["mse"], rel=2e-2
    )
    direct = ((arrays["frames"].float() - arrays["renders"].float()) ** 2).mean(1)
    torch.testing.assert_close(arrays["error"].float(), direct, atol=5e-3, rtol=0)
    # where no point lands the render is black; the true geometry covers most of a clean clip
    hit = arrays["hit"]
    assert not arrays["renders"].float().permute(1, 0, 2, 3)[:, ~hit].any()
    assert hit.float().mean() > 0.5


def test_pairs_figure_shows_winner_and_loser(scored, tmp_path):
    out, manifest, _ = scored
    summary = build_pairs(out / "scores.jsonl", tmp_path, manifest, min_gap=0.0, min_motion=0.0)
    assert len(summary.pairs) == 2 and all("clean" in p.winner.video for p in summary.pairs)
    assert (tmp_path / "pairs_examples.png").read_bytes()[:8] == PNG
    # the stage's picture holds every frame at a readable size: 5 tiles of 48 px frames enlarged to 96 px a
    # row, 2 pairs × (winner, its errors, loser, its errors) rows
    height, width, _ = png(tmp_path / "pairs_examples.png").shape
    assert width >= 5 * figures.MIN_TILE and height >= 2 * 4 * figures.MIN_TILE


def test_before_after_grid_pairs_the_same_prompt_and_seed(tmp_path, monkeypatch):
    from videogpa.engine.io.video import write_video

    clips = {}
    for name, keys in (("base", [("p0", 1), ("p0", 2), ("p1", 1)]), ("lora", [("p1", 1), ("p0", 1)])):
        folder = tmp_path / name
        (folder / "videos").mkdir(parents=True)
        manifest, scores = [], []
        for i, (pid, seed) in enumerate(keys):
            video = f"videos/{pid}_s{seed}.mp4"
            clips[name, pid, seed] = torch.rand(
                4, 3, 16, 16, generator=torch.Generator().manual_seed(len(clips))
            )
            write_video(folder / video, clips[name, pid, seed])
            manifest.append({"video": video, "prompt_id": pid, "seed": seed, "prompt": f"prompt {pid}"})
            scores.append(
                {"video": str(folder / video), "status": "ok", "score": 0.1 * (i + 1), "mse": 0.1 * (i + 1)}
            )
        write_rows(folder / "manifest.jsonl", manifest)
        write_rows(folder / "scores.jsonl", scores)
    drawn = {}
    real = figures.save_frame_grid
    monkeypatch.setattr(
        figures,
        "save_frame_grid",
        lambda rows, title, path: drawn.update(rows=rows) or real(rows, title, path),
    )
    figures.save_before_after_grid(tmp_path / "base", tmp_path / "lora", tmp_path / "grid.png", frames=4)
    assert (tmp_path / "grid.png").read_bytes()[:8] == PNG
    labels = [label for label, _ in drawn["rows"]]
    assert [label.split(":")[0] for label in labels] == ["before", "after"] * 2  # (p0, 1) and (p1, 1) only
    assert "prompt p0 (seed 1)" in labels[0] and "prompt p1 (seed 1)" in labels[3]
    assert "3DCS 0.1" in labels[0] and "3DCS 0.2" in labels[1]  # each video's own score
    for (_, frames), key in zip(
        drawn["rows"], [("base", "p0", 1), ("lora", "p0", 1), ("base", "p1", 1), ("lora", "p1", 1)]
    ):
        torch.testing.assert_close(frames, clips[key], atol=0.02, rtol=0)
