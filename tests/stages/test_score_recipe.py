"""recipes/score.py end to end on a generated synthetic set with the oracle backend."""

import logging

import pytest
import torch

from tests.geometry.lpips_weights import random_weight_files
from tests.stages.stage_helpers import load_recipe
from videogpa.engine.io.records import read_jsonl
from videogpa.engine.stages.score import list_videos


@pytest.fixture(scope="module")
def recipe():
    return load_recipe("score")


pytestmark = pytest.mark.usefixtures("one_thread")


def test_synthetic_end_to_end_resume_and_bad_video(recipe, tmp_path, caplog, capsys):
    workdir = tmp_path / "run"
    with caplog.at_level(logging.WARNING):
        assert recipe.main(["--synthetic", "2", "--num-frames", "6", "--workdir", str(workdir)]) == 0
    assert "LPIPS is OFF" in caplog.text
    out = workdir / "videos" / "scores.jsonl"
    rows = read_jsonl(out)
    assert len(rows) == 10 and all(r["status"] == "ok" for r in rows)
    for r in rows:
        assert r["backend"] == "oracle" and r["lpips"] is None and r["score"] == r["mse"]
        assert r["frames_used"] == list(range(6)) and r["size"] == [64, 64] and r["versions"]["torch"]
    for group in (0, 1):
        clean = next(r["score"] for r in rows if r["group"] == group and r["corruption"] is None)
        assert all(clean < r["score"] for r in rows if r["group"] == group and r["corruption"])
    assert "clean scored better than its corrupted version in 8/8 pairs" in capsys.readouterr().out
    # Resume: nothing is scored twice.
    assert recipe.main(["--synthetic", "2", "--num-frames", "6", "--workdir", str(workdir)]) == 0
    assert read_jsonl(out) == rows
    # A run killed mid-write leaves half a row: the rerun cuts it off and scores the rest exactly once.
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:3]) + lines[3][: len(lines[3]) // 2])
    assert recipe.main(["--synthetic", "2", "--num-frames", "6", "--workdir", str(workdir)]) == 0
    resumed = read_jsonl(out)
    assert sorted(r["video"] for r in resumed) == sorted(r["video"] for r in rows)
    assert {r["video"]: r["score"] for r in resumed} == {r["video"]: r["score"] for r in rows}
    # A folder with a broken video: an error row naming it, the others still scored.
    videos = workdir / "videos"
    (videos / "broken.mp4").write_bytes(b"not a video")
    folder_out = tmp_path / "folder.jsonl"
    assert recipe.main(["--videos", str(videos), "--out", str(folder_out), "--num-frames", "6"]) == 0
    folder_rows = read_jsonl(folder_out)
    assert len(folder_rows) == 11 == len(list_videos(videos))
    broken = [r for r in folder_rows if r["status"] == "error"]
    assert len(broken) == 1 and "broken.mp4" in broken[0]["error"]
    ok = {r["video"].split("/")[-1]: r["score"] for r in folder_rows if r["status"] == "ok"}
    assert ok == {r["video"].split("/")[-1]: r["score"] for r in rows}
    # Centre-crop/resize: the oracle geometry follows the frames.
    resized_out = tmp_path / "resized.jsonl"
    manifest = str(videos / "manifest.jsonl")
    assert (
        recipe.main(["--videos", manifest, "--out", str(resized_out), "--num-frames", "3", "--size", "40"])
        == 0
    )
    resized = read_jsonl(resized_out)
    assert all(
        r["status"] == "ok" and r["size"] == [40, 40] and r["frames_used"] == [0, 2, 5] for r in resized
    )


def test_lpips_on_and_too_short(recipe, tmp_path, capsys):
    vgg, lins, _, _ = random_weight_files(tmp_path)
    workdir = tmp_path / "run"
    args = ["--synthetic", "1", "--num-frames", "4", "--workdir", str(workdir)]
    assert recipe.main([*args, "--vgg-weights", str(vgg), "--lpips-weights", str(lins)]) == 0
    rows = read_jsonl(workdir / "videos" / "scores.jsonl")
    assert all(r["lpips"] > 0 and r["score"] == pytest.approx(r["mse"] + r["lpips"]) for r in rows)
    out = tmp_path / "long.jsonl"
    assert (
        recipe.main(
            ["--videos", str(workdir / "videos" / "manifest.jsonl"), "--num-frames", "9", "--out", str(out)]
        )
        == 0
    )
    assert all(r["status"] == "error" and "too short" in r["error"] for r in read_jsonl(out))
    assert recipe.main([*args, "--vgg-weights", str(vgg)]) == 2  # one of the two LPIPS files: an error
    assert "give both vgg_weights and lpips_weights" in capsys.readouterr().err
    fast_out = tmp_path / "fast.jsonl"
    manifest = str(workdir / "videos" / "manifest.jsonl")
    assert recipe.main(["--videos", manifest, "--num-frames", "4", "--out", str(fast_out), "--mse-only"]) == 0
    fast = {r["video"]: r for r in read_jsonl(fast_out)}
    for row in rows:
        assert fast[row["video"]]["psnr"] is None and fast[row["video"]]["lpips"] is None
        assert fast[row["video"]]["score"] == pytest.approx(row["mse"], rel=1e-5)


def test_vggt_backend_batched(recipe, tmp_path, capsys):
    """--geometry vggt goes through the registry; batches of videos use VGGT's reconstruct_batch."""
    from videogpa.engine.geometry.vggt import TINY_CONFIG, VGGTGeometryModel, random_vggt, save_vggt

    torch.manual_seed(0)
    weights = save_vggt(random_vggt(TINY_CONFIG), tmp_path / "tiny.safetensors")
    calls = []
    original = VGGTGeometryModel.reconstruct_batch

    def spy(self, videos):
        calls.append(videos.shape[0])
        return original(self, videos)

    VGGTGeometryModel.reconstruct_batch = spy
    try:
        args = [
            "--synthetic",
            "1",
            "--num-frames",
            "3",
            "--workdir",
            str(tmp_path / "run"),
            "--batch-size",
            "2",
        ]
        assert recipe.main([*args, "--geometry", "vggt", "--weights", str(weights)]) == 0
    finally:
        VGGTGeometryModel.reconstruct_batch = original
    rows = read_jsonl(tmp_path / "run" / "videos" / "scores.jsonl")
    assert len(rows) == 5 and all(r["status"] == "ok" and r["backend"] == "vggt" for r in rows)
    assert all(r["size"] == [TINY_CONFIG.img_size] * 2 for r in rows)
    assert calls == [2, 2, 1]  # two batches of two, then the fifth video alone
    assert recipe.main([*args, "--geometry", "vggt"]) == 2  # vggt without weights: an error
    assert "'vggt' needs weights" in capsys.readouterr().err
