"""Scoring faults that must be error rows, never "ok": a reconstruction without finite geometry or valid
points, a truncated video; a rerun replaces a video's error row; bad stage arguments are exit status 2."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from tests.stages.stage_helpers import load_recipe
from videogpa.engine.geometry.base import Geometry, GeometryModel
from videogpa.engine.io.records import read_jsonl
from videogpa.engine.io.video import write_video
from videogpa.engine.stages.score import list_videos, score_videos, summarize_scores

pytestmark = pytest.mark.usefixtures("one_thread")

T, S = 4, 16  # frames scored, frame side


def plain_geometry(n_frames: int = T, side: int = S) -> Geometry:
    """A valid reconstruction: a fronto-parallel plane at depth 2 seen by cameras sliding along x."""
    focal = float(side)
    k = torch.tensor([[focal, 0.0, side / 2], [0.0, focal, side / 2], [0.0, 0.0, 1.0]]).repeat(n_frames, 1, 1)
    e = torch.eye(3, 4).repeat(n_frames, 1, 1)
    e[:, 0, 3] = torch.linspace(0.0, 0.1, n_frames)
    return Geometry(
        depth=torch.full((n_frames, side, side), 2.0),
        depth_conf=torch.ones(n_frames, side, side),
        intrinsics=k,
        extrinsics=e,
    )


class FixedGeometry(GeometryModel):
    """Returns the same reconstruction for every video (a stand-in backend that misbehaves on demand)."""

    name = "fixed"

    def __init__(self, geometry: Geometry):
        self.geometry = geometry

    def reconstruct(self, frames: torch.Tensor) -> Geometry:
        return self.geometry


def video(path, n_frames: int = T):
    write_video(path, torch.rand(n_frames, 3, S, S, generator=torch.Generator().manual_seed(3)))
    return path


def score_folder(folder, out, geometry: Geometry | None = None) -> list[dict]:
    """Score every video of `folder` into `out` with the fixed backend (plain_geometry by default)."""
    model = FixedGeometry(geometry if geometry is not None else plain_geometry())
    score_videos(list_videos(folder), out, model=model, n_frames=T, size=None, progress=False)
    return read_jsonl(out)


def _nan_at(name: str, index: tuple):
    def mutate(g: Geometry) -> Geometry:
        getattr(g, name)[index] = float("nan")
        return g

    return mutate


def _no_confidence(g: Geometry) -> Geometry:
    g.depth_conf.zero_()
    return g


@pytest.mark.parametrize(
    "mutate, reason",
    [
        (lambda g: g, None),  # the control: the set-up scores "ok"
        (_nan_at("depth", (1, 3, 5)), r"depth has 1 non-finite values \(frames \[1\]\)"),
        (_nan_at("intrinsics", (2, 0, 0)), r"intrinsics has 1 non-finite values \(frames \[2\]\)"),
        (_nan_at("extrinsics", (0, 1, 3)), r"extrinsics has 1 non-finite values \(frames \[0\]\)"),
        (_no_confidence, r"no valid points"),
    ],
    ids=["valid", "nan-depth", "nan-intrinsics", "nan-extrinsics", "no-points"],
)
def test_bad_reconstruction_is_an_error_row_naming_video_and_reason(tmp_path, mutate, reason):
    path = video(tmp_path / "clip.mp4")
    (row,) = score_folder(tmp_path, tmp_path / "out" / "scores.jsonl", mutate(plain_geometry()))
    assert row["video"] == str(path.resolve())
    if reason is None:
        assert row["status"] == "ok" and row["n_points"] == T * S * S
        return
    assert row["status"] == "error", row
    assert row["error"].startswith("ReconstructionError: ")
    assert row["error"].count("\n") == 0
    assert re.search(reason, row["error"]), row["error"]


def test_non_finite_world_points_are_an_error_row(tmp_path):
    """A backend's point map (used as the cloud by points='auto') with a NaN point: an error, not a score."""
    video(tmp_path / "clip.mp4")
    g = plain_geometry()
    g.world_points = torch.zeros(T, S, S, 3)
    g.world_points[..., 2] = 2.0
    g.world_points[3, 0, 0, 1] = float("inf")
    (row,) = score_folder(tmp_path, tmp_path / "scores.jsonl", g)
    assert row["status"] == "error" and "1 of the reconstruction's" in row["error"]
    assert "valid points are non-finite" in row["error"]


def truncated_mp4(path, n_frames: int = 12, keep: int = 6):
    """An mp4 from write_video, made web-optimised (index first, as downloads are) and cut after `keep`
    frames' packets: it opens, declares n_frames, and decodes `keep` frames without a decoder error."""
    import av

    full = path.with_name("full.mp4")
    video(full, n_frames)
    with av.open(str(full)) as src, av.open(str(path), "w", options={"movflags": "faststart"}) as dst:
        stream = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(video=0):
            if packet.dts is not None:
                packet.stream = stream
                dst.mux(packet)
    full.unlink()
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == n_frames
        positions = [p.pos for p in container.demux(video=0) if p.size]
    path.write_bytes(path.read_bytes()[: positions[keep]])
    return path


def test_truncated_mp4_is_an_error_row(tmp_path):
    """Decoding stops early at a packet boundary; its 6 frames would be enough for T=4: still an error."""
    path = truncated_mp4(tmp_path / "cut.mp4")
    (row,) = score_folder(tmp_path, tmp_path / "scores.jsonl")
    assert row["video"] == str(path.resolve()) and row["status"] == "error", row
    assert "decodes 6 of the 12 frames its container declares" in row["error"]
    assert str(path) in row["error"]


