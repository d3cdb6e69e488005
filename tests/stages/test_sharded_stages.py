"""Generate and score sharded over separate processes (`--shard I/N`, and torchrun without a process group)
give what one process gives, bit for bit: the same files, the same latents, the same score rows. Every
process runs with one thread (OMP_NUM_THREADS=1), so the comparisons are between the same computation on the
same machine with the same thread count; generation uses batch_size 2 and shards take whole batches of the
full candidate list, so every candidate is computed in the same batch in every run."""

import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.stages.stage_helpers import TORCHRUN, files, finish, start
from videogpa.engine.io.records import read_jsonl
from videogpa.engine.io.sharded import read_sharded
from videogpa.engine.models.tiny import write_tiny_pipeline
from videogpa.engine.scenes.video_set import write_synthetic_set
from videogpa.engine.stages import score
from videogpa.engine.stages.generate import MANIFEST

STEMS = ["barn_s0", "barn_s1", "bridge_s0", "bridge_s1"]  # 2 prompts x 2 seeds, in 2 batches of 2


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("sharded")
    pipeline = write_tiny_pipeline(root / "tiny")
    prompts = root / "prompts.jsonl"
    prompts.write_text(
        '{"id": "barn", "prompt": "a red barn"}\n{"id": "bridge", "prompt": "a stone bridge"}\n'
    )
    return root, pipeline, prompts


def generate(inputs, out_dir, *extra, launcher=()) -> subprocess.Popen:
    _, pipeline, prompts = inputs
    return start(
        "generate",
        "--model",
        "tiny",
        "--pipeline",
        pipeline,
        "--prompts",
        prompts,
        "--out-dir",
        out_dir,
        "--num-candidates",
        2,
        "--batch-size",
        2,
        "--num-frames",
        9,
        "--steps",
        2,
        "--device",
        "cpu",
        *extra,
        launcher=launcher,
    )


@pytest.fixture(scope="module")
def one_process(inputs):
    out = inputs[0] / "one"
    finish(generate(inputs, out))
    return out


def outputs(folder: Path) -> set[str]:
    return {
        f"{kind}/{stem}.{ext}"
        for stem in STEMS
        for kind, ext in (("videos", "mp4"), ("latents", "safetensors"))
    }


def written_by(folder: Path, manifest: str) -> set[str]:
    """The files a shard wrote: its manifest and the videos and latents its rows name."""
    return {manifest} | {r[k] for r in read_jsonl(folder / manifest) for k in ("video", "latents")}


def rows_by_stem(folder: Path) -> dict[str, dict]:
    rows = read_sharded(folder / MANIFEST)
    assert len(rows) == len({r["video"] for r in rows}), "a candidate appears twice"
    return {Path(r["video"]).stem: r for r in rows}


def assert_same_outputs(folder: Path, reference: Path) -> None:
    assert rows_by_stem(folder) == rows_by_stem(reference)
    for stem in STEMS:
        ours, theirs = (
            load_file(str(f / "latents" / f"{stem}.safetensors"))["latents"] for f in (folder, reference)
        )
        assert torch.equal(ours, theirs), stem
        assert (folder / "videos" / f"{stem}.mp4").read_bytes() == (
            reference / "videos" / f"{stem}.mp4"
        ).read_bytes()


def test_two_concurrent_shards_write_disjoint_files_equal_to_one_process(inputs, one_process):
    assert files(one_process) == outputs(one_process) | {MANIFEST}
    out = inputs[0] / "two"
    finish(generate(inputs, out, "--shard", "0/2"), generate(inputs, out, "--shard", "1/2"))
    zero, one = (written_by(out, f"manifest.shard-{i}-of-2.jsonl") for i in (0, 1))
    # no lock, temp or shared file left, none unnamed
    assert zero.isdisjoint(one) and zero | one == files(out)
    assert zero - {"manifest.shard-0-of-2.jsonl"} == {
        "videos/barn_s0.mp4",
        "videos/barn_s1.mp4",
        "latents/barn_s0.safetensors",
        "latents/barn_s1.safetensors",
    }
    assert_same_outputs(out, one_process)


def test_torchrun_ranks_shard_the_candidates_like_separate_processes(inputs, one_process):
    out = inputs[0] / "torchrun"
    finish(generate(inputs, out, launcher=TORCHRUN))
    assert {p.name for p in out.glob("manifest*")} == {
        "manifest.shard-0-of-2.jsonl",
        "manifest.shard-1-of-2.jsonl",
    }
    assert_same_outputs(out, one_process)


def test_a_missing_shard_is_finished_by_a_rerun_with_another_n_each_candidate_once(inputs, one_process):
    out = inputs[0] / "rerun"
    finish(generate(inputs, out, "--shard", "0/2"))  # shard 1/2 never ran (killed before it wrote anything)
    first = files(out)
    assert first == written_by(out, "manifest.shard-0-of-2.jsonl")
    assert len(rows_by_stem(out)) == 2
    finish(generate(inputs, out))  # one process: only what is missing
    assert files(out) - first == written_by(out, MANIFEST) and len(read_jsonl(out / MANIFEST)) == 2
    assert_same_outputs(out, one_process)
    finish(generate(inputs, out, "--shard", "1/3"))  # complete: nothing more with any N
    assert files(out) == first | written_by(out, MANIFEST)
    assert len(rows_by_stem(out)) == 4


def score_rows(scores: Path) -> list[dict]:
    """Each video's row, without its timing."""
    return sorted(
        ({k: v for k, v in r.items() if k != "seconds"} for r in score.latest_rows(scores)),
        key=lambda r: r["video"],
    )


def test_score_shards_equal_one_process_and_never_share_a_file(inputs):
    manifest = write_synthetic_set(inputs[0] / "synthetic", 1, n_frames=6, progress=False)  # 5 videos
    args = ("--videos", manifest, "--num-frames", 6)
    one, two = inputs[0] / "scores_one", inputs[0] / "scores_two"
    finish(
        start("score", *args, "--out", one / "scores.jsonl"),
        start("score", *args, "--out", two / "scores.jsonl", "--shard", "0/2"),
        start("score", *args, "--out", two / "scores.jsonl", "--shard", "1/2"),
    )
    assert files(one) == {"scores.jsonl"}
    assert files(two) == {"scores.shard-0-of-2.jsonl", "scores.shard-1-of-2.jsonl"}
    shards = [{r["video"] for r in read_jsonl(two / f"scores.shard-{i}-of-2.jsonl")} for i in (0, 1)]
    assert shards[0].isdisjoint(shards[1]) and (len(shards[0]), len(shards[1])) == (3, 2)
    assert len(score_rows(one / "scores.jsonl")) == 5 and all(
        r["status"] == "ok" for r in score_rows(one / "scores.jsonl")
    )
    assert score_rows(two / "scores.jsonl") == score_rows(one / "scores.jsonl")
    assert score.unscored(manifest, two / "scores.jsonl") == []