@pytest.mark.parametrize("suffix", [".mkv", ".webm"])
def test_truncated_matroska_is_an_error_row(tmp_path, suffix):
    """Audit s11: mkv and webm declare no frame count (0), but a duration; a file cut in half decodes without
    a decoder error and used to be scored "ok"."""
    path = video(tmp_path / f"cut{suffix}", 12)
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    video(tmp_path / f"whole{suffix}", 12)  # an intact file of the same kind stays "ok"
    rows = {Path(row["video"]).name: row for row in score_folder(tmp_path, tmp_path / "scores.jsonl")}
    assert rows[f"whole{suffix}"]["status"] == "ok", rows
    assert rows[f"cut{suffix}"]["status"] == "error"
    expected = rf"video {path} decodes \d+ frames .* of the 1.500 s its container declares, about 12 frames"
    assert re.search(expected, rows[f"cut{suffix}"]["error"]), rows


def test_rerun_replaces_error_rows_and_summary_counts_videos(tmp_path):
    videos, out = tmp_path / "videos", tmp_path / "scores.jsonl"
    videos.mkdir()
    video(videos / "a.mp4")
    (videos / "b.mp4").write_bytes(b"not a video yet")
    first = score_folder(videos, out)
    assert [r["status"] for r in first] == ["ok", "error"]
    score_folder(videos, out)  # b still broken: its error row is replaced, not duplicated
    second = read_jsonl(out)
    assert len(second) == 2 and second[0] == first[0] and second[1]["status"] == "error"
    summary = summarize_scores(out)
    assert (summary.ok, summary.errors) == (1, 1)
    video(videos / "b.mp4")  # fixed: the retry's "ok" row replaces the error row
    third = score_folder(videos, out)
    assert [(r["video"].rsplit("/", 1)[-1], r["status"]) for r in third] == [("a.mp4", "ok"), ("b.mp4", "ok")]
    assert third[0] == first[0]  # the ok row is kept as it was
    assert (summarize_scores(out).ok, summarize_scores(out).errors) == (2, 0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.jsonl", "videos"]  # no temporary left


def test_score_recipe_prints_video_counts_after_a_retry(tmp_path, capsys):
    videos = tmp_path / "videos"
    videos.mkdir()
    video(videos / "a.mp4", n_frames=6)
    (videos / "b.mp4").write_bytes(b"not a video")
    recipe = load_recipe("score")
    args = ["--videos", str(videos), "--num-frames", "6", "--geometry", "oracle"]
    for _ in range(2):
        assert recipe.main(args) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "scored 0 videos, 2 errors"


@pytest.mark.parametrize(
    "flag, value, key",
    [("--num-frames", "0", "num_frames"), ("--size", "0", "size"), ("--size", "-3", "size")],
)
def test_score_recipe_rejects_non_positive_sizes(tmp_path, capsys, flag, value, key):
    recipe = load_recipe("score")
    workdir = tmp_path / "run"
    assert recipe.main([flag, value, "--workdir", str(workdir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and f"loop.score.{key}" in err[0], err
    assert not workdir.exists()


def test_non_finite_geometry_weights_name_the_weights_file(tmp_path):
    """A NaN in VGGT's weights made every video an error row and never named the weights file."""
    from videogpa.engine.geometry.vggt import TINY_CONFIG, load_vggt, random_vggt, save_vggt

    model = random_vggt(TINY_CONFIG)
    name, tensor = next(iter(model.state_dict().items()))
    tensor.view(-1)[0] = float("nan")
    path = save_vggt(model, tmp_path / "vggt.safetensors")
    with pytest.raises(
        ValueError, match=rf"VGGT weights file {path}: 1 tensor\(s\) hold non-finite .*{name}"
    ):
        load_vggt(path)


def test_a_copied_or_moved_scored_folder_is_not_scored_again(tmp_path):
    """Audit N21: rows were keyed by absolute path, so a copied scored folder was scored again in full and
    its summary counted each video twice. Rows carry the video's relative path and content hash."""
    import shutil

    from videogpa.engine.stages.score import score_videos

    first = tmp_path / "first"
    first.mkdir()
    for i in range(3):
        write_video(first / f"v{i}.mp4", torch.rand(T, 3, S, S, generator=torch.Generator().manual_seed(i)))
    assert len(score_folder(first, first / "scores.jsonl")) == 3
    copy = tmp_path / "copy"
    shutil.copytree(first, copy)
    write_video(copy / "v2.mp4", torch.rand(T, 3, S, S))  # changed in the copy: scored again
    calls = []

    class Counting(FixedGeometry):
        def reconstruct(self, frames):
            calls.append(1)
            return super().reconstruct(frames)

    def rescore(folder):
        model = Counting(plain_geometry())
        return score_videos(list_videos(folder), folder / "scores.jsonl", model=model, n_frames=T, size=None)

    new = rescore(copy)
    assert [Path(r["video"]).name for r in new] == ["v2.mp4"] and len(calls) == 1
    rows = read_jsonl(copy / "scores.jsonl")
    assert sorted(r["video"] for r in rows) == [str(copy.resolve() / f"v{i}.mp4") for i in range(3)]
    summary = summarize_scores(copy / "scores.jsonl")
    assert (summary.ok, summary.errors) == (3, 0)
    moved = tmp_path / "moved"
    shutil.move(first, moved)
    assert rescore(moved) == [] and len(calls) == 1
    assert all(r["video"].startswith(str(moved.resolve())) for r in read_jsonl(moved / "scores.jsonl"))
